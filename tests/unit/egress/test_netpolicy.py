"""The address policy of web_fetch and egress, as a table: what may never be reached."""

from __future__ import annotations

import ipaddress

import pytest

from clawpen.egress.netpolicy import (
    LoopbackExceptions,
    Refused,
    address_problem,
    check_address,
    domain_allowed,
    normalize_host,
    parse_target,
)

INWARD = [
    "127.0.0.1",
    "127.255.0.9",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:8.8.8.8",
    "64:ff9b::a00:1",
    "2002:7f00:1::",
    "2001:db8::1",
]


@pytest.mark.parametrize("address", INWARD)
def test_inward_addresses_are_refused(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_metadata_addresses_are_named_as_such() -> None:
    assert "metadata" in (address_problem(ipaddress.ip_address("169.254.169.254")) or "")
    assert "metadata" in (address_problem(ipaddress.ip_address("fd00:ec2::254")) or "")


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),  # decimal
        ("http://0177.0.0.1/", "127.0.0.1"),  # octal
        ("http://0x7f.1/", "127.0.0.1"),  # hex, short form
        ("http://127.1/", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),
        ("http://0.0.0.0:8080/", "0.0.0.0"),
        ("http://[::]/", "::"),
        ("http://[::1]:80/", "::1"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:a9fe:a9fe"),
        ("http://[fe80::1%25eth0]/", "fe80::1"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://0xa9fea9fe/", "169.254.169.254"),
        ("http://10.1.2.3/", "10.1.2.3"),
    ],
)
def test_numeric_hosts_in_every_form_are_checked_as_the_address_they_are(
    url: str, address: str
) -> None:
    target = parse_target(url)
    assert str(target.ip) == address
    with pytest.raises(Refused):
        check_address(target.ip, target.port)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pass@example.com/",
        "http://exa mple.com/",
        "http:///nohost",
        "http://example.com:99999/",
    ],
)
def test_urls_that_may_not_be_fetched_at_all(url: str) -> None:
    with pytest.raises(Refused):
        parse_target(url)


def test_names_are_normalized_idn_and_trailing_dots() -> None:
    assert normalize_host("Bücher.Example.") == "xn--bcher-kva.example"
    target = parse_target("https://EXAMPLE.com./a?b=1")
    assert (target.host, target.port, target.path, target.ip) == (
        "example.com",
        443,
        "/a?b=1",
        None,
    )
    assert parse_target("http://face.be/").host == "face.be"  # hex letters, still a name


def test_the_allow_list_takes_a_domain_and_its_subdomains_only() -> None:
    assert domain_allowed("docs.python.org", ["python.org"])
    assert domain_allowed("python.org", ["Python.org."])
    assert not domain_allowed("evilpython.org", ["python.org"])
    assert not domain_allowed("python.org.evil.com", ["python.org"])
    assert domain_allowed("xn--bcher-kva.example", ["bücher.example"])
    assert domain_allowed("anything.test", None)


def test_the_test_override_lets_exactly_one_loopback_port_through() -> None:
    exceptions = LoopbackExceptions.parse(["127.0.0.1:8123"])
    check_address(ipaddress.ip_address("127.0.0.1"), 8123, exceptions)
    for address, port in [("127.0.0.1", 8124), ("127.0.0.2", 8123), ("::1", 8123)]:
        with pytest.raises(Refused):
            check_address(ipaddress.ip_address(address), port, exceptions)
    for entry in ["10.0.0.1:80", "127.0.0.1", "localhost:80", "169.254.169.254:80"]:
        with pytest.raises(ValueError):
            LoopbackExceptions.parse([entry])


def test_the_hosts_own_addresses_are_refused_even_when_public() -> None:
    own = frozenset({ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2001:4860::1")})
    for address in own:
        with pytest.raises(Refused, match="is an address of this host"):
            check_address(address, 80, own=own)
    check_address(ipaddress.ip_address("93.184.215.15"), 80, own=own)  # a neighbour passes
