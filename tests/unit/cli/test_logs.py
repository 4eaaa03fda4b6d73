"""The orchestrator's log file and `clawpen logs`: owner-only files rotated by size, JSON
lines made readable (and inert) for a person, filtered by agent, followed across a rotation."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

from clawpen.cli.logview import follow, human
from clawpen.obs import logging as clawpen_logging
from clawpen.obs.logfile import RotatingFile, log_path
from tests.waiting import until


def line(event: str, **fields: object) -> str:
    return json.dumps(
        {"event": event, "level": "info", "timestamp": "2026-11-26T09:14:02.5Z", **fields}
    )


def test_the_log_rotates_by_size_and_every_file_is_owner_only(tmp_path: Path) -> None:
    path = log_path(tmp_path / "data")
    log = RotatingFile(path, max_bytes=100, backups=2)
    for i in range(10):
        log.write(f"{i:02d}" + "x" * 47 + "\n")  # 50 bytes: two lines a file
    log.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["clawpen.log", "clawpen.log.1", "clawpen.log.2"]  # older ones deleted
    assert path.read_text().startswith("08")
    assert (path.parent / "clawpen.log.2").read_text().startswith("04")
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in path.parent.iterdir())


def test_an_existing_log_file_is_made_owner_only(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    path.parent.mkdir()
    path.write_text("old\n")
    path.chmod(0o644)
    RotatingFile(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


async def test_the_orchestrator_log_goes_to_the_file_as_json_lines(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    file = RotatingFile(path)
    try:
        clawpen_logging.configure("info", file=file)
        clawpen_logging.get_logger().info("message_routed", agentId="assistant", chat="42")
        clawpen_logging.get_logger().debug("too_fine_to_keep")
        await until(  # a thread of its own writes the lines out
            lambda: "message_routed" in path.read_text(), what="the line in the file"
        )
    finally:
        clawpen_logging.configure("info")
    written = [json.loads(text) for text in path.read_text().splitlines()]
    assert [e["event"] for e in written] == ["message_routed"]
    assert written[0]["agentId"] == "assistant"


def test_a_line_for_people_puts_the_context_first_and_shows_control_characters_inert() -> None:
    text = human(
        line(
            "task_failed",
            error="agent said \x1b[2Jgone",
            taskId="t1",
            agentId="assistant",
            chat="42",
            exception="Traceback:\n  boom",
        )
    )
    first, *rest = text.splitlines()
    assert first.startswith("2026-11-26 09:14:02 info    task_failed  agent=assistant chat=42")
    assert 'task=t1 error="agent said ^[[2Jgone"' in first
    assert "\x1b" not in text
    assert rest == ["    Traceback:", "      boom"]
    assert human("not json \x07") == "not json ^G"


def clawpen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clawpen", *args], capture_output=True, text=True, timeout=60
    )


def test_clawpen_logs_reads_every_file_filters_by_agent_and_is_json_when_piped(
    tmp_path: Path,
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text("data_dir: ./data\n")
    log = RotatingFile(log_path(tmp_path / "data"), max_bytes=200)
    for i in range(6):
        log.write(line("task_done", agentId="a" if i % 2 else "b", n=i) + "\n")
    log.close()
    assert len(list((tmp_path / "data" / "logs").iterdir())) > 1  # it did rotate

    piped = clawpen("logs", "a", "--config", str(config))
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(text)["n"] for text in piped.stdout.splitlines()] == [1, 3, 5]

    readable = clawpen("logs", "b", "-n", "2", "--human", "--config", str(config))
    assert readable.stdout.splitlines() == [
        "2026-11-26 09:14:02 info    task_done  agent=b n=2",
        "2026-11-26 09:14:02 info    task_done  agent=b n=4",
    ]


def test_clawpen_logs_without_a_log_says_so(tmp_path: Path) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text("data_dir: ./data\n")
    done = clawpen("logs", "--config", str(config))
    assert done.returncode != 0
    assert "no log yet" in done.stderr


def test_following_goes_on_across_a_rotation(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    log = RotatingFile(path, max_bytes=150, backups=1)
    log.write(line("before", agentId="a") + "\n")  # already there: not followed
    steps = iter(
        [
            lambda: log.write(line("one", agentId="a") + "\n"),
            lambda: log.write(line("other", agentId="b") + "\n"),  # rotates
            lambda: log.write(line("two", agentId="a") + "\n"),
        ]
    )

    def sleep(_: float) -> None:  # each pause of the follower: the writer's next step
        next(steps)()

    events = follow(path, agent="a", sleep=sleep)
    assert json.loads(next(events))["event"] == "one"
    assert json.loads(next(events))["event"] == "two"
    assert (path.parent / "clawpen.log.1").exists()


def test_clawpen_logs_follow_prints_new_lines_as_they_come(tmp_path: Path) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text("data_dir: ./data\n")
    log = RotatingFile(log_path(tmp_path / "data"))
    log.write(line("old") + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "clawpen", "logs", "-f", "--human", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        assert "old" in lines.get(timeout=30)  # the tail first, then it follows
        log.write(line("fresh", agentId="assistant") + "\n")
        assert "fresh  agent=assistant" in lines.get(timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
