"""Where an alert changes state after it opened: a clinician acknowledges or resolves it.

Each takes the alert's row as the caller read it: the caller holds its lock (``SELECT ...
FOR UPDATE`` in its transaction, so of two clinicians acting at once one wins) and has
refused a resolved alert. ``returning`` names the columns of the row handed back (the
caller's view of an alert).
"""

import asyncpg

from homemonitor.storage.database import Conn


async def acknowledge(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, *, returning: str
) -> asyncpg.Record:
    """Open → acknowledged by ``clinician_id``; an acknowledged alert stays as it was."""
    if alert["status"] != "open":
        return alert
    return await _one(
        conn,
        "UPDATE alerts SET status = 'acknowledged', "
        "acknowledged_at = clock_timestamp(), "
        f"acknowledged_by = $2, updated_at = clock_timestamp() WHERE id = $1 "
        f"RETURNING {returning}",
        alert["id"],
        clinician_id,
    )


async def resolve(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, note: str, *, returning: str
) -> asyncpg.Record:
    """Open or acknowledged → resolved by ``clinician_id``, with what was done."""
    return await _one(
        conn,
        f"UPDATE alerts SET status = 'resolved', resolved_at = clock_timestamp(), "
        f"resolved_by = $2, resolution_note = $3, updated_at = clock_timestamp() "
        f"WHERE id = $1 RETURNING {returning}",
        alert["id"],
        clinician_id,
        note,
    )


async def count_open(db: asyncpg.Pool | Conn) -> dict[str, int]:
    """Alerts not yet resolved, by severity (a severity with none is absent)."""
    rows = await db.fetch(
        "SELECT severity, count(*) AS n FROM alerts WHERE status <> 'resolved' GROUP BY severity"
    )
    return {r["severity"]: r["n"] for r in rows}


async def _one(conn: Conn, sql: str, *args: object) -> asyncpg.Record:
    """The row an UPDATE ... RETURNING of a row this transaction holds must return."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # read and locked in this transaction
    return row
