"""Callbacks cannot be aimed at the gateway's own network (SSRF), at request or delivery time."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from gateway import urlpolicy
from tests.test_reuse import create, stage

NOT_PUBLIC = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.0.2.1", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1",
    "ff02::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2002:c0a8:101::",
    "::7f00:1", "::127.0.0.1", "::a9fe:a9fe", "::8.8.8.8", "64:ff9b:1::1", "64:ff9b:1::808:808",
    "fec0::1", "feff::1", "100::1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_recognised(address):
    assert not urlpolicy.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert urlpolicy.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("spelling", "address"),
    [("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
     ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("3232235777", "192.168.1.1")],
)  # fmt: skip
def test_legacy_ip_spellings_are_read_as_addresses(spelling, address):
    assert str(urlpolicy.literal_address(spelling)) == address


class FakeDNS:
    """A resolver for tests: name → addresses, counting lookups."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host, port, type=0, **_):  # noqa: A002 (socket's parameter name)
        self.lookups.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        results = []
        for address in self.answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            results.append((family, socket.SOCK_STREAM, 6, "", (address, port)))
        return results


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDNS({})
    monkeypatch.setattr(urlpolicy, "getaddrinfo", fake)
    return fake


def test_name_resolving_to_a_private_address_is_refused_at_delivery(make_app, work, task_id, receiver, dns):
    dns.answers["rebind.example"] = ["127.0.0.1"]
    app = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False)
    client = app.test_client()
    url = f"http://rebind.example:{receiver.server.server_port}/hook"
    assert create(client, task_id, callback=url).status_code == 202  # a public-looking name passes
    work(app)
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 1  # refusal is final: no retries
    assert "non-public" in record["last_error"]
    assert receiver.requests == []


def test_one_private_answer_among_public_ones_refuses_the_name(make_app, work, task_id, receiver, dns):
    dns.answers["mixed.example"] = ["93.184.216.34", "10.0.0.5"]
    app = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False)
    client = app.test_client()
    create(client, task_id, callback="http://mixed.example/hook")
    work(app)
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert "10.0.0.5" in record["last_error"]


def test_delivery_connects_to_the_address_it_vetted_without_a_second_lookup(make_app, work, task_id, receiver, dns):
    dns.answers["hooks.example"] = ["127.0.0.1"]
    app = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False, CALLBACK_ALLOWED_HOSTS=["hooks.example"])
    client = app.test_client()
    url = f"http://hooks.example:{receiver.server.server_port}/hook"
    create(client, task_id, callback=url)
    work(app)
    [delivered] = receiver.wait_for(1)
    assert delivered["headers"]["host"] == f"hooks.example:{receiver.server.server_port}"
    assert dns.lookups == ["hooks.example"]


def test_allowed_hosts_match_suffix_patterns_only(dns):
    policy = urlpolicy.Policy(allowed_hosts=("*.internal.example", "exact.example"))
    assert policy.permits_private("a.internal.example")
    assert policy.permits_private("exact.example")
    assert not policy.permits_private("internal.example.evil.com")
    assert not policy.permits_private("evilinternal.example")
    assert not policy.permits_private("sub.exact.example")


def test_allowed_hosts_from_environment_style_string():
    policy = urlpolicy.Policy.from_config({"CALLBACK_ALLOWED_HOSTS": "a.example, *.b.example"})
    assert policy.allowed_hosts == ("a.example", "*.b.example")


def test_unresolvable_name_is_retried_not_refused(make_app, work, task_id, dns):
    app = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False, CALLBACK_RETRY_INTERVALS=[0])
    client = app.test_client()
    create(client, task_id, callback="http://nowhere.example/hook")
    work(app)
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 2
    assert "cannot resolve" in record["last_error"]


# -- issue 9, item 6: more IPv6 ranges, Unicode spellings, host:port entries -----------

REFUSED_AT_CREATE = [
    "http://[::7f00:1]/hook", "http://[::127.0.0.1]/hook", "http://[64:ff9b:1::a9fe:a9fe]/hook",
    "http://[fec0::1]/hook", "http://１２７.０.０.１/hook", "http://127。0。0。1/hook",
    "http://127．0．0．1/hook", "http://ｌｏｃａｌｈｏｓｔ/hook", "http://ＬＯＣＡＬＨＯＳＴ.:8080/hook",
    "http://１６９.２５４.１６９.２５４/latest/meta-data", "http://０ｘ７ｆ.１/hook",
]  # fmt: skip


@pytest.mark.parametrize("url", REFUSED_AT_CREATE)
def test_non_public_targets_in_any_spelling_are_refused_at_create(make_app, task_id, url):
    app = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False)
    response = create(app.test_client(), task_id, callback=url)
    assert response.status_code == 400
    [reason] = response.json["error"]["details"]["callback"]
    assert "localhost" in reason or "non-public" in reason
    with pytest.raises(urlpolicy.UrlRefused):
        urlpolicy.check_url(url, urlpolicy.Policy())


def test_unicode_spelling_of_an_allowed_host_is_sent_in_its_ascii_form(make_app, work, task_id, receiver, dns):
    dns.answers["localhost"] = ["127.0.0.1"]
    port = receiver.server.server_port
    app = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False, CALLBACK_ALLOWED_HOSTS=[f"localhost:{port}"])
    client = app.test_client()
    assert create(client, task_id, callback=f"http://ｌｏｃａｌｈｏｓｔ:{port}/hook").status_code == 202
    work(app)
    [delivered] = receiver.wait_for(1)
    assert delivered["headers"]["host"] == f"localhost:{port}"
    assert dns.lookups == ["localhost"]


def test_allowed_host_with_a_port_allows_that_port_only():
    policy = urlpolicy.Policy.from_config(
        {"CALLBACK_ALLOWED_HOSTS": "hooks.example:8443, *.svc.example:443, [fd00::1]:8080, 10.0.0.5:9000, any.example"}
    )
    assert policy.permits_private("hooks.example", 8443)
    assert not policy.permits_private("hooks.example", 443)
    assert not policy.permits_private("hooks.example")  # port unknown: not that port
    assert policy.permits_private("a.svc.example", 443)
    assert not policy.permits_private("a.svc.example", 8443)
    assert policy.permits_private("fd00::1", 8080)
    assert not policy.permits_private("fd00::1", 80)
    assert policy.permits_private("any.example", 1)
    urlpolicy.check_url("http://10.0.0.5:9000/hook", policy)
    urlpolicy.check_url("http://[fd00:0:0::1]:8080/hook", policy)
    for url in ("http://10.0.0.5/hook", "http://10.0.0.5:9001/hook", "https://10.0.0.5/hook", "http://[fd00::1]/hook"):
        with pytest.raises(urlpolicy.UrlRefused, match="non-public"):
            urlpolicy.check_url(url, policy)


@pytest.mark.parametrize("entry", ["hooks.example:0", "hooks.example:99999", "hooks.example:http", "a..b", "[::1"])
def test_malformed_allowed_host_entries_stop_the_configuration(entry):
    with pytest.raises(ValueError, match="GATEWAY_CALLBACK_ALLOWED_HOSTS"):
        urlpolicy.Policy.from_config({"CALLBACK_ALLOWED_HOSTS": [entry]})


def test_allowed_host_port_is_enforced_at_create_and_at_delivery(make_app, work, task_id, receiver, dns):
    dns.answers.update({"hooks.example": ["127.0.0.1"], "127.0.0.1": ["127.0.0.1"]})
    port = receiver.server.server_port
    app = make_app(
        CALLBACK_ALLOW_PRIVATE_NETWORKS=False, CALLBACK_ALLOWED_HOSTS=["hooks.example:1", f"127.0.0.1:{port}"]
    )
    client = app.test_client()
    # At create: a literal address is judged with its port.
    assert create(client, task_id, callback=f"http://127.0.0.1:{port + 1}/hook").status_code == 400
    assert create(client, task_id, callback=f"http://127.0.0.1:{port}/ok").status_code == 202
    # At delivery: a name is judged by what it resolves to, on the URL's port.
    second = f"{task_id}-b"
    assert create(client, second, callback=f"http://hooks.example:{port}/hook").status_code == 202
    work(app)
    [delivered] = receiver.wait_for(1)
    assert delivered["path"] == "/ok"
    [record] = stage(client, second)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 1
    assert "non-public" in record["last_error"]
    assert len(receiver.requests) == 1


# -- issue 9, item 11: the URL's length in bytes -------------------------------------


def test_callback_url_is_bounded_in_bytes_as_given_and_as_sent(make_app, task_id):
    client = make_app().test_client()
    base = "http://hooks.example/"
    at_limit = base + "a" * (urlpolicy.MAX_URL_LENGTH - len(base))
    assert create(client, task_id, callback=at_limit).status_code == 202
    too_long = [
        at_limit + "a",
        base + "é" * 1100,  # 1121 characters, 2221 bytes of UTF-8
        base + "^" * 1000,  # 1021 characters, sent as 3021 (each ^ becomes %5E)
        "http://例え.jp/" + "a" * 2027,  # 2045 bytes of UTF-8, sent as 2049: the host's ASCII form is longer
    ]
    for url in too_long:
        assert len(url) <= urlpolicy.MAX_URL_LENGTH + 1
        response = create(client, task_id, callback=url)
        assert response.status_code == 400, url[:40]
        assert "2048 bytes" in response.json["error"]["details"]["callback"][0]
