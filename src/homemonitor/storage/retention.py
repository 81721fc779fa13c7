"""Retention of what is not a reading: quarantine, the access log, finished one-off jobs.

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

#: Per table: the statement deleting one chunk older than a cut-off ($1 now, $2 the
#: retention, $3 the chunk size); each uses an index on its time column.
_DELETE: Mapping[str, str] = {
    "quarantine": """
        DELETE FROM quarantine WHERE id IN (
            SELECT id FROM quarantine WHERE received_at < $1::timestamptz - $2::text::interval
            ORDER BY received_at LIMIT $3)
    """,
    "access_log": f"""
        DELETE FROM access_log WHERE id IN (
            SELECT id FROM access_log
            WHERE at < least($1::timestamptz - $2::text::interval,
                             $1::timestamptz - interval '{ACCESS_LOG_FLOOR}')
            ORDER BY at LIMIT $3)
    """,
    "scheduled_jobs": """
        DELETE FROM scheduled_jobs WHERE id IN (
            SELECT id FROM scheduled_jobs
            WHERE status = 'done' AND last_run_at < $1::timestamptz - $2::text::interval
            ORDER BY last_run_at LIMIT $3)
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
    :data:`DONE_JOBS_KEPT` unless given.
    """
    periods = {"scheduled_jobs": DONE_JOBS_KEPT, **retention}
    deleted: dict[str, int] = {}
    more = False
    for table, sql in _DELETE.items():
        period = periods.get(table)
        if period is None:
            continue
        deleted[table] = 0
        for _ in range(max_chunks):
            async with pool.acquire(timeout=10) as conn:
                status = await conn.execute(sql, now, period, chunk)
            n = int(status.split()[-1])
            deleted[table] += n
            if n < chunk:
                break
        else:
            more = True
    return Purged(deleted, more)
