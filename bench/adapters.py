"""1. What platforms cost: the orchestrator's processes with six platforms configured and 50
idle agents, each process's PSS, and what an adapter costs beyond the first."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import secrets
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from tests.fakes.fake_whatsapp import FakeWhatsApp

from .children import orchestrator_process
from .fakes import BenchDiscord, BenchSlack, chat_id, config, fake_model, fake_telegram
from .harness import BenchContext, Row, at_most, benchmark
from .memory import IDLE
from .procs import proc_status, process_tree, pss_kb
from .trees import REPO_ROOT

AGENTS = 50  # the goal's; --quick: 10
MAIL_DIR = Path("/var/lib/clawpen-mail")
MAIL_USER, MAIL_PASSWORD = "agent@clawpen.test", "agent-secret"
KB = 1024


@benchmark(
    "adapters",
    "Memory: the orchestrator's processes with six platforms and 50 idle agents (PSS)",
    """`clawpen run` as its own process with 50 agents (`warm: true`; 10 with `--quick`) paired
    with Telegram chats and six platforms configured: the CLI (in the orchestrator), Telegram,
    Slack (Socket Mode), Discord (gateway) and WhatsApp (Cloud API webhook) against the bench's
    fakes, and e-mail against the local dovecot/postfix (`scripts/ensure-mail.sh`; the adapter
    watches a folder of its own, so that it never touches the tests' mail). Each platform's
    adapter runs in a process of its own, as in production. One message to each agent's chat,
    all replies received, every adapter connected, then 3 s idle: PSS (`/proc/PID/smaps_rollup`:
    shared pages split between the processes that share them) of every process of the
    orchestrator's tree. Beyond the first adapter: the adapters' PSS less the largest one's, per
    further adapter (what a platform more costs).""",
)
async def adapters(ctx: BenchContext) -> list[Row]:
    agents = ctx.size(AGENTS, 10)
    async with (
        platforms() as (blocks, connected),
        fake_model(ctx) as model,
        fake_telegram() as telegram,
    ):
        raw = config(
            ctx.data_dir("adapters"),
            model.url,
            ctx.api_key,
            telegram,
            agents,
            warm=True,
            max_containers=agents + 10,
        )
        raw["channels"].update(blocks)
        async with orchestrator_process(ctx, ctx.current, raw) as process:
            replies = [telegram.expect(f"echo: hello-{i}") for i in range(agents)]
            for i in range(agents):
                await telegram.push_text(chat_id(i), f"hello-{i}")
            async with asyncio.timeout(300):
                await asyncio.gather(*replies)
                await connected()
            await asyncio.sleep(IDLE)
            channel_of = {e["pid"]: e["channel"] for e in process.events("channel_started")}
            pss = {pid: pss_kb(pid) / KB for pid in process_tree(process.pid)}
            rss = sum(proc_status(pid).get("VmRSS", 0) for pid in pss) / KB
            started = set(channel_of.values())
    adapters_pss = {channel_of[pid]: mb for pid, mb in pss.items() if pid in channel_of}
    missing = sorted(set(blocks) - started - {"cli"})
    if missing:
        raise RuntimeError(f"no adapter process started for {', '.join(missing)}")
    beyond = (sum(adapters_pss.values()) - max(adapters_pss.values())) / (len(adapters_pss) - 1)
    orchestrator = pss[process.pid]
    others = sum(pss.values()) - orchestrator - sum(adapters_pss.values())
    platforms_count = len(adapters_pss) + 1  # and the CLI, in the orchestrator
    rows = [
        Row(
            f"all orchestrator processes, PSS summed ({len(pss)} processes,"
            f" {platforms_count} platforms, {agents} agents)",
            "MB",
            [sum(pss.values())],
            at_most(200),
            digits=1,
        ),
        Row(
            "  the same, RSS summed (shared pages counted in every process)", "MB", [rss], digits=1
        ),
        Row("  of which the orchestrator (the CLI channel in it)", "MB", [orchestrator], digits=1),
        *(
            Row(f"  of which the {name} adapter", "MB", [mb], digits=1)
            for name, mb in sorted(adapters_pss.items())
        ),
        Row(
            f"per adapter beyond the first (adapters' PSS less the largest,"
            f" / {len(adapters_pss) - 1})",
            "MB",
            [beyond],
            at_most(30),
            digits=1,
        ),
    ]
    if others > 0.05:
        rows.insert(
            3 + len(adapters_pss),
            Row("  of which the adapters' zygote (and any other)", "MB", [others], digits=1),
        )
    ctx.note(
        "Every adapter is forked by the adapters' zygote (`channels/zygote.py`): one process"
        " exec'd fresh (never a fork of the orchestrator), with none of its environment and no"
        " credential, that imported the libraries every adapter uses once; each adapter then"
        " imports its own platform's, drops to its own uid (the orchestrator runs as root"
        " here) and receives its own credential. The pages they share (the interpreter, the"
        " common libraries' code and objects, copy-on-write) are split between them in PSS."
    )
    return rows


@contextlib.asynccontextmanager
async def platforms() -> AsyncIterator[tuple[dict[str, Any], Any]]:
    """The config blocks of CLI, Slack, Discord, WhatsApp and e-mail (Telegram is the
    agents' own), their fakes running, and a coroutine function that returns once every
    adapter is connected."""
    slack, discord, whatsapp = BenchSlack(), BenchDiscord(), FakeWhatsApp()
    await slack.start()
    await discord.start()
    await whatsapp.start()
    try:
        with mail_folder() as folder:
            blocks: dict[str, Any] = {
                "cli": {},
                "slack": {
                    "bot_token": slack.bot_token,
                    "app_token": slack.app_token,
                    "api_base_url": slack.url,
                },
                "discord": {"token": discord.token, "api_base_url": discord.api_base_url},
                "whatsapp": whatsapp.settings(listen=f"127.0.0.1:{free_port()}"),
                "email": {
                    "address": MAIL_USER,
                    "imap": {"host": "127.0.0.1", "port": 993},
                    "smtp": {"host": "127.0.0.1", "port": 587, "starttls": True},
                    "username": MAIL_USER,
                    "password": MAIL_PASSWORD,
                    "ca_file": str(MAIL_DIR / "tls" / "cert.pem"),
                    "mailbox": folder,
                },
            }

            async def connected() -> None:
                await slack.wait_for_connections(1, timeout=60)
                await discord.wait_connected(timeout=60)

            yield blocks, connected
    finally:
        await whatsapp.close()
        await discord.close()
        await slack.close()


@contextlib.contextmanager
def mail_folder() -> Iterator[str]:
    """A folder of its own in the local mail server's agent account (started if need be),
    removed afterwards: the e-mail tests of other work trees use the INBOX."""
    if not reachable(993):
        subprocess.run(["bash", "scripts/ensure-mail.sh"], cwd=REPO_ROOT, check=True)
    folder = f"bench-{secrets.token_hex(4)}"
    context = ssl.create_default_context(cafile=str(MAIL_DIR / "tls" / "cert.pem"))
    with imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=context) as imap:
        imap.login(MAIL_USER, MAIL_PASSWORD)
        imap.create(folder)
    try:
        yield folder
    finally:
        with imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=context) as imap:
            imap.login(MAIL_USER, MAIL_PASSWORD)
            imap.delete(folder)


def reachable(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
