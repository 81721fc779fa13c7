"""Named clinical scenarios and device faults, and a deterministic run of one patient.

A scenario is a :class:`Course`: ramps that shift vital signs from an onset on. A run
(:func:`run_patient`) schedules the patient's measurements over simulated time, samples
:class:`~homemonitor_devices.physiology.Physiology`, applies the patient's device faults and
encodes each measurement in the gateway's payload format. The same seed gives a
byte-identical sequence of :class:`Publication` s.

Scenarios:

* ``stable``: baseline, rhythm and noise only.
* ``heart_failure_decompensation``: weight rises (0.3-0.5 kg/day) from the onset, heart
  rate creeps up, and SpO2 dips later.
* ``hypertensive_crisis``: systolic (and diastolic) climb past 180 over a few days.
* ``copd_exacerbation``: SpO2 drifts below 90 while heart rate rises.

Faults (:class:`Fault`): ``clock_skew``, ``duplicate_sends``, ``offline_backlog``,
``device_moved`` (expressed by time-bounded :class:`Binding` s, see
:func:`homemonitor_devices.simulate.demo_clinic`) and ``garbage``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta

from homemonitor.contract.protocol import PayloadFormat, readings_topic
from homemonitor.contract.readings import Quantity
from homemonitor_devices.encoders import encode, encode_native
from homemonitor_devices.measurement import HOME_TZ, DeviceKind, Measurement
from homemonitor_devices.physiology import Baseline, Physiology

_DAY = timedelta(days=1)


class Fault(enum.StrEnum):
    """Ways a home device or gateway misbehaves."""

    CLOCK_SKEW = "clock_skew"  # one device's clock runs hours ahead
    DUPLICATE_SENDS = "duplicate_sends"  # some messages are published twice
    OFFLINE_BACKLOG = "offline_backlog"  # the gateway is offline for hours, then catches up
    DEVICE_MOVED = "device_moved"  # a device is re-bound to another patient mid-run
    GARBAGE = "garbage"  # random bytes and truncated JSON on the gateway's topics
    #: halfway through, the patient stops using one device (the scale, if any) for good;
    #: the gateway goes on sending the others' readings: a missing-data alert, not a hub's
    STOPS_MEASURING = "stops_measuring"


# --- clinical courses -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Ramp:
    """A linear shift of one quantity from ``begins`` on, ``per_day``, up to ``limit``."""

    quantity: Quantity
    begins: datetime
    per_day: float
    limit: float

    def offset(self, at: datetime) -> float:
        """The shift at ``at`` (0 before ``begins``; never beyond ``limit`` in size)."""
        days = (at - self.begins) / _DAY
        if days <= 0:
            return 0.0
        return math.copysign(min(abs(self.per_day) * days, abs(self.limit)), self.per_day)


@dataclasses.dataclass(frozen=True, slots=True)
class Course:
    """A named clinical scenario: the ramps that shift a patient's vital signs."""

    scenario: str
    onset: datetime | None = None
    ramps: tuple[Ramp, ...] = ()

    def shift(self, at: datetime) -> dict[Quantity, float]:
        """How far each quantity is from baseline at ``at`` because of the scenario."""
        shift: dict[Quantity, float] = {}
        for ramp in self.ramps:
            shift[ramp.quantity] = shift.get(ramp.quantity, 0.0) + ramp.offset(at)
        return shift


def stable(onset: datetime | None = None) -> Course:
    """No deterioration: baseline, circadian rhythm, drift and noise only."""
    return Course("stable", onset)


def heart_failure_decompensation(
    onset: datetime,
    *,
    weight_per_day: float = 0.4,
    spo2_after: timedelta = timedelta(days=3),
    spo2_per_day: float = -1.5,
) -> Course:
    """Fluid retention: weight rises from ``onset``, SpO2 dips from ``onset + spo2_after``."""
    return Course(
        "heart_failure_decompensation",
        onset,
        (
            Ramp(Quantity.BODY_WEIGHT, onset, weight_per_day, 6.0),
            Ramp(Quantity.HEART_RATE, onset, 2.0, 20.0),
            Ramp(Quantity.SPO2, onset + spo2_after, spo2_per_day, 9.0),
        ),
    )


def hypertensive_crisis(onset: datetime, *, systolic_per_day: float = 12.0) -> Course:
    """Blood pressure climbs from ``onset``: systolic past 180, diastolic past 110."""
    return Course(
        "hypertensive_crisis",
        onset,
        (
            Ramp(Quantity.SYSTOLIC, onset, systolic_per_day, 60.0),
            Ramp(Quantity.DIASTOLIC, onset, systolic_per_day / 2, 30.0),
            Ramp(Quantity.HEART_RATE, onset, 2.0, 15.0),
        ),
    )


def copd_exacerbation(
    onset: datetime, *, spo2_per_day: float = -1.5, heart_rate_per_day: float = 4.0
) -> Course:
    """SpO2 drifts down from ``onset`` (below 90 within days) while heart rate rises."""
    return Course(
        "copd_exacerbation",
        onset,
        (
            Ramp(Quantity.SPO2, onset, spo2_per_day, 10.0),
            Ramp(Quantity.HEART_RATE, onset, heart_rate_per_day, 25.0),
        ),
    )


#: Scenario name -> how to build its course from an onset.
SCENARIOS: Mapping[str, Callable[[datetime], Course]] = {
    "stable": stable,
    "heart_failure_decompensation": heart_failure_decompensation,
    "hypertensive_crisis": hypertensive_crisis,
    "copd_exacerbation": copd_exacerbation,
}


# --- who measures what, when ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """A device in a patient's home from ``valid_from`` until ``until`` (None: open)."""

    device_id: str
    kind: DeviceKind
    valid_from: datetime
    until: datetime | None = None

    def active(self, at: datetime) -> bool:
        """Whether the device is with this patient at ``at``."""
        return self.valid_from <= at and (self.until is None or at < self.until)


@dataclasses.dataclass(frozen=True, slots=True)
class PatientPlan:
    """Everything that decides one simulated patient's stream of payloads."""

    patient_id: str
    gateway_id: str
    condition: str
    course: Course
    baseline: Baseline
    devices: tuple[Binding, ...]
    payload_format: PayloadFormat = PayloadFormat.NATIVE
    faults: frozenset[Fault] = frozenset()

    @property
    def scenario(self) -> str:
        """The name of the patient's clinical scenario."""
        return self.course.scenario


#: When each kind of device is used: (local time, jitter in minutes either side).
SCHEDULE: Mapping[DeviceKind, tuple[tuple[time, int], ...]] = {
    DeviceKind.SCALE: ((time(7, 10), 25),),
    DeviceKind.BLOOD_PRESSURE_CUFF: ((time(7, 40), 30), (time(19, 45), 60)),
    DeviceKind.PULSE_OXIMETER: ((time(8, 0), 30), (time(13, 0), 60), (time(19, 30), 60)),
    DeviceKind.HEART_RATE_MONITOR: (
        (time(9, 0), 20),
        (time(13, 0), 20),
        (time(17, 0), 20),
        (time(21, 0), 20),
    ),
}
#: Chance that a patient skips a scheduled measurement.
SKIP_PROBABILITY = 0.08


@dataclasses.dataclass(frozen=True, slots=True)
class Publication:
    """One MQTT message a patient's gateway hands on, at simulated time ``publish_at``.

    ``measurement`` is None for garbage; ``duplicate`` marks the second send of a message.
    """

    publish_at: datetime
    gateway_id: str
    format: PayloadFormat
    payload: bytes
    measurement: Measurement | None = None
    duplicate: bool = False

    @property
    def topic(self) -> str:
        """The topic this message goes to."""
        return readings_topic(self.gateway_id, self.format)


@dataclasses.dataclass(frozen=True, slots=True)
class FaultSettings:
    """How strongly each fault shows when a patient has it."""

    clock_skew_hours: tuple[float, float] = (2.0, 6.0)
    duplicate_probability: float = 0.3
    offline_hours: tuple[float, float] = (6.0, 14.0)
    garbage_per_day: float = 1.0


def _rng(seed: int | str, patient_id: str, stream: str) -> random.Random:
    """An independent, reproducible random stream per patient and purpose."""
    return random.Random(f"{seed}/{patient_id}/{stream}")


def measurement_times(
    plan: PatientPlan, start: datetime, end: datetime, rng: random.Random
) -> list[tuple[datetime, Binding]]:
    """When the patient uses which device within ``[start, end)``, in time order (UTC)."""
    events: list[tuple[datetime, int, Binding]] = []
    first: date = start.astimezone(HOME_TZ).date() - _DAY
    last: date = end.astimezone(HOME_TZ).date()
    day = first
    while day <= last:
        for order, binding in enumerate(plan.devices):
            for slot, jitter in SCHEDULE[binding.kind]:
                offset = rng.uniform(-jitter, jitter)
                skip = rng.random() < SKIP_PROBABILITY
                local = datetime.combine(day, slot, HOME_TZ) + timedelta(minutes=offset)
                at = local.replace(microsecond=0)
                if skip or not start <= at < end or not binding.active(at):
                    continue
                events.append((at, order, binding))
        day += _DAY
    events.sort(key=lambda e: (e[0], e[1]))
    return [(at, binding) for at, _, binding in events]


def stops_measuring(plan: PatientPlan, start: datetime, end: datetime) -> tuple[str, datetime]:
    """The device a patient with :attr:`Fault.STOPS_MEASURING` stops using, and when."""
    kinds = [b.kind for b in plan.devices]
    device = plan.devices[kinds.index(DeviceKind.SCALE) if DeviceKind.SCALE in kinds else 0]
    return device.device_id, start + (end - start) / 2


def run_patient(
    plan: PatientPlan,
    *,
    start: datetime,
    end: datetime,
    seed: int | str,
    faults: FaultSettings | None = None,
) -> list[Publication]:
    """The messages ``plan``'s gateway publishes from ``start`` to ``end``, by publish time.

    Deterministic for ``seed``: the same arguments give byte-identical payloads in the same
    order. Measurement times come from one random stream, physiology from another and
    faults from a third, so changing one does not reshuffle the others.
    """
    settings = faults or FaultSettings()
    times = measurement_times(plan, start, end, _rng(seed, plan.patient_id, "schedule"))
    if Fault.STOPS_MEASURING in plan.faults:
        stopped, at = stops_measuring(plan, start, end)
        times = [(t, b) for t, b in times if b.device_id != stopped or t < at]
    body = Physiology(plan.baseline, _rng(seed, plan.patient_id, "physiology"))
    chaos = _rng(seed, plan.patient_id, "faults")

    skewed: str | None = None
    skew = timedelta(0)
    if Fault.CLOCK_SKEW in plan.faults and plan.devices:
        skewed = chaos.choice(plan.devices).device_id
        skew = timedelta(hours=round(chaos.uniform(*settings.clock_skew_hours), 2))
    offline: tuple[datetime, datetime] | None = None
    if Fault.OFFLINE_BACKLOG in plan.faults:
        span = end - start
        went = start + span * chaos.uniform(0.2, 0.6)
        offline = (went, min(end, went + timedelta(hours=chaos.uniform(*settings.offline_hours))))

    publications: list[Publication] = []
    for number, (at, binding) in enumerate(times, start=1):
        values = body.measure(binding.kind.metric, at, plan.course.shift(at))
        device_clock = at + skew if binding.device_id == skewed else at
        measurement = Measurement(
            device_id=binding.device_id,
            kind=binding.kind,
            measured_at=device_clock.astimezone(HOME_TZ),
            received_at=at.astimezone(HOME_TZ),
            values=values,
            message_id=f"{plan.gateway_id}-{number:06d}",
        )
        fmt, payload = encode(measurement, plan.payload_format)
        publish_at = at + timedelta(seconds=round(chaos.uniform(1.0, 20.0), 3))
        if offline is not None and offline[0] <= publish_at < offline[1]:
            publish_at = offline[1]
        publications.append(Publication(publish_at, plan.gateway_id, fmt, payload, measurement))
        if Fault.DUPLICATE_SENDS in plan.faults and chaos.random() < settings.duplicate_probability:
            again = publish_at + timedelta(seconds=2)
            publications.append(
                Publication(again, plan.gateway_id, fmt, payload, measurement, duplicate=True)
            )
    if Fault.GARBAGE in plan.faults:
        publications += _garbage(
            plan, start=start, end=end, rng=chaos, settings=settings, genuine=publications
        )
    publications.sort(key=lambda p: p.publish_at)  # stable: equal times keep their order
    return publications


def _garbage(
    plan: PatientPlan,
    *,
    start: datetime,
    end: datetime,
    rng: random.Random,
    settings: FaultSettings,
    genuine: list[Publication],
) -> list[Publication]:
    """Random bytes on the gateway's own topic, and truncated native JSON."""
    count = max(1, round((end - start) / _DAY * settings.garbage_per_day))
    junk: list[Publication] = []
    for _ in range(count):
        at = start + (end - start) * rng.random()
        at = at.replace(microsecond=0)
        if genuine and rng.random() < 0.5:
            source = rng.choice(genuine).measurement
            assert source is not None  # genuine publications carry their measurement
            _, whole = encode_native(source)
            payload = whole[: rng.randrange(1, len(whole) - 1)]
            junk.append(Publication(at, plan.gateway_id, PayloadFormat.NATIVE, payload))
        else:
            payload = rng.randbytes(rng.randrange(1, 64))
            junk.append(Publication(at, plan.gateway_id, plan.payload_format, payload))
    return junk
