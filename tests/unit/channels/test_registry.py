"""Every installed platform's addresses are checked by one rule: its own pattern."""

from __future__ import annotations

import pytest

from clawpen.channels.registry import address_problem, plugins, read_chat
from clawpen.models import Address


def test_the_platforms_and_the_cli_are_installed() -> None:
    assert {"cli", "telegram", "slack", "discord"} <= set(plugins())


@pytest.mark.parametrize(
    "address",
    [
        "telegram:123456789",
        "telegram:-1001234567890",
        "slack:D0123ABCD",
        "slack:C0TEAM42",
        "slack:G0PRIVATE",
        "discord:123456789012345678",
    ],
)
def test_real_addresses_can_be_paired(address: str) -> None:
    assert read_chat(address) == Address.parse(address)
    assert address_problem(Address.parse(address)) is None


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("slack:d0123abcd", "is not a slack chat id (for example slack:D0123ABCD)"),
        ("slack:U0USER", "is not a slack chat id"),
        ("discord:general", "is not a discord chat id (for example discord:123456789012345678)"),
        ("discord:12", "is not a discord chat id"),
        ("fax:42", "'fax' is not a chat platform"),
        ("slack", "is not a chat address"),
    ],
)
def test_wrong_addresses_say_what_one_looks_like(address: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        read_chat(address)
    assert problem in str(refused.value)


def test_a_platform_must_be_configured_to_be_paired() -> None:
    assert address_problem(Address("slack", "D0123ABCD"), configured={"cli", "telegram"}) == (
        "channel 'slack' is not configured; add it under channels:"
    )


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("telegram:123", Address("telegram", "123")),
        (" email:alice@example.com ", Address("email", "alice@example.com")),
        (
            "matrix:!room:example.org",
            Address("matrix", "!room:example.org"),
        ),  # the rest is the chat
    ],
)
def test_a_chat_written_as_text_is_read_in_one_place(written: str, read: Address) -> None:
    assert Address.parse(written) == read
    assert Address.parse(read.chat_address) == read  # and written back the same way


@pytest.mark.parametrize("written", ["telegram", "telegram:", ":123", ""])
def test_text_that_is_not_a_chat_is_refused_with_its_form(written: str) -> None:
    with pytest.raises(ValueError, match="PLATFORM:CHAT_ID"):
        Address.parse(written)
