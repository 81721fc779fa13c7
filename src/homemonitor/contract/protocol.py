"""The gateway contract: MQTT topic layout and the native JSON payload (version 1).

Topics carry the gateway's identity, so a broker ACL (``pattern write
homemonitor/v1/gw/%u/#``) pins each gateway to its own topics::

    homemonitor/v1/gw/{gateway_id}/readings        native JSON (or FHIR, sniffed by resourceType)
    homemonitor/v1/gw/{gateway_id}/readings/fhir   FHIR R4 Observation or Bundle
    homemonitor/v1/gw/{gateway_id}/readings/ble    raw Bluetooth measurements

The payload names devices, never patients. ``docs/protocol.md`` is the prose version;
``homemonitor payload schema`` prints the JSON Schema generated from these models.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from homemonitor.contract.readings import Quality

TOPIC_PREFIX = "homemonitor/v1/gw"
#: What the worker subscribes to (``#`` also matches the parent level ``readings``).
SUBSCRIPTION = f"{TOPIC_PREFIX}/+/readings/#"
GATEWAY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
#: The most readings one message may carry, in every format (a batch, a Bundle, a BLE envelope).
MAX_READINGS_PER_MESSAGE = 1000
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_UTC_OFFSET = r"Z|[+-][0-9]{2}:[0-9]{2}"
#: How every format writes a time: ISO 8601 / RFC 3339 date and time to the second, with a UTC
#: offset (``Z`` or ``+hh:mm``). No Unix times, no space for ``T``, no missing seconds.
TIMESTAMP_PATTERN = f"^{_DATE_TIME}(?:{_UTC_OFFSET})$"
_GATEWAY_RE = re.compile(GATEWAY_ID_PATTERN)
_TIMESTAMP_FULL = re.compile(TIMESTAMP_PATTERN)
_WITHOUT_ZONE = re.compile(_DATE_TIME)


class PayloadFormat(enum.StrEnum):
    """Which decoder a topic asks for."""

    NATIVE = "json"
    FHIR = "fhir"
    BLE = "ble"


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """What a topic says: who sent it and in which format."""

    gateway_id: str
    format: PayloadFormat


def is_gateway_id(text: str) -> bool:
    """Whether all of ``text`` is a gateway id (:data:`GATEWAY_ID_PATTERN`).

    >>> is_gateway_id("gw-1"), is_gateway_id("gw-1\\n"), is_gateway_id("gw.1")
    (True, False, False)
    """
    return _GATEWAY_RE.fullmatch(text) is not None


def readings_topic(gateway_id: str, fmt: PayloadFormat = PayloadFormat.NATIVE) -> str:
    """The topic a gateway publishes readings of format ``fmt`` to."""
    base = f"{TOPIC_PREFIX}/{gateway_id}/readings"
    return base if fmt is PayloadFormat.NATIVE else f"{base}/{fmt.value}"


#: Where a broker that partitions the readings (NATS subject mappings, deploy/nats/) puts
#: them: ``homemonitor/v1/part/{n}/gw/{gateway_id}/readings[/fhir|/ble]``. Gateways never
#: publish there (the broker's permissions forbid it); workers subscribe to their partitions.
PARTITION_PREFIX = "homemonitor/v1/part"


def partition_subscription(partition: int) -> str:
    """What a worker that owns ``partition`` subscribes to."""
    return f"{PARTITION_PREFIX}/{partition}/gw/+/readings/#"


def unpartitioned(topic: str) -> str:
    """The topic the gateway published to, for one a partitioning broker delivered.

    >>> unpartitioned("homemonitor/v1/part/3/gw/gw-1/readings/fhir")
    'homemonitor/v1/gw/gw-1/readings/fhir'
    >>> unpartitioned("homemonitor/v1/gw/gw-1/readings")
    'homemonitor/v1/gw/gw-1/readings'
    """
    if not topic.startswith(PARTITION_PREFIX + "/"):
        return topic
    parts = topic.split("/", 4)  # homemonitor, v1, part, n, the rest
    return f"homemonitor/v1/{parts[4]}" if len(parts) == 5 else topic


@functools.lru_cache(maxsize=1 << 16)  # pure, one entry per gateway topic
def parse_topic(topic: str) -> Route | None:
    """The route a topic names, or None when it is outside the documented layout."""
    parts = topic.split("/")
    if len(parts) not in (5, 6) or "/".join(parts[:3]) != TOPIC_PREFIX or parts[4] != "readings":
        return None
    if not is_gateway_id(parts[3]):
        return None
    if len(parts) == 5:
        return Route(parts[3], PayloadFormat.NATIVE)
    try:
        fmt = PayloadFormat(parts[5])
    except ValueError:
        return None
    if fmt is PayloadFormat.NATIVE:
        return None
    return Route(parts[3], fmt)


def supported_version(value: object) -> bool:
    """Whether ``value`` is payload version 1 as JSON means it (``true`` is not a number)."""
    return value == 1 and not isinstance(value, bool)


def parse_timestamp(value: object) -> datetime:
    """A time as the contract writes it (:data:`TIMESTAMP_PATTERN`), or ValueError saying why.

    The one parser of times for every format: a number (a Unix time), a string of digits, a
    time without seconds or without a UTC offset is refused, never guessed at.
    """
    if not isinstance(value, str):
        msg = "must be a string: ISO 8601 date and time with a UTC offset, not a number"
        raise ValueError(msg)  # a ValueError, which pydantic reports as a validation error
    if _TIMESTAMP_FULL.fullmatch(value) is None:  # refused: say why
        if _WITHOUT_ZONE.fullmatch(value) is None:
            msg = "not an ISO 8601 date and time YYYY-MM-DDThh:mm:ss[.f](Z|+hh:mm)"
            raise ValueError(msg)
        msg = "a time without a UTC offset"
        raise ValueError(msg)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        msg = "not a valid date and time"
        raise ValueError(msg) from None


def _timestamp(value: object) -> object:
    # A datetime comes only from Python callers; JSON always gives the string.
    return value if isinstance(value, datetime) else parse_timestamp(value)


def _version(value: object) -> object:
    if not supported_version(value):
        msg = "must be 1 (the payload version this service speaks)"
        raise ValueError(msg)
    return value


#: Strict: what the JSON Schema says is what the worker takes ("72" is no number, ``true`` no 1).
_Model = ConfigDict(extra="forbid", frozen=True, strict=True)
Version = Annotated[
    Literal[1],
    BeforeValidator(_version),
    Field(description="Payload version; this document describes 1."),
]
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_timestamp),
    Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN}),
]
SentAt = Annotated[
    Timestamp | None,
    Field(description="When the gateway sent this message (for latency metrics)."),
]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN, description="The device's id.")]
MessageId = Annotated[
    str | None,
    Field(
        default=None,
        max_length=128,
        description="Optional id the gateway gives this reading; kept for tracing.",
    ),
]
Pulse = Annotated[
    FiniteFloat | None, Field(default=None, description="Pulse rate in beats per minute.")
]
_QUALITY_NAMES = frozenset(q.value for q in Quality)


def _quality_name(value: object) -> Quality:
    # A name becomes its flag, from JSON and from Python alike (the enum itself is strict).
    if not isinstance(value, str) or value not in _QUALITY_NAMES:
        msg = "not the name of a quality flag this service knows (docs/protocol.md lists them)"
        raise ValueError(msg)
    return Quality(value)


#: One measurement-quality flag by its name (:class:`homemonitor.contract.readings.Quality`).
QualityName = Annotated[
    Quality,
    BeforeValidator(_quality_name),
    WithJsonSchema({"type": "string", "enum": [q.value for q in Quality]}),
]


class _ReadingIn(BaseModel):
    model_config = _Model

    device_id: DeviceId
    measured_at: Timestamp = Field(
        description="When the device measured, with a UTC offset (ISO 8601)."
    )
    message_id: MessageId = None
    quality: list[QualityName] = Field(
        default_factory=list,
        max_length=len(Quality),
        description=(
            "What the device noticed about this measurement (body movement, a loose cuff, "
            "a poor signal, ...); absent or empty when it noticed nothing."
        ),
    )


class BloodPressureIn(_ReadingIn):
    """A blood-pressure measurement (cuff)."""

    metric: Literal["blood_pressure"]
    unit: Literal["mmHg", "kPa"] = "mmHg"
    systolic: FiniteFloat
    diastolic: FiniteFloat
    mean: FiniteFloat | None = Field(default=None, description="Mean arterial pressure.")
    pulse: Pulse = None


class BodyWeightIn(_ReadingIn):
    """A body-weight measurement (scale)."""

    metric: Literal["body_weight"]
    unit: Literal["kg", "lb"] = "kg"
    value: FiniteFloat


class Spo2In(_ReadingIn):
    """An oxygen-saturation measurement (pulse oximeter)."""

    metric: Literal["spo2"]
    unit: Literal["%"] = "%"
    value: FiniteFloat
    pulse: Pulse = None


class HeartRateIn(_ReadingIn):
    """A heart-rate measurement."""

    metric: Literal["heart_rate"]
    unit: Literal["/min", "bpm"] = "/min"
    value: FiniteFloat


ReadingIn = Annotated[
    BloodPressureIn | BodyWeightIn | Spo2In | HeartRateIn, Field(discriminator="metric")
]


def _no_default(schema: dict[str, Any]) -> None:
    """Publish no ``default: null`` for a field that may be absent but never null."""
    schema.pop("default", None)


def one_reading_or_batch(given: dict[str, Any]) -> None:
    """A native envelope's rule: exactly one of ``reading`` (one) or ``readings`` (a batch).

    ``given`` holds the envelope's fields as the payload gave them (a key only when the
    payload has it). Raises ValueError, which pydantic reports as a validation error of the
    whole envelope. Both native envelope models apply it, so the rule is the same whether
    the published :class:`Envelope` or the decoder's item-by-item head judges a payload.
    """
    present = [key for key in ("reading", "readings") if key in given]
    if len(present) != 1:
        msg = "give exactly one of 'reading' (one) or 'readings' (a batch)"
        raise ValueError(msg)
    if given[present[0]] is None:
        msg = f"'{present[0]}' must not be null"
        raise ValueError(msg)


class OneReadingOrBatch(BaseModel):
    """An envelope judged by :func:`one_reading_or_batch` before its fields (the decoder's head).

    Before its fields, so that the rule's message comes first whatever else is wrong.
    """

    @model_validator(mode="before")
    @classmethod
    def _one_of_reading_or_readings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            one_reading_or_batch(data)
        return data


class Envelope(BaseModel):
    """A native payload: one reading (``reading``) or a batch (``readings``), version 1."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="homemonitor native reading payload, version 1",
        json_schema_extra={
            "oneOf": [{"required": ["reading"]}, {"required": ["readings"]}],
            "examples": [
                {
                    "v": 1,
                    "readings": [
                        {
                            "device_id": "cuff-0001",
                            "metric": "blood_pressure",
                            "measured_at": "2026-11-22T07:31:00+01:00",
                            "unit": "mmHg",
                            "systolic": 128,
                            "diastolic": 82,
                            "pulse": 71,
                            "message_id": "gw-7f3a-000123",
                        }
                    ],
                }
            ],
        },
    )

    v: Version
    sent_at: SentAt = None
    # Absent, never null: a null would be a message that carries nothing (it is refused).
    reading: ReadingIn | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    readings: (
        Annotated[list[ReadingIn], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]
        | SkipJsonSchema[None]
    ) = Field(default=None, json_schema_extra=_no_default)

    @model_validator(mode="after")
    def _one_of_reading_or_readings(self) -> Self:
        # After the fields, unlike OneReadingOrBatch: a "before" validator would make
        # pydantic build the whole payload as Python objects and validate those, instead
        # of validating the JSON directly (about a third of the decoder's time). It takes
        # exactly the same payloads: the fields a payload gave are model_fields_set.
        one_reading_or_batch({key: getattr(self, key) for key in self.model_fields_set})
        return self

    def items(self) -> list[BloodPressureIn | BodyWeightIn | Spo2In | HeartRateIn]:
        """The readings in this payload, in the order they were sent."""
        if self.reading is not None:
            return [self.reading]
        return list(self.readings or [])


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of the native payload."""
    return Envelope.model_json_schema()
