"""Running things: the orchestrator (``clawpen run``), a conversation with one of its agents
(``clawpen chat``), and the offline demo model (``clawpen demo-model``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer

from ..config import data_dir_of, load_settings
from ..errors import ClawpenError
from ..obs import logging as clawpen_logging
from ..obs.logfile import RotatingFile, log_path
from . import chatui
from .client import call
from .common import DEFAULT_CONFIG, ConfigOption, first_agent, guard
from .init import make_data_dir

if TYPE_CHECKING:
    from ..config import Settings


def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run the orchestrator in the foreground (JSON logs on stdout)."""
    # Imported here: the orchestrator brings aiohttp, Docker and every channel with it.
    from ..app import Orchestrator, run_until_signal

    clawpen_logging.configure("info")  # reading secret: references is logged
    settings = guard(lambda: load_settings(config))
    clawpen_logging.configure(settings.log_level, file=guard(lambda: _log_file(settings)))
    orchestrator = guard(lambda: Orchestrator.open(settings))
    guard(lambda: run_until_signal(orchestrator))


def _log_file(settings: Settings) -> RotatingFile:
    try:
        make_data_dir(settings.data_dir)
        return RotatingFile(
            log_path(settings.data_dir), settings.log_max_mb * 2**20, settings.log_backups
        )
    except OSError as exc:
        raise ClawpenError(
            f"cannot write the log under {settings.data_dir} ({exc.strerror})",
            "make data_dir writable by this user",
        ) from None


def chat(
    message: Annotated[
        str | None, typer.Argument(help="Send one message and print the reply.")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent id.")] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Continue this named conversation.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Chat with an agent through the running orchestrator: each run is a conversation of its
    own (name one with --session to come back to it)."""
    agent_id = agent or guard(lambda: first_agent(config))
    conversation = session or uuid.uuid4().hex[:12]

    def ask(text: str) -> str:
        body = {"agent": agent_id, "text": text, "session": conversation}
        return str(call(config, "POST", "/v1/chat", body)["reply"])

    def more() -> str:
        body = {"agent": agent_id, "session": conversation}
        return str(call(config, "POST", "/v1/chat/more", body)["reply"])

    if session is not None:  # what came for this conversation while no one was reading it
        where = f"agent={quote(agent_id, safe='')}&session={quote(session, safe='')}"
        for reply in call(config, "GET", f"/v1/chat/unread?{where}")["replies"]:
            print(f"{agent_id}> {chatui.shown(str(reply))}", flush=True)
    if message is not None:
        print(chatui.shown(ask(message)))
        return
    call(config, "GET", "/v1/status")  # no orchestrator: say so before typing
    print(
        f"chatting with {agent_id} (Ctrl-C stops an answer; Ctrl-C at the prompt or Ctrl-D leaves)",
        file=sys.stderr,
    )
    if sys.stdin.isatty() and sys.stdout.isatty():
        history = guard(lambda: data_dir_of(config)) / "chat_history"
        chatui.interactive(agent_id, ask, history if history.parent.is_dir() else None, more)
    else:
        chatui.piped(agent_id, ask, more)  # piped input gets clean output


def demo_model(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    api_key: Annotated[str | None, typer.Option(help="Key to require.")] = None,
) -> None:
    """Serve the offline fake model (echo, and `run: CMD` for the shell tool) for trying clawpen
    without an Anthropic key."""
    from ..demo.model import serve_forever  # imported here: it brings aiohttp's server

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(port, api_key))
