"""What the worker and the API share at run time: readiness, backoff, and transient errors.

Both the ingest worker and the HTTP API import these; neither imports the other. The
reference gateway (``homemonitor_devices.gateway``) reconnects with the same
:class:`Backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random

import asyncpg

from homemonitor.storage.database import StorageMode

#: Database errors after which the same batch may well commit: wait and retry.
#:
#: A failover brings several: the old primary's connections drop (connection errors),
#: it may refuse new ones while it shuts down (57P01, 57P03), no listed host takes writes
#: until the standby is promoted (``TargetServerAttributeNotMatched``), and a demoted
#: primary that still answers refuses every write (25006, read-only transaction). The
#: last is the server's state, not the batch's: treated as a refusal it would send the
#: batch through the one-by-one path, where a message tried on the demoted server and
#: its quarantine row on the new primary would quarantine a good reading.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a cancelled call's connection; no host matching the target
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
)


@dataclasses.dataclass
class Health:
    """What ``/ready`` reports."""

    storage_mode: StorageMode | None = None
    broker_connected: bool = False
    database_ok: bool = False
    registry_loaded: bool = False

    @property
    def ready(self) -> bool:
        return (
            self.storage_mode is not None
            and self.broker_connected
            and self.database_ok
            and self.registry_loaded
        )


@dataclasses.dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with equal jitter: half of each delay fixed, half random.

    :meth:`delay` is the wait before retry ``attempt`` (0 for the first); :meth:`next` and
    :meth:`reset` count the attempts for a loop that does not. ``rng`` draws the jitter:
    a seeded :class:`random.Random` makes the delays repeatable (the reference gateway's
    simulation); without one, the :mod:`random` module's.

    >>> backoff = Backoff(1.0, 4.0, rng=random.Random(7))
    >>> [round(backoff.next(), 2) for _ in range(4)]
    [0.66, 1.15, 3.3, 2.14]
    >>> all(2.0 <= backoff.delay(n) <= 4.0 for n in (2, 3, 1000))
    True
    """

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    rng: random.Random | None = dataclasses.field(default=None, repr=False, compare=False)
    attempt: int = dataclasses.field(default=0, init=False, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0 for the first); does not count it."""
        ceiling = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        uniform = self.rng.uniform if self.rng is not None else random.uniform
        return ceiling / 2 + uniform(0.0, ceiling / 2)

    def next(self) -> float:
        """The delay before the next retry, counted."""
        delay = self.delay(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self.attempt = 0


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
