"""The FHIR R4 decoder: inline fixtures for each mapping and refusal, then the HL7 examples."""

# STYLE.md asks for `expected == actual`; ruff's SIM300 (Yoda conditions) wants the reverse.

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from homemonitor.contract.protocol import MAX_READINGS_PER_MESSAGE
from homemonitor.contract.readings import Decoded, Metric, Quantity, Reading, Reason, Rejection
from homemonitor.decoding.fhir import decode_fhir
from homemonitor.decoding.native import decode_native

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
WHEN = "2026-11-22T07:31:00+01:00"
WHEN_DT = datetime(2026, 11, 22, 6, 31, tzinfo=UTC)
PATIENT_NAME = "Gunilla Testsson"
PATIENT_ID = "19121212-1212"


# --- inline fixtures -------------------------------------------------------------------


def coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def quantity(value: object, code: str | None = "mm[Hg]", **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"value": value, **extra}
    if code is not None:
        result |= {"system": UCUM, "code": code}
    return result


def absent(code: str) -> dict[str, Any]:
    return coding(DAR, code)


def observation(code: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A final Observation by device cuff-0001 at WHEN, about a patient we must never echo."""
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": code,
        "subject": {
            "reference": "Patient/p1",
            "display": PATIENT_NAME,
            "identifier": {"value": PATIENT_ID},
        },
        "effectiveDateTime": WHEN,
        "device": {"reference": "Device/cuff-0001"},
        **fields,
    }


def component(system: str, code: str, value: object, unit: str = "mm[Hg]") -> dict[str, Any]:
    return {"code": coding(system, code), "valueQuantity": quantity(value, unit)}


def blood_pressure(*extra: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A LOINC blood-pressure panel 128/82 mmHg plus any ``extra`` components."""
    components = [component(LOINC, "8480-6", 128), component(LOINC, "8462-4", 82), *extra]
    return observation(coding(LOINC, "85354-9"), component=components, **fields)


def single(
    system: str, code: str, value: object, unit: str | None, **fields: Any
) -> dict[str, Any]:
    return observation(coding(system, code), valueQuantity=quantity(value, unit), **fields)


def bundle(*resources: dict[str, Any], kind: str = "collection", **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": resource} for resource in resources],
        **fields,
    }


def decode(resource: object) -> Decoded:
    return decode_fhir(json.dumps(resource).encode())


def only_reading(decoded: Decoded) -> Reading:
    assert [] == decoded.rejections
    assert 1 == len(decoded.readings)
    return decoded.readings[0]


def only_rejection(decoded: Decoded) -> Rejection:
    assert [] == decoded.readings
    assert 1 == len(decoded.rejections)
    return decoded.rejections[0]


def summary(decoded: Decoded) -> tuple[list[tuple[int, Metric]], list[tuple[int | None, Reason]]]:
    return (
        [(reading.index, reading.metric) for reading in decoded.readings],
        [(rejection.index, rejection.reason) for rejection in decoded.rejections],
    )


# --- what decodes ----------------------------------------------------------------------


def test_blood_pressure_panel_becomes_one_reading() -> None:
    """A LOINC BP panel decodes to systolic and diastolic, with device, time, id and source."""
    reading = only_reading(decode(blood_pressure()))

    assert (
        Reading(
            device_id="cuff-0001",
            metric=Metric.BLOOD_PRESSURE,
            measured_at=WHEN_DT,
            values={Quantity.SYSTOLIC: 128.0, Quantity.DIASTOLIC: 82.0},
            message_id="obs-1",
            source="fhir",
            index=0,
        )
        == reading
    )


def test_blood_pressure_mdc_codes_with_mean_and_pulse() -> None:
    """MDC panel and component codes decode, with the optional mean and pulse components."""
    resource = observation(
        coding(MDC, "150020"),
        component=[
            component(MDC, "150021", 16.0, "kPa"),
            component(MDC, "150022", 10.0, "kPa"),
            component(MDC, "150023", 12.0, "kPa"),
            component(LOINC, "8867-4", 71, "{beats}/min"),
        ],
    )

    values = only_reading(decode(resource)).values

    assert {
        Quantity.SYSTOLIC: 120.0,
        Quantity.DIASTOLIC: 75.0,
        Quantity.MEAN_ARTERIAL: 90.0,
        Quantity.HEART_RATE: 71.0,
    } == {key: round(value, 1) for key, value in values.items()}


def test_loinc_mean_arterial_and_mdc_pulse_components() -> None:
    """LOINC 8478-0 maps to mean arterial pressure, MDC 149530 to the pulse rate."""
    resource = blood_pressure(component(LOINC, "8478-0", 97), component(MDC, "149530", 64, "/min"))

    values = only_reading(decode(resource)).values

    assert 97.0 == values[Quantity.MEAN_ARTERIAL]
    assert 64.0 == values[Quantity.HEART_RATE]


def test_components_of_other_codes_are_ignored() -> None:
    """A PHD supplemental-types component (MDC 68193) does not disturb a BP reading."""
    supplemental = {
        "code": coding(MDC, "68193"),
        "valueCodeableConcept": coding(MDC, "150588"),
    }

    reading = only_reading(decode(blood_pressure(supplemental)))

    assert {Quantity.SYSTOLIC: 128.0, Quantity.DIASTOLIC: 82.0} == reading.values


@pytest.mark.parametrize(
    ("system", "code", "value", "unit", "kg"),
    [
        (LOINC, "29463-7", 80.5, "kg", 80.5),
        (LOINC, "29463-7", 176.4, "[lb_av]", 80.01),
        (MDC, "188736", 80500, "g", 80.5),
    ],
)
def test_body_weight_converts_to_kg(
    system: str, code: str, value: float, unit: str, kg: float
) -> None:
    """Body weight in kg, [lb_av] and g, LOINC or MDC coded, is stored in kg."""
    reading = only_reading(decode(single(system, code, value, unit)))

    assert (Metric.BODY_WEIGHT, kg) == (
        reading.metric,
        round(reading.values[Quantity.BODY_WEIGHT], 2),
    )


@pytest.mark.parametrize(
    ("system", "code"), [(LOINC, "59408-5"), (LOINC, "2708-6"), (MDC, "150456")]
)
def test_spo2_with_each_code(system: str, code: str) -> None:
    """Each of the three SpO2 codes gives an SpO2 reading in percent."""
    reading = only_reading(decode(single(system, code, 96, "%")))

    assert (Metric.SPO2, {Quantity.SPO2: 96.0}) == (reading.metric, reading.values)


@pytest.mark.parametrize(("system", "code"), [(LOINC, "8867-4"), (MDC, "149530"), (MDC, "147842")])
@pytest.mark.parametrize("unit", ["/min", "{beats}/min"])
def test_heart_rate_with_each_code_and_unit(system: str, code: str, unit: str) -> None:
    """Each heart-rate code, in /min or {beats}/min, gives a heart-rate reading."""
    reading = only_reading(decode(single(system, code, 61, unit)))

    assert (Metric.HEART_RATE, {Quantity.HEART_RATE: 61.0}) == (reading.metric, reading.values)


def test_metric_is_taken_from_any_matching_coding() -> None:
    """A known coding after unknown ones still decides the metric."""
    code = {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "27113001"},
            {"system": LOINC, "code": "3141-9"},
            {"system": LOINC, "code": "29463-7"},
        ]
    }

    reading = only_reading(decode(observation(code, valueQuantity=quantity(80, "kg"))))

    assert Metric.BODY_WEIGHT == reading.metric


def test_unit_falls_back_to_unit_text_when_there_is_no_code() -> None:
    """valueQuantity.unit is used when valueQuantity.code is absent."""
    resource = single(LOINC, "29463-7", 80, None)
    resource["valueQuantity"]["unit"] = "kg"

    assert {Quantity.BODY_WEIGHT: 80.0} == only_reading(decode(resource)).values


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "preliminary"])
def test_result_statuses_are_accepted(status: str) -> None:
    """The four statuses that carry a result decode."""
    assert 1 == len(decode(blood_pressure(status=status)).readings)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"effectiveInstant": "2026-11-22T06:31:00Z"}, WHEN_DT),
        ({"effectivePeriod": {"start": WHEN, "end": "2026-11-22T07:32:00+01:00"}}, WHEN_DT),
        ({"effectiveDateTime": "2026-11-22T07:31:00.250+01:00"}, WHEN_DT + timedelta(seconds=0.25)),
    ],
)
def test_time_from_instant_period_start_and_fractional_date_time(
    fields: dict[str, Any], expected: datetime
) -> None:
    """effectiveInstant, effectivePeriod.start and fractional seconds give the measured time."""
    resource = blood_pressure()
    del resource["effectiveDateTime"]
    resource |= fields

    assert expected == only_reading(decode(resource)).measured_at


def test_observation_without_id_has_no_message_id() -> None:
    """message_id is None when the Observation has no id."""
    resource = blood_pressure()
    del resource["id"]

    assert only_reading(decode(resource)).message_id is None


# --- devices ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "contained", "expected"),
    [
        ({"reference": "Device/abc"}, None, "abc"),
        ({"reference": "https://fhir.example.org/r4/Device/abc/_history/3"}, None, "abc"),
        ({"identifier": {"system": "urn:x", "value": "AA:BB:CC:01"}}, None, "AA:BB:CC:01"),
        (
            {"reference": "#dev"},
            [{"resourceType": "Device", "id": "dev", "identifier": [{"value": "SN-42"}]}],
            "SN-42",
        ),
        ({"reference": "#dev"}, [{"resourceType": "Device", "id": "dev"}], "dev"),
    ],
)
def test_device_id_from_reference_identifier_or_contained_device(
    device: dict[str, Any], contained: list[dict[str, Any]] | None, expected: str
) -> None:
    """The device id comes from Device/<id>, identifier.value or a contained Device."""
    resource = blood_pressure(device=device)
    if contained is not None:
        resource["contained"] = contained

    assert expected == only_reading(decode(resource)).device_id


def test_device_reference_to_a_bundle_entry_resolves_by_full_url() -> None:
    """A urn:uuid device reference resolves to the Device entry of the same Bundle."""
    uuid = "urn:uuid:c87cc91b-8b31-4e6f-b636-75e52891d10a"
    payload = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": uuid,
                "resource": {"resourceType": "Device", "identifier": [{"value": "00-1C-05"}]},
            },
            {"resource": blood_pressure(device={"reference": uuid})},
        ],
    }

    reading = only_reading(decode(payload))

    assert ("00-1C-05", 1) == (reading.device_id, reading.index)


@pytest.mark.parametrize(
    ("device", "in_detail"),
    [
        (None, "no device"),
        ({"display": "the cuff"}, "no device"),
        ({"reference": "DeviceMetric/example"}, "DeviceMetric, not a Device"),
        ({"reference": "Patient/p1"}, "Patient, not a Device"),
        ({"reference": "Device/cuff 0001"}, "device id does not match"),
        ({"identifier": {"value": "x" * 65}}, "device id does not match"),
        ({"reference": "#missing"}, "names no contained resource"),
        ({"reference": "urn:uuid:0f6c2b4e-0000-0000-0000-000000000000"}, "no entry"),
    ],
)
def test_device_problems_are_malformed(device: dict[str, Any] | None, in_detail: str) -> None:
    """No device, a non-Device reference or an id outside the pattern is MALFORMED, not repaired."""
    resource = blood_pressure(device=device)
    if device is None:
        del resource["device"]

    rejection = only_rejection(decode(resource))

    assert (Reason.MALFORMED, True) == (rejection.reason, in_detail in rejection.detail)
    assert rejection.detail.startswith("Observation.device")


def test_rejection_names_the_device_when_it_is_known() -> None:
    """A refused Observation with a valid device carries its id for the quarantine."""
    rejection = only_rejection(decode(single(LOINC, "8310-5", 37.0, "Cel")))

    assert "cuff-0001" == rejection.device_id


# --- bundles ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["collection", "transaction", "batch", "message"])
def test_bundle_mixing_good_and_bad_observations_keeps_entry_indexes(kind: str) -> None:
    """Good entries become readings, bad ones rejections, each at its entry index; rest skipped."""
    payload = bundle(
        {"resourceType": "Patient", "id": "p1", "name": [{"text": PATIENT_NAME}]},
        blood_pressure(),
        {"resourceType": "Device", "id": "cuff-0001"},
        single(LOINC, "29463-7", 80, "stone"),
        single(LOINC, "29463-7", 80, "kg"),
        single(LOINC, "8310-5", 37.0, "Cel"),
        kind=kind,
    )

    decoded = decode(payload)

    assert (
        [(1, Metric.BLOOD_PRESSURE), (4, Metric.BODY_WEIGHT)],
        [(3, Reason.UNKNOWN_UNIT), (5, Reason.UNKNOWN_METRIC)],
    ) == summary(decoded)
    assert decoded.rejections[0].detail.startswith("Bundle.entry[3].resource.valueQuantity.code")


def test_bundle_timestamp_is_sent_at() -> None:
    """Bundle.timestamp with an offset becomes Decoded.sent_at."""
    decoded = decode(bundle(blood_pressure(), timestamp="2026-11-22T07:32:00+01:00"))

    assert datetime(2026, 11, 22, 6, 32, tzinfo=UTC) == decoded.sent_at


@pytest.mark.parametrize("timestamp", [None, "2026-11-22T07:32:00", "2026-11-22", 17])
def test_bundle_timestamp_without_offset_is_ignored(timestamp: object) -> None:
    """A missing or zone-less Bundle.timestamp gives sent_at None and spoils nothing."""
    decoded = decode(bundle(blood_pressure(), timestamp=timestamp))

    assert (None, 1) == (decoded.sent_at, len(decoded.readings))


@pytest.mark.parametrize(
    "payload",
    [
        bundle({"resourceType": "Patient", "id": "p1"}, {"resourceType": "Device", "id": "d"}),
        {"resourceType": "Bundle", "type": "collection"},
        bundle(),
    ],
)
def test_bundle_without_observations_is_one_missing_value(payload: dict[str, Any]) -> None:
    """A Bundle with no Observation at all is one whole-message MISSING_VALUE."""
    rejection = only_rejection(decode(payload))

    assert (Reason.MISSING_VALUE, None) == (rejection.reason, rejection.index)


def test_broken_bundle_entry_is_refused_at_its_index() -> None:
    """An entry that is not an object with a FHIR resource is MALFORMED at its own index."""
    payload = bundle(blood_pressure())
    payload["entry"].insert(0, "not an entry")
    payload["entry"].insert(1, {"resource": {"id": "no-type"}})

    assert (
        [(2, Metric.BLOOD_PRESSURE)],
        [(0, Reason.MALFORMED), (1, Reason.MALFORMED)],
    ) == summary(decode(payload))


def test_bundle_over_the_batch_limit_is_refused_whole() -> None:
    """More Observations than a native batch may hold is one MALFORMED, not a flood."""
    payload = bundle(*[blood_pressure()] * (MAX_READINGS_PER_MESSAGE + 1))

    rejection = only_rejection(decode(payload))

    assert (Reason.MALFORMED, None) == (rejection.reason, rejection.index)


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2]", b'"Observation"', b'{"id": "x"}'],
)
def test_not_a_fhir_object_is_malformed(payload: bytes) -> None:
    """Non-JSON, JSON that is not an object and objects without resourceType are MALFORMED."""
    rejection = only_rejection(decode_fhir(payload))

    assert (Reason.MALFORMED, None) == (rejection.reason, rejection.index)


@pytest.mark.parametrize("kind", ["Patient", "Device", "DiagnosticReport"])
def test_other_top_level_resource_is_malformed(kind: str) -> None:
    """A top-level resource other than Observation or Bundle is MALFORMED."""
    rejection = only_rejection(decode({"resourceType": kind, "id": "x"}))

    assert (Reason.MALFORMED, True) == (rejection.reason, kind in rejection.detail)


def test_unknown_code_names_the_codes_seen() -> None:
    """An unknown code is UNKNOWN_METRIC and the detail names every coding seen."""
    code = {
        "coding": [
            {"system": LOINC, "code": "8310-5"},
            {"system": "http://snomed.info/sct", "code": "386725007"},
        ]
    }

    rejection = only_rejection(decode(observation(code, valueQuantity=quantity(37, "Cel"))))

    assert (
        Reason.UNKNOWN_METRIC,
        "Observation.code: no supported metric among "
        "LOINC 8310-5, http://snomed.info/sct|386725007",
    ) == (rejection.reason, rejection.detail)


def test_codings_naming_two_metrics_are_malformed() -> None:
    """A code whose codings say both heart rate and SpO2 is refused, not guessed."""
    code = {"coding": [{"system": LOINC, "code": "8867-4"}, {"system": MDC, "code": "150456"}]}

    rejection = only_rejection(decode(observation(code, valueQuantity=quantity(90, "%"))))

    assert Reason.MALFORMED == rejection.reason


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (single(LOINC, "29463-7", 80, "stone"), "valueQuantity.code"),
        (
            blood_pressure(component(LOINC, "8478-0", 90, "cmH2O")),
            "component[2].valueQuantity.code",
        ),
        (single(LOINC, "8867-4", 60, None), "valueQuantity.code"),
        (
            single(LOINC, "29463-7", 80, "kg")
            | {"valueQuantity": {"value": 80, "system": MDC, "code": "263875"}},
            "valueQuantity.system",
        ),
    ],
)
def test_unknown_unit(resource: dict[str, Any], field: str) -> None:
    """An unknown, missing or non-UCUM unit is UNKNOWN_UNIT naming the field."""
    rejection = only_rejection(decode(resource))

    assert (Reason.UNKNOWN_UNIT, f"Observation.{field}") == (
        rejection.reason,
        rejection.detail.split(":")[0],
    )


def test_spo2_as_a_fraction_is_refused_with_a_hint() -> None:
    """SpO2 0.97 with UCUM unit '1' is UNKNOWN_UNIT and the detail says to use %."""
    rejection = only_rejection(decode(single(LOINC, "59408-5", 0.97, "1")))

    assert (Reason.UNKNOWN_UNIT, True) == (rejection.reason, "use %" in rejection.detail)


@pytest.mark.parametrize(
    ("fields", "in_detail"),
    [
        ({"effectiveDateTime": "2012-09-17"}, "without a time of day"),
        ({"effectiveDateTime": "2012-09"}, "without a time of day"),
        ({"effectiveDateTime": "2012"}, "without a time of day"),
        ({"effectiveDateTime": "2026-11-22T07:31:00"}, "without a UTC offset"),
        ({"effectiveDateTime": "22/11/2026 07:31"}, "not an ISO 8601 date and time"),
        ({"effectiveDateTime": "2026-11-22T25:31:00+01:00"}, "not a valid date and time"),
        ({"effectiveInstant": "2026-11-22"}, "without a time of day"),
        ({"effectivePeriod": {"end": WHEN}}, "effectivePeriod.start: missing"),
        ({"effectivePeriod": {"start": "2026-11-22"}}, "without a time of day"),
        ({"effectiveTiming": {"repeat": {"frequency": 1}}}, "not a time of measurement"),
        ({}, "effective[x]: missing"),
    ],
)
def test_no_usable_time_is_no_timestamp(fields: dict[str, Any], in_detail: str) -> None:
    """A missing time, a date without time of day or a time without offset is NO_TIMESTAMP."""
    resource = blood_pressure()
    del resource["effectiveDateTime"]
    resource |= fields

    rejection = only_rejection(decode(resource))

    assert (Reason.NO_TIMESTAMP, True) == (rejection.reason, in_detail in rejection.detail)


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "registered", "unknown"])
def test_status_without_a_result_is_missing_value(status: str) -> None:
    """Observations whose status carries no result are MISSING_VALUE naming the status."""
    rejection = only_rejection(decode(blood_pressure(status=status)))

    assert (Reason.MISSING_VALUE, True) == (rejection.reason, status in rejection.detail)


def test_missing_status_is_malformed() -> None:
    """Observation.status is required by FHIR; without it the resource is MALFORMED."""
    resource = blood_pressure()
    del resource["status"]

    assert Reason.MALFORMED == only_rejection(decode(resource)).reason


@pytest.mark.parametrize(
    "code", ["not-a-number", "positive-infinity", "negative-infinity", "error"]
)
def test_ieee_special_values_as_data_absent_reason_are_missing_value(code: str) -> None:
    """The PHD IG's dataAbsentReason for NaN, +INF, -INF and NRes is MISSING_VALUE."""
    resource = observation(coding(MDC, "150456"), dataAbsentReason=absent(code))

    rejection = only_rejection(decode(resource))

    assert (Reason.MISSING_VALUE, True, True) == (
        rejection.reason,
        rejection.detail.startswith(f"Observation.dataAbsentReason: no value: '{code}'"),
        "IEEE 11073 special value" in rejection.detail,
    )


@pytest.mark.parametrize(
    "value_quantity",
    [
        {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                    "valueCode": "not-a-number",
                }
            ],
            "system": UCUM,
            "code": "%",
        },
        {
            "_value": {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                        "valueCode": "positive-infinity",
                    }
                ]
            },
            "system": UCUM,
            "code": "%",
        },
    ],
)
def test_data_absent_reason_extension_is_missing_value(value_quantity: dict[str, Any]) -> None:
    """A data-absent-reason extension on valueQuantity or its value is MISSING_VALUE."""
    resource = observation(coding(MDC, "150456"), valueQuantity=value_quantity)

    assert Reason.MISSING_VALUE == only_rejection(decode(resource)).reason


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (single(LOINC, "29463-7", None, "kg"), "valueQuantity.value"),
        (observation(coding(LOINC, "29463-7")), "value[x]"),
        (
            observation(coding(LOINC, "85354-9"), dataAbsentReason=absent("not-performed")),
            "dataAbsentReason",
        ),
        (
            observation(coding(LOINC, "85354-9"), component=[component(LOINC, "8480-6", 128)]),
            "component",
        ),
        (
            blood_pressure()
            | {
                "component": [
                    component(LOINC, "8480-6", 128),
                    {"code": coding(LOINC, "8462-4"), "dataAbsentReason": absent("asked-declined")},
                ]
            },
            "component[1].dataAbsentReason",
        ),
        (
            single(LOINC, "59408-5", 70, "%")
            | {"valueQuantity": quantity(70, "%", comparator="<")},
            "valueQuantity.comparator",
        ),
    ],
)
def test_no_usable_value_is_missing_value(resource: dict[str, Any], field: str) -> None:
    """No value, dataAbsentReason, a missing/absent BP component or a bound is MISSING_VALUE."""
    rejection = only_rejection(decode(resource))

    assert (Reason.MISSING_VALUE, f"Observation.{field}") == (
        rejection.reason,
        rejection.detail.split(": ")[0],
    )


def test_optional_component_without_value_is_left_out() -> None:
    """A mean-pressure component with dataAbsentReason is omitted; the BP reading stays."""
    mean = {"code": coding(MDC, "150023"), "dataAbsentReason": absent("not-a-number")}

    reading = only_reading(decode(blood_pressure(mean)))

    assert {Quantity.SYSTOLIC: 128.0, Quantity.DIASTOLIC: 82.0} == reading.values


def test_vital_signs_panel_with_members_only_is_missing_value() -> None:
    """A grouping panel (85353-1) with only hasMember carries no value: MISSING_VALUE."""
    resource = observation(
        coding(LOINC, "85353-1"),
        hasMember=[{"reference": "Observation/heart-rate"}, {"reference": "Observation/bp"}],
    )

    rejection = only_rejection(decode(resource))

    assert (Reason.MISSING_VALUE, "Observation.hasMember") == (
        rejection.reason,
        rejection.detail.split(": ")[0],
    )


@pytest.mark.parametrize(
    "raw",
    [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"1" + b"0" * 400],
)
def test_non_finite_numbers_never_become_values(raw: bytes) -> None:
    """NaN, infinities and numbers too large for a float are MISSING_VALUE, never a value."""
    payload = json.dumps(single(LOINC, "8867-4", 12345, "/min")).encode()

    decoded = decode_fhir(payload.replace(b"12345", raw))

    assert (Reason.MISSING_VALUE, "Observation.valueQuantity.value") == (
        only_rejection(decoded).reason,
        only_rejection(decoded).detail.split(": ")[0],
    )


def test_conversion_overflow_never_becomes_a_value() -> None:
    """A finite kPa value whose mmHg conversion overflows is MISSING_VALUE."""
    resource = observation(
        coding(LOINC, "85354-9"),
        component=[component(LOINC, "8480-6", 1e308, "kPa"), component(LOINC, "8462-4", 10, "kPa")],
    )

    assert Reason.MISSING_VALUE == only_rejection(decode(resource)).reason


@pytest.mark.parametrize(
    "resource",
    [
        single(LOINC, "8867-4", "61", "/min"),
        single(LOINC, "8867-4", True, "/min"),
        observation(coding(LOINC, "8867-4"), valueString="61 bpm"),
        blood_pressure(component(LOINC, "8480-6", 130)),
        blood_pressure(id="x" * 129),
        blood_pressure() | {"code": "85354-9"},
    ],
)
def test_structural_errors_are_malformed(resource: dict[str, Any]) -> None:
    """A non-numeric value, a non-Quantity value, a duplicate component or a bad id is MALFORMED."""
    assert Reason.MALFORMED == only_rejection(decode(resource)).reason


def test_details_never_echo_the_subject() -> None:
    """Whatever is refused, no detail quotes the patient's name or identifier."""
    bad = [
        single(LOINC, "8310-5", 37, "Cel"),
        single(LOINC, "29463-7", 80, "stone"),
        blood_pressure(status="cancelled"),
        blood_pressure(effectiveDateTime="2012-09-17"),
        blood_pressure(device={"reference": "Patient/p1"}),
    ]

    rejections = decode(bundle(*bad)).rejections
    details = " ".join(rejection.detail for rejection in rejections)

    assert (5, False, False) == (len(rejections), PATIENT_NAME in details, PATIENT_ID in details)


# --- the same measurement as native JSON and as FHIR -----------------------------------


@pytest.mark.parametrize(
    ("native", "fhir"),
    [
        (
            {
                "metric": "blood_pressure",
                "unit": "kPa",
                "systolic": 16.0,
                "diastolic": 10.5,
                "mean": 12.0,
                "pulse": 64,
            },
            observation(
                coding(MDC, "150020"),
                component=[
                    component(MDC, "150021", 16.0, "kPa"),
                    component(MDC, "150022", 10.5, "kPa"),
                    component(MDC, "150023", 12.0, "kPa"),
                    component(MDC, "149530", 64, "/min"),
                ],
            ),
        ),
        (
            {"metric": "body_weight", "unit": "lb", "value": 176.4},
            single(LOINC, "29463-7", 176.4, "[lb_av]"),
        ),
        ({"metric": "spo2", "unit": "%", "value": 97}, single(MDC, "150456", 97, "%")),
        ({"metric": "heart_rate", "unit": "bpm", "value": 58}, single(LOINC, "8867-4", 58, "/min")),
    ],
)
def test_native_and_fhir_decode_to_the_same_reading(
    native: dict[str, Any], fhir: dict[str, Any]
) -> None:
    """The same measurement as native JSON and as FHIR gives equal metric, values and time."""
    item = {"device_id": "cuff-0001", "measured_at": WHEN, "message_id": "obs-1", **native}
    from_native = only_reading(decode_native(json.dumps({"v": 1, "reading": item}).encode()))
    from_fhir = only_reading(decode(fhir))

    assert (
        from_native.device_id,
        from_native.metric,
        from_native.values,
        from_native.measured_at,
        from_native.message_id,
    ) == (
        from_fhir.device_id,
        from_fhir.metric,
        from_fhir.values,
        from_fhir.measured_at,
        from_fhir.message_id,
    )


def test_fhir_on_the_native_topic_is_sniffed() -> None:
    """A FHIR Observation sent on the native topic still decodes as FHIR."""
    reading = only_reading(decode_native(json.dumps(blood_pressure()).encode()))

    assert "fhir" == reading.source


# --- the official HL7 examples (see /work/shared/reference/fhir/SOURCES.md) ------------


def load(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text(encoding="utf-8"))
    return data


def decode_file(folder: Path, name: str) -> Decoded:
    return decode_fhir((folder / name).read_bytes())


def patched(resource: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of an official example with a full timestamp and a device, to prove its values."""
    copied = copy.deepcopy(resource)
    copied["effectiveDateTime"] = "2012-09-17T09:30:00+02:00"
    copied["device"] = {"reference": "Device/cuff-0001"}
    copied.update(fields)
    return copied


EX_0500 = timezone(timedelta(hours=-5))
EX_0400 = timezone(timedelta(hours=-4))


@pytest.mark.parametrize(
    "name",
    [
        "r4-core/Observation-blood-pressure.json",
        "r4-core/Observation-example.json",
        "r4-core/Observation-heart-rate.json",
    ],
)
def test_core_examples_with_only_a_date_are_no_timestamp(reference: Path, name: str) -> None:
    """Core examples dated without a time of day are NO_TIMESTAMP, naming effectiveDateTime."""
    rejection = only_rejection(decode_file(reference, name))

    assert (Reason.NO_TIMESTAMP, "Observation.effectiveDateTime") == (
        rejection.reason,
        rejection.detail.split(": ")[0],
    )


def test_core_blood_pressure_values(reference: Path) -> None:
    """observation-example-bloodpressure decodes to 107/60 mmHg once it has a time and device."""
    resource = load(reference, "r4-core/Observation-blood-pressure.json")

    reading = only_reading(decode(patched(resource)))

    assert (
        Metric.BLOOD_PRESSURE,
        {Quantity.SYSTOLIC: 107.0, Quantity.DIASTOLIC: 60.0},
        "blood-pressure",
    ) == (
        reading.metric,
        reading.values,
        reading.message_id,
    )


def test_core_body_weight_in_pounds(reference: Path) -> None:
    """observation-example (185 [lb_av]) decodes to 83.91 kg once it has a time and device."""
    resource = load(reference, "r4-core/Observation-example.json")

    reading = only_reading(decode(patched(resource)))

    assert (Metric.BODY_WEIGHT, 83.91) == (
        reading.metric,
        round(reading.values[Quantity.BODY_WEIGHT], 2),
    )


def test_core_heart_rate(reference: Path) -> None:
    """observation-example-heart-rate decodes to 44 /min once it has a time and device."""
    resource = load(reference, "r4-core/Observation-heart-rate.json")

    reading = only_reading(decode(patched(resource)))

    assert (Metric.HEART_RATE, {Quantity.HEART_RATE: 44.0}) == (reading.metric, reading.values)


def test_core_sat_o2_names_a_device_metric_not_a_device(reference: Path) -> None:
    """observation-example-satO2 points device at a DeviceMetric: MALFORMED, not guessed."""
    rejection = only_rejection(decode_file(reference, "r4-core/Observation-satO2.json"))

    assert (Reason.MALFORMED, "Observation.device.reference") == (
        rejection.reason,
        rejection.detail.split(": ")[0],
    )


def test_core_sat_o2_values(reference: Path) -> None:
    """observation-example-satO2 decodes to 95 % at its own time once it names a Device."""
    resource = load(reference, "r4-core/Observation-satO2.json")
    resource["device"] = {"reference": "Device/oxi-0001"}

    reading = only_reading(decode(resource))

    assert (
        Metric.SPO2,
        {Quantity.SPO2: 95.0},
        datetime(2014, 12, 5, 9, 30, 10, tzinfo=timezone(timedelta(hours=1))),
    ) == (reading.metric, reading.values, reading.measured_at)


@pytest.mark.parametrize(
    ("name", "field", "in_detail"),
    [
        (
            "r4-core/Observation-blood-pressure-dar.json",
            "component[1].dataAbsentReason",
            "not-performed",
        ),
        ("r4-core/Observation-blood-pressure-cancel.json", "status", "cancelled"),
        ("r4-core/Observation-vitals-panel.json", "hasMember", "groups other Observations"),
    ],
)
def test_core_examples_without_a_value_are_missing_value(
    reference: Path, name: str, field: str, in_detail: str
) -> None:
    """The DAR, cancelled and members-only core examples are MISSING_VALUE, as is or timed."""
    resource = load(reference, name)

    for decoded in (decode(resource), decode(patched(resource))):
        rejection = only_rejection(decoded)
        assert (Reason.MISSING_VALUE, f"Observation.{field}", True) == (
            rejection.reason,
            rejection.detail.split(": ")[0],
            in_detail in rejection.detail,
        )


def test_phd_compound_blood_pressure(reference: Path) -> None:
    """PHD compound-numeric-blood-pressure decodes to 116/71 mmHg, MAP 86, at its own time."""
    reading = only_reading(decode_file(reference, "phd-ig/compound-numeric-blood-pressure.json"))

    assert (
        Reading(
            device_id="phd-711000FEFF5F49B0.B0495F001071",
            metric=Metric.BLOOD_PRESSURE,
            measured_at=datetime(2018, 11, 11, 11, 38, 15, tzinfo=EX_0500),
            values={
                Quantity.SYSTOLIC: 116.0,
                Quantity.DIASTOLIC: 71.0,
                Quantity.MEAN_ARTERIAL: 86.0,
            },
            message_id="compound-numeric-blood-pressure",
            source="fhir",
        )
        == reading
    )


def test_phd_blood_pressure_with_nan_mean(reference: Path) -> None:
    """PHD blood pressure whose MAP is not-a-number decodes to 116/71 without a mean."""
    name = "phd-ig/compound-numeric-blood-pressure-no-mean.json"

    reading = only_reading(decode_file(reference, name))

    assert {Quantity.SYSTOLIC: 116.0, Quantity.DIASTOLIC: 71.0} == reading.values


def test_phd_spo2_alarm(reference: Path) -> None:
    """PHD numeric-spo2-alarm decodes to SpO2 79 % (plausibility is not the decoder's job)."""
    reading = only_reading(decode_file(reference, "phd-ig/numeric-spo2-alarm.json"))

    assert (
        Metric.SPO2,
        {Quantity.SPO2: 79.0},
        datetime(2018, 11, 13, 17, 59, 2, tzinfo=EX_0500),
        "phd-74E8FFFEFF051C00.001C05FFE874",
    ) == (reading.metric, reading.values, reading.measured_at, reading.device_id)


def test_phd_spot_pulse_rate(reference: Path) -> None:
    """PHD numeric-spotnumeric is heart rate 48 /min, from the UCUM code, not the odd unit text."""
    reading = only_reading(decode_file(reference, "phd-ig/numeric-spotnumeric.json"))

    assert (Metric.HEART_RATE, {Quantity.HEART_RATE: 48.0}) == (reading.metric, reading.values)


def test_phd_not_a_number_example(reference: Path) -> None:
    """PHD numeric-observation-not-a-number is signal quality (MDC 150320): UNKNOWN_METRIC."""
    rejection = only_rejection(
        decode_file(reference, "phd-ig/numeric-observation-not-a-number.json")
    )

    assert (Reason.UNKNOWN_METRIC, "Observation.code: no supported metric among MDC 150320") == (
        rejection.reason,
        rejection.detail,
    )


def test_phd_not_a_number_as_spo2_is_missing_value(reference: Path) -> None:
    """The same NaN observation coded as SpO2 is MISSING_VALUE naming not-a-number."""
    resource = load(reference, "phd-ig/numeric-observation-not-a-number.json")
    resource["code"] = coding(MDC, "150456")

    rejection = only_rejection(decode(resource))

    assert (Reason.MISSING_VALUE, True, True) == (
        rejection.reason,
        "'not-a-number'" in rejection.detail,
        "NaN" in rejection.detail,
    )


def test_phd_measurement_status_is_unknown_metric(reference: Path) -> None:
    """PHD bpm-status (MDC 8410608 bits) is not a reading: UNKNOWN_METRIC."""
    rejection = only_rejection(decode_file(reference, "phd-ig/bpm-status.json"))

    assert Reason.UNKNOWN_METRIC == rejection.reason


def test_phd_transaction_bundle(reference: Path) -> None:
    """PHD bundle-example-1: SpO2 98 % and pulse 47 /min from the PHD Device; context skipped."""
    decoded = decode_file(reference, "phd-ig/bundle-example-1.json")
    when = datetime(2019, 9, 20, 12, 40, 16, 936000, tzinfo=EX_0400)

    assert (
        [
            (4, "00-1C-05-04-00-00-78-25", {Quantity.SPO2: 98.0}, when, "pulse-ox-001"),
            (5, "00-1C-05-04-00-00-78-25", {Quantity.HEART_RATE: 47.0}, when, "pulse-ox-002"),
        ],
        [(3, Reason.UNKNOWN_METRIC)],
        None,
    ) == (
        [(r.index, r.device_id, r.values, r.measured_at, r.message_id) for r in decoded.readings],
        [(rejection.index, rejection.reason) for rejection in decoded.rejections],
        decoded.sent_at,
    )
    assert "Gyannea" not in decoded.rejections[0].detail


def test_phd_continuous_oximeter_bundle(reference: Path) -> None:
    """PHD bundle-continuousnonin: one SpO2 and one pulse per second, 99→100 % and 53→54 /min."""
    decoded = decode_file(reference, "phd-ig/bundle-continuousnonin.json")
    spo2 = [r for r in decoded.readings if r.metric is Metric.SPO2]
    pulse = [r for r in decoded.readings if r.metric is Metric.HEART_RATE]
    seconds = [datetime(2018, 11, 11, 19, 7, s, tzinfo=EX_0500) for s in range(37, 49)]

    assert (
        [99.0] + [100.0] * 11,
        [53.0] + [54.0] * 11,
        seconds,
        seconds,
        {Reason.UNKNOWN_METRIC},
        47,
    ) == (
        [r.values[Quantity.SPO2] for r in spo2],
        [r.values[Quantity.HEART_RATE] for r in pulse],
        [r.measured_at for r in spo2],
        [r.measured_at for r in pulse],
        {rejection.reason for rejection in decoded.rejections},
        len(decoded.readings) + len(decoded.rejections),
    )


def test_spo2_observation_keeps_its_pulse_component() -> None:
    """An oximeter's SpO2 Observation with a pulse component decodes to SpO2 and heart rate."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "id": "oxi-1",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "device": {"reference": "Device/oxi-0003"},
        "effectiveDateTime": "2026-11-22T07:35:00+01:00",
        "valueQuantity": {
            "value": 95,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "valueQuantity": {
                    "value": 74,
                    "unit": "/min",
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                },
            }
        ],
    }
    decoded = decode_fhir(json.dumps(observation).encode())
    assert {Quantity.SPO2: 95.0, Quantity.HEART_RATE: 74.0} == decoded.readings[0].values
