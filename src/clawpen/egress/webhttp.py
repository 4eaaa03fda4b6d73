"""One HTTP/1.1 GET over asyncio streams, for ``webfetch.py``.

It runs on the event loop, so the caller's deadline (``asyncio.timeout``) holds for the whole
exchange: connect, TLS handshake, status line, headers and body; when it expires the
connection is dropped at once. A blocking read in a worker thread cannot be cut short that
way: a server that sent its status line one byte every 5 s kept such a thread busy for days,
and six of them filled the shared thread pool every Docker call waited on (issue 23).

Errors are ``http.client``'s (``HTTPException``), ``OSError`` and ``ssl.SSLError``, as before.
"""

from __future__ import annotations

import asyncio
import http.client
import io
from dataclasses import dataclass
from email.message import Message

MAX_LINE = 8 * 1024  # one status or header line
MAX_HEADERS = 100
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes  # at most max_bytes, de-chunked
    truncated: bool  # the body was longer than max_bytes


async def get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    path: str,
    headers: dict[str, str],
    max_bytes: int,
) -> Response:
    """Send ``GET path`` with ``headers`` and read the answer, its body up to ``max_bytes``."""
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write((head + "\r\n").encode("latin-1"))
    await writer.drain()
    try:
        while True:
            status = await _status(reader)
            message = await _headers(reader)
            if not 100 <= status < 200:  # interim answers (100 Continue) come before the real one
                break
        body, truncated = await _body(reader, status, message, max_bytes)
    except asyncio.IncompleteReadError as exc:
        raise http.client.IncompleteRead(exc.partial) from None
    except asyncio.LimitOverrunError:
        raise http.client.LineTooLong("status or header line") from None
    return Response(status, message, body, truncated)


async def _line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\n")
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("status or header line")
    return line


async def _status(reader: asyncio.StreamReader) -> int:
    line = await _line(reader)
    version, _, rest = line.decode("latin-1").strip().partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise http.client.BadStatusLine(line.decode("latin-1")[:100])
    return int(code)


async def _headers(reader: asyncio.StreamReader) -> Message:
    lines = []
    while (line := await _line(reader)) not in (b"\r\n", b"\n"):
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")
    return http.client.parse_headers(io.BytesIO(b"".join(lines) + b"\r\n"))


async def _body(
    reader: asyncio.StreamReader, status: int, headers: Message, max_bytes: int
) -> tuple[bytes, bool]:
    if status in (204, 304):
        return b"", False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(reader, max_bytes)
    length = headers.get("content-length")
    want = max_bytes + 1
    if length is not None:
        if not length.strip().isdigit():
            raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
        want = min(want, int(length))
    body = bytearray()
    while len(body) < want and (chunk := await reader.read(min(CHUNK, want - len(body)))):
        body += chunk
    return bytes(body[:max_bytes]), len(body) > max_bytes


async def _chunked(reader: asyncio.StreamReader, max_bytes: int) -> tuple[bytes, bool]:
    """De-chunk up to ``max_bytes`` (+1 to know it was longer): a chunk's announced size is
    never buffered whole, so a huge one costs no memory."""
    body = bytearray()
    while len(body) <= max_bytes:
        size_line = (await _line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            break
        take = min(size, max_bytes + 1 - len(body))
        body += await reader.readexactly(take)
        if take < size:
            break
        await _line(reader)  # the CRLF after the chunk
    return bytes(body[:max_bytes]), len(body) > max_bytes
