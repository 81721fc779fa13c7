"""Retention of what is not a reading: quarantine, the access log, finished one-off jobs,
delivered notifications.

Readings are TimescaleDB's retention policy's (``migrations/timescaledb/``); these tables
are deleted from here, by the scheduler's ``retention`` job, with plain ``DELETE``s that
work the same in both storage modes. Each chunk of at most ``chunk`` rows, oldest
first, is its own short transaction (bounded locks and WAL, nothing held between
chunks); one run deletes at most ``max_chunks`` chunks per table and says when more are
left, so a first run over years of backlog is many short runs, not one long one.

Cut-offs are calendar intervals on the scheduler's clock (``now - '5 years'::interval``),
which keep a row at least as long as :func:`homemonitor.settings.parse_retention`'s
shortest reading of the setting. The access log is never cut younger than five calendar
years, whatever the setting (HSLF-FS 2016:40 4 kap. 9 §; the setting is checked too).

The outbox loses its delivered and skipped rows a retention after they were done; the
``notified`` events that recorded their attempts stay: they are the alert's history (a
clinician reads it with the alert, an incident review asks what reached whom, and when),
kept with the alert like all its events, and small. Nothing here deletes from
``alert_events``. Dead letters and rows still pending are never deleted here: a dead
letter waits for a person (replay, or a decision to delete it by hand,
docs/notifications.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

import asyncpg

from homemonitor.settings import ACCESS_LOG_FLOOR

#: Rows per DELETE, and DELETEs per table and run.
CHUNK = 5000
MAX_CHUNKS = 20
#: Finished one-off jobs are kept this long (dead ones stay for a person to look at).
DONE_JOBS_KEPT = "30 days"

#: Per retention: the statement deleting one chunk older than a cut-off ($1 now, $2 the
#: retention, $3 the chunk size), answering one row: the count deleted (a chunk that
#: deleted fewer than $3 was the last).
#: Each finds its chunk through an index: the time column's, or the outbox's primary key
#: (ids grow with time, and a row is done after it was made).
_DELETE: Mapping[str, str] = {
    "quarantine": """
        WITH gone AS (DELETE FROM quarantine WHERE id IN (
            SELECT id FROM quarantine WHERE received_at < $1::timestamptz - $2::text::interval
            ORDER BY received_at LIMIT $3) RETURNING 1)
        SELECT count(*) AS quarantine FROM gone
    """,
    "access_log": f"""
        WITH gone AS (DELETE FROM access_log WHERE id IN (
            SELECT id FROM access_log
            WHERE at < least($1::timestamptz - $2::text::interval,
                             $1::timestamptz - interval '{ACCESS_LOG_FLOOR}')
            ORDER BY at LIMIT $3) RETURNING 1)
        SELECT count(*) AS access_log FROM gone
    """,
    "scheduled_jobs": """
        WITH gone AS (DELETE FROM scheduled_jobs WHERE id IN (
            SELECT id FROM scheduled_jobs
            WHERE status = 'done' AND last_run_at < $1::timestamptz - $2::text::interval
            ORDER BY last_run_at LIMIT $3) RETURNING 1)
        SELECT count(*) AS scheduled_jobs FROM gone
    """,
    # A skipped row's time is its last_error_at (the reason it was skipped).
    "outbox": """
        WITH gone AS (DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox WHERE status IN ('delivered', 'skipped')
              AND coalesce(delivered_at, last_error_at, created_at)
                  < $1::timestamptz - $2::text::interval
            ORDER BY id LIMIT $3) RETURNING 1)
        SELECT count(*) AS outbox FROM gone
    """,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Purged:
    """Rows deleted per table, and whether any table has more past its cut-off."""

    deleted: dict[str, int]
    more: bool


async def purge(
    pool: asyncpg.Pool,
    now: datetime,
    retention: Mapping[str, str],
    *,
    chunk: int = CHUNK,
    max_chunks: int = MAX_CHUNKS,
) -> Purged:
    """Delete rows older than ``retention[table]`` (PostgreSQL interval text) before ``now``.

    Tables not in ``retention`` are left alone; ``scheduled_jobs`` uses
    :data:`DONE_JOBS_KEPT` unless given. ``outbox`` keeps the ``notified`` events of the
    rows it deletes (the alert's history).
    """
    periods = {"scheduled_jobs": DONE_JOBS_KEPT, **retention}
    deleted: dict[str, int] = {}
    more = False
    for table, sql in _DELETE.items():
        period = periods.get(table)
        if period is None:
            continue
        for _ in range(max_chunks):
            async with pool.acquire(timeout=10) as conn:
                counts = await conn.fetchrow(sql, now, period, chunk)
            assert counts is not None
            for name, n in counts.items():
                deleted[name] = deleted.get(name, 0) + n
            if counts[0] < chunk:
                break
        else:
            more = True
    return Purged(deleted, more)
