"""Stored readings and alerts as FHIR R4 resources: pure functions, no I/O.

A reading becomes an ``Observation`` in the HL7 vital-signs profile of its metric (blood
pressure, body weight, oxygen saturation, heart rate); an alert becomes a ``Flag``
(``docs/fhir.md`` says why a Flag and not a Communication or a DetectedIssue). The codes
come from the inbound decoder's tables (:mod:`homemonitor.decoding.fhir`): what we emit is
what we would accept, and a test feeds every emitted Observation back through the decoder.

Patients are referred to by identifier, never by a literal reference: homemonitor serves
no Patient resource, and its patient ids are opaque registry ids, not personal identity
numbers. The identifier system is the region's (``HOMEMONITOR_FHIR_PATIENT_SYSTEM``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from homemonitor.contract.readings import QUANTITIES, Metric, Quantity
from homemonitor.decoding.fhir import COMPONENT_CODES, LOINC, METRIC_CODES, UCUM

#: homemonitor's own patient ids (registry ids, not personnummer): a region that keys its
#: journal by another identifier maps these, or configures the system its journal knows.
DEFAULT_PATIENT_SYSTEM = "urn:homemonitor:patient"
DEVICE_SYSTEM = "urn:homemonitor:device"
READING_SYSTEM = "urn:homemonitor:reading"
ALERT_SYSTEM = "urn:homemonitor:alert"
RULE_SYSTEM = "urn:homemonitor:rule"
#: An extension of ours on Flag: the episode's workflow status (open, acknowledged,
#: resolved), which Flag.status (active, inactive) cannot tell apart.
ALERT_STATUS_EXTENSION = "urn:homemonitor:fhir:alert-status"

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_PRIORITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY_CODES = "http://hl7.org/fhir/flag-priority-code"
FLAG_DETAIL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-detail"
_PROFILE_BASE = "http://hl7.org/fhir/StructureDefinition/"

#: The HL7 vital-signs profile of each metric and the LOINC code that profile fixes for
#: ``Observation.code`` (it comes first; the decoder's other LOINC codes of the metric follow).
PROFILES: dict[Metric, tuple[str, str]] = {
    Metric.BLOOD_PRESSURE: (_PROFILE_BASE + "bp", "85354-9"),
    Metric.BODY_WEIGHT: (_PROFILE_BASE + "bodyweight", "29463-7"),
    Metric.SPO2: (_PROFILE_BASE + "oxygensat", "2708-6"),
    Metric.HEART_RATE: (_PROFILE_BASE + "heartrate", "8867-4"),
}

#: LOINC display names (the LOINC long common names the FHIR examples use).
LOINC_DISPLAY = {
    "85354-9": "Blood pressure panel with all children optional",
    "8480-6": "Systolic blood pressure",
    "8462-4": "Diastolic blood pressure",
    "8478-0": "Mean blood pressure",
    "8867-4": "Heart rate",
    "29463-7": "Body weight",
    "2708-6": "Oxygen saturation in Arterial blood",
    "59408-5": "Oxygen saturation in Arterial blood by Pulse oximetry",
}

#: A canonical unit (:attr:`Quantity.unit`) as UCUM code and as shown to a person.
UCUM_UNITS = {
    "mmHg": ("mm[Hg]", "mmHg"),
    "kg": ("kg", "kg"),
    "%": ("%", "%"),
    "/min": ("/min", "beats/minute"),
}

#: The quantity carried as ``valueQuantity`` per metric; the others are components.
VALUE_QUANTITY: dict[Metric, Quantity | None] = {
    Metric.BLOOD_PRESSURE: None,  # the bp profile: a panel, values in components only
    Metric.BODY_WEIGHT: Quantity.BODY_WEIGHT,
    Metric.SPO2: Quantity.SPO2,
    Metric.HEART_RATE: Quantity.HEART_RATE,
}

#: An alert episode's status as ``Flag.status``: active while a clinician must see it.
#: Besides open, acknowledged and resolved, the statuses of the rules engine (issue #10):
#: a pending breach is no alert yet and is not exported; a withdrawn one never was.
FLAG_STATUS: dict[str, str | None] = {
    "open": "active",
    "acknowledged": "active",
    "cleared": "active",  # a latching episode whose rule cleared stays until resolved
    "resolved": "inactive",
    "auto_resolved": "inactive",
    "withdrawn": "entered-in-error",
    "pending": None,
}

#: Alert severity as the Flag Priority extension's code (HL7 flag-priority-code).
FLAG_PRIORITY = {
    "warning": ("PM", "Medium priority"),
    "urgent": ("PH", "High priority"),
}

#: A stable namespace for reading ids: uuid5(namespace, natural key).
_READING_NAMESPACE = uuid.UUID("6d1f4b0e-5c1e-4f57-9a53-2f0d4a6a8c11")


def _metric_loinc(metric: Metric) -> list[str]:
    """The LOINC codes for ``metric``: the profile's own first, then the decoder's others."""
    fixed = PROFILES[metric][1]
    others = [c for (s, c), m in METRIC_CODES.items() if s == LOINC and m is metric and c != fixed]
    return [fixed, *others]


#: One LOINC code per component quantity, from the decoder's table.
COMPONENT_LOINC: dict[Quantity, str] = {
    quantity: code for (system, code), quantity in COMPONENT_CODES.items() if system == LOINC
}


class Row(Protocol):
    """A database row by column name (an asyncpg Record, or a dict in tests)."""

    def __getitem__(self, key: str, /) -> Any: ...

    def __contains__(self, key: object, /) -> bool: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ReadingRecord:
    """A stored reading as the ``readings`` table holds it (canonical units)."""

    device_id: str
    metric: Metric
    measured_at: datetime
    received_at: datetime
    stored_at: datetime
    patient_id: str
    values: Mapping[Quantity, float]
    flags: Sequence[str] = ()
    quality: Sequence[str] = ()

    @classmethod
    def from_row(cls, row: Row) -> ReadingRecord:
        """From a row with the readings columns (one per quantity, NULL when absent)."""
        values = {q: float(row[q.value]) for q in QUANTITIES if row[q.value] is not None}
        return cls(
            device_id=row["device_id"],
            metric=Metric(row["metric"]),
            measured_at=row["measured_at"],
            received_at=row["received_at"],
            stored_at=row["stored_at"],
            patient_id=row["patient_id"],
            values=values,
            flags=tuple(row["flags"] or ()),
            quality=tuple(row["quality"] or ()),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert episode as the ``alerts`` table holds it.

    ``explanation`` is the stored sentence when there is one (the rules engine's
    ``latest_explanation``); without it :func:`explanation` writes one from the columns.
    """

    id: int
    patient_id: str
    rule: str
    quantity: str | None
    direction: str | None
    severity: str
    status: str
    plan_version: int
    threshold: float | None
    opened_at: datetime
    updated_at: datetime
    opening_device_id: str
    opening_metric: str
    opening_measured_at: datetime
    opening_value: float | None
    worst_value: float | None
    breach_count: int
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    explanation: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> AlertRecord:
        """From a row with (at least) this class's fields as columns."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: row[name] for name in fields if name in row})


def instant(moment: datetime) -> str:
    """A FHIR ``instant``: UTC, seconds always, microseconds when there are any.

    >>> instant(datetime(2026, 3, 1, 8, 30, tzinfo=UTC))
    '2026-03-01T08:30:00Z'
    """
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def reading_key(device_id: str, metric: Metric | str, measured_at: datetime) -> str:
    """The natural key of a stored reading as one string: device, metric, measured time."""
    return f"{device_id}/{Metric(metric).value}/{instant(measured_at)}"


def observation_id(device_id: str, metric: Metric | str, measured_at: datetime) -> str:
    """The Observation id of a reading: a UUID derived from its natural key, so it is the
    same in every search and export, and a re-sent reading (stored once) has one id.

    >>> observation_id("cuff-1", "blood_pressure", datetime(2026, 3, 1, 8, 30, tzinfo=UTC))
    '92599e08-b2ed-5745-a1a2-d9f84d599116'
    """
    return str(uuid.uuid5(_READING_NAMESPACE, reading_key(device_id, metric, measured_at)))


def _quantity(quantity: Quantity, value: float) -> dict[str, Any]:
    code, shown = UCUM_UNITS[quantity.unit]
    return {"value": value, "unit": shown, "system": UCUM, "code": code}


def _loinc(code: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code, "display": LOINC_DISPLAY[code]}]}


def patient_reference(patient_id: str, system: str) -> dict[str, Any]:
    """A logical reference to the patient: by identifier in the region's system."""
    return {"type": "Patient", "identifier": {"system": system, "value": patient_id}}


def observation(reading: ReadingRecord, patient_system: str) -> dict[str, Any]:
    """The reading as an Observation in its metric's HL7 vital-signs profile."""
    metric = reading.metric
    profile, _ = PROFILES[metric]
    codes = _metric_loinc(metric)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(reading.device_id, metric, reading.measured_at),
        "meta": {"profile": [profile], "lastUpdated": instant(reading.stored_at)},
        "identifier": [
            {
                "system": READING_SYSTEM,
                "value": reading_key(reading.device_id, metric, reading.measured_at),
            }
        ],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": OBSERVATION_CATEGORY,
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ],
                "text": "Vital Signs",
            }
        ],
        "code": {
            "coding": [
                {"system": LOINC, "code": code, "display": LOINC_DISPLAY[code]} for code in codes
            ],
            "text": LOINC_DISPLAY[codes[0]],
        },
        "subject": patient_reference(reading.patient_id, patient_system),
        "effectiveDateTime": instant(reading.measured_at),
        "issued": instant(reading.received_at),
    }
    main = VALUE_QUANTITY[metric]
    if main is not None:
        resource["valueQuantity"] = _quantity(main, reading.values[main])
    components = [
        {"code": _loinc(COMPONENT_LOINC[q]), "valueQuantity": _quantity(q, reading.values[q])}
        for q in QUANTITIES
        if q is not main and q in reading.values
    ]
    if components:
        resource["component"] = components
    notes = _notes(reading)
    if notes:
        resource["note"] = notes
    resource["device"] = {
        "type": "Device",
        "identifier": {"system": DEVICE_SYSTEM, "value": reading.device_id},
        "display": reading.device_id,
    }
    return resource


def _notes(reading: ReadingRecord) -> list[dict[str, str]]:
    """What the device said of the measurement, and what homemonitor's clock check found.

    R4 has no element for a device's own doubt about a measurement (``interpretation``
    judges the value against a range): a note is what a journal shows a person.
    """
    notes = []
    if reading.quality:
        notes.append(
            {"text": "Measurement quality reported by the device: " + ", ".join(reading.quality)}
        )
    if reading.flags:
        notes.append(
            {
                "text": "Not current by homemonitor's clock check (device clock suspect): "
                + ", ".join(reading.flags)
            }
        )
    return notes


_QUANTITY_NAMES = frozenset(q.value for q in Quantity)


def explanation(alert: AlertRecord) -> str:
    """The stored explanation sentence, or one written from the episode's columns.

    >>> now = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    >>> print(explanation(AlertRecord(1, "p", "spo2.low", "spo2", "low", "urgent", "open",
    ...     2, 88.0, now, now, "oxi-1", "spo2", now, 87.0, 85.0, 3)))
    spo2 87 %, at or below the urgent limit 88 % (care plan version 2); worst 85 % over 3 readings
    """
    if alert.explanation:
        return alert.explanation
    unit = ""
    if alert.quantity in _QUANTITY_NAMES:
        unit = " " + Quantity(alert.quantity).unit
    side = {"high": "at or above", "low": "at or below"}.get(alert.direction or "", "beyond")
    parts = [alert.quantity or alert.rule]
    if alert.opening_value is not None:
        parts.append(f" {alert.opening_value:g}{unit}")
    if alert.threshold is not None:
        parts.append(f", {side} the {alert.severity} limit {alert.threshold:g}{unit}")
    parts.append(f" (care plan version {alert.plan_version})")
    if alert.worst_value is not None:
        parts.append(f"; worst {alert.worst_value:g}{unit} over {alert.breach_count} readings")
    return "".join(parts)


def flag(alert: AlertRecord, patient_system: str) -> dict[str, Any] | None:
    """The alert episode as a Flag, or None for a status that is no alert (pending)."""
    status = FLAG_STATUS[alert.status]
    if status is None:
        return None
    priority, priority_text = FLAG_PRIORITY[alert.severity]
    opening = observation_id(
        alert.opening_device_id, alert.opening_metric, alert.opening_measured_at
    )
    sentence = explanation(alert)
    period: dict[str, str] = {"start": instant(alert.opened_at)}
    if status != "active" and alert.resolved_at is not None:
        period["end"] = instant(alert.resolved_at)
    return {
        "resourceType": "Flag",
        "id": str(alert.id),
        "meta": {"lastUpdated": instant(alert.updated_at)},
        "extension": [
            {
                "url": FLAG_PRIORITY_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [
                        {"system": FLAG_PRIORITY_CODES, "code": priority, "display": priority_text}
                    ],
                    "text": alert.severity,
                },
            },
            {
                "url": FLAG_DETAIL_EXTENSION,
                "valueReference": {
                    "reference": f"Observation/{opening}",
                    "type": "Observation",
                    "identifier": {
                        "system": READING_SYSTEM,
                        "value": reading_key(
                            alert.opening_device_id, alert.opening_metric, alert.opening_measured_at
                        ),
                    },
                    "display": "the reading that opened the alert",
                },
            },
            {"url": ALERT_STATUS_EXTENSION, "valueCode": alert.status},
        ],
        "identifier": [{"system": ALERT_SYSTEM, "value": str(alert.id)}],
        "status": status,
        "category": [
            {"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}
        ],
        "code": {"coding": [{"system": RULE_SYSTEM, "code": alert.rule}], "text": sentence},
        "subject": patient_reference(alert.patient_id, patient_system),
        "period": period,
        "author": {"display": f"homemonitor, care plan version {alert.plan_version}"},
    }


def bundle(
    resources: Iterable[dict[str, Any]],
    base_url: str,
    *,
    total: int | None = None,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ``searchset`` Bundle of ``resources``, each with its absolute ``fullUrl``."""
    result: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        result["total"] = total
    if links:
        result["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    entries = [
        {
            "fullUrl": f"{base_url.rstrip('/')}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ]
    if entries:
        result["entry"] = entries
    return result


def operation_outcome(diagnostics: str, code: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome with one issue (``code`` from the R4 IssueType value set)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
