"""Who is signed in to the console, and the form token, in one signed cookie.

Not Flask's ``session``: with ``app.secret_key`` set Flask opens a session on every
request, the API's reuse hits too. This cookie is read by the console's views only.

The cookie holds the SHA-256 digest of the token signed in with (never the token) and a
random CSRF token, signed with ``itsdangerous`` and timed: it is worth ``MAX_AGE_SECONDS``.
Each request looks the digest up again in the configured tokens, so removing a token from
``GATEWAY_API_TOKENS`` or ``GATEWAY_CONSOLE_TOKENS`` (and restarting) signs its sessions
out. The signing key is ``GATEWAY_CONSOLE_SECRET``; unset, a random key that the first
console request stores in Redis (``SET NX``, ``keys.console_secret``) and every web process
reads, so that a cookie made by one gunicorn process is good in all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway import keys
from gateway.store import get_redis

if TYPE_CHECKING:
    from flask import Flask, Request, Response

COOKIE = "gw_console"
COOKIE_PATH = "/console"
MAX_AGE_SECONDS = 12 * 3600
_SALT = "gateway.console.session"


@dataclass(frozen=True)
class Viewer:
    """Who looks: an operator sees every tenant, a tenant only its own tasks."""

    #: The tenant of a tenant's token; None for an operator (or the open console).
    tenant: str | None
    operator: bool
    #: Whether the console is open (no tokens configured): nobody signs in or out.
    open: bool = False

    @property
    def label(self) -> str:
        if self.open:
            return "open console (no tokens configured)"
        return "operator" if self.operator else f"tenant {self.tenant}"


@dataclass
class ConsoleSession:
    #: SHA-256 hex digest of the token signed in with; None when nobody is.
    digest: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Whether the cookie must be (re)written with this response.
    changed: bool = True

    def csrf_matches(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf.encode())


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    """The console's sign-in rules for one app: its tokens and its cookie key."""

    def __init__(self, app: Flask) -> None:
        #: digest → tenant, the API's tokens (``tenancy.load_tokens``: digests only)
        self._tenants: dict[bytes, str] = app.extensions["gateway.tokens"]
        self._operators = frozenset(hashlib.sha256(t.encode("utf-8")).digest() for t in app.config["CONSOLE_TOKENS"])
        self.open = not self._tenants and not self._operators
        self._configured_secret: str | None = app.config["CONSOLE_SECRET"]
        self._serializer: URLSafeTimedSerializer | None = None

    def _signer(self) -> URLSafeTimedSerializer:
        if self._serializer is None:
            secret = self._configured_secret or _shared_secret()
            self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        return self._serializer

    # -- the cookie -------------------------------------------------------------------

    def load(self, request: Request) -> ConsoleSession:
        """The request's session, or a new anonymous one when its cookie is missing,
        expired, or not signed with our key."""
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self._signer().loads(raw, max_age=MAX_AGE_SECONDS)
                return ConsoleSession(digest=data.get("d"), csrf=data["c"], changed=False)
            except (BadSignature, KeyError, TypeError, AttributeError):
                pass
        return ConsoleSession()

    def save(self, session: ConsoleSession, response: Response, *, secure: bool) -> None:
        if not session.changed:
            return
        value = self._signer().dumps({"d": session.digest, "c": session.csrf})
        response.set_cookie(
            COOKIE,
            value,
            max_age=MAX_AGE_SECONDS,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=secure,
        )

    # -- tokens -----------------------------------------------------------------------

    def viewer(self, session: ConsoleSession) -> Viewer | None:
        """Who the session is, while its token is still configured; None: sign in."""
        if self.open:
            return Viewer(tenant=None, operator=True, open=True)
        if not session.digest:
            return None
        try:
            digest = bytes.fromhex(session.digest)
        except ValueError:
            return None
        if digest in self._operators:
            return Viewer(tenant=None, operator=True)
        tenant = self._tenants.get(digest)
        return Viewer(tenant=tenant, operator=False) if tenant is not None else None

    def sign_in(self, token: str) -> ConsoleSession | None:
        """A new signed-in session for a valid token (a new CSRF token too), else None."""
        token = token.strip()
        if not token:
            return None
        session = ConsoleSession(digest=token_digest(token))
        return session if self.viewer(session) is not None else None


def _shared_secret() -> str:
    """The key kept in Redis: the first process to ask makes it, every process reads it."""
    client = get_redis()
    client.set(keys.console_secret(), secrets.token_urlsafe(48), nx=True)
    secret = client.get(keys.console_secret())
    if not secret:  # deleted between the two commands: ask again on the next request
        raise RuntimeError("the console's session key vanished from Redis; try again")
    return secret


def get_sessions(app: Flask | None = None) -> Sessions:
    app = app or current_app
    return app.extensions["gateway.console.sessions"]
