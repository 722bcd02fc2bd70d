"""The pieces of the claim path made cheaper in issue 16's third round: they must give
exactly what they gave before (canonical JSON, ids)."""

from __future__ import annotations

import json

import pytest

from gateway import documents, jsontext, keys
from gateway.api import answers, body
from gateway.store import Verdict, get_redis

ECHO = "demo.echo"

VALUES = [
    {},
    {"text": "hi"},
    {"b": 1, "a": [1.5, {"z": None, "y": True}], "c": 2**70, "d": -0.0, "e": 1e300},
    {"caf\u00e9": "\U0001f600", "lone": "\ud800", "control": "\x00\x1f\x7f", "quote": '" \\'},
    {"list": [[], {}, [[]], ""], "nested": {"k": {"k": {"k": []}}}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_canonical_json_is_the_text_json_dumps_gives(value):
    expected = jsontext.utf8_safe(
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    )
    assert documents.canonical_json(value) == expected


def test_canonical_json_refuses_what_json_dumps_refuses():
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference detected"):
        documents.canonical_json({"a": cycle})
    with pytest.raises(ValueError, match="Out of range float"):
        documents.canonical_json({"a": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        documents.canonical_json({"a": object()})
    # A refusal leaves nothing behind: the same value encodes as before afterwards.
    assert documents.canonical_json({"a": [1]}) == '{"a":[1]}'


def test_a_hit_answers_the_stored_input_as_stored_not_as_sent(app, client, work, task_id):
    """The claim script leaves the stored input out of its reply when it is the one sent
    (tests/test_reuse.py has a different stored input); a stage that holds the ASCII form
    of the same input (written before UTF-8 storage) still answers with that text."""
    value = {"text": "h\u00e9llo \U0001f600"}
    body = json.dumps({"task_name": ECHO, "task_id": task_id, "input_data": value}, ensure_ascii=False).encode()
    assert client.post("/v1/tasks", data=body, content_type="application/json").status_code == 202
    work()
    sent_form = documents.canonical_json(value)
    first = client.post("/v1/tasks", data=body, content_type="application/json")
    assert f'"input_params":{sent_form},'.encode() in first.data
    old_form = json.dumps(value, sort_keys=True, separators=(",", ":"))
    with app.app_context():
        get_redis().hset(keys.task_document(task_id), f"i:{ECHO}", old_form)
    for _ in range(2):
        hit = client.post("/v1/tasks", data=body, content_type="application/json")
        assert hit.status_code == 200
        assert hit.json["reuse_info"]["input_matches"] is True
        assert f'"input_params":{old_form},'.encode() in hit.data


@pytest.mark.parametrize("state", ["completed", "pending", "miss"])
def test_the_create_answer_has_the_headers_a_json_mimetype_gives(app, state):
    verdict = Verdict(
        task_id="task-1",
        task_name=ECHO,
        state=documents.VerdictState(state),
        input_matches=True,
        facts="SUCCESS 1764390000123 0.001" if state == "completed" else "PENDING 1764390009999",
        input_json='{"text":"hi"}',
        output_json='{"text":"hi"}' if state == "completed" else None,
        delivery_id=None,
        delivery_due=False,
        token="" if state != "miss" else "t" * 32,
    )
    with app.app_context():
        answer = answers.task_created(verdict)
        made_before = app.response_class(answer.get_data(), status=answer.status_code, mimetype="application/json")
    assert answer.headers.to_wsgi_list() == made_before.headers.to_wsgi_list()
    assert answer.status == made_before.status


def _decoded_as_before(raw: bytes):
    """What json_body made of a body before its shortcut: the value, or the error's type and text."""
    try:
        return body._DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except Exception as error:  # noqa: BLE001 (compared)
        return type(error), str(error)


BODIES = [
    b'{"task_name":"demo.echo","input_data":{"text":"hi"}}',
    b'{"a": [1, 2.5, {"b": null}], "c": "\\ud800"}',
    '{"caf\u00e9": "\U0001f600"}'.encode(),
    b'{"a":1}\n',
    b'  {"a":1}',
    b'{"a":1} x',
    b'{"a":1}{"b":2}',
    b'{"a":',
    b'{"a":NaN}',
    b'{"a":1e400}',
    b"{",
    b"{}",
    b"[1]",
    b'"text"',
    b"\xef\xbb\xbf{}",
    '{"a":1}'.encode("utf-16-le"),
    '{"a":1}'.encode("utf-16"),
    '{"a":1}'.encode("utf-32-le"),
    b'{"a":"\xff"}',
]


@pytest.mark.parametrize("raw", BODIES, ids=repr)
def test_a_body_decodes_as_before(raw):
    try:
        decoded = body._decode(raw)
    except Exception as error:  # noqa: BLE001 (compared)
        decoded = type(error), str(error)
    assert decoded == _decoded_as_before(raw)
