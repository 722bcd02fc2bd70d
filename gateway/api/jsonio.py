"""The app's JSON provider: answers in UTF-8 rather than ``\\u`` escapes.

An emoji is 4 bytes in UTF-8 and 12 as escapes, so a ``/status`` of stored emoji was
three times its size. Lone surrogates from a caller's input stay escaped (``jsontext``),
so that every answer is valid UTF-8.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

from gateway import jsontext


class GatewayJSONProvider(DefaultJSONProvider):
    ensure_ascii = False
    sort_keys = False  # keep documents in the order we build them

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return jsontext.utf8_safe(super().dumps(obj, **kwargs))
