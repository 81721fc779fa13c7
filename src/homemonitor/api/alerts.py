"""A care team's alerts: list, one with recent readings, acknowledge, resolve."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from homemonitor.alerts import transitions
from homemonitor.api.access import log_access, team_alert
from homemonitor.api.deps import Me, Svc
from homemonitor.api.models import (
    ACTIVE_STATUSES,
    ALERT_COLUMNS,
    NO_ALERT,
    READING_COLUMNS,
    RESOLVED,
    UNAUTHENTICATED,
    UNPARSABLE,
    AlertDetailOut,
    AlertId,
    AlertOut,
    ReadingOut,
    ResolveIn,
)

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
    async with svc.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE care_team_id = $1 "
            "AND status = ANY($2::text[]) "
            "ORDER BY (severity = 'urgent') DESC, opened_at DESC LIMIT $3",
            who.care_team_id,
            statuses,
            limit,
        )
        await log_access(conn, svc.metrics, who, [r["patient_id"] for r in rows], "list_alerts")
    return [AlertOut(**dict(r)) for r in rows]


@router.get(
    "/api/v1/alerts/{alert_id}",
    summary="One alert and recent readings.",
    responses=UNAUTHENTICATED | NO_ALERT,
)
async def get_alert(svc: Svc, who: Me, alert_id: AlertId) -> AlertDetailOut:
    async with svc.pool.acquire() as conn, conn.transaction():
        row = await team_alert(conn, svc.metrics, who, alert_id, "view_alert")
        readings = await conn.fetch(
            f"SELECT {READING_COLUMNS} FROM readings WHERE patient_id = $1 "
            "ORDER BY measured_at DESC LIMIT 50",
            row["patient_id"],
        )
    return AlertDetailOut(
        alert=AlertOut(**dict(row)), recent_readings=[ReadingOut(**dict(r)) for r in readings]
    )


@router.post(
    "/api/v1/alerts/{alert_id}/acknowledge",
    summary="I have seen it.",
    responses=UNAUTHENTICATED | NO_ALERT | RESOLVED,
)
async def acknowledge(svc: Svc, who: Me, alert_id: AlertId) -> AlertOut:
    async with svc.pool.acquire() as conn, conn.transaction():
        row = await team_alert(
            conn, svc.metrics, who, alert_id, "acknowledge_alert", to_change=True
        )
        row = await transitions.acknowledge(conn, row, who.id, returning=ALERT_COLUMNS)
    return AlertOut(**dict(row))


@router.post(
    "/api/v1/alerts/{alert_id}/resolve",
    summary="Close it, with a note.",
    responses=UNAUTHENTICATED | NO_ALERT | RESOLVED | UNPARSABLE,
)
async def resolve(svc: Svc, who: Me, alert_id: AlertId, body: ResolveIn) -> AlertOut:
    async with svc.pool.acquire() as conn, conn.transaction():
        row = await team_alert(conn, svc.metrics, who, alert_id, "resolve_alert", to_change=True)
        row = await transitions.resolve(conn, row, who.id, body.note, returning=ALERT_COLUMNS)
    return AlertOut(**dict(row))
