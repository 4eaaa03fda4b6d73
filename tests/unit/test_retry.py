"""One retry policy for the host side: a table of delays, and a loop that retries only what
may pass."""

from __future__ import annotations

import pytest

from clawpen.errors import StoreRejected, StoreUnavailable
from clawpen.retry import PLATFORM, STORE, Backoff, Retrier, until_done


@pytest.mark.parametrize(
    ("attempt", "retry_after", "rand", "expected"),
    [
        pytest.param(0, None, 1.0, 0.5, id="first_retry_at_most_half_a_second"),
        pytest.param(1, None, 1.0, 1.0, id="doubles"),
        pytest.param(3, None, 1.0, 4.0, id="exponential"),
        pytest.param(6, None, 1.0, 32.0, id="below_cap"),
        pytest.param(7, None, 1.0, 60.0, id="capped_at_a_minute"),
        pytest.param(100, None, 1.0, 60.0, id="stays_capped"),
        pytest.param(3, None, 0.0, 0.0, id="full_jitter_low_end"),
        pytest.param(3, None, 0.25, 1.0, id="full_jitter_scales_the_cap"),
        pytest.param(0, 3.0, 0.5, 3.0, id="retry_after_honoured"),
        pytest.param(7, 0.0, 1.0, 0.0, id="retry_after_zero_honoured"),
        pytest.param(0, 300.0, 1.0, 300.0, id="platform_wait_beyond_cap_honoured"),
        pytest.param(0, -5.0, 1.0, 0.0, id="negative_wait_is_no_wait"),
    ],
)
def test_platform_backoff_table(
    attempt: int, retry_after: float | None, rand: float, expected: float
) -> None:
    assert PLATFORM.delay(attempt, retry_after, rand) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [0, 2, 5, 10])
def test_jittered_delays_spread_within_the_cap(attempt: int) -> None:
    cap = min(60.0, 0.5 * 2**attempt)
    delays = [PLATFORM.delay(attempt) for _ in range(200)]
    assert all(0 <= d <= cap for d in delays)
    assert len(set(delays)) > 1  # retries of many replies do not line up


def test_store_retries_are_steady_not_random() -> None:
    assert [STORE.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_retrier_counts_failures_in_a_row_until_reset() -> None:
    retrier = Retrier(Backoff(base=1, cap=100, jitter=False))
    assert [retrier.next_delay() for _ in range(4)] == [1, 2, 4, 8]
    retrier.reset()
    assert retrier.next_delay() == 1
    assert retrier.next_delay(retry_after=9) == 9


async def test_until_done_retries_what_may_pass_and_raises_what_will_not() -> None:
    calls: list[int] = []
    fast = Backoff(base=0.001, jitter=False)

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("disk full")
        return "written"

    seen: list[float] = []
    assert await until_done(flaky, StoreUnavailable, fast, lambda e, d: seen.append(d)) == (
        "written"
    )
    assert (len(calls), seen) == (3, [0.001, 0.002])

    async def hopeless() -> str:
        raise StoreRejected("bad data")

    with pytest.raises(StoreRejected):
        await until_done(hopeless, StoreUnavailable, fast)
