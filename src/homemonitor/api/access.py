"""What a clinician may see, and the access log of what they saw or were refused.

An allowed read writes its ``access_log`` rows in the request's transaction (no row, no
data). An alert or patient of another care team raises :class:`NotVisibleError`, which
:func:`not_visible` answers exactly as an unknown id (404, same body) after logging the
attempt as ``denied``.
"""

from collections.abc import Sequence

import asyncpg
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from homemonitor.api.auth import Clinician
from homemonitor.api.deps import services
from homemonitor.api.models import ALERT_COLUMNS, FHIR_BASE, FHIR_JSON
from homemonitor.errors import HomemonitorError
from homemonitor.fhir_out import operation_outcome
from homemonitor.metrics import Metrics
from homemonitor.storage.database import Conn


class NotVisibleError(HomemonitorError):
    """A clinician asked for an alert, patient, group or export not their team's (or none)."""

    def __init__(
        self, who: Clinician, action: str, kind: str, requested_id: str, patient_id: str | None
    ) -> None:
        super().__init__(f"no such {kind}")
        self.who = who
        self.action = action
        self.kind = kind
        self.requested_id = requested_id
        self.patient_id = patient_id  # None when the id names nothing


async def log_access(
    conn: Conn,
    metrics: Metrics,
    who: Clinician,
    patients: Sequence[str],
    action: str,
    *,
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
    conn: Conn,
    metrics: Metrics,
    who: Clinician,
    alert_id: int,
    action: str,
    *,
    to_change: bool = False,
) -> asyncpg.Record:
    """The alert, access-logged as ``action``, if it is the clinician's team's.

    ``to_change`` locks it (two clinicians acting at once: one wins) and refuses a
    resolved alert with 409 before anything is logged or counted: nothing changed.
    """
    lock = " FOR UPDATE" if to_change else ""
    row = await conn.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1{lock}", alert_id)
    if row is None or row["care_team_id"] != who.care_team_id:
        patient = None if row is None else row["patient_id"]
        raise NotVisibleError(who, action, "alert", str(alert_id), patient)
    if to_change and row["status"] == "resolved":
        raise HTTPException(409, "the alert is already resolved")
    await log_access(conn, metrics, who, [row["patient_id"]], action, requested_id=str(alert_id))
    return row


async def team_patient(
    conn: Conn, metrics: Metrics, who: Clinician, patient_id: str, action: str
) -> None:
    """Access-log ``action`` on the patient, if they are the clinician's team's."""
    team = await conn.fetchval("SELECT care_team_id FROM patients WHERE id = $1", patient_id)
    if team != who.care_team_id:
        raise NotVisibleError(who, action, "patient", patient_id, patient_id if team else None)
    await log_access(conn, metrics, who, [patient_id], action, requested_id=patient_id)


async def not_visible(request: Request, exc: NotVisibleError) -> JSONResponse:
    """The exception handler for :class:`NotVisibleError`: log the denial, answer 404."""
    svc = services(request)
    # Raised inside the request's transaction, which rolled back; the denial is
    # written on its own and committed. If that write fails the client gets a 500,
    # not a 404: an attempt nobody can follow up is not answered as handled.
    async with svc.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO access_log "
            "(clinician_id, patient_id, action, requested_id, outcome) "
            "VALUES ($1, $2, $3, $4, 'denied')",
            exc.who.id,
            exc.patient_id,
            exc.action,
            exc.requested_id,
        )
    svc.metrics.api_denied.labels("not_visible").inc()
    if request.url.path.startswith(FHIR_BASE + "/"):  # a FHIR client reads an OperationOutcome
        body = operation_outcome(str(exc), "not-found")
        return JSONResponse(body, status_code=404, media_type=FHIR_JSON)
    return JSONResponse({"detail": str(exc)}, status_code=404)
