"""The pieces of the claim path made cheaper in issue 16's third round: they must give
exactly what they gave before (canonical JSON, ids)."""

from __future__ import annotations

import json

import pytest

from gateway import documents, jsontext

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
