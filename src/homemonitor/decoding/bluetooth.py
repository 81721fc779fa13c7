"""Raw Bluetooth SIG health measurements, forwarded by a gateway, to normalised readings.

A gateway that does not interpret a device's measurements forwards each characteristic
value as it came over the air (a GATT notification or indication) on
``homemonitor/v1/gw/{gateway_id}/readings/ble``. ``docs/bluetooth.md`` describes the
envelope, every characteristic, how each flag is handled and every rejection.

Decoding goes in three steps, each refusing what it cannot vouch for:

1. the JSON envelope and each item in it (:class:`BleEnvelope`, :class:`BleReadingIn`);
2. the characteristic value, field by field as its flags lay it out; lengths are exact,
   so a value shorter than its flags need, or longer than they explain, is malformed;
3. the time of measurement: the device's time stamp read in the gateway's ``timezone``,
   or the gateway's ``received_at`` where there is no usable stamp.

The IEEE 11073-20601 number formats are public, pure functions (:func:`parse_sfloat`,
:func:`parse_float`): a special value (NaN, NRes, +/-INFINITY, reserved) raises
:class:`SpecialValueError` and never becomes a number. Details of rejections name fields,
flags, lengths and status bits, never measured values or dates.
"""

from __future__ import annotations

import binascii
import dataclasses
import datetime as dt
import enum
import functools
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from homemonitor.contract.protocol import (
    DEVICE_ID_PATTERN,
    MAX_READINGS_PER_MESSAGE,
    DeviceId,
    MessageId,
    SentAt,
    Timestamp,
    Version,
)
from homemonitor.contract.readings import (
    NO_QUALITY,
    Decoded,
    Metric,
    Quality,
    Quantity,
    Reading,
    Reason,
    Rejection,
)
from homemonitor.contract.units import to_canonical
from homemonitor.decoding._common import envelope_head, item_rejection, load_object
from homemonitor.errors import HomemonitorError

__all__ = [
    "BLOOD_PRESSURE_STATUS_QUALITY",
    "PLX_DEVICE_STATUS_QUALITY",
    "PLX_MEASUREMENT_STATUS_QUALITY",
    "BleEnvelope",
    "BleReadingIn",
    "Characteristic",
    "SpecialValue",
    "SpecialValueError",
    "decode_ble",
    "parse_float",
    "parse_sfloat",
]

SOURCE = "ble"
#: The Bluetooth Base UUID: a 16-bit UUID xxxx is 0000xxxx-0000-1000-8000-00805f9b34fb.
_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"
#: The longest attribute value ATT allows (Core Specification, Vol 3, Part F, 3.2.9).
_MAX_VALUE_BYTES = 512
_UNKNOWN_USER = 0xFF
#: The Date Time characteristic's first year (0 means "not known").
_FIRST_YEAR = 1582

_SHORT_UUID = re.compile(r"(?:0x)?(?P<short>[0-9a-f]{4})")
_FULL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_OFFSET = re.compile(r"(?P<sign>[+-])(?P<hours>[01][0-9]|2[0-3]):(?P<minutes>[0-5][0-9])")
#: What the published schema says of these fields; the validators below check the same.
_UUID_PATTERN = (
    r"^(?:(?:0[xX])?[0-9A-Fa-f]{4}"
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"
)
_BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_ZONE_PATTERN = r"^(?:[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]|[A-Za-z][A-Za-z0-9_+/-]*)$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


# --- IEEE 11073-20601 numbers --------------------------------------------------------------


class SpecialValue(enum.StrEnum):
    """The IEEE 11073-20601 special values: bit patterns that are not numbers."""

    NAN = "NaN"
    NRES = "NRes"
    POSITIVE_INFINITY = "+INFINITY"
    NEGATIVE_INFINITY = "-INFINITY"
    RESERVED = "reserved"


class SpecialValueError(HomemonitorError, ValueError):
    """An SFLOAT or FLOAT holds a special value, which must never be read as a number."""

    def __init__(self, special: SpecialValue, raw: int, kind: Literal["SFLOAT", "FLOAT"]) -> None:
        digits = 4 if kind == "SFLOAT" else 8
        super().__init__(f"{kind} 0x{raw:0{digits}X} is {special.value}, not a number")
        self.special = special
        self.raw = raw
        self.kind = kind


#: Special values are whole bit patterns with exponent 0 (IEEE 11073-20601 F.6/F.7; the
#: GATT Specification Supplement, medfloat16/medfloat32). A mantissa of 0x7FF with another
#: exponent is an ordinary number (0xF7FF is 204.7).
_SFLOAT_SPECIAL = {
    0x07FF: SpecialValue.NAN,
    0x0800: SpecialValue.NRES,
    0x07FE: SpecialValue.POSITIVE_INFINITY,
    0x0802: SpecialValue.NEGATIVE_INFINITY,
    0x0801: SpecialValue.RESERVED,
}
_FLOAT_SPECIAL = {
    0x007FFFFF: SpecialValue.NAN,
    0x00800000: SpecialValue.NRES,
    0x007FFFFE: SpecialValue.POSITIVE_INFINITY,
    0x00800002: SpecialValue.NEGATIVE_INFINITY,
    0x00800001: SpecialValue.RESERVED,
}


def parse_sfloat(raw: int) -> float:
    """The number a 16-bit IEEE 11073 SFLOAT (4-bit exponent, 12-bit mantissa) stands for.

    The result is the double nearest to mantissa x 10^exponent, computed in exact decimal,
    so every encoding of one value gives the same float.

    >>> parse_sfloat(0x0078), parse_sfloat(0xF4B0)  # 120 x 10^0 and 1200 x 10^-1
    (120.0, 120.0)
    >>> parse_sfloat(0x07FF)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    homemonitor.decoding.bluetooth.SpecialValueError: SFLOAT 0x07FF is NaN, not a number
    """
    if not 0 <= raw <= 0xFFFF:
        msg = f"an SFLOAT is 16 bits; {raw:#x} is out of range"
        raise ValueError(msg)
    special = _SFLOAT_SPECIAL.get(raw)
    if special is not None:
        raise SpecialValueError(special, raw, "SFLOAT")
    return float(_scaled(_signed(raw & 0x0FFF, 12), _signed(raw >> 12, 4)))


def parse_float(raw: int) -> float:
    """The number a 32-bit IEEE 11073 FLOAT (8-bit exponent, 24-bit mantissa) stands for.

    >>> parse_float(0xFF000014), parse_float(0x00FFFB2E)  # 20 x 10^-1 and -1234
    (2.0, -1234.0)
    """
    if not 0 <= raw <= 0xFFFFFFFF:
        msg = f"a FLOAT is 32 bits; {raw:#x} is out of range"
        raise ValueError(msg)
    special = _FLOAT_SPECIAL.get(raw)
    if special is not None:
        raise SpecialValueError(special, raw, "FLOAT")
    return float(_scaled(_signed(raw & 0x00FFFFFF, 24), _signed(raw >> 24, 8)))


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _scaled(mantissa: int, exponent: int) -> Decimal:
    return Decimal(mantissa).scaleb(exponent)


# --- The envelope ----------------------------------------------------------------------------


class Characteristic(enum.IntEnum):
    """The GATT characteristics this decoder reads (16-bit UUIDs)."""

    BLOOD_PRESSURE_MEASUREMENT = 0x2A35
    HEART_RATE_MEASUREMENT = 0x2A37
    PLX_SPOT_CHECK_MEASUREMENT = 0x2A5E
    PLX_CONTINUOUS_MEASUREMENT = 0x2A5F
    WEIGHT_MEASUREMENT = 0x2A9D

    @property
    def label(self) -> str:
        """How details name it, e.g. ``0x2A35 Blood Pressure Measurement``."""
        return f"0x{self.value:04X} {_TITLES[self]}"


_TITLES = {
    Characteristic.BLOOD_PRESSURE_MEASUREMENT: "Blood Pressure Measurement",
    Characteristic.HEART_RATE_MEASUREMENT: "Heart Rate Measurement",
    Characteristic.PLX_SPOT_CHECK_MEASUREMENT: "PLX Spot-Check Measurement",
    Characteristic.PLX_CONTINUOUS_MEASUREMENT: "PLX Continuous Measurement",
    Characteristic.WEIGHT_MEASUREMENT: "Weight Measurement",
}


def _canonical_uuid(text: str) -> str:
    """``2A35``, ``0x2a35`` or the 128-bit form as ``2A35``; other 128-bit UUIDs lower case."""
    lowered = text.lower()
    short = _SHORT_UUID.fullmatch(lowered)
    if short is not None:
        return short["short"].upper()
    if _FULL_UUID.fullmatch(lowered):
        if lowered.endswith(_BASE_UUID_SUFFIX):
            value = int(lowered[:8], 16)
            return f"{value:04X}" if value <= 0xFFFF else f"{value:08X}"
        return lowered
    msg = "not a Bluetooth UUID (give 2A35, 0x2A35 or 00002a35-0000-1000-8000-00805f9b34fb)"
    raise ValueError(msg)


@functools.lru_cache(maxsize=64)
def _zone(spec: str) -> dt.tzinfo:
    """The zone a ``timezone`` field names: an IANA name or a fixed offset ``+01:00``."""
    offset = _OFFSET.fullmatch(spec)
    if offset is not None:
        sign = -1 if offset["sign"] == "-" else 1
        delta = dt.timedelta(hours=int(offset["hours"]), minutes=int(offset["minutes"]))
        return dt.timezone(sign * delta)
    msg = "not an IANA time zone name (such as Europe/Stockholm) or an offset such as +01:00"
    if spec not in _iana_names():
        raise ValueError(msg)
    try:
        return ZoneInfo(spec)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(msg) from exc


@functools.cache
def _iana_names() -> frozenset[str]:
    """The zone names the tz database offers, less those that name no place.

    ``localtime`` would be this server's zone and ``Factory`` none at all; names outside
    the list (``right/...``, ``posix/...``) are aliases or count leap seconds.
    """
    return frozenset(available_timezones() - {"localtime", "Factory"})


def _check_zone(spec: str) -> str:
    _zone(spec)
    return spec


def _check_base64(text: str) -> str:
    try:
        binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        msg = "not base64 (RFC 4648 standard alphabet, with padding)"
        raise ValueError(msg) from exc
    return text


CharacteristicUuid = Annotated[
    str,
    AfterValidator(_canonical_uuid),
    Field(
        max_length=40,
        description="The characteristic's UUID: 2A35, 0x2A35 or the 128-bit form, any case.",
        json_schema_extra={"pattern": _UUID_PATTERN},
    ),
]
HexValue = Annotated[
    str,
    Field(
        pattern=r"^(?:[0-9A-Fa-f]{2})+$",
        max_length=2 * _MAX_VALUE_BYTES,
        description="The characteristic value as hex digits, no separators.",
    ),
]
Base64Value = Annotated[
    str,
    AfterValidator(_check_base64),
    Field(
        min_length=4,
        max_length=4 * (_MAX_VALUE_BYTES + 2) // 3,
        description="The characteristic value in base64 (standard alphabet, padded).",
        json_schema_extra={"pattern": _BASE64_PATTERN},
    ),
]
TimeZoneSpec = Annotated[
    str,
    AfterValidator(_check_zone),
    Field(
        max_length=64,
        description="Where the device's clock is set: an IANA name or a UTC offset +HH:MM.",
        json_schema_extra={"pattern": _ZONE_PATTERN},
    ),
]


class BleReadingIn(BaseModel):
    """One forwarded characteristic value, as the gateway received it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    device_id: DeviceId
    characteristic: CharacteristicUuid
    hex: HexValue | None = None
    base64: Base64Value | None = None
    received_at: Timestamp = Field(
        description="When the gateway received the value, with a UTC offset (ISO 8601)."
    )
    timezone: TimeZoneSpec | None = None
    message_id: MessageId = None

    @model_validator(mode="after")
    def _one_of_hex_or_base64(self) -> BleReadingIn:
        if (self.hex is None) == (self.base64 is None):
            msg = "give exactly one of 'hex' or 'base64'"
            raise ValueError(msg)
        return self

    def value(self) -> bytes:
        """The characteristic value's bytes."""
        if self.hex is not None:
            return bytes.fromhex(self.hex)
        return binascii.a2b_base64(self.base64 or "", strict_mode=True)


class BleEnvelope(BaseModel):
    """A ``readings/ble`` payload, version 1 (the published schema; decoding is per item)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="homemonitor Bluetooth measurement payload, version 1",
        json_schema_extra={
            "examples": [
                {
                    "v": 1,
                    "sent_at": "2026-11-22T07:31:05Z",
                    "timezone": "Europe/Stockholm",
                    "readings": [
                        {
                            "device_id": "cuff-0001",
                            "characteristic": "2A35",
                            "hex": "0e80005200ff07ea070b16071f00470001",
                            "received_at": "2026-11-22T07:31:02+01:00",
                            "message_id": "gw1-000017",
                        }
                    ],
                }
            ]
        },
    )

    v: Version
    sent_at: SentAt = None
    timezone: TimeZoneSpec | None = None
    readings: list[BleReadingIn] = Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)


class _EnvelopeHead(BaseModel):
    """The envelope without its readings, to judge it apart from them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    v: Version
    sent_at: Timestamp | None = None
    timezone: TimeZoneSpec | None = None
    readings: list[Any] = Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)


# --- Characteristic values ---------------------------------------------------------------------


class _RejectedError(HomemonitorError):
    """One item cannot become a reading; never leaves this module."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _LocalTime(NamedTuple):
    """A Bluetooth Date Time (0x2A08): a wall-clock time in no stated zone."""

    date: dt.date
    time: dt.time


@dataclasses.dataclass(frozen=True, slots=True)
class _Measurement:
    """What one characteristic value says, values already in canonical units."""

    metric: Metric
    values: dict[Quantity, float]
    #: The device's own time stamp, or None when the time is the gateway's receipt.
    stamp: _LocalTime | None = None
    user_id: int | None = None
    #: What the device's status fields say of the value.
    quality: frozenset[Quality] = NO_QUALITY


class _Fields:
    """Reads little-endian fields in order, after the flags; the length is checked first."""

    def __init__(self, data: bytes, characteristic: Characteristic) -> None:
        self._data = data
        self._at = 1
        self._characteristic = characteristic

    def uint(self, size: int) -> int:
        value = int.from_bytes(self._data[self._at : self._at + size], "little")
        self._at += size
        return value

    def skip(self, size: int) -> None:
        self._at += size

    def date_time(self) -> _LocalTime | None:
        """A Date Time field; None when its year, month or day is 0 ("not known")."""
        year, month, day = self.uint(2), self.uint(1), self.uint(1)
        hours, minutes, seconds = self.uint(1), self.uint(1), self.uint(1)
        if 0 in (year, month, day):
            return None
        detail = f"{self._characteristic.label}: the time stamp is not a valid date and time"
        if year < _FIRST_YEAR:
            raise _RejectedError(Reason.MALFORMED, detail)
        try:
            return _LocalTime(dt.date(year, month, day), dt.time(hours, minutes, seconds))
        except ValueError as exc:
            raise _RejectedError(Reason.MALFORMED, detail) from exc


def _flags(data: bytes, characteristic: Characteristic) -> int:
    if not data:
        detail = f"{characteristic.label}: empty value, not even the flags byte"
        raise _RejectedError(Reason.MALFORMED, detail)
    return data[0]


def _check_length(data: bytes, characteristic: Characteristic, flags: int, needed: int) -> None:
    if len(data) == needed:
        return
    detail = (
        f"{characteristic.label} with flags 0x{flags:02X} needs {needed} bytes, got {len(data)}"
    )
    if len(data) > needed:
        extra = len(data) - needed
        detail += f": {extra} trailing byte{'s' if extra > 1 else ''} the flags do not explain"
    raise _RejectedError(Reason.MALFORMED, detail)


def _required(raw: int, field: str, characteristic: Characteristic) -> float:
    try:
        return parse_sfloat(raw)
    except SpecialValueError as exc:
        detail = f"{characteristic.label}: {field} is {exc.special.value} (SFLOAT 0x{raw:04X})"
        raise _RejectedError(Reason.MISSING_VALUE, detail) from exc


def _optional(raw: int | None) -> float | None:
    """An optional SFLOAT; a special value means the device has none to give."""
    if raw is None:
        return None
    try:
        return parse_sfloat(raw)
    except SpecialValueError:
        return None


def _blood_pressure(data: bytes) -> _Measurement:
    """0x2A35: systolic, diastolic and mean arterial pressure, optionally pulse rate."""
    characteristic = Characteristic.BLOOD_PRESSURE_MEASUREMENT
    flags = _flags(data, characteristic)
    kpa, has_stamp, has_pulse = flags & 0x01, flags & 0x02, flags & 0x04
    has_user, has_status = flags & 0x08, flags & 0x10
    needed = 7 + (7 if has_stamp else 0) + (2 if has_pulse else 0)
    needed += (1 if has_user else 0) + (2 if has_status else 0)
    _check_length(data, characteristic, flags, needed)
    fields = _Fields(data, characteristic)
    systolic, diastolic, mean = fields.uint(2), fields.uint(2), fields.uint(2)
    stamp = fields.date_time() if has_stamp else None
    pulse = fields.uint(2) if has_pulse else None
    user_id = fields.uint(1) if has_user else None
    # Measurement Status qualifies a real measurement: no bit makes it one that is not.
    quality = _blood_pressure_quality(fields.uint(2)) if has_status else NO_QUALITY
    unit = "kPa" if kpa else "mmHg"
    values = {
        Quantity.SYSTOLIC: to_canonical(
            Quantity.SYSTOLIC, _required(systolic, "systolic", characteristic), unit
        ),
        Quantity.DIASTOLIC: to_canonical(
            Quantity.DIASTOLIC, _required(diastolic, "diastolic", characteristic), unit
        ),
    }
    mean_value = _optional(mean)  # cuffs that compute no MAP send NaN
    if mean_value is not None:
        values[Quantity.MEAN_ARTERIAL] = to_canonical(Quantity.MEAN_ARTERIAL, mean_value, unit)
    pulse_value = _optional(pulse)
    if pulse_value is not None:
        values[Quantity.HEART_RATE] = pulse_value
    return _Measurement(Metric.BLOOD_PRESSURE, values, stamp, user_id, quality)


#: Blood Pressure Measurement Status bits (uint16) and the quality flag each stands for.
#: Bits 3-4 are one field, Pulse Rate Range Detection: see :func:`_blood_pressure_quality`.
BLOOD_PRESSURE_STATUS_QUALITY: dict[int, Quality] = {
    0: Quality.BODY_MOVEMENT,  # body movement during measurement
    1: Quality.CUFF_LOOSE,  # cuff too loose
    2: Quality.IRREGULAR_PULSE,  # irregular pulse detected
    5: Quality.IMPROPER_POSITION,  # improper measurement position
}
_PULSE_RATE_RANGE_SHIFT = 3
#: Pulse Rate Range Detection: 1 exceeds the upper limit, 2 below the lower limit (3 is RFU).
_PULSE_RATE_OUT_OF_RANGE = (1, 2)


def _blood_pressure_quality(status: int) -> frozenset[Quality]:
    """The quality flags a Blood Pressure Measurement Status sets; RFU bits are ignored."""
    if not status:
        return NO_QUALITY  # nearly always
    flags = {q for bit, q in BLOOD_PRESSURE_STATUS_QUALITY.items() if status >> bit & 1}
    if (status >> _PULSE_RATE_RANGE_SHIFT) & 0b11 in _PULSE_RATE_OUT_OF_RANGE:
        flags.add(Quality.PULSE_RATE_OUT_OF_RANGE)
    return frozenset(flags) if flags else NO_QUALITY


_WEIGHT_UNSUCCESSFUL = 0xFFFF
_KG_RESOLUTION = Decimal("0.005")
_LB_RESOLUTION = Decimal("0.01")


def _weight(data: bytes) -> _Measurement:
    """0x2A9D: body weight in kg (0.005 kg steps) or lb (0.01 lb steps)."""
    characteristic = Characteristic.WEIGHT_MEASUREMENT
    flags = _flags(data, characteristic)
    imperial, has_stamp, has_user, has_bmi = flags & 0x01, flags & 0x02, flags & 0x04, flags & 0x08
    needed = 3 + (7 if has_stamp else 0) + (1 if has_user else 0) + (4 if has_bmi else 0)
    _check_length(data, characteristic, flags, needed)
    fields = _Fields(data, characteristic)
    raw = fields.uint(2)
    stamp = fields.date_time() if has_stamp else None
    user_id = fields.uint(1) if has_user else None
    # BMI and height (flag bit 3) are not stored: the registry knows the patient.
    if raw == _WEIGHT_UNSUCCESSFUL:
        detail = f"{characteristic.label}: weight is 0xFFFF, measurement unsuccessful"
        raise _RejectedError(Reason.MISSING_VALUE, detail)
    if imperial:
        value = to_canonical(Quantity.BODY_WEIGHT, float(raw * _LB_RESOLUTION), "lb")
    else:
        value = float(raw * _KG_RESOLUTION)
    return _Measurement(Metric.BODY_WEIGHT, {Quantity.BODY_WEIGHT: value}, stamp, user_id)


#: PLX Measurement Status bits that say the value is not a real measurement of a patient.
PLX_MEASUREMENT_STATUS_UNUSABLE: dict[int, str] = {
    10: "data for demonstration",
    11: "data for testing",
    12: "calibration ongoing",
    13: "measurement unavailable",
    15: "invalid measurement detected",
}
#: PLX Device and Sensor Status bits that say the same of the equipment.
PLX_DEVICE_STATUS_UNUSABLE: dict[int, str] = {
    1: "equipment malfunction detected",
    11: "sensor unconnected to user",
    12: "unknown sensor connected",
    14: "sensor malfunctioning",
    15: "sensor disconnected",
}
#: PLX Measurement Status bits that say the value is real but questionable.
PLX_MEASUREMENT_STATUS_QUALITY: dict[int, Quality] = {
    6: Quality.EARLY_ESTIMATE,
    14: Quality.QUESTIONABLE_MEASUREMENT,
}
#: PLX Device and Sensor Status bits that say the same.
PLX_DEVICE_STATUS_QUALITY: dict[int, Quality] = {
    2: Quality.SIGNAL_PROCESSING_IRREGULARITY,
    3: Quality.INADEQUATE_SIGNAL,
    4: Quality.POOR_SIGNAL,
    5: Quality.LOW_PERFUSION,
    6: Quality.ERRATIC_SIGNAL,
    7: Quality.NONPULSATILE_SIGNAL,
    8: Quality.QUESTIONABLE_PULSE,
    10: Quality.SENSOR_INTERFERENCE,
    13: Quality.SENSOR_DISPLACED,
}


def _plx_quality(characteristic: Characteristic, status: int, device: int) -> frozenset[Quality]:
    """The quality flags of a PLX value's status fields, or rejected when it is no measurement."""
    if not (status or device):
        return NO_QUALITY  # nearly always
    _check_plx_status(characteristic, status, device)
    flags = {q for bit, q in PLX_MEASUREMENT_STATUS_QUALITY.items() if status >> bit & 1}
    flags.update(q for bit, q in PLX_DEVICE_STATUS_QUALITY.items() if device >> bit & 1)
    return frozenset(flags) if flags else NO_QUALITY


def _check_plx_status(characteristic: Characteristic, status: int, device: int) -> None:
    named = [
        f"measurement status bit {bit} ({name})"
        for bit, name in PLX_MEASUREMENT_STATUS_UNUSABLE.items()
        if status >> bit & 1
    ]
    named += [
        f"device and sensor status bit {bit} ({name})"
        for bit, name in PLX_DEVICE_STATUS_UNUSABLE.items()
        if device >> bit & 1
    ]
    if named:
        detail = f"{characteristic.label}: {'; '.join(named)}: not a real measurement"
        raise _RejectedError(Reason.MISSING_VALUE, detail)


def _spo2(characteristic: Characteristic, spo2: int, pulse: int) -> dict[Quantity, float]:
    values = {Quantity.SPO2: _required(spo2, "SpO2", characteristic)}
    pulse_value = _optional(pulse)
    if pulse_value is not None:
        values[Quantity.HEART_RATE] = pulse_value
    return values


def _plx_spot_check(data: bytes) -> _Measurement:
    """0x2A5E: one SpO2 and pulse rate, optionally time-stamped."""
    characteristic = Characteristic.PLX_SPOT_CHECK_MEASUREMENT
    flags = _flags(data, characteristic)
    has_stamp, has_status, has_device, has_pai = (
        flags & 0x01,
        flags & 0x02,
        flags & 0x04,
        flags & 0x08,
    )
    clock_not_set = flags & 0x10
    needed = 5 + (7 if has_stamp else 0) + (2 if has_status else 0)
    needed += (3 if has_device else 0) + (2 if has_pai else 0)
    _check_length(data, characteristic, flags, needed)
    fields = _Fields(data, characteristic)
    spo2, pulse = fields.uint(2), fields.uint(2)
    stamp = None
    if has_stamp and clock_not_set:
        fields.skip(7)  # a clock that was never set says nothing about when
    elif has_stamp:
        stamp = fields.date_time()
    status = fields.uint(2) if has_status else 0
    device = fields.uint(3) if has_device else 0
    # Pulse Amplitude Index (flag bit 3) is not stored.
    quality = _plx_quality(characteristic, status, device)
    values = _spo2(characteristic, spo2, pulse)
    return _Measurement(Metric.SPO2, values, stamp, quality=quality)


def _plx_continuous(data: bytes) -> _Measurement:
    """0x2A5F: the normal SpO2 and pulse rate; the fast and slow averages are not stored."""
    characteristic = Characteristic.PLX_CONTINUOUS_MEASUREMENT
    flags = _flags(data, characteristic)
    has_fast, has_slow, has_status, has_device = (
        flags & 0x01,
        flags & 0x02,
        flags & 0x04,
        flags & 0x08,
    )
    has_pai = flags & 0x10
    needed = 5 + (4 if has_fast else 0) + (4 if has_slow else 0) + (2 if has_status else 0)
    needed += (3 if has_device else 0) + (2 if has_pai else 0)
    _check_length(data, characteristic, flags, needed)
    fields = _Fields(data, characteristic)
    spo2, pulse = fields.uint(2), fields.uint(2)
    fields.skip((4 if has_fast else 0) + (4 if has_slow else 0))
    status = fields.uint(2) if has_status else 0
    device = fields.uint(3) if has_device else 0
    quality = _plx_quality(characteristic, status, device)
    return _Measurement(Metric.SPO2, _spo2(characteristic, spo2, pulse), quality=quality)


_CONTACT_NOT_DETECTED = 2


def _heart_rate(data: bytes) -> _Measurement:
    """0x2A37: heart rate as uint8 or uint16; energy expended and RR-intervals not stored."""
    characteristic = Characteristic.HEART_RATE_MEASUREMENT
    flags = _flags(data, characteristic)
    wide, contact = flags & 0x01, flags >> 1 & 0x03
    has_energy, has_rr = flags & 0x08, flags & 0x10
    fixed = 1 + (2 if wide else 1) + (2 if has_energy else 0)
    if has_rr:
        rr_bytes = len(data) - fixed
        if rr_bytes < 2 or rr_bytes % 2:
            detail = (
                f"{characteristic.label} with flags 0x{flags:02X} needs {fixed + 2} bytes"
                f" plus 2 per further RR-interval, got {len(data)}"
            )
            raise _RejectedError(Reason.MALFORMED, detail)
    else:
        _check_length(data, characteristic, flags, fixed)
    if contact == _CONTACT_NOT_DETECTED:
        detail = f"{characteristic.label}: sensor contact supported but not detected"
        raise _RejectedError(Reason.MISSING_VALUE, detail)
    value = _Fields(data, characteristic).uint(2 if wide else 1)
    return _Measurement(Metric.HEART_RATE, {Quantity.HEART_RATE: float(value)})


_PARSERS: dict[Characteristic, Callable[[bytes], _Measurement]] = {
    Characteristic.BLOOD_PRESSURE_MEASUREMENT: _blood_pressure,
    Characteristic.WEIGHT_MEASUREMENT: _weight,
    Characteristic.PLX_SPOT_CHECK_MEASUREMENT: _plx_spot_check,
    Characteristic.PLX_CONTINUOUS_MEASUREMENT: _plx_continuous,
    Characteristic.HEART_RATE_MEASUREMENT: _heart_rate,
}


# --- Items and the message -----------------------------------------------------------------------


def decode_ble(payload: bytes) -> Decoded:
    """Decode a ``readings/ble`` envelope; a bad item in a batch does not spoil the others."""
    data = load_object(payload)
    if isinstance(data, Decoded):
        return data
    head = envelope_head(data, _EnvelopeHead)
    if isinstance(head, Decoded):
        return head
    decoded = Decoded(sent_at=head.sent_at)
    for index, raw in enumerate(head.readings):
        try:
            item = BleReadingIn.model_validate(raw)
        except ValidationError as exc:
            where = f"readings[{index}]"
            decoded.rejections.append(item_rejection(_reason(exc), exc, where, index, raw))
            continue
        try:
            decoded.readings.append(_to_reading(item, index, head.timezone))
        except _RejectedError as exc:
            decoded.rejections.append(Rejection(exc.reason, exc.detail, index, item.device_id))
    return decoded


def _to_reading(item: BleReadingIn, index: int, envelope_zone: str | None) -> Reading:
    characteristic = _characteristic(item.characteristic)
    measurement = _PARSERS[characteristic](item.value())
    return Reading(
        device_id=_device_id(item.device_id, measurement.user_id),
        metric=measurement.metric,
        measured_at=_measured_at(measurement.stamp, item, envelope_zone, characteristic),
        values=measurement.values,
        message_id=item.message_id,
        source=SOURCE,
        index=index,
        quality=measurement.quality,
    )


def _characteristic(uuid: str) -> Characteristic:
    try:
        return Characteristic(int(uuid, 16))
    except ValueError:
        known = ", ".join(c.label for c in Characteristic)
        label = f"0x{uuid}" if len(uuid) <= 8 else uuid
        detail = f"characteristic {label} is not one this service decodes (known: {known})"
        raise _RejectedError(Reason.UNKNOWN_METRIC, detail) from None


def _measured_at(
    stamp: _LocalTime | None,
    item: BleReadingIn,
    envelope_zone: str | None,
    characteristic: Characteristic,
) -> dt.datetime:
    """The device's stamp in the gateway's zone, or the gateway's time of receipt."""
    if stamp is None:
        return item.received_at
    spec = item.timezone or envelope_zone
    if spec is None:
        detail = (
            f"{characteristic.label} carries a device time stamp, which has no zone: send"
            " 'timezone' (an IANA name such as Europe/Stockholm, or an offset such as +01:00)"
            " in the envelope or the item"
        )
        raise _RejectedError(Reason.NO_TIMESTAMP, detail)
    # fold=0: a wall-clock time that occurs twice (autumn) is taken as the first one.
    local = dt.datetime.combine(stamp.date, stamp.time, tzinfo=_zone(spec))
    # Kept as the fixed offset in force, as the other formats give it: a zone-aware time
    # in a fold compares unequal to every time in another zone (PEP 495).
    return local.replace(tzinfo=dt.timezone(local.utcoffset() or dt.timedelta(0)))


def _device_id(device_id: str, user_id: int | None) -> str:
    """The device id, suffixed ``:u{n}`` for a known user of a shared device."""
    if user_id is None or user_id == _UNKNOWN_USER:
        return device_id
    suffixed = f"{device_id}:u{user_id}"
    if not _DEVICE_ID.fullmatch(suffixed):
        detail = (
            f"device_id with the user suffix ':u{user_id}' does not match {DEVICE_ID_PATTERN};"
            " give the shared device an id of at most 59 characters"
        )
        raise _RejectedError(Reason.MALFORMED, detail)
    return suffixed


def _reason(exc: ValidationError) -> Reason:
    """The quarantine reason an item's first validation error stands for."""
    first = exc.errors(include_input=False, include_url=False)[0]
    if first["loc"] and first["loc"][0] == "received_at":
        return Reason.NO_TIMESTAMP
    return Reason.MALFORMED
