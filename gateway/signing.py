"""Callback signing secrets: which ``whsec_`` secrets sign a delivery, per tenant.

With one shared secret, tenant B could have a validly signed callback of its choosing
(its own task, the same ``task_id`` text) sent to tenant A's receiver. So each tenant
signs with its own secret, derived from each configured secret::

    whsec_ + base64(HMAC-SHA256(key = the configured secret's key bytes, msg = LABEL + tenant))

where the key bytes are what Standard Webhooks signs with (the base64 after ``whsec_``,
decoded). Several configured secrets (rotation) derive several secrets, so a delivery
keeps carrying one signature per secret. ``GATEWAY_TENANT_SIGNING_SECRETS`` may name a
tenant's secret (or list, while rotating) outright; it then replaces the derivation for
that tenant. Without tenants (no API tokens) the configured secrets sign as they are.

``flask --app wsgi tenants secret <tenant>`` prints the secret an operator hands to a
tenant's receiver.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from gateway.exceptions import ConfigError
from gateway.tenancy import tenant_of

if TYPE_CHECKING:
    from flask import Flask

PREFIX = "whsec_"
#: Domain separation: a derived secret is good for nothing but this gateway's callbacks.
LABEL = b"single-task-gateway/callback-signing/v1:"


def key_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret, decoded as Standard Webhooks decodes it (so a
    derived secret depends on exactly the key the configured one signs with). The form of
    every configured secret is checked at start (``config_fields.check_secret``)."""
    encoded = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    encoded += "=="  # b64decode ignores surplus padding unless it validates
    try:
        key = base64.b64decode(encoded)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


def derive(secret: str, tenant: str) -> str:
    """The tenant's secret derived from one configured secret."""
    digest = hmac.new(key_bytes(secret), LABEL + tenant.encode("ascii"), hashlib.sha256).digest()
    return PREFIX + base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class SigningSecrets:
    """The configured secrets and the per-tenant overrides; the first secret of a list is
    the current one."""

    configured: list[str]
    overrides: dict[str, list[str]] = field(default_factory=dict)

    def for_tenant(self, tenant: str | None) -> list[str]:
        """The secrets that sign a delivery of ``tenant`` (None: no tenants)."""
        if tenant is None:
            return self.configured
        if tenant in self.overrides:
            return self.overrides[tenant]
        return [derive(secret, tenant) for secret in self.configured]


def load_overrides(value: dict[str, list[str]] | None, tenants: set[str]) -> dict[str, list[str]]:
    """Tenant → its secrets. ``config`` already read the JSON (or ``@/path``) and checked
    each secret (``config_fields.TenantSecrets``); what is left needs the tokens too."""
    overrides = {}
    for tenant, secrets in (value or {}).items():
        if tenant not in tenants:
            # A typo would silently leave the tenant on its derived secret.
            raise ConfigError(f"GATEWAY_TENANT_SIGNING_SECRETS names {tenant!r}, which no GATEWAY_API_TOKENS token has")
        if not secrets:
            raise ConfigError(f"GATEWAY_TENANT_SIGNING_SECRETS[{tenant!r}] must be a whsec_ secret or a list of them")
        overrides[tenant] = list(secrets)
    return overrides


def get_signing() -> SigningSecrets:
    return current_app.extensions["gateway.signing"]


def secrets_for(store_id: str) -> list[str]:
    """The secrets that sign a delivery of the task with this store id."""
    return get_signing().for_tenant(tenant_of(store_id))


def current_secret(tenant: str) -> str:
    """The secret a tenant's receiver verifies with now (``tenants secret``); LookupError
    says why there is none."""
    tenants = set(current_app.extensions["gateway.tokens"].values())
    if tenant not in tenants:
        if not tenants:
            raise LookupError(
                "GATEWAY_API_TOKENS is not set, so there are no tenants: every callback is signed "
                "with GATEWAY_CALLBACK_SIGNING_SECRET itself"
            )
        raise LookupError(f"unknown tenant {tenant!r}: no token in GATEWAY_API_TOKENS names it")
    secrets = get_signing().for_tenant(tenant)
    if not secrets:
        raise LookupError(
            f"tenant {tenant!r} has no signing secret: set GATEWAY_CALLBACK_SIGNING_SECRET "
            "(or GATEWAY_TENANT_SIGNING_SECRETS for this tenant)"
        )
    return secrets[0]


def init_app(app: Flask) -> None:
    """Read the secrets once; needs ``tenancy.init_app`` first (to know the tenants)."""
    tenants = set(app.extensions["gateway.tokens"].values())
    app.extensions["gateway.signing"] = SigningSecrets(
        app.config["CALLBACK_SIGNING_SECRETS"], load_overrides(app.config["TENANT_SIGNING_SECRETS"], tenants)
    )
