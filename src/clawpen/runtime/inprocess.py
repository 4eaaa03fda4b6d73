"""Agents as threads of this process: the same agent code, no container.

For unit tests and for the benchmark's cost-of-isolation baseline. It isolates nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from clawpen_agent.__main__ import serve
from clawpen_agent.protocol import SOCKET_NAME

from .base import AgentSpec, RuntimeEvent


class InProcessRuntime:
    def __init__(self, workspace_root: Path | None = None) -> None:
        self.workspace_root = workspace_root or Path(tempfile.mkdtemp(prefix="clawpen-ws-"))
        self.threads: dict[str, threading.Thread] = {}
        self.stopping: set[str] = set()

    async def start(self, spec: AgentSpec) -> str:
        thread = self.threads.get(spec.agent_id)
        if thread is None or not thread.is_alive():
            workspace = self.workspace_root / spec.agent_id
            workspace.mkdir(parents=True, exist_ok=True)
            self.stopping.discard(spec.agent_id)
            agent_id = spec.agent_id
            thread = threading.Thread(
                target=serve,
                args=(
                    str(spec.socket_dir / SOCKET_NAME),
                    str(workspace),
                    lambda: agent_id in self.stopping,
                    spec.lanes,
                ),
                name=f"agent-{spec.agent_id}",
                daemon=True,
            )
            thread.start()
            self.threads[spec.agent_id] = thread
        return f"thread-{thread.ident}"

    async def stop(self, agent_id: str) -> None:
        # A thread cannot be killed: it stops at its next request, which fails once the
        # orchestrator closes the agent's socket.
        self.stopping.add(agent_id)
        self.threads.pop(agent_id, None)

    async def reset_workspace(self, agent_id: str) -> None:
        """Empty the agent's workspace directory."""
        await asyncio.to_thread(shutil.rmtree, self.workspace_root / agent_id, True)

    async def running(self) -> dict[str, str]:
        return {a: f"thread-{t.ident}" for a, t in self.threads.items() if t.is_alive()}

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        await asyncio.Event().wait()  # threads do not crash the way containers do
        yield RuntimeEvent("exit", "", "")  # never reached

    async def close(self) -> None:
        self.stopping.update(self.threads)
        await asyncio.sleep(0)
