"""What the API answers and accepts: the response and request bodies, the path ids, and the
error statuses each route documents in the OpenAPI document besides 200 and 422."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from homemonitor.fields import BIGINT_MAX, ID_PATTERN, PlainText


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
    flags: list[str] = Field(
        description="The service's clock findings: clock_future, clock_stale (not current)."
    )
    quality: list[str] = Field(
        description=(
            "What the device said of the measurement (body_movement, cuff_loose, "
            "low_perfusion, ...; docs/protocol.md); empty when it noticed nothing."
        )
    )


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


# The columns a route selects to fill AlertOut and ReadingOut.
ALERT_COLUMNS = ", ".join(AlertOut.model_fields)
READING_COLUMNS = ", ".join(ReadingOut.model_fields)

AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX, examples=[1], description="The alert's id.")]
PatientId = Annotated[
    str,
    Path(pattern=ID_PATTERN, examples=["p-0001"], description="The patient's registry id."),
]

# What each route can answer besides 200 and FastAPI's 422, for the OpenAPI document.
Responses = dict[int | str, dict[str, Any]]
UNAUTHENTICATED: Responses = {
    401: {
        "model": ErrorOut,
        "description": "No bearer token, or an unknown or revoked one.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    }
}
NO_ALERT: Responses = {404: {"model": ErrorOut, "description": "No such alert in your care team."}}
NO_PATIENT: Responses = {
    404: {"model": ErrorOut, "description": "No such patient in your care team."}
}
RESOLVED: Responses = {409: {"model": ErrorOut, "description": "The alert is already resolved."}}
UNPARSABLE: Responses = {400: {"model": ErrorOut, "description": "The body is not UTF-8 JSON."}}
