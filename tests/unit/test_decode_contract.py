"""The published contract is what the worker takes, the same in every format.

Each case is one payload in one format and the reasons the worker (decoding, then
validation) gives for it: strict types (no number as a string, no ``true`` as a number or a
version), times only as ISO 8601 with a UTC offset (no Unix times), device ids taken as
sent (no trimming), at most 1 000 readings per message, no time beyond UTC's years 1-9999,
and nothing older than the retention. Where a format publishes a JSON Schema (native,
Bluetooth) the schema's verdict is checked against the worker's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from homemonitor.contract.protocol import MAX_READINGS_PER_MESSAGE, PayloadFormat, json_schema
from homemonitor.contract.readings import Flag, Reason
from homemonitor.decoding import decode
from homemonitor.decoding.bluetooth import BleEnvelope
from homemonitor.ingest.validation import ClockPolicy, validate
from homemonitor.settings import Settings, parse_retention

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
WHEN = "2026-11-22T07:31:00+01:00"
UNIX = 1763793060  # WHEN as a Unix time
CLOCK = ClockPolicy(retention=parse_retention("5 years"))
#: Measured longer ago than 5 years (a device clock reset to 2020), and just within them.
BEYOND = "2020-01-01T00:00:00Z"
WITHIN = (NOW - timedelta(days=5 * 365 - 1)).isoformat()
#: The last second of year 9999 at UTC-1 is in year 10000 in UTC; at UTC it is not.
YEAR_10000 = "9999-12-31T23:59:59-01:00"
LAST_SECOND = "9999-12-31T23:59:59Z"
NBSP = "\u00a0"

# --- payloads ---------------------------------------------------------------------------


def native_item(**fields: Any) -> dict[str, Any]:
    """An SpO2 reading of oxi-2 at WHEN, with ``fields`` replaced."""
    return {"device_id": "oxi-2", "metric": "spo2", "measured_at": WHEN, "value": 96} | fields


def bp_item(**fields: Any) -> dict[str, Any]:
    """A blood-pressure reading of cuff-1 at WHEN, 128/82 mmHg, with ``fields`` replaced."""
    reading = {"device_id": "cuff-1", "metric": "blood_pressure", "measured_at": WHEN}
    return reading | {"systolic": 128, "diastolic": 82} | fields


def native(*items: dict[str, Any], **head: Any) -> bytes:
    """A native envelope with ``items`` as its batch (one SpO2 reading when none)."""
    return json.dumps({"v": 1, "readings": list(items or [native_item()])} | head).encode()


def observation(value: object = 96, **fields: Any) -> dict[str, Any]:
    """A FHIR SpO2 Observation of Device/oxi-2 at WHEN, with ``fields`` replaced."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "%"},
        "effectiveDateTime": WHEN,
        "device": {"reference": "Device/oxi-2"},
    } | fields


def fhir(*observations: dict[str, Any]) -> bytes:
    """One Observation as it is, several in a collection Bundle."""
    if len(observations) == 1:
        return json.dumps(observations[0]).encode()
    entries = [{"resource": o} for o in observations]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def ble_item(**fields: Any) -> dict[str, Any]:
    """A Heart Rate Measurement (flags 0x00, 72 /min) of oxi-2, received at WHEN."""
    return {"device_id": "oxi-2", "characteristic": "2A37", "hex": "0048", "received_at": WHEN} | (
        fields
    )


#: A Weight Measurement, 80 kg (16000 x 0.005 = 0x3E80), stamped 9999-12-31 23:59:59.
STAMPED_9999 = "02" + "803e" + "0f270c1f173b3b"
#: The same, stamped 2019-06-01 12:00:00 (0x07E3).
STAMPED_2019 = "02" + "803e" + "e30706010c0000"


def ble(*items: dict[str, Any], **head: Any) -> bytes:
    """A Bluetooth envelope with ``items`` (one heart-rate item when none)."""
    return json.dumps({"v": 1, "readings": list(items or [ble_item()])} | head).encode()


JSON, FHIR, BLE = PayloadFormat.NATIVE, PayloadFormat.FHIR, PayloadFormat.BLE
MAX = MAX_READINGS_PER_MESSAGE
MALFORMED, NO_TIME = Reason.MALFORMED.value, Reason.NO_TIMESTAMP.value
VERSION, RETENTION = Reason.UNSUPPORTED_VERSION.value, Reason.BEYOND_RETENTION.value

#: (id, format, payload, reasons the worker gives, readings it stores)
CASES: list[tuple[str, PayloadFormat, bytes, list[str], int]] = [
    # native JSON
    ("json-good", JSON, native(), [], 1),
    ("json-good-one-reading", JSON, json.dumps({"v": 1, "reading": native_item()}).encode(), [], 1),
    ("json-value-string", JSON, native(native_item(value="96")), [MALFORMED], 0),
    ("json-bp-good", JSON, native(bp_item()), [], 1),
    ("json-systolic-string", JSON, native(bp_item(systolic="128")), [MALFORMED], 0),
    ("json-systolic-true", JSON, native(bp_item(systolic=True)), [MALFORMED], 0),
    ("json-value-true", JSON, native(native_item(value=True)), [MALFORMED], 0),
    ("json-pulse-true", JSON, native(native_item(pulse=True)), [MALFORMED], 0),
    ("json-v-true", JSON, native(v=True), [VERSION], 0),
    ("json-v-string", JSON, native(v="1"), [VERSION], 0),
    ("json-measured-unix", JSON, native(native_item(measured_at=UNIX)), [NO_TIME], 0),
    ("json-measured-unix-string", JSON, native(native_item(measured_at=str(UNIX))), [NO_TIME], 0),
    (
        "json-measured-no-seconds",
        JSON,
        native(native_item(measured_at="2026-11-22T07:31+01:00")),
        [NO_TIME],
        0,
    ),
    (
        "json-measured-space",
        JSON,
        native(native_item(measured_at="2026-11-22 07:31:00+01:00")),
        [NO_TIME],
        0,
    ),
    (
        "json-measured-30-february",
        JSON,
        native(native_item(measured_at="2026-02-30T07:31:00+01:00")),
        [NO_TIME],
        0,
    ),
    ("json-sent-unix", JSON, native(sent_at=UNIX), [MALFORMED], 0),
    ("json-device-padded", JSON, native(native_item(device_id=" oxi-2")), [MALFORMED], 0),
    ("json-device-nbsp", JSON, native(native_item(device_id=f"oxi-2{NBSP}")), [MALFORMED], 0),
    ("json-device-newline", JSON, native(native_item(device_id="oxi-2\n")), [MALFORMED], 0),
    ("json-message-id-number", JSON, native(native_item(message_id=17)), [MALFORMED], 0),
    ("json-1000", JSON, native(*[native_item()] * MAX), [], MAX),
    ("json-1001", JSON, native(*[native_item()] * (MAX + 1)), [MALFORMED], 0),
    (
        "json-1001-one-bad",
        JSON,
        native(*[native_item()] * MAX, native_item(value="96")),
        [MALFORMED],
        0,
    ),
    ("json-reading-null", JSON, b'{"v": 1, "reading": null}', [MALFORMED], 0),
    ("json-readings-null", JSON, b'{"v": 1, "readings": null}', [MALFORMED], 0),
    ("json-year-10000-utc", JSON, native(native_item(measured_at=YEAR_10000)), [NO_TIME], 0),
    ("json-last-second", JSON, native(native_item(measured_at=LAST_SECOND)), [], 1),
    ("json-beyond-retention", JSON, native(native_item(measured_at=BEYOND)), [RETENTION], 0),
    ("json-within-retention", JSON, native(native_item(measured_at=WITHIN)), [], 1),
    ("json-quality", JSON, native(native_item(quality=["low_perfusion"])), [], 1),
    ("json-quality-empty", JSON, native(native_item(quality=[])), [], 1),
    ("json-quality-repeated", JSON, native(bp_item(quality=["cuff_loose"] * 2)), [], 1),
    ("json-quality-unknown", JSON, native(native_item(quality=["cold_fingers"])), [MALFORMED], 0),
    ("json-quality-case", JSON, native(native_item(quality=["Low_Perfusion"])), [MALFORMED], 0),
    ("json-quality-number", JSON, native(native_item(quality=[5])), [MALFORMED], 0),
    ("json-quality-string", JSON, native(native_item(quality="poor_signal")), [MALFORMED], 0),
    ("json-quality-null", JSON, native(native_item(quality=None)), [MALFORMED], 0),
    ("json-quality-17", JSON, native(native_item(quality=["poor_signal"] * 17)), [MALFORMED], 0),
    # FHIR R4
    ("fhir-good", FHIR, fhir(observation()), [], 1),
    ("fhir-value-string", FHIR, fhir(observation("96")), [MALFORMED], 0),
    ("fhir-value-true", FHIR, fhir(observation(True)), [MALFORMED], 0),
    ("fhir-effective-unix", FHIR, fhir(observation(effectiveDateTime=UNIX)), [NO_TIME], 0),
    (
        "fhir-effective-unix-string",
        FHIR,
        fhir(observation(effectiveDateTime=str(UNIX))),
        [NO_TIME],
        0,
    ),
    (
        "fhir-device-padded",
        FHIR,
        fhir(observation(device={"reference": "Device/ oxi-2"})),
        [MALFORMED],
        0,
    ),
    (
        "fhir-device-nbsp",
        FHIR,
        fhir(observation(device={"identifier": {"value": f"oxi-2{NBSP}"}})),
        [MALFORMED],
        0,
    ),
    ("fhir-1000", FHIR, fhir(*[observation()] * MAX), [], MAX),
    ("fhir-1001", FHIR, fhir(*[observation()] * (MAX + 1)), [MALFORMED], 0),
    ("fhir-year-10000-utc", FHIR, fhir(observation(effectiveDateTime=YEAR_10000)), [NO_TIME], 0),
    ("fhir-last-second", FHIR, fhir(observation(effectiveDateTime=LAST_SECOND)), [], 1),
    ("fhir-beyond-retention", FHIR, fhir(observation(effectiveDateTime=BEYOND)), [RETENTION], 0),
    ("fhir-within-retention", FHIR, fhir(observation(effectiveDateTime=WITHIN)), [], 1),
    # raw Bluetooth
    ("ble-good", BLE, ble(), [], 1),
    ("ble-v-true", BLE, ble(v=True), [VERSION], 0),
    ("ble-v-string", BLE, ble(v="1"), [VERSION], 0),
    ("ble-received-unix", BLE, ble(ble_item(received_at=UNIX)), [NO_TIME], 0),
    ("ble-received-unix-string", BLE, ble(ble_item(received_at=str(UNIX))), [NO_TIME], 0),
    ("ble-sent-unix", BLE, ble(sent_at=UNIX), [MALFORMED], 0),
    ("ble-device-padded", BLE, ble(ble_item(device_id="oxi-2 ")), [MALFORMED], 0),
    ("ble-device-nbsp", BLE, ble(ble_item(device_id=f"{NBSP}oxi-2")), [MALFORMED], 0),
    ("ble-hex-padded", BLE, ble(ble_item(hex=" 0048")), [MALFORMED], 0),
    ("ble-timezone-padded", BLE, ble(timezone="+01:00 "), [MALFORMED], 0),
    ("ble-1000", BLE, ble(*[ble_item()] * MAX), [], MAX),
    ("ble-1001", BLE, ble(*[ble_item()] * (MAX + 1)), [MALFORMED], 0),
    ("ble-received-year-10000-utc", BLE, ble(ble_item(received_at=YEAR_10000)), [NO_TIME], 0),
    (
        "ble-stamp-year-10000-utc",
        BLE,
        ble(ble_item(characteristic="2A9D", hex=STAMPED_9999, timezone="-01:00")),
        [NO_TIME],
        0,
    ),
    (
        "ble-stamp-last-second",
        BLE,
        ble(ble_item(characteristic="2A9D", hex=STAMPED_9999, timezone="+00:00")),
        [],
        1,
    ),
    ("ble-received-beyond-retention", BLE, ble(ble_item(received_at=BEYOND)), [RETENTION], 0),
    (
        "ble-stamp-beyond-retention",
        BLE,
        ble(ble_item(characteristic="2A9D", hex=STAMPED_2019, timezone="Europe/Stockholm")),
        [RETENTION],
        0,
    ),
    ("ble-received-within-retention", BLE, ble(ble_item(received_at=WITHIN)), [], 1),
]


def judge(fmt: PayloadFormat, payload: bytes) -> tuple[list[str], int]:
    """The reasons the worker gives for ``payload`` and how many readings it would store."""
    decoded = decode(fmt, payload)
    accepted, refused = validate(decoded.readings, NOW, CLOCK)
    return sorted(r.reason.value for r in decoded.rejections + refused), len(accepted)


@pytest.mark.parametrize(
    ("fmt", "payload", "reasons", "stored"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_every_format_takes_what_the_contract_says(
    fmt: PayloadFormat, payload: bytes, reasons: list[str], stored: int
) -> None:
    """Each payload gets the documented reasons in every format, and only good ones are kept."""
    assert (reasons, stored) == judge(fmt, payload)


_SCHEMAS = {
    JSON: jsonschema.Draft202012Validator(
        json_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ),
    BLE: jsonschema.Draft202012Validator(
        BleEnvelope.model_json_schema(),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ),
}
#: What the schema cannot say: the time line (UTC range, retention) is the clock policy's,
#: and a device stamp is inside the characteristic value. Python's ``re`` (which jsonschema
#: uses) lets ``$`` match before a final newline; ECMA-262, which JSON Schema names, does not.
_BEYOND_SCHEMA = ("year-10000-utc", "retention", "ble-stamp", "newline")


@pytest.mark.parametrize(
    ("fmt", "payload", "reasons"),
    [
        (fmt, payload, reasons)
        for name, fmt, payload, reasons, _ in CASES
        if fmt in _SCHEMAS and not any(part in name for part in _BEYOND_SCHEMA)
    ],
    ids=[
        name
        for name, fmt, *_ in CASES
        if fmt in _SCHEMAS and not any(part in name for part in _BEYOND_SCHEMA)
    ],
)
def test_published_schema_agrees_with_the_worker(
    fmt: PayloadFormat, payload: bytes, reasons: list[str]
) -> None:
    """A payload the published JSON Schema accepts is one the worker takes, and vice versa."""
    schema_says_valid = _SCHEMAS[fmt].is_valid(json.loads(payload))
    assert (not reasons) == schema_says_valid


def test_year_10000_in_utc_is_refused_not_flagged() -> None:
    """A time that is past year 9999 in UTC is no_timestamp, not a clock_future reading."""
    decoded = decode(JSON, native(native_item(measured_at=YEAR_10000)))
    accepted, refused = validate(decoded.readings, NOW, CLOCK)
    assert ([], ["measured_at is outside years 1-9999 in UTC"]) == (
        accepted,
        [r.detail for r in refused],
    )


def test_stale_within_retention_is_stored_flagged() -> None:
    """Older than the stale limit but within the retention: stored, flagged clock_stale."""
    decoded = decode(JSON, native(native_item(measured_at=WITHIN)))
    accepted, _ = validate(decoded.readings, NOW, CLOCK)
    assert [[Flag.STALE]] == [r.flags for r in accepted]


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("7 days", 7),
        ("1 day", 1),
        ("2 weeks", 14),
        ("1 month", 28),
        ("3 months", 89),  # February, March and April at the shortest
        ("12 months", 365),
        ("1 year", 365),
        ("4 years", 1460),  # 2100 is no leap year: 2097-03 to 2101-03 holds no 29 February
        ("5 years", 1825),
        ("400 years", 146_097),  # one whole Gregorian cycle
    ],
)
def test_retention_counts_months_and_years_at_their_shortest(text: str, days: int) -> None:
    """The retention setting parses to the fewest days PostgreSQL's interval can span."""
    assert timedelta(days=days) == parse_retention(text)


@pytest.mark.parametrize(
    ("text", "in_error"),
    [
        ("5 fortnights", "not a count and a unit"),
        ("five years", "not a count and a unit"),
        ("-1 days", "not a count and a unit"),
        ("5years", "not a count and a unit"),
        (" 5 years", "not a count and a unit"),
        ("0 days", "longer than 0"),
        ("1001 years", "longer than 1000 years"),
        ("400000 days", "longer than 1000 years"),
    ],
)
def test_retention_setting_that_cannot_be_read_is_refused_at_load(text: str, in_error: str) -> None:
    """A retention the service cannot read stops it at settings load, saying why."""
    with pytest.raises(ValueError, match="retention") as raised:
        Settings(_env_file=None, retention=text)
    assert in_error in str(raised.value)


def test_clock_policy_is_built_from_the_settings() -> None:
    """The worker's clock policy carries the retention setting, parsed, and the clock limits."""
    settings = Settings(
        _env_file=None, retention="90 days", clock_future_tolerance_s=60, clock_stale_after_s=3600
    )
    assert ClockPolicy(timedelta(minutes=1), timedelta(hours=1), timedelta(days=90)) == (
        ClockPolicy.from_settings(settings)
    )
