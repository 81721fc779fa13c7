"""The backoff the worker, the API and the reference gateway reconnect and retry with."""

from __future__ import annotations

import random

from homemonitor.runtime import Backoff


def test_equally_seeded_backoffs_wait_the_same_attempt_by_attempt() -> None:
    """A seeded generator repeats the delays, whether counted by ``next`` or by attempt."""
    counted = Backoff(0.05, 0.3, rng=random.Random("gw-1/backoff"))
    indexed = Backoff(0.05, 0.3, rng=random.Random("gw-1/backoff"))
    assert [indexed.delay(n) for n in range(12)] == [counted.next() for _ in range(12)]


def test_each_delay_is_half_fixed_half_random_under_the_cap() -> None:
    """Delay n lies in [c/2, c] for c = min(cap, initial * 2**n), however long it retries."""
    backoff = Backoff(0.5, 8)
    ceilings = {0: 0.5, 1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 8.0, 64: 8.0, 5_000: 8.0}
    outside = []
    for attempt, ceiling in ceilings.items():
        backoff.attempt = attempt  # as after that many failed retries
        delay = backoff.next()
        if not ceiling / 2 <= delay <= ceiling:
            outside.append((attempt, delay))
    assert [] == outside
