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
