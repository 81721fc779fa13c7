"""The raw Bluetooth measurement decoder (``readings/ble``).

Byte vectors are either worked out from the Bluetooth specifications (the comment beside
each shows how it was built; SFLOAT = 4-bit exponent in the high nibble, 12-bit mantissa,
little-endian on the wire) or copied from public test code (the comment names the
repository, file and commit). Nothing here uses the device simulators' encoders.
"""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from homemonitor.contract.protocol import PayloadFormat
from homemonitor.contract.readings import (
    NO_QUALITY,
    Metric,
    Quality,
    Quantity,
    Reading,
    Reason,
    Rejection,
)
from homemonitor.contract.units import KPA_TO_MMHG, LB_TO_KG, to_canonical
from homemonitor.decoding import decode
from homemonitor.decoding.bluetooth import (
    PLX_DEVICE_STATUS_QUALITY,
    PLX_DEVICE_STATUS_UNUSABLE,
    PLX_MEASUREMENT_STATUS_QUALITY,
    PLX_MEASUREMENT_STATUS_UNUSABLE,
    BleEnvelope,
    SpecialValue,
    SpecialValueError,
    decode_ble,
    parse_float,
    parse_sfloat,
)
from homemonitor.decoding.native import decode_native

STOCKHOLM = ZoneInfo("Europe/Stockholm")
RECEIVED = "2026-11-22T07:31:02+01:00"
RECEIVED_AT = datetime(2026, 11, 22, 7, 31, 2, tzinfo=timezone(timedelta(hours=1)))
#: Date Time 2026-11-22 07:31:00: year 2026 = 0x07EA (ea 07), month 0b, day 16, 07 1f 00.
STAMP = bytes.fromhex("ea07 0b 16 07 1f 00")
STAMPED_AT = datetime(2026, 11, 22, 7, 31, 0, tzinfo=STOCKHOLM)
#: A Date Time of all zeros: year, month and day "not known".
NOT_KNOWN = bytes(7)

BP, WEIGHT, SPOT, CONTINUOUS, HR = "2A35", "2A9D", "2A5E", "2A5F", "2A37"
SPECIALS = [
    (0x07FF, SpecialValue.NAN),
    (0x0800, SpecialValue.NRES),
    (0x07FE, SpecialValue.POSITIVE_INFINITY),
    (0x0802, SpecialValue.NEGATIVE_INFINITY),
    (0x0801, SpecialValue.RESERVED),
]


def sfloat(mantissa: int, exponent: int = 0) -> bytes:
    """A test-side SFLOAT: exponent in bits 15-12, mantissa in bits 11-0, little-endian."""
    return (((exponent & 0xF) << 12) | (mantissa & 0xFFF)).to_bytes(2, "little")


def u16(value: int) -> bytes:
    """A little-endian uint16."""
    return value.to_bytes(2, "little")


def date_time(*fields: int) -> bytes:
    """A Bluetooth Date Time (0x2A08): uint16 year, then month, day, hours, minutes, seconds."""
    year, *rest = fields
    return u16(year) + bytes(rest)


def item(characteristic: str, value: bytes, /, **extra: Any) -> dict[str, Any]:
    """One envelope item carrying ``value`` as hex."""
    fields: dict[str, Any] = {
        "device_id": "cuff-0001",
        "characteristic": characteristic,
        "hex": value.hex(),
        "received_at": RECEIVED,
    }
    fields.update(extra)
    return {k: v for k, v in fields.items() if v is not None}


def envelope(*items: dict[str, Any], **head: Any) -> bytes:
    """A version 1 envelope around ``items``."""
    return json.dumps({"v": 1, **head, "readings": list(items)}).encode()


def decode_one(
    characteristic: str, value: bytes, /, *, zone: str | None = "Europe/Stockholm", **extra: Any
) -> Reading | Rejection:
    """Decode one item (envelope ``timezone`` = ``zone``); its reading or its rejection."""
    head = {} if zone is None else {"timezone": zone}
    decoded = decode_ble(envelope(item(characteristic, value, **extra), **head))
    assert 1 == len(decoded.readings) + len(decoded.rejections)
    return decoded.readings[0] if decoded.readings else decoded.rejections[0]


def reading(characteristic: str, value: bytes, /, **kwargs: Any) -> Reading:
    """Decode one item that must give a reading."""
    result = decode_one(characteristic, value, **kwargs)
    assert isinstance(result, Reading), result
    return result


def rejection(characteristic: str, value: bytes, /, **kwargs: Any) -> Rejection:
    """Decode one item that must be rejected."""
    result = decode_one(characteristic, value, **kwargs)
    assert isinstance(result, Rejection), result
    return result


# --- IEEE 11073 SFLOAT and FLOAT ------------------------------------------------------------------

# The SFLOAT and FLOAT tables of HL7/phd input/pagecontent/MderFLOATsandSFLOATs.md
# (commit 2da199bc5987f4fd4c377fcaba9795e5c5e8c51a), raw value -> value.
HL7_SFLOAT = [
    (0x0002, 2.0),
    (0xF014, 2.0),
    (0xE0C8, 2.0),
    (0x1002, 20.0),
    (0x2002, 200.0),
    (0x00C8, 200.0),
    (0x04D2, 1234.0),
    (0x0B2E, -1234.0),
]
HL7_FLOAT = [
    (0x00000002, 2.0),
    (0xFF000014, 2.0),
    (0xFE0000C8, 2.0),
    (0x01000002, 20.0),
    (0x02000002, 200.0),
    (0x000000C8, 200.0),
    (0x000004D2, 1234.0),
    (0x00FFFB2E, -1234.0),
]


@pytest.mark.parametrize(("raw", "expected"), HL7_SFLOAT)
def test_sfloat_matches_the_hl7_phd_table(raw: int, expected: float) -> None:
    """Every SFLOAT in the HL7 PHD IG's encoding table decodes to its value."""
    assert expected == parse_sfloat(raw)


@pytest.mark.parametrize(("raw", "expected"), HL7_FLOAT)
def test_float_matches_the_hl7_phd_table(raw: int, expected: float) -> None:
    """Every FLOAT in the HL7 PHD IG's encoding table decodes to its value."""
    assert expected == parse_float(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0x0078, 120.0),  # 120 x 10^0
        (0xF4B0, 120.0),  # 1200 x 10^-1 (0x4B0 = 1200, exponent 0xF = -1)
        (0x100C, 120.0),  # 12 x 10^1
        (0xF0BD, 18.9),  # 189 x 10^-1, exactly the double nearest 18.9
        (0xE0BD, 1.89),  # 189 x 10^-2
        (0x8001, 1e-8),  # smallest exponent, -8
        (0x77FD, 2045e7),  # largest ordinary mantissa and exponent
        (0xF7FF, 204.7),  # mantissa 0x7FF is special only with exponent 0
        (0x0FFF, -1.0),  # mantissa 0xFFF = -1
    ],
)
def test_sfloat_is_exact_decimal(raw: int, expected: float) -> None:
    """An SFLOAT is mantissa x 10^exponent in exact decimal, whatever the encoding."""
    assert expected == parse_sfloat(raw)


@pytest.mark.parametrize(("raw", "special"), SPECIALS)
def test_sfloat_special_values_are_never_numbers(raw: int, special: SpecialValue) -> None:
    """An SFLOAT special value raises SpecialValueError (a ValueError) naming it."""
    with pytest.raises(ValueError, match=re.escape(special.value)) as caught:
        parse_sfloat(raw)
    assert isinstance(caught.value, SpecialValueError)
    assert (special, raw, "SFLOAT") == (caught.value.special, caught.value.raw, caught.value.kind)


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x007FFFFF, SpecialValue.NAN),
        (0x00800000, SpecialValue.NRES),
        (0x007FFFFE, SpecialValue.POSITIVE_INFINITY),
        (0x00800002, SpecialValue.NEGATIVE_INFINITY),
        (0x00800001, SpecialValue.RESERVED),
    ],
)
def test_float_special_values_are_never_numbers(raw: int, special: SpecialValue) -> None:
    """A FLOAT special value raises SpecialValueError naming it."""
    with pytest.raises(SpecialValueError) as caught:
        parse_float(raw)
    assert (special, "FLOAT") == (caught.value.special, caught.value.kind)


@pytest.mark.parametrize(
    ("parse", "raw"), [(parse_sfloat, -1), (parse_sfloat, 0x10000), (parse_float, 1 << 32)]
)
def test_numbers_out_of_width_are_refused(parse: Any, raw: int) -> None:
    """A raw value wider than the format is a plain ValueError, not a special value."""
    with pytest.raises(ValueError, match="out of range") as caught:
        parse(raw)
    assert not isinstance(caught.value, SpecialValueError)


# --- 0x2A35 Blood Pressure Measurement ------------------------------------------------------------

# NordicSemiconductor/Android-BLE-Common-Library, ble-common/src/test/java/no/nordicsemi/android/
# ble/common/callback/bps/BloodPressureMeasurementDataCallbackTest.java (commit 0c84d7ae).
# _full: flags 0x1E, 138/88/120 mmHg, Date Time with year 0 (not known) April 17 20:41:59,
# pulse 60, user 1, status 0b100111 (body movement, cuff loose, irregular pulse, position).
NORDIC_BP_FULL = bytes.fromhex("1e 8a00 5800 7800 0000 04 11 14 29 3b 3c00 01 2700")
# _some: flags 0x15 (kPa, pulse, status), 18.9/11/15.9 kPa, pulse 60, status 0b010010.
NORDIC_BP_SOME = bytes.fromhex("15 bdf0 0b00 9ff0 3c00 1200")
# _minimal: flags 0x00, 18.9/11/15.9 (mmHg by the flags).
NORDIC_BP_MINIMAL = bytes.fromhex("00 bdf0 0b00 9ff0")


def test_bp_nordic_full_vector() -> None:
    """Nordic's full vector: user-suffixed, values in mmHg, unknown year -> received_at."""
    got = reading(BP, NORDIC_BP_FULL)
    expected = {
        Quantity.SYSTOLIC: 138.0,
        Quantity.DIASTOLIC: 88.0,
        Quantity.MEAN_ARTERIAL: 120.0,
        Quantity.HEART_RATE: 60.0,
    }
    assert ("cuff-0001:u1", Metric.BLOOD_PRESSURE, expected, RECEIVED_AT) == (
        got.device_id,
        got.metric,
        got.values,
        got.measured_at,
    )
    flagged = {
        Quality.BODY_MOVEMENT,
        Quality.CUFF_LOOSE,
        Quality.IRREGULAR_PULSE,
        Quality.IMPROPER_POSITION,
    }
    assert flagged == got.quality


def test_bp_nordic_kpa_vector() -> None:
    """Nordic's kPa vector: pressures converted to mmHg, pulse untouched, status as flags."""
    got = reading(BP, NORDIC_BP_SOME)
    expected = {
        Quantity.SYSTOLIC: 18.9 * KPA_TO_MMHG,
        Quantity.DIASTOLIC: 11.0 * KPA_TO_MMHG,
        Quantity.MEAN_ARTERIAL: 15.9 * KPA_TO_MMHG,
        Quantity.HEART_RATE: 60.0,
    }
    # status 0b010010: cuff too loose (bit 1); pulse rate range (bits 3-4) 2, below the limit
    flagged = {Quality.CUFF_LOOSE, Quality.PULSE_RATE_OUT_OF_RANGE}
    assert (expected, "cuff-0001", flagged) == (got.values, got.device_id, got.quality)


def test_bp_nordic_minimal_vector() -> None:
    """Nordic's minimal vector: three pressures, no options, time of receipt."""
    got = reading(BP, NORDIC_BP_MINIMAL)
    expected = {Quantity.SYSTOLIC: 18.9, Quantity.DIASTOLIC: 11.0, Quantity.MEAN_ARTERIAL: 15.9}
    assert (expected, RECEIVED_AT, NO_QUALITY) == (got.values, got.measured_at, got.quality)


@pytest.mark.parametrize(
    ("value", "needed", "got"),
    [
        # Nordic's onInvalidDataReceived_toShort and _noTimestamp vectors (same file).
        (bytes([1, 2, 3, 4, 5, 6]), 7, 6),
        (bytes([3, 2, 3, 4, 5, 6, 7]), 14, 7),
    ],
)
def test_bp_nordic_invalid_vectors(value: bytes, needed: int, got: int) -> None:
    """Nordic's invalid vectors are malformed, naming the needed and actual lengths."""
    refused = rejection(BP, value)
    expected = (
        f"0x2A35 Blood Pressure Measurement with flags 0x{value[0]:02X}"
        f" needs {needed} bytes, got {got}"
    )
    assert (Reason.MALFORMED, expected) == (refused.reason, refused.detail)


def test_bp_spezikt_vector_with_unexplained_bytes() -> None:
    """A public vector whose flags (0x2F) explain 17 of its 19 bytes is malformed."""
    # StanfordSpezi/SpeziKt core/bluetooth/src/test/kotlin/edu/stanford/spezi/core/bluetooth/
    # data/mapper/BloodPressureMapperTest.kt (commit 123933a1): flags 0b00101111 sets RFU
    # bit 5, not the status bit its comment claims; 120/80/70 then 12 zero bytes.
    value = bytes([0b00101111, 120, 0, 80, 0, 70, 0]) + bytes(12)
    refused = rejection(BP, value)
    expected = (
        "0x2A35 Blood Pressure Measurement with flags 0x2F needs 17 bytes, got 19:"
        " 2 trailing bytes the flags do not explain"
    )
    assert (Reason.MALFORMED, expected) == (refused.reason, refused.detail)


def bp_value(flags: int, *, status: int = 0x0001, user: int = 3) -> bytes:
    """A 0x2A35 value laid out as ``flags`` say: 128/82/97, stamp, pulse 71, user, status."""
    out = bytes([flags]) + sfloat(128) + sfloat(82) + sfloat(97)
    if flags & 0x02:
        out += STAMP
    if flags & 0x04:
        out += sfloat(71)
    if flags & 0x08:
        out += bytes([user])
    if flags & 0x10:
        out += u16(status)
    return out


@pytest.mark.parametrize("flags", range(0x20), ids=lambda f: f"flags={f:#04x}")
def test_bp_every_flag_combination(flags: int) -> None:
    """Each of the 32 flag combinations lays out and decodes as the specification says."""
    got = reading(BP, bp_value(flags))
    unit = "kPa" if flags & 0x01 else "mmHg"
    expected_values = {
        Quantity.SYSTOLIC: to_canonical(Quantity.SYSTOLIC, 128.0, unit),
        Quantity.DIASTOLIC: to_canonical(Quantity.DIASTOLIC, 82.0, unit),
        Quantity.MEAN_ARTERIAL: to_canonical(Quantity.MEAN_ARTERIAL, 97.0, unit),
    }
    if flags & 0x04:
        expected_values[Quantity.HEART_RATE] = 71.0
    expected = (
        expected_values,
        STAMPED_AT if flags & 0x02 else RECEIVED_AT,
        "cuff-0001:u3" if flags & 0x08 else "cuff-0001",
    )
    assert expected == (got.values, got.measured_at, got.device_id)


def test_bp_kpa_is_converted_to_mmhg() -> None:
    """16.0 kPa systolic (mantissa 160, exponent -1) is 120.01 mmHg."""
    # flags 0x01 (kPa) | sys 160e-1 = 0xF0A0 | dia 107e-1 = 0xF06B | MAP NaN 0x07FF
    got = reading(BP, bytes.fromhex("01 a0f0 6bf0 ff07"))
    expected = {Quantity.SYSTOLIC: 120.01, Quantity.DIASTOLIC: 80.26}
    assert expected == {q: round(v, 2) for q, v in got.values.items()}


def test_bp_same_pressure_in_different_exponents_is_equal() -> None:
    """120 mmHg as 120 x 10^0 and as 1200 x 10^-1 give the same reading."""
    # flags 0x00 | sys 0x0078 or 0xF4B0 | dia 80 = 0x0050 | MAP 0x07FF
    plain = reading(BP, bytes.fromhex("00 7800 5000 ff07"))
    scaled = reading(BP, bytes.fromhex("00 b0f4 20f3 ff07"))  # 0xF320 = 800 x 10^-1
    assert plain.values == scaled.values


@pytest.mark.parametrize("field", ["systolic", "diastolic"])
@pytest.mark.parametrize(("raw", "special"), SPECIALS)
def test_bp_special_systolic_or_diastolic_is_missing(
    field: str, raw: int, special: SpecialValue
) -> None:
    """A special systolic or diastolic rejects the reading, naming the field and value."""
    sys = u16(raw) if field == "systolic" else sfloat(120)
    dia = u16(raw) if field == "diastolic" else sfloat(80)
    refused = rejection(BP, b"\x00" + sys + dia + sfloat(93))
    expected = f"0x2A35 Blood Pressure Measurement: {field} is {special.value} (SFLOAT 0x{raw:04X})"
    assert (Reason.MISSING_VALUE, expected, 0) == (refused.reason, refused.detail, refused.index)


@pytest.mark.parametrize(("raw", "special"), SPECIALS)
def test_bp_special_mean_and_pulse_are_absent(raw: int, special: SpecialValue) -> None:
    """A special MAP or pulse rate leaves that quantity out; the reading stands."""
    # flags 0x04 (pulse) | 116/71 mmHg | MAP special | pulse special
    got = reading(BP, b"\x04" + sfloat(116) + sfloat(71) + u16(raw) + u16(raw))
    assert {Quantity.SYSTOLIC: 116.0, Quantity.DIASTOLIC: 71.0} == got.values, special


_OUT_OF_RANGE = Quality.PULSE_RATE_OUT_OF_RANGE


@pytest.mark.parametrize(
    ("status", "flagged"),
    [
        (0x0000, set()),  # no problem detected
        (0x0001, {Quality.BODY_MOVEMENT}),
        (0x0002, {Quality.CUFF_LOOSE}),
        (0x0004, {Quality.IRREGULAR_PULSE}),
        (0x0008, {_OUT_OF_RANGE}),  # pulse rate range 1: exceeds the upper limit
        (0x0010, {_OUT_OF_RANGE}),  # pulse rate range 2: less than the lower limit
        (0x0018, set()),  # pulse rate range 3: RFU, says nothing
        (0x0020, {Quality.IMPROPER_POSITION}),
        (
            0x0027,
            {Quality.BODY_MOVEMENT, Quality.CUFF_LOOSE, Quality.IRREGULAR_PULSE}
            | {Quality.IMPROPER_POSITION},
        ),
        (0xFFC0, set()),  # bits 6-15: RFU, ignored
        (
            0xFFFF,
            {Quality.BODY_MOVEMENT, Quality.CUFF_LOOSE, Quality.IRREGULAR_PULSE}
            | {Quality.IMPROPER_POSITION},
        ),
    ],
    ids=lambda v: f"{v:#06x}" if isinstance(v, int) else None,
)
def test_bp_measurement_status_becomes_quality(status: int, flagged: set[Quality]) -> None:
    """Each Measurement Status bit qualifies the reading with its flag; none rejects it."""
    got = reading(BP, bp_value(0x10, status=status))
    assert (Metric.BLOOD_PRESSURE, flagged) == (got.metric, got.quality)


def test_bp_without_status_field_has_no_quality() -> None:
    """A cuff that sends no Measurement Status says nothing of the measurement."""
    assert NO_QUALITY is reading(BP, bp_value(0x06)).quality


def test_bp_hl7_phd_status_example_is_flagged() -> None:
    """Body movement and improper position (bits 0 and 5, as in PHD IG bpm-status) are flags."""
    # HL7/phd input/examples/bpm-status.json: MDC 8410608 bits 0 and 5 -> status 0x0021.
    got = reading(BP, bp_value(0x10, status=0x0021))
    assert {Quality.BODY_MOVEMENT, Quality.IMPROPER_POSITION} == got.quality


# --- Time stamps --------------------------------------------------------------------------------


def test_time_stamp_in_an_iana_zone() -> None:
    """The device's wall-clock stamp is read in the envelope's IANA zone."""
    got = reading(BP, bp_value(0x02))
    expected = (datetime(2026, 11, 22, 6, 31, tzinfo=UTC), timedelta(hours=1))
    assert expected == (got.measured_at, got.measured_at.utcoffset())


def test_time_stamp_in_a_fixed_offset_item_zone() -> None:
    """An item's ``timezone`` (a fixed offset) overrides the envelope's."""
    got = reading(BP, bp_value(0x02), zone="America/New_York", timezone="-05:00")
    assert datetime(2026, 11, 22, 12, 31, tzinfo=UTC) == got.measured_at


def test_time_stamp_without_a_zone_is_refused() -> None:
    """A stamped measurement with no ``timezone`` anywhere tells the gateway to send one."""
    refused = rejection(BP, bp_value(0x02), zone=None)
    assert Reason.NO_TIMESTAMP == refused.reason
    assert "send 'timezone'" in refused.detail


@pytest.mark.parametrize(
    "stamp",
    [
        NOT_KNOWN,
        date_time(0, 11, 22, 7, 31, 0),
        date_time(2026, 0, 22, 7, 31, 0),
        date_time(2026, 11, 0, 7, 31, 0),
    ],
    ids=["all", "year", "month", "day"],
)
def test_not_known_date_uses_received_at(stamp: bytes) -> None:
    """A Date Time with year, month or day 0 ("not known") falls back to received_at."""
    # flags 0x02 (time stamp) | 128/82/97 mmHg | stamp
    got = reading(BP, b"\x02" + sfloat(128) + sfloat(82) + sfloat(97) + stamp, zone=None)
    assert RECEIVED_AT == got.measured_at


@pytest.mark.parametrize(
    "stamp",
    [
        date_time(2026, 13, 1, 0, 0, 0),
        date_time(2026, 2, 30, 0, 0, 0),
        date_time(2026, 11, 22, 24, 0, 0),
        date_time(2026, 11, 22, 7, 60, 0),
        date_time(2026, 11, 22, 7, 31, 60),
        date_time(1000, 1, 1, 0, 0, 0),
    ],
    ids=["month-13", "feb-30", "hour-24", "minute-60", "second-60", "year-1000"],
)
def test_invalid_date_time_is_malformed(stamp: bytes) -> None:
    """A time stamp that is no real date and time is malformed, without echoing it."""
    refused = rejection(BP, b"\x02" + sfloat(120) + sfloat(80) + sfloat(93) + stamp)
    expected = "0x2A35 Blood Pressure Measurement: the time stamp is not a valid date and time"
    assert (Reason.MALFORMED, expected) == (refused.reason, refused.detail)


def test_ambiguous_autumn_time_is_the_first() -> None:
    """02:30 on the night clocks go back (Stockholm) is taken as the first 02:30 (CEST)."""
    stamp = date_time(2026, 10, 25, 2, 30, 0)
    got = reading(BP, b"\x02" + sfloat(120) + sfloat(80) + sfloat(93) + stamp)
    expected = (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), timedelta(hours=2))
    assert expected == (got.measured_at, got.measured_at.utcoffset())


def test_spring_forward_gap_time_takes_the_offset_before() -> None:
    """02:30 on the night clocks go forward (Stockholm) is read with the winter offset."""
    stamp = date_time(2026, 3, 29, 2, 30, 0)
    got = reading(BP, b"\x02" + sfloat(120) + sfloat(80) + sfloat(93) + stamp)
    expected = (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), timedelta(hours=1))
    assert expected == (got.measured_at, got.measured_at.utcoffset())


# --- 0x2A9D Weight Measurement ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kg"),
    [
        # StanfordSpezi/SpeziKt core/bluetooth/src/test/java/edu/stanford/spezikt/core/
        # bluetooth/WeightDataConverterTest.kt (commit acc9aa4e): flags 6 (stamp, user),
        # weight 0x1220 = 4640 x 0.005 kg, an all-zero (not known) stamp, user 1.
        (bytes([6, 32, 18, 0, 0, 0, 0, 0, 0, 0, 1]), 23.2),
        (bytes([6, 16, 14, 0, 0, 0, 0, 0, 0, 0, 1]), 18.0),  # 0x0E10 = 3600 x 0.005
    ],
)
def test_weight_spezikt_vectors(value: bytes, kg: float) -> None:
    """SpeziKt's vectors: kg, user-suffixed, not-known stamp -> received_at (no zone needed)."""
    got = reading(WEIGHT, value, zone=None, device_id="scale-0002")
    expected = (Metric.BODY_WEIGHT, {Quantity.BODY_WEIGHT: kg}, "scale-0002:u1", RECEIVED_AT)
    assert expected == (got.metric, got.values, got.device_id, got.measured_at)


def weight_value(flags: int, raw: int = 16001) -> bytes:
    """A 0x2A9D value laid out as ``flags`` say: weight, stamp, user 2, BMI 24.5, height."""
    out = bytes([flags]) + u16(raw)
    if flags & 0x02:
        out += STAMP
    if flags & 0x04:
        out += bytes([2])
    if flags & 0x08:
        out += u16(245) + (u16(1800) if not flags & 0x01 else u16(709))  # 1.800 m / 70.9 in
    return out


@pytest.mark.parametrize("flags", range(0x10), ids=lambda f: f"flags={f:#04x}")
def test_weight_every_flag_combination(flags: int) -> None:
    """Each of the 16 flag combinations lays out and decodes as the specification says."""
    got = reading(WEIGHT, weight_value(flags), device_id="scale-0002")
    kg = 16001 * 0.01 * LB_TO_KG if flags & 0x01 else 80.005
    expected = (
        {Quantity.BODY_WEIGHT: kg},
        STAMPED_AT if flags & 0x02 else RECEIVED_AT,
        "scale-0002:u2" if flags & 0x04 else "scale-0002",
    )
    assert expected == (got.values, got.measured_at, got.device_id)


def test_weight_resolutions_are_exact() -> None:
    """SI steps are 0.005 kg and imperial steps 0.01 lb, decimal-exact before conversion."""
    # flags 0x00, weight 16001 = 0x3E81 -> 80.005 kg; flags 0x01, 17640 = 0x44E8 -> 176.40 lb
    kg = reading(WEIGHT, bytes.fromhex("00 813e")).values[Quantity.BODY_WEIGHT]
    lb = reading(WEIGHT, bytes.fromhex("01 e844")).values[Quantity.BODY_WEIGHT]
    assert (80.005, 80.01) == (kg, round(lb, 2))


@pytest.mark.parametrize("flags", [0x00, 0x01, 0x06])
def test_weight_unsuccessful_is_missing(flags: int) -> None:
    """Weight 0xFFFF ("measurement unsuccessful") rejects the reading, in any unit."""
    refused = rejection(WEIGHT, weight_value(flags, raw=0xFFFF))
    expected = "0x2A9D Weight Measurement: weight is 0xFFFF, measurement unsuccessful"
    assert (Reason.MISSING_VALUE, expected) == (refused.reason, refused.detail)


# --- 0x2A5E PLX Spot-Check and 0x2A5F PLX Continuous ---------------------------------------------

# StanfordSpezi/SpeziBluetooth Tests/SpeziBluetoothServicesTests/PLXTests.swift (commit
# 049b5aeb), testSpotCheckMeasurementCoding: flags 0x0F, SpO2 940e-1, PR 1470e-1, stamp
# 2024-11-29 23:08:57, status 0x4020 (ongoing, questionable), device status 0x000022
# (equipment malfunction, low perfusion), PAI 870e-2.
SPEZI_SPOT_CHECK = bytes(
    [15, 172, 243, 190, 245, 232, 7, 11, 29, 23, 8, 57, 32, 64, 34, 0, 0, 102, 227]
)


def test_plx_spot_check_spezi_vector_is_refused_for_malfunction() -> None:
    """Spezi's spot-check vector parses, but its "equipment malfunction" bit rejects it."""
    refused = rejection(SPOT, SPEZI_SPOT_CHECK)
    expected = (
        "0x2A5E PLX Spot-Check Measurement: device and sensor status bit 1"
        " (equipment malfunction detected): not a real measurement"
    )
    assert (Reason.MISSING_VALUE, expected) == (refused.reason, refused.detail)


def test_plx_spot_check_spezi_vector_without_malfunction() -> None:
    """The same vector with its device status cleared to low perfusion only decodes in full."""
    value = bytearray(SPEZI_SPOT_CHECK)
    value[14] = 0x20  # device and sensor status 0x000020: low perfusion (accepted)
    got = reading(SPOT, bytes(value), device_id="oxi-0003")
    expected = (
        Metric.SPO2,
        {Quantity.SPO2: 94.0, Quantity.HEART_RATE: 147.0},
        datetime(2024, 11, 29, 23, 8, 57, tzinfo=STOCKHOLM),
        "oxi-0003",
        {Quality.QUESTIONABLE_MEASUREMENT, Quality.LOW_PERFUSION},  # "ongoing" is no flag
    )
    assert expected == (got.metric, got.values, got.measured_at, got.device_id, got.quality)


def spot_value(flags: int, *, status: int = 0x0020, device: int = 0x000020) -> bytes:
    """A 0x2A5E value laid out as ``flags`` say: SpO2 97, PR 64, stamp, status, device, PAI."""
    out = bytes([flags]) + sfloat(97) + sfloat(64)
    if flags & 0x01:
        out += STAMP
    if flags & 0x02:
        out += u16(status)
    if flags & 0x04:
        out += device.to_bytes(3, "little")
    if flags & 0x08:
        out += sfloat(52, -1)  # PAI 5.2 %
    return out


@pytest.mark.parametrize("flags", range(0x20), ids=lambda f: f"flags={f:#04x}")
def test_plx_spot_check_every_flag_combination(flags: int) -> None:
    """Each of the 32 flag combinations lays out and decodes; an unset clock is ignored."""
    got = reading(SPOT, spot_value(flags))
    stamped = flags & 0x01 and not flags & 0x10
    expected = (
        {Quantity.SPO2: 97.0, Quantity.HEART_RATE: 64.0},
        STAMPED_AT if stamped else RECEIVED_AT,
    )
    assert expected == (got.values, got.measured_at)


def test_plx_device_clock_not_set_needs_no_zone() -> None:
    """With "device clock not set" the stamp is skipped: received_at, no timezone needed."""
    # flags 0x11 (stamp, clock not set) | SpO2 97 | PR 64 | a stamp of 2000-01-01 00:05:00
    value = b"\x11" + sfloat(97) + sfloat(64) + date_time(2000, 1, 1, 0, 5, 0)
    assert RECEIVED_AT == reading(SPOT, value, zone=None).measured_at


# StanfordSpezi/SpeziBluetooth PLXTests.swift (commit 049b5aeb): testVerySimpleMeasurementCoding
# (twice: 1000e-1 and 100e0), testSimpleMeasurementCoding (flags 0x1C: status 0x0020, device
# status 0, PAI 87e-1), testFullMeasurementCoding (flags 0x1F: fast 97/137, slow 98/69,
# status 0x0120, device status 0, PAI 890e-2).
SPEZI_CONTINUOUS = [
    (bytes([0, 232, 243, 132, 243]), 100.0, 90.0),
    (bytes([0, 100, 0, 90, 0]), 100.0, 90.0),
    (bytes([28, 95, 0, 90, 0, 32, 0, 0, 0, 0, 87, 240]), 95.0, 90.0),
    (
        bytes(
            [
                31,
                222,
                243,
                202,
                243,
                202,
                243,
                90,
                245,
                212,
                243,
                178,
                242,
                32,
                1,
                0,
                0,
                0,
                122,
                227,
            ]
        ),
        99.0,
        97.0,
    ),
]


@pytest.mark.parametrize(("value", "spo2", "pulse"), SPEZI_CONTINUOUS)
def test_plx_continuous_spezi_vectors(value: bytes, spo2: float, pulse: float) -> None:
    """Spezi's continuous vectors give the normal SpO2 and pulse rate at received_at, unflagged."""
    got = reading(CONTINUOUS, value)
    values = {Quantity.SPO2: spo2, Quantity.HEART_RATE: pulse}
    expected = (Metric.SPO2, values, RECEIVED_AT, NO_QUALITY)  # ongoing, fully qualified
    assert expected == (got.metric, got.values, got.measured_at, got.quality)


def continuous_value(flags: int, *, status: int = 0x0100, device: int = 0x000100) -> bytes:
    """A 0x2A5F value laid out as ``flags`` say: normal 96/70, fast, slow, status, device, PAI."""
    out = bytes([flags]) + sfloat(96) + sfloat(70)
    if flags & 0x01:
        out += sfloat(95) + sfloat(72)  # SpO2PR-Fast
    if flags & 0x02:
        out += sfloat(97) + sfloat(68)  # SpO2PR-Slow
    if flags & 0x04:
        out += u16(status)
    if flags & 0x08:
        out += device.to_bytes(3, "little")
    if flags & 0x10:
        out += sfloat(52, -1)
    return out


@pytest.mark.parametrize("flags", range(0x20), ids=lambda f: f"flags={f:#04x}")
def test_plx_continuous_every_flag_combination(flags: int) -> None:
    """Each of the 32 flag combinations lays out and gives the normal SpO2 and pulse rate."""
    got = reading(CONTINUOUS, continuous_value(flags))
    assert {Quantity.SPO2: 96.0, Quantity.HEART_RATE: 70.0} == got.values


def plx_value(
    characteristic: str, *, status: int | None = None, device: int | None = None
) -> bytes:
    """A Spot-Check or Continuous value with just the status fields given (PR 64 or 70)."""
    if characteristic == SPOT:
        flags = (0x02 if status is not None else 0) | (0x04 if device is not None else 0)
        return spot_value(flags, status=status or 0, device=device or 0)
    flags = (0x04 if status is not None else 0) | (0x08 if device is not None else 0)
    return continuous_value(flags, status=status or 0, device=device or 0)


@pytest.mark.parametrize(("bit", "name"), sorted(PLX_MEASUREMENT_STATUS_UNUSABLE.items()))
@pytest.mark.parametrize("characteristic", [SPOT, CONTINUOUS])
def test_plx_measurement_status_that_is_no_measurement(
    characteristic: str, bit: int, name: str
) -> None:
    """Demonstration, testing, calibration, unavailable and invalid data are rejected."""
    value = plx_value(characteristic, status=1 << bit)
    refused = rejection(characteristic, value)
    assert (Reason.MISSING_VALUE, f"measurement status bit {bit} ({name})") == (
        refused.reason,
        refused.detail.split(": ")[1],
    )


@pytest.mark.parametrize(("bit", "name"), sorted(PLX_DEVICE_STATUS_UNUSABLE.items()))
@pytest.mark.parametrize("characteristic", [SPOT, CONTINUOUS])
def test_plx_device_status_that_is_no_measurement(characteristic: str, bit: int, name: str) -> None:
    """Malfunctioning, disconnected, unconnected or unknown sensors are rejected."""
    value = plx_value(characteristic, device=1 << bit)
    refused = rejection(characteristic, value)
    assert (Reason.MISSING_VALUE, f"device and sensor status bit {bit} ({name})") == (
        refused.reason,
        refused.detail.split(": ")[1],
    )


@pytest.mark.parametrize("characteristic", [SPOT, CONTINUOUS])
def test_plx_neutral_status_bits_give_no_flag(characteristic: str) -> None:
    """Ongoing, validated, fully qualified, stored, display update, analysis ongoing: no flag."""
    status = sum(1 << bit for bit in (5, 7, 8, 9))
    device = sum(1 << bit for bit in (0, 9))
    value = plx_value(characteristic, status=status, device=device)
    got = reading(characteristic, value)
    assert (Metric.SPO2, NO_QUALITY) == (got.metric, got.quality)


@pytest.mark.parametrize(("bit", "flag"), sorted(PLX_MEASUREMENT_STATUS_QUALITY.items()))
@pytest.mark.parametrize("characteristic", [SPOT, CONTINUOUS])
def test_plx_questionable_measurement_status(characteristic: str, bit: int, flag: Quality) -> None:
    """Early estimated data and questionable measurement store the reading with their flag."""
    value = plx_value(characteristic, status=1 << bit)
    got = reading(characteristic, value)
    assert ({Quantity.SPO2, Quantity.HEART_RATE}, {flag}) == (set(got.values), got.quality)


def test_plx_displaced_sensor_is_flagged_not_rejected() -> None:
    """Device status bit 13: the probe is on the patient, misplaced, like a loose cuff."""
    got = reading(SPOT, plx_value(SPOT, device=1 << 13))
    assert ({Quantity.SPO2, Quantity.HEART_RATE}, {Quality.SENSOR_DISPLACED}) == (
        set(got.values),
        got.quality,
    )


@pytest.mark.parametrize(("bit", "flag"), sorted(PLX_DEVICE_STATUS_QUALITY.items()))
@pytest.mark.parametrize("characteristic", [SPOT, CONTINUOUS])
def test_plx_questionable_device_status(characteristic: str, bit: int, flag: Quality) -> None:
    """Signal-quality bits and a displaced sensor store the reading with their flag."""
    value = plx_value(characteristic, device=1 << bit)
    assert {flag} == reading(characteristic, value).quality


def test_plx_unusable_bit_wins_over_questionable_ones() -> None:
    """A questionable bit beside one that says "no measurement" does not save the reading."""
    value = spot_value(0x06, status=1 << 14, device=(1 << 5) | (1 << 15))
    refused = rejection(SPOT, value)
    assert (Reason.MISSING_VALUE, "device and sensor status bit 15 (sensor disconnected)") == (
        refused.reason,
        refused.detail.split(": ")[1],
    )


def test_plx_status_fields_with_every_flag() -> None:
    """Both status fields with every questionable bit set give every oximeter flag at once."""
    status = sum(1 << bit for bit in PLX_MEASUREMENT_STATUS_QUALITY)
    device = sum(1 << bit for bit in PLX_DEVICE_STATUS_QUALITY)
    got = reading(SPOT, spot_value(0x06, status=status, device=device))
    expected = set(PLX_MEASUREMENT_STATUS_QUALITY.values()) | set(
        PLX_DEVICE_STATUS_QUALITY.values()
    )
    assert expected == got.quality


@pytest.mark.parametrize(("raw", "special"), SPECIALS)
@pytest.mark.parametrize("characteristic", [SPOT, CONTINUOUS])
def test_plx_special_spo2_is_missing(characteristic: str, raw: int, special: SpecialValue) -> None:
    """A special SpO2 rejects the reading; a special pulse rate is left out."""
    refused = rejection(characteristic, b"\x00" + u16(raw) + sfloat(64))
    assert Reason.MISSING_VALUE == refused.reason
    assert refused.detail.endswith(f"SpO2 is {special.value} (SFLOAT 0x{raw:04X})")
    got = reading(characteristic, b"\x00" + sfloat(97) + u16(raw))
    assert {Quantity.SPO2: 97.0} == got.values


# --- 0x2A37 Heart Rate Measurement --------------------------------------------------------------

# NordicSemiconductor/Android-BLE-Common-Library ble-common/src/test/java/no/nordicsemi/
# android/ble/common/callback/hr/HeartRateMeasurementDataCallbackTest.java (commit 1c86e44c).
NORDIC_HR = [
    (bytes([0, 85]), 85.0),  # _simple: uint8
    (bytes([0b11110, 85, 50, 0, 33, 0]), 85.0),  # _uint8: contact, energy 50, one RR
    (bytes([0b11111, 1, 1, 50, 1, 1, 0, 2, 1, 0xFF, 0xFF]), 257.0),  # _uint16: three RRs
]


@pytest.mark.parametrize(("value", "bpm"), NORDIC_HR)
def test_heart_rate_nordic_vectors(value: bytes, bpm: float) -> None:
    """Nordic's heart-rate vectors give the rate at the time of receipt."""
    got = reading(HR, value, device_id="hr-0004")
    expected = (Metric.HEART_RATE, {Quantity.HEART_RATE: bpm}, RECEIVED_AT)
    assert expected == (got.metric, got.values, got.measured_at)


def test_heart_rate_nordic_no_contact_vector() -> None:
    """Nordic's _noContact vector (contact supported, not detected) is a missing value."""
    refused = rejection(HR, bytes([0x04, 0xFF]))
    expected = "0x2A37 Heart Rate Measurement: sensor contact supported but not detected"
    assert (Reason.MISSING_VALUE, expected) == (refused.reason, refused.detail)


def test_heart_rate_nordic_invalid_vector() -> None:
    """Nordic's onInvalidDataReceived vector (RR flag, no RR-interval) is malformed."""
    refused = rejection(HR, bytes([0b10111, 1, 1]))
    expected = (
        "0x2A37 Heart Rate Measurement with flags 0x17 needs 5 bytes"
        " plus 2 per further RR-interval, got 3"
    )
    assert (Reason.MALFORMED, expected) == (refused.reason, refused.detail)


@pytest.mark.parametrize("contact", [0, 1, 3])
@pytest.mark.parametrize("rr_count", [0, 1, 3])
@pytest.mark.parametrize("energy", [False, True])
@pytest.mark.parametrize("wide", [False, True])
def test_heart_rate_every_layout(wide: bool, energy: bool, rr_count: int, contact: int) -> None:
    """Value width, energy expended and any number of RR-intervals lay out as specified."""
    flags = (0x01 if wide else 0) | contact << 1 | (0x08 if energy else 0)
    flags |= 0x10 if rr_count else 0
    value = bytes([flags]) + (u16(72) if wide else bytes([72]))
    value += u16(1234) if energy else b""
    value += u16(800) * rr_count  # 800/1024 s each
    assert {Quantity.HEART_RATE: 72.0} == reading(HR, value).values


# --- Lengths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("characteristic", "value", "needed"),
    [
        (BP, bp_value(0x1F), 19),
        (BP, bp_value(0x00), 7),
        (WEIGHT, weight_value(0x0F), 15),
        (WEIGHT, weight_value(0x00), 3),
        (SPOT, spot_value(0x0F), 19),
        (SPOT, spot_value(0x00), 5),
        (CONTINUOUS, continuous_value(0x1F), 20),
        (CONTINUOUS, continuous_value(0x00), 5),
        (HR, bytes([0x09, 72, 0, 0xD2, 0x04]), 5),
        (HR, bytes([0x00, 72]), 2),
    ],
)
def test_wrong_lengths_are_malformed(characteristic: str, value: bytes, needed: int) -> None:
    """One byte short or one byte over is malformed, naming both lengths."""
    assert needed == len(value)
    short = rejection(characteristic, value[:-1])
    long = rejection(characteristic, value + b"\x00")
    head = short.detail.split(" needs ")[0]
    expected = [
        (Reason.MALFORMED, f"{head} needs {needed} bytes, got {needed - 1}"),
        (
            Reason.MALFORMED,
            f"{head} needs {needed} bytes, got {needed + 1}:"
            " 1 trailing byte the flags do not explain",
        ),
    ]
    assert expected == [(short.reason, short.detail), (long.reason, long.detail)]
    assert head.endswith(f"with flags 0x{value[0]:02X}")


def test_odd_rr_interval_bytes_are_malformed() -> None:
    """RR-intervals come in pairs of bytes; an odd one out is malformed."""
    refused = rejection(HR, bytes([0x10, 72, 0x20, 0x03, 0x20]))
    assert Reason.MALFORMED == refused.reason


# --- User ID ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "device_id"),
    [(0, "cuff-0001:u0"), (7, "cuff-0001:u7"), (254, "cuff-0001:u254"), (255, "cuff-0001")],
)
def test_user_id_suffixes_the_device_id(user: int, device_id: str) -> None:
    """A known user n of a shared cuff becomes device ``{id}:u{n}``; 255 (unknown) does not."""
    assert device_id == reading(BP, bp_value(0x08, user=user)).device_id


def test_user_suffix_beyond_the_device_id_limit_is_malformed() -> None:
    """A user suffix that makes the device id longer than 64 characters is refused."""
    fits = reading(BP, bp_value(0x08, user=12), device_id="d" * 60)
    refused = rejection(BP, bp_value(0x08, user=12), device_id="d" * 61)
    assert ("d" * 60 + ":u12", Reason.MALFORMED) == (fits.device_id, refused.reason)


# --- The envelope -------------------------------------------------------------------------------


def test_hex_and_base64_give_the_same_reading() -> None:
    """The same value as hex (either case) or base64 decodes to the same reading."""
    value = bp_value(0x1E)
    as_hex = reading(BP, value)
    as_upper = reading(BP, value, hex=value.hex().upper())
    as_base64 = reading(BP, value, hex=None, base64="HoAAUgBhAOoHCxYHHwBHAAMBAA==")
    assert "HoAAUgBhAOoHCxYHHwBHAAMBAA==" == base64.b64encode(value).decode()
    assert as_hex == as_upper == as_base64


@pytest.mark.parametrize(
    "spelling",
    [
        "2A35",
        "2a35",
        "0x2A35",
        "0x2a35",
        "0X2A35",
        "00002a35-0000-1000-8000-00805f9b34fb",
        "00002A35-0000-1000-8000-00805F9B34FB",
    ],
)
def test_characteristic_spellings(spelling: str) -> None:
    """Short, 0x-prefixed and 128-bit UUIDs in any case name the same characteristic."""
    assert Metric.BLOOD_PRESSURE == reading(spelling, bp_value(0x00)).metric


@pytest.mark.parametrize(
    "spelling",
    [
        "2A36",
        "0x2A1C",
        "00002a36-0000-1000-8000-00805f9b34fb",
        "00012a35-0000-1000-8000-00805f9b34fb",
        "6e400003-b5a3-f393-e0a9-e50e24dcca9e",
    ],
)
def test_unknown_characteristics(spelling: str) -> None:
    """A well-formed UUID this service does not decode is an unknown metric."""
    refused = rejection(spelling, bp_value(0x00))
    assert (Reason.UNKNOWN_METRIC, "cuff-0001") == (refused.reason, refused.device_id)


@pytest.mark.parametrize(
    "fields",
    [
        {"characteristic": "blood pressure"},
        {"characteristic": "2A3"},
        {"characteristic": " 2A35 "},  # nothing is trimmed: padding is not part of a UUID
        {"hex": "1e8"},
        {"hex": "1e 80"},
        {"hex": ""},
        {"hex": None},
        {"base64": "AAAA"},
        {"hex": None, "base64": "AAA"},
        {"hex": None, "base64": "AA=A"},
        {"device_id": "cuff 0001"},
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "localtime"},
        {"timezone": "right/UTC"},
        {"timezone": "europe/stockholm"},
        {"timezone": "+25:00"},
        {"colour": "blue"},
        {"message_id": "x" * 129},
    ],
    ids=lambda f: ",".join(f"{k}={str(v)[:12]}" for k, v in f.items()),
)
def test_malformed_items(fields: dict[str, Any]) -> None:
    """An item that breaks the envelope contract is malformed, with a field-naming detail."""
    refused = rejection(BP, bp_value(0x00), **fields)
    assert Reason.MALFORMED == refused.reason
    assert refused.detail.startswith("readings[0]")


@pytest.mark.parametrize("received_at", [None, "2026-11-22T07:31:02", "yesterday"])
def test_missing_or_naive_received_at_is_no_timestamp(received_at: str | None) -> None:
    """``received_at`` is required and must carry an offset."""
    fields = item(BP, bp_value(0x00))
    fields["received_at"] = received_at
    decoded = decode_ble(envelope({k: v for k, v in fields.items() if v is not None}))
    assert [Reason.NO_TIMESTAMP] == [r.reason for r in decoded.rejections]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", Reason.MALFORMED),
        (b"\xff\xfe", Reason.MALFORMED),
        (b"[]", Reason.MALFORMED),
        (b'{"readings": []}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": 2, "readings": []}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": true, "readings": []}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": 1}', Reason.MALFORMED),
        (b'{"v": 1, "readings": []}', Reason.MALFORMED),
        (b'{"v": 1, "readings": {}}', Reason.MALFORMED),
        (b'{"v": 1, "reading": {}, "readings": [{}]}', Reason.MALFORMED),
        (b'{"v": 1, "timezone": "Nowhere/Land", "readings": [{}]}', Reason.MALFORMED),
        (b'{"v": 1, "sent_at": "2026-11-22T07:31:05", "readings": [{}]}', Reason.MALFORMED),
        (json.dumps({"v": 1, "readings": [{}] * 1001}).encode(), Reason.MALFORMED),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "not-object",
        "no-v",
        "v2",
        "v-true",
        "no-readings",
        "empty",
        "not-list",
        "extra-key",
        "bad-zone",
        "naive-sent-at",
        "too-many",
    ],
)
def test_envelope_problems_reject_the_whole_message(payload: bytes, reason: Reason) -> None:
    """Envelope-level problems give one rejection for the whole message (index None)."""
    decoded = decode_ble(payload)
    assert ([], [(reason, None)]) == (
        decoded.readings,
        [(r.reason, r.index) for r in decoded.rejections],
    )


def test_batch_with_one_bad_item() -> None:
    """A bad item is one rejection with its index; the others still decode."""
    payload = envelope(
        item(BP, bp_value(0x00), message_id="gw1-000017"),
        item(BP, bp_value(0x00)[:-1], device_id="cuff-0002"),
        item(WEIGHT, weight_value(0x01), device_id="scale-0002", message_id="gw1-000019"),
        sent_at="2026-11-22T07:31:05Z",
    )
    decoded = decode_ble(payload)
    expected_readings = [
        ("cuff-0001", 0, "gw1-000017", "ble"),
        ("scale-0002", 2, "gw1-000019", "ble"),
    ]
    assert expected_readings == [
        (r.device_id, r.index, r.message_id, r.source) for r in decoded.readings
    ]
    assert [(Reason.MALFORMED, 1, "cuff-0002")] == [
        (r.reason, r.index, r.device_id) for r in decoded.rejections
    ]
    assert datetime(2026, 11, 22, 7, 31, 5, tzinfo=UTC) == decoded.sent_at


def test_dispatcher_routes_ble_here() -> None:
    """``decode(PayloadFormat.BLE, ...)`` is this decoder."""
    payload = envelope(item(BP, bp_value(0x00)))
    assert decode_ble(payload) == decode(PayloadFormat.BLE, payload)


def test_published_example_decodes() -> None:
    """The schema's example validates and decodes to the reading it describes."""
    example = BleEnvelope.model_json_schema()["examples"][0]
    BleEnvelope.model_validate(example)
    got = decode_ble(json.dumps(example).encode()).readings
    expected = [
        Reading(
            device_id="cuff-0001:u1",
            metric=Metric.BLOOD_PRESSURE,
            measured_at=datetime(2026, 11, 22, 7, 31, tzinfo=STOCKHOLM),
            values={Quantity.SYSTOLIC: 128.0, Quantity.DIASTOLIC: 82.0, Quantity.HEART_RATE: 71.0},
            message_id="gw1-000017",
            source="ble",
        )
    ]
    assert expected == got


# --- The same measurement in other formats ------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "pressures", "ble_head"),
    [
        # flags 0x06 (mmHg, time stamp, pulse) | 128 = 0x0080, 82 = 0x0052, 97 = 0x0061
        ("mmHg", (128, 82, 97), "06 8000 5200 6100"),
        # flags 0x07 (kPa, time stamp, pulse) | 17.1 = 171e-1 = 0xF0AB, 10.9 = 0xF06D,
        # 12.9 = 129e-1 = 0xF081
        ("kPa", (17.1, 10.9, 12.9), "07 abf0 6df0 81f0"),
    ],
)
def test_native_and_ble_give_the_same_reading(
    unit: str, pressures: tuple[float, float, float], ble_head: str
) -> None:
    """One cuff measurement as native JSON and as BLE bytes: same metric, values and time."""
    native = decode_native(
        json.dumps(
            {
                "v": 1,
                "reading": {
                    "device_id": "cuff-0001",
                    "metric": "blood_pressure",
                    "measured_at": "2026-11-22T07:31:00+01:00",
                    "unit": unit,
                    "systolic": pressures[0],
                    "diastolic": pressures[1],
                    "mean": pressures[2],
                    "pulse": 71,
                },
            }
        ).encode()
    ).readings[0]
    # ... | time stamp 2026-11-22 07:31:00 (Europe/Stockholm) | pulse 71 = 0x0047
    ble = reading(BP, bytes.fromhex(f"{ble_head} ea070b16071f00 4700"))
    assert (native.metric, native.values, native.measured_at, native.device_id) == (
        ble.metric,
        ble.values,
        ble.measured_at,
        ble.device_id,
    )


# --- Transcribed vectors in the shared reference, when present ----------------------------------

REFERENCE = Path(os.environ.get("HOMEMONITOR_REFERENCE", "/work/shared/reference"))
GATT_VECTORS = [REFERENCE / "gatt_vectors.json", REFERENCE / "fhir" / "gatt_vectors.json"]
_EXPECTED_NAMES = {
    "systolic": Quantity.SYSTOLIC,
    "diastolic": Quantity.DIASTOLIC,
    "mean_arterial": Quantity.MEAN_ARTERIAL,
    "mean_arterial_pressure": Quantity.MEAN_ARTERIAL,
    "map": Quantity.MEAN_ARTERIAL,
    "pulse_rate": Quantity.HEART_RATE,
    "pulse": Quantity.HEART_RATE,
    "heart_rate": Quantity.HEART_RATE,
    "weight": Quantity.BODY_WEIGHT,
    "body_weight": Quantity.BODY_WEIGHT,
    "spo2": Quantity.SPO2,
}


def _vectors(node: Any) -> list[dict[str, Any]]:
    """Every object in the file that names a characteristic and its hex."""
    if isinstance(node, dict):
        if "characteristic" in node and "hex" in node:
            return [node]
        return [v for child in node.values() for v in _vectors(child)]
    if isinstance(node, list):
        return [v for child in node for v in _vectors(child)]
    return []


def test_shared_gatt_vectors() -> None:
    """The GATT vectors transcribed into the shared reference decode as they say."""
    path = next((p for p in GATT_VECTORS if p.is_file()), None)
    if path is None:
        pytest.skip(f"no gatt_vectors.json in {REFERENCE} (SOURCES.md names one; not shipped)")
    vectors = _vectors(json.loads(path.read_text()))
    assert vectors, f"{path} holds no objects with 'characteristic' and 'hex'"
    for vector in vectors:
        result = decode_one(str(vector["characteristic"]), bytes.fromhex(vector["hex"]))
        expected = vector.get("expected", vector)
        if vector.get("valid") is False or "reason" in expected:
            assert isinstance(result, Rejection), vector
            continue
        assert isinstance(result, Reading), (vector, result)
        unit = expected.get("unit")
        for name, quantity in _EXPECTED_NAMES.items():
            if isinstance(expected.get(name), int | float):
                value = float(expected[name])
                if unit and quantity in (
                    Quantity.SYSTOLIC,
                    Quantity.DIASTOLIC,
                    Quantity.MEAN_ARTERIAL,
                    Quantity.BODY_WEIGHT,
                ):
                    value = to_canonical(quantity, value, unit)
                assert round(value, 6) == round(result.values[quantity], 6), vector
