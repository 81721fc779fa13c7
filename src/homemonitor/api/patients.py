"""A care team's patients: recent readings and the hourly trend."""

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from homemonitor.api.access import team_patient
from homemonitor.api.deps import Me, Svc
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


@router.get(
    "/api/v1/patients/{patient_id}/readings",
    summary="Recent readings.",
    responses=UNAUTHENTICATED | NO_PATIENT,
)
async def patient_readings(
    svc: Svc, who: Me, patient_id: PatientId, days: Days = 14
) -> list[ReadingOut]:
    since = datetime.now(UTC) - timedelta(days=days)
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "view_readings")
        rows = await conn.fetch(
            f"SELECT {READING_COLUMNS} FROM readings WHERE patient_id = $1 "
            "AND measured_at >= $2 ORDER BY measured_at DESC LIMIT 5000",
            patient_id,
            since,
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
    since = datetime.now(UTC) - timedelta(days=days)
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "view_trend")
        rows = await conn.fetch(
            "SELECT metric, bucket, n, systolic, diastolic, heart_rate, body_weight, spo2 "
            "FROM readings_hourly WHERE patient_id = $1 AND bucket >= $2 ORDER BY bucket",
            patient_id,
            since,
        )
    return [TrendPointOut(**dict(r)) for r in rows]
