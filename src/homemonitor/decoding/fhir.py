"""FHIR R4 Observations, alone or in a Bundle, to normalised readings.

Accepts the vital-signs Observations of the FHIR core specification and those a Personal
Health Gateway sends under the HL7 Personal Health Device (PHD) IG: blood pressure, body
weight, SpO2 and heart rate, coded in LOINC or IEEE 11073 MDC. ``docs/fhir.md`` lists how
each field maps and every rejection.

The walk is plain dict access: four vital signs need no FHIR object model. Each helper
either returns what it found or raises :class:`_NotDecodableError` naming the field at fault; one
place turns that into a :class:`~homemonitor.contract.readings.Rejection`. Details name fields,
codes and units, never values, dates or anything from ``subject`` (which is ignored: a
patient is found through the device binding, not through the payload).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from homemonitor.contract.protocol import (
    DEVICE_ID_PATTERN,
    MAX_READINGS_PER_MESSAGE,
    parse_timestamp,
)
from homemonitor.contract.readings import (
    OPTIONAL,
    REQUIRED,
    Decoded,
    Metric,
    Quantity,
    Reading,
    Reason,
    Rejection,
)
from homemonitor.contract.units import UnknownUnitError, known_units, to_canonical
from homemonitor.decoding._common import load_object, refuse_message
from homemonitor.errors import HomemonitorError

__all__ = ["decode_fhir"]

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
DATA_ABSENT_REASON_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

#: ``Observation.code`` codings and the metric they stand for; any one matching coding decides.
METRIC_CODES: dict[tuple[str, str], Metric] = {
    (LOINC, "85354-9"): Metric.BLOOD_PRESSURE,  # Blood pressure panel
    (MDC, "150020"): Metric.BLOOD_PRESSURE,  # MDC_PRESS_BLD_NONINV
    (LOINC, "29463-7"): Metric.BODY_WEIGHT,  # Body weight
    (MDC, "188736"): Metric.BODY_WEIGHT,  # MDC_MASS_BODY_ACTUAL
    (LOINC, "59408-5"): Metric.SPO2,  # SpO2 by pulse oximetry
    (LOINC, "2708-6"): Metric.SPO2,  # Oxygen saturation in arterial blood
    (MDC, "150456"): Metric.SPO2,  # MDC_PULS_OXIM_SAT_O2
    (LOINC, "8867-4"): Metric.HEART_RATE,  # Heart rate
    (MDC, "149530"): Metric.HEART_RATE,  # MDC_PULS_OXIM_PULS_RATE
    (MDC, "147842"): Metric.HEART_RATE,  # MDC_ECG_HEART_RATE
}

#: ``component.code`` codings and the quantity each carries (blood pressure, and the pulse
#: an oximeter may report beside SpO2).
COMPONENT_CODES: dict[tuple[str, str], Quantity] = {
    (LOINC, "8480-6"): Quantity.SYSTOLIC,
    (MDC, "150021"): Quantity.SYSTOLIC,  # MDC_PRESS_BLD_NONINV_SYS
    (LOINC, "8462-4"): Quantity.DIASTOLIC,
    (MDC, "150022"): Quantity.DIASTOLIC,  # MDC_PRESS_BLD_NONINV_DIA
    (LOINC, "8478-0"): Quantity.MEAN_ARTERIAL,
    (MDC, "150023"): Quantity.MEAN_ARTERIAL,  # MDC_PRESS_BLD_NONINV_MEAN
    (LOINC, "8867-4"): Quantity.HEART_RATE,
    (MDC, "149546"): Quantity.HEART_RATE,  # MDC_PULS_RATE_NON_INV (a cuff's pulse)
    (MDC, "149530"): Quantity.HEART_RATE,  # MDC_PULS_OXIM_PULS_RATE
    (MDC, "147842"): Quantity.HEART_RATE,  # MDC_ECG_HEART_RATE
}

#: The one quantity ``Observation.valueQuantity`` carries, per metric without components.
_VALUE_QUANTITY = {
    Metric.BODY_WEIGHT: Quantity.BODY_WEIGHT,
    Metric.SPO2: Quantity.SPO2,
    Metric.HEART_RATE: Quantity.HEART_RATE,
}

#: Statuses whose Observation carries a result; every other R4 status carries none.
ACCEPTED_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
_NO_RESULT_STATUSES = frozenset({"registered", "cancelled", "entered-in-error", "unknown"})

#: How the PHD IG maps the IEEE 11073 FLOAT/SFLOAT special values to dataAbsentReason.
_IEEE_SPECIAL = {
    "not-a-number": "NaN",
    "positive-infinity": "+INF",
    "negative-infinity": "-INF",
    "error": "NRes or reserved",
}

_EFFECTIVE = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "effectiveTiming")
_DATE_ONLY = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
#: A literal reference, relative ("Device/x") or absolute, optionally to one version.
_LITERAL_REFERENCE = re.compile(
    r"(?:.*/)?(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[^/]+)(?:/_history/[^/]+)?"
)
_MAX_MESSAGE_ID = 128
_SHOWN_CODES = 6
_SHOWN_CHARS = 40


class _NotDecodableError(HomemonitorError):
    """One Observation cannot become a reading; never leaves this module."""

    def __init__(self, reason: Reason, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.reason = reason
        self.field = field
        self.message = message


class _NoValueError(_NotDecodableError):
    """The element says it has no value (dataAbsentReason, or no value at all)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(Reason.MISSING_VALUE, field, message)


def decode_fhir(payload: bytes) -> Decoded:
    """Decode a FHIR R4 Observation or Bundle; a bad Observation does not spoil the others."""
    data = load_object(payload, "a JSON object (a FHIR resource)")
    if isinstance(data, Decoded):
        return data
    kind = data.get("resourceType")
    if not isinstance(kind, str):
        return refuse_message(Reason.MALFORMED, "no resourceType: not a FHIR resource")
    if kind == "Observation":
        decoded = Decoded()
        _add(decoded, _decode_observation(data, 0, "Observation", {}))
        return decoded
    if kind == "Bundle":
        return _decode_bundle(data)
    return refuse_message(
        Reason.MALFORMED,
        f"resourceType {_shown(kind)} is not accepted: send an Observation or a Bundle",
    )


def _decode_bundle(bundle: dict[str, Any]) -> Decoded:
    """Every Observation entry of ``bundle``; other resources are context and skipped."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        return refuse_message(Reason.MALFORMED, "Bundle.entry must be a list")
    decoded = Decoded(sent_at=_aware_or_none(bundle.get("timestamp")))
    by_full_url: dict[str, dict[str, Any]] = {}
    observations: list[tuple[int, dict[str, Any]]] = []
    kinds: set[str] = set()
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None and isinstance(entry, dict):
            continue  # e.g. a DELETE request: nothing to read
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            decoded.rejections.append(
                Rejection(
                    Reason.MALFORMED,
                    f"Bundle.entry[{index}]: must be an object whose resource has a resourceType",
                    index,
                )
            )
            continue
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            by_full_url[full_url] = resource
        if resource["resourceType"] == "Observation":
            observations.append((index, resource))
        else:
            kinds.add(resource["resourceType"])
    if len(observations) > MAX_READINGS_PER_MESSAGE:
        return refuse_message(
            Reason.MALFORMED,
            f"Bundle holds more than {MAX_READINGS_PER_MESSAGE} Observations; split it",
        )
    if not observations and not decoded.rejections:
        found = ", ".join(_shown(kind) for kind in sorted(kinds)[:_SHOWN_CODES]) or "none"
        return refuse_message(
            Reason.MISSING_VALUE, f"Bundle holds no Observation (entry resources: {found})"
        )
    for index, observation in observations:
        where = f"Bundle.entry[{index}].resource"
        _add(decoded, _decode_observation(observation, index, where, by_full_url))
    return decoded


def _decode_observation(
    observation: dict[str, Any], index: int, where: str, by_full_url: Mapping[str, dict[str, Any]]
) -> Reading | Rejection:
    """One Observation as a reading, or why not.

    Checked in this order, so the reason names the most basic problem: does it carry a
    result at all (status, members only), what it is (code), its values and units, when it
    was measured, which device measured it, and its id. The device is resolved first all
    the same, so that every rejection can name it.
    """
    device = _device_or_refusal(observation, by_full_url)
    named = device if isinstance(device, str) else None
    try:
        _check_status(observation)
        _check_not_members_only(observation)
        metric = _metric(observation)
        values = _values(observation, metric)
        measured_at = _measured_at(observation)
        if isinstance(device, _NotDecodableError):
            raise device
        message_id = _message_id(observation)
    except _NotDecodableError as exc:
        return Rejection(exc.reason, f"{where}.{exc.field}: {exc.message}", index, named)
    return Reading(
        device_id=device,
        metric=metric,
        measured_at=measured_at,
        values=values,
        message_id=message_id,
        source="fhir",
        index=index,
    )


def _check_status(observation: dict[str, Any]) -> None:
    status = observation.get("status")
    if not isinstance(status, str):
        raise _NotDecodableError(Reason.MALFORMED, "status", "missing or not a string")
    if status in ACCEPTED_STATUSES:
        return
    if status in _NO_RESULT_STATUSES:
        accepted = ", ".join(sorted(ACCEPTED_STATUSES))
        raise _NotDecodableError(
            Reason.MISSING_VALUE, "status", f"{status!r} carries no result (accepted: {accepted})"
        )
    raise _NotDecodableError(Reason.MALFORMED, "status", "not an R4 Observation status")


def _check_not_members_only(observation: dict[str, Any]) -> None:
    """A grouping panel (e.g. vital signs 85353-1) whose results are other Observations."""
    members, components = observation.get("hasMember"), observation.get("component")
    if members and not components and not _value_keys(observation):
        raise _NoValueError(
            "hasMember",
            "a panel that only groups other Observations carries no value itself; "
            "send the member Observations",
        )


def _metric(observation: dict[str, Any]) -> Metric:
    codings = _codings(observation.get("code"), "code")
    found = {METRIC_CODES[coding] for coding in codings if coding in METRIC_CODES}
    if not found:
        raise _NotDecodableError(
            Reason.UNKNOWN_METRIC, "code", f"no supported metric among {_describe(codings)}"
        )
    if len(found) > 1:
        names = ", ".join(sorted(metric.value for metric in found))
        raise _NotDecodableError(
            Reason.MALFORMED, "code", f"codings name different metrics ({names})"
        )
    return found.pop()


def _values(observation: dict[str, Any], metric: Metric) -> dict[Quantity, float]:
    if metric is Metric.BLOOD_PRESSURE:
        _refuse_absent(observation, "")
        return _component_values(observation, metric)
    quantity = _VALUE_QUANTITY[metric]
    values = {quantity: _quantity_value(observation, "", quantity)}
    if OPTIONAL[metric] and observation.get("component"):
        values.update(_component_values(observation, metric))
    return values


def _component_values(observation: dict[str, Any], metric: Metric) -> dict[Quantity, float]:
    """The quantities ``metric`` carries in components.

    Blood pressure: systolic and diastolic required, mean and pulse when they have a
    value. SpO2: a pulse component when it has a value. Components of other codes (PHD
    supplemental types, for instance) are ignored.
    """
    required = REQUIRED[metric] if metric is Metric.BLOOD_PRESSURE else ()
    wanted = (*required, *OPTIONAL[metric])
    components = observation.get("component", [])
    if not isinstance(components, list):
        raise _NotDecodableError(Reason.MALFORMED, "component", "must be a list")
    values: dict[Quantity, float] = {}
    seen: set[Quantity] = set()
    for position, component in enumerate(components):
        path = f"component[{position}]"
        if not isinstance(component, dict):
            raise _NotDecodableError(Reason.MALFORMED, path, "must be an object")
        quantity = _component_quantity(component, path)
        if quantity is None or quantity not in wanted:
            continue
        if quantity in seen:
            raise _NotDecodableError(
                Reason.MALFORMED, path, f"a second component for {quantity.value}"
            )
        seen.add(quantity)
        try:
            values[quantity] = _quantity_value(component, f"{path}.", quantity)
        except _NoValueError as exc:
            if quantity not in OPTIONAL[metric]:
                raise _NoValueError(
                    exc.field, f"{quantity.value} is required; {exc.message}"
                ) from exc
    for quantity in required:
        if quantity not in seen:
            codes = " or ".join(
                _code_name(key) for key, q in COMPONENT_CODES.items() if q is quantity
            )
            raise _NoValueError("component", f"no {quantity.value} component ({codes})")
    return values


def _component_quantity(component: dict[str, Any], path: str) -> Quantity | None:
    codings = _codings(component.get("code"), f"{path}.code")
    found = {COMPONENT_CODES[coding] for coding in codings if coding in COMPONENT_CODES}
    if len(found) > 1:
        names = ", ".join(sorted(quantity.value for quantity in found))
        raise _NotDecodableError(Reason.MALFORMED, f"{path}.code", f"codings name {names} at once")
    return found.pop() if found else None


def _quantity_value(element: dict[str, Any], path: str, quantity: Quantity) -> float:
    """The value of ``element`` (an Observation or a component) in canonical units."""
    _refuse_absent(element, path)
    keys = _value_keys(element)
    if not keys:
        raise _NoValueError(f"{path}value[x]", "no value and no dataAbsentReason")
    if keys != ["valueQuantity"]:
        raise _NotDecodableError(
            Reason.MALFORMED, f"{path}{keys[0]}", "a measurement must be one valueQuantity"
        )
    field = f"{path}valueQuantity"
    quantity_in = element["valueQuantity"]
    if not isinstance(quantity_in, dict):
        raise _NotDecodableError(Reason.MALFORMED, field, "must be an object")
    for where, holder in ((field, quantity_in), (f"{field}.value", quantity_in.get("_value"))):
        code = _absent_extension(holder)
        if code is not None:
            raise _NoValueError(where, f"data-absent-reason extension {_absent_text(code)}")
    if quantity_in.get("comparator") is not None:
        raise _NotDecodableError(
            Reason.MISSING_VALUE, f"{field}.comparator", "a bound (<, >...) is not a measured value"
        )
    raw = quantity_in.get("value")
    if raw is None:
        raise _NoValueError(f"{field}.value", "missing")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _NotDecodableError(Reason.MALFORMED, f"{field}.value", "must be a JSON number")
    unit, unit_field = _unit(quantity_in, field, quantity)
    try:
        value = to_canonical(quantity, float(raw), unit)
    except OverflowError:
        value = math.inf
    except UnknownUnitError as exc:
        raise _NotDecodableError(Reason.UNKNOWN_UNIT, unit_field, _shown_unit_error(exc)) from exc
    if not math.isfinite(value):
        raise _NotDecodableError(Reason.MISSING_VALUE, f"{field}.value", "not a finite number")
    return value


def _unit(quantity_in: dict[str, Any], field: str, quantity: Quantity) -> tuple[str, str]:
    """The unit to convert from (the UCUM ``code``, else ``unit``) and the field it came from."""
    code = quantity_in.get("code")
    system = quantity_in.get("system")
    if code is not None and system is not None and system != UCUM:
        raise _NotDecodableError(
            Reason.UNKNOWN_UNIT,
            f"{field}.system",
            f"units must be UCUM ({UCUM}), got another system",
        )
    name = "code" if code is not None else "unit"
    unit = quantity_in.get(name)
    if unit is None:
        raise _NotDecodableError(
            Reason.UNKNOWN_UNIT, f"{field}.code", "no unit (neither code nor unit)"
        )
    if not isinstance(unit, str):
        raise _NotDecodableError(Reason.MALFORMED, f"{field}.{name}", "must be a string")
    if quantity is Quantity.SPO2 and unit.strip() == "1":
        raise _NotDecodableError(
            Reason.UNKNOWN_UNIT,
            f"{field}.{name}",
            "SpO2 as a fraction (unit '1') is not accepted; use % (UCUM '%')",
        )
    return unit, f"{field}.{name}"


def _refuse_absent(element: dict[str, Any], path: str) -> None:
    reason = element.get("dataAbsentReason")
    if reason is not None:
        codes = [code for _, code in _codings(reason, f"{path}dataAbsentReason")]
        text = _absent_text(codes[0]) if codes else "(no code)"
        raise _NoValueError(f"{path}dataAbsentReason", f"no value: {text}")


def _absent_extension(holder: object) -> str | None:
    """The code of a data-absent-reason extension on ``holder``, if it has one."""
    if not isinstance(holder, dict) or not isinstance(holder.get("extension"), list):
        return None
    for extension in holder["extension"]:
        if isinstance(extension, dict) and extension.get("url") == DATA_ABSENT_REASON_EXTENSION:
            code = extension.get("valueCode")
            return code if isinstance(code, str) else ""
    return None


def _absent_text(code: str) -> str:
    special = _IEEE_SPECIAL.get(code)
    shown = _shown(code)
    return f"{shown} (IEEE 11073 special value {special})" if special else shown


def _value_keys(element: dict[str, Any]) -> list[str]:
    """The value[x] fields present (FHIR allows one)."""
    return sorted(key for key in element if key.startswith("value"))


def _measured_at(observation: dict[str, Any]) -> datetime:
    present = [key for key in _EFFECTIVE if key in observation]
    if not present:
        raise _NotDecodableError(
            Reason.NO_TIMESTAMP,
            "effective[x]",
            "missing: give effectiveDateTime, effectiveInstant or effectivePeriod.start",
        )
    if len(present) > 1:
        raise _NotDecodableError(
            Reason.MALFORMED, "effective[x]", f"give one of {', '.join(present)}"
        )
    field = present[0]
    if field == "effectiveTiming":
        raise _NotDecodableError(
            Reason.NO_TIMESTAMP, field, "a schedule is not a time of measurement"
        )
    text = observation[field]
    if field == "effectivePeriod":
        if not isinstance(text, dict):
            raise _NotDecodableError(Reason.MALFORMED, field, "must be an object")
        field, text = "effectivePeriod.start", text.get("start")
        if text is None:
            raise _NotDecodableError(Reason.NO_TIMESTAMP, field, "missing")
    return _parse_time(text, field)


def _parse_time(text: object, field: str) -> datetime:
    """A FHIR dateTime/instant with a time of day and a UTC offset; anything less is refused.

    Read by the contract's one time parser, as every format's times are.
    """
    if isinstance(text, str) and _DATE_ONLY.fullmatch(text):
        raise _NotDecodableError(
            Reason.NO_TIMESTAMP,
            field,
            "a date without a time of day (FHIR allows it); a reading needs a time "
            "with a UTC offset",
        )
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise _NotDecodableError(Reason.NO_TIMESTAMP, field, str(exc)) from None


def _aware_or_none(text: object) -> datetime | None:
    """Bundle.timestamp, when it is a valid time with a UTC offset (used for latency only)."""
    try:
        return _parse_time(text, "timestamp")
    except _NotDecodableError:
        return None


def _device_or_refusal(
    observation: dict[str, Any], by_full_url: Mapping[str, dict[str, Any]]
) -> str | _NotDecodableError:
    """The device id, or why there is none (reported only after the value and time)."""
    try:
        return _device_id(observation, by_full_url)
    except _NotDecodableError as exc:
        return exc


def _device_id(observation: dict[str, Any], by_full_url: Mapping[str, dict[str, Any]]) -> str:
    """The id of the device that measured; refused rather than repaired when it is odd."""
    device = observation.get("device")
    if device is None:
        raise _NotDecodableError(
            Reason.MALFORMED, "device", "no device: a reading must name its Device"
        )
    if not isinstance(device, dict):
        raise _NotDecodableError(Reason.MALFORMED, "device", "must be a Reference object")
    field = "device.reference"
    if device.get("reference") is not None:
        candidate = _resolve_reference(device["reference"], observation, by_full_url)
    else:
        field = "device.identifier.value"
        identifier = device.get("identifier")
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if not isinstance(value, str):
            raise _NotDecodableError(
                Reason.MALFORMED, "device", "no device: neither reference nor identifier.value"
            )
        candidate = value
    if not _DEVICE_ID.fullmatch(candidate):
        raise _NotDecodableError(
            Reason.MALFORMED, field, f"device id does not match {DEVICE_ID_PATTERN}"
        )
    return candidate


def _resolve_reference(
    reference: object, observation: dict[str, Any], by_full_url: Mapping[str, dict[str, Any]]
) -> str:
    field = "device.reference"
    if not isinstance(reference, str):
        raise _NotDecodableError(Reason.MALFORMED, field, "must be a string")
    if reference.startswith("#"):
        contained = observation.get("contained", [])
        targets = [
            resource
            for resource in (contained if isinstance(contained, list) else [])
            if isinstance(resource, dict) and resource.get("id") == reference[1:]
        ]
        if not targets:
            raise _NotDecodableError(Reason.MALFORMED, field, "names no contained resource")
        return _device_resource_id(targets[0], field)
    if reference.startswith("urn:"):
        target = by_full_url.get(reference)
        if target is None:
            raise _NotDecodableError(
                Reason.MALFORMED, field, "names no entry (fullUrl) of this Bundle"
            )
        return _device_resource_id(target, field)
    match = _LITERAL_REFERENCE.fullmatch(reference)
    if match is None:
        raise _NotDecodableError(Reason.MALFORMED, field, "not a FHIR reference (Device/<id>)")
    if match["type"] != "Device":
        raise _NotDecodableError(
            Reason.MALFORMED, field, f"points to a {match['type']}, not a Device"
        )
    return match["id"]


def _device_resource_id(resource: dict[str, Any], field: str) -> str:
    """A Device carried in the message: its first identifier's value, else its id."""
    kind = resource.get("resourceType")
    if kind != "Device":
        shown = _shown(kind) if isinstance(kind, str) else "resource without resourceType"
        raise _NotDecodableError(Reason.MALFORMED, field, f"points to a {shown}, not a Device")
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list) and identifiers and isinstance(identifiers[0], dict):
        value = identifiers[0].get("value")
        if isinstance(value, str):
            return value
    resource_id = resource.get("id")
    if isinstance(resource_id, str):
        return resource_id
    raise _NotDecodableError(
        Reason.MALFORMED, field, "the Device has neither identifier[0].value nor id"
    )


def _message_id(observation: dict[str, Any]) -> str | None:
    resource_id = observation.get("id")
    if resource_id is None:
        return None
    if not isinstance(resource_id, str) or len(resource_id) > _MAX_MESSAGE_ID:
        raise _NotDecodableError(
            Reason.MALFORMED, "id", f"must be a string of at most {_MAX_MESSAGE_ID} characters"
        )
    return resource_id


def _codings(concept: object, field: str) -> list[tuple[str, str]]:
    """The (system, code) pairs of a CodeableConcept; codings without a system match nothing."""
    if concept is None:
        raise _NotDecodableError(Reason.MALFORMED, field, "missing")
    if not isinstance(concept, dict):
        raise _NotDecodableError(Reason.MALFORMED, field, "must be a CodeableConcept object")
    codings = concept.get("coding", [])
    if not isinstance(codings, list):
        raise _NotDecodableError(Reason.MALFORMED, f"{field}.coding", "must be a list")
    pairs = []
    for position, coding in enumerate(codings):
        system = coding.get("system", "") if isinstance(coding, dict) else None
        code = coding.get("code") if isinstance(coding, dict) else None
        if not isinstance(system, str) or not isinstance(code, str):
            raise _NotDecodableError(
                Reason.MALFORMED, f"{field}.coding[{position}]", "needs a string code (and system)"
            )
        pairs.append((system, code))
    return pairs


def _describe(codings: list[tuple[str, str]]) -> str:
    if not codings:
        return "no coding"
    shown = ", ".join(_code_name(coding) for coding in codings[:_SHOWN_CODES])
    more = f" and {len(codings) - _SHOWN_CODES} more" if len(codings) > _SHOWN_CODES else ""
    return f"{shown}{more}"


def _code_name(coding: tuple[str, str]) -> str:
    """A coding as a person reads it: 'LOINC 8867-4', 'MDC 150456', else 'system|code'."""
    system, code = coding
    label = {LOINC: "LOINC", MDC: "MDC"}.get(system)
    if label is not None:
        return f"{label} {_clip(code)}"
    return f"{_clip(system) or '(no system)'}|{_clip(code)}"


def _shown_unit_error(exc: UnknownUnitError) -> str:
    known = ", ".join(known_units(exc.quantity))
    return f"unit {_shown(exc.unit)} is not known for {exc.quantity.value} (known: {known})"


def _shown(text: str) -> str:
    return repr(_clip(text))


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 1]}…"


def _add(decoded: Decoded, outcome: Reading | Rejection) -> None:
    if isinstance(outcome, Reading):
        decoded.readings.append(outcome)
    else:
        decoded.rejections.append(outcome)
