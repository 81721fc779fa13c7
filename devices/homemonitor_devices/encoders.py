"""A measurement in every payload format the service decodes.

* native JSON: the :class:`homemonitor.contract.protocol.Envelope` (validated before it leaves);
* FHIR R4: a vital-signs ``Observation`` with LOINC codes and UCUM units;
* Bluetooth: the gateway envelope carrying the raw characteristic bytes as the Bluetooth
  SIG specifies them (Blood Pressure 0x2A35, Weight 0x2A9D, PLX Spot-Check 0x2A5E,
  Heart Rate 0x2A37), with IEEE 11073-20601 SFLOATs.

Every encoder returns ``(format, payload)``; the topic is
``homemonitor.contract.protocol.readings_topic(gateway_id, format)``.
"""

from __future__ import annotations

import json
import math
import struct
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from homemonitor.contract.protocol import Envelope, PayloadFormat
from homemonitor.contract.readings import Metric, Quality, Quantity
from homemonitor.errors import HomemonitorError
from homemonitor_devices.measurement import HOME_TIMEZONE, HOME_TZ, Measurement

__all__ = [
    "SFLOAT_NAN",
    "SFLOAT_NEG_INFINITY",
    "SFLOAT_NRES",
    "SFLOAT_POS_INFINITY",
    "SFLOAT_RESERVED",
    "EncodingError",
    "ble_characteristic",
    "decode_sfloat",
    "encode",
    "encode_ble",
    "encode_fhir",
    "encode_native",
    "encode_sfloat",
]


class EncodingError(HomemonitorError):
    """A measurement cannot be expressed in a payload format."""

    def __init__(self, fmt: str, detail: str) -> None:
        super().__init__(f"cannot encode as {fmt}: {detail}")
        self.format = fmt
        self.detail = detail


# --- IEEE 11073-20601 SFLOAT --------------------------------------------------------------
#: Special SFLOAT values (exponent 0, reserved mantissas), as 16-bit words.
SFLOAT_NAN = 0x07FF
SFLOAT_NRES = 0x0800
SFLOAT_POS_INFINITY = 0x07FE
SFLOAT_NEG_INFINITY = 0x0802
SFLOAT_RESERVED = 0x0801
_SPECIAL = {
    SFLOAT_NAN: math.nan,
    SFLOAT_NRES: math.nan,
    SFLOAT_RESERVED: math.nan,
    SFLOAT_POS_INFINITY: math.inf,
    SFLOAT_NEG_INFINITY: -math.inf,
}
_MANTISSA_MAX = 2045  # 0x07FE..0x0802 are the special values above
_EXPONENT_MIN, _EXPONENT_MAX = -8, 7


def encode_sfloat(value: float) -> int:
    """``value`` as a 16-bit SFLOAT word: 4-bit signed exponent, 12-bit signed mantissa.

    The most precise representation is chosen, then trailing decimal zeros are moved into
    a negative exponent, so integers that fit encode with exponent 0 (120 -> 0x0078, not
    1200e-1) and decimals with the fewest digits (36.6 -> 0xF16E).
    NaN and the infinities encode as their special values.

    >>> hex(encode_sfloat(120)), hex(encode_sfloat(36.6)), hex(encode_sfloat(math.nan))
    ('0x78', '0xf16e', '0x7ff')
    """
    if math.isnan(value):
        return SFLOAT_NAN
    if math.isinf(value):
        return SFLOAT_POS_INFINITY if value > 0 else SFLOAT_NEG_INFINITY
    for exponent in range(_EXPONENT_MIN, _EXPONENT_MAX + 1):
        mantissa = round(value / 10.0**exponent)
        if abs(mantissa) <= _MANTISSA_MAX:
            break
    else:
        raise EncodingError("SFLOAT", f"{value!r} is beyond ±{_MANTISSA_MAX}e{_EXPONENT_MAX}")
    if mantissa == 0:
        return 0
    while mantissa % 10 == 0 and exponent < 0:
        mantissa //= 10
        exponent += 1
    return ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)


def decode_sfloat(word: int) -> float:
    """The value of a 16-bit SFLOAT word (the special values as NaN or ±infinity)."""
    if word in _SPECIAL:
        return _SPECIAL[word]
    exponent = word >> 12
    mantissa = word & 0x0FFF
    if exponent >= 0x8:
        exponent -= 0x10
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    return mantissa / 10.0**-exponent if exponent < 0 else float(mantissa * 10**exponent)


def _sfloat(value: float) -> bytes:
    return struct.pack("<H", encode_sfloat(value))


def _date_time(at: datetime) -> bytes:
    """The Bluetooth Date Time (0x2A08): local wall-clock time, year to seconds."""
    local = at.astimezone(HOME_TZ)
    return struct.pack(
        "<HBBBBB", local.year, local.month, local.day, local.hour, local.minute, local.second
    )


# --- Bluetooth characteristics --------------------------------------------------------------
_BP_UNIT_KPA = 0x01
_BP_TIME_STAMP = 0x02
_BP_PULSE = 0x04
_BP_USER_ID = 0x08
_BP_STATUS = 0x10
_WEIGHT_TIME_STAMP = 0x02
_WEIGHT_USER_ID = 0x04
_WEIGHT_RESOLUTION_KG = 0.005
_PLX_TIME_STAMP = 0x01
_PLX_MEASUREMENT_STATUS = 0x02
_PLX_DEVICE_STATUS = 0x04
_HR_UINT16 = 0x01
_HR_CONTACT_DETECTED = 0x02
_HR_CONTACT_SUPPORTED = 0x04


#: Blood Pressure Measurement Status bits for each flag a cuff can set.
_BP_STATUS_BITS: dict[Quality, int] = {
    Quality.BODY_MOVEMENT: 1 << 0,
    Quality.CUFF_LOOSE: 1 << 1,
    Quality.IRREGULAR_PULSE: 1 << 2,
    Quality.PULSE_RATE_OUT_OF_RANGE: 1 << 3,  # range field (bits 3-4) = 1: above the upper limit
    Quality.IMPROPER_POSITION: 1 << 5,
}
#: PLX Measurement Status (uint16) and Device and Sensor Status (uint24) bits per flag.
_PLX_STATUS_BITS: dict[Quality, int] = {
    Quality.EARLY_ESTIMATE: 1 << 6,
    Quality.QUESTIONABLE_MEASUREMENT: 1 << 14,
}
_PLX_DEVICE_BITS: dict[Quality, int] = {
    Quality.SIGNAL_PROCESSING_IRREGULARITY: 1 << 2,
    Quality.INADEQUATE_SIGNAL: 1 << 3,
    Quality.POOR_SIGNAL: 1 << 4,
    Quality.LOW_PERFUSION: 1 << 5,
    Quality.ERRATIC_SIGNAL: 1 << 6,
    Quality.NONPULSATILE_SIGNAL: 1 << 7,
    Quality.QUESTIONABLE_PULSE: 1 << 8,
    Quality.SENSOR_INTERFERENCE: 1 << 10,
    Quality.SENSOR_DISPLACED: 1 << 13,
}


#: The flags each kind of measurement can carry over Bluetooth (weight and heart rate have
#: no status field).
_BLE_QUALITY: dict[Metric, frozenset[Quality]] = {
    Metric.BLOOD_PRESSURE: frozenset(_BP_STATUS_BITS),
    Metric.SPO2: frozenset(_PLX_STATUS_BITS) | frozenset(_PLX_DEVICE_BITS),
    Metric.BODY_WEIGHT: frozenset(),
    Metric.HEART_RATE: frozenset(),
}


def _word(m: Measurement, bits: dict[Quality, int]) -> int:
    """The status word that sets the bits of ``m.quality`` found in ``bits``."""
    return sum(bit for q, bit in bits.items() if q in m.quality)


def ble_characteristic(m: Measurement, *, user_id: int | None = None) -> tuple[str, bytes]:
    """The characteristic UUID (16-bit, hex) and value bytes that carry ``m``.

    Blood pressure is sent in mmHg with time stamp, pulse and measurement status; weight in
    SI units with time stamp; SpO2 as a spot check with time stamp; heart rate as uint8
    (uint16 above 255) with sensor contact detected (the Heart Rate Measurement has no time
    stamp: the gateway's ``received_at`` stands for it). ``user_id`` adds the User ID field
    to pressure and weight, as a shared device does (the service then names the device
    ``<id>:u<user>``, so single-user home devices leave it out). ``m.quality`` becomes
    the cuff's Measurement Status bits, or the oximeter's PLX Measurement Status and Device
    and Sensor Status (both present only when a flag needs them); a scale and a heart-rate
    monitor have no status field, so a flag on them cannot be encoded (:class:`EncodingError`).
    """
    values = m.values
    user = b"" if user_id is None else bytes([user_id])
    cannot = sorted(q.value for q in m.quality - _BLE_QUALITY[m.metric])
    if cannot:
        detail = f"a {m.metric.value} measurement has no status bit for {', '.join(cannot)}"
        raise EncodingError("ble", detail)
    if m.metric is Metric.BLOOD_PRESSURE:
        flags = _BP_TIME_STAMP | _BP_STATUS | (_BP_USER_ID if user else 0)
        mean = values.get(Quantity.MEAN_ARTERIAL, math.nan)
        body = _sfloat(values[Quantity.SYSTOLIC]) + _sfloat(values[Quantity.DIASTOLIC])
        body += _sfloat(mean) + _date_time(m.measured_at)
        pulse = values.get(Quantity.HEART_RATE)
        if pulse is not None:
            flags |= _BP_PULSE
            body += _sfloat(pulse)
        body += user + struct.pack("<H", _word(m, _BP_STATUS_BITS))  # 0: no problem detected
        return "2A35", bytes([flags]) + body
    if m.metric is Metric.BODY_WEIGHT:
        steps = round(values[Quantity.BODY_WEIGHT] / _WEIGHT_RESOLUTION_KG)
        if not 0 <= steps < 0xFFFF:  # 0xFFFF means "measurement unsuccessful"
            raise EncodingError("ble", f"weight {values[Quantity.BODY_WEIGHT]} kg out of range")
        flags = _WEIGHT_TIME_STAMP | (_WEIGHT_USER_ID if user else 0)
        body = struct.pack("<H", steps) + _date_time(m.measured_at) + user
        return "2A9D", bytes([flags]) + body
    if m.metric is Metric.SPO2:
        pulse = values.get(Quantity.HEART_RATE, math.nan)
        body = _sfloat(values[Quantity.SPO2]) + _sfloat(pulse) + _date_time(m.measured_at)
        flags = _PLX_TIME_STAMP
        if m.quality:  # both status fields, as an oximeter that reports them sends them
            flags |= _PLX_MEASUREMENT_STATUS | _PLX_DEVICE_STATUS
            body += struct.pack("<H", _word(m, _PLX_STATUS_BITS))
            body += _word(m, _PLX_DEVICE_BITS).to_bytes(3, "little")
        return "2A5E", bytes([flags]) + body
    rate = round(values[Quantity.HEART_RATE])
    flags = _HR_CONTACT_SUPPORTED | _HR_CONTACT_DETECTED
    if rate > 0xFF:
        return "2A37", bytes([flags | _HR_UINT16]) + struct.pack("<H", rate)
    return "2A37", bytes([flags, rate])


def encode_ble(
    m: Measurement, *, timezone: str = HOME_TIMEZONE, user_id: int | None = None
) -> tuple[PayloadFormat, bytes]:
    """``m`` in the Bluetooth gateway envelope (one reading)."""
    characteristic, value = ble_characteristic(m, user_id=user_id)
    envelope = {
        "v": 1,
        "timezone": timezone,
        "readings": [
            {
                "device_id": m.device_id,
                "characteristic": characteristic,
                "hex": value.hex(),
                "received_at": _iso(m.received_at),
                "message_id": m.message_id,
            }
        ],
    }
    return PayloadFormat.BLE, _json(envelope)


# --- FHIR R4 --------------------------------------------------------------------------------
_LOINC = "http://loinc.org"
_UCUM = "http://unitsofmeasure.org"
_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}
#: quantity -> (LOINC code, display, UCUM code, human unit)
_FHIR_CODES: dict[Quantity, tuple[str, str, str, str]] = {
    Quantity.SYSTOLIC: ("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    Quantity.DIASTOLIC: ("8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg"),
    Quantity.HEART_RATE: ("8867-4", "Heart rate", "/min", "beats/minute"),
    Quantity.BODY_WEIGHT: ("29463-7", "Body weight", "kg", "kg"),
    Quantity.SPO2: (
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        "%",
    ),
}
_PROFILE = {
    Metric.BLOOD_PRESSURE: "bp",
    Metric.BODY_WEIGHT: "bodyweight",
    Metric.SPO2: "oxygensat",
    Metric.HEART_RATE: "heartrate",
}
#: The quantity an Observation's own value carries; the others go in ``component``.
_PRIMARY = {
    Metric.BODY_WEIGHT: Quantity.BODY_WEIGHT,
    Metric.SPO2: Quantity.SPO2,
    Metric.HEART_RATE: Quantity.HEART_RATE,
}


def _concept(quantity: Quantity) -> dict[str, Any]:
    code, display, _, _ = _FHIR_CODES[quantity]
    return {"coding": [{"system": _LOINC, "code": code, "display": display}]}


def _value_quantity(quantity: Quantity, value: float) -> dict[str, Any]:
    _, _, ucum, unit = _FHIR_CODES[quantity]
    return {"value": _number(value), "unit": unit, "system": _UCUM, "code": ucum}


def encode_fhir(m: Measurement, *, include_pulse: bool = True) -> tuple[PayloadFormat, bytes]:
    """``m`` as a FHIR R4 vital-signs Observation.

    Blood pressure is the 85354-9 panel with systolic (8480-6) and diastolic (8462-4)
    components, and the pulse as an 8867-4 component unless ``include_pulse`` is false;
    weight 29463-7, SpO2 59408-5 and heart rate 8867-4 carry ``valueQuantity`` (an
    oximeter's pulse is not sent: the service reads no components on SpO2). Mean arterial
    pressure is not sent. The message id is the Observation's ``id`` (and an identifier);
    the device is referenced as ``Device/<id>``; no patient is named. ``m.quality`` is not
    sent: FHIR payloads carry no quality flags (``docs/fhir.md``).
    """
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": m.message_id,
        "meta": {"profile": [f"http://hl7.org/fhir/StructureDefinition/{_PROFILE[m.metric]}"]},
        "identifier": [{"system": "urn:homemonitor:message-id", "value": m.message_id}],
        "status": "final",
        "category": [_CATEGORY],
    }
    components: list[dict[str, Any]] = []
    if m.metric is Metric.BLOOD_PRESSURE:
        resource["code"] = {
            "coding": [
                {
                    "system": _LOINC,
                    "code": "85354-9",
                    "display": "Blood pressure panel with all children optional",
                }
            ]
        }
        quantities = [Quantity.SYSTOLIC, Quantity.DIASTOLIC]
    else:
        primary = _PRIMARY[m.metric]
        resource["code"] = _concept(primary)
        quantities = []
    if include_pulse and m.metric is Metric.BLOOD_PRESSURE and Quantity.HEART_RATE in m.values:
        quantities.append(Quantity.HEART_RATE)
    for quantity in quantities:
        components.append(
            {
                "code": _concept(quantity),
                "valueQuantity": _value_quantity(quantity, m.values[quantity]),
            }
        )
    resource["effectiveDateTime"] = _iso(m.measured_at)
    resource["device"] = {"reference": f"Device/{m.device_id}"}
    if m.metric is not Metric.BLOOD_PRESSURE:
        primary = _PRIMARY[m.metric]
        resource["valueQuantity"] = _value_quantity(primary, m.values[primary])
    if components:
        resource["component"] = components
    return PayloadFormat.FHIR, _json(resource)


# --- native JSON ----------------------------------------------------------------------------
def native_item(m: Measurement) -> dict[str, Any]:
    """``m`` as one item of a native envelope's ``readings``."""
    values = m.values
    item: dict[str, Any] = {
        "device_id": m.device_id,
        "metric": m.metric.value,
        "measured_at": _iso(m.measured_at),
    }
    if m.metric is Metric.BLOOD_PRESSURE:
        item |= {
            "unit": "mmHg",
            "systolic": _number(values[Quantity.SYSTOLIC]),
            "diastolic": _number(values[Quantity.DIASTOLIC]),
        }
        if Quantity.MEAN_ARTERIAL in values:
            item["mean"] = _number(values[Quantity.MEAN_ARTERIAL])
        if Quantity.HEART_RATE in values:
            item["pulse"] = _number(values[Quantity.HEART_RATE])
    elif m.metric is Metric.BODY_WEIGHT:
        item |= {"unit": "kg", "value": _number(values[Quantity.BODY_WEIGHT])}
    elif m.metric is Metric.SPO2:
        item |= {"unit": "%", "value": _number(values[Quantity.SPO2])}
        if Quantity.HEART_RATE in values:
            item["pulse"] = _number(values[Quantity.HEART_RATE])
    else:
        item |= {"unit": "/min", "value": _number(values[Quantity.HEART_RATE])}
    item["message_id"] = m.message_id
    if m.quality:
        item["quality"] = sorted(q.value for q in m.quality)
    return item


def encode_native(
    m: Measurement | list[Measurement], *, sent_at: datetime | None = None
) -> tuple[PayloadFormat, bytes]:
    """``m`` as a native envelope: ``reading`` for one, ``readings`` for a list.

    The payload is validated against :class:`homemonitor.contract.protocol.Envelope` before it is
    returned, so a contract change shows up here first. ``sent_at`` is left out unless
    given (a scenario's payloads must not depend on the wall clock).
    """
    envelope: dict[str, Any] = {"v": 1}
    if sent_at is not None:
        envelope["sent_at"] = _iso(sent_at)
    if isinstance(m, list):
        envelope["readings"] = [native_item(one) for one in m]
    else:
        envelope["reading"] = native_item(m)
    payload = _json(envelope)
    try:
        Envelope.model_validate_json(payload)
    except ValidationError as exc:
        raise EncodingError("native", str(exc)) from exc
    return PayloadFormat.NATIVE, payload


def encode(m: Measurement, fmt: PayloadFormat) -> tuple[PayloadFormat, bytes]:
    """``m`` in payload format ``fmt``."""
    if fmt is PayloadFormat.FHIR:
        return encode_fhir(m)
    if fmt is PayloadFormat.BLE:
        return encode_ble(m)
    return encode_native(m)


def _number(value: float) -> int | float:
    """An integral value as a JSON integer (``128``, not ``128.0``)."""
    return int(value) if float(value).is_integer() else value


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        msg = "times must be aware"
        raise EncodingError("timestamp", msg)
    return at.isoformat(timespec="seconds")


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
