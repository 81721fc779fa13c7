"""The native JSON payload (see :mod:`homemonitor.contract.protocol`) to normalised readings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from homemonitor.contract.protocol import (
    MAX_READINGS_PER_MESSAGE,
    BloodPressureIn,
    BodyWeightIn,
    Envelope,
    HeartRateIn,
    OneReadingOrBatch,
    ReadingIn,
    Spo2In,
    Timestamp,
    Version,
)
from homemonitor.contract.readings import NO_QUALITY, Decoded, Metric, Quantity, Reading, Reason
from homemonitor.contract.units import to_canonical
from homemonitor.decoding._common import (
    describe,
    envelope_head,
    item_rejection,
    load_object,
    refuse_message,
)


class _EnvelopeHead(OneReadingOrBatch):
    """The envelope without its readings, to judge it apart from them."""

    model_config = ConfigDict(extra="forbid", strict=True)
    v: Version
    sent_at: Timestamp | None = None
    reading: Any = None
    readings: (
        Annotated[list[Any], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)] | None
    ) = None


_READING = TypeAdapter[BloodPressureIn | BodyWeightIn | Spo2In | HeartRateIn](ReadingIn)


def decode_native(payload: bytes) -> Decoded:
    """Decode a native envelope; a bad reading in a batch does not spoil the others."""
    try:
        envelope = Envelope.model_validate_json(payload)
    except ValidationError as exc:
        return _decode_item_by_item(payload, exc)
    items = envelope.items()
    return Decoded([to_reading(item, i) for i, item in enumerate(items)], [], envelope.sent_at)


def to_reading(item: BloodPressureIn | BodyWeightIn | Spo2In | HeartRateIn, index: int) -> Reading:
    """A validated native item as a normalised reading (units converted)."""
    values: dict[Quantity, float]
    if isinstance(item, BloodPressureIn):
        values = {
            Quantity.SYSTOLIC: to_canonical(Quantity.SYSTOLIC, item.systolic, item.unit),
            Quantity.DIASTOLIC: to_canonical(Quantity.DIASTOLIC, item.diastolic, item.unit),
        }
        if item.mean is not None:
            values[Quantity.MEAN_ARTERIAL] = to_canonical(
                Quantity.MEAN_ARTERIAL, item.mean, item.unit
            )
        if item.pulse is not None:
            values[Quantity.HEART_RATE] = item.pulse
    elif isinstance(item, BodyWeightIn):
        values = {Quantity.BODY_WEIGHT: to_canonical(Quantity.BODY_WEIGHT, item.value, item.unit)}
    elif isinstance(item, Spo2In):
        values = {Quantity.SPO2: item.value}
        if item.pulse is not None:
            values[Quantity.HEART_RATE] = item.pulse
    else:
        values = {Quantity.HEART_RATE: item.value}
    return Reading(
        device_id=item.device_id,
        metric=Metric(item.metric),
        measured_at=item.measured_at,
        values=values,
        message_id=item.message_id,
        source="json",
        index=index,
        quality=frozenset(item.quality) if item.quality else NO_QUALITY,
    )


def _decode_item_by_item(payload: bytes, refusal: ValidationError) -> Decoded:
    """The slow path: find out what exactly is wrong, reading by reading.

    ``refusal`` is why the :class:`Envelope` (the published schema) refused the payload; it
    has the last word: when no reading is found at fault, the whole message is refused.
    """
    data = load_object(payload)
    if isinstance(data, Decoded):
        return data
    if "resourceType" in data:
        from homemonitor.decoding.fhir import decode_fhir  # noqa: PLC0415 - sniffed format

        return decode_fhir(payload)
    head = envelope_head(data, _EnvelopeHead)
    if isinstance(head, Decoded):
        return head
    raw_items: list[Any] = head.readings if head.readings is not None else [head.reading]
    prefix = "readings" if head.readings is not None else "reading"
    decoded = Decoded(sent_at=head.sent_at)
    for index, raw in enumerate(raw_items):
        try:
            item = _READING.validate_python(raw)
        except ValidationError as exc:
            where = f"{prefix}[{index}]" if prefix == "readings" else prefix
            decoded.rejections.append(item_rejection(_reason(exc), exc, where, index, raw))
        else:
            decoded.readings.append(to_reading(item, index))
    if not decoded.rejections:
        return refuse_message(Reason.MALFORMED, describe(refusal, prefix=""))
    return decoded


def _reason(exc: ValidationError) -> Reason:
    """The quarantine reason a reading's first validation error stands for."""
    for error in exc.errors(include_input=False):
        kind, loc = error["type"], error["loc"]
        if kind == "union_tag_invalid":
            return Reason.UNKNOWN_METRIC
        if loc and loc[-1] == "unit" and kind == "literal_error":
            return Reason.UNKNOWN_UNIT
        if kind == "finite_number":
            return Reason.MISSING_VALUE
        if "measured_at" in loc:
            return Reason.NO_TIMESTAMP
    return Reason.MALFORMED
