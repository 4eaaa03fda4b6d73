"""The real `clawpen` commands as a person runs them: processes, sockets, JSON logs, exit codes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import docker
import httpx
import pytest

from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from ..waiting import until
from .procs import CLAWPEN, Orchestrator, clawpen, write_config

StartOrchestrator = Callable[..., Awaitable[Orchestrator]]


@pytest.fixture
async def start_orchestrator(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
) -> AsyncIterator[StartOrchestrator]:
    """`clawpen run` as a process, with config keys added as given; stopped at the end."""
    started: list[Orchestrator] = []

    async def start(**extra: object) -> Orchestrator:
        config = write_config(tmp_path / "clawpen.yaml", fake_model.url, fake_telegram, **extra)
        cleanup_instance.append(instance_id(tmp_path / "data"))
        orchestrator = Orchestrator(
            config, {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
        )
        await orchestrator.start()
        started.append(orchestrator)
        return orchestrator

    yield start
    for orchestrator in started:
        await orchestrator.stop()


@pytest.fixture
async def orchestrator_process(start_orchestrator: StartOrchestrator) -> Orchestrator:
    return await start_orchestrator()


@pytest.mark.docker
async def test_chat_command_and_telegram_through_a_running_orchestrator(
    orchestrator_process: Orchestrator, fake_telegram: FakeTelegram
) -> None:
    config, logs = orchestrator_process.config, orchestrator_process.logs
    code, out, err = await clawpen("chat", "--config", str(config), "hello from the CLI")
    assert (code, out.strip()) == (0, "echo: hello from the CLI"), err

    await fake_telegram.push_text(999, "not paired")
    await fake_telegram.push_text(1001, "run: echo telegram-ok")
    await fake_telegram.wait_for_sent(1, timeout=60)
    assert "telegram-ok" in fake_telegram.texts_to(1001)[0]
    assert fake_telegram.texts_to(999) == []

    assert await orchestrator_process.stop() == 0
    events = [entry["event"] for entry in logs]
    for expected in (
        "message_received",
        "message_routed",
        "message_rejected",
        "agent_started",
        "task_executed",
        "reply_sent",
        "agent_stopped",
    ):
        assert expected in events
    for entry in logs:
        assert {"timestamp", "level", "event"} <= set(entry)
    executed = [e for e in logs if e["event"] == "task_executed"]
    assert all(
        {"agentId", "taskId", "duration", "success", "channel", "chat"} <= set(e) for e in executed
    )
    rejected = next(e for e in logs if e["event"] == "message_rejected")
    assert rejected["chat"] == "999"


@pytest.mark.docker
async def test_interactive_chat_and_status(orchestrator_process: Orchestrator) -> None:
    config = orchestrator_process.config
    process = await asyncio.create_subprocess_exec(
        *CLAWPEN,
        "chat",
        "--config",
        str(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(b"first line\n\nsecond line\n")
    assert process.returncode == 0, err
    assert out.decode().splitlines() == [
        "assistant> echo: first line",
        "assistant> echo: second line",
    ]
    assert "chatting with assistant" in err.decode()

    code, out, err = await clawpen("status", "--config", str(config))
    status = json.loads(out)
    assert code == 0, err
    assert status["agents"]["assistant"]["connected"] is True
    assert status["counts"]["messages.answered"] == 2
    assert status["channels"]["cli"] == {
        "state": "running",
        "sending": {"state": "closed", "failures": 0},
    }
    assert status["channels"]["telegram"]["state"] == "running"
    assert status["channels"]["telegram"]["pid"] > 0  # its adapter runs in a process of its own


@pytest.mark.docker
async def test_admin_socket_is_owner_only(
    orchestrator_process: Orchestrator,
) -> None:
    config = orchestrator_process.config
    socket = config.parent / "data" / "admin.sock"
    assert socket.stat().st_mode & 0o777 == 0o600
    assert (config.parent / "data").stat().st_mode & 0o777 == 0o700


@pytest.mark.docker
async def test_the_log_file_is_owner_only_and_clawpen_logs_reads_it(
    orchestrator_process: Orchestrator,
) -> None:
    config = orchestrator_process.config
    code, out, err = await clawpen("chat", "hello", "--config", str(config))
    assert code == 0, err
    log = config.parent / "data" / "logs" / "clawpen.log"
    assert log.stat().st_mode & 0o777 == 0o600
    code, out, err = await clawpen("logs", "assistant", "--human", "--config", str(config))
    assert code == 0, err
    assert out and all("agent=assistant" in line for line in out.splitlines())
    code, out, err = await clawpen("logs", "-n", "1000", "--config", str(config))
    assert "orchestrator_started" in {json.loads(line)["event"] for line in out.splitlines()}


async def test_chat_without_a_running_orchestrator_says_how_to_start_one(tmp_path: Path) -> None:
    config = write_config(tmp_path / "clawpen.yaml", "http://127.0.0.1:9")
    code, _out, err = await clawpen("chat", "--config", str(config), "hi")
    assert code != 0
    assert err.count("\n") == 1
    assert "no orchestrator answers" in err and "clawpen run --config" in err


@pytest.mark.parametrize(
    ("config_text", "env", "expected"),
    [
        ("model: [unclosed\n", {}, "fix the YAML syntax"),
        ("WRITE", {"ANTHROPIC_API_KEY": ""}, "model.api_key: ANTHROPIC_API_KEY is not set"),
        ("WRITE+agents_typo: 1", {"ANTHROPIC_API_KEY": "k"}, "agents_typo: unknown key"),
    ],
    ids=["malformed-yaml", "missing-key", "unknown-key"],
)
async def test_bad_config_gives_one_line_naming_the_key_and_the_fix(
    tmp_path: Path, config_text: str, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "clawpen.yaml"
    if config_text.startswith("WRITE"):
        write_config(path, "http://127.0.0.1:9")
        if "+" in config_text:
            path.write_text(path.read_text() + config_text.split("+", 1)[1] + "\n")
    else:
        path.write_text(config_text)
    code, _out, err = await clawpen("run", "--config", str(path), env=env)
    assert code == 2
    assert err.count("\n") == 1, err
    assert str(path) in err and expected in err


async def test_docker_not_running_gives_one_line_with_the_fix(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "clawpen.yaml",
        "http://127.0.0.1:9",
        docker_host="unix:///nonexistent/docker.sock",
    )
    code, _out, err = await clawpen("run", "--config", str(path), env={"ANTHROPIC_API_KEY": "k"})
    assert code == 1
    assert err.count("\n") == 1, err
    assert "cannot reach the Docker engine" in err and "ensure-docker.sh" in err


@pytest.mark.docker
async def test_missing_image_gives_one_line_with_the_fix(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "clawpen.yaml", "http://127.0.0.1:9", image="clawpen-agent:never-built"
    )
    code, _out, err = await clawpen("run", "--config", str(path), env={"ANTHROPIC_API_KEY": "k"})
    assert code == 1
    assert err.count("\n") == 1, err
    assert "clawpen-agent:never-built is not built" in err and "clawpen image build" in err


@pytest.mark.docker
async def test_pairing_a_chat_at_runtime_lets_it_in_and_unpairing_shuts_it_out(
    orchestrator_process: Orchestrator, fake_telegram: FakeTelegram
) -> None:
    config = str(orchestrator_process.config)
    await fake_telegram.push_text(2002, "before pairing")
    code, out, err = await clawpen("pair", "--config", config, "telegram:2002", "assistant")
    assert (code, out.strip()) == (0, "paired telegram:2002 with assistant"), err
    code, out, _ = await clawpen("pairings", "--config", config)
    assert out.splitlines() == ["telegram:1001\tassistant", "telegram:2002\tassistant"]

    await fake_telegram.push_text(2002, "after pairing")
    await fake_telegram.wait_for_sent(1, timeout=60)
    assert fake_telegram.texts_to(2002) == ["echo: after pairing"]

    code, _, err = await clawpen("unpair", "--config", config, "telegram:2002")
    assert code == 0, err
    await fake_telegram.push_text(2002, "after unpairing")
    await fake_telegram.push_text(1001, "still paired")
    await fake_telegram.wait_for_sent(2, timeout=60)
    assert fake_telegram.texts_to(2002) == ["echo: after pairing"]

    code, _, err = await clawpen("pair", "--config", config, "telegram:3", "nobody")
    assert code == 1 and "no agent 'nobody'" in err and err.count("\n") == 1


@pytest.mark.docker
async def test_sigterm_twice_while_agents_start_leaves_no_container_behind(
    tmp_path: Path,
    fake_model: FakeModel,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
    docker_client: docker.DockerClient,
) -> None:
    config = write_config(tmp_path / "clawpen.yaml", fake_model.url)
    text = config.read_text().replace(
        "  - id: assistant\n    system_prompt: You are a test.\n",
        "".join(f"  - id: agent{i}\n    warm: true\n" for i in range(6)),
    )
    config.write_text(text)
    instance = instance_id(tmp_path / "data")
    cleanup_instance.append(instance)
    orchestrator = Orchestrator(config, {"ANTHROPIC_API_KEY": api_key})
    await orchestrator.start()
    await asyncio.sleep(0.3)  # some agents running, some starting
    assert orchestrator.process is not None
    orchestrator.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    assert await orchestrator.stop(signal.SIGTERM) == 0
    assert orchestrator.events("orchestrator_stopped")
    labels = {"label": [f"clawpen.instance={instance}"]}
    assert docker_client.containers.list(all=True, filters=labels) == []


@pytest.mark.docker
async def test_a_second_orchestrator_on_the_same_data_dir_refuses_to_start(
    orchestrator_process: Orchestrator, api_key: str, fake_telegram: FakeTelegram
) -> None:
    env = {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    code, _, err = await clawpen("run", "--config", str(orchestrator_process.config), env=env)
    assert orchestrator_process.process is not None
    assert code == 1 and err.count("\n") == 1
    assert f"another orchestrator (pid {orchestrator_process.process.pid}) is running" in err


@pytest.mark.docker
async def test_prometheus_metrics_count_what_happened(
    start_orchestrator: StartOrchestrator, fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await start_orchestrator(metrics_port=port)
    await fake_telegram.push_text(1001, "count me")
    await fake_telegram.push_text(4242, "not paired")
    await fake_telegram.wait_for_sent(1, timeout=60)
    token = (tmp_path / "data" / "http.token").read_text()
    url, auth = f"http://127.0.0.1:{port}/metrics", {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 401  # any local user can reach the port
        async with asyncio.timeout(10):  # the outbox counts the reply just after sending it
            while 'clawpen_replies_total{channel="telegram",outcome="sent"} 1.0' not in (
                text := (await client.get(url, headers=auth)).text
            ):
                await asyncio.sleep(0.05)
    assert 'clawpen_messages_total{channel="telegram",outcome="routed"} 1.0' in text
    assert 'clawpen_messages_total{channel="telegram",outcome="rejected"} 1.0' in text
    assert 'clawpen_tasks_total{agent="assistant",outcome="ok"} 1.0' in text
    assert 'clawpen_model_tokens_total{agent="assistant",kind="output"}' in text
    assert 'clawpen_agent_starts_total{agent="assistant"} 1.0' in text
    assert 'clawpen_agent_cold_start_seconds_count{agent="assistant"} 1.0' in text
    assert 'clawpen_outbox_depth{channel="telegram"} 0.0' in text
    assert "clawpen_running_agents 1.0" in text


@pytest.mark.docker
async def test_a_refused_telegram_token_disables_telegram_with_one_line_and_the_cli_goes_on(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
) -> None:
    config = write_config(tmp_path / "clawpen.yaml", fake_model.url, fake_telegram)
    cleanup_instance.append(instance_id(tmp_path / "data"))
    env = {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": "999:not-the-token"}
    orchestrator = Orchestrator(config, env)
    await orchestrator.start()
    try:
        async with asyncio.timeout(30):
            while not orchestrator.events("channel_disabled"):
                await asyncio.sleep(0.05)
        code, out, err = await clawpen("chat", "--config", str(config), "still there?")
        assert (code, out) == (0, "echo: still there?\n"), err
        code, out, _ = await clawpen("status", "--config", str(config))
        assert json.loads(out)["channels"]["telegram"] == {
            "state": "disabled",
            "error": "telegram: the bot token was refused; check channels.telegram.token",
            "sending": {"state": "closed", "failures": 0},
        }
    finally:
        assert await orchestrator.stop() == 0
    [disabled] = orchestrator.events("channel_disabled")
    assert disabled["error"] == (
        "telegram: the bot token was refused; check channels.telegram.token"
    )


@pytest.mark.docker
async def test_a_stranger_gets_a_code_the_owner_approves_it_and_the_chat_is_paired(
    start_orchestrator: StartOrchestrator, fake_telegram: FakeTelegram, fake_model: FakeModel
) -> None:
    orchestrator = await start_orchestrator(telegram_lines=("unknown_senders: code",))
    config = str(orchestrator.config)
    await fake_telegram.push_text(777, "hello, may I talk to your assistant?")
    await fake_telegram.push_text(777, "hello again")  # one code an hour, not one per message
    await fake_telegram.wait_for_sent(1, timeout=60)
    [offer] = fake_telegram.texts_to(777)
    code = re.search(r"\b[A-Z2-9]{4}-[A-Z2-9]{4}\b", offer)
    assert code is not None, offer
    assert fake_model.requests == []  # a stranger's words never reach a model

    code_, out, err = await clawpen("pairings", "--config", config)
    assert code_ == 0 and "telegram:777\t(waiting for approval" in out, err
    code_, out, err = await clawpen(
        "pair", "approve", "WRNG-CODE", "--agent", "assistant", "-c", config
    )
    assert code_ == 1 and "no such pairing code" in err
    code_, out, err = await clawpen(
        "pair", "approve", code.group().lower(), "--agent", "assistant", "--config", config
    )
    assert (code_, out.strip()) == (0, "paired telegram:777 with assistant"), err
    await fake_telegram.wait_for_sent(2, timeout=60)
    assert "Paired" in fake_telegram.texts_to(777)[1]

    await fake_telegram.push_text(777, "run: echo paired-ok")
    await fake_telegram.wait_for_sent(3, timeout=60)
    assert "paired-ok" in fake_telegram.texts_to(777)[2]
    code_, out, err = await clawpen("pairings", "--config", config)
    assert "telegram:777\tassistant" in out
    # a used code cannot pair again
    code_, out, err = await clawpen(
        "pair", "approve", code.group(), "--agent", "assistant", "-c", config
    )
    assert code_ == 1


async def tasks_running(config: Path) -> int:
    code, out, err = await clawpen("status", "--config", str(config))
    assert code == 0, err
    return int(json.loads(out)["counts"].get("tasks.running", 0))


@pytest.mark.docker
async def test_ctrl_c_in_chat_stops_the_answer_and_a_second_leaves_the_orchestrator_going_on(
    orchestrator_process: Orchestrator,
) -> None:
    config = orchestrator_process.config
    chat = await asyncio.create_subprocess_exec(
        *CLAWPEN, "chat", "--config", str(config),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert chat.stdin is not None and chat.stdout is not None and chat.stderr is not None
    chat.stdin.write(b"run: sleep 600\n")
    await chat.stdin.drain()
    await until(lambda: tasks_running(config), timeout=60, what="the long command running")

    chat.send_signal(signal.SIGINT)  # the first Ctrl-C: stop the answer, stay in the chat
    async with asyncio.timeout(60):
        stopped = (await chat.stdout.readline()).decode()
    assert stopped.startswith("assistant> ")
    assert not await tasks_running(config)  # the agent no longer runs it
    chat.stdin.write(b"still here?\n")
    await chat.stdin.drain()
    async with asyncio.timeout(60):
        assert (await chat.stdout.readline()).decode() == "assistant> echo: still here?\n"

    chat.send_signal(signal.SIGINT)  # the second: leave
    async with asyncio.timeout(30):
        code = await chat.wait()
    assert code == 0
    assert "stopping the answer, as /stop does" in (await chat.stderr.read()).decode()
    code, out, err = await clawpen("chat", "--config", str(config), "and you?")
    assert (code, out) == (0, "echo: and you?\n"), err  # the orchestrator went on


@pytest.mark.docker
async def test_an_answer_whose_chat_was_closed_is_shown_by_the_next_chat_of_that_session(
    orchestrator_process: Orchestrator,
) -> None:
    config = orchestrator_process.config
    chat = await asyncio.create_subprocess_exec(
        *CLAWPEN, "chat", "--config", str(config), "--session", "notes",
        "run: sleep 2; echo written-while-away",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await until(lambda: orchestrator_process.events("agent_started"), what="the agent at work")
    chat.kill()  # the terminal is closed while the agent works
    await chat.wait()

    async def replies_sent() -> bool:
        _, out, _ = await clawpen("status", "--config", str(config))
        counts = json.loads(out)["counts"]
        return not counts.get("tasks.running") and not counts.get("replies.pending")

    await until(replies_sent, timeout=60, what="the answer delivered")
    code, out, err = await clawpen("chat", "--config", str(config), "--session", "notes", "hi")
    assert code == 0, err
    away, now = out.rsplit("\n", 2)[:2]
    assert away.startswith("assistant> ") and "written-while-away" in away, out
    assert now == "echo: hi"
    code, out, err = await clawpen("status", "--config", str(config))
    assert "undelivered_24h" not in json.loads(out)["channels"]["cli"]  # status: delivered
    code, out, err = await clawpen("chat", "--config", str(config), "--session", "notes", "hi")
    assert out == "echo: hi\n"  # shown once


@pytest.mark.docker
async def test_a_task_rerun_after_a_crash_answers_into_its_conversations_history(
    start_orchestrator: StartOrchestrator,
) -> None:
    """The issue's case: the orchestrator dies mid-answer (with the chat that asked); on the
    next start the task runs again, and its answer is not dropped for want of a listener: the
    next `clawpen chat --session` of that conversation shows it, and `status` counts it
    delivered."""
    first = await start_orchestrator()
    config = first.config
    chat = await asyncio.create_subprocess_exec(
        *CLAWPEN, "chat", "--config", str(config), "--session", "work",
        "run: sleep 2; echo finished-after-the-crash",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await until(lambda: first.events("agent_started"), what="the agent at work")
    await first.stop(signal.SIGKILL)
    chat.kill()
    await chat.wait()

    await start_orchestrator()

    async def answered() -> bool:
        _, out, _ = await clawpen("status", "--config", str(config))
        counts = json.loads(out)["counts"]
        return bool(counts.get("replies.sent")) and not counts.get("replies.pending")

    await until(answered, timeout=90, what="the re-run task's answer")
    code, out, err = await clawpen("chat", "--config", str(config), "--session", "work", "hi")
    assert code == 0, err
    assert "finished-after-the-crash" in out and out.endswith("echo: hi\n"), out
    _, out, _ = await clawpen("status", "--config", str(config))
    status = json.loads(out)
    assert "undelivered_24h" not in status["channels"]["cli"]
    assert not status["counts"].get("replies.failed")
