"""The headers every console response carries, and where a sign-in may send the browser.

The Content-Security-Policy allows nothing but the app's own files: no inline script or
style (the pages use classes and SVG attributes, the one script is a static file), no
frames of the console anywhere, forms posting only to the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Response

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_headers(response: Response, *, page: bool) -> Response:
    """The security headers; a page (not a static file) is also never cached: it shows
    tasks, which a shared computer's next user must not find in the cache."""
    for name, value in HEADERS.items():
        response.headers[name] = value
    if page:
        response.headers["Cache-Control"] = "no-store"
    return response


def local_target(target: str | None, default: str) -> str:
    """``target`` when it is a path of the console (after a sign-in), else ``default``:
    never another site (``//evil.example`` or ``/\\evil.example`` are refused)."""
    if not target or not target.startswith("/console") or "\\" in target or target.startswith("//"):
        return default
    return target
