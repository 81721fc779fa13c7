"""The HTTP API: clinicians' alerts and trends, and the ops endpoints.

Clinicians authenticate with a bearer token and see only their own care team's
patients. Every response that carries patient data first writes an ``access_log`` row
per patient (who, which patient, what, when, ``allowed``); if that write fails, the data
is not returned. An alert or patient of another care team answers exactly as an unknown
id does (404, same body), so the answer does not tell which ids exist elsewhere, and the
attempt is logged as ``denied`` with the id that was asked for.

Unauthenticated requests (401) are not access-logged: there is no "who" to follow up,
the answer comes before any lookup (it says nothing about any id), and anyone who can
reach the port could fill the log. They are counted in
``homemonitor_api_denied_total{reason="unauthenticated"}``.

Every status a route can answer is in the OpenAPI document (``/openapi.json``), with its body;
docs at ``/docs`` and ``/redoc``, served offline.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from homemonitor import __version__
from homemonitor.api.auth import Clinician, authenticate
from homemonitor.errors import HomemonitorError
from homemonitor.fields import BIGINT_MAX, ID_PATTERN, PlainText
from homemonitor.metrics import Metrics
from homemonitor.runtime import Health
from homemonitor.storage.database import Conn

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
    note: PlainText = Field(min_length=1, max_length=2000, description="What was done.")


class ErrorOut(BaseModel):
    detail: str = Field(description="What is wrong, for a person to read.")


class ReadyOut(BaseModel):
    ready: bool
    storage_mode: str | None
    broker_connected: bool
    database_ok: bool
    registry_loaded: bool


AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX, examples=[1], description="The alert's id.")]
PatientId = Annotated[
    str,
    Path(pattern=ID_PATTERN, examples=["p-0001"], description="The patient's registry id."),
]

# What each route can answer besides 200 and FastAPI's 422, for the OpenAPI document.
_Responses = dict[int | str, dict[str, Any]]
_UNAUTHENTICATED: _Responses = {
    401: {
        "model": ErrorOut,
        "description": "No bearer token, or an unknown or revoked one.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    }
}
_NO_ALERT: _Responses = {
    404: {"model": ErrorOut, "description": "No such alert in your care team."}
}
_NO_PATIENT: _Responses = {
    404: {"model": ErrorOut, "description": "No such patient in your care team."}
}
_RESOLVED: _Responses = {409: {"model": ErrorOut, "description": "The alert is already resolved."}}
_UNPARSABLE: _Responses = {400: {"model": ErrorOut, "description": "The body is not UTF-8 JSON."}}


class _NotVisibleError(HomemonitorError):
    """A clinician asked for an alert or patient that is not their care team's (or none)."""

    def __init__(
        self, who: Clinician, action: str, kind: str, requested_id: str, patient_id: str | None
    ) -> None:
        super().__init__(f"no such {kind}")
        self.who = who
        self.action = action
        self.kind = kind
        self.requested_id = requested_id
        self.patient_id = patient_id  # None when the id names nothing


_ALERT_COLUMNS = ", ".join(AlertOut.model_fields)
_READING_COLUMNS = ", ".join(ReadingOut.model_fields)


def build_app(pool: asyncpg.Pool, metrics: Metrics, health: Health) -> FastAPI:
    """The ASGI app over an open pool; the caller owns the pool's lifetime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    # Swagger UI (/docs) and ReDoc (/redoc) from the package's own copies, not a CDN: the
    # docs of a first look (or of a clinic's network) work without internet.
    app = FastAPIOffline(
        title="homemonitor",
        version=__version__,
        description="Home-monitoring alerts for primary-care teams, and the ops endpoints.",
        lifespan=lifespan,
    )

    async def clinician(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Clinician:
        if creds is None:
            metrics.api_denied.labels("unauthenticated").inc()
            raise HTTPException(
                401, "send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
            )
        async with pool.acquire() as conn:
            who = await authenticate(conn, creds.credentials)
        if who is None:
            metrics.api_denied.labels("unauthenticated").inc()
            raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
        return who

    Me = Annotated[Clinician, Depends(clinician)]  # noqa: N806 - a type alias, named as one

    async def log_access(
        conn: Conn,
        who: Clinician,
        patients: Sequence[str],
        action: str,
        requested_id: str | None = None,
    ) -> None:
        """Allowed reads, in the caller's transaction: no row, no data."""
        if patients:
            await conn.execute(
                "INSERT INTO access_log (clinician_id, patient_id, action, requested_id) "
                "SELECT $1, unnest($2::text[]), $3, $4",
                who.id,
                list(dict.fromkeys(patients)),
                action,
                requested_id,
            )
        metrics.api_access(action)

    async def team_alert(
        conn: Conn, who: Clinician, alert_id: int, action: str, *, to_change: bool = False
    ) -> asyncpg.Record:
        """The alert, access-logged as ``action``, if it is the clinician's team's.

        ``to_change`` locks it (two clinicians acting at once: one wins) and refuses a
        resolved alert with 409 before anything is logged or counted: nothing changed.
        """
        lock = " FOR UPDATE" if to_change else ""
        row = await conn.fetchrow(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = $1{lock}", alert_id
        )
        if row is None or row["care_team_id"] != who.care_team_id:
            patient = None if row is None else row["patient_id"]
            raise _NotVisibleError(who, action, "alert", str(alert_id), patient)
        if to_change and row["status"] == "resolved":
            raise HTTPException(409, "the alert is already resolved")
        await log_access(conn, who, [row["patient_id"]], action, str(alert_id))
        return row

    async def team_patient(conn: Conn, who: Clinician, patient_id: str, action: str) -> None:
        """Access-log ``action`` on the patient, if they are the clinician's team's."""
        team = await conn.fetchval("SELECT care_team_id FROM patients WHERE id = $1", patient_id)
        if team != who.care_team_id:
            raise _NotVisibleError(who, action, "patient", patient_id, patient_id if team else None)
        await log_access(conn, who, [patient_id], action, patient_id)

    @app.exception_handler(_NotVisibleError)
    async def not_visible(_: Request, exc: _NotVisibleError) -> JSONResponse:
        # Raised inside the request's transaction, which rolled back; the denial is
        # written on its own and committed. If that write fails the client gets a 500,
        # not a 404: an attempt nobody can follow up is not answered as handled.
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO access_log "
                "(clinician_id, patient_id, action, requested_id, outcome) "
                "VALUES ($1, $2, $3, $4, 'denied')",
                exc.who.id,
                exc.patient_id,
                exc.action,
                exc.requested_id,
            )
        metrics.api_denied.labels("not_visible").inc()
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which may be unencodable (a lone
        # surrogate in a note: a 500 while rendering the 422) and is patient text.
        errors = [{k: e[k] for k in ("type", "loc", "msg")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/health", tags=["ops"], summary="Liveness: the process answers.")
    async def get_health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["ops"],
        summary="Readiness: broker, database and registry are up.",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready; the body says why."}},
    )
    async def get_ready() -> JSONResponse:
        body = ReadyOut(
            ready=health.ready,
            storage_mode=health.storage_mode.value if health.storage_mode else None,
            broker_connected=health.broker_connected,
            database_ok=health.database_ok,
            registry_loaded=health.registry_loaded,
        )
        return JSONResponse(body.model_dump(), status_code=200 if health.ready else 503)

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics.",
        response_class=PlainTextResponse,
        responses={200: {"description": "The Prometheus text exposition format."}},
    )
    async def get_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/api/v1/alerts",
        tags=["alerts"],
        summary="My care team's alerts.",
        responses=_UNAUTHENTICATED,
    )
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

    @app.get(
        "/api/v1/alerts/{alert_id}",
        tags=["alerts"],
        summary="One alert and recent readings.",
        responses=_UNAUTHENTICATED | _NO_ALERT,
    )
    async def get_alert(who: Me, alert_id: AlertId) -> AlertDetailOut:
        async with pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, who, alert_id, "view_alert")
            readings = await conn.fetch(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE patient_id = $1 "
                "ORDER BY measured_at DESC LIMIT 50",
                row["patient_id"],
            )
        return AlertDetailOut(
            alert=AlertOut(**dict(row)), recent_readings=[ReadingOut(**dict(r)) for r in readings]
        )

    @app.post(
        "/api/v1/alerts/{alert_id}/acknowledge",
        tags=["alerts"],
        summary="I have seen it.",
        responses=_UNAUTHENTICATED | _NO_ALERT | _RESOLVED,
    )
    async def acknowledge(who: Me, alert_id: AlertId) -> AlertOut:
        async with pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, who, alert_id, "acknowledge_alert", to_change=True)
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
        return AlertOut(**dict(row))

    @app.post(
        "/api/v1/alerts/{alert_id}/resolve",
        tags=["alerts"],
        summary="Close it, with a note.",
        responses=_UNAUTHENTICATED | _NO_ALERT | _RESOLVED | _UNPARSABLE,
    )
    async def resolve(who: Me, alert_id: AlertId, body: ResolveIn) -> AlertOut:
        async with pool.acquire() as conn, conn.transaction():
            row = await team_alert(conn, who, alert_id, "resolve_alert", to_change=True)
            row = await _one(
                conn,
                f"UPDATE alerts SET status = 'resolved', resolved_at = clock_timestamp(), "
                f"resolved_by = $2, resolution_note = $3, updated_at = clock_timestamp() "
                f"WHERE id = $1 RETURNING {_ALERT_COLUMNS}",
                alert_id,
                who.id,
                body.note,
            )
        return AlertOut(**dict(row))

    @app.get(
        "/api/v1/patients/{patient_id}/readings",
        tags=["patients"],
        summary="Recent readings.",
        responses=_UNAUTHENTICATED | _NO_PATIENT,
    )
    async def patient_readings(
        who: Me, patient_id: PatientId, days: Annotated[int, Query(ge=1, le=365)] = 14
    ) -> list[ReadingOut]:
        since = datetime.now(UTC) - timedelta(days=days)
        async with pool.acquire() as conn, conn.transaction():
            await team_patient(conn, who, patient_id, "view_readings")
            rows = await conn.fetch(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE patient_id = $1 "
                "AND measured_at >= $2 ORDER BY measured_at DESC LIMIT 5000",
                patient_id,
                since,
            )
        return [ReadingOut(**dict(r)) for r in rows]

    @app.get(
        "/api/v1/patients/{patient_id}/trend",
        tags=["patients"],
        summary="Hourly trend.",
        responses=_UNAUTHENTICATED | _NO_PATIENT,
    )
    async def patient_trend(
        who: Me, patient_id: PatientId, days: Annotated[int, Query(ge=1, le=365)] = 14
    ) -> list[TrendPointOut]:
        since = datetime.now(UTC) - timedelta(days=days)
        async with pool.acquire() as conn, conn.transaction():
            await team_patient(conn, who, patient_id, "view_trend")
            rows = await conn.fetch(
                "SELECT metric, bucket, n, systolic, diastolic, heart_rate, body_weight, spo2 "
                "FROM readings_hourly WHERE patient_id = $1 AND bucket >= $2 ORDER BY bucket",
                patient_id,
                since,
            )
        return [TrendPointOut(**dict(r)) for r in rows]

    return app


async def _one(conn: Conn, sql: str, *args: object) -> asyncpg.Record:
    """The row an UPDATE ... RETURNING of a row this transaction holds must return."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # read and locked in this transaction
    return row


async def refresh_open_alerts(db: asyncpg.Pool | Conn, metrics: Metrics) -> None:
    """Set the open-alerts gauge from the database, which every replica shares.

    Every replica therefore exports the same value: aggregate it with ``max``, not ``sum``
    (see :mod:`homemonitor.metrics`).
    """
    rows = await db.fetch(
        "SELECT severity, count(*) AS n FROM alerts WHERE status <> 'resolved' GROUP BY severity"
    )
    counts = {r["severity"]: r["n"] for r in rows}
    for severity in ("warning", "urgent"):
        metrics.alerts_open.labels(severity).set(counts.get(severity, 0))
