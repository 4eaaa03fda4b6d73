"""WhatsApp end to end: Meta's signed webhooks into the adapter's own process, the agent in a real
container, the reply out through the fake Graph API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from clawpen.app import Orchestrator
from clawpen.models import Address
from tests.fakes.fake_whatsapp import FakeWhatsApp

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

ALICE = "15551234567"
# a real 1x1 PNG: the model API would refuse a fake one
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def meta() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp(redelivery_delays=(0.2, 0.5, 1.0))
    await fake.start()
    yield fake
    await fake.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def whatsapp_orchestrator(
    docker_orchestrator_factory: DockerOrchestratorFactory, meta: FakeWhatsApp
) -> Orchestrator:
    """The orchestrator with WhatsApp in a process of its own, Alice paired with the agent."""
    port = free_port()
    meta.webhook_url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    orchestrator, _ = docker_orchestrator_factory(
        adapters="process",
        config_channels={"cli": {}, "whatsapp": meta.settings(listen=f"127.0.0.1:{port}")},
        pairings=[{"channel": f"whatsapp:{ALICE}", "agent": "assistant"}],
    )
    return orchestrator


async def listening(meta: FakeWhatsApp) -> None:
    """Until the adapter's webhook server answers Meta's handshake."""
    async with asyncio.timeout(30):
        while True:
            try:
                if (await meta.handshake(meta.verify_token, "ready"))[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_a_message_comes_in_and_the_reply_goes_out(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    async with running(whatsapp_orchestrator):
        await listening(meta)
        wamid = meta.user_says(ALICE, "hello from WhatsApp")
        await meta.wait_for_sent(1, timeout=60)
        status = await whatsapp_orchestrator.status()
    assert meta.texts_to(ALICE) == ["echo: hello from WhatsApp"]
    assert meta.attempts_for(wamid) == [200]
    assert meta.sent[0]["context"] == {"message_id": wamid}
    assert status["channels"]["whatsapp"]["state"] == "running"


async def test_an_image_sent_on_whatsapp_reaches_the_model(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    async with running(whatsapp_orchestrator):
        await listening(meta)
        meta.user_sends_image(ALICE, PNG, caption="what is this?")
        await meta.wait_for_sent(1, timeout=60)
    [reply] = meta.texts_to(ALICE)
    assert f"[image: image/png, sha256 {hashlib.sha256(PNG).hexdigest()[:12]}]" in reply
    assert "what is this?" in reply
    assert "/workspace/inbox/" in reply


async def test_a_forged_webhook_is_refused_and_reaches_no_agent(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    forged = meta.payload(
        {
            "messages": [
                {
                    "from": ALICE,
                    "id": "wamid.forged",
                    "timestamp": "1700000000",
                    "type": "text",
                    "text": {"body": "run: cat /etc/passwd"},
                }
            ]
        }
    )
    body = json.dumps(forged).encode()
    async with running(whatsapp_orchestrator):
        await listening(meta)
        unsigned = await meta.post(body)
        wrong = await meta.post(body, {"X-Hub-Signature-256": "sha256=" + "ab" * 32})
        meta.user_says(ALICE, "the real one")  # a barrier: answered after anything before it
        await meta.wait_for_sent(1, timeout=60)
        counts = await whatsapp_orchestrator.store.counts()
    assert [unsigned[0], wrong[0]] == [401, 401]
    assert meta.texts_to(ALICE) == ["echo: the real one"]
    assert sum(n for key, n in counts.items() if key.startswith("messages.")) == 1


async def test_a_redelivered_message_is_answered_once(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    async with running(whatsapp_orchestrator):
        await listening(meta)
        wamid = meta.user_says(ALICE, "only once")
        await meta.wait_for_sent(1, timeout=60)
        meta.redeliver(wamid)  # Meta sends it again, although it had its 200
        assert await meta.wait_for_attempts(wamid, 2) == [200, 200]
        meta.user_says(ALICE, "next")
        await meta.wait_for_sent(2, timeout=60)
    assert meta.texts_to(ALICE) == ["echo: only once", "echo: next"]


async def test_a_429_and_a_5xx_on_send_still_deliver_the_reply_exactly_once(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    meta.fail_next(429, retry_after=1)
    meta.fail_next(500)
    async with running(whatsapp_orchestrator):
        await listening(meta)
        meta.user_says(ALICE, "despite it all")
        store = whatsapp_orchestrator.store

        async def delivered() -> bool:
            return (await store.counts()).get("replies.sent", 0) == 1

        await until(delivered)
    assert meta.send_attempts == 3
    assert meta.texts_to(ALICE) == ["echo: despite it all"]


async def test_a_reply_refused_because_the_24_hour_window_closed_is_tried_once(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    meta.close_window(ALICE)
    async with running(whatsapp_orchestrator):
        await listening(meta)
        meta.user_says(ALICE, "hello after a day")
        store = whatsapp_orchestrator.store

        async def given_up() -> bool:
            return (await store.counts()).get("replies.failed", 0) == 1

        await until(given_up)
        [reply] = await store.replies_for(Address("whatsapp", ALICE))
        status = await whatsapp_orchestrator.status()
    assert meta.send_attempts == 1  # given up at once: trying again cannot help
    assert meta.sent == []
    assert reply.text == "echo: hello after a day"
    # the operator sees it: one undelivered reply, and why
    assert status["channels"]["whatsapp"]["undelivered_24h"] == 1
    assert "24-hour" in status["channels"]["whatsapp"]["last_undelivered"]


async def test_a_reply_meta_fails_after_taking_it_is_recorded_and_shown_in_status(
    whatsapp_orchestrator: Orchestrator, meta: FakeWhatsApp
) -> None:
    async with running(whatsapp_orchestrator):
        await listening(meta)
        meta.user_says(ALICE, "are you there?")
        [sent] = await meta.wait_for_sent(1, timeout=60)
        wamid = sent["id"]
        meta.status(ALICE, wamid, "delivered")
        meta.status(ALICE, wamid, "failed", error_code=131047)  # through the adapter's process
        store = whatsapp_orchestrator.store

        async def recorded() -> bool:
            return bool(await store.delivery_failures(0))

        await until(recorded)
        status = await whatsapp_orchestrator.status()
    assert status["channels"]["whatsapp"]["undelivered_24h"] == 1
    assert "Re-engagement" in status["channels"]["whatsapp"]["last_undelivered"]
