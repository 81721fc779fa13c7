"""A seeded cohort of home-monitored patients with ground truth: what the evaluation scores.

:func:`generate_cohort` draws patients with heart failure, hypertension or COPD (about a
third each), their devices and usual values (:func:`~homemonitor_devices.simulate.baseline_for`,
:func:`~homemonitor_devices.simulate.device_kinds_for`), and for some of them one or two
*events* with a prodrome before it; the others never deteriorate. :meth:`Cohort.readings`
plays one patient's measurements through :class:`~homemonitor_devices.physiology.Physiology`
on the schedule of :func:`~homemonitor_devices.scenarios.measurement_times`, with what
makes home data hard: day-to-day variation, measurement noise, artefacts with a normal
retake minutes later (some flagged by the device), days and weeks without readings
(adherence, holidays, admissions) and device swaps (a new scale has its own offset).

Every number comes from the literature where there is one, and is named here with its
source (``docs/evaluation.md`` lists them); where there is none, it says so. Nothing is
chosen to make a rule win: the evaluation also runs on seeds nobody tuned anything on.

Ground truth (:class:`Event`): the time of a heart-failure decompensation (admission), a
COPD exacerbation (start of treatment) or the onset of uncontrolled blood pressure (the
end of a rise that needs a treatment change), per patient.

>>> cohort = generate_cohort(6, days=40, seed=3)
>>> [p.condition for p in cohort.patients]
['heart_failure', 'copd', 'hypertension', 'copd', 'heart_failure', 'hypertension']
>>> readings = cohort.readings(cohort.patients[1])
>>> readings == cohort.readings(cohort.patients[1])  # deterministic per seed
True
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta

from homemonitor.contract.readings import Metric, Quality, Quantity
from homemonitor_devices.measurement import HOME_TZ, DeviceKind
from homemonitor_devices.physiology import Baseline, Physiology, Variation
from homemonitor_devices.scenarios import Binding, Course, PatientPlan, Ramp, measurement_times
from homemonitor_devices.simulate import (
    COPD,
    HEART_FAILURE,
    HYPERTENSION,
    baseline_for,
    device_kinds_for,
)

__all__ = [
    "COHORT_VARIATION",
    "CONDITIONS",
    "Cohort",
    "CohortPatient",
    "CohortReading",
    "Event",
    "EventKind",
    "Gap",
    "generate_cohort",
]

_DAY = timedelta(days=1)
_MINUTE = timedelta(minutes=1)
CONDITIONS: tuple[str, ...] = (HEART_FAILURE, HYPERTENSION, COPD)
#: The first day of the default cohort (a Monday; fixed, so a seed means the same data).
DEFAULT_START = datetime(2026, 1, 5, tzinfo=HOME_TZ).astimezone(UTC)

# --- variability ----------------------------------------------------------------------------
#: Day-to-day variation and measurement noise from the literature (the demo's
#: :data:`~homemonitor_devices.physiology.VARIATION` is gentler: it was chosen so a
#: stable patient rarely crosses a threshold, which is what the evaluation must not assume).
#:
#: * Home blood pressure: within-person SD of morning home readings 8.6/5.8 mmHg
#:   systolic/diastolic over four weeks (Ohasama, Kato et al. 2010); here sqrt(6.5² + 5²)
#:   = 8.2 and sqrt(4.5² + 3.5²) = 5.7, mostly day to day (time constant one day).
#: * Pulse and SpO2: stable COPD, SD about 5 /min and 1 % (Hurst et al., BMC Pulm Med
#:   2010); here sqrt(4² + 3²) = 5 and sqrt(0.7² + 0.7²) = 1.0 before rounding.
#: * Weight: about a third of day-to-day changes are 0.5 kg or more and 6 % 1 kg or more
#:   in young adults (as summarised from Edholm et al.), i.e. SD of a daily change about
#:   0.5 kg; here 0.57 kg (drift 0.6 kg with a 3-day time constant, noise 0.25 kg).
COHORT_VARIATION: Mapping[Quantity, Variation] = {
    Quantity.SYSTOLIC: Variation(6.0, 10.0, 6.5, 1.0, 5.0),
    Quantity.DIASTOLIC: Variation(4.0, 10.0, 4.5, 1.0, 3.5),
    Quantity.HEART_RATE: Variation(5.0, 15.0, 4.0, 1.5, 3.0),
    Quantity.BODY_WEIGHT: Variation(0.5, 20.0, 0.6, 3.0, 0.25),
    Quantity.SPO2: Variation(0.3, 14.0, 0.7, 1.0, 0.7),
}
#: People differ in how variable they are (Ohasama: SD of the SDs about a third of the
#: mean); each patient's drift and noise are scaled by a factor drawn from this range.
VARIABILITY_RANGE = (0.7, 1.4)
#: Weight is higher early in the week: about 0.35 % of body weight from weekend to
#: mid-week (Orsama et al., Obes Facts 2014). Peak-to-trough, peaking on Monday.
WEEKLY_WEIGHT_SWING = 0.0035


# --- ground truth -----------------------------------------------------------------------------
class EventKind(enum.StrEnum):
    """What happened to a patient: the event a rule set should see coming."""

    HF_DECOMPENSATION = "hf_decompensation"
    COPD_EXACERBATION = "copd_exacerbation"
    UNCONTROLLED_BP = "uncontrolled_bp"


EVENT_OF: Mapping[str, EventKind] = {
    HEART_FAILURE: EventKind.HF_DECOMPENSATION,
    COPD: EventKind.COPD_EXACERBATION,
    HYPERTENSION: EventKind.UNCONTROLLED_BP,
}
#: Share of each condition's patients with at least one event during the run, and of those
#: the share with a second one (COPD only). Enriched above population rates so that there
#: are enough events to score (COPD: 0.85-2.0 exacerbations a year by GOLD stage, Hurst et
#: al., NEJM 2010; heart failure after an admission: about half readmitted within 180
#: days, Tele-HF, Chaudhry et al., NEJM 2010). PPV depends on it; specificity, detection
#: and alerts per patient-week do not.
DETERIORATING: Mapping[str, tuple[float, float]] = {
    HEART_FAILURE: (0.4, 0.0),
    HYPERTENSION: (0.35, 0.0),
    COPD: (0.5, 0.3),
}
#: Events fall at least this long after the start (a full 14-day prodrome window and a
#: week of history before it are observed), and at least a day before the end.
FIRST_EVENT_AFTER = timedelta(days=21)
#: Two events of one patient are at least this far apart.
EVENT_SPACING = timedelta(days=35)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One deterioration: its kind, its time (ground truth) and when its prodrome began."""

    kind: EventKind
    at: datetime
    onset: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """Days without any readings: ``reason`` is ``holiday`` or ``admission``."""

    start: datetime
    end: datetime
    reason: str

    def covers(self, at: datetime) -> bool:
        """Whether ``at`` lies in the gap."""
        return self.start <= at < self.end


@dataclasses.dataclass(frozen=True, slots=True)
class CohortPatient:
    """One simulated patient: who, which devices, what happens, and when nothing is measured.

    ``offsets`` are each device's bias in its main quantity (kg for a scale, % for an
    oximeter): a swapped device reads differently from the one before. ``adherence`` is
    the share of days the patient measures at all; ``variability`` scales the patient's
    day-to-day variation and noise.
    """

    patient_id: str
    condition: str
    baseline: Baseline
    devices: tuple[Binding, ...]
    offsets: Mapping[str, float]
    events: tuple[Event, ...]
    gaps: tuple[Gap, ...]
    course: Course
    adherence: float
    variability: float

    @property
    def kinds(self) -> set[DeviceKind]:
        """The kinds of device the patient measures with."""
        return {binding.kind for binding in self.devices}

    def shift(self, at: datetime) -> dict[Quantity, float]:
        """How far each quantity is from baseline at ``at``: events and the weekly rhythm."""
        shift = self.course.shift(at)
        local = at.astimezone(HOME_TZ)
        week = (local.weekday() + local.hour / 24) / 7  # 0 at Monday 00:00
        swing = WEEKLY_WEIGHT_SWING * self.baseline.body_weight / 2
        shift[Quantity.BODY_WEIGHT] = shift.get(Quantity.BODY_WEIGHT, 0.0) + swing * math.cos(
            2 * math.pi * week
        )
        return shift


@dataclasses.dataclass(frozen=True, slots=True)
class CohortReading:
    """One reading as the service would store it (``measured_at`` aware, UTC).

    ``quality`` holds what the device said about the measurement
    (:class:`~homemonitor.contract.readings.Quality`: ``cuff_loose``, ``low_perfusion``, ...).
    ``artefact`` is ground truth only (the value is wrong), never shown to a rule.
    """

    measured_at: datetime
    device_id: str
    metric: Metric
    values: Mapping[Quantity, float]
    quality: frozenset[str] = frozenset()
    artefact: bool = False


# --- artefacts --------------------------------------------------------------------------------
#: Share of measurements that are artefacts (no published home rate; an assumption).
ARTEFACT_RATE: Mapping[Metric, float] = {Metric.BLOOD_PRESSURE: 0.03, Metric.SPO2: 0.04}
#: Share of artefacts the device flags itself (cuff fit / body movement; PLX signal status).
FLAGGED_SHARE: Mapping[Metric, float] = {Metric.BLOOD_PRESSURE: 0.5, Metric.SPO2: 0.4}
FLAGS: Mapping[Metric, tuple[Quality, ...]] = {
    Metric.BLOOD_PRESSURE: (Quality.CUFF_LOOSE, Quality.BODY_MOVEMENT),
    Metric.SPO2: (Quality.LOW_PERFUSION, Quality.POOR_SIGNAL),
}
#: Share of artefacts the patient retakes, and how many minutes later.
RETAKE_SHARE = 0.8
RETAKE_MINUTES = (2.0, 10.0)
#: Share of ordinary readings a device flags although they are fine (irregular pulse in
#: atrial fibrillation is common in heart failure; an assumption for the rate).
FALSE_FLAG_RATE = 0.01
#: Blood-pressure sessions of duplicate readings a minute or two apart (ESH 2023 home
#: protocol): the share of sessions with a second reading, for hypertension and others.
DUPLICATE_SHARE: Mapping[str, float] = {HYPERTENSION: 0.9, HEART_FAILURE: 0.3, COPD: 0.3}


# --- adherence and devices --------------------------------------------------------------------
#: Share of days a patient measures at all, drawn per patient: about three in four patients
#: weighed on at least 4 days a week in ITEC-CHF (Ding et al., JMIR 2020).
ADHERENCE_RANGE = (0.6, 0.98)
#: Share of patients with a holiday (no readings) and its length in days (an assumption).
HOLIDAY_SHARE = 0.25
HOLIDAY_DAYS = (5.0, 14.0)
#: Share of patients whose scale / oximeter is replaced during the run.
SWAP_SHARE: Mapping[DeviceKind, float] = {DeviceKind.SCALE: 0.15, DeviceKind.PULSE_OXIMETER: 0.1}
#: A device's bias: a scale within +-0.5 kg, a replacement differing from its predecessor by
#: 0.3-0.8 kg (several hundred grams; digital home scales are accurate on calibrated loads,
#: Yorkin et al., BMC Public Health 2013, so the offset is mostly floor and placement); an
#: oximeter -1, 0 or +1 % (ISO 80601-2-61 allows an A_rms of 4 %).
SCALE_OFFSET = 0.5
SCALE_SWAP_STEP = (0.3, 0.8)


@dataclasses.dataclass(frozen=True, slots=True)
class Cohort:
    """The cohort: its window, seed and patients; readings are generated on demand."""

    start: datetime
    end: datetime
    seed: int | str
    patients: tuple[CohortPatient, ...]

    @property
    def days(self) -> float:
        """The length of the run in days."""
        return (self.end - self.start) / _DAY

    def readings(self, patient: CohortPatient) -> list[CohortReading]:
        """``patient``'s readings in measured order; the same for the same seed."""
        return _readings(patient, self.start, self.end, self.seed)


def generate_cohort(
    n_patients: int = 150,
    *,
    days: float = 120.0,
    seed: int | str = 1,
    start: datetime | None = None,
) -> Cohort:
    """A cohort of ``n_patients`` over ``days`` (about a third per condition), for ``seed``."""
    if n_patients < 1:
        msg = "a cohort needs at least one patient"
        raise ValueError(msg)
    if days < 28:
        msg = "a cohort needs at least 28 days (events fall from day 21 on)"
        raise ValueError(msg)
    start = start or DEFAULT_START
    end = start + _DAY * days
    rng = random.Random(f"{seed}/cohort")
    conditions = [CONDITIONS[i % len(CONDITIONS)] for i in range(n_patients)]
    rng.shuffle(conditions)
    counters: dict[DeviceKind, int] = dict.fromkeys(DeviceKind, 0)
    patients = []
    for index, condition in enumerate(conditions):
        patient_id = f"p-{index + 1:04d}"
        prng = random.Random(f"{seed}/{patient_id}/plan")
        baseline = _baseline(condition, prng)
        devices, offsets = _devices(condition, start, end, prng, counters)
        events, ramps, admissions = _events(condition, start, end, prng)
        gaps = tuple(sorted(admissions + _holidays(start, end, prng), key=lambda g: g.start))
        patients.append(
            CohortPatient(
                patient_id=patient_id,
                condition=condition,
                baseline=baseline,
                devices=devices,
                offsets=offsets,
                events=events,
                gaps=gaps,
                course=Course(EVENT_OF[condition].value if events else "stable", None, ramps),
                adherence=round(prng.uniform(*ADHERENCE_RANGE), 3),
                variability=round(prng.uniform(*VARIABILITY_RANGE), 3),
            )
        )
    return Cohort(start, end, seed, tuple(patients))


def _baseline(condition: str, rng: random.Random) -> Baseline:
    """The demo's usual values; treated hypertension is controlled when stable.

    A stable patient of the cohort is well by definition, so a hypertensive one has a home
    mean below 135/85 (the ESH 2023 home threshold): systolic 115-132, diastolic 70-82.
    """
    baseline = baseline_for(condition, rng)
    if condition == HYPERTENSION:
        baseline = dataclasses.replace(
            baseline, systolic=round(rng.uniform(115, 132)), diastolic=round(rng.uniform(70, 82))
        )
    return baseline


def _devices(
    condition: str,
    start: datetime,
    end: datetime,
    rng: random.Random,
    counters: dict[DeviceKind, int],
) -> tuple[tuple[Binding, ...], dict[str, float]]:
    """The patient's devices (a swap is two bindings of one kind) and each device's bias."""
    bindings: list[Binding] = []
    offsets: dict[str, float] = {}
    bound_from = start - timedelta(days=30)

    def new(kind: DeviceKind, since: datetime, until: datetime | None) -> str:
        counters[kind] += 1
        device_id = f"{kind.id_prefix}-{counters[kind]:04d}"
        bindings.append(Binding(device_id, kind, since, until))
        return device_id

    for kind in device_kinds_for(condition, rng):
        swap_at: datetime | None = None
        if rng.random() < SWAP_SHARE.get(kind, 0.0):
            swap_at = (start + (end - start) * rng.uniform(0.25, 0.75)).replace(microsecond=0)
        first = new(kind, bound_from, swap_at)
        if kind is DeviceKind.SCALE:
            offsets[first] = round(rng.uniform(-SCALE_OFFSET, SCALE_OFFSET), 2)
        elif kind is DeviceKind.PULSE_OXIMETER:
            offsets[first] = float(rng.choice((-1, 0, 0, 1)))
        if swap_at is not None:
            second = new(kind, swap_at, None)
            step = rng.uniform(*SCALE_SWAP_STEP) if kind is DeviceKind.SCALE else 1.0
            sign = rng.choice((-1.0, 1.0))
            offsets[second] = round(offsets.get(first, 0.0) + sign * step, 2)
    return tuple(bindings), offsets


def _holidays(start: datetime, end: datetime, rng: random.Random) -> list[Gap]:
    if rng.random() >= HOLIDAY_SHARE:
        return []
    length = _DAY * rng.uniform(*HOLIDAY_DAYS)
    begins = start + (end - start - length) * rng.random()
    return [Gap(begins, begins + length, "holiday")]


def _event_times(condition: str, start: datetime, end: datetime, rng: random.Random) -> list[date]:
    share, second = DETERIORATING[condition]
    if rng.random() >= share:
        return []
    first_day = (start + FIRST_EVENT_AFTER).astimezone(HOME_TZ).date()
    last_day = (end - _DAY).astimezone(HOME_TZ).date() - _DAY
    span = (last_day - first_day).days
    days = [first_day + timedelta(days=rng.randint(0, span))]
    if rng.random() < second:
        for _ in range(20):
            other = first_day + timedelta(days=rng.randint(0, span))
            if all(abs((other - d).days) >= EVENT_SPACING.days for d in days):
                days.append(other)
                break
    return sorted(days)


def _events(
    condition: str, start: datetime, end: datetime, rng: random.Random
) -> tuple[tuple[Event, ...], tuple[Ramp, ...], list[Gap]]:
    """The patient's events, the ramps of their prodromes and recoveries, and admissions."""
    events: list[Event] = []
    ramps: list[Ramp] = []
    admissions: list[Gap] = []
    for day in _event_times(condition, start, end, rng):
        hour = rng.uniform(9.0, 20.0)
        at = datetime.combine(day, time(int(hour), int(hour % 1 * 60)), HOME_TZ).astimezone(UTC)
        admitted: timedelta | None
        if condition == HEART_FAILURE:
            onset, more, admitted = _heart_failure(at, rng)
        elif condition == COPD:
            onset, more, admitted = _copd(at, rng)
        else:
            onset, more, admitted = _hypertension(at, rng)
        events.append(Event(EVENT_OF[condition], at, onset))
        ramps += more
        if admitted is not None:
            admissions.append(Gap(at, at + admitted, "admission"))
    return tuple(events), tuple(ramps), admissions


def _rise_and_return(
    quantity: Quantity,
    rise: tuple[datetime, datetime],
    size: float,
    back: tuple[datetime, float],
) -> list[Ramp]:
    """A linear change of ``size`` over ``rise`` (from, to), undone from ``back`` (from, days)."""
    if size == 0:
        return []
    begins, peak_at = rise
    back_from, back_days = back
    rise_days = max((peak_at - begins) / _DAY, 0.1)
    return [
        Ramp(quantity, begins, size / rise_days, abs(size)),
        Ramp(quantity, back_from, -size / back_days, abs(size)),
    ]


def _heart_failure(at: datetime, rng: random.Random) -> tuple[datetime, list[Ramp], timedelta]:
    """Decompensation: weight gain over weeks, steepest in the last week; then admission.

    Chaudhry et al. (Circulation 2007): weight rises gradually from about 30 days before
    admission and diverges most in the final week. Zhang et al. (Eur J Heart Fail 2009,
    TEN-HMS): weight rose 0.9 +- 2.1 kg in the 14 days before admissions for worsening
    heart failure, and many episodes came without weight gain; Gyllensten et al. (JMIR Med
    Inform 2016): weight alone did not predict decompensation. Here the gain is
    max(0, N(1.0, 1.5)) kg (a quarter gain nothing), 30 % of it from 20-30 days before and
    70 % in the last 5-10 days: about 0.9 kg on average within the last 14 days.
    Pulse rises 0-12 /min over the last week (heart rate carried most signal in the
    personalised algorithm of EHJ Digital Health 2023); SpO2 falls 0-3 % over the last 3
    days (an assumption). Admitted 4-10 days (no readings); the patient comes home 0-1.5 kg
    below the old dry weight (diuresis).
    """
    gain = max(0.0, rng.gauss(1.0, 1.5))
    slow_from = at - _DAY * rng.uniform(20, 30)
    steep_from = at - _DAY * rng.uniform(5, 10)
    stay = _DAY * rng.uniform(4, 10)
    lost = rng.uniform(0.0, 1.5)
    ramps = [
        *_rise_and_return(Quantity.BODY_WEIGHT, (slow_from, at), 0.3 * gain, (at, 3.0)),
        *_rise_and_return(Quantity.BODY_WEIGHT, (steep_from, at), 0.7 * gain, (at, 3.0)),
        Ramp(Quantity.BODY_WEIGHT, at, -lost / 3.0, lost),
        *_rise_and_return(
            Quantity.HEART_RATE, (at - 7 * _DAY, at), rng.uniform(0, 12), (at, stay / _DAY)
        ),
        *_rise_and_return(
            Quantity.SPO2, (at - 3 * _DAY, at), -rng.uniform(0, 3), (at, stay / _DAY)
        ),
    ]
    return slow_from, ramps, stay


def _copd(at: datetime, rng: random.Random) -> tuple[datetime, list[Ramp], timedelta | None]:
    """Exacerbation: SpO2 falls and pulse rises over days before treatment starts.

    Hurst et al. (BMC Pulm Med 2010): changes in SpO2 and pulse are detectable just before
    symptom onset and greatest 2-3 days after it; a composite change of 1 stable SD (1 %,
    5 /min) separated exacerbations from symptom variation. Al Rajeh et al. (JMIR mHealth
    2020): changes from about 7 days before treatment, larger in heart rate than in SpO2.
    Here the prodrome begins 3-7 days before treatment; by then pulse is up 3-12 /min and
    SpO2 down 0.5-3 %, and both go on changing at the same rate to a peak 2.5 days after,
    then recover over 7-14 days (median recovery about a week, Seemungal et al. 2000). A
    quarter are admitted for 3-8 days (an assumption).
    """
    onset = at - _DAY * rng.uniform(3, 7)
    peak = at + _DAY * 2.5
    recover = rng.uniform(7, 14)
    pulse = rng.uniform(3, 12)
    spo2 = rng.uniform(0.5, 3.0)
    scale = (peak - onset) / (at - onset)  # the same slope on to the peak
    ramps = [
        *_rise_and_return(Quantity.HEART_RATE, (onset, peak), pulse * scale, (peak, recover)),
        *_rise_and_return(Quantity.SPO2, (onset, peak), -spo2 * scale, (peak, recover)),
    ]
    admitted = _DAY * rng.uniform(3, 8) if rng.random() < 0.25 else None
    return onset, ramps, admitted


def _hypertension(at: datetime, rng: random.Random) -> tuple[datetime, list[Ramp], None]:
    """Loss of control: home pressure climbs over one to three weeks until treated.

    When antihypertensive treatment stops (non-adherence, a paused drug), pressure returns
    towards its untreated level over days to weeks (Circulation 1968; Fernandez et al.
    1982). No study times a prodrome to an event here, so the event is defined as the end
    of the rise: the day the care team must change treatment. The rise is 15-40 mmHg
    systolic (diastolic 40-60 % of it) over 7-21 days; pulse +0-5 /min; after the event
    pressure comes back over 5-14 days.
    """
    onset = at - _DAY * rng.uniform(7, 21)
    systolic = rng.uniform(15, 40)
    back = rng.uniform(5, 14)
    ramps = [
        *_rise_and_return(Quantity.SYSTOLIC, (onset, at), systolic, (at, back)),
        *_rise_and_return(
            Quantity.DIASTOLIC, (onset, at), systolic * rng.uniform(0.4, 0.6), (at, back)
        ),
        *_rise_and_return(Quantity.HEART_RATE, (onset, at), rng.uniform(0, 5), (at, back)),
    ]
    return onset, ramps, None


# --- readings ---------------------------------------------------------------------------------
def _variation(scale: float) -> dict[Quantity, Variation]:
    return {
        q: dataclasses.replace(v, drift_sd=v.drift_sd * scale, noise_sd=v.noise_sd * scale)
        for q, v in COHORT_VARIATION.items()
    }


def _readings(
    patient: CohortPatient, start: datetime, end: datetime, seed: int | str
) -> list[CohortReading]:
    def stream(purpose: str) -> random.Random:
        return random.Random(f"{seed}/{patient.patient_id}/{purpose}")

    plan = PatientPlan(
        patient.patient_id,
        patient.patient_id.replace("p-", "gw-"),
        patient.condition,
        patient.course,
        patient.baseline,
        patient.devices,
    )
    times = measurement_times(plan, start, end, stream("schedule"))
    body = Physiology(patient.baseline, stream("physiology"), _variation(patient.variability))
    days = stream("adherence")
    chaos = stream("artefacts")
    measured_on: dict[date, bool] = {}
    readings: list[CohortReading] = []
    for at, binding in times:
        if any(gap.covers(at) for gap in patient.gaps):
            continue
        day = at.astimezone(HOME_TZ).date()
        if day not in measured_on:
            measured_on[day] = days.random() < patient.adherence
        if not measured_on[day]:
            continue
        metric = binding.kind.metric
        reading = _measure(patient, body, binding, at)
        artefact = metric in ARTEFACT_RATE and chaos.random() < ARTEFACT_RATE[metric]
        if artefact:
            readings.append(_artefact(reading, chaos))
            if chaos.random() < RETAKE_SHARE:
                retake = at + _MINUTE * chaos.uniform(*RETAKE_MINUTES)
                readings.append(_measure(patient, body, binding, retake.replace(microsecond=0)))
            continue
        if metric in FLAGS and chaos.random() < FALSE_FLAG_RATE:
            reading = dataclasses.replace(reading, quality=frozenset({Quality.IRREGULAR_PULSE}))
        readings.append(reading)
        if metric is Metric.BLOOD_PRESSURE and chaos.random() < DUPLICATE_SHARE[patient.condition]:
            again = (at + _MINUTE * chaos.uniform(1.0, 2.0)).replace(microsecond=0)
            readings.append(_measure(patient, body, binding, again))
    readings.sort(key=lambda r: (r.measured_at, r.device_id))
    return readings


def _measure(
    patient: CohortPatient, body: Physiology, binding: Binding, at: datetime
) -> CohortReading:
    """What ``binding``'s device shows at ``at``, with the device's own bias."""
    values = body.measure(binding.kind.metric, at, patient.shift(at))
    offset = patient.offsets.get(binding.device_id, 0.0)
    if offset and binding.kind is DeviceKind.SCALE:
        values[Quantity.BODY_WEIGHT] = round(values[Quantity.BODY_WEIGHT] + offset, 1)
    elif offset and binding.kind is DeviceKind.PULSE_OXIMETER:
        values[Quantity.SPO2] = min(100.0, values[Quantity.SPO2] + offset)
    return CohortReading(at.astimezone(UTC), binding.device_id, binding.kind.metric, values)


def _artefact(reading: CohortReading, rng: random.Random) -> CohortReading:
    """``reading`` as a misfit cuff or a cold finger makes it: implausible but possible.

    Blood pressure: a cuff too small or loosely applied reads high, on average 4.8 mmHg
    systolic one size too small and 19.5 mmHg two sizes too small (Cuff(SZ) trial,
    Ishigami et al., JAMA Intern Med 2023); here +15-35 systolic, +5-15 diastolic. SpO2:
    cold fingers and poor perfusion give falsely low, unstable readings; here 4-10 %
    low and the pulse off by up to 15 /min.
    """
    values = dict(reading.values)
    if reading.metric is Metric.BLOOD_PRESSURE:
        values[Quantity.SYSTOLIC] = values[Quantity.SYSTOLIC] + round(rng.uniform(15, 35))
        values[Quantity.DIASTOLIC] = values[Quantity.DIASTOLIC] + round(rng.uniform(5, 15))
        values[Quantity.MEAN_ARTERIAL] = float(
            round(
                values[Quantity.DIASTOLIC]
                + (values[Quantity.SYSTOLIC] - values[Quantity.DIASTOLIC]) / 3
            )
        )
    else:
        values[Quantity.SPO2] = max(70.0, values[Quantity.SPO2] - round(rng.uniform(4, 10)))
        if Quantity.HEART_RATE in values:
            values[Quantity.HEART_RATE] = values[Quantity.HEART_RATE] + round(rng.uniform(-15, 15))
    quality: frozenset[str] = frozenset()
    if rng.random() < FLAGGED_SHARE[reading.metric]:
        quality = frozenset({rng.choice(FLAGS[reading.metric])})
    return dataclasses.replace(reading, values=values, quality=quality, artefact=True)


def events_of(patients: Sequence[CohortPatient]) -> list[tuple[str, Event]]:
    """Every event of ``patients`` with its patient id, in time order."""
    return sorted(((p.patient_id, e) for p in patients for e in p.events), key=lambda x: x[1].at)
