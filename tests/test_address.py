"""The client address behind proxies, and the Host names served: no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from squall.address import (
    HostPolicy,
    client_address,
    default_allowed_hosts,
    forwarded_https,
    host_name,
    metrics_refusal,
    parse_networks,
    rate_key,
)

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(("peer", "xff", "client"), [
    # An untrusted peer is the client, whatever it claims.
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
    # A trusted proxy: the rightmost untrusted entry is the client.
    ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
    # Entries left of the client were written by the client: ignored.
    ("10.0.0.2", "1.1.1.1, 198.51.100.1", "198.51.100.1"),
    # Trusted proxies in the chain are skipped.
    ("10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.7", "198.51.100.1"),
    # Repeated headers are joined by commas before they get here.
    ("10.0.0.2", "198.51.100.1,10.0.0.7", "198.51.100.1"),
    # No header from a trusted proxy: the proxy is all we know.
    ("10.0.0.2", None, "10.0.0.2"),
    ("10.0.0.2", "", "10.0.0.2"),
    # Garbage stops the walk at the proxy that passed it on.
    ("10.0.0.2", "198.51.100.1, unknown", "10.0.0.2"),
    ("10.0.0.2", "198.51.100.1, unknown, 10.0.0.7", "10.0.0.7"),
    # Only proxies all the way: the leftmost is the best guess.
    ("10.0.0.2", "10.0.0.3, 10.0.0.4", "10.0.0.3"),
    # Ports and brackets as some proxies write them; IPv6; IPv4-mapped.
    ("10.0.0.2", "198.51.100.1:5555", "198.51.100.1"),
    ("fd00::1", "[2001:db8::7]:443", "2001:db8::7"),
    ("::ffff:10.0.0.2", "2001:db8::7", "2001:db8::7"),
])
def test_forwarded_for_is_walked_from_the_right(peer: str, xff: str | None, client: str) -> None:
    assert client_address(peer, xff, PROXIES) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_forwarded_proto_only_from_a_trusted_proxy() -> None:
    assert forwarded_https("10.0.0.2", "https", PROXIES)
    assert forwarded_https("10.0.0.2", "http, https", PROXIES)  # ours is the last word
    assert not forwarded_https("10.0.0.2", "https, http", PROXIES)
    assert not forwarded_https("203.0.113.9", "https", PROXIES)
    assert not forwarded_https("10.0.0.2", None, PROXIES)
    assert not forwarded_https("10.0.0.2", "https", ())


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_rate_key_counts_an_ipv6_64_as_one_address() -> None:
    assert rate_key("198.51.100.1") == "198.51.100.1"
    assert rate_key("2001:db8:1:2:3:4:5:6") == rate_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")


@pytest.mark.parametrize(("header", "name"), [
    ("Example.COM", "example.com"), ("example.com:8080", "example.com"), ("example.com.", "example.com"),
    ("[::1]:8888", "::1"), ("127.0.0.1:80", "127.0.0.1"),
])
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_host_policy_allows_listed_names_and_ip_literals() -> None:
    policy = HostPolicy(["chat.example.com", "*.example.org"])
    assert policy.allows("chat.example.com:443")
    assert policy.allows("CHAT.example.com")
    assert policy.allows("a.example.org")
    assert not policy.allows("example.org")
    assert not policy.allows("evil.example")  # a rebinding page's own name
    assert not policy.allows("chat.example.com.evil.example")
    assert policy.allows("127.0.0.1:8888") and policy.allows("[::1]:8888") and policy.allows("192.0.2.4")
    assert policy.allows(None)  # HTTP/1.0 without Host: no browser
    assert "'evil.example'" in policy.refusal_reason("evil.example:80")


def test_host_policy_star_allows_anything() -> None:
    assert HostPolicy(["*"]).allows("whatever.example")


def test_default_allowed_hosts() -> None:
    assert default_allowed_hosts("127.0.0.1", "") == ("localhost",)
    assert default_allowed_hosts("0.0.0.0", "https://chat.example.com/") == ("chat.example.com", "localhost")
    assert default_allowed_hosts("chat.internal", "") == ("chat.internal",)


LOOPBACK = parse_networks(["127.0.0.0/8", "::1"])


@pytest.mark.parametrize(("peer", "headers", "trusted", "allowed"), [
    # The default: a scraper on this machine.
    ("127.0.0.1", {}, (), True),
    ("::1", {}, (), True),
    ("::ffff:127.0.0.1", {}, (), True),
    ("203.0.113.9", {}, (), False),
    # A proxy on this machine that is not trusted: its client is unknown, refused.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, (), False),
    ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}, (), False),
    ("127.0.0.1", {"Forwarded": "for=203.0.113.9"}, (), False),
    ("127.0.0.1", {"X-Real-IP": "203.0.113.9"}, (), False),
    # A trusted proxy: the client it names decides.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, PROXIES + LOOPBACK, False),
    ("10.0.0.2", {"X-Forwarded-For": "127.0.0.1"}, PROXIES, True),
    ("10.0.0.2", {}, PROXIES, False),  # the proxy itself, at 10.0.0.2, is not in the allow list
    ("", {}, (), False),
    ("not an address", {}, (), False),
])
def test_metrics_refusal(peer: str, headers: dict[str, str], trusted: tuple[Any, ...], allowed: bool) -> None:
    refusal = metrics_refusal(peer, headers, allow=LOOPBACK, trusted=trusted)
    assert (refusal is None) is allowed, refusal


def test_metrics_refusal_names_the_address_and_the_setting() -> None:
    assert metrics_refusal("203.0.113.9", {}, allow=LOOPBACK, trusted=()) == "203.0.113.9 is not in metrics_allow"
    reason = metrics_refusal("127.0.0.1", {"X-Forwarded-For": "1.2.3.4"}, allow=LOOPBACK, trusted=())
    assert reason is not None and "trusted_proxies" in reason
