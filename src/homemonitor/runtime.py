"""What the worker and the API share at run time: readiness, backoff, and transient errors.

Both the ingest worker and the HTTP API import these; neither imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random

import asyncpg

from homemonitor.storage.database import StorageMode

#: Database errors after which the same batch may well commit: wait and retry.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left mid-operation by a cancelled call
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.TooManyConnectionsError,
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


class Backoff:
    """Capped exponential backoff with jitter (half fixed, half random)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.attempt = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2.0**self.attempt)
        self.attempt += 1
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempt = 0


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
