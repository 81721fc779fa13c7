"""Where an alert changes state because a clinician acts, or the scheduler does on their behalf.

One function per transition: a clinician :func:`acknowledge`\\ s, :func:`comment`\\ s,
:func:`assign`\\ s, :func:`snooze`\\ s and :func:`resolve`\\ s (the API); the scheduler
:func:`escalate`\\ s an alert nobody acknowledged and :func:`end_snooze`\\ s a snooze at its
time (:mod:`homemonitor.alerts.escalation`). Each writes its ``alert_events`` row: actor
``clinician`` with who, or actor ``scheduler``.

Each takes the alert's row as the caller read it: the caller holds the patient's episode
lock (:func:`homemonitor.alerts.episodes.lock_patients`, so the worker never evaluates
against a state a clinician is changing) and the row's lock (``SELECT ... FOR UPDATE``, so
of two clinicians acting at once one wins), and has refused an alert that has ended.
``returning`` names the columns of the row handed back (the caller's view of an alert).
A transition that is not allowed raises :class:`RefusedError`, saying why.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from homemonitor.alerts import rows
from homemonitor.alerts.routing import Route
from homemonitor.errors import HomemonitorError
from homemonitor.rules import episodes as engine
from homemonitor.scheduler import schedule
from homemonitor.storage.database import Conn

#: The statuses in which an episode is active: at most one per patient and rule.
ACTIVE = ("pending", "open", "acknowledged", "cleared")
#: The statuses a clinician is asked to act on (``pending`` waits for a retake first).
ACTIONABLE = ("open", "acknowledged", "cleared")
#: The longest snooze (issue #11: bounded), and the scheduler's job that ends one.
MAX_SNOOZE = timedelta(hours=24)
SNOOZE_END_JOB = "alerts.snooze_end"

_EVENT = (
    "INSERT INTO alert_events (alert_id, kind, actor, clinician_id, details) "
    "VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id"
)


#: Why an action was refused: ``resolved`` and ``ended`` (the alert has ended), ``urgent``
#: (an urgent alert is not snoozed), ``status`` (not in a state that allows it), ``length``
#: (a snooze out of bounds), ``team`` (the assignee is not of its care team).
Refusal = Literal["resolved", "ended", "urgent", "status", "length", "team"]


class RefusedError(HomemonitorError):
    """A clinician's action that the alert's state or the care team does not allow.

    ``reason`` names the refusal for a reader's words (the web app's); the message says it
    in English (the API's 409 detail).
    """

    def __init__(self, message: str, reason: Refusal) -> None:
        super().__init__(message)
        self.reason: Refusal = reason


async def _event(
    conn: Conn, alert_id: int, kind: str, clinician_id: str | None, details: dict[str, Any]
) -> int:
    """The event row (actor: the clinician, or the scheduler when there is none); its id."""
    actor = "scheduler" if clinician_id is None else "clinician"
    event_id: int = await conn.fetchval(
        _EVENT, alert_id, kind, actor, clinician_id, json.dumps(details)
    )
    return event_id


async def acknowledge(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, *, returning: str
) -> asyncpg.Record:
    """Open → acknowledged by ``clinician_id``; a cleared one is marked seen and stays cleared.

    An acknowledged alert, one already seen, or one still pending stays as it was. Its
    escalation stops (the scheduled step finds it acknowledged).
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
    await _event(conn, alert["id"], "acknowledged", clinician_id, {})
    return row


async def comment(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, text: str, *, returning: str
) -> asyncpg.Record:
    """A clinician's note on the alert, in its history; the alert's state is unchanged."""
    row = await _one(
        conn,
        f"UPDATE alerts SET updated_at = clock_timestamp() WHERE id = $1 RETURNING {returning}",
        alert["id"],
    )
    await _event(conn, alert["id"], "commented", clinician_id, {"text": text})
    return row


async def assign(
    conn: Conn, alert: asyncpg.Record, clinician_id: str, assignee: str, *, returning: str
) -> asyncpg.Record:
    """The alert is ``assignee``'s from now: a clinician of its care team or of the
    out-of-hours team it was routed to. The event's "to" addresses the assignee."""
    found = await conn.fetchrow(
        "SELECT c.care_team_id, p.care_contact_id FROM clinicians c, patients p "
        "WHERE c.id = $1 AND c.role <> 'ops' AND p.id = $2",
        assignee,
        alert["patient_id"],
    )
    teams = (alert["care_team_id"], alert["routed_to"])
    if found is None or found["care_team_id"] not in teams:
        msg = f"{assignee} is not a clinician of the alert's care team"
        raise RefusedError(msg, "team")
    if found["care_team_id"] != alert["care_team_id"]:
        route = Route("out_of_hours", found["care_team_id"], (assignee,))
    elif assignee == found["care_contact_id"]:
        route = Route("care_contact", found["care_team_id"], (assignee,))
    else:
        route = Route("team", found["care_team_id"], (assignee,))
    row = await _one(
        conn,
        "UPDATE alerts SET assigned_to = $2, updated_at = clock_timestamp() "
        f"WHERE id = $1 RETURNING {returning}",
        alert["id"],
        assignee,
    )
    details = {"from": alert["assigned_to"], "to": route.to()}
    await _event(conn, alert["id"], "assigned", clinician_id, details)
    return row


async def snooze(
    conn: Conn,
    alert: asyncpg.Record,
    clinician_id: str,
    minutes: int,
    reason: str,
    *,
    returning: str,
) -> asyncpg.Record:
    """Not now: escalation waits ``minutes`` (at most :data:`MAX_SNOOZE`), with a reason.

    An urgent alert cannot be snoozed, only acknowledged; a pending one has nobody to
    wait for yet. The snooze ends by itself at its time (the scheduler's
    :data:`SNOOZE_END_JOB`, an event), or when the alert becomes urgent.
    """
    if alert["severity"] == "urgent":
        msg = "an urgent alert cannot be snoozed: acknowledge it instead"
        raise RefusedError(msg, "urgent")
    if alert["status"] not in ACTIONABLE:
        msg = f"a {alert['status']} alert cannot be snoozed"
        raise RefusedError(msg, "status")
    if not 0 < minutes <= MAX_SNOOZE.total_seconds() // 60:
        msg = f"a snooze lasts 1 to {MAX_SNOOZE.total_seconds() // 60:.0f} minutes"
        raise RefusedError(msg, "length")
    row = await _one(
        conn,
        "UPDATE alerts SET snoozed_until = clock_timestamp() + make_interval(mins => $2), "
        f"updated_at = clock_timestamp() WHERE id = $1 RETURNING snoozed_until, {returning}",
        alert["id"],
        minutes,
    )
    until: datetime = row["snoozed_until"]
    details = {"until": until.isoformat(), "minutes": minutes, "reason": reason}
    event_id = await _event(conn, alert["id"], "snoozed", clinician_id, details)
    await schedule(
        conn,
        SNOOZE_END_JOB,
        until,
        key=f"alert:{alert['id']}:snooze:{event_id}",
        payload={"alert_id": alert["id"], "until": until.isoformat()},
    )
    return row


async def end_snooze(conn: Conn, alert: asyncpg.Record, until: datetime, now: datetime) -> bool:
    """The scheduler ends a snooze at its time; False if it had been replaced or ended.

    ``alert`` is the locked row (``snoozed_until``, ``status``).
    """
    if alert["status"] not in ACTIVE or alert["snoozed_until"] != until:
        return False
    await conn.execute("UPDATE alerts SET snoozed_until = NULL WHERE id = $1", alert["id"])
    details = {"until": until.isoformat(), "reason": "expired", "decided_at": now.isoformat()}
    await _event(conn, alert["id"], "snooze_ended", None, details)
    return True


async def escalate(
    conn: Conn, alert: asyncpg.Record, route: Route, *, chain: int, step: int, now: datetime
) -> None:
    """The scheduler addresses the next level of an alert nobody acknowledged in time.

    Out of hours, the team it was routed to sees it from now on (``routed_to``).
    """
    await conn.execute(
        "UPDATE alerts SET escalation_level = $2, updated_at = clock_timestamp(), "
        "routed_to = CASE WHEN $2 = 'out_of_hours' THEN $3 ELSE routed_to END WHERE id = $1",
        alert["id"],
        route.level,
        route.team,
    )
    details = {
        "to": route.to(),
        "from": alert["escalation_level"],
        "severity": alert["severity"],
        "chain": chain,
        "step": step,
        "decided_at": now.isoformat(),
    }
    await _event(conn, alert["id"], "escalated", None, details)


async def resolve(
    conn: Conn,
    alert: asyncpg.Record,
    clinician_id: str,
    note: str,
    *,
    actionable: bool | None = None,
    returning: str,
) -> asyncpg.Record:
    """Any active status → resolved by ``clinician_id``, with what was done and whether
    the alert led to an action (``actionable``: the follow-up counts it; None: not said).

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
        "resolved_by = $2, resolution_note = $3, updated_at = $4, actionable = $6, "
        f"state = state || $5::jsonb WHERE id = $1 RETURNING {returning}",
        alert["id"],
        clinician_id,
        note,
        at,
        json.dumps(rows.resolution_part(remembered)),
        actionable,
    )
    details = {"from": alert["status"], "severity": alert["severity"], "actionable": actionable}
    await _event(conn, alert["id"], "resolved", clinician_id, details)
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
