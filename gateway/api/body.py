"""Reading a JSON request body strictly: right content type, valid JSON, bounded depth."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, UnsupportedMediaType

from gateway.exceptions import ValidationFailed

if TYPE_CHECKING:
    from flask import Request


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but no double: it would become inf, which JSON cannot carry back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range for a double")
    return value


# Built once: json.loads with hooks builds a new decoder per call, half its time on a small body.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _decode(raw: bytes) -> Any:
    """What ``json.loads`` does with bytes (UTF-8, -16 or -32), with our decoder.

    Two of its steps are skipped where their answer is known, on the usual body, an object
    in UTF-8 without surrounding whitespace (about 10k of the 34k instructions this took
    for a reuse hit's body): ``detect_encoding`` answers UTF-8 for any text whose first
    byte is "{" and whose second is not zero (no byte order mark starts so; a zero would
    mean UTF-16 or -32), and ``decode`` only skips whitespace on both sides of what
    ``raw_decode`` reads. Anything else takes the whole way, with its own errors."""
    if raw[:1] == b"{" and raw[1:2] != b"\x00":
        text = raw.decode("utf-8", "surrogatepass")
        value, end = _DECODER.raw_decode(text)  # the errors decode() raises for this text
        return value if end == len(text) else _DECODER.decode(text)
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _depth(value: Any) -> int:
    """Nesting depth of containers, level by level (no recursion: a deep body must not
    blow the stack), visiting containers only."""
    depth, level = 0, [value] if isinstance(value, (dict, list)) else []
    while level:
        depth += 1
        children = []
        for node in level:
            items = node.values() if isinstance(node, dict) else node
            children.extend(child for child in items if isinstance(child, (dict, list)))
        level = children
    return depth


def _refuse_streamed_overflow(req: Request, raw: bytes, limit: int) -> None:
    """413 for a body without Content-Length (``Transfer-Encoding: chunked``) that goes on
    past MAX_CONTENT_LENGTH.

    Werkzeug refuses a Content-Length over the limit up front, but a streamed body it only
    reads up to the limit and stops there without a word: the cut body would then be
    parsed (400, or 202 when a JSON prefix fits). One more byte from the server's own
    stream (gunicorn ends it at the last chunk) tells a body that filled the limit exactly
    from one that goes on."""
    # The length first: reading the request's Content-Length costs a header lookup.
    if len(raw) >= limit and req.content_length is None and req.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def _read(req: Request, limit: int) -> bytes:
    """The body's bytes, at most ``limit`` (413).

    With a Content-Length within the limit (the usual request) and no Transfer-Encoding,
    exactly that many bytes from the server's stream, as PEP 3333 allows: what werkzeug
    reads too, without its ``LimitedStream``. gunicorn marks its input terminated, and
    werkzeug then wraps it in one whenever MAX_CONTENT_LENGTH is set, whose read loop
    costs a request about twenty Python calls (the reuse hit included). Anything else
    takes werkzeug's way."""
    environ = req.environ
    length = environ.get("CONTENT_LENGTH")
    if length and length.isascii() and length.isdigit() and "HTTP_TRANSFER_ENCODING" not in environ:
        size = int(length)
        if size <= limit:
            raw = environ["wsgi.input"].read(size)
            if len(raw) != size:
                raise ClientDisconnected()  # what werkzeug's LimitedStream raises
            return raw
    raw = req.get_data(cache=False)
    _refuse_streamed_overflow(req, raw, limit)
    return raw


def json_body(*, required: bool = True) -> Any:
    """The request's JSON value, at most MAX_CONTENT_LENGTH bytes (413), streamed or not."""
    # The request and the config looked up once: each use of a context proxy is a lookup,
    # and this is on the reuse hit's path.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    config = current_app._get_current_object().config  # type: ignore[attr-defined]
    raw = _read(req, config["MAX_CONTENT_LENGTH"])
    if not raw and not required:
        return {}
    if not req.is_json:
        raise UnsupportedMediaType("Content-Type must be application/json.")
    try:
        value = _decode(raw)
    except RecursionError:
        raise ValidationFailed("The request body is nested too deeply.", {"body": ["too deeply nested"]}) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationFailed("The request body is not valid JSON.", {"body": [str(error)]}) from None
    limit = int(config["MAX_JSON_DEPTH"])
    # Depth cannot exceed the number of brackets: most bodies need no walk at all.
    if raw.count(b"{") + raw.count(b"[") > limit and _depth(value) > limit:
        raise ValidationFailed(
            f"The request body is nested deeper than {limit} levels.", {"body": [f"depth limit is {limit}"]}
        )
    if not isinstance(value, dict):
        raise ValidationFailed("The request body must be a JSON object.", {"body": ["must be an object"]})
    return value
