"""The HTTP API: clinicians' alerts and trends, and the ops endpoints.

Clinicians authenticate with a bearer token and see only their own care team's
patients (403 otherwise). Every response that carries patient data first writes an
``access_log`` row per patient (who, which patient, what, when); if that write fails,
the data is not returned. OpenAPI docs are at ``/docs``.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from homemonitor import __version__
from homemonitor.auth import Clinician, authenticate
from homemonitor.database import Conn
from homemonitor.ingest import Health
from homemonitor.metrics import Metrics

_bearer = HTTPBearer(
    auto_error=False, description="A clinician API token (homemonitor token issue)."
)


class AlertOut(BaseModel):
    id: int
    patient_id: str
    care_team_id: str
    rule: str = Field(description="'<quantity>.<high|low>', e.g. systolic.high.")
    severity: Literal["warning", "urgent"]
    status: Literal["open", "acknowledged", "resolved"]
    plan_version: int
    threshold: float
    opened_at: datetime
    updated_at: datetime
    opening_device_id: str
    opening_measured_at: datetime
    opening_value: float
    worst_value: float
    last_measured_at: datetime
    breach_count: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None


class ReadingOut(BaseModel):
    device_id: str
    metric: str
    measured_at: datetime
    received_at: datetime
    systolic: float | None
    diastolic: float | None
    mean_arterial: float | None
    heart_rate: float | None
    body_weight: float | None
    spo2: float | None
    flags: list[str]


class AlertDetailOut(BaseModel):
    alert: AlertOut
    recent_readings: list[ReadingOut]


class TrendPointOut(BaseModel):
    metric: str
    bucket: datetime
    n: int
    systolic: float | None
    diastolic: float | None
    heart_rate: float | None
    body_weight: float | None
    spo2: float | None


class ResolveIn(BaseModel):
    note: str = Field(min_length=1, max_length=2000, description="What was done.")


_ALERT_COLUMNS = ", ".join(AlertOut.model_fields)
_READING_COLUMNS = ", ".join(ReadingOut.model_fields)


def build_app(pool: asyncpg.Pool, metrics: Metrics, health: Health) -> FastAPI:
    """The ASGI app over an open pool; the caller owns the pool's lifetime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="homemonitor",
        version=__version__,
        description="Home-monitoring alerts for primary-care teams, and the ops endpoints.",
        lifespan=lifespan,
    )

    async def clinician(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Clinician:
        if creds is None:
            raise HTTPException(
                401, "send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
            )
        async with pool.acquire() as conn:
            who = await authenticate(conn, creds.credentials)
        if who is None:
            raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
        return who

    Me = Annotated[Clinician, Depends(clinician)]  # noqa: N806 - a type alias, named as one

    async def log_access(conn: Conn, who: Clinician, patients: Sequence[str], action: str) -> None:
        if patients:
            await conn.execute(
                "INSERT INTO access_log (clinician_id, patient_id, action) "
                "SELECT $1, unnest($2::text[]), $3",
                who.id,
                list(dict.fromkeys(patients)),
                action,
            )
        metrics.api_reads.labels(action).inc()

    async def team_alert(
        conn: Conn, who: Clinician, alert_id: int, *, for_update: bool = False
    ) -> asyncpg.Record:
        lock = " FOR UPDATE" if for_update else ""  # two clinicians acting at once: one wins
        row = await conn.fetchrow(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = $1{lock}", alert_id
        )
        if row is None:
            raise HTTPException(404, f"no alert {alert_id}")
        if row["care_team_id"] != who.care_team_id:
            raise HTTPException(403, "this alert belongs to another care team")
        return row

    async def team_patient(conn: Conn, who: Clinician, patient_id: str) -> None:
        team = await conn.fetchval("SELECT care_team_id FROM patients WHERE id = $1", patient_id)
        if team is None:
            raise HTTPException(404, "no such patient")
        if team != who.care_team_id:
            raise HTTPException(403, "this patient belongs to another care team")

    @app.get("/health", tags=["ops"], summary="Liveness: the process answers.")
    async def get_health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], summary="Readiness: broker, database and registry are up.")
    async def get_ready() -> JSONResponse:
        body: dict[str, Any] = {
            "ready": health.ready,
            "storage_mode": health.storage_mode.value if health.storage_mode else None,
            "broker_connected": health.broker_connected,
            "database_ok": health.database_ok,
            "registry_loaded": health.registry_loaded,
        }
        return JSONResponse(body, status_code=200 if health.ready else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics.")
    async def get_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/alerts", tags=["alerts"], summary="My care team's alerts.")
    async def list_alerts(
        who: Me,
        status: Annotated[
            Literal["active", "open", "acknowledged", "resolved"],
            Query(description="'active' is open and acknowledged."),
        ] = "active",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[AlertOut]:
        statuses = ["open", "acknowledged"] if status == "active" else [status]
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE care_team_id = $1 "
                "AND status = ANY($2::text[]) "
                "ORDER BY (severity = 'urgent') DESC, opened_at DESC LIMIT $3",
                who.care_team_id,
                statuses,
                limit,
            )
            await log_access(conn, who, [r["patient_id"] for r in rows], "list_alerts")
        return [AlertOut(**dict(r)) for r in rows]

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"], summary="One alert and recent readings.")
    async def get_alert(who: Me, alert_id: int) -> AlertDetailOut:
        async with pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, who, alert_id)
            readings = await conn.fetch(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE patient_id = $1 "
                "ORDER BY measured_at DESC LIMIT 50",
                row["patient_id"],
            )
            await log_access(conn, who, [row["patient_id"]], "view_alert")
        return AlertDetailOut(
            alert=AlertOut(**dict(row)), recent_readings=[ReadingOut(**dict(r)) for r in readings]
        )

    @app.post("/api/v1/alerts/{alert_id}/acknowledge", tags=["alerts"], summary="I have seen it.")
    async def acknowledge(who: Me, alert_id: int) -> AlertOut:
        async with pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, who, alert_id, for_update=True)
            if row["status"] == "resolved":
                raise HTTPException(409, "the alert is already resolved")
            if row["status"] == "open":
                row = await _one(
                    conn,
                    "UPDATE alerts SET status = 'acknowledged', "
                    "acknowledged_at = clock_timestamp(), "
                    f"acknowledged_by = $2, updated_at = clock_timestamp() WHERE id = $1 "
                    f"RETURNING {_ALERT_COLUMNS}",
                    alert_id,
                    who.id,
                )
            await log_access(conn, who, [row["patient_id"]], "acknowledge_alert")
        return AlertOut(**dict(row))

    @app.post(
        "/api/v1/alerts/{alert_id}/resolve", tags=["alerts"], summary="Close it, with a note."
    )
    async def resolve(who: Me, alert_id: int, body: ResolveIn) -> AlertOut:
        async with pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, who, alert_id, for_update=True)
            if row["status"] == "resolved":
                raise HTTPException(409, "the alert is already resolved")
            row = await _one(
                conn,
                f"UPDATE alerts SET status = 'resolved', resolved_at = clock_timestamp(), "
                f"resolved_by = $2, resolution_note = $3, updated_at = clock_timestamp() "
                f"WHERE id = $1 RETURNING {_ALERT_COLUMNS}",
                alert_id,
                who.id,
                body.note,
            )
            await log_access(conn, who, [row["patient_id"]], "resolve_alert")
        return AlertOut(**dict(row))

    @app.get(
        "/api/v1/patients/{patient_id}/readings", tags=["patients"], summary="Recent readings."
    )
    async def patient_readings(
        who: Me, patient_id: str, days: Annotated[int, Query(ge=1, le=365)] = 14
    ) -> list[ReadingOut]:
        since = datetime.now(UTC) - timedelta(days=days)
        async with pool.acquire() as conn, conn.transaction():
            await team_patient(conn, who, patient_id)
            rows = await conn.fetch(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE patient_id = $1 "
                "AND measured_at >= $2 ORDER BY measured_at DESC LIMIT 5000",
                patient_id,
                since,
            )
            await log_access(conn, who, [patient_id], "view_readings")
        return [ReadingOut(**dict(r)) for r in rows]

    @app.get("/api/v1/patients/{patient_id}/trend", tags=["patients"], summary="Hourly trend.")
    async def patient_trend(
        who: Me, patient_id: str, days: Annotated[int, Query(ge=1, le=365)] = 14
    ) -> list[TrendPointOut]:
        since = datetime.now(UTC) - timedelta(days=days)
        async with pool.acquire() as conn, conn.transaction():
            await team_patient(conn, who, patient_id)
            rows = await conn.fetch(
                "SELECT metric, bucket, n, systolic, diastolic, heart_rate, body_weight, spo2 "
                "FROM readings_hourly WHERE patient_id = $1 AND bucket >= $2 ORDER BY bucket",
                patient_id,
                since,
            )
            await log_access(conn, who, [patient_id], "view_trend")
        return [TrendPointOut(**dict(r)) for r in rows]

    return app


async def _one(conn: Conn, sql: str, *args: object) -> asyncpg.Record:
    """The row an UPDATE ... RETURNING of a row this transaction holds must return."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # read and locked in this transaction
    return row


async def refresh_open_alerts(db: asyncpg.Pool | Conn, metrics: Metrics) -> None:
    """Set the open-alerts gauge from the database (the truth, across workers)."""
    rows = await db.fetch(
        "SELECT severity, count(*) AS n FROM alerts WHERE status <> 'resolved' GROUP BY severity"
    )
    counts = {r["severity"]: r["n"] for r in rows}
    for severity in ("warning", "urgent"):
        metrics.alerts_open.labels(severity).set(counts.get(severity, 0))
