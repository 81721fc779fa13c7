"""A care team's alerts: list, one with recent readings, its history, and what a clinician
does with it (acknowledge, comment, assign, snooze, resolve: docs/alerts.md).

Every route is access-logged (:mod:`homemonitor.api.access`); every action is one
transition of :mod:`homemonitor.alerts.transitions`, with its ``alert_events`` row. A
transition the alert does not allow answers 409 with the reason, before anything is
logged or changed: a refused change of an alert the clinician sees is not a denied
access (it shows no patient data), so it writes no access-log row. An alert of another
team answers 404 and is logged as denied (:func:`homemonitor.api.access.not_visible`).
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Query

from homemonitor.access_actions import AccessAction
from homemonitor.alerts import transitions
from homemonitor.api.access import log_access, team_alert, visible
from homemonitor.api.auth import Clinician
from homemonitor.api.deps import Me, Services, Svc
from homemonitor.api.models import (
    ACTIVE_STATUSES,
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    NO_ALERT,
    READING_COLUMNS,
    REFUSED,
    RESOLVED,
    UNAUTHENTICATED,
    UNPARSABLE,
    AlertDetailOut,
    AlertEventOut,
    AlertId,
    AlertOut,
    AssignIn,
    CommentIn,
    ReadingOut,
    ResolveIn,
    SnoozeIn,
)
from homemonitor.storage.database import Conn

router = APIRouter(tags=["alerts"])


@router.get("/api/v1/alerts", summary="My care team's alerts.", responses=UNAUTHENTICATED)
async def list_alerts(
    svc: Svc,
    who: Me,
    status: Annotated[
        Literal[
            "active",
            "pending",
            "open",
            "acknowledged",
            "cleared",
            "resolved",
            "auto_resolved",
            "withdrawn",
        ],
        Query(description="'active' is open, acknowledged and cleared: what needs a clinician."),
    ] = "active",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertOut]:
    statuses = list(ACTIVE_STATUSES) if status == "active" else [status]
    async with svc.reads.acquire() as conn:  # a replica, if configured: it may lag
        rows = await conn.fetch(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {visible('$1')} "
            "AND status = ANY($2::text[]) "
            "ORDER BY (severity = 'urgent') DESC, snoozed_until IS NOT NULL, opened_at DESC "
            "LIMIT $3",
            who.care_team_id,
            statuses,
            limit,
        )
    async with svc.pool.acquire() as conn, conn.transaction():  # committed before we answer
        await log_access(conn, svc.metrics, who, [r["patient_id"] for r in rows], "list_alerts")
    return [AlertOut(**dict(r)) for r in rows]


@router.get(
    "/api/v1/alerts/{alert_id}",
    summary="One alert and recent readings.",
    responses=UNAUTHENTICATED | NO_ALERT,
)
async def get_alert(svc: Svc, who: Me, alert_id: AlertId) -> AlertDetailOut:
    async with svc.pool.acquire() as conn, conn.transaction():  # checked and logged first
        row = await team_alert(conn, svc.metrics, who, alert_id, "view_alert")
    async with svc.reads.acquire() as conn:
        readings = await conn.fetch(
            f"SELECT {READING_COLUMNS} FROM readings WHERE patient_id = $1 "
            "ORDER BY measured_at DESC LIMIT 50",
            row["patient_id"],
        )
    return AlertDetailOut(
        alert=AlertOut(**dict(row)), recent_readings=[ReadingOut(**dict(r)) for r in readings]
    )


@router.get(
    "/api/v1/alerts/{alert_id}/events",
    summary="Its history: every transition, with who and when.",
    responses=UNAUTHENTICATED | NO_ALERT,
)
async def alert_events(svc: Svc, who: Me, alert_id: AlertId) -> list[AlertEventOut]:
    async with svc.pool.acquire() as conn, conn.transaction():  # checked and logged first
        await team_alert(conn, svc.metrics, who, alert_id, "view_alert_events")
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM alert_events WHERE alert_id = $1 ORDER BY id", alert_id
        )
    return [AlertEventOut(**dict(r)) for r in rows]


Change = Callable[[Conn, asyncpg.Record], Awaitable[asyncpg.Record]]


class ActionRefusedError(HTTPException):
    """409: the alert does not allow the action; ``reason`` names the refusal
    (:data:`homemonitor.alerts.transitions.Refusal`), for the web app's words."""

    def __init__(self, refused: transitions.RefusedError) -> None:
        super().__init__(409, str(refused))
        self.reason: transitions.Refusal = refused.reason


async def _change(
    svc: Services, who: Clinician, alert_id: int, action: AccessAction, change: Change
) -> AlertOut:
    """Lock, check, log and change the alert in one transaction; 409 when it refuses."""
    try:
        async with svc.pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, svc.metrics, who, alert_id, action, to_change=True)
            row = await change(conn, row)
    except transitions.RefusedError as exc:
        raise ActionRefusedError(exc) from exc
    return AlertOut(**dict(row))


@router.post(
    "/api/v1/alerts/{alert_id}/acknowledge",
    summary="I have seen it: its escalation stops.",
    responses=UNAUTHENTICATED | NO_ALERT | RESOLVED,
)
async def acknowledge(svc: Svc, who: Me, alert_id: AlertId) -> AlertOut:
    async def change(conn: Conn, row: asyncpg.Record) -> asyncpg.Record:
        return await transitions.acknowledge(conn, row, who.id, returning=ALERT_COLUMNS)

    return await _change(svc, who, alert_id, "acknowledge_alert", change)


@router.post(
    "/api/v1/alerts/{alert_id}/comment",
    summary="A note for the team, in its history.",
    responses=UNAUTHENTICATED | NO_ALERT | RESOLVED | UNPARSABLE,
)
async def comment(svc: Svc, who: Me, alert_id: AlertId, body: CommentIn) -> AlertOut:
    async def change(conn: Conn, row: asyncpg.Record) -> asyncpg.Record:
        return await transitions.comment(conn, row, who.id, body.text, returning=ALERT_COLUMNS)

    return await _change(svc, who, alert_id, "comment_alert", change)


@router.post(
    "/api/v1/alerts/{alert_id}/assign",
    summary="Make it a clinician's of the team.",
    responses=UNAUTHENTICATED | NO_ALERT | REFUSED | UNPARSABLE,
)
async def assign(svc: Svc, who: Me, alert_id: AlertId, body: AssignIn) -> AlertOut:
    async def change(conn: Conn, row: asyncpg.Record) -> asyncpg.Record:
        return await transitions.assign(
            conn, row, who.id, body.clinician_id, returning=ALERT_COLUMNS
        )

    return await _change(svc, who, alert_id, "assign_alert", change)


@router.post(
    "/api/v1/alerts/{alert_id}/snooze",
    summary="Not now: escalation waits (24 h at most); an urgent alert cannot be snoozed.",
    responses=UNAUTHENTICATED | NO_ALERT | REFUSED | UNPARSABLE,
)
async def snooze(svc: Svc, who: Me, alert_id: AlertId, body: SnoozeIn) -> AlertOut:
    async def change(conn: Conn, row: asyncpg.Record) -> asyncpg.Record:
        return await transitions.snooze(
            conn, row, who.id, body.minutes, body.reason, returning=ALERT_COLUMNS
        )

    return await _change(svc, who, alert_id, "snooze_alert", change)


@router.post(
    "/api/v1/alerts/{alert_id}/resolve",
    summary="Close it, with a note and whether it led to an action.",
    responses=UNAUTHENTICATED | NO_ALERT | RESOLVED | UNPARSABLE,
)
async def resolve(svc: Svc, who: Me, alert_id: AlertId, body: ResolveIn) -> AlertOut:
    async def change(conn: Conn, row: asyncpg.Record) -> asyncpg.Record:
        return await transitions.resolve(
            conn, row, who.id, body.note, actionable=body.actionable, returning=ALERT_COLUMNS
        )

    return await _change(svc, who, alert_id, "resolve_alert", change)
