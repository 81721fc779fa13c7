"""What the API answers and accepts: the response and request bodies, the path ids, and the
error statuses each route documents in the OpenAPI document besides 200 and 422."""

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from homemonitor.contract.protocol import GATEWAY_ID_PATTERN, Timestamp
from homemonitor.contract.readings import Reason
from homemonitor.fields import BIGINT_MAX, ID_PATTERN, PlainText
from homemonitor.rules.plan import CarePlanSpec, RuleSpec

#: An alert's statuses: the active ones first (one per patient and rule at most).
AlertStatus = Literal[
    "pending", "open", "acknowledged", "cleared", "resolved", "auto_resolved", "withdrawn"
]
ACTIVE_STATUSES = ("open", "acknowledged", "cleared")  # what a clinician has to act on
ENDED_STATUSES = ("resolved", "auto_resolved", "withdrawn")


class ExplanationOut(BaseModel):
    """Why an alert is as it is: the rule's assessment at one evaluation point."""

    sentence: str = Field(description="One plain sentence a nurse can read (English).")
    sentences: dict[str, str] = Field(
        default_factory=dict,
        description="The same sentence by language: sv (Swedish) and en (English). An alert "
        "stored before sentences had languages has en only.",
    )
    facts: dict[str, float | int | str | None] = Field(
        description="The numbers the rule used: value, window, reference, mean, delta, n, ..."
    )
    plan_version: int = Field(description="The care-plan version the rule came from.")

    @model_validator(mode="after")
    def _english_at_least(self) -> Self:
        if not self.sentences and self.sentence:
            self.sentences = {"en": self.sentence}
        return self


class AlertOut(BaseModel):
    id: int
    patient_id: str
    care_team_id: str
    rule: str = Field(description="The rule's id in the care plan, e.g. weight.gain_3d.")
    kind: Literal["threshold", "change", "average", "baseline", "score", "missing"]
    quantity: str | None = Field(description="The quantity the rule reads, if only one.")
    direction: Literal["high", "low", "rise", "fall"] | None
    severity: Literal["warning", "urgent"] = Field(description="The level now.")
    peak_severity: Literal["warning", "urgent"] = Field(description="The worst it reached.")
    status: AlertStatus = Field(
        description="pending (waiting for a retake until due_at), open, acknowledged, "
        "cleared (its rule cleared; latching: it waits for a clinician), resolved (by a "
        "clinician), auto_resolved (cleared by itself), withdrawn (an artefact: no alert)."
    )
    plan_version: int = Field(description="The plan version it opened under.")
    threshold: float | None = Field(description="The bound it crossed, where the rule has one.")
    opened_at: datetime
    updated_at: datetime
    due_at: datetime | None
    cleared_at: datetime | None
    opening_device_id: str
    opening_measured_at: datetime
    opening_value: float | None
    worst_value: float | None
    last_measured_at: datetime
    breach_count: int
    opening_explanation: ExplanationOut
    latest_explanation: ExplanationOut
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    actionable: bool | None = Field(
        description="The resolving clinician's answer: did it lead to an action? (None: unsaid)"
    )
    assigned_to: str | None = Field(
        description="Whose it is: the patient's care contact at first, then who it is assigned to."
    )
    escalation_level: Literal["care_contact", "team", "out_of_hours"] | None = Field(
        description="Who was addressed last (docs/alerts.md); None before routing existed."
    )
    routed_to: str | None = Field(
        description="The out-of-hours care team it was routed or escalated to, which sees it."
    )
    snoozed_until: datetime | None = Field(
        description="Escalation waits until then (a clinician's snooze); None: not snoozed."
    )

    @field_validator("opening_explanation", "latest_explanation", mode="before")
    @classmethod
    def _decode(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value  # a jsonb column


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
    actionable: bool | None = Field(
        default=None,
        strict=True,
        description="Did this alert lead to an action (a call, a visit, a changed dose)?",
    )


class CommentIn(BaseModel):
    text: PlainText = Field(min_length=1, max_length=2000, description="The note, for the team.")


class AssignIn(BaseModel):
    clinician_id: str = Field(
        pattern=ID_PATTERN,
        description="A clinician of the alert's care team (or out-of-hours team).",
    )


class SnoozeIn(BaseModel):
    minutes: int = Field(ge=1, le=24 * 60, description="How long escalation waits: 24 h at most.")
    reason: PlainText = Field(min_length=1, max_length=500, description="Why not now.")


class AlertEventOut(BaseModel):
    """One transition of an alert: what, when, and who (a rule, a clinician, the scheduler)."""

    id: int
    at: datetime
    kind: Literal[
        "pending",
        "withdrawn",
        "opened",
        "severity_changed",
        "updated",
        "cleared",
        "reopened",
        "auto_resolved",
        "acknowledged",
        "resolved",
        "assigned",
        "notified",
        "commented",
        "escalated",
        "snoozed",
        "snooze_ended",
    ]
    actor: Literal["rule", "clinician", "scheduler"]
    clinician_id: str | None = Field(description="Who, when the actor is a clinician.")
    details: dict[str, Any] = Field(
        description="What the transition says: severity, value, sentence, note, reason, "
        'until, and "to" (who is addressed: level, clinicians, team) where someone is.'
    )

    @field_validator("details", mode="before")
    @classmethod
    def _decode(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value  # a jsonb column


class CarePlanOut(BaseModel):
    """A patient's current care plan: the spec as written and the rules it resolves to."""

    patient_id: str
    version: int | None = Field(description="None: the patient has no care plan.")
    changed_by: str | None
    reason: str
    created_at: datetime | None
    spec: CarePlanSpec | None
    rules: list[RuleSpec] = Field(
        description="The concrete rules the patient is evaluated with (template applied)."
    )


class CarePlanVersionOut(BaseModel):
    version: int
    changed_by: str | None
    reason: str
    created_at: datetime
    spec: CarePlanSpec


class CarePlanChangeIn(BaseModel):
    """The next version of a patient's care plan."""

    spec: CarePlanSpec
    reason: PlainText = Field(min_length=1, max_length=2000, description="Why it changes.")
    based_on: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="The version this change was made from; 409 when a newer one exists.",
    )


class ErrorOut(BaseModel):
    detail: str = Field(description="What is wrong, for a person to read.")


class ReadyOut(BaseModel):
    ready: bool
    storage_mode: str | None
    broker_connected: bool
    database_ok: bool
    registry_loaded: bool


#: Where the FHIR R4 API lives (homemonitor.api.fhir); its errors are OperationOutcomes.
FHIR_BASE = "/fhir/r4"
FHIR_JSON = "application/fhir+json"


# The columns a route selects to fill AlertOut and ReadingOut.
ALERT_COLUMNS = ", ".join(AlertOut.model_fields)
EVENT_COLUMNS = ", ".join(AlertEventOut.model_fields)
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
RESOLVED: Responses = {
    409: {
        "model": ErrorOut,
        "description": "The alert has ended (resolved, auto-resolved, withdrawn).",
    }
}
REFUSED: Responses = {
    409: {
        "model": ErrorOut,
        "description": "The alert has ended, or does not allow this (an urgent alert cannot "
        "be snoozed; the assignee is not of its care team).",
    }
}
PLAN_CONFLICT: Responses = {
    409: {"model": ErrorOut, "description": "A newer version than based_on exists."}
}
UNPARSABLE: Responses = {400: {"model": ErrorOut, "description": "The body is not UTF-8 JSON."}}


# --- the quarantine, for the ops role (homemonitor.api.quarantine) ------------------------


def _in_utc(value: datetime) -> datetime:
    """An aware time the database can take: in UTC, inside the years 1 to 9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        msg = "out of range once in UTC"
        raise ValueError(msg) from None


#: A time as the gateway contract writes one (to the second, with a UTC offset; no Unix
#: times), that the database can take; ``since`` is inclusive, ``until`` exclusive.
Moment = Annotated[Timestamp, AfterValidator(_in_utc)]
QuarantineId = Annotated[
    int, Path(ge=1, le=BIGINT_MAX, examples=[1], description="The quarantine row's id.")
]
GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN, examples=["gw-1"])]


class QuarantineRowOut(BaseModel):
    """What arrived and why it was refused; never the payload, which holds measured values."""

    id: int
    received_at: datetime
    topic: str
    gateway_id: str | None
    reason: str = Field(description="Why it was refused (docs/protocol.md lists the reasons).")
    detail: str = Field(description="What was wrong, naming fields and limits, never values.")
    item_index: int = Field(description="The reading's place in a batch; -1: the whole message.")
    device_id: str | None
    size: int = Field(description="The raw payload's length in bytes.")
    sha256: str = Field(description="The raw payload's SHA-256, hex.")
    replayed_at: datetime | None
    replayed_by: str | None = Field(description="Who replayed it last (a user id, cli:<user>).")
    replay_outcome: str | None = Field(
        description="What the last replay made of it: 'stored', or the reason it is still refused."
    )
    replay_count: int


class QuarantineCountOut(BaseModel):
    reason: str
    rows: int
    oldest: datetime
    newest: datetime


class QuarantineListOut(BaseModel):
    counts: list[QuarantineCountOut] = Field(description="Every matching row, by reason.")
    rows: list[QuarantineRowOut] = Field(description="The newest matching rows, up to limit.")


class ReplayIn(BaseModel):
    """Which quarantine rows to replay: every field given must match; say at least one of
    ids, reason, gateway, since or until (pending alone would replay everything)."""

    model_config = ConfigDict(extra="forbid")

    # Bounded by 2**53 - 1, not the bigint's end: FastAPI writes a body's bounds as floats,
    # and 2**63 - 1 as a float is 2**63, which the document would then call valid.
    ids: list[Annotated[int, Field(ge=1, le=2**53 - 1, strict=True)]] = Field(
        default=[], max_length=1000
    )
    reason: Reason | None = None
    gateway: GatewayId | None = None
    since: Moment | None = None
    until: Moment | None = None
    pending: bool = Field(
        default=False,
        strict=True,  # true or false, not 0, 1 or "yes"
        description="Only rows never replayed, or not stored by their last replay.",
    )

    @model_validator(mode="after")
    def _says_what(self) -> "ReplayIn":
        if not (self.ids or self.reason or self.gateway or self.since or self.until):
            msg = "say what to replay: ids, or reason, gateway, since or until"
            raise ValueError(msg)
        return self


class ReplayOut(BaseModel):
    """What a replay did (homemonitor.ingest.quarantine.ReplaySummary)."""

    messages: int = Field(description="Messages replayed (a batch's rows are one message).")
    rows: int = Field(description="Quarantine rows that record this replay.")
    stored: int = Field(description="Readings new in the record.")
    already_stored: int = Field(description="Readings that were stored already (kept once).")
    still_refused: dict[str, int] = Field(description="Rows still refused, by reason.")
    opened: dict[str, int] = Field(description="Alerts the stored readings opened, by severity.")


NOT_OPS: Responses = {
    403: {"model": ErrorOut, "description": "Your role is not ops (homemonitor registry)."}
}
NO_QUARANTINE_ROW: Responses = {404: {"model": ErrorOut, "description": "No such quarantine row."}}
