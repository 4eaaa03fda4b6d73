"""Routing decides which agent may see a message: a table over (message, pairings, agents)."""

from __future__ import annotations

import pytest

from clawpen.core.router import MAX_TEXT, route
from clawpen.models import Address, Attachment, InboundMessage, Rejection, Route

PAIRINGS = {Address("telegram", "1001"): "assistant", Address("telegram", "2002"): "ghost"}
AGENTS = frozenset({"assistant", "coder"})


def message(channel: str, chat_id: str, text: str = "hello") -> InboundMessage:
    return InboundMessage(
        address=Address(channel, chat_id),
        sender_id="u1",
        text=text,
        platform_id="1",
        received_at=0.0,
    )


@pytest.mark.parametrize(
    ("channel", "chat_id", "text", "expected"),
    [
        pytest.param("telegram", "1001", "hello", "assistant", id="paired_chat_routes"),
        pytest.param("cli", "assistant", "hello", "assistant", id="cli_chat_id_names_agent"),
        pytest.param("cli", "coder", "hello", "coder", id="cli_reaches_any_known_agent"),
        pytest.param("telegram", "1001", "x" * MAX_TEXT, "assistant", id="text_at_max_routes"),
        pytest.param("telegram", "1001", "  padded  ", "assistant", id="padded_text_routes"),
    ],
)
def test_message_is_routed_to_agent(channel: str, chat_id: str, text: str, expected: str) -> None:
    assert route(message(channel, chat_id, text), PAIRINGS, AGENTS) == Route(expected)


@pytest.mark.parametrize(
    ("channel", "chat_id", "text", "reason_contains"),
    [
        pytest.param(
            "telegram", "666", "hello", "telegram:666 is not paired", id="unpaired_chat_is_rejected"
        ),
        pytest.param(
            "telegram",
            "1001x",
            "hello",
            "telegram:1001x",
            id="similar_chat_id_is_not_paired",
        ),
        pytest.param("slack", "1001", "hello", "slack:1001", id="pairing_is_per_channel"),
        pytest.param("cli", "nobody", "hello", "'nobody'", id="unknown_cli_agent_is_rejected"),
        pytest.param("telegram", "1001", "", "no text", id="empty_message_is_rejected"),
        pytest.param("telegram", "1001", " \n\t ", "no text", id="whitespace_message_is_rejected"),
        pytest.param("cli", "assistant", "   ", "no text", id="whitespace_cli_message_is_rejected"),
        pytest.param(
            "telegram",
            "1001",
            "x" * (MAX_TEXT + 1),
            str(MAX_TEXT),
            id="oversized_message_is_rejected",
        ),
        pytest.param(
            "telegram",
            "2002",
            "hello",
            "no agent 'ghost'",
            id="pairing_to_unknown_agent_is_rejected",
        ),
    ],
)
def test_message_is_rejected_with_reason(
    channel: str, chat_id: str, text: str, reason_contains: str
) -> None:
    decision = route(message(channel, chat_id, text), PAIRINGS, AGENTS)
    assert isinstance(decision, Rejection)
    assert reason_contains in decision.reason


def test_unpaired_rejection_names_the_address() -> None:
    decision = route(message("telegram", "31337"), PAIRINGS, AGENTS)
    assert decision == Rejection("telegram:31337 is not paired with an agent")


def test_cli_chat_id_is_not_looked_up_in_pairings() -> None:
    """A pairing named like a CLI address does not let the CLI reach an unnamed agent."""
    decision = route(
        message("cli", "assistant2"), {Address("cli", "assistant2"): "assistant"}, AGENTS
    )
    assert isinstance(decision, Rejection)


def group_message(addressed: bool, text: str = "hi all", files: int = 0) -> InboundMessage:
    return InboundMessage(
        address=Address("telegram", "1001"),
        sender_id="u1",
        text=text,
        platform_id="1",
        received_at=0.0,
        attachments=tuple(Attachment(f"f{i}.png", "image/png", b"x") for i in range(files)),
        addressed=addressed,
    )


def test_group_chatter_that_does_not_mention_the_bot_is_ignored_not_refused() -> None:
    decision = route(group_message(addressed=False), PAIRINGS, AGENTS)
    assert isinstance(decision, Rejection)
    assert decision.ignored and decision.answer is None


def test_a_mention_in_a_group_reaches_the_agent() -> None:
    assert route(group_message(addressed=True), PAIRINGS, AGENTS) == Route("assistant")


def test_a_pairing_that_hears_every_message_routes_group_chatter() -> None:
    decision = route(
        group_message(addressed=False), PAIRINGS, AGENTS, {Address("telegram", "1001")}
    )
    assert decision == Route("assistant")


def test_a_file_without_a_caption_is_routed() -> None:
    assert route(group_message(True, text="", files=1), PAIRINGS, AGENTS) == Route("assistant")


def test_a_message_in_a_thread_is_routed_by_its_chat() -> None:
    threaded = InboundMessage(Address("telegram", "1001", "topic-7"), "u1", "hello", "1", 0.0)
    assert route(threaded, PAIRINGS, AGENTS) == Route("assistant")
