"""Token buckets: sends, strangers and log lines happen at most so often."""

from __future__ import annotations

import pytest

from clawpen.ratelimit import KeyedBuckets, TokenBucket


@pytest.mark.parametrize(
    ("rate", "burst", "times", "waits"),
    [
        pytest.param(1.0, 2, [0, 0, 0, 0], [0, 0, 1, 2], id="burst_then_queue_in_order"),
        pytest.param(1.0, 2, [0, 0, 5, 5, 5], [0, 0, 0, 0, 1], id="refills_up_to_the_burst"),
        pytest.param(2.0, 1, [0, 0.25, 0.5], [0, 0.25, 0.5], id="half_refilled_waits_half"),
        pytest.param(0.0, 1, [0, 0, 0], [0, 0, 0], id="rate_zero_is_no_limit"),
    ],
)
def test_reserve_table(rate: float, burst: int, times: list[float], waits: list[float]) -> None:
    bucket = TokenBucket(rate, burst)
    assert [bucket.reserve(t) for t in times] == pytest.approx(waits)


def test_allow_never_goes_into_debt() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, False, False]
    assert bucket.allow(1.0) and not bucket.allow(1.0)


def test_keyed_buckets_are_separate_and_bounded() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=0.001, burst=1, max_keys=3)
    assert buckets.allow("a", 0) and buckets.allow("b", 0)
    assert not buckets.allow("a", 0)  # a's own allowance is spent, b's is not shared
    for key in "cdef":
        buckets.allow(key, 0)
    assert len(buckets) == 3  # a flood of new chats costs bounded memory
    assert buckets.allow("a", 0)  # a was forgotten: it starts afresh
