"""The normalised reading every payload format decodes into, and why input is rejected.

A :class:`Reading` is what the rest of the pipeline sees, whatever the gateway sent
(native JSON, a FHIR Observation or a raw Bluetooth measurement). Values are in canonical
units: mmHg for pressures, kg for weight, percent for SpO2, beats per minute for rates.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

#: Longest text kept from a payload in an id or topic column, and in a rejection's detail.
ID_LIMIT = 200
DETAIL_LIMIT = 500


def safe_text(text: str, limit: int) -> str:
    r"""``text``, taken from a payload, as a text column can hold it and a person can read it.

    PostgreSQL ``text`` cannot hold U+0000 and asyncpg refuses lone surrogates, so every
    string copied from a payload into a row goes through here (:class:`Reading`,
    :class:`Rejection` and the quarantine's topic do it themselves). Each character that
    ``str.isprintable`` refuses -- control and format characters, lone surrogates, line and
    paragraph separators, spaces other than U+0020, unassigned code points -- becomes a
    visible escape as ``repr`` writes it (``\x00``, ``\u200b``, ``\ud800``); the result is
    cut to ``limit`` characters, the last of them "…", when it is longer. It is for
    reading, not reversible (a payload may itself contain a backslash): the raw bytes stay
    in the quarantine's ``payload`` column.

    >>> safe_text("cuff\x00-1\ud800", 64), safe_text("x" * 10, 5)
    ('cuff\\x00-1\\ud800', 'xxxx…')
    """
    if len(text) <= limit and text.isprintable():
        return text  # nearly always: one pass in C
    pieces: list[str] = []
    size, last = 0, len(text) - 1
    for i, char in enumerate(text):
        piece = char if char.isprintable() else _escape(char)
        size += len(piece)
        if size > limit or (size == limit and i < last):  # no room left for the ellipsis
            return "".join(pieces) + "…"
        pieces.append(piece)
    return "".join(pieces)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class Metric(enum.StrEnum):
    """What kind of measurement a reading is."""

    BLOOD_PRESSURE = "blood_pressure"
    BODY_WEIGHT = "body_weight"
    SPO2 = "spo2"
    HEART_RATE = "heart_rate"


class Quantity(enum.StrEnum):
    """One measured number; care-plan thresholds are set per quantity.

    A blood-pressure reading carries systolic, diastolic and optionally mean arterial
    pressure and pulse rate; an oximeter reading carries SpO2 and optionally pulse rate.
    Pulse rate and heart rate are the same quantity (beats per minute).
    """

    SYSTOLIC = "systolic"
    DIASTOLIC = "diastolic"
    MEAN_ARTERIAL = "mean_arterial"
    HEART_RATE = "heart_rate"
    BODY_WEIGHT = "body_weight"
    SPO2 = "spo2"

    @property
    def unit(self) -> str:
        """The canonical unit values of this quantity are stored in."""
        return _CANONICAL_UNIT[self]


_CANONICAL_UNIT = {
    Quantity.SYSTOLIC: "mmHg",
    Quantity.DIASTOLIC: "mmHg",
    Quantity.MEAN_ARTERIAL: "mmHg",
    Quantity.HEART_RATE: "/min",
    Quantity.BODY_WEIGHT: "kg",
    Quantity.SPO2: "%",
}

#: The quantities each metric must carry, and those it may carry.
REQUIRED: dict[Metric, tuple[Quantity, ...]] = {
    Metric.BLOOD_PRESSURE: (Quantity.SYSTOLIC, Quantity.DIASTOLIC),
    Metric.BODY_WEIGHT: (Quantity.BODY_WEIGHT,),
    Metric.SPO2: (Quantity.SPO2,),
    Metric.HEART_RATE: (Quantity.HEART_RATE,),
}
OPTIONAL: dict[Metric, tuple[Quantity, ...]] = {
    Metric.BLOOD_PRESSURE: (Quantity.MEAN_ARTERIAL, Quantity.HEART_RATE),
    Metric.BODY_WEIGHT: (),
    Metric.SPO2: (Quantity.HEART_RATE,),
    Metric.HEART_RATE: (),
}

#: Quantities in the order of the storage columns.
QUANTITIES: tuple[Quantity, ...] = tuple(Quantity)


class Flag(enum.StrEnum):
    """Why a stored reading is not treated as current."""

    FUTURE = "clock_future"
    STALE = "clock_stale"


class Quality(enum.StrEnum):
    """What the measuring device itself noticed about one measurement. Bounded.

    A quality flag qualifies a real value: the device measured, and says the value may be
    off (the patient moved, the cuff was loose, the signal was poor). A device that says
    there is no value at all (calibration, a disconnected sensor, NaN) has its reading
    rejected instead. How a care plan treats a flagged reading is the plan's business;
    these flags only say what the device said. Not to be confused with :class:`Flag`, which
    says the service's clock check found the reading not current.

    The Bluetooth sources are the Measurement Status of the Blood Pressure Measurement
    (Blood Pressure Service 1.1.1) and the Measurement Status and Device and Sensor Status
    of the PLX Spot-Check and Continuous Measurements (Pulse Oximeter Service 1.0.1), whose
    bits the GATT Specification Supplement defines; ``docs/bluetooth.md`` maps each bit.
    """

    # Blood pressure cuff (Measurement Status bits 0-5)
    BODY_MOVEMENT = "body_movement"  # body movement during measurement
    CUFF_LOOSE = "cuff_loose"  # cuff fit too loose
    IRREGULAR_PULSE = "irregular_pulse"  # irregular pulse detected
    PULSE_RATE_OUT_OF_RANGE = "pulse_rate_out_of_range"  # above the upper or below the lower limit
    IMPROPER_POSITION = "improper_position"  # improper measurement position
    # Pulse oximeter: PLX Measurement Status
    EARLY_ESTIMATE = "early_estimate"  # early estimated data, not yet settled
    QUESTIONABLE_MEASUREMENT = "questionable_measurement"  # questionable measurement detected
    # Pulse oximeter: PLX Device and Sensor Status
    SIGNAL_PROCESSING_IRREGULARITY = "signal_processing_irregularity"
    INADEQUATE_SIGNAL = "inadequate_signal"
    POOR_SIGNAL = "poor_signal"
    LOW_PERFUSION = "low_perfusion"
    ERRATIC_SIGNAL = "erratic_signal"
    NONPULSATILE_SIGNAL = "nonpulsatile_signal"
    QUESTIONABLE_PULSE = "questionable_pulse"
    SENSOR_INTERFERENCE = "sensor_interference"
    SENSOR_DISPLACED = "sensor_displaced"


#: No quality flags: the default of every reading (shared; a frozenset is never changed).
NO_QUALITY: frozenset[Quality] = frozenset()


@dataclasses.dataclass(slots=True)
class Reading:
    """One measurement of one device, normalised to canonical units.

    ``values`` maps each quantity the device reported to its value in the quantity's
    canonical unit; it never holds NaN or infinity (decoders reject those). ``flags`` are
    the service's clock findings, ``quality`` what the device said of the measurement; both
    are stored with it. ``device_id``
    and ``message_id`` come from the payload and are made safe for storage here
    (:func:`safe_text`); decoders check the device id against its pattern before.
    """

    device_id: str
    metric: Metric
    measured_at: datetime
    values: dict[Quantity, float]
    message_id: str | None = None
    #: Which payload format it came in: "json", "fhir" or "ble".
    source: str = "json"
    #: Position of this reading in its message (0 for a single reading).
    index: int = 0
    flags: list[Flag] = dataclasses.field(default_factory=list)
    #: What the device said about this measurement (:class:`Quality`); usually none.
    quality: frozenset[Quality] = NO_QUALITY

    def __post_init__(self) -> None:
        # safe_text's fast path inlined: this runs for every reading
        device, message = self.device_id, self.message_id
        if len(device) > ID_LIMIT or not device.isprintable():
            self.device_id = safe_text(device, ID_LIMIT)
        if message is not None and (len(message) > ID_LIMIT or not message.isprintable()):
            self.message_id = safe_text(message, ID_LIMIT)

    def value(self, quantity: Quantity) -> float | None:
        """The value of ``quantity``, or None when the reading does not carry it."""
        return self.values.get(quantity)


class Reason(enum.StrEnum):
    """Why a message or one reading in it was quarantined. Bounded: used as a metric label."""

    MALFORMED = "malformed"  # not parseable as the format the topic names
    OVERSIZED = "oversized"  # payload larger than the configured limit
    UNSUPPORTED_VERSION = "unsupported_version"  # envelope version we do not speak
    UNKNOWN_TOPIC = "unknown_topic"  # topic outside the documented layout
    UNKNOWN_METRIC = "unknown_metric"  # a metric, code or characteristic we do not know
    UNKNOWN_UNIT = "unknown_unit"  # a unit we cannot convert
    MISSING_VALUE = "missing_value"  # no usable value (absent, special value, members only)
    IMPLAUSIBLE = "implausible"  # outside physiological limits
    NO_TIMESTAMP = "no_timestamp"  # no time, a time without a zone or time of day, or none in UTC
    BEYOND_RETENTION = "beyond_retention"  # measured longer ago than readings are kept
    UNKNOWN_GATEWAY = "unknown_gateway"  # the publishing gateway is not in the registry
    UNKNOWN_DEVICE = "unknown_device"  # device not in the registry
    FOREIGN_DEVICE = "foreign_device"  # device not paired with the publishing gateway then
    UNBOUND_DEVICE = "unbound_device"  # device known, but bound to no patient at that time
    STORAGE_REJECTED = "storage_rejected"  # the database refused the row
    REPEATED_FAILURE = "repeated_failure"  # delivered too often without being stored; not decoded


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """Why one message, or one reading inside it, was not stored.

    ``index`` is the position of the reading inside a batch payload, or None when the
    whole message was rejected. ``detail`` is for a person reading the quarantine; it
    names fields and limits, never patient identifiers. Both texts may hold what a payload
    said (a key, a code, a device id) and are made safe for storage here (:func:`safe_text`),
    whoever builds the rejection.
    """

    reason: Reason
    detail: str
    index: int | None = None
    device_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", safe_text(self.detail, DETAIL_LIMIT))  # frozen
        if self.device_id is not None:
            object.__setattr__(self, "device_id", safe_text(self.device_id, ID_LIMIT))


@dataclasses.dataclass(slots=True)
class Decoded:
    """What a decoder made of one message: readings to validate, and what it refused.

    ``sent_at`` is the gateway's send time when the payload states one (used only for
    the publish-to-stored latency metric).
    """

    readings: list[Reading] = dataclasses.field(default_factory=list)
    rejections: list[Rejection] = dataclasses.field(default_factory=list)
    sent_at: datetime | None = None
