"""Where an alert changes state because a clinician acts: acknowledge or resolve it.

Each takes the alert's row as the caller read it: the caller holds the patient's episode
lock (:func:`homemonitor.alerts.episodes.lock_patients`, so the worker never evaluates
against a state a clinician is changing) and the row's lock (``SELECT ... FOR UPDATE``, so
of two clinicians acting at once one wins), and has refused an alert that has ended.
``returning`` names the columns of the row handed back (the caller's view of an alert).
Every change writes its ``alert_events`` row (actor ``clinician``).
"""

import json

import asyncpg

from homemonitor.alerts import rows
from homemonitor.rules import episodes as engine
from homemonitor.storage.database import Conn

#: The statuses in which an episode is active: at most one per patient and rule.
ACTIVE = ("pending", "open", "acknowledged", "cleared")
#: The statuses a clinician is asked to act on (``pending`` waits for a retake first).
ACTIONABLE = ("open", "acknowledged", "cleared")

_EVENT = (
    "INSERT INTO alert_events (alert_id, kind, actor, clinician_id, details) "
    "VALUES ($1, $2, 'clinician', $3, $4::jsonb)"
)


async def acknowledge(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, *, returning: str
) -> asyncpg.Record:
    """Open → acknowledged by ``clinician_id``; a cleared one is marked seen and stays cleared.

    An acknowledged alert, one already seen, or one still pending stays as it was.
    """
    if alert["status"] not in ("open", "cleared") or alert["acknowledged_at"] is not None:
        return alert
    row = await _one(
        conn,
        "UPDATE alerts SET status = CASE WHEN status = 'open' THEN 'acknowledged' "
        "ELSE status END, acknowledged_at = clock_timestamp(), acknowledged_by = $2, "
        f"updated_at = clock_timestamp() WHERE id = $1 RETURNING {returning}",
        alert["id"],
        clinician_id,
    )
    await conn.execute(_EVENT, alert["id"], "acknowledged", clinician_id, "{}")
    return row


async def resolve(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, note: str, *, returning: str
) -> asyncpg.Record:
    """Any active status → resolved by ``clinician_id``, with what was done.

    The row's ``state`` keeps what the engine remembers of a resolution
    (:func:`homemonitor.rules.episodes.resolve`: its peak, worst measure, when, whether its
    rule had already cleared), so the same rule re-alerts only as the plan allows.
    """
    before = await _one(conn, f"SELECT {rows.STATE_COLUMNS} FROM alerts WHERE id = $1", alert["id"])
    at = await conn.fetchval("SELECT clock_timestamp()")
    remembered = engine.resolve(rows.state_of(dict(before), None), at)
    row = await _one(
        conn,
        "UPDATE alerts SET status = 'resolved', resolved_at = $4, "
        "resolved_by = $2, resolution_note = $3, updated_at = $4, "
        f"state = state || $5::jsonb WHERE id = $1 RETURNING {returning}",
        alert["id"],
        clinician_id,
        note,
        at,
        json.dumps(rows.resolution_part(remembered)),
    )
    details = json.dumps({"from": alert["status"], "severity": alert["severity"]})
    await conn.execute(_EVENT, alert["id"], "resolved", clinician_id, details)
    return row


async def count_open(db: asyncpg.Pool | Conn) -> dict[str, int]:
    """Alerts a clinician is asked to act on, by severity (a severity with none is absent)."""
    rows = await db.fetch(
        "SELECT severity, count(*) AS n FROM alerts "
        "WHERE status IN ('open', 'acknowledged', 'cleared') GROUP BY severity"
    )
    return {r["severity"]: r["n"] for r in rows}


async def _one(conn: Conn, sql: str, *args: object) -> asyncpg.Record:
    """The row an UPDATE ... RETURNING of a row this transaction holds must return."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # read and locked in this transaction
    return row
