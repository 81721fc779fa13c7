"""Simulated time: a start instant and a speed-up factor over a monotonic clock.

>>> from datetime import UTC
>>> real = iter([0.0, 60.0])  # a monotonic clock: started, then one real minute later
>>> clock = SimClock(datetime(2026, 1, 1, tzinfo=UTC), 1440.0, monotonic=lambda: next(real))
>>> clock.now()  # one simulated day later
datetime.datetime(2026, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta


class SimClock:
    """Maps real (monotonic) seconds to simulated instants.

    ``speedup`` is simulated seconds per real second; ``math.inf`` means "as fast as
    possible" (every simulated instant is already due). ``monotonic`` is injectable so
    tests can drive the clock by hand.
    """

    def __init__(
        self,
        start: datetime,
        speedup: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            msg = "start must be an aware datetime"
            raise ValueError(msg)
        if not speedup > 0:
            msg = "speedup must be positive"
            raise ValueError(msg)
        self.start = start
        self.speedup = speedup
        self._monotonic = monotonic
        self._origin = monotonic()

    def elapsed(self) -> float:
        """Real seconds since the clock started."""
        return self._monotonic() - self._origin

    def now(self) -> datetime:
        """The simulated instant now (``start`` forever when the speed-up is infinite)."""
        if math.isinf(self.speedup):
            return self.start
        return self.start + timedelta(seconds=self.elapsed() * self.speedup)

    def real_delay(self, at: datetime) -> float:
        """Real seconds from now until the simulated instant ``at`` (0 when it is due)."""
        if math.isinf(self.speedup):
            return 0.0
        due = (at - self.start).total_seconds() / self.speedup
        return max(0.0, due - self.elapsed())

    @staticmethod
    def speedup_for(simulated: timedelta, real: timedelta) -> float:
        """The speed-up that replays ``simulated`` time in ``real`` time."""
        return simulated / real
