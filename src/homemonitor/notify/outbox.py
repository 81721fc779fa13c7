"""The outbox in SQL: claim what is due, record what happened, dead letters.

Rows are written by the ``alert_events`` trigger (migration 0014), never here. A notifier
claims due rows with ``FOR UPDATE SKIP LOCKED`` and keeps the row locks while it delivers,
in one transaction that then records each outcome (the row's status, and a ``notified``
event): a second process skips rows being delivered, and a process that dies mid-delivery
lets go of them when its connection ends, so they are delivered again, with the same
idempotency key. At least once; a receiver dedupes by the key.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from homemonitor.notify.message import Notification
from homemonitor.storage.database import Conn

#: The LISTEN channel the trigger notifies at commit of every alert change.
CHANNEL = "homemonitor_alert_events"

_CLAIM = """
SELECT o.id, o.event_id, o.channel, o.care_team_id AS team, o.attempts, c.config::text AS config,
       e.kind, e.at, e.actor, e.clinician_id, e.details::text AS details,
       a.id AS alert_id, a.patient_id, a.care_team_id, a.rule, a.kind AS alert_kind,
       a.severity, a.status, a.opening_value, a.worst_value, a.threshold,
       a.latest_explanation ->> 'sentence' AS sentence,
       CASE WHEN o.channel = 'feedback' THEN (
           SELECT r.gateway_id FROM readings AS r
           WHERE r.device_id = a.opening_device_id AND r.metric = a.opening_metric
             AND r.measured_at = a.opening_measured_at) END AS gateway_id,
       p.care_contact_id
FROM outbox AS o
JOIN alert_events AS e ON e.id = o.event_id
JOIN alerts AS a ON a.id = o.alert_id
JOIN patients AS p ON p.id = a.patient_id
LEFT JOIN notification_channels AS c
       ON c.care_team_id = o.care_team_id AND c.channel = o.channel
WHERE o.status = 'pending' AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= $1)
ORDER BY o.id
LIMIT $2
FOR UPDATE OF o SKIP LOCKED
"""
#: Who an email is for: the clinicians ``details.to`` names; else its team; else the
#: patient's fixed care contact; else (no address among those) the care team whose
#: channel this is (the alert's, or the team the event addresses: migration 0018).
_RECIPIENTS = """
SELECT coalesce(
    (SELECT array_agg(email ORDER BY email) FROM clinicians
     WHERE id = ANY($1::text[]) AND coalesce(email, '') <> ''),
    (SELECT array_agg(email ORDER BY email) FROM clinicians
     WHERE care_team_id = $2 AND coalesce(email, '') <> ''),
    (SELECT array_agg(email ORDER BY email) FROM clinicians
     WHERE id = $3 AND coalesce(email, '') <> ''),
    (SELECT array_agg(email ORDER BY email) FROM clinicians
     WHERE care_team_id = $4 AND coalesce(email, '') <> ''),
    '{}')
"""
_RECORD = """
UPDATE outbox AS o SET status = u.status, attempts = o.attempts + 1,
    next_attempt_at = u.next_at,
    delivered_at = CASE WHEN u.status = 'delivered' THEN clock_timestamp() END,
    last_error = u.error,
    last_error_at = CASE WHEN u.error IS NULL THEN o.last_error_at ELSE clock_timestamp() END
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[])
     AS u(id, status, next_at, error)
WHERE o.id = u.id
"""
_NOTIFIED = """
INSERT INTO alert_events (alert_id, kind, actor, details)
SELECT u.alert_id, 'notified', 'scheduler', u.details::jsonb
FROM unnest($1::bigint[], $2::text[]) AS u(alert_id, details)
"""
_BACKLOG = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       extract(epoch FROM clock_timestamp()
               - min(created_at) FILTER (WHERE status = 'pending'))::float8 AS oldest_s,
       min(next_attempt_at) FILTER (WHERE status = 'pending') AS next_due
FROM outbox WHERE status IN ('pending', 'dead')
"""


async def claim(conn: Conn, now: datetime, limit: int) -> list[Notification]:
    """Lock and read up to ``limit`` due rows, oldest first; in the caller's transaction."""
    found = []
    for r in await conn.fetch(_CLAIM, now, limit):
        details: dict[str, Any] = json.loads(r["details"])
        recipients: tuple[str, ...] = ()
        if r["channel"] == "email":
            own = r["team"] == r["care_team_id"]
            contact = r["care_contact_id"] if own else None
            recipients = await _recipients(conn, details, r["team"], contact)
        found.append(
            Notification(
                outbox_id=r["id"],
                event_id=r["event_id"],
                channel=r["channel"],
                team=r["team"],
                attempt=r["attempts"] + 1,
                config=None if r["config"] is None else json.loads(r["config"]),
                kind=r["kind"],
                at=r["at"],
                actor=r["actor"],
                clinician_id=r["clinician_id"],
                details=details,
                alert={
                    "id": r["alert_id"],
                    "patient_id": r["patient_id"],
                    "care_team_id": r["care_team_id"],
                    "rule": r["rule"],
                    "kind": r["alert_kind"],
                    "severity": r["severity"],
                    "status": r["status"],
                    "opening_value": r["opening_value"],
                    "worst_value": r["worst_value"],
                    "threshold": r["threshold"],
                    "sentence": r["sentence"],
                },
                gateway_id=r["gateway_id"],
                recipients=recipients,
            )
        )
    return found


async def _recipients(
    conn: Conn, details: dict[str, Any], team: str, care_contact: str | None
) -> tuple[str, ...]:
    to = details.get("to")
    to = to if isinstance(to, dict) else {}
    named = [c for c in to.get("clinicians") or () if isinstance(c, str)]
    to_team = to.get("team") if isinstance(to.get("team"), str) and not named else None
    got = await conn.fetchval(
        _RECIPIENTS, named, to_team, None if named or to_team else care_contact, team
    )
    return tuple(got)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery came to: ``delivered``, ``failed`` (retry at ``retry_at``),
    ``dead`` (the last attempt failed) or ``skipped`` (nothing to send)."""

    notification: Notification
    outcome: str
    error: str | None = None
    retry_at: datetime | None = None

    @property
    def status(self) -> str:
        return {"failed": "pending"}.get(self.outcome, self.outcome)


async def record(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    """Each outcome on its row, and a ``notified`` event per outcome; caller's transaction."""
    if not outcomes:
        return
    await conn.execute(
        _RECORD,
        [o.notification.outbox_id for o in outcomes],
        [o.status for o in outcomes],
        [o.retry_at for o in outcomes],
        [o.error for o in outcomes],
    )
    details = [
        json.dumps(
            {
                "channel": o.notification.channel,
                "outcome": o.outcome,
                "event_id": o.notification.event_id,
                "idempotency_key": o.notification.key,
                "attempt": o.notification.attempt,
                "error": o.error,
                "retry_at": None if o.retry_at is None else o.retry_at.isoformat(),
            }
        )
        for o in outcomes
    ]
    await conn.execute(_NOTIFIED, [o.notification.alert["id"] for o in outcomes], details)


@dataclasses.dataclass(frozen=True, slots=True)
class Backlog:
    """What waits: undelivered rows, the oldest one's age (s; None when none), dead letters,
    and the earliest retry time of an undelivered row (None: none waits for one)."""

    pending: int
    dead: int
    oldest_s: float | None
    next_due: datetime | None


async def backlog(conn: Conn) -> Backlog:
    """The outbox's backlog (for the metrics gauges and the notifier's sleep)."""
    r = await conn.fetchrow(_BACKLOG)
    assert r is not None
    return Backlog(r["pending"], r["dead"], r["oldest_s"], r["next_due"])


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters: by ids, care team, channel (all of them when empty)."""

    ids: Sequence[int] = ()
    care_team_id: str | None = None
    channel: str | None = None


_WHERE = """
o.status = 'dead'
AND (cardinality($1::bigint[]) = 0 OR o.id = ANY($1::bigint[]))
AND ($2::text IS NULL OR o.care_team_id = $2)
AND ($3::text IS NULL OR o.channel = $3)
"""


async def dead_letters(conn: Conn, which: Filter, *, limit: int = 100) -> list[dict[str, Any]]:
    """Dead letters, oldest first: ids, team, channel, attempts, the last error. No content."""
    rows = await conn.fetch(
        "SELECT o.id, o.event_id, o.alert_id, o.care_team_id, o.channel, e.kind, "
        "o.attempts, o.created_at, o.last_error, o.last_error_at, o.replays "
        "FROM outbox AS o JOIN alert_events AS e ON e.id = o.event_id "
        f"WHERE {_WHERE} ORDER BY o.id LIMIT $4",
        list(which.ids),
        which.care_team_id,
        which.channel,
        limit,
    )
    return [dict(r) for r in rows]


async def replay(conn: Conn, which: Filter, *, by: str) -> int:
    """Make the matching dead letters pending again, from attempt 1; how many.

    The notifier delivers them with their old idempotency keys (a receiver that took one
    after all sees it again and can ignore it). ``by`` who asked, recorded on the row.
    """
    async with conn.transaction():
        done = await conn.fetch(
            "UPDATE outbox AS o SET status = 'pending', attempts = 0, next_attempt_at = NULL, "
            f"replays = o.replays + 1, last_replayed_by = $4 WHERE {_WHERE} RETURNING o.id",
            list(which.ids),
            which.care_team_id,
            which.channel,
            by,
        )
        if done:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return len(done)
