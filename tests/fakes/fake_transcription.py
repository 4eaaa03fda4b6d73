"""A fake OpenAI-compatible speech-to-text endpoint: ``POST /v1/audio/transcriptions``.

It cannot hear: it checks the request's shape as OpenAI's API takes it (multipart ``file``,
``model``, ``response_format``; the bearer key when one is set; audio that is a WAV or an Ogg
stream) and answers ``said`` for audio it accepts. Every request is kept in ``requests``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import serve_on_loopback


@dataclass
class FakeTranscription:
    said: str
    key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        self._runner, self.url = await serve_on_loopback(app)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        seen = {
            "authorization": request.headers.get("Authorization"),
            "content_type": request.content_type,
            "model": form.get("model"),
            "response_format": form.get("response_format"),
            "filename": getattr(upload, "filename", None),
            "file_type": getattr(upload, "content_type", None),
            "data": upload.file.read() if isinstance(upload, web.FileField) else None,
        }
        self.requests.append(seen)
        if self.key is not None and seen["authorization"] != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided")
        data = seen["data"]
        if not isinstance(data, bytes) or not seen["model"]:
            return _error(400, "file and model are required")
        if not (data.startswith(b"RIFF") or data.startswith(b"OggS")):
            return _error(400, "Invalid file format")
        return web.json_response({"text": f" {self.said} "})


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error"}}, status=status
    )
