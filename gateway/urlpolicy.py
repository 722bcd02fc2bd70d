"""Which callback URLs the gateway accepts, and which addresses it will connect to.

Checked twice: at request time on the URL's text (scheme, length, credentials, a
literal non-public address or ``localhost``), and at delivery time on every address
the host name resolves to, so that the connection goes only to a vetted address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


class UrlRefused(ValueError):
    """The URL or one of its addresses is not allowed."""


@dataclass(frozen=True)
class Policy:
    """Which non-public targets the operator allows.

    ``allow_private`` allows every one (``GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS``);
    ``allowed_hosts`` (``GATEWAY_CALLBACK_ALLOWED_HOSTS``) names hosts, exactly or as
    ``*.suffix``, that may be or resolve to non-public addresses, such as an internal
    receiver. Public targets are always allowed.
    """

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: dict) -> Policy:
        hosts = config.get("CALLBACK_ALLOWED_HOSTS") or ()
        if isinstance(hosts, str):
            hosts = hosts.split(",")
        return cls(
            allow_private=bool(config.get("CALLBACK_ALLOW_PRIVATE_NETWORKS")),
            allowed_hosts=tuple(h.strip().rstrip(".").lower() for h in hosts if h.strip()),
        )

    def permits_private(self, host: str) -> bool:
        if self.allow_private:
            return True
        host = host.rstrip(".").lower()
        for allowed in self.allowed_hosts:
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False


# The resolver; tests replace it to play a DNS server that answers what they need.
getaddrinfo = socket.getaddrinfo


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _6TO4:
        return address.sixtofour
    return None


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (CGNAT, multicast and all reserved out)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, including legacy spellings (``2130706433``, ``0x7f.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton accepts the decimal, hex and octal forms that resolvers also accept.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: str, policy: Policy) -> None:
    """Refuse a callback URL on its text alone; raises UrlRefused with the reason."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isprintable():  # control characters, and lone surrogates Redis could not store
        raise UrlRefused("callback URL contains control or unencodable characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused(f"callback URL is not a valid URL: {error}") from None
    if parts.scheme not in SCHEMES:
        raise UrlRefused("callback URL must use http or https")
    if not parts.hostname:
        raise UrlRefused("callback URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("callback URL must not carry credentials")
    if port == 0:
        raise UrlRefused("callback URL port must be 1-65535")
    host = parts.hostname.rstrip(".").lower()
    if policy.permits_private(host):
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise UrlRefused("callback URL points at localhost, which is not allowed")
    address = literal_address(host)
    if address is not None and not is_public(address):
        raise UrlRefused(f"callback URL points at non-public address {address}, which is not allowed")


def resolve_vetted(host: str, port: int, policy: Policy) -> str:
    """Resolve ``host`` and return one address to connect to, all addresses vetted.

    Every address the name resolves to must be public (unless allowed): one bad
    answer refuses the whole name, since a resolver may hand out any of them.
    """
    try:
        answers = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OSError(f"cannot resolve {host!r}: {error.strerror}") from None
    addresses = [ipaddress.ip_address(answer[4][0].split("%", 1)[0]) for answer in answers]
    if not addresses:
        raise OSError(f"cannot resolve {host!r}: no addresses")
    if not policy.permits_private(host):
        refused = [str(address) for address in addresses if not is_public(address)]
        if refused:
            raise UrlRefused(f"{host} resolves to non-public address(es) {', '.join(refused)}")
    return str(addresses[0])
