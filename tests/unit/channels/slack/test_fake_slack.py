"""The fake Slack speaks the real protocols: slack_sdk's own clients drive it unmodified."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.fake_slack import FakeSlack
from tests.waiting import until


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(redeliver_after=0.5)
    await fake.start()
    yield fake
    await fake.close()


def web(slack: FakeSlack, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.url, retry_handlers=[])


class Listener:
    """A Socket Mode client that records envelopes and acknowledges them when told to."""

    def __init__(self, slack: FakeSlack, ack: bool = True) -> None:
        self.client = SocketModeClient(
            app_token=slack.app_token, web_client=web(slack), ping_interval=0.5
        )
        self.ack = ack
        self.requests: list[SocketModeRequest] = []
        self.raw: list[dict[str, Any]] = []
        self.client.socket_mode_request_listeners.append(self._on_request)  # type: ignore[arg-type]
        self.client.message_listeners.append(self._on_message)  # type: ignore[arg-type]

    async def _on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        self.requests.append(request)
        if self.ack:
            await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    async def _on_message(
        self, client: SocketModeClient, message: dict[str, Any], raw: str
    ) -> None:
        self.raw.append(message)

    def texts(self) -> list[str]:
        return [r.payload["event"].get("text", "") for r in self.requests]


async def test_web_api_answers_the_bot_token_and_refuses_a_wrong_one(slack: FakeSlack) -> None:
    auth = await web(slack).auth_test()
    assert auth["user_id"] == slack.bot_user_id and auth["bot_id"] == slack.bot_id
    with pytest.raises(SlackApiError) as refused:
        await web(slack, "xoxb-wrong").auth_test()
    assert refused.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as wrong_kind:
        await web(slack).apps_connections_open(app_token=slack.bot_token)
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"
    opened = await web(slack).apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith("ws://127.0.0.1:")


async def test_post_message_is_recorded_with_its_thread(slack: FakeSlack) -> None:
    client = web(slack)
    top = await client.chat_postMessage(channel="D0123ABCD", text="hello")
    reply = await client.chat_postMessage(channel="C0CHAN", text="in thread", thread_ts=top["ts"])
    assert reply["ts"] != top["ts"]
    assert slack.posted == [
        {"channel": "D0123ABCD", "text": "hello", "thread_ts": None, "ts": top["ts"]},
        {"channel": "C0CHAN", "text": "in thread", "thread_ts": top["ts"], "ts": reply["ts"]},
    ]


async def test_injected_429_and_5xx_reach_the_client(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", 429, retry_after=7)
    slack.fail_next("chat.postMessage", 503)
    slack.fail_next("chat.postMessage", 200, error="channel_not_found")
    client = web(slack)
    answers = []
    for _ in range(3):
        with pytest.raises(SlackApiError) as failed:
            await client.chat_postMessage(channel="D1", text="x")
        answers.append(failed.value.response)
    assert answers[0].status_code == 429 and answers[0].headers["Retry-After"] == "7"
    assert answers[1].status_code == 503
    assert answers[2]["error"] == "channel_not_found"
    await client.chat_postMessage(channel="D1", text="x")  # then it works
    assert slack.texts_to("D1") == ["x"]


async def test_reactions_are_added_and_removed(slack: FakeSlack) -> None:
    client = web(slack)
    await client.reactions_add(channel="D1", timestamp="1.000001", name="eyes")
    with pytest.raises(SlackApiError):
        await client.reactions_add(channel="D1", timestamp="1.000001", name="eyes")
    assert slack.reactions[("D1", "1.000001")] == {"eyes"}
    await client.reactions_remove(channel="D1", timestamp="1.000001", name="eyes")
    assert slack.reactions[("D1", "1.000001")] == set()


async def test_file_download_needs_the_bot_token(slack: FakeSlack) -> None:
    file = slack.add_file("notes.txt", b"file body")
    async with aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {slack.bot_token}"}
        async with http.get(file["url_private_download"], headers=bearer) as response:
            assert await response.read() == b"file body"
        async with http.get(file["url_private_download"], allow_redirects=False) as response:
            assert response.status == 302


async def test_socket_mode_says_hello_and_delivers_acknowledged_envelopes_once(
    slack: FakeSlack,
) -> None:
    listener = Listener(slack)
    await listener.client.connect()
    try:
        await until(lambda: any(m.get("type") == "hello" for m in listener.raw))
        ts = await slack.post_user_message("D0123ABCD", "hi", thread_ts="1.000001")
        await slack.wait_for(lambda: slack.acked(ts))
        # an acknowledged envelope stays done: the fake's redelivery sweep has run past the
        # moment it would have sent it again
        due = time.monotonic() + slack.redeliver_after
        await slack.wait_for(lambda: slack.swept_at > due)
    finally:
        await listener.client.close()
    assert len(slack.deliveries) == 1
    (request,) = listener.requests
    assert request.type == "events_api" and request.retry_attempt == 0
    event = request.payload["event"]
    assert request.payload["type"] == "event_callback" and request.payload["event_id"]
    assert (event["channel"], event["channel_type"], event["text"], event["ts"]) == (
        "D0123ABCD",
        "im",
        "hi",
        ts,
    )
    assert event["thread_ts"] == "1.000001"


async def test_unacknowledged_envelope_is_delivered_again_with_its_retry_attempt(
    slack: FakeSlack,
) -> None:
    listener = Listener(slack, ack=False)
    await listener.client.connect()
    try:
        ts = await slack.post_user_message("D1", "again")
        await until(lambda: len(listener.requests) >= 2)
        listener.ack = True
        await slack.wait_for(lambda: slack.acked(ts))
    finally:
        await listener.client.close()
    attempts = [(r.retry_attempt, r.retry_reason) for r in listener.requests]
    assert attempts[:2] == [(0, ""), (1, "timeout")]
    assert {r.envelope_id for r in listener.requests} == {listener.requests[0].envelope_id}


async def test_dropped_connection_is_reopened_and_unacknowledged_envelopes_redelivered(
    slack: FakeSlack,
) -> None:
    slack.redeliver_after = 60  # only the new connection can bring it back
    listener = Listener(slack, ack=False)
    await listener.client.connect()
    try:
        await slack.post_user_message("D1", "before the drop")
        await until(lambda: len(listener.requests) == 1)
        listener.ack = True
        await slack.drop()
        await slack.wait_for_connections(2)
        await until(lambda: len(listener.requests) == 2)
        await slack.send_disconnect()  # Slack's own "please reconnect"
        await slack.wait_for_connections(3)
        await slack.post_user_message("D1", "after")
        await until(lambda: len(listener.requests) == 3)
    finally:
        await listener.client.close()
    assert listener.texts() == ["before the drop", "before the drop", "after"]
    assert listener.requests[1].retry_attempt == 1


async def test_bot_posts_come_back_as_bot_message_events(slack: FakeSlack) -> None:
    listener = Listener(slack)
    await listener.client.connect()
    try:
        await web(slack).chat_postMessage(channel="D1", text="from the bot")
        await until(lambda: len(listener.requests) == 1)
        await slack.edit_message("D1", "1.000001", "edited")
        await until(lambda: len(listener.requests) == 2)
    finally:
        await listener.client.close()
    own, edit = (r.payload["event"] for r in listener.requests)
    assert own["bot_id"] == slack.bot_id and own["text"] == "from the bot"
    assert edit["subtype"] == "message_changed" and edit["message"]["text"] == "edited"
    assert json.dumps(edit)  # plain JSON all the way


async def test_chat_update_keeps_blocks_left_out_and_removes_them_when_emptied(
    slack: FakeSlack,
) -> None:
    client = web(slack)
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": "Allow"},
        "action_id": "ok-1",
        "value": "ok-1",
    }
    blocks = [{"type": "actions", "block_id": "b", "elements": [button]}]
    sent = await client.chat_postMessage(channel="D1", text="card", blocks=blocks)
    await client.chat_update(channel="D1", ts=sent["ts"], text="still a card")
    assert slack.message("D1", sent["ts"])["blocks"] == blocks  # as Slack documents
    await client.chat_update(channel="D1", ts=sent["ts"], text="decided", blocks=[])
    assert "blocks" not in slack.message("D1", sent["ts"])
    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="D1", ts="1.000009", text="x")
    assert missing.value.response["error"] == "message_not_found"


async def test_a_tap_arrives_as_an_interactive_envelope_and_is_never_redelivered(
    slack: FakeSlack,
) -> None:
    listener = Listener(slack, ack=False)
    button = {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "go"}
    sent = await web(slack).chat_postMessage(
        channel="D1", text="card", blocks=[{"type": "actions", "elements": [button]}]
    )
    await listener.client.connect()  # type: ignore[no-untyped-call]
    try:
        envelope = await slack.push_tap("D1", sent["ts"], "go", user="U0ALICE")
        await until(lambda: [r for r in listener.requests if r.type == "interactive"])
        with pytest.raises(AssertionError):
            await slack.push_tap("D1", sent["ts"], "no-such-button")
        swept = time.monotonic()
        await slack.wait_for(lambda: slack.swept_at > swept + slack.redeliver_after)
    finally:
        await listener.client.close()  # type: ignore[no-untyped-call]
    [request] = [r for r in listener.requests if r.type == "interactive"]
    assert request.envelope_id == envelope.envelope_id
    payload = request.payload
    assert (payload["type"], payload["user"]["id"]) == ("block_actions", "U0ALICE")
    assert payload["container"] == {
        "type": "message",
        "message_ts": sent["ts"],
        "channel_id": "D1",
        "is_ephemeral": False,
    }
    assert [(a["action_id"], a["type"]) for a in payload["actions"]] == [("go", "button")]


async def test_the_external_upload_needs_the_bytes_before_it_completes(slack: FakeSlack) -> None:
    client = web(slack)
    with pytest.raises(SlackApiError) as no_length:
        await client.files_getUploadURLExternal(filename="a.txt", length=0)
    assert no_length.value.response["error"] == "invalid_arguments"
    staged = await client.files_getUploadURLExternal(filename="a.txt", length=5)
    files = [{"id": staged["file_id"], "title": "a"}]
    with pytest.raises(SlackApiError) as early:
        await client.files_completeUploadExternal(files=files, channel_id="D1")
    assert early.value.response["error"] == "file_not_found"
    async with (  # signed: no token needed
        aiohttp.ClientSession() as http,
        http.post(staged["upload_url"], data=b"hello") as response,
    ):
        assert (response.status, await response.text()) == (200, "OK - 5")
    done = await client.files_completeUploadExternal(files=files, channel_id="D1")
    assert done["files"][0]["id"] == staged["file_id"]
    assert [(u["name"], u["data"], u["channel"]) for u in slack.uploads] == [
        ("a.txt", b"hello", "D1")
    ]
