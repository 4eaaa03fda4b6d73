"""Voice notes: transcribed on the host, before the task, so the agent reads what was said.

Through an OpenAI-compatible ``POST {base_url}/audio/transcriptions`` (multipart: ``file``,
``model``, ``response_format=json``; a self-hosted whisper server or a provider), bounded in
size (``MAX_AUDIO_BYTES``, the providers' limit) and in time (``TIMEOUT``). Its failure costs
only the transcript: the note still reaches the agent, which is told it could not be
transcribed and where the audio is. ``audio_seconds`` reads a note's length from its own
header (WAV, Ogg Opus/Vorbis) when it can, never by decoding it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import wave
from dataclasses import dataclass

import aiohttp

from ..config import TranscriptionSettings
from ..models import TaskFile
from ..obs.logging import get_logger
from .text import clean_text

MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's own limit for one file
TIMEOUT = 60.0  # seconds for one transcription, connect to last byte
MAX_TRANSCRIPT = 20_000  # characters kept of one transcript


@dataclass(frozen=True)
class VoiceNote:
    """What the host learned of one audio file: its length, and its words when transcribed.
    ``transcribed`` False with ``text`` None: transcription is off; True with None: it failed."""

    seconds: float | None
    text: str | None = None
    transcribed: bool = False


def is_voice(file: TaskFile) -> bool:
    return file.media_type.startswith("audio/")


def audio_seconds(media_type: str, data: bytes) -> float | None:
    """The note's length from its header: a WAV's frames over its rate, an Ogg stream's last
    granule position over its rate (Opus: 48 kHz, less the pre-skip). None when unknowable."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            with wave.open(io.BytesIO(data)) as audio:
                return float(audio.getnframes() / audio.getframerate())
        except (wave.Error, EOFError, ZeroDivisionError):
            return None
    if data[:4] == b"OggS":
        return _ogg_seconds(data)
    return None


def _ogg_seconds(data: bytes) -> float | None:
    last = data.rfind(b"OggS")
    if last < 0 or len(data) < last + 14:
        return None
    (granule,) = struct.unpack_from("<q", data, last + 6)
    opus = data.find(b"OpusHead")
    if opus >= 0 and len(data) >= opus + 12:
        (pre_skip,) = struct.unpack_from("<H", data, opus + 10)
        return max(0.0, (granule - pre_skip) / 48_000) if granule >= 0 else None
    vorbis = data.find(b"\x01vorbis")
    if vorbis >= 0 and len(data) >= vorbis + 16:
        (rate,) = struct.unpack_from("<I", data, vorbis + 12)
        return granule / rate if rate and granule >= 0 else None
    return None


def voice_line(note: VoiceNote, path: str) -> str:
    """How a voice note joins the user's turn: ``[voice note, 12 s]: what was said``."""
    length = "" if note.seconds is None else f", {max(1, round(note.seconds))} s"
    if note.text is not None:
        return f"[voice note{length}]: {note.text}"
    why = "could not be transcribed" if note.transcribed else "not transcribed"
    return f"[voice note{length}, {why}; the audio is {path}]"


class Transcriber:
    """Speech to text through the configured endpoint; ``None`` from ``transcribe`` is a
    failure, logged, never raised."""

    def __init__(self, settings: TranscriptionSettings, timeout: float = TIMEOUT) -> None:
        self.url = f"{settings.base_url}/audio/transcriptions"
        self.model = settings.model
        self.api_key = settings.api_key
        self.timeout = timeout
        self.log = get_logger()

    async def transcribe(self, name: str, media_type: str, data: bytes) -> str | None:
        if len(data) > MAX_AUDIO_BYTES:
            self.log.warning("transcription_skipped", size=len(data), limit=MAX_AUDIO_BYTES)
            return None
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type=media_type)
        form.add_field("model", self.model)
        form.add_field("response_format", "json")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with (
                asyncio.timeout(self.timeout),
                aiohttp.ClientSession() as session,
                session.post(self.url, data=form, headers=headers) as response,
            ):
                if response.status != 200:
                    body = (await response.content.read(300)).decode(errors="replace")
                    raise ValueError(f"HTTP {response.status}: {body}")
                answer = await response.json(content_type=None)
            text = answer.get("text") if isinstance(answer, dict) else None
            if not isinstance(text, str):
                raise ValueError("the answer has no text")
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as exc:
            error = "timed out" if isinstance(exc, TimeoutError) else str(exc)[:300]
            self.log.warning("transcription_failed", error=error, size=len(data))
            return None
        self.log.info("voice_transcribed", size=len(data), chars=len(text))
        return clean_text(text).strip()[:MAX_TRANSCRIPT]

    async def notes(self, files: list[TaskFile]) -> list[VoiceNote | None]:
        """One entry per file: None for a file that is no voice note; all at once."""

        async def one(file: TaskFile) -> VoiceNote | None:
            if not is_voice(file):
                return None
            seconds = audio_seconds(file.media_type, file.data)
            text = await self.transcribe(file.name, file.media_type, file.data)
            return VoiceNote(seconds, text, transcribed=True)

        return list(await asyncio.gather(*(one(file) for file in files)))


def untranscribed(files: list[TaskFile]) -> list[VoiceNote | None]:
    """The notes when transcription is off: their lengths only."""
    return [
        VoiceNote(audio_seconds(file.media_type, file.data)) if is_voice(file) else None
        for file in files
    ]
