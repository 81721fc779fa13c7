"""The device-side encoders: SFLOAT, Bluetooth bytes, FHIR and native JSON payloads."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import struct
from datetime import datetime

import pytest

from homemonitor.contract.protocol import Envelope, PayloadFormat
from homemonitor.contract.readings import NO_QUALITY, Metric, Quality, Quantity
from homemonitor.decoding import decode
from homemonitor_devices.encoders import (
    SFLOAT_NAN,
    SFLOAT_NEG_INFINITY,
    SFLOAT_NRES,
    SFLOAT_POS_INFINITY,
    EncodingError,
    ble_characteristic,
    decode_sfloat,
    encode,
    encode_ble,
    encode_fhir,
    encode_native,
    encode_sfloat,
)
from homemonitor_devices.measurement import HOME_TZ, DeviceKind, Measurement

AT = datetime(2026, 1, 5, 7, 30, 15, tzinfo=HOME_TZ)


def _measurement(kind: DeviceKind, values: dict[Quantity, float]) -> Measurement:
    return Measurement("dev-0001", kind, AT, AT, values, "gw-0001-000001")


BP = _measurement(
    DeviceKind.BLOOD_PRESSURE_CUFF,
    {
        Quantity.SYSTOLIC: 120,
        Quantity.DIASTOLIC: 80,
        Quantity.MEAN_ARTERIAL: 93,
        Quantity.HEART_RATE: 70,
    },
)
WEIGHT = _measurement(DeviceKind.SCALE, {Quantity.BODY_WEIGHT: 82.3})
SPO2 = _measurement(DeviceKind.PULSE_OXIMETER, {Quantity.SPO2: 94, Quantity.HEART_RATE: 88})
HEART_RATE = _measurement(DeviceKind.HEART_RATE_MONITOR, {Quantity.HEART_RATE: 72})
ALL = [BP, WEIGHT, SPO2, HEART_RATE]
#: Local time 2026-01-05 07:30:15 as a Bluetooth Date Time.
STAMP = "ea07 01 05 07 1e 0f"


@pytest.mark.parametrize(
    ("value", "word"),
    [(120, 0x0078), (120.0, 0x0078), (36.6, 0xF16E), (0, 0x0000), (-5, 0x0FFB), (98.5, 0xF3D9)],
)
def test_sfloat_encodes_known_values(value: float, word: int) -> None:
    """Known values encode to the SFLOAT words IEEE 11073-20601 gives them."""
    assert word == encode_sfloat(value)
    assert value == decode_sfloat(word)


@pytest.mark.parametrize(
    "value", [1, -1, 37.2, 120, 2045, -2045, 20450, 1.25, 99.9, 0.005, 82.3, 180, 4000]
)
def test_sfloat_round_trips(value: float) -> None:
    """Encoding then decoding gives the value back (to SFLOAT's 3-4 digits)."""
    assert value == pytest.approx(decode_sfloat(encode_sfloat(value)), rel=1e-12)


def test_sfloat_special_values() -> None:
    """NaN and the infinities use the reserved words; NRes decodes as NaN."""
    assert SFLOAT_NAN == encode_sfloat(math.nan) == 0x07FF
    assert SFLOAT_POS_INFINITY == encode_sfloat(math.inf) == 0x07FE
    assert SFLOAT_NEG_INFINITY == encode_sfloat(-math.inf) == 0x0802
    assert math.isnan(decode_sfloat(SFLOAT_NAN))
    assert math.isnan(decode_sfloat(SFLOAT_NRES))
    assert math.inf == decode_sfloat(SFLOAT_POS_INFINITY)


def test_sfloat_refuses_values_it_cannot_hold() -> None:
    """A value beyond 2045e7 raises an error that names SFLOAT."""
    with pytest.raises(EncodingError, match="SFLOAT"):
        encode_sfloat(1e12)


def test_blood_pressure_characteristic_bytes() -> None:
    """0x2A35: flags, systolic/diastolic/MAP, time stamp, pulse, status (user id on request)."""
    expected = bytes.fromhex(f"16 7800 5000 5d00 {STAMP} 4600 0000")
    with_user = bytes.fromhex(f"1e 7800 5000 5d00 {STAMP} 4600 01 0000")
    assert ("2A35", expected) == ble_characteristic(BP)
    assert ("2A35", with_user) == ble_characteristic(BP, user_id=1)


def test_weight_characteristic_bytes() -> None:
    """0x2A9D: SI units, weight in 0.005 kg steps, time stamp (user id on request)."""
    steps = struct.pack("<H", round(82.3 / 0.005)).hex()
    assert ("2A9D", bytes.fromhex(f"02 {steps} {STAMP}")) == ble_characteristic(WEIGHT)
    assert ("2A9D", bytes.fromhex(f"06 {steps} {STAMP} 07")) == ble_characteristic(
        WEIGHT, user_id=7
    )


def test_spot_check_and_heart_rate_characteristic_bytes() -> None:
    """0x2A5E carries SpO2 and pulse as SFLOAT with a time stamp; 0x2A37 a uint8 rate."""
    assert ("2A5E", bytes.fromhex(f"01 5e00 5800 {STAMP}")) == ble_characteristic(SPO2)
    assert ("2A37", bytes.fromhex("06 48")) == ble_characteristic(HEART_RATE)


def test_ble_envelope() -> None:
    """The Bluetooth envelope names the zone, characteristic, hex bytes and receive time."""
    fmt, payload = encode_ble(WEIGHT)
    reading = json.loads(payload)["readings"][0]
    assert PayloadFormat.BLE == fmt
    assert {
        "device_id": "dev-0001",
        "characteristic": "2A9D",
        "hex": ble_characteristic(WEIGHT)[1].hex(),
        "received_at": "2026-01-05T07:30:15+01:00",
        "message_id": "gw-0001-000001",
    } == reading
    assert "Europe/Stockholm" == json.loads(payload)["timezone"]


def test_fhir_blood_pressure_panel() -> None:
    """Blood pressure is a LOINC 85354-9 panel with UCUM components and a Device reference."""
    fmt, payload = encode_fhir(BP)
    resource = json.loads(payload)
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in resource["component"]}
    assert PayloadFormat.FHIR == fmt
    assert "85354-9" == resource["code"]["coding"][0]["code"]
    assert "Device/dev-0001" == resource["device"]["reference"]
    assert "2026-01-05T07:30:15+01:00" == resource["effectiveDateTime"]
    assert {
        "8480-6": {
            "value": 120,
            "unit": "mmHg",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]",
        },
        "8462-4": {
            "value": 80,
            "unit": "mmHg",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]",
        },
        "8867-4": {
            "value": 70,
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    } == components


@pytest.mark.parametrize(
    ("m", "code", "ucum", "value"),
    [
        (WEIGHT, "29463-7", "kg", 82.3),
        (SPO2, "59408-5", "%", 94),
        (HEART_RATE, "8867-4", "/min", 72),
    ],
)
def test_fhir_single_value_observations(m: Measurement, code: str, ucum: str, value: float) -> None:
    """Weight, SpO2 and heart rate carry their LOINC code and a UCUM valueQuantity."""
    resource = json.loads(encode_fhir(m)[1])
    assert code == resource["code"]["coding"][0]["code"]
    assert (ucum, value) == (resource["valueQuantity"]["code"], resource["valueQuantity"]["value"])


@pytest.mark.parametrize("m", ALL, ids=lambda m: m.kind.value)
def test_native_payload_follows_the_contract(m: Measurement) -> None:
    """The native payload validates as an Envelope and decodes to the measured values."""
    fmt, payload = encode_native(m)
    decoded = decode(fmt, payload)
    Envelope.model_validate_json(payload)
    assert [] == decoded.rejections
    assert [(m.device_id, m.metric, AT, dict(m.values), m.message_id)] == [
        (r.device_id, r.metric, r.measured_at, r.values, r.message_id) for r in decoded.readings
    ]


def test_native_batch() -> None:
    """A list of measurements becomes one envelope with 'readings' in order."""
    _, payload = encode_native(ALL)
    assert [m.message_id for m in ALL] == [r["message_id"] for r in json.loads(payload)["readings"]]


def _expected_values(m: Measurement, fmt: PayloadFormat) -> dict[Quantity, float]:
    if fmt is not PayloadFormat.FHIR:
        return dict(m.values)
    # FHIR carries no mean arterial pressure, nor an oximeter's pulse.
    if m.metric is Metric.SPO2:
        return {Quantity.SPO2: m.values[Quantity.SPO2]}
    return {q: v for q, v in m.values.items() if q is not Quantity.MEAN_ARTERIAL}


@pytest.mark.parametrize("fmt", [PayloadFormat.FHIR, PayloadFormat.BLE])
@pytest.mark.parametrize("m", ALL, ids=lambda m: m.kind.value)
def test_service_decodes_what_devices_encode(fmt: PayloadFormat, m: Measurement) -> None:
    """The service's own decoder reads each encoded format back to the measured values."""
    module = {PayloadFormat.FHIR: "fhir", PayloadFormat.BLE: "bluetooth"}[fmt]
    if importlib.util.find_spec(f"homemonitor.decoding.{module}") is None:
        pytest.skip(f"homemonitor.decoding.{module} is not written yet")
    decoded = decode(*encode(m, fmt))
    assert [] == decoded.rejections
    assert 1 == len(decoded.readings)
    reading = decoded.readings[0]
    assert (m.device_id, m.metric, AT) == (reading.device_id, reading.metric, reading.measured_at)
    assert _expected_values(m, fmt) == pytest.approx(reading.values)
    assert m.message_id == reading.message_id


def test_shared_device_user_id_reaches_the_service() -> None:
    """A User ID in a Bluetooth measurement makes the service name the device '<id>:u<n>'."""
    if importlib.util.find_spec("homemonitor.decoding.bluetooth") is None:
        pytest.skip("homemonitor.decoding.bluetooth is not written yet")
    decoded = decode(*encode_ble(BP, user_id=2))
    assert ["dev-0001:u2"] == [r.device_id for r in decoded.readings]


def test_heart_rate_above_255_uses_uint16() -> None:
    """A rate that does not fit a byte switches the Heart Rate format flag to uint16."""
    fast = _measurement(DeviceKind.HEART_RATE_MONITOR, {Quantity.HEART_RATE: 300})
    assert ("2A37", bytes.fromhex("07 2c01")) == ble_characteristic(fast)
    assert Metric.HEART_RATE == fast.metric


CUFF_FLAGS = frozenset(
    {
        Quality.BODY_MOVEMENT,
        Quality.CUFF_LOOSE,
        Quality.IRREGULAR_PULSE,
        Quality.PULSE_RATE_OUT_OF_RANGE,
        Quality.IMPROPER_POSITION,
    }
)
OXIMETER_FLAGS = frozenset(Quality) - CUFF_FLAGS


def test_cuff_flags_become_measurement_status_bits() -> None:
    """A cuff's flags set Measurement Status bits 0, 1, 2, 3 (range: above) and 5."""
    moved = dataclasses.replace(BP, quality=frozenset({Quality.BODY_MOVEMENT}))
    every = dataclasses.replace(BP, quality=CUFF_FLAGS)
    assert ble_characteristic(moved)[1].endswith(bytes.fromhex("0100"))
    assert ble_characteristic(every)[1].endswith(bytes.fromhex("2f00"))


def test_oximeter_flags_add_both_plx_status_fields() -> None:
    """An oximeter's flags add Measurement Status and Device and Sensor Status (flags 0x07)."""
    flagged = dataclasses.replace(
        SPO2, quality=frozenset({Quality.QUESTIONABLE_MEASUREMENT, Quality.LOW_PERFUSION})
    )
    # status 0x4000 (bit 14), device status 0x000020 (bit 5), both little-endian
    expected = bytes.fromhex(f"07 5e00 5800 {STAMP} 0040 200000")
    assert ("2A5E", expected) == ble_characteristic(flagged)


@pytest.mark.parametrize(
    ("m", "flags"), [(BP, CUFF_FLAGS), (SPO2, OXIMETER_FLAGS)], ids=["cuff", "oximeter"]
)
@pytest.mark.parametrize("fmt", [PayloadFormat.BLE, PayloadFormat.NATIVE])
def test_service_decodes_the_flags_devices_send(
    fmt: PayloadFormat, m: Measurement, flags: frozenset[Quality]
) -> None:
    """Every flag a device can send arrives as the same quality, as status bits or by name."""
    for flag in sorted(flags):
        decoded = decode(*encode(dataclasses.replace(m, quality=frozenset({flag})), fmt))
        assert [frozenset({flag})] == [r.quality for r in decoded.readings], flag
    decoded = decode(*encode(dataclasses.replace(m, quality=flags), fmt))
    assert [flags] == [r.quality for r in decoded.readings]


def test_native_item_lists_flags_by_name_only_when_there_are_some() -> None:
    """The native item carries a sorted ``quality`` list, and none for an unflagged reading."""
    flagged = dataclasses.replace(
        SPO2, quality=frozenset({Quality.POOR_SIGNAL, Quality.LOW_PERFUSION})
    )
    item = json.loads(encode_native(flagged)[1])["reading"]
    plain = json.loads(encode_native(SPO2)[1])["reading"]
    assert (["low_perfusion", "poor_signal"], False) == (item["quality"], "quality" in plain)


@pytest.mark.parametrize(
    ("m", "flag"),
    [
        (WEIGHT, Quality.BODY_MOVEMENT),  # a scale has no status field
        (HEART_RATE, Quality.POOR_SIGNAL),
        (BP, Quality.LOW_PERFUSION),  # an oximeter's flag on a cuff
        (SPO2, Quality.CUFF_LOOSE),
    ],
    ids=["scale", "heart-rate", "cuff", "oximeter"],
)
def test_ble_refuses_a_flag_the_characteristic_cannot_carry(m: Measurement, flag: Quality) -> None:
    """A flag with no bit in the characteristic is an EncodingError, never silently dropped."""
    with pytest.raises(EncodingError, match=flag.value):
        ble_characteristic(dataclasses.replace(m, quality=frozenset({flag})))


def test_unflagged_measurements_decode_unflagged() -> None:
    """What the simulators send by default carries no quality flag in any format."""
    for fmt in PayloadFormat:
        for m in ALL:
            assert [NO_QUALITY] == [r.quality for r in decode(*encode(m, fmt)).readings]
