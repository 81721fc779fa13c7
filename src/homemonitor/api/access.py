"""What a clinician may see, and the access log of what they saw or were refused.

An allowed read writes its ``access_log`` rows in the request's transaction (no row, no
data). An alert or patient of another care team raises :class:`NotVisibleError`, which
:func:`not_visible` answers exactly as an unknown id (404, same body) after logging the
attempt as ``denied``.
"""

from collections.abc import Sequence

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from homemonitor.access_actions import AccessAction
from homemonitor.alerts import episodes, transitions
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
        self,
        who: Clinician,
        action: AccessAction,
        kind: str,
        requested_id: str,
        patient_id: str | None,
    ) -> None:
        super().__init__(f"no such {kind}")
        self.who = who
        self.action = action
        self.kind = kind
        self.requested_id = requested_id
        self.patient_id = patient_id  # None when the id names nothing


async def log_access(
    conn: Conn,
    metrics: Metrics | None,
    who: Clinician | str,
    patients: Sequence[str],
    action: AccessAction,
    *,
    requested_id: str | None = None,
) -> None:
    """Allowed reads, in the caller's transaction: no row, no data.

    ``who`` is the clinician, or the id of who else read (the command line:
    ``cli:<os user>``). ``metrics`` counts an API request; the command line has none.
    """
    if patients:
        await conn.execute(
            "INSERT INTO access_log (clinician_id, patient_id, action, requested_id) "
            "SELECT $1, unnest($2::text[]), $3, $4",
            who if isinstance(who, str) else who.id,
            list(dict.fromkeys(patients)),
            action,
            requested_id,
        )
    if metrics is not None:
        metrics.api_access(action)


async def log_denied(
    conn: Conn,
    who: Clinician | str,
    patient_id: str | None,
    action: AccessAction,
    requested_id: str,
) -> None:
    """A refused attempt (another team's id, or one that names nothing), committed by the
    caller on a connection of its own: the request's transaction rolled back."""
    await conn.execute(
        "INSERT INTO access_log (clinician_id, patient_id, action, requested_id, outcome) "
        "VALUES ($1, $2, $3, $4, 'denied')",
        who if isinstance(who, str) else who.id,
        patient_id,
        action,
        requested_id,
    )


def visible(team: str, *, alerts: str = "") -> str:
    """The SQL condition of the alerts a care team sees (``team``: its parameter, ``$1``).

    Its own alerts, and those routed or escalated to it as the out-of-hours route of
    another team (``routed_to``, :mod:`homemonitor.alerts.routing`): the on-call team
    keeps seeing what it was given, to the alert's end and after (it may have acted).
    ``alerts``: the ``alerts`` table's alias in a join (the live stream's).

    >>> visible("$2", alerts="a")
    '(a.care_team_id = $2 OR a.routed_to = $2)'
    """
    t = f"{alerts}." if alerts else ""
    return f"({t}care_team_id = {team} OR {t}routed_to = {team})"


async def team_alert(
    conn: Conn,
    metrics: Metrics,
    who: Clinician,
    alert_id: int,
    action: AccessAction,
    *,
    to_change: bool = False,
) -> asyncpg.Record:
    """The alert, access-logged as ``action``, if the clinician's team sees it (:func:`visible`).

    ``to_change`` takes the patient's episode lock (the worker does not evaluate the
    patient meanwhile), then the row's (two clinicians acting at once: one wins), and
    refuses an alert that has ended (:class:`~homemonitor.alerts.transitions.RefusedError`,
    a 409 of the API) before anything is logged or counted: nothing changed.
    """
    row = await conn.fetchrow(
        f"SELECT {ALERT_COLUMNS}, {visible('$2')} AS visible FROM alerts WHERE id = $1",
        alert_id,
        who.care_team_id,
    )
    if row is None or not row["visible"]:
        patient = None if row is None else row["patient_id"]
        raise NotVisibleError(who, action, "alert", str(alert_id), patient)
    if to_change:
        await episodes.lock_patients(conn, [row["patient_id"]])
        row = await conn.fetchrow(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE", alert_id
        )
        assert row is not None  # alerts are never deleted
        if row["status"] == "resolved":
            raise transitions.RefusedError("the alert is already resolved", "resolved")
        if row["status"] not in transitions.ACTIVE:
            msg = f"the alert has ended ({row['status']})"
            raise transitions.RefusedError(msg, "ended")
    await log_access(conn, metrics, who, [row["patient_id"]], action, requested_id=str(alert_id))
    return row


def visible_patient_sql(team: str, *, on_call: bool) -> str:
    """The SQL condition of a patient (``patients`` row, alias ``p``) a care team sees.

    Its own patients; with ``on_call``, also a patient with an active alert the team sees
    (:func:`visible`: routed or escalated to it as another team's out-of-hours route),
    for as long as that alert is active: the on-call nurse reads the trend, readings and
    plan to act on it, and reads nothing of the patient once it has ended.
    """
    if not on_call:
        return f"(p.care_team_id = {team})"
    active = ", ".join(f"'{s}'" for s in transitions.ACTIVE)
    return (
        f"(p.care_team_id = {team} OR EXISTS (SELECT 1 FROM alerts "
        f"WHERE patient_id = p.id AND status IN ({active}) AND {visible(team)}))"
    )


async def team_patient(
    conn: Conn, metrics: Metrics, who: Clinician, patient_id: str, action: AccessAction
) -> None:
    """Access-log ``action`` on the patient, if the clinician's team may read them: its own
    patient, or one of its on-call alerts (:func:`visible_patient_sql`)."""
    await visible_patient(conn, who, patient_id, action, on_call=True)
    await log_access(conn, metrics, who, [patient_id], action, requested_id=patient_id)


async def visible_patient(
    conn: Conn,
    who: Clinician,
    patient_id: str,
    action: AccessAction,
    *,
    lock: bool = False,
    on_call: bool = False,
) -> None:
    """Raise :class:`NotVisibleError` unless the patient is the clinician's team's.

    ``on_call``: or the team holds an active alert of the patient as an out-of-hours
    route (reads; changing a plan, or previewing one, stays the patient's own team's).
    Logs nothing when visible: the caller logs once it knows the action went ahead.
    ``lock`` holds the patient's row (``FOR NO KEY UPDATE``) to the end of the transaction.
    """
    suffix = " FOR NO KEY UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {visible_patient_sql('$2', on_call=on_call)} AS visible "
        f"FROM patients p WHERE p.id = $1{suffix}",
        patient_id,
        who.care_team_id,
    )
    if row is None or not row["visible"]:
        known = patient_id if row is not None else None
        raise NotVisibleError(who, action, "patient", patient_id, known)


async def record_denied(request: Request, exc: NotVisibleError) -> None:
    """Log and count the denial of ``exc``: what every answer to it does first."""
    svc = services(request)
    # Raised inside the request's transaction, which rolled back; the denial is
    # written on its own and committed. If that write fails the client gets a 500,
    # not a 404: an attempt nobody can follow up is not answered as handled.
    async with svc.pool.acquire() as conn:
        await log_denied(conn, exc.who, exc.patient_id, exc.action, exc.requested_id)
    svc.metrics.api_denied.labels("not_visible").inc()


async def not_visible(request: Request, exc: NotVisibleError) -> Response:
    """The exception handler for :class:`NotVisibleError`: log the denial, answer 404.

    The web app's pages answer with a page of their own (:mod:`homemonitor.web.base`).
    """
    await record_denied(request, exc)
    if request.url.path.startswith(FHIR_BASE + "/"):  # a FHIR client reads an OperationOutcome
        body = operation_outcome(str(exc), "not-found")
        return JSONResponse(body, status_code=404, media_type=FHIR_JSON)
    return JSONResponse({"detail": str(exc)}, status_code=404)
