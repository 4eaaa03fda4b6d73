"""``clawpen usage``: tokens and cost, read straight from the store (no orchestrator needed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from ..config import data_dir_of
from ..errors import ClawpenError
from ..store import SQLiteStore
from .common import DEFAULT_CONFIG, ConfigOption, fail, guard


def usage(
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    days: Annotated[int, typer.Option("--days", help="The last N UTC days.", min=1)] = 7,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Model tokens and cost per agent and UTC day (from the store; no orchestrator needed)."""
    database = guard(lambda: data_dir_of(config)) / "clawpen.db"
    if not database.exists():
        fail(ClawpenError(f"no usage recorded yet ({database} does not exist)"))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = (today - timedelta(days=days - 1)).timestamp()

    async def read() -> list[Any]:
        store = SQLiteStore(database)
        try:
            return await store.usage_by_day(since, agent)
        finally:
            await store.close()

    rows = guard(lambda: asyncio.run(read()))
    print("day\tagent\tmodel\tcalls\tinput\toutput\tusd")
    for row in rows:
        estimated = f" ({row.estimated} estimated)" if row.estimated else ""
        # no price under model.prices: the cost is unknown, not nothing (as /usage says)
        cost = f"{row.usd:.4f}" if row.usd or not row.input_tokens else "cost unknown"
        print(
            f"{row.day}\t{row.agent_id}\t{row.model}\t{row.calls}{estimated}\t"
            f"{row.input_tokens}\t{row.output_tokens}\t{cost}"
        )
