"""Every model call's charge, recorded: the proxy's ``on_usage``."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..door.budget import Charge
from ..errors import StoreError
from ..obs.logging import get_logger
from ..obs.metrics import Metrics
from ..store import Store


class UsageRecorder:
    """Records a charge whatever became of the call; past 80% of a day's budget the chat of
    the task at hand is told, once (``notice``: the ``Board``'s)."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        notice: Callable[[str, str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.notice = notice
        self.clock = clock
        self.log = get_logger()

    async def __call__(self, charge: Charge) -> None:
        agent_id = charge.agent_id
        if charge.warn is not None:  # first: the task's reply may be committed any moment
            self.log.warning("budget_warning", agentId=agent_id, warning=charge.warn)
            self.notice(agent_id, charge.warn)
        try:
            await self.store.record_usage(
                agent_id,
                charge.model,
                charge.input_tokens,
                charge.output_tokens,
                self.clock(),
                charge.usd,
                charge.estimated,
            )
        except StoreError as exc:  # the call happened; losing its accounting must not fail it
            self.log.error("store_unwritable", what="usage", error=str(exc))
        self.metrics.tokens.labels(agent_id, "input").inc(charge.input_tokens)
        self.metrics.tokens.labels(agent_id, "output").inc(charge.output_tokens)
        self.metrics.cost.labels(agent_id).inc(charge.usd)
