"""The peer benchmark's pure parts: which cgroup file holds a container's CPU time, how
replies and model requests are counted, and when the peer runs at all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from bench.__main__ import load, select
from bench.peer import answered_counts, model_saw, ratio
from bench.peer_nanobot import nanobot_config
from bench.procs import cgroup_cpu_path, parse_cgroup_cpu

V1 = """12:pids:/docker/abc
4:cpu,cpuacct:/docker/abc
1:name=systemd:/docker/abc
0::/system.slice/containerd.service
"""
V2 = "0::/system.slice/docker-abc.scope\n"


def test_cgroup_v1_cpuacct_wins_over_the_unified_line() -> None:
    root = Path("/sys/fs/cgroup")
    assert cgroup_cpu_path(V1, root) == root / "cpuacct/docker/abc/cpuacct.usage"


def test_cgroup_v2_cpu_stat() -> None:
    root = Path("/sys/fs/cgroup")
    assert cgroup_cpu_path(V2, root) == root / "system.slice/docker-abc.scope/cpu.stat"
    assert cgroup_cpu_path("garbage\n", root) is None


def test_parse_cgroup_cpu_in_seconds() -> None:
    assert parse_cgroup_cpu(Path("x/cpuacct.usage"), "2500000000\n") == 2.5
    stat = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
    assert parse_cgroup_cpu(Path("x/cpu.stat"), stat) == 1.5
    with pytest.raises(ValueError, match="usage_usec"):
        parse_cgroup_cpu(Path("x/cpu.stat"), "user_usec 1\n")


def test_a_token_counts_once_per_reply_and_again_in_another() -> None:
    counts = answered_counts(["echo: pb0001x pb0001x pb0002x", "echo: pb0002x", "hello"])
    assert counts["pb0001x"] == 1
    assert counts["pb0002x"] == 2  # answered twice: a double
    assert counts["pb0003x"] == 0


def test_model_saw_only_user_turns_and_only_the_tokens_asked() -> None:
    requests = [
        {
            "messages": [
                {"role": "user", "content": "pb0001x"},
                {"role": "assistant", "content": "echo: pb0009x"},
                {"role": "user", "content": [{"type": "text", "text": "pb0002x"}]},
            ]
        }
    ]
    assert model_saw(requests, {"pb0001x", "pb0002x", "pb0009x", "pb0003x"}) == {
        "pb0001x",
        "pb0002x",
    }


def test_ratio_is_clawpen_over_nanobot() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0))


def test_nanobot_reaches_telegram_through_the_proxy_and_the_model_directly() -> None:
    class Telegram:
        token = "123:t"

    raw = nanobot_config(Path("/w"), "http://127.0.0.1:9/", "k", Telegram(), "http://p:1")  # type: ignore[arg-type]
    telegram = raw["channels"]["telegram"]
    assert telegram["proxy"] == "http://p:1"
    assert telegram["streaming"] is False  # one sendMessage per reply, as clawpen's
    assert raw["providers"]["anthropic"]["apiBase"] == "http://127.0.0.1:9/"


def test_the_peer_runs_only_when_asked() -> None:
    load()
    assert "peer" not in [b.name for b in select([])]
    assert "peer" in [b.name for b in select([], "nanobot")]
    assert [b.name for b in select(["peer"], "nanobot")] == ["peer"]
    with pytest.raises(SystemExit, match="--peer nanobot"):
        select(["peer"])
