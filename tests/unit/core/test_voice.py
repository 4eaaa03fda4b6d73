"""Voice notes: a WAV spoken by espeak-ng from a known sentence goes, before the task, through
an OpenAI-compatible transcription endpoint (a fake on loopback that checks the request's
shape); the transcript reaches the model as "[voice note, N s]: ...". With the endpoint down,
or none configured, the message is still answered, and the agent told where the audio is."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clawpen.app import Orchestrator
from clawpen.config import TranscriptionSettings, load_settings
from clawpen.core.voice import MAX_AUDIO_BYTES, Transcriber, audio_seconds
from clawpen.demo.model import FakeModel
from clawpen.models import Attachment
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.security.vault import open_vault
from tests.conftest import running
from tests.fakes import serve_on_loopback
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.fake_transcription import FakeTranscription

SENTENCE = "the quick brown fox jumps over the lazy dog"
KEY = "stt-key-0123456789"


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is missing: run bash scripts/ensure-espeak.sh"
    path = tmp_path_factory.mktemp("voice") / "note.wav"
    subprocess.run([espeak, "-w", str(path), SENTENCE], check=True, capture_output=True)
    return path.read_bytes()


@pytest.fixture
async def transcription() -> AsyncIterator[FakeTranscription]:
    fake = FakeTranscription(f"{SENTENCE.capitalize()}.", key=KEY)
    await fake.start()
    yield fake
    await fake.close()


async def ask_with_voice(
    factory: Callable[..., Orchestrator], tmp_path: Path, wav: bytes, **overrides: Any
) -> str:
    channel = MemoryChannel(name="cli")
    orchestrator = factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}, **overrides
    )
    async with running(orchestrator):
        voice = Attachment("voice.wav", "audio/wav", wav)
        await channel.push("assistant", "", platform_id="v1", attachments=(voice,))
        await channel.wait_sent(1)
    (tmp_path / "ws" / "assistant" / "inbox" / "v1-0-voice.wav").stat()  # the audio stays
    return channel.texts_to("assistant")[0]


async def test_a_voice_note_is_answered_as_if_typed_when_transcription_is_configured(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_model: FakeModel,
    tmp_path: Path,
    spoken: bytes,
    transcription: FakeTranscription,
) -> None:
    stt = {"base_url": f"{transcription.url}/v1", "api_key": KEY, "model": "whisper-1"}
    answer = await ask_with_voice(orchestrator_factory, tmp_path, spoken, transcription=stt)
    [request] = transcription.requests
    assert request["content_type"] == "multipart/form-data"
    assert (request["model"], request["response_format"]) == ("whisper-1", "json")
    assert (request["filename"], request["file_type"], request["data"]) == (
        "voice.wav",
        "audio/wav",
        spoken,
    )
    seconds = round(audio_seconds("audio/wav", spoken) or 0)
    line = f"[voice note, {seconds} s]: {SENTENCE.capitalize()}."
    assert line in str(fake_model.requests[-1]["messages"][-1])  # what the model read
    assert line in answer  # (the demo model echoes it)


async def test_with_the_transcription_server_down_the_note_is_still_answered(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path, spoken: bytes
) -> None:
    stt = {"base_url": "http://127.0.0.1:9/v1", "model": "whisper-1"}  # nothing listens
    answer = await ask_with_voice(orchestrator_factory, tmp_path, spoken, transcription=stt)
    assert "s, could not be transcribed; the audio is /workspace/inbox/v1-0-voice.wav]" in answer


async def test_without_transcription_the_agent_is_told_a_voice_note_arrived_and_where(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path, spoken: bytes
) -> None:
    answer = await ask_with_voice(orchestrator_factory, tmp_path, spoken)
    seconds = round(audio_seconds("audio/wav", spoken) or 0)
    assert seconds >= 2  # espeak-ng spoke the whole sentence
    note = (
        f"[voice note, {seconds} s, not transcribed; the audio is /workspace/inbox/v1-0-voice.wav]"
    )
    assert note in answer


def test_the_transcription_block_is_accepted_as_the_issue_writes_it(tmp_path: Path) -> None:
    (tmp_path / "clawpen.yaml").write_text(
        "data_dir: ./data\n"
        "model: {name: claude-test, api_key: literal-key}\n"
        "agents: [{id: assistant}]\n"
        "transcription:\n"
        "  base_url: http://127.0.0.1:9000/v1\n"
        "  api_key: secret:stt-key          # optional\n"
        "  model: whisper-1\n"
    )
    open_vault(tmp_path / "data", "file", env={}).set("stt-key", KEY)
    settings = load_settings(tmp_path / "clawpen.yaml", {})
    assert settings.transcription is not None
    assert settings.transcription.base_url == "http://127.0.0.1:9000/v1"
    assert (settings.transcription.api_key, settings.transcription.model) == (KEY, "whisper-1")
    assert KEY not in repr(settings)


def test_a_notes_length_is_read_from_its_header() -> None:
    opus_head = b"OpusHead\x01\x01" + struct.pack("<H", 312) + b"\x80\xbb\x00\x00\x00\x00\x00"
    first = b"OggS\x00\x02" + struct.pack("<q", 0) + b"\x00" * 14 + opus_head
    last = b"OggS\x00\x04" + struct.pack("<q", 48_000 * 12 + 312) + b"\x00" * 14
    assert audio_seconds("audio/ogg", first + b"..." + last) == 12.0
    assert audio_seconds("audio/ogg", b"OggS") is None
    assert audio_seconds("audio/mpeg", b"ID3...") is None


async def test_a_transcription_is_bounded_in_time_and_in_size(spoken: bytes) -> None:
    """A server that never answers costs the timeout, not the task; a note over the size
    limit is not sent at all."""
    heard: list[int] = []
    app = web.Application()
    released = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        heard.append(len(await request.read()))
        await released.wait()  # long after the transcriber gave up
        return web.json_response({"text": "too late"})

    app.router.add_post("/v1/audio/transcriptions", hang)
    runner, url = await serve_on_loopback(app)
    try:
        settings = TranscriptionSettings(base_url=f"{url}/v1")
        slow = Transcriber(settings, timeout=0.3)
        assert await slow.transcribe("n.wav", "audio/wav", spoken) is None
        assert len(heard) == 1 and heard[0] > len(spoken)  # asked once, the note in the form
        too_big = b"RIFF" + b"\x00" * MAX_AUDIO_BYTES
        assert await slow.transcribe("n.wav", "audio/wav", too_big) is None
        assert len(heard) == 1  # never sent
    finally:
        released.set()
        await runner.cleanup()
