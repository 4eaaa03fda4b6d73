"""A voice note end to end: sent on Telegram (python-telegram-bot's adapter in its own
process, the fake Bot API), transcribed on the host through the fake OpenAI-compatible
endpoint, answered by an agent in a real container, which also finds the audio in its inbox."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clawpen.demo.model import FakeModel
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.fake_transcription import FakeTranscription

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

SENTENCE = "Please water the plants at six."


@pytest.fixture
async def transcription() -> AsyncIterator[FakeTranscription]:
    fake = FakeTranscription(SENTENCE, key="stt-secret-42")
    await fake.start()
    yield fake
    await fake.close()


def speak(path: Path) -> bytes:
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is missing: run bash scripts/ensure-espeak.sh"
    subprocess.run([espeak, "-w", str(path), SENTENCE], check=True, capture_output=True)
    return path.read_bytes()


async def test_a_voice_note_on_telegram_is_answered_as_if_typed(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    transcription: FakeTranscription,
    tmp_path: Path,
) -> None:
    wav = speak(tmp_path / "note.wav")
    stt = {"base_url": f"{transcription.url}/v1", "api_key": "stt-secret-42", "model": "whisper-1"}
    orchestrator, _ = docker_orchestrator_factory(
        fake_telegram, adapters="process", transcription=stt
    )
    async with running(orchestrator):
        await fake_telegram.push_document(1001, "note.wav", "audio/wav", wav)
        await fake_telegram.wait_for_sent(1, timeout=90)
        await fake_telegram.push_text(1001, "run: ls -l inbox")
        await fake_telegram.wait_for_sent(2, timeout=90)
    [request] = transcription.requests
    assert request["data"] == wav and request["model"] == "whisper-1"
    answer, listing = fake_telegram.texts_to(1001)
    assert f"]: {SENTENCE}" in answer and "[voice note, " in answer
    assert f"]: {SENTENCE}" in str(fake_model.requests[1]["messages"])
    assert "note.wav" in listing and str(len(wav)) in listing  # the audio stays in the inbox
