"""A care team's patients: recent readings and the hourly trend."""

from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query

from homemonitor.access_actions import AccessAction
from homemonitor.api.access import team_patient
from homemonitor.api.deps import Me, Services, Svc
from homemonitor.api.models import (
    NO_PATIENT,
    READING_COLUMNS,
    UNAUTHENTICATED,
    PatientId,
    ReadingOut,
    TrendPointOut,
)

router = APIRouter(tags=["patients"])

Days = Annotated[int, Query(ge=1, le=365)]


async def _since(
    svc: Services, who: Me, patient_id: str, days: int, *, action: AccessAction, sql: str
) -> list[asyncpg.Record]:
    """Rows of ``sql`` ($1 the patient, $2 the start) once the read is access-logged.

    The care-team check and the access-log row are committed on the primary first; the
    rows then come from :attr:`Services.reads` (a replica, if configured).
    """
    since = datetime.now(UTC) - timedelta(days=days)
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, action)
    async with svc.reads.acquire() as conn:
        return await conn.fetch(sql, patient_id, since)


@router.get(
    "/api/v1/patients/{patient_id}/readings",
    summary="Recent readings.",
    responses=UNAUTHENTICATED | NO_PATIENT,
)
async def patient_readings(
    svc: Svc, who: Me, patient_id: PatientId, days: Days = 14
) -> list[ReadingOut]:
    rows = await _since(
        svc,
        who,
        patient_id,
        days,
        action="view_readings",
        sql=f"SELECT {READING_COLUMNS} FROM readings WHERE patient_id = $1 "
        "AND measured_at >= $2 ORDER BY measured_at DESC LIMIT 5000",
    )
    return [ReadingOut(**dict(r)) for r in rows]


@router.get(
    "/api/v1/patients/{patient_id}/trend",
    summary="Hourly trend.",
    responses=UNAUTHENTICATED | NO_PATIENT,
)
async def patient_trend(
    svc: Svc, who: Me, patient_id: PatientId, days: Days = 14
) -> list[TrendPointOut]:
    rows = await _since(
        svc,
        who,
        patient_id,
        days,
        action="view_trend",
        sql="SELECT metric, bucket, n, systolic, diastolic, heart_rate, body_weight, spo2 "
        "FROM readings_hourly WHERE patient_id = $1 AND bucket >= $2 ORDER BY bucket",
    )
    return [TrendPointOut(**dict(r)) for r in rows]
