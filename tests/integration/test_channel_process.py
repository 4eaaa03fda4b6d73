"""Each platform adapter runs in a process of its own, holding only its own credential: a flaw
in one adapter cannot reach the model key, another platform's token or the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.channels import wire
from clawpen.channels.base import ChannelFatal
from clawpen.channels.process import (
    AdapterHandle,
    ChannelProcess,
    Zygote,
    _package_root,
    adapter_uid,
    process_spec,
    process_uids,
)
from clawpen.channels.telegram import TelegramSettings
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from ..conftest import running, settled


def adapter_pid(orchestrator: Orchestrator) -> int:
    channel = orchestrator.channels["telegram"]
    assert isinstance(channel, ChannelProcess)
    assert channel.pid is not None
    return channel.pid


async def wait_for_adapter(orchestrator: Orchestrator, other_than: int | None = None) -> int:
    async with asyncio.timeout(30):
        while True:
            channel = orchestrator.channels["telegram"]
            pid = getattr(channel, "pid", None)
            if pid is not None and pid != other_than:
                return int(pid)
            await asyncio.sleep(0.02)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def readable_memory(pid: int) -> bytes:
    """Every readable mapping of a process, as root reads it through /proc/PID/mem."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, OverflowError, ValueError):
                continue  # [vvar] and the like cannot be read
    return b"".join(chunks)


def test_an_adapter_gets_nothing_of_the_orchestrators_environment() -> None:
    parent_env = {
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "SLACK_BOT_TOKEN": "xoxb-other",
        "HTTPS_PROXY": "http://proxy:3128",
        "PATH": "/opt/bin",
    }
    spec = process_spec("telegram", 7, "/usr/bin/python3", "/srv/clawpen", 0, parent_env)
    assert "sk-ant-secret" not in str(spec)
    assert "xoxb-other" not in str(spec)
    assert spec.env["HTTPS_PROXY"] == "http://proxy:3128"
    assert spec.env["PYTHONPATH"] == "/srv/clawpen"
    assert spec.argv[-3:] == ("telegram", "--uid", str(adapter_uid("telegram")))
    assert spec.cwd == "/"
    as_user = process_spec("telegram", 7, "/usr/bin/python3", "/srv/clawpen", 1000, parent_env)
    assert as_user.user is None and "--uid" not in as_user.argv  # not root: nothing to drop
    assert adapter_uid("telegram") != adapter_uid("slack")


async def test_telegram_is_served_by_a_process_of_its_own_that_holds_only_its_token(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    api_key: str,
) -> None:
    """Its own process, holding its own token and nothing else, as a user of its own that
    cannot read the store. (The suite runs as root, as `clawpen run` does on a server; the
    disk-full test needs root too.)"""
    assert os.geteuid() == 0, "run the test suite as root: it hands the adapter another uid"
    orchestrator = orchestrator_factory(telegram=fake_telegram, adapters="process")
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "hello through a process")
        await fake_telegram.wait_for_sent(1, timeout=30)
        pid = adapter_pid(orchestrator)
        assert pid != os.getpid()
        environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
        cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
        memory = await asyncio.to_thread(readable_memory, pid)
        proc_status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
        status = await orchestrator.status()
    assert fake_telegram.texts_to(1001) == ["echo: hello through a process"]
    assert status["channels"]["telegram"]["state"] == "running"
    for place in (environ, cmdline, memory):
        assert api_key.encode() not in place  # the model key never entered that process
    assert fake_telegram.token.encode() not in environ + cmdline  # its own token: memory only
    assert fake_telegram.token.encode() in memory  # (it does hold that one: the probe works)

    uid = adapter_uid("telegram")
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in proc_status
    assert re.search(r"^Groups:\s*$", proc_status, re.MULTILINE)  # no supplementary groups
    # what that uid can do with the store, tried by a process with the same credentials
    store = orchestrator.settings.data_dir / "clawpen.db"
    probe = await asyncio.to_thread(
        subprocess.run,
        ["/usr/bin/python3", "-c", f"open({str(store)!r}, 'rb')"],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert probe.returncode != 0
    assert "PermissionError" in probe.stderr


@pytest.mark.parametrize("started_by", ["exec", "zygote"])
async def test_an_adapter_runs_as_its_own_uid_before_it_is_sent_its_token(
    fake_telegram: FakeTelegram, started_by: str
) -> None:
    """The adapter loads its code, drops to its own uid and says `ready` with no credential
    in it; only then does the core send the start frame (the token). Here the test is the
    core: it withholds the start frame and looks at the process meanwhile."""
    assert os.geteuid() == 0, "run the test suite as root: it hands the adapter another uid"
    uid = adapter_uid("telegram")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote = Zygote() if started_by == "zygote" else None
    process: AdapterHandle
    try:
        if zygote is not None:
            process = await zygote.spawn("telegram", theirs.fileno())
        else:
            spec = process_spec(
                "telegram", theirs.fileno(), sys.executable, _package_root(), 0, os.environ
            )
            process = await asyncio.create_subprocess_exec(
                *spec.argv, env=spec.env, cwd=spec.cwd, pass_fds=(theirs.fileno(),)
            )
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=wire.MAX_FRAME)
        async with asyncio.timeout(60):
            first = await wire.read_frame(reader)
        assert first == {"type": "ready"}
        assert await asyncio.to_thread(process_uids, process.pid) == {uid}  # dropped already
        memory = await asyncio.to_thread(readable_memory, process.pid)
        assert fake_telegram.token.encode() not in memory
        assert fake_telegram.calls == []

        settings = TelegramSettings(token=fake_telegram.token, api_base_url=fake_telegram.url)
        writer.write(wire.encode(wire.start_frame("telegram", settings.model_dump(mode="json"))))
        await until(lambda: "getUpdates" in fake_telegram.calls, what="the adapter polls")
        assert await asyncio.to_thread(process_uids, process.pid) == {uid}
        writer.close()  # the core hangs up: the adapter ends
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        ours.close()
        if zygote is not None:
            await zygote.close()


async def test_an_adapter_that_says_ready_but_kept_roots_uid_is_never_sent_its_token(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    """The core does not take `ready` on the adapter's word: it reads the uid from /proc. A
    process that says ready as root gets no start frame; the channel is disabled, naming why."""
    assert os.geteuid() == 0, "run the test suite as root: it hands the adapter another uid"
    heard = tmp_path / "heard"
    script = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "fd, heard = int(sys.argv[1]), open(sys.argv[2], 'wb', 0)\n"
        'os.write(fd, b\'{"type": "ready"}\\n\')\n'
        "while chunk := os.read(fd, 65536):\n"  # what the core sends, kept as it comes
        "    heard.write(chunk)\n"
    )

    class KeptRoot(ChannelProcess):
        async def _spawn(self, fd: int) -> AdapterHandle:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                script,
                str(fd),
                str(heard),
                pass_fds=(fd,),
                stderr=asyncio.subprocess.PIPE,
            )

    async def accept(message: object) -> None:
        return None

    settings = TelegramSettings(token=fake_telegram.token, api_base_url=fake_telegram.url)
    with pytest.raises(ChannelFatal, match=f"did not drop to uid {adapter_uid('telegram')}"):
        await KeptRoot("telegram", settings, 4096).run(accept)
    # it was stopped (after its grace: it ignores SIGTERM) having heard nothing, no token
    assert heard.read_bytes() == b""
    assert fake_telegram.calls == []


async def test_a_killed_adapter_is_restarted_and_no_message_is_lost_or_doubled(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram, adapters="process")
    async with running(orchestrator):
        first = await wait_for_adapter(orchestrator)
        for i in range(20):
            await fake_telegram.push_text(1001, f"before {i}")
        os.kill(first, signal.SIGKILL)  # mid-burst: some committed, some not yet acknowledged
        for i in range(20):
            await fake_telegram.push_text(1001, f"after {i}")
        second = await wait_for_adapter(orchestrator, other_than=first)
        async with asyncio.timeout(60):
            while True:
                counts = await orchestrator.store.counts()
                answered = counts.get("messages.answered", 0)
                if answered == 40 and not counts.get("replies.pending"):
                    break
                await asyncio.sleep(0.05)
        status = await orchestrator.status()
    assert second != first
    assert status["channels"]["telegram"]["restarts"] >= 1
    # every message answered exactly once (several may share one turn, one line each)
    parts = [
        re.sub(r"^\[\d+\] ", "", line)
        for reply in fake_telegram.texts_to(1001)
        for line in reply.removeprefix("echo: ").splitlines()
    ]
    expected = [f"before {i}" for i in range(20)] + [f"after {i}" for i in range(20)]
    assert sorted(parts) == sorted(expected)


async def test_a_refused_token_disables_that_channel_and_the_others_go_on(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram, adapters="process")
    fake_telegram.token = "123:a-new-one"  # the bot's token was revoked: ours is refused
    async with running(orchestrator):
        async with asyncio.timeout(30):
            while orchestrator.channel_states["telegram"].state != "disabled":
                await asyncio.sleep(0.05)
        assert orchestrator.cli is not None
        reply = await orchestrator.cli.ask("assistant", "still there?")
        status = await orchestrator.status()
    assert reply == "echo: still there?"
    assert status["channels"]["telegram"] == {
        "state": "disabled",
        "error": "telegram: the bot token was refused; check channels.telegram.token",
        "sending": {"state": "closed", "failures": 0},
    }
    assert status["channels"]["cli"]["state"] == "running"


def test_the_adapter_module_can_be_started_by_the_python_we_run_on() -> None:
    """The child is `python -m clawpen.channels.runner`: it must import without our sys.path."""
    code = subprocess.run(
        [sys.executable, "-c", "import clawpen.channels.runner"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        cwd="/",
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, code.stderr


async def test_an_unreachable_platform_keeps_its_adapter_up_and_it_recovers_without_a_restart(
    orchestrator_factory: Callable[..., Orchestrator], capfd: pytest.CaptureFixture[str]
) -> None:
    """No route to Telegram: the adapter does not exit into a crash loop. It says why once,
    `status` shows `unreachable` with that line, and once Telegram answers it goes on in the
    same process."""
    with socket.socket() as probe:  # a port where nothing listens: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    telegram = FakeTelegram(url=f"http://127.0.0.1:{port}")
    orchestrator = orchestrator_factory(telegram=telegram, adapters="process")
    try:
        async with running(orchestrator):
            pid = await wait_for_adapter(orchestrator)

            def telegram_state() -> tuple[str, str]:
                state = orchestrator.channel_states["telegram"]
                return state.state, state.error

            await until(
                lambda: "retrying in 4 s" in telegram_state()[1], what="a second failed try"
            )
            status = await orchestrator.status()
            assert status["channels"]["telegram"]["state"] == "unreachable"
            assert status["channels"]["telegram"]["error"] == (
                f"cannot reach http://127.0.0.1:{port} (connection refused); retrying in 4 s"
            )
            assert "restarts" not in status["channels"]["telegram"]

            await telegram.start(port)  # the network is back
            await until(lambda: telegram_state() == ("running", ""), what="telegram reachable")
            await telegram.push_text(1001, "are you back?")
            await telegram.wait_for_sent(1, timeout=30)
            assert adapter_pid(orchestrator) == pid  # the same process: never restarted
            assert orchestrator.channel_states["telegram"].restarts == 0
    finally:
        await telegram.close()
    assert telegram.texts_to(1001) == ["echo: are you back?"]
    logged = capfd.readouterr().out
    # one line per change of state, not one per try
    assert logged.count('"channel_unreachable"') == 1, logged
    assert logged.count('"channel_reachable"') == 1, logged
    assert f"cannot reach http://127.0.0.1:{port} (connection refused); retrying in 2 s" in logged


async def test_adapters_are_forked_by_a_zygote_that_holds_no_secret_and_is_replaced_if_killed(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    api_key: str,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram, adapters="process")
    async with running(orchestrator):
        first = await wait_for_adapter(orchestrator)
        zygote = orchestrator.zygote.pid
        assert zygote is not None
        assert parent_of(first) == zygote  # forked by it, not by the orchestrator
        zygote_memory = await asyncio.to_thread(readable_memory, zygote)
        environ = await asyncio.to_thread(Path(f"/proc/{zygote}/environ").read_bytes)
        for secret in (api_key.encode(), fake_telegram.token.encode()):
            assert secret not in zygote_memory + environ  # no credential ever enters it
        os.kill(zygote, signal.SIGKILL)
        await fake_telegram.push_text(1001, "with the zygote gone")  # the adapter lives on
        await fake_telegram.wait_for_sent(1, timeout=30)
        await settled(orchestrator)  # the send confirmed: killing the adapter doubles nothing
        os.kill(first, signal.SIGKILL)  # its successor needs a zygote: a new one
        second = await wait_for_adapter(orchestrator, other_than=first)
        await fake_telegram.push_text(1001, "from the next adapter")
        await fake_telegram.wait_for_sent(2, timeout=30)
        assert orchestrator.zygote.pid not in (None, zygote)
        assert parent_of(second) == orchestrator.zygote.pid
    assert fake_telegram.texts_to(1001) == [
        "echo: with the zygote gone",
        "echo: from the next adapter",
    ]


async def test_a_file_crosses_to_the_adapter_process_and_reaches_telegram_whole(
    fake_telegram: FakeTelegram,
) -> None:
    """The core hands a file to the adapter process (a ``send_file`` frame), which uploads it
    with python-telegram-bot: a photo as a photo, a PDF as a document, byte for byte."""
    from clawpen.channels.telegram import TelegramSettings
    from clawpen.models import Address, OutboundFile

    settings = TelegramSettings(token=fake_telegram.token, api_base_url=fake_telegram.url)
    channel = ChannelProcess("telegram", settings, 4096)

    async def accept(message: object) -> None:
        return None

    runner = asyncio.create_task(channel.run(accept))
    try:
        await until(lambda: channel.pid is not None, what="the adapter process")
        to = Address("telegram", "1001")
        png = b"\x89PNG\r\n\x1a\n" + os.urandom(3 * 1024 * 1024)
        pdf = b"%PDF-1.4\n" + os.urandom(1024) + b"\n%%EOF\n"
        photo = await channel.send_file(OutboundFile(to, "chart.png", "image/png", png, "chart"))
        document = await channel.send_file(OutboundFile(to, "form.pdf", "application/pdf", pdf))
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
    first, second = fake_telegram.uploads
    assert (first["method"], first["data"], first["caption"]) == ("sendPhoto", png, "chart")
    assert (second["method"], second["name"], second["data"]) == ("sendDocument", "form.pdf", pdf)
    assert photo != document
