"""The reuse hit's answer is written piece by piece (issue 16): it must be the very text
that ``json.dumps`` gives for the same values, for every verdict."""

from __future__ import annotations

import itertools
import json

import pytest

from gateway import documents, jsontext
from gateway.api import answers
from gateway.store import Verdict

SCALARS = [
    None,
    True,
    False,
    0,
    -7,
    2**70,
    0.001,
    1.0,
    1e-05,
    1e300,
    -0.0,
    "",
    "plain",
    'quote " and \\ backslash',
    "caf\u00e9 \U0001f600",
    "lone \ud800 surrogate",
    "control \x00\x1f\x7f",
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_a_scalar_is_written_as_dumps_writes_it(value):
    assert jsontext.scalar(value) == jsontext.dumps(value)


@pytest.mark.parametrize(
    ("error", "duration"), [(None, 0.001), (None, 1), (None, None), ("boom \u00e9", 2.5), ("x \ud800", 0)]
)
def test_stage_view_json_is_stage_view_as_dumps_writes_it(error, duration):
    state = {"status": "SUCCESS", "error": error, "duration": duration}
    text = documents.stage_view_json("demo.echo", state, '{"a":1}', '{"b":[]}')
    expected = jsontext.dumps(documents.stage_view("demo.echo", state, '{"a":1}', '{"b":[]}'))
    assert text == expected


def _expected(verdict: Verdict) -> str:
    """The answer as it was built before: a dict, json.dumps, the result spliced in."""
    completed = verdict.state == "completed"
    body = {
        "task_id": verdict.task_id,
        "status": "completed" if completed else "pending",
        "message": answers.MESSAGES[verdict.state],
        "reuse_info": documents.reuse_info(verdict.task_name, verdict.state, verdict.input_matches, verdict.cached_ms),
        "callback_status": "queued" if verdict.delivery_id else None,
    }
    text = json.dumps(body, separators=(",", ":"))
    if completed:
        result = documents.stage_view_json(verdict.task_name, verdict.stage, verdict.input_json, verdict.output_json)
        text = f'{text[:-1]},"result":{result}}}'
    return text + "\n"


FACTS = {
    "completed": "SUCCESS 1764390000123 0.001",
    "pending": "PENDING 1764390009999",
    "running": "RUNNING 1764390009999",
    "miss": "PENDING 1764390009999",
    "stale": "PENDING 1764390009999",
    "failed": "PENDING 1764390009999",
    "empty_output": "PENDING 1764390009999",
}


@pytest.mark.parametrize(
    ("state", "matches", "delivery_id"),
    list(itertools.product(FACTS, [True, False, None], [None, "d1"])),
)
def test_the_create_answer_is_the_text_json_dumps_gives(app, state, matches, delivery_id):
    verdict = Verdict(
        task_id="task-1.a_b",
        task_name="demo.echo",
        state=documents.VerdictState(state),
        input_matches=matches,
        facts=FACTS[state],
        input_json='{"text":"hi \u00e9"}',
        output_json='{"text":"hi"}' if state == "completed" else None,
        delivery_id=delivery_id,
        delivery_due=False,
        token="" if state in ("completed", "pending", "running") else "t" * 32,
    )
    with app.app_context():
        answer = answers.task_created(verdict)
    assert answer.get_data(as_text=True) == _expected(verdict)
    assert answer.status_code == (200 if state == "completed" else 202)


@pytest.mark.parametrize(
    ("facts", "stage"),
    [
        ("SUCCESS 1764390000123 0.001", {"status": "SUCCESS", "finished_ms": 1764390000123, "duration": 0.001}),
        ("SUCCESS 1764390000123 1", {"status": "SUCCESS", "finished_ms": 1764390000123, "duration": 1}),
        ("FAILED 1764390000123 ", {"status": "FAILED", "finished_ms": 1764390000123, "duration": None}),
        ("RUNNING 1764390009999", {"status": "RUNNING", "lease_ms": 1764390009999}),
    ],
)
def test_facts_read_as_the_stage_json_reads(facts, stage):
    read = documents.stage_from_facts(facts)
    assert read == stage
    assert [type(v) for v in read.values()] == [type(v) for v in stage.values()]
