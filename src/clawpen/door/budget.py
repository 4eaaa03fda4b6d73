"""Daily spending per agent: reserved before a call, settled after it.

Each agent has a ledger for the current UTC day: what it spent (loaded once from the store,
then kept here) and what its calls in flight have reserved. A call reserves its input estimate
plus its ``max_tokens`` (and their price) *before* it goes upstream; the check and the
reservation happen in one step of the event loop, so forty parallel calls see each other's
reservations and cannot overspend together. If what is left does not cover the requested
``max_tokens``, the call gets a smaller one; if it does not cover a useful answer, it is
refused. After the call the reservation is replaced by the real usage (or kept, when the usage
is unknown). The first time a day's spending crosses 80% of a limit, ``settle`` says so.

Ledger state per agent: loaded (day) -> reserve/settle ... -> next day: loaded again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

WARN_AT = 0.8
MIN_ANSWER_TOKENS = 16  # below this a clamped call is not worth making: refuse it instead


@dataclass(frozen=True)
class Limits:
    tokens: int | None = None  # a day's input + output tokens
    usd: float | None = None
    price_in: float = 0.0  # USD per million tokens
    price_out: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_in + output_tokens * self.price_out) / 1e6


@dataclass(frozen=True)
class Reservation:
    agent_id: str
    model: str
    day: str
    input_tokens: int  # the estimate
    max_tokens: int  # what the call may produce: the clamp applied
    limits: Limits

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.max_tokens

    @property
    def usd(self) -> float:
        return self.limits.cost(self.input_tokens, self.max_tokens)


@dataclass(frozen=True)
class Charge:
    agent_id: str
    model: str
    input_tokens: int
    output_tokens: int
    usd: float
    estimated: bool  # the usage was not known: charged at the reservation
    warn: str | None = None  # set once a day, when this charge crossed 80% of a limit


@dataclass
class _Ledger:
    day: str
    spent_tokens: int
    spent_usd: float
    reserved_tokens: int = 0
    reserved_usd: float = 0.0
    warned: bool = False


SpentLoader = Callable[[str, float], Awaitable[tuple[int, float]]]  # agent, since -> spent


async def _nothing_spent(agent_id: str, since: float) -> tuple[int, float]:
    return 0, 0.0


class Budget:
    def __init__(
        self,
        limits: Callable[[str, str], Limits] = lambda agent_id, model: Limits(),
        load: SpentLoader = _nothing_spent,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self.load = load
        self.clock = clock
        self._ledgers: dict[str, _Ledger] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def reserve(
        self, agent_id: str, model: str, input_tokens: int, max_tokens: int
    ) -> Reservation | str:
        """A reservation (its ``max_tokens`` perhaps lowered to what is left), or why not."""
        limits = self.limits(agent_id, model)
        ledger = await self._ledger(agent_id)
        allowed = max_tokens
        if limits.tokens is not None:
            allowed = min(
                allowed, limits.tokens - ledger.spent_tokens - ledger.reserved_tokens - input_tokens
            )
        if limits.usd is not None:
            left = (
                limits.usd - ledger.spent_usd - ledger.reserved_usd - limits.cost(input_tokens, 0)
            )
            if limits.price_out > 0:
                allowed = min(allowed, int(left * 1e6 / limits.price_out))
            elif left < 0:
                allowed = 0
        if allowed < min(MIN_ANSWER_TOKENS, max_tokens):
            return self._refusal(agent_id, limits, ledger, input_tokens + MIN_ANSWER_TOKENS)
        reservation = Reservation(agent_id, model, ledger.day, input_tokens, allowed, limits)
        ledger.reserved_tokens += reservation.tokens
        ledger.reserved_usd += reservation.usd
        return reservation

    def release(self, reservation: Reservation) -> None:
        """The call never reached the provider: nothing was spent."""
        self.settle(reservation, 0, 0, known=True)

    def settle(
        self, reservation: Reservation, input_tokens: int, output_tokens: int, known: bool
    ) -> Charge:
        """Replace the reservation by what the call spent; unknown usage is charged at the
        reservation (an agent that hung up mid-stream pays for what it asked for)."""
        if not known:
            input_tokens = max(input_tokens, reservation.input_tokens)
            output_tokens = max(output_tokens, reservation.max_tokens)
        limits = reservation.limits
        usd = limits.cost(input_tokens, output_tokens)
        charge = Charge(
            reservation.agent_id, reservation.model, input_tokens, output_tokens, usd, not known
        )
        ledger = self._ledgers.get(reservation.agent_id)
        if ledger is None or ledger.day != reservation.day:
            return charge  # the day turned while it ran: today's ledger reloads from the store
        ledger.reserved_tokens -= reservation.tokens
        ledger.reserved_usd -= reservation.usd
        ledger.spent_tokens += input_tokens + output_tokens
        ledger.spent_usd += usd
        if not ledger.warned and _share(ledger, limits) >= WARN_AT:
            ledger.warned = True
            return replace(charge, warn=_warning(reservation.agent_id, ledger, limits))
        return charge

    def spent(self, agent_id: str) -> tuple[int, float] | None:
        ledger = self._ledgers.get(agent_id)
        return None if ledger is None else (ledger.spent_tokens, ledger.spent_usd)

    async def _ledger(self, agent_id: str) -> _Ledger:
        now = self.clock()
        day = _day(now)
        ledger = self._ledgers.get(agent_id)
        if ledger is not None and ledger.day == day:
            return ledger
        lock = self._locks.setdefault(agent_id, asyncio.Lock())
        async with lock:
            ledger = self._ledgers.get(agent_id)
            if ledger is None or ledger.day != day:
                midnight = datetime.fromtimestamp(now, UTC).replace(
                    hour=0, minute=0, second=0, microsecond=0
                )
                tokens, usd = await self.load(agent_id, midnight.timestamp())
                ledger = self._ledgers[agent_id] = _Ledger(day, tokens, usd)
                # past 80% already (a restart): the chat was told, or is over it anyway
                ledger.warned = _share(ledger, self.limits(agent_id, "")) >= WARN_AT
        return ledger

    def _refusal(self, agent_id: str, limits: Limits, ledger: _Ledger, need: int) -> str:
        tokens_short = limits.tokens is not None and (
            limits.usd is None
            or ledger.spent_tokens + ledger.reserved_tokens + need > limits.tokens
        )
        if tokens_short:
            spent = f"{ledger.spent_tokens:,} of its {limits.tokens:,} model tokens"
            key = "daily_token_budget"
        else:
            spent = f"${ledger.spent_usd:.2f} of its ${limits.usd or 0:.2f}"
            key = "daily_usd_budget"
        flight = ledger.reserved_tokens
        busy = f" ({flight:,} more tokens held by calls in flight)" if flight else ""
        return (
            f"agent {agent_id} has used {spent} for today (UTC){busy}, too little is left for"
            f" this call; raise {key} or wait for tomorrow"
        )


def _share(ledger: _Ledger, limits: Limits) -> float:
    shares = [0.0]
    if limits.tokens:
        shares.append(ledger.spent_tokens / limits.tokens)
    if limits.usd:
        shares.append(ledger.spent_usd / limits.usd)
    return max(shares)


def _warning(agent_id: str, ledger: _Ledger, limits: Limits) -> str:
    parts = []
    if limits.tokens:
        parts.append(f"{ledger.spent_tokens:,} of {limits.tokens:,} tokens")
    if limits.usd:
        parts.append(f"${ledger.spent_usd:.2f} of ${limits.usd:.2f}")
    return (
        f"Note: {agent_id} has used {round(_share(ledger, limits) * 100)}% of today's budget"
        f" ({'; '.join(parts)}). Past it, it cannot answer until tomorrow (UTC)."
    )


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
