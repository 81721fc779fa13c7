"""A patient's care plan: the current version and its rules, the history, a new version.

Reads and the change are access-logged like every other patient read (``view_care_plan``,
``view_care_plan_versions``, ``change_care_plan``), denied attempts too. A new version is
resolved before it is stored (an invalid plan is a 422 that names the problem), records
who made it and why, and bumps the registry revision with ``NOTIFY homemonitor_registry``
in the same transaction, so every worker evaluates the patient's next readings with it.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import JSONResponse

from homemonitor.api.access import log_access, team_patient, visible_patient
from homemonitor.api.deps import Me, Svc
from homemonitor.api.models import (
    NO_PATIENT,
    PLAN_CONFLICT,
    UNAUTHENTICATED,
    UNPARSABLE,
    CarePlanChangeIn,
    CarePlanOut,
    CarePlanVersionOut,
    PatientId,
)
from homemonitor.errors import PlanError
from homemonitor.registry import NOTIFY_CHANNEL, plans
from homemonitor.rules.plan import CarePlanSpec
from homemonitor.storage.database import Conn

router = APIRouter(tags=["care plans"])


async def _current(conn: Conn, patient_id: str) -> CarePlanOut:
    version = await plans.current(conn, patient_id)
    if version is None:
        return CarePlanOut(
            patient_id=patient_id,
            version=None,
            changed_by=None,
            reason="",
            created_at=None,
            spec=None,
            rules=[],
        )
    try:
        rules = list(plans.resolved(version.spec, version.version).rules)
    except PlanError:  # a template changed under it: the worker runs an older version
        rules = []
    return CarePlanOut(
        patient_id=patient_id,
        version=version.version,
        changed_by=version.changed_by,
        reason=version.reason,
        created_at=version.created_at,
        spec=version.spec,
        rules=rules,
    )


@router.get(
    "/api/v1/patients/{patient_id}/care-plan",
    summary="The current care plan and the rules it resolves to.",
    responses=UNAUTHENTICATED | NO_PATIENT,
)
async def care_plan(svc: Svc, who: Me, patient_id: PatientId) -> CarePlanOut:
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "view_care_plan")
        return await _current(conn, patient_id)


@router.get(
    "/api/v1/patients/{patient_id}/care-plan/versions",
    summary="Every version of the care plan, newest first, with who and why.",
    responses=UNAUTHENTICATED | NO_PATIENT,
)
async def care_plan_versions(svc: Svc, who: Me, patient_id: PatientId) -> list[CarePlanVersionOut]:
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "view_care_plan_versions")
        versions = await plans.history(conn, patient_id)
    return [
        CarePlanVersionOut(
            version=v.version,
            changed_by=v.changed_by,
            reason=v.reason,
            created_at=v.created_at,
            spec=v.spec,
        )
        for v in versions
    ]


INVALID_PLAN: dict[int | str, dict[str, Any]] = {
    422: {"description": "The request, or the plan it carries, is invalid (each problem named)."}
}


def unresolvable(spec: CarePlanSpec) -> JSONResponse | None:
    """The 422 of a plan that validates but cannot be resolved (an unknown template, a rule
    relative to a personal value it does not set), or None. Asked before any patient: what
    is wrong with a plan says nothing about them."""
    try:
        plans.resolved(spec, 1)
    except PlanError as exc:
        detail = [{"type": "care_plan", "loc": ["body", "spec"], "msg": str(exc)}]
        return JSONResponse({"detail": detail}, status_code=422)
    return None


@router.post(
    "/api/v1/patients/{patient_id}/care-plan",
    summary="Save the next version of the care plan, with why.",
    status_code=201,
    response_model=CarePlanOut,
    responses=UNAUTHENTICATED | NO_PATIENT | PLAN_CONFLICT | UNPARSABLE | INVALID_PLAN,
)
async def change_care_plan(
    svc: Svc, who: Me, patient_id: PatientId, body: Annotated[CarePlanChangeIn, Body()]
) -> CarePlanOut | JSONResponse:
    refused = unresolvable(body.spec)
    if refused is not None:
        return refused
    async with svc.pool.acquire() as conn, conn.transaction():
        # One change at a time per patient; FOR NO KEY UPDATE leaves readings' foreign-key
        # checks (FOR KEY SHARE) alone, so the worker never waits for it.
        await visible_patient(conn, who, patient_id, "change_care_plan", lock=True)
        latest = await conn.fetchval(
            "SELECT max(version) FROM care_plans WHERE patient_id = $1", patient_id
        )
        if body.based_on is not None and body.based_on != latest:  # nothing changed: no row
            raise HTTPException(409, f"version {latest} is newer than based_on")
        version = (latest or 0) + 1
        await plans.add(conn, patient_id, version, body.spec, changed_by=who.id, reason=body.reason)
        await log_access(
            conn, svc.metrics, who, [patient_id], "change_care_plan", requested_id=patient_id
        )
        await conn.execute("UPDATE registry_revision SET revision = revision + 1")
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        return await _current(conn, patient_id)
