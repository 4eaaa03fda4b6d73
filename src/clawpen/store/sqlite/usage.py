"""Agents and what they spend: each agent's container state, and the tokens and dollars of
every model call (what budgets are checked against, and ``clawpen usage`` and the dashboard
show per day)."""

from __future__ import annotations

import sqlite3

from ..base import UsageRow
from .connection import Connection
from .rows import fields


class Usage(Connection):
    """Agents' state and spending."""

    async def set_agent_state(
        self, agent_id: str, state: str, container_id: str | None, now: float
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO agents (id, container_id, state, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET container_id=excluded.container_id,"
                " state=excluded.state, updated_at=excluded.updated_at",
                (agent_id, container_id, state, now),
            )
        )

    async def record_usage(
        self,
        agent_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        now: float,
        usd: float = 0.0,
        estimated: bool = False,
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage (agent_id, model, input_tokens, output_tokens, at, cost_usd,"
                " estimated) VALUES (?,?,?,?,?,?,?)",
                (agent_id, model, input_tokens, output_tokens, now, usd, int(estimated)),
            )
        )

    async def tokens_used_since(self, agent_id: str, since: float) -> int:
        return (await self.spent_since(agent_id, since))[0]

    async def spent_since(self, agent_id: str, since: float) -> tuple[int, float]:
        def spent(db: sqlite3.Connection) -> tuple[int, float]:
            row = db.execute(
                "SELECT COALESCE(SUM(input_tokens + output_tokens), 0), COALESCE(SUM(cost_usd), 0)"
                " FROM usage WHERE agent_id=? AND at>=?",
                (agent_id, since),
            ).fetchone()
            return int(row[0]), float(row[1])

        return await self._read(spent)

    async def usage_by_day(self, since: float, agent_id: str | None = None) -> list[UsageRow]:
        return await self._read_all(
            "SELECT date(at, 'unixepoch') AS day, agent_id, model, COUNT(*),"
            " SUM(input_tokens), SUM(output_tokens), SUM(cost_usd), SUM(estimated)"
            " FROM usage WHERE at>=? AND (? IS NULL OR agent_id=?)"
            " GROUP BY day, agent_id, model ORDER BY day, agent_id, model",
            (since, agent_id, agent_id),
            fields(UsageRow),
        )
