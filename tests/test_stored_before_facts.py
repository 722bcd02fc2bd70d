"""Documents written before the stage facts (issue 16, item 4): a stage stored by the
scripts of commit ce7d557 (kept in tests/legacy_lua/) has no "f:" facts and no
"last_plain" field. The current code reads, reuses and runs such documents as before, and
the next claim adds what they lack, after which a repeat is a plain hit that writes nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from gateway import documents, keys, luasource
from gateway.store import get_store

LEGACY = Path(__file__).parent / "legacy_lua"
ECHO = "demo.echo"
INPUT = {"text": "caf\u00e9", "n": 2**70}


@pytest.fixture
def legacy(app):
    """The ce7d557 scripts, called with the arguments that version's store sent."""
    with app.app_context():
        store = get_store()
    sources = {name: luasource.flatten(LEGACY / f"{name}.lua", LEGACY / "include") for name in
               ("claim_stage", "start_run", "finish_run")}  # fmt: skip
    scripts = {name: store.client.register_script(source) for name, source in sources.items()}

    class Legacy:
        def claim(self, task_id, input_data, callback=""):
            input_json = documents.canonical_json(input_data)
            token = uuid.uuid4().hex
            args = [ECHO, input_json, callback, token, uuid.uuid4().hex, store.queue_lease_ms, store.ttl,
                    store.max_stages, store.max_callbacks, store.max_callback_bytes, ""]  # fmt: skip
            reply = scripts["claim_stage"](keys=[keys.task_document(task_id)], args=args)
            return token, reply

        def complete(self, task_id, input_data):
            token, _ = self.claim(task_id, input_data)
            doc = [keys.task_document(task_id)]
            scripts["start_run"](keys=doc, args=[ECHO, token, store.run_lease_ms, store.ttl])
            output = documents.canonical_json(input_data)
            scripts["finish_run"](keys=doc, args=[ECHO, token, "SUCCESS", output, "", 0.25, store.ttl])

    return Legacy()


def post(client, task_id, task_name=ECHO, input_data=INPUT, callback=None):
    body = {"task_name": task_name, "task_id": task_id, "input_data": input_data}
    if callback:
        body["callback"] = callback
    return client.post("/v1/tasks", json=body)


def fields_of(app, task_id):
    with app.app_context():
        return get_store().client.hgetall(keys.task_document(task_id))


def test_a_completed_stage_stored_before_is_reused_and_gains_its_facts(app, client, legacy, task_id):
    legacy.complete(task_id, INPUT)
    before = fields_of(app, task_id)
    assert f"f:{ECHO}" not in before and "last_plain" not in before
    status_before = client.get(f"/v1/tasks/{task_id}/status").json

    answer = post(client, task_id)
    assert answer.status_code == 200
    stage = json.loads(before[f"s:{ECHO}"])
    assert answer.json["reuse_info"]["cached_at"] == documents.iso(stage["finished_ms"])
    assert answer.json["result"] == {
        "task_name": ECHO, "status": "SUCCESS", "input_params": INPUT, "output": INPUT, "error": None,
        "duration": 0.25,
    }  # fmt: skip
    migrated = fields_of(app, task_id)
    assert migrated[f"f:{ECHO}"] == f"SUCCESS {stage['finished_ms']} 0.25"
    assert migrated["last_plain"] == ECHO
    # Only the facts were added: the stage, meta (no updated time) and the data are as stored.
    assert {k: v for k, v in migrated.items() if k not in (f"f:{ECHO}", "last_plain")} == before
    assert client.get(f"/v1/tasks/{task_id}/status").json == status_before

    again = post(client, task_id)  # now a plain hit: same answer, nothing written
    assert again.get_data() == answer.get_data()
    assert fields_of(app, task_id) == migrated


def test_a_pending_stage_stored_before_is_a_pending_hit_then_completes(app, client, legacy, work, task_id):
    token, _ = legacy.claim(task_id, INPUT)
    answer = post(client, task_id)
    assert answer.status_code == 202
    assert answer.json["reuse_info"]["state"] == "pending"
    assert fields_of(app, task_id)[f"f:{ECHO}"].startswith("PENDING ")
    with app.app_context():  # the run the old version queued, finished by the current code
        store = get_store()
        store.start(task_id, ECHO, token)
        store.finish(task_id, ECHO, token, output_json=documents.canonical_json(INPUT), error=None, duration=0.5)
    done = post(client, task_id)
    assert done.status_code == 200
    assert done.json["result"]["output"] == INPUT
    assert done.json["result"]["duration"] == 0.5


def test_a_document_stored_before_takes_new_stages_and_callbacks(app, client, legacy, work, receiver, task_id):
    legacy.complete(task_id, INPUT)
    miss = post(client, task_id, task_name="demo.sleep", input_data={"seconds": 0})
    assert miss.status_code == 202 and miss.json["reuse_info"]["state"] == "miss"
    work()
    assert post(client, task_id, task_name="demo.sleep", input_data={"seconds": 0}).status_code == 200
    hit = post(client, task_id, callback=receiver.url("/hook"))  # the old stage, now with a callback
    assert hit.status_code == 200 and hit.json["callback_status"] == "queued"
    assert "last_plain" not in fields_of(app, task_id)  # the latest request had a callback
    other = post(client, task_id, input_data={"text": "other"})  # a hit with another input
    assert other.json["reuse_info"]["input_matches"] is False
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["input_params"]["input_data"] == {"text": "other"}
    assert set(document["stages"]) == {ECHO, "demo.sleep"}


def test_facts_say_what_the_stage_json_says(app, client, work, task_id):
    """Across a real run: the facts every script wrote read as the stage's JSON reads."""
    post(client, task_id)
    fields = fields_of(app, task_id)
    stage = json.loads(fields[f"s:{ECHO}"])
    assert documents.stage_from_facts(fields[f"f:{ECHO}"]) == {"status": "PENDING", "lease_ms": stage["lease_ms"]}
    work()
    fields = fields_of(app, task_id)
    stage = json.loads(fields[f"s:{ECHO}"])
    facts = documents.stage_from_facts(fields[f"f:{ECHO}"])
    assert facts == {k: stage[k] for k in ("status", "finished_ms", "duration")}
    assert type(facts["duration"]) is type(stage["duration"])
