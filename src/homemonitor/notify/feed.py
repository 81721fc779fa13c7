"""One ``LISTEN`` per process: alert changes committed anywhere wake whoever waits here.

The ``alert_events`` trigger notifies :data:`~homemonitor.notify.outbox.CHANNEL` at the
commit of every alert change (migration 0014). :class:`AlertFeed` listens on one pooled
connection and counts the wake-ups; the notifier and each live stream remember the count
they last saw and :meth:`~AlertFeed.changed` waits for a higher one. A wake-up is only a
hint: waiters read the database for what changed, and wait with a timeout, so one lost
while the connection was down costs a delay, never an event (a reconnect wakes everybody).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from homemonitor import logs
from homemonitor.notify.outbox import CHANNEL
from homemonitor.runtime import TRANSIENT_DB_ERRORS, Backoff, sleep_unless
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)


class AlertFeed:
    """Wake-ups of committed alert changes; :meth:`run` keeps the ``LISTEN`` up until stop.

    ``stopping`` is the service's stop event: live streams end when it is set.
    """

    def __init__(self, pool: asyncpg.Pool, stopping: asyncio.Event | None = None) -> None:
        self.pool = pool
        self.stopping = stopping or asyncio.Event()
        self.generation = 0
        self._changed = asyncio.Condition()

    def _bump(self, *_: Any) -> None:
        self.generation += 1

        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(wake())

    async def changed(self, seen: int, within: float) -> int:
        """Wait until a wake-up after ``seen``, ``within`` s, or stop; the generation now."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(
                    lambda: self.generation > seen or self.stopping.is_set()
                )
        return self.generation

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; reconnect with backoff when the connection drops."""
        backoff = Backoff(0.5, 15)
        while not stop.is_set():
            try:
                async with self.pool.acquire(timeout=10) as conn:
                    await self._listen(conn, stop, backoff)
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("alert feed cannot listen", error=type(exc).__name__)
            if not stop.is_set():
                await sleep_unless(stop, backoff.next())
        self.stopping.set()
        self._bump()

    async def _listen(self, conn: Conn, stop: asyncio.Event, backoff: Backoff) -> None:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def gone(_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        conn.add_termination_listener(gone)
        try:
            await conn.add_listener(CHANNEL, self._bump)
            self._bump()  # what happened while nobody listened: look again
            backoff.reset()
            stopped = asyncio.ensure_future(stop.wait())
            ended: set[asyncio.Future[Any]] = {stopped, lost}
            try:
                await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                # Also when cancelled (the service stopping): a connection released to the
                # pool with a listener still on it is refused with an InterfaceWarning.
                if not lost.done():
                    await conn.remove_listener(CHANNEL, self._bump)
        finally:
            conn.remove_termination_listener(gone)
