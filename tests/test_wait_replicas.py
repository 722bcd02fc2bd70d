"""``GATEWAY_REDIS_WAIT_REPLICAS``: a write counts once that many replicas hold it (Redis
``WAIT`` after each write script, on the script's connection). On a cluster the failover
test shows what it keeps (tests/test_cluster_failover.py); here, one primary with and
without a replica."""

from __future__ import annotations

import pytest
import redis

from gateway import create_app
from gateway.exceptions import ConfigError
from gateway.testing.redis_server import RedisServer
from gateway.testing.waiting import wait_until
from tests.conftest import base_config

BODY = {"task_name": "demo.echo", "task_id": "acked-1", "input_data": {"a": 1}}


@pytest.fixture
def primary():
    with RedisServer() as server:
        yield server


def test_a_write_no_replica_acknowledged_is_a_503_and_was_made(primary):
    app = create_app({**base_config(primary, 0), "REDIS_WAIT_REPLICAS": 1, "REDIS_WAIT_TIMEOUT_SECONDS": 0.1})
    client = app.test_client()
    response = client.post("/v1/tasks", json=BODY)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "store_unavailable"
    assert response.json["error"]["details"] == {"replicas": 0, "required": 1}
    assert response.headers["Retry-After"] == "1"
    # Made, not confirmed: the caller's retry finds the stage (and does not run it twice).
    assert client.get("/v1/tasks/acked-1/status").json["stages"]["demo.echo"]["status"] == "PENDING"


def test_a_write_a_replica_acknowledged_is_answered(primary):
    with RedisServer() as replica:
        with replica.client() as admin:
            admin.replicaof("127.0.0.1", primary.port)
            wait_until(
                lambda: admin.info("replication")["master_link_status"] == "up", timeout=10, what="replica in sync"
            )
        app = create_app({**base_config(primary, 0), "REDIS_WAIT_REPLICAS": 1})
        client = app.test_client()
        response = client.post("/v1/tasks", json=BODY)
        assert response.status_code == 202, response.json
        assert client.post("/v1/tasks", json=BODY).json["reuse_info"]["state"] == "pending"
        with redis.Redis(port=replica.port, decode_responses=True) as read:
            assert read.hget("gw:task:{acked-1}", "f:demo.echo").startswith("PENDING")  # on the replica already


def test_the_wait_must_end_before_the_socket_timeout(primary):
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_WAIT_TIMEOUT_SECONDS"):
        create_app({**base_config(primary, 0), "REDIS_WAIT_REPLICAS": 1, "REDIS_WAIT_TIMEOUT_SECONDS": 2})
