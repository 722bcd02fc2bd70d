"""JSON text as the gateway stores and sends it: UTF-8, with lone surrogates kept exact.

``json.dumps(..., ensure_ascii=True)`` writes every non-ASCII character as a ``\\uXXXX``
escape, up to 12 bytes for an emoji that UTF-8 writes in 4. Here characters stay as
they are, except the surrogate code points U+D800-U+DFFF: a caller may send one alone
(``"\\ud800"`` is valid JSON), and UTF-8 cannot encode it, so redis-py, Flask and
``requests`` would fail on it. Those alone are written as ``\\uXXXX`` escapes, which is
safe because in JSON text a surrogate can only stand inside a string, and which decodes
back to the very same string.
"""

from __future__ import annotations

import json
import math
import re
from json.encoder import encode_basestring
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def utf8_safe(text: str) -> str:
    """JSON text that encodes to UTF-8: its surrogate code points written as escapes.

    The usual text costs nothing: ``isascii`` reads a flag, and a non-ASCII text is only
    searched when encoding it fails.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape, text)
    return text


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text, UTF-8-safe (see ``utf8_safe``)."""
    return utf8_safe(json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False))


def scalar(value: Any) -> str:
    """``dumps(value)`` of a string, number, bool or None, written directly: the same text
    without the encoder's set-up, which costs more than the work for one value."""
    kind = type(value)
    if kind is str:
        return utf8_safe(encode_basestring(value))
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return dumps(value)


def utf8_length(text: str) -> int:
    """Bytes of ``text`` (from ``utf8_safe``) in UTF-8, without encoding an ASCII one."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))
