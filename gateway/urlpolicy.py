"""Which callback URLs the gateway accepts, and which addresses it will connect to.

Checked twice: at request time on the URL's text (scheme, length, credentials, a host
that can be sent to, a literal non-public address or ``localhost``), and at delivery
time on every address the host name resolves to, so that the connection goes only to a
vetted address. Both checks see the host in one form: Unicode spellings are mapped
(UTS 46: fullwidth digits, ideographic full stops, case) and international names are
IDNA-encoded, so ``１２７.０.０.１`` is judged as the ``127.0.0.1`` a resolver would
make of it, and the ASCII form is what goes into DNS, ``Host`` and TLS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import idna
from requests.utils import requote_uri

#: Bytes, of the URL as given (UTF-8) and of the URL as sent (see ``Target.url``).
MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
# Never public, whatever Python's tables say (they call these global): the deprecated
# IPv4-compatible form (``::127.0.0.1``, which some stacks still route to 127.0.0.1),
# local-use NAT64 (RFC 8215: translated inside the operator's own network) and the
# deprecated site-local range.
_NEVER_PUBLIC = (
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("fec0::/10"),
)

# One DNS label in ASCII form (RFC 1035 lengths). Underscores are not valid in host
# names but exist on internal hosts, and every part of the delivery path accepts them.
_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
MAX_NAME_LENGTH = 253


class UrlRefused(ValueError):
    """The URL or one of its addresses is not allowed."""


@dataclass(frozen=True)
class Target:
    """A callback URL in the form the delivery uses."""

    scheme: str
    #: ASCII (IDNA) form, lower case, as sent in ``Host`` and to DNS and TLS; an IPv6
    #: address without brackets.
    host: str
    #: The port connected to: the URL's, or the scheme's default.
    port: int
    #: The ``Host`` header: host, with the port when the URL names one.
    host_header: str
    #: The URL as sent: ASCII host, characters outside URLs percent-encoded.
    url: str


@dataclass(frozen=True)
class _HostRule:
    pattern: str  # exact name, or "*.suffix"
    port: int | None  # None: every port

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.pattern.startswith("*."):
            return host.endswith(self.pattern[1:])
        return host == self.pattern


@dataclass(frozen=True)
class Policy:
    """Which non-public targets the operator allows.

    ``allow_private`` allows every one (``GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS``);
    ``allowed_hosts`` (``GATEWAY_CALLBACK_ALLOWED_HOSTS``) names hosts, exactly or as
    ``*.suffix``, that may be or resolve to non-public addresses, such as an internal
    receiver; ``host:port`` (``[v6-address]:port``) allows that host on that port only.
    Public targets are always allowed.
    """

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    _rules: tuple[_HostRule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", tuple(_host_rule(entry) for entry in self.allowed_hosts))

    @classmethod
    def from_config(cls, config: dict) -> Policy:
        hosts = config.get("CALLBACK_ALLOWED_HOSTS") or ()
        if isinstance(hosts, str):
            hosts = hosts.split(",")
        return cls(
            allow_private=bool(config.get("CALLBACK_ALLOW_PRIVATE_NETWORKS")),
            allowed_hosts=tuple(h.strip().rstrip(".").lower() for h in hosts if h.strip()),
        )

    def permits_private(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` (ASCII form) may be non-public when connected to on ``port``;
        an entry that names a port matches no other port, nor an unknown one."""
        if self.allow_private:
            return True
        host = host.rstrip(".").lower()
        return any(rule.matches(host, port) for rule in self._rules)


def _host_rule(entry: str) -> _HostRule:
    """One ``GATEWAY_CALLBACK_ALLOWED_HOSTS`` entry; ValueError names a bad one."""
    text, port = entry.strip(), None
    if text.startswith("["):  # [v6-address] or [v6-address]:port
        address, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"GATEWAY_CALLBACK_ALLOWED_HOSTS entry {entry!r}: no closing ']'")
        if rest:
            port = _rule_port(entry, rest.removeprefix(":") if rest.startswith(":") else "")
        text = address
    elif text.count(":") == 1:  # host:port (two colons or more: a bare IPv6 address)
        text, port_text = text.split(":")
        port = _rule_port(entry, port_text)
    wildcard = text.startswith("*.")
    try:
        if ":" in text:
            return _HostRule(_ipv6_host(text), port)
        host = ascii_host(text[2:] if wildcard else text)
    except UrlRefused as error:
        raise ValueError(f"GATEWAY_CALLBACK_ALLOWED_HOSTS entry {entry!r}: {error}") from None
    return _HostRule(("*." if wildcard else "") + host.rstrip("."), port)


def _rule_port(entry: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"GATEWAY_CALLBACK_ALLOWED_HOSTS entry {entry!r}: the port must be 1-65535")
    return int(text)


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
        if any(address in network for network in _NEVER_PUBLIC) or address.is_reserved:
            return False
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


def ascii_host(host: str) -> str:
    """A host name in the form DNS, ``Host`` and TLS get: Unicode spellings mapped
    (UTS 46), international labels IDNA-encoded, lower case; a trailing dot is kept.

    Raises UrlRefused for a name no resolver would take: an empty label (``a..b``), a
    label over 63 bytes, a name over 253, a character outside names (space, ``%``), or
    an international label IDNA cannot encode.
    """
    if host.isascii():
        host = host.lower()
    else:
        try:
            mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
            host = ".".join(label if label.isascii() else idna.alabel(label).decode() for label in mapped.split("."))
        except (UnicodeError, ValueError) as error:  # idna.IDNAError is a UnicodeError
            raise UrlRefused(f"callback URL host cannot be encoded for DNS (IDNA): {error}") from None
    name = host.removesuffix(".")
    if len(name) > MAX_NAME_LENGTH:
        raise UrlRefused(f"callback URL host is longer than {MAX_NAME_LENGTH} characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise UrlRefused(
                "callback URL host is not a valid name: each label must be 1-63 letters, digits, '-' or '_'"
            )
    return host


def _ipv6_host(text: str) -> str:
    """An IPv6 address in its one (compressed) spelling, so that rules and URLs compare."""
    if "%" in text:
        raise UrlRefused("callback URL must not name an IPv6 zone")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError as error:
        raise UrlRefused(f"callback URL host is not a valid IPv6 address: {error}") from None


def target(url: str) -> Target:
    """The URL parsed, its host in ASCII form; raises UrlRefused for a URL that cannot
    be sent. The policy is not consulted (``check_url`` does)."""
    if len(url) > MAX_URL_LENGTH:  # characters: a cheap first bound on the bytes below
        raise UrlRefused(f"callback URL is longer than {MAX_URL_LENGTH} bytes")
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
    if ":" in parts.hostname:  # urlsplit checked the brackets hold an IPv6 address
        host = _ipv6_host(parts.hostname)
        netloc_host = f"[{host}]"
    else:
        host = netloc_host = ascii_host(parts.hostname)
    host_header = netloc_host if port is None else f"{netloc_host}:{port}"
    rest = parts.path or "/"
    if parts.query:
        rest += f"?{parts.query}"
    sent = requote_uri(f"{parts.scheme}://{host_header}{rest}")  # as requests sends it; the fragment never is
    if len(sent) > MAX_URL_LENGTH or len(url.encode("utf-8")) > MAX_URL_LENGTH:
        raise UrlRefused(f"callback URL is longer than {MAX_URL_LENGTH} bytes (UTF-8, or as sent)")
    return Target(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], host_header, sent)


def check_url(url: str, policy: Policy) -> Target:
    """Refuse a callback URL on its text alone; raises UrlRefused with the reason.

    Used by the create request (schema and fast path) and again by every delivery try.
    """
    parsed = target(url)
    host = parsed.host.rstrip(".")
    if policy.permits_private(host, parsed.port):
        return parsed
    if host == "localhost" or host.endswith(".localhost"):
        raise UrlRefused("callback URL points at localhost, which is not allowed")
    address = literal_address(host)
    if address is not None and not is_public(address):
        raise UrlRefused(f"callback URL points at non-public address {address}, which is not allowed")
    return parsed


def resolve_vetted(host: str, port: int, policy: Policy) -> str:
    """Resolve ``host`` and return one address to connect to, all addresses vetted.

    Every address the name resolves to must be public (unless allowed): one bad
    answer refuses the whole name, since a resolver may hand out any of them.
    """
    try:
        answers = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OSError(f"cannot resolve {host!r}: {error.strerror}") from None
    except UnicodeError as error:  # Python's IDNA 2003 codec; ascii_host lets no such name through
        raise OSError(f"cannot resolve {host!r}: {error}") from None
    addresses = [ipaddress.ip_address(answer[4][0].split("%", 1)[0]) for answer in answers]
    if not addresses:
        raise OSError(f"cannot resolve {host!r}: no addresses")
    if not policy.permits_private(host, port):
        refused = [str(address) for address in addresses if not is_public(address)]
        if refused:
            raise UrlRefused(f"{host} resolves to non-public address(es) {', '.join(refused)}")
    return str(addresses[0])
