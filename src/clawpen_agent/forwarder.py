"""The loopback forwarder: ``127.0.0.1:3128`` inside the container -> the egress socket.

The container has no network, only loopback; tools (pip, git, urllib, curl) speak to an HTTP
proxy named by ``HTTPS_PROXY``. This relays each of their connections, byte for byte, to the
orchestrator's proxy on ``/run/clawpen/egress.sock``, which decides what may pass. Nothing is
decided here: whatever runs in the container could reach that socket directly anyway.
Started by the agent at boot when ``CLAWPEN_EGRESS`` is set; standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from .protocol import EGRESS_PORT, EGRESS_SOCKET_NAME, SOCKET_DIR

EGRESS_SOCKET = f"{SOCKET_DIR}/{EGRESS_SOCKET_NAME}"


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def start(
    socket_path: str = EGRESS_SOCKET, host: str = "127.0.0.1", port: int = EGRESS_PORT
) -> socket.socket:
    """Listen on ``host:port`` and relay every connection in threads of its own; returns the
    listening socket (closing it stops the forwarder)."""
    listener = socket.create_server((host, port), backlog=64)

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=_relay, args=(client, socket_path), daemon=True).start()

    threading.Thread(target=accept, name="egress-forwarder", daemon=True).start()
    return listener
