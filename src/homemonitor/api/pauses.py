"""A patient's pauses: planned absences and admissions, when no missing data is expected.

A clinician of the patient's care team lists, adds and deletes them; each is access-logged
(``view_pauses``, ``add_pause``, ``delete_pause``), denied attempts too. During a pause
the silence job raises no missing-data alert for the patient, and the silence is counted
again from its end (:mod:`homemonitor.alerts.silence`). Pauses kept in the registry file
are listed here but changed only there (409).
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field

from homemonitor.api.access import team_patient
from homemonitor.api.deps import Me, Svc
from homemonitor.api.models import NO_PATIENT, UNAUTHENTICATED, UNPARSABLE, ErrorOut, PatientId
from homemonitor.fields import BIGINT_MAX
from homemonitor.registry import pauses
from homemonitor.registry.pauses import PauseIn

router = APIRouter(tags=["pauses"])

PauseId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="The pause's id.")]


class PauseOut(BaseModel):
    id: int
    starts: datetime = Field(serialization_alias="from", description="When the pause begins.")
    until: datetime | None = Field(description="When it ends; null while open (an admission).")
    reason: str = Field(description="absence, admission or other.")
    source: str = Field(description="registry (changed in the registry file) or api.")
    created_by: str | None = Field(description="The clinician who added it (api).")
    created_at: datetime

    @classmethod
    def of(cls, p: pauses.Pause) -> "PauseOut":
        return cls.model_validate(p, from_attributes=True)


_PATH = "/api/v1/patients/{patient_id}/pauses"


@router.get(
    _PATH,
    summary="The patient's pauses, newest first.",
    responses=UNAUTHENTICATED | NO_PATIENT,
    response_model_by_alias=True,
)
async def list_pauses(svc: Svc, who: Me, patient_id: PatientId) -> list[PauseOut]:
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "view_pauses")
        return [PauseOut.of(p) for p in await pauses.of_patient(conn, patient_id)]


@router.post(
    _PATH,
    status_code=201,
    summary="Add a pause (a planned absence or an admission).",
    responses=UNAUTHENTICATED | NO_PATIENT | UNPARSABLE,
    response_model_by_alias=True,
)
async def add_pause(svc: Svc, who: Me, patient_id: PatientId, body: PauseIn) -> PauseOut:
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "add_pause")
        return PauseOut.of(await pauses.add(conn, patient_id, body, who.id))


@router.delete(
    _PATH + "/{pause_id}",
    status_code=204,
    summary="Delete a pause added through the API.",
    responses=UNAUTHENTICATED
    | {
        404: {"model": ErrorOut, "description": "No such patient in your team, or pause."},
        409: {"model": ErrorOut, "description": "The pause is kept in the registry file."},
    },
)
async def delete_pause(svc: Svc, who: Me, patient_id: PatientId, pause_id: PauseId) -> Response:
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "delete_pause")
        if await pauses.delete(conn, patient_id, pause_id) is None:
            known = [p for p in await pauses.of_patient(conn, patient_id) if p.id == pause_id]
            if known:
                raise HTTPException(409, "this pause is kept in the registry file: change it there")
            raise HTTPException(404, "no such pause of this patient")
    return Response(status_code=204)
