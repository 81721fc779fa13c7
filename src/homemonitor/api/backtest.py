"""Backtesting a proposed care plan on a patient's stored history, before saving it.

``POST /api/v1/patients/{id}/care-plan/backtest`` replays the patient's readings of the
last ``days`` through their current plan and through the proposed one (the engine the
worker runs, the same simulated clinician on both sides) and answers the report of
:mod:`homemonitor.rules.backtest`: alerts by severity and one by one, side by side, with
the alerts the database holds from the period. It changes nothing; the read is
access-logged as ``rules_backtest`` (another team's patient: 404 and a denied row), like
``homemonitor rules backtest``.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from homemonitor.access_actions import AccessAction
from homemonitor.api.access import log_access, visible_patient
from homemonitor.api.deps import Me, Svc
from homemonitor.api.models import NO_PATIENT, UNAUTHENTICATED, UNPARSABLE, PatientId
from homemonitor.api.plans import INVALID_PLAN, unresolvable
from homemonitor.rules.backtest import BacktestIn, Proposal, ReportOut
from homemonitor.storage import backtest

router = APIRouter(tags=["care plans"])

ACTION: AccessAction = "rules_backtest"


@router.post(
    "/api/v1/patients/{patient_id}/care-plan/backtest",
    summary="What a proposed care plan would have raised on the patient's stored history.",
    response_model=ReportOut,
    responses=UNAUTHENTICATED | NO_PATIENT | UNPARSABLE | INVALID_PLAN,
)
async def backtest_care_plan(
    svc: Svc, who: Me, patient_id: PatientId, body: Annotated[BacktestIn, Body()]
) -> ReportOut | JSONResponse:
    refused = unresolvable(body.spec)
    if refused is not None:
        return refused
    async with svc.pool.acquire() as conn, conn.transaction():
        await visible_patient(conn, who, patient_id, ACTION)

        async def before_read(ids: Sequence[str]) -> None:
            await log_access(conn, svc.metrics, who, ids, ACTION, requested_id=patient_id)

        # Not strict: a current plan that no longer resolves (a template changed under
        # it) is a report that says so, not an error of the request.
        return await backtest.run(
            conn,
            [patient_id],
            Proposal(spec=body.spec),
            days=body.days,
            until=datetime.now(UTC),
            before_read=before_read,
            strict=False,
        )
