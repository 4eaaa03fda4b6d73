"""HTTP over the agent's Unix socket, with the standard library only.

The Anthropic SDK costs ~0.9 s and ~74 MB per container to import; this costs ~0.05 s and
~20 MB, and every agent pays it. The wire format is still Anthropic's Messages API.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class HTTPError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body[:500].decode(errors='replace')}")


class SocketClient:
    """One keep-alive connection to the orchestrator; reconnects once if it was dropped."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        all_headers = {"content-type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            conn = self._conn or UnixHTTPConnection(self.path, self.timeout)
            self._conn = conn
            try:
                conn.request(method, url, body=body, headers=all_headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post_json(
        self, url: str, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        status, body = self.request("POST", url, json.dumps(payload).encode(), headers)
        if status >= 400:
            raise HTTPError(status, body)
        return json.loads(body) if body else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
