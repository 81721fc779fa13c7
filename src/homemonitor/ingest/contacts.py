"""Each gateway's last contact: when the worker last received a message on its topics.

The contract has no heartbeat, so a message (stored or quarantined) is the contact the
service knows. The missing-data job (:mod:`homemonitor.alerts.silence`) tells a silent
patient from a silent gateway by it (``gateways.last_seen_at``, migration 0015).

Off the batch path: :meth:`Contacts.note` keeps the latest contact per gateway of each
committed batch in memory (a dict, no I/O; the batch's last arrival for all its gateways),
and :meth:`Contacts.flush` writes them all in one statement, every :data:`FLUSH_EVERY` and
at shutdown. Measured in the batch
transaction instead, one row update per gateway cost the commit about a quarter of its
time when every message came from another gateway (docs/care-plans.md). A crash loses at
most one interval of contacts, which the silence job does not need to the second: it
also takes the received_at of the patient's latest stored reading as a contact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from homemonitor import logs
from homemonitor.contract.protocol import parse_topic
from homemonitor.runtime import TRANSIENT_DB_ERRORS, sleep_unless

log = logs.get_logger(__name__)

#: How often the contacts seen are written (and so how stale ``last_seen_at`` may be).
FLUSH_EVERY = 30.0

#: What a flush survives: the database away, or refusing the statement (kept for later).
_FAILURES: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError)

#: Newer contacts only; rows locked in id order, so two workers flushing never deadlock.
_FLUSH = """
UPDATE gateways AS g SET last_seen_at = c.at
FROM (SELECT t.id, t.at FROM unnest($1::text[], $2::timestamptz[]) AS t(id, at)
      JOIN gateways AS old ON old.id = t.id
      WHERE old.last_seen_at IS NULL OR old.last_seen_at < t.at
      ORDER BY t.id FOR UPDATE OF old) AS c
WHERE g.id = c.id
"""


class Contacts:
    """The latest contact per gateway since the last flush; see the module."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}

    def note(self, topics: Iterable[str], at: datetime) -> None:
        """The gateways of ``topics`` were in contact at ``at`` (a committed batch's last
        arrival: batches are noted in the order they arrived, so a later one wins)."""
        seen = self._seen
        for topic in set(topics):
            route = parse_topic(topic)  # cached per topic
            if route is not None:
                seen[route.gateway_id] = at

    async def flush(self, pool: asyncpg.Pool) -> int:
        """Write what was noted; the number of gateways. Kept for the next try on failure."""
        if not self._seen:
            return 0
        taken, self._seen = self._seen, {}
        try:
            async with pool.acquire(timeout=5) as conn:
                await conn.execute(_FLUSH, list(taken), list(taken.values()))
        except _FAILURES as exc:
            for gateway, at in taken.items():  # newer ones noted meanwhile win
                if gateway not in self._seen or at > self._seen[gateway]:
                    self._seen[gateway] = at
            log.warning("gateway contacts not written; trying again", error=type(exc).__name__)
            return 0
        return len(taken)

    async def keep_flushing(
        self, pool: asyncpg.Pool, stop: asyncio.Event, *, last_within: float = 5.0
    ) -> None:
        """Flush every :data:`FLUSH_EVERY` until ``stop``, then once more.

        The last flush gets ``last_within`` seconds: a hung database must not hold up the
        shutdown (cancelling a query needs the server), and what it loses is a few contacts.
        """
        while not await sleep_unless(stop, FLUSH_EVERY):
            await self.flush(pool)
        last = asyncio.create_task(self.flush(pool), name="contacts-last-flush")
        done, _ = await asyncio.wait({last}, timeout=last_within)
        if not done:
            last.cancel()
            log.warning("gateway contacts not written at shutdown (database slow)")
