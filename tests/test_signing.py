"""Per-tenant callback signing secrets: what each tenant's receiver verifies, the
``tenants secret`` command that hands a tenant its secret, rotation and overrides.

Every delivery here is real: a real worker posts to a real receiver on loopback, and the
receiver checks it with the ``standardwebhooks`` package as the API reference says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from gateway import create_app
from tests.conftest import ROOT, SECRET, base_config
from tests.test_tenancy import TOKEN_A, TOKEN_B, create

TOKENS = {TOKEN_A: "alpha", TOKEN_B: "beta"}
OTHER_SECRET = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
OVERRIDE = "whsec_" + base64.b64encode(b"alpha's own 32-byte secret here!").decode()


def secret_command(app, tenant: str):
    return app.test_cli_runner().invoke(args=["tenants", "secret", tenant])


def secret_of(app, tenant: str) -> str:
    """What ``flask --app wsgi tenants secret <tenant>`` prints: one line, the secret."""
    result = secret_command(app, tenant)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    assert result.stdout.startswith("whsec_")
    return result.stdout.strip()


def verifies(secret: str, delivered: dict) -> bool:
    try:
        Webhook(secret).verify(delivered["raw"], delivered["headers"])
    except WebhookVerificationError:
        return False
    return True


def deliver_both(app, work, receiver) -> dict[str, dict]:
    """Tenants alpha and beta each create task ``same`` with a callback; path → delivery."""
    client = app.test_client()
    assert create(client, TOKEN_A, "same", callback=receiver.url("/alpha")).status_code == 202
    assert create(client, TOKEN_B, "same", callback=receiver.url("/beta")).status_code == 202
    work(app)
    return {request["path"]: request for request in receiver.wait_for(2)}


def test_a_tenants_receiver_verifies_its_own_callbacks_and_refuses_anothers(make_app, work, receiver):
    app = make_app(API_TOKENS=TOKENS)
    delivered = deliver_both(app, work, receiver)
    alpha, beta = secret_of(app, "alpha"), secret_of(app, "beta")
    assert alpha != beta
    # The same task_id text, validly signed for beta, is refused by alpha's receiver.
    assert delivered["/alpha"]["json"]["task_id"] == delivered["/beta"]["json"]["task_id"] == "same"
    assert verifies(alpha, delivered["/alpha"])
    assert not verifies(alpha, delivered["/beta"])
    assert verifies(beta, delivered["/beta"])
    assert not verifies(beta, delivered["/alpha"])
    # The operator's own secret is never the one a tenant holds.
    assert not verifies(SECRET, delivered["/alpha"])
    assert not verifies(SECRET, delivered["/beta"])


def test_derived_secret_is_the_documented_hmac(make_app):
    """SECURITY.md gives the derivation, so an operator can reproduce it elsewhere."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, b"single-task-gateway/callback-signing/v1:alpha", hashlib.sha256).digest()
    assert secret_of(make_app(API_TOKENS=TOKENS), "alpha") == "whsec_" + base64.b64encode(digest).decode()
    assert len(digest) == 32


def test_secret_command_refuses_an_unknown_tenant(make_app):
    result = secret_command(make_app(API_TOKENS=TOKENS), "gamma")
    assert result.exit_code != 0
    assert result.stdout == ""
    assert "unknown tenant 'gamma'" in result.stderr


def test_secret_command_without_tokens_says_there_are_no_tenants(make_app):
    result = secret_command(make_app(), "alpha")
    assert result.exit_code != 0
    assert result.stdout == ""
    assert "GATEWAY_API_TOKENS is not set" in result.stderr


def test_secret_command_prints_one_line_from_the_real_cli(redis_server):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_REDIS_URL": base_config(redis_server, 0)["REDIS_URL"],
        "GATEWAY_CALLBACK_SIGNING_SECRET": SECRET,
        "GATEWAY_API_TOKENS": json.dumps(TOKENS),
    }
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "tenants", "secret"]
    done = subprocess.run([*command, "alpha"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = secret_of(create_app({**base_config(redis_server, 0), "API_TOKENS": TOKENS}), "alpha")
    assert done.stdout == expected + "\n"
    unknown = subprocess.run([*command, "gamma"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0
    assert unknown.stdout == ""
    assert "unknown tenant 'gamma'" in unknown.stderr


def test_rotation_signs_once_per_derived_secret(make_app, work, receiver):
    app = make_app(API_TOKENS=TOKENS, CALLBACK_SIGNING_SECRET=[OTHER_SECRET, SECRET])
    delivered = deliver_both(app, work, receiver)["/alpha"]
    new = secret_of(app, "alpha")  # the first of the list is the current secret
    old = secret_of(make_app(API_TOKENS=TOKENS, CALLBACK_SIGNING_SECRET=SECRET), "alpha")
    assert new == secret_of(make_app(API_TOKENS=TOKENS, CALLBACK_SIGNING_SECRET=OTHER_SECRET), "alpha")
    signatures = delivered["headers"]["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret, signature in zip((new, old), signatures, strict=True):
        alone = {**delivered, "headers": {**delivered["headers"], "webhook-signature": signature}}
        assert verifies(secret, alone)
    assert verifies(old, delivered) and verifies(new, delivered)


def test_an_override_replaces_the_derived_secret(make_app, work, receiver):
    derived = secret_of(make_app(API_TOKENS=TOKENS), "alpha")
    app = make_app(API_TOKENS=TOKENS, TENANT_SIGNING_SECRETS=json.dumps({"alpha": OVERRIDE}))
    assert secret_of(app, "alpha") == OVERRIDE
    delivered = deliver_both(app, work, receiver)
    assert verifies(OVERRIDE, delivered["/alpha"])
    assert not verifies(derived, delivered["/alpha"])
    assert len(delivered["/alpha"]["headers"]["webhook-signature"].split(" ")) == 1
    # Other tenants keep their derived secret.
    assert verifies(secret_of(app, "beta"), delivered["/beta"])
    assert not verifies(OVERRIDE, delivered["/beta"])


def test_an_override_list_rotates_a_tenants_own_secret(make_app, work, receiver, tmp_path):
    path = tmp_path / "tenant-secrets.json"
    path.write_text(json.dumps({"alpha": [OVERRIDE, OTHER_SECRET]}))
    app = make_app(API_TOKENS=TOKENS, TENANT_SIGNING_SECRETS=f"@{path}")
    assert secret_of(app, "alpha") == OVERRIDE
    delivered = deliver_both(app, work, receiver)["/alpha"]
    assert len(delivered["headers"]["webhook-signature"].split(" ")) == 2
    assert verifies(OVERRIDE, delivered) and verifies(OTHER_SECRET, delivered)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gamma": OVERRIDE}, "'gamma', which no GATEWAY_API_TOKENS token has"),
        ({"alpha": "whsec_c2hvcnQ="}, "24 to 64 bytes"),
        ({"alpha": "whsec_not base64!"}, "not base64"),
        ({"alpha": []}, "a whsec_ secret or a list of them"),
        (["alpha", OVERRIDE], "must be a JSON object"),
    ],
    ids=["unknown-tenant", "short", "not-base64", "empty-list", "not-an-object"],
)
def test_bad_overrides_are_refused_at_start(redis_server, overrides, message):
    config = {**base_config(redis_server, 0), "API_TOKENS": TOKENS, "TENANT_SIGNING_SECRETS": overrides}
    with pytest.raises(ValueError, match=message):
        create_app(config)
