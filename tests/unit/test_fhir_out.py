"""FHIR out, the pure mapping: what each stored reading and alert becomes, judged by R4."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from homemonitor.contract.readings import Metric, Quantity
from homemonitor.decoding.fhir import METRIC_CODES, decode_fhir
from homemonitor.fhir_out.resources import (
    DEFAULT_PATIENT_SYSTEM,
    FLAG_STATUS,
    LOINC_DISPLAY,
    PROFILES,
    AlertRecord,
    ReadingRecord,
    bundle,
    flag,
    observation,
    observation_id,
    operation_outcome,
)
from tests.unit.fhir_check import r4_problems, vital_signs_problems

AT = datetime(2026, 3, 1, 7, 15, 30, 250000, tzinfo=UTC)
SYSTEM = "urn:oid:1.2.752.999.1"  # a region's own system, not the default

READINGS = {
    "blood pressure": ReadingRecord(
        "cuff-1",
        Metric.BLOOD_PRESSURE,
        AT,
        AT + timedelta(seconds=2),
        AT + timedelta(seconds=3),
        "p-1",
        {
            Quantity.SYSTOLIC: 142.0,
            Quantity.DIASTOLIC: 91.0,
            Quantity.MEAN_ARTERIAL: 108.0,
            Quantity.HEART_RATE: 71.0,
        },
    ),
    "blood pressure, two values": ReadingRecord(
        "cuff_2:a",
        Metric.BLOOD_PRESSURE,
        AT,
        AT,
        AT,
        "p-1",
        {Quantity.SYSTOLIC: 120.0, Quantity.DIASTOLIC: 80.0},
    ),
    "body weight": ReadingRecord(
        "scale-1", Metric.BODY_WEIGHT, AT, AT, AT, "p-1", {Quantity.BODY_WEIGHT: 81.25}
    ),
    "spo2 with pulse": ReadingRecord(
        "oxi-2",
        Metric.SPO2,
        AT,
        AT,
        AT,
        "p-2",
        {Quantity.SPO2: 93.0, Quantity.HEART_RATE: 88.0},
        quality=("low_perfusion",),
    ),
    "heart rate": ReadingRecord(
        "hr-1",
        Metric.HEART_RATE,
        AT,
        AT,
        AT,
        "p-3",
        {Quantity.HEART_RATE: 64.0},
        flags=("clock_stale",),
    ),
}

ALERT = AlertRecord(
    id=7,
    patient_id="p-1",
    rule="systolic.high",
    quantity="systolic",
    direction="high",
    severity="urgent",
    status="acknowledged",
    plan_version=3,
    threshold=180.0,
    opened_at=AT,
    updated_at=AT + timedelta(minutes=5),
    opening_device_id="cuff-1",
    opening_metric="blood_pressure",
    opening_measured_at=AT,
    opening_value=191.0,
    worst_value=195.0,
    breach_count=2,
    acknowledged_at=AT + timedelta(minutes=5),
)


@pytest.mark.parametrize("name", READINGS)
def test_every_observation_is_valid_r4_and_in_its_vital_signs_profile(name: str) -> None:
    """Each metric's Observation passes the R4(B) model, R4's value sets and its HL7 profile."""
    resource = observation(READINGS[name], SYSTEM)

    assert ([], []) == (r4_problems(resource), vital_signs_problems(resource))


@pytest.mark.parametrize("name", READINGS)
def test_an_emitted_observation_decodes_to_the_same_reading(name: str) -> None:
    """Round trip: our own FHIR decoder reads back the device, metric, time and values."""
    record = READINGS[name]

    decoded = decode_fhir(json.dumps(observation(record, SYSTEM)).encode())

    assert [] == decoded.rejections
    [reading] = decoded.readings
    assert (record.device_id, record.metric, record.measured_at, dict(record.values)) == (
        reading.device_id,
        reading.metric,
        reading.measured_at,
        reading.values,
    )


def test_observation_fields_say_when_what_and_whose() -> None:
    """Status final, measured and received times, UCUM units, the patient by identifier."""
    resource = observation(READINGS["blood pressure"], SYSTEM)

    assert {
        "status": "final",
        "effectiveDateTime": "2026-03-01T07:15:30.250000Z",
        "issued": "2026-03-01T07:15:32.250000Z",
        "lastUpdated": "2026-03-01T07:15:33.250000Z",
        "subject": {"type": "Patient", "identifier": {"system": SYSTEM, "value": "p-1"}},
        "device": {"system": "urn:homemonitor:device", "value": "cuff-1"},
        "code": ["85354-9"],
        "components": [
            ("8480-6", 142.0, "mm[Hg]"),
            ("8462-4", 91.0, "mm[Hg]"),
            ("8478-0", 108.0, "mm[Hg]"),
            ("8867-4", 71.0, "/min"),
        ],
        "value": None,
    } == {
        "status": resource["status"],
        "effectiveDateTime": resource["effectiveDateTime"],
        "issued": resource["issued"],
        "lastUpdated": resource["meta"]["lastUpdated"],
        "subject": resource["subject"],
        "device": resource["device"]["identifier"],
        "code": [c["code"] for c in resource["code"]["coding"]],
        "components": [
            (
                c["code"]["coding"][0]["code"],
                c["valueQuantity"]["value"],
                c["valueQuantity"]["code"],
            )
            for c in resource["component"]
        ],
        "value": resource.get("valueQuantity"),
    }


def test_spo2_carries_both_loinc_codes_and_the_pulse_as_a_component() -> None:
    """SpO2: 2708-6 (the profile's) and 59408-5 (pulse oximetry), pulse as component 8867-4."""
    resource = observation(READINGS["spo2 with pulse"], SYSTEM)

    assert (
        ["2708-6", "59408-5"],
        {"value": 93.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
        [("8867-4", 88.0)],
        ["http://hl7.org/fhir/StructureDefinition/oxygensat"],
    ) == (
        [c["code"] for c in resource["code"]["coding"]],
        resource["valueQuantity"],
        [
            (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"])
            for c in resource["component"]
        ],
        resource["meta"]["profile"],
    )


def test_quality_and_clock_flags_become_notes_not_interpretations() -> None:
    """Device quality flags and clock findings are notes a person reads; no interpretation."""
    spo2 = observation(READINGS["spo2 with pulse"], SYSTEM)
    heart = observation(READINGS["heart rate"], SYSTEM)
    plain = observation(READINGS["body weight"], SYSTEM)

    assert (
        ["Measurement quality reported by the device: low_perfusion"],
        ["Not current by homemonitor's clock check (device clock suspect): clock_stale"],
        None,
        set(),
    ) == (
        [n["text"] for n in spo2["note"]],
        [n["text"] for n in heart["note"]],
        plain.get("note"),
        {"interpretation"} & (spo2.keys() | heart.keys()),
    )


def test_observation_id_is_stable_per_natural_key_and_a_valid_fhir_id() -> None:
    """The same device, metric and time give the same id; ids with ':' or '_' stay valid."""
    record = READINGS["blood pressure, two values"]
    again = replace(record, received_at=AT + timedelta(hours=1), values={Quantity.SYSTOLIC: 1.0})
    later = replace(record, measured_at=AT + timedelta(microseconds=1))

    ids = [observation(r, SYSTEM)["id"] for r in (record, again, later)]

    assert (ids[0], True) == (ids[1], ids[0] != ids[2])
    assert ids[0] == observation_id("cuff_2:a", "blood_pressure", AT.astimezone())


def test_profile_codes_are_codes_the_decoder_maps_to_the_same_metric() -> None:
    """One table decides codes: each profile's LOINC code is the decoder's for that metric."""
    assert {metric: metric for metric in PROFILES} == {
        metric: METRIC_CODES[("http://loinc.org", code)] for metric, (_, code) in PROFILES.items()
    }
    assert set(LOINC_DISPLAY) >= {code for (system, code) in METRIC_CODES if "loinc" in system}


def test_default_patient_system_is_homemonitors_own_not_personnummer() -> None:
    """Without configuration the subject is a homemonitor id, never claimed as personnummer."""
    resource = observation(READINGS["body weight"], DEFAULT_PATIENT_SYSTEM)

    assert "urn:homemonitor:patient" == resource["subject"]["identifier"]["system"]
    assert "1.2.752.129.2.1.3.1" not in json.dumps(resource)


def test_alert_flag_is_valid_r4_with_severity_rule_explanation_and_reading() -> None:
    """An alert is a valid Flag: priority, rule, explanation, period, the opening reading."""
    resource = flag(ALERT, SYSTEM)
    assert resource is not None
    extensions = {e["url"]: e for e in resource["extension"]}
    opening = observation(READINGS["blood pressure"], SYSTEM)

    assert [] == r4_problems(resource)
    assert {
        "status": "active",
        "priority": "PH",
        "workflow": "acknowledged",
        "rule": "systolic.high",
        "text": "systolic 191 mmHg, at or above the urgent limit 180 mmHg (care plan version 3);"
        " worst 195 mmHg over 2 readings",
        "period": {"start": "2026-03-01T07:15:30.250000Z"},
        "detail": f"Observation/{opening['id']}",
        "detail identifier": opening["identifier"][0],
        "subject": {"type": "Patient", "identifier": {"system": SYSTEM, "value": "p-1"}},
    } == {
        "status": resource["status"],
        "priority": extensions["http://hl7.org/fhir/StructureDefinition/flag-priority"][
            "valueCodeableConcept"
        ]["coding"][0]["code"],
        "workflow": extensions["urn:homemonitor:fhir:alert-status"]["valueCode"],
        "rule": resource["code"]["coding"][0]["code"],
        "text": resource["code"]["text"],
        "period": resource["period"],
        "detail": extensions["http://hl7.org/fhir/StructureDefinition/flag-detail"][
            "valueReference"
        ]["reference"],
        "detail identifier": extensions["http://hl7.org/fhir/StructureDefinition/flag-detail"][
            "valueReference"
        ]["identifier"],
        "subject": resource["subject"],
    }


def test_resolved_alert_is_an_inactive_flag_with_an_end_and_pending_is_none() -> None:
    """Resolved: inactive, period ends; a warning is medium priority; pending: no Flag."""
    resolved = replace(
        ALERT, status="resolved", severity="warning", resolved_at=AT + timedelta(days=1)
    )
    stored = replace(ALERT, explanation="Systoliskt 191 mmHg, över gränsen 180.")

    resource = flag(resolved, SYSTEM)
    assert resource is not None

    assert (
        "inactive",
        "2026-03-02T07:15:30.250000Z",
        "PM",
        [],
        None,
    ) == (
        resource["status"],
        resource["period"]["end"],
        resource["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
        r4_problems(resource),
        flag(replace(ALERT, status="pending"), SYSTEM),
    )
    assert "Systoliskt 191 mmHg, över gränsen 180." == (flag(stored, SYSTEM) or {})["code"]["text"]


def test_every_alert_status_maps_to_an_r4_flag_status() -> None:
    """Every episode status, the rules engine's included, is an R4 Flag status or no Flag."""
    assert set() == {s for s in FLAG_STATUS.values() if s is not None} - {
        "active",
        "inactive",
        "entered-in-error",
    }


def test_search_bundle_and_operation_outcome_are_valid_r4() -> None:
    """A searchset Bundle of Observations and a Flag, and an OperationOutcome, pass R4(B)."""
    resources = [observation(r, SYSTEM) for r in READINGS.values()]
    resources.append(flag(ALERT, SYSTEM) or {})
    result = bundle(
        resources, "https://hm.example/fhir/r4/", total=9, links={"self": "https://x/y"}
    )

    assert [] == r4_problems(result)
    assert [] == r4_problems(operation_outcome("no such patient", "not-found"))
    assert (
        "searchset",
        9,
        f"https://hm.example/fhir/r4/Observation/{resources[0]['id']}",
        "https://hm.example/fhir/r4/Flag/7",
    ) == (
        result["type"],
        result["total"],
        result["entry"][0]["fullUrl"],
        result["entry"][-1]["fullUrl"],
    )
    assert "entry" not in bundle([], "https://x/")


# --- the judges themselves: they accept HL7's own examples and refuse what breaks R4 ----


@pytest.mark.parametrize(
    "name",
    [
        "r4-core/Observation-blood-pressure.json",
        "r4-core/Observation-example.json",
        "r4-core/Observation-heart-rate.json",
        "r4-core/Observation-satO2.json",
    ],
)
def test_the_judges_accept_hl7s_own_vital_signs_examples(reference: Path, name: str) -> None:
    """The official R4 vital-signs examples pass both checks: the judges are not too strict."""
    resource = json.loads((reference / name).read_text(encoding="utf-8"))

    assert ([], []) == (r4_problems(resource), vital_signs_problems(resource))


def _broken(change: str) -> dict[str, Any]:
    resource = copy.deepcopy(observation(READINGS["blood pressure"], SYSTEM))
    if change == "status":
        resource["status"] = "done"
    elif change == "unit":
        resource["component"][0]["valueQuantity"]["code"] = "mmHg"
    elif change == "category":
        resource["category"][0]["coding"][0]["code"] = "laboratory"
    elif change == "systolic":
        del resource["component"][0]
    elif change == "instant":
        resource["issued"] = "2026-03-01T07:15:32"
    return resource


@pytest.mark.parametrize("change", ["status", "unit", "category", "systolic", "instant"])
def test_the_judges_refuse_what_breaks_r4_or_the_profile(change: str) -> None:
    """A status outside R4, a non-UCUM unit, no vital-signs category... are each caught."""
    resource = _broken(change)

    assert r4_problems(resource) + vital_signs_problems(resource)
