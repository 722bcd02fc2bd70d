"""The marshmallow fields that read ``GATEWAY_*`` values: text from the environment or
native values from ``create_app(test_config)``, each checked against its bounds.

Each field's error message says what the value must be ("must be a whole number ≥ 1");
``gateway.config`` puts the variable's name and the value it got in front of it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from pathlib import Path
from typing import Any

from marshmallow import ValidationError, fields

from gateway.tenancy import TENANT_NAME

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
# The Standard Webhooks spec: a "whsec_" prefix, then base64 of 24 to 64 random bytes.
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)
MIN_TOKEN_LENGTH = 16
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Setting(fields.Field):
    """A setting's field. ``secret`` keeps the value out of error messages."""

    def __init__(self, *, secret: bool = False, **kwargs: Any) -> None:
        super().__init__(allow_none=kwargs.pop("allow_none", False), **kwargs)
        self.secret = secret


class Boolean(Setting):
    """true/false/1/0/yes/no/on/off in any case; anything else is refused."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        word = value.strip().lower() if isinstance(value, str) else None
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValidationError("must be true or false (also 1/0, yes/no, on/off)")


class Number(Setting):
    """A finite number (``whole`` for integers) with a lower bound."""

    def __init__(self, *, minimum: float, whole: bool = False, above: bool = False, unit: str = "", **kwargs):
        super().__init__(**kwargs)
        self.minimum, self.whole, self.above = minimum, whole, above
        kind = "a whole number" if whole else "a number"
        bound = f"> {minimum:g}" if above else f"≥ {minimum:g}"
        self.what = f"{kind}{' of ' + unit if unit else ''} {bound}"

    def _deserialize(self, value, attr, data, **kwargs):
        number = self._parse(value)
        if number is None or number < self.minimum or (self.above and number == self.minimum):
            raise ValidationError(f"must be {self.what}")
        return number

    def _parse(self, value: Any) -> float | int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if self.whole else float(text)
            except ValueError:
                return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value):
            if self.whole:
                return int(value) if value.is_integer() else None
            return value
        return None


class Text(Setting):
    """Text; ``pattern`` (with ``what``) restricts it."""

    def __init__(self, *, pattern: str | None = None, what: str = "text", **kwargs):
        super().__init__(**kwargs)
        self.pattern = re.compile(pattern) if pattern else None
        self.what = what

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or (self.pattern and not self.pattern.match(value)):
            raise ValidationError(f"must be {self.what}")
        return value


def _read_file(path: str) -> str:
    """The text of an ``@/path`` value (secrets kept out of the environment)."""
    try:
        return Path(path).read_text()
    except OSError as error:
        raise ValidationError(f"names a file that cannot be read ({error.strerror})") from None


def _json_or_text(value: Any) -> Any:
    """A JSON value when the text is one (starts with ``[`` or ``{``), else the text."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            raise ValidationError("is not valid JSON") from None
    return value


class List(Setting):
    """A JSON list, or comma-separated text; each item goes through ``item``."""

    def __init__(self, item: fields.Field, *, what: str, **kwargs):
        super().__init__(**kwargs)
        self.item, self.what = item, what

    def _deserialize(self, value, attr, data, **kwargs):
        value = _json_or_text(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValidationError(f"must be {self.what}")
        try:
            return [self.item.deserialize(item) for item in value]
        except ValidationError:
            raise ValidationError(f"must be {self.what}") from None


def modules() -> List:
    return List(Text(pattern=_MODULE_NAME.pattern), what="Python module names, comma-separated or a JSON list")


def check_secret(value: Any) -> str:
    """``value`` if it is a ``whsec_`` secret the Standard Webhooks libraries accept."""
    what = f"a {SECRET_PREFIX}<base64 of {SECRET_BYTES[0]} to {SECRET_BYTES[1]} bytes> secret"
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValidationError(f"must be {what}")
    encoded = value[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"must be {what} (the part after {SECRET_PREFIX} is not base64)") from None
    if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
        raise ValidationError(f"must be {what}, and this one is {len(key)} bytes")
    return value


class Secrets(Setting):
    """One ``whsec_`` secret, or a JSON list of them while rotating → a list."""

    def __init__(self, **kwargs):
        super().__init__(secret=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = _json_or_text(value)
        if value in ("", []):
            return []  # no signing, as when unset
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValidationError("must be one whsec_ secret or a JSON list of them")
        return [check_secret(item) for item in items]


def _tenant(name: Any) -> str:
    if not isinstance(name, str) or not TENANT_NAME.match(name):
        raise ValidationError(f"has a tenant name that does not match {TENANT_NAME.pattern}")
    return name


def _unless_file(value: Any) -> Any:
    """The value itself, or the contents of the file ``@/path`` names."""
    if isinstance(value, str) and value.startswith("@"):
        return _read_file(value[1:])
    return value


def _check_token(token: str, whose: str = "") -> None:
    """An API or console token: no surrounding whitespace, ``MIN_TOKEN_LENGTH`` at least."""
    if token != token.strip():
        raise ValidationError(f"has a token with surrounding whitespace{whose}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValidationError(f"has a token shorter than {MIN_TOKEN_LENGTH} characters{whose}")


class TenantSecrets(Setting):
    """A JSON object tenant → ``whsec_`` secret (or a list of them while rotating)."""

    def __init__(self, **kwargs):
        super().__init__(secret=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = _unless_file(value)
        value = _json_or_text(value)
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object of tenant → whsec_ secret (or a list of them), or @file")
        secrets = Secrets()
        return {_tenant(tenant): secrets.deserialize(given) for tenant, given in value.items()}


class NodeUrls(Setting):
    """A JSON object node → Redis URL, ``"*"`` standing for every node it does not name.
    A URL may hold a password: messages name the node, never the URL."""

    def __init__(self, *, node: str, url: str, what: str, **kwargs):
        super().__init__(secret=True, **kwargs)
        self.node, self.url, self.what = re.compile(node), re.compile(url), what

    def _deserialize(self, value, attr, data, **kwargs):
        value = _json_or_text(value)
        if not isinstance(value, dict):
            raise ValidationError(f"must be a JSON object of {self.what}")
        for node, url in value.items():
            if node != "*" and not self.node.match(node):
                raise ValidationError(f'has the key {node!r}, which is no node name (nor "*"): {self.what}')
            if not isinstance(url, str) or not self.url.match(url):
                raise ValidationError(f"maps {node!r} to no Redis URL: {self.what}")
        return dict(value)


class Tokens(Setting):
    """A JSON object token → tenant, or ``@/path/to/tokens.json`` naming one."""

    def __init__(self, **kwargs):
        super().__init__(secret=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = _unless_file(value)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValidationError("is not valid JSON (a JSON object of token → tenant, or @file)") from None
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object of token → tenant, or @/path/to/such.json")
        for token, tenant in value.items():
            _tenant(tenant)
            if not isinstance(token, str):
                raise ValidationError("must be a JSON object of token → tenant, or @/path/to/such.json")
            _check_token(token, f" (tenant {tenant!r})")
        return value


class TokenList(Setting):
    """A JSON list of tokens, comma-separated tokens, or ``@/path/to/tokens.json`` naming
    a JSON list: each of ``MIN_TOKEN_LENGTH`` characters at least, without surrounding
    whitespace."""

    def __init__(self, **kwargs):
        super().__init__(secret=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = _unless_file(value)
        value = _json_or_text(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(token, str) for token in value):
            raise ValidationError("must be a JSON list of tokens, comma-separated tokens, or @/path/to/such.json")
        for token in value:
            _check_token(token)
        return list(value)
