"""Which proxies the app believes: ``X-Forwarded-For``, ``-Proto`` and ``-Host`` are read
only from the ``GATEWAY_TRUSTED_PROXIES`` proxies in front of it (werkzeug's ``ProxyFix``).

The setting is a hop count: how many proxies, each appending to (or, the last one,
setting) ``X-Forwarded-For``, stand between the client and gunicorn. 0, the default,
trusts none: the client address is the socket's peer and any ``X-Forwarded-*`` header is
ignored, so a client that reaches gunicorn directly cannot claim another address. Behind
the shipped nginx (docs/deploy/nginx.conf), which sets the three headers, it is 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    hops = int(app.config["TRUSTED_PROXIES"])
    if hops:
        # Nothing is wrapped without proxies: a direct deployment pays nothing for it.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
