"""Human-readable renderings of what the admin socket returns (the JSON stays for scripts)."""

from __future__ import annotations

from typing import Any


def render_status(status: dict[str, Any]) -> str:
    """``clawpen status`` on a terminal: one short section per concern."""
    lines = ["agents:"]
    spend = status.get("spend_today_usd", {})
    for agent_id, agent in sorted(status.get("agents", {}).items()):
        container = agent.get("container")
        state = "running" if container else "stopped"
        if agent.get("paused"):
            state = "paused"  # frozen while idle: its next message thaws it
        elif container and not agent.get("connected"):
            state = "starting"
        cost = f"  spend today ${spend.get(agent_id, 0.0):.2f}"
        lines.append(f"  {agent_id:<16} {state:<9} {(container or '-')[:12]:<12}{cost}")
    lines.append("channels:")
    for name, channel in status.get("channels", {}).items():
        health = channel["state"]
        sending = channel.get("sending", {})
        if sending.get("state") not in (None, "closed"):
            health += f", sending paused ({sending['state']})"
        if channel.get("error"):
            health += f": {channel['error']}"
        if channel.get("undelivered_24h"):
            health += f"; {channel['undelivered_24h']} undelivered in 24 h"
        lines.append(f"  {name:<16} {health}")
    counts = status.get("counts", {})
    queued = counts.get("messages.queued", 0)
    lines.append(
        f"queues: {queued} message(s) waiting, {counts.get('tasks.running', 0)} task(s) running,"
        f" {counts.get('replies.pending', 0)} reply(ies) to send"
    )
    lines.append(
        f"totals: {counts.get('messages.answered', 0)} answered,"
        f" {counts.get('tasks.failed', 0)} task(s) failed,"
        f" {counts.get('tasks.refused', 0)} refused, {counts.get('strangers', 0)} from strangers"
    )
    jobs = status.get("jobs", [])
    lines.append(f"jobs: {len(jobs) or 'none'}")
    for job in jobs:
        lines.append(
            f"  {job['name']:<16} {job['agent']:<12} {job['state']:<8}"
            f" next {job['next_run'] or '-'}  last {job['last_result'] or 'never run'}"
        )
    disk = status.get("disk")
    if disk and "free_mb" in disk:
        note = "  REFUSING NEW MESSAGES" if disk["refusing_new_work"] else ""
        lines.append(f"disk: {disk['free_mb']} MB free of {disk['total_mb']} MB{note}")
    return "\n".join(lines)


def render_pairings(paired: dict[str, str], codes: list[dict[str, Any]], now: float) -> str:
    """``clawpen pairings``: each paired chat and its agent, the codes waiting for approval,
    and a line that says so when there are none (an empty answer looks like a failure)."""
    lines = [f"{chat}\t{agent}" for chat, agent in paired.items()]
    if not paired:
        lines.append(
            "no chat is paired: pair one with clawpen pair CHAT AGENT"
            " (clawpen pairings --pending lists who wrote)"
        )
    for code in codes:
        minutes = max(0, round((code["expires_at"] - now) / 60))
        lines.append(f"{code['chat']}\t(waiting for approval; its code expires in {minutes} min)")
    return "\n".join(lines)


def render_strangers(chats: list[dict[str, Any]], agent: str, now: float) -> str:
    """``clawpen pairings --pending``: who wrote from an unpaired chat, and how to pair it."""
    if not chats:
        return "no unpaired chat has written in the last week"
    lines = []
    for chat in chats:
        ago = _ago(now - chat["last_seen"])
        senders = f", {chat['senders']} senders" if chat["senders"] > 1 else ""
        lines.append(
            f"{chat['chat']}\t{chat['messages']} message(s) from {chat['last_sender']}{senders},"
            f" last {ago} ago\tpair it: clawpen pair {chat['chat']} {agent}"
        )
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 129_600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86_400)} days"
