"""Seedable models of a patient's vital signs over simulated time.

Each quantity is the sum of the patient's baseline, a scenario's shift (a deterioration,
see :mod:`homemonitor_devices.scenarios`), a circadian rhythm, a slow day-to-day drift
(an Ornstein-Uhlenbeck process) and measurement noise, rounded to what a home device
displays. All randomness comes from the ``random.Random`` the model is given: the same
seed and the same sequence of calls give the same values.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from datetime import datetime, timedelta

from homemonitor.contract.readings import Metric, Quantity
from homemonitor_devices.measurement import HOME_TZ

_DAY = timedelta(days=1)


@dataclasses.dataclass(frozen=True, slots=True)
class Baseline:
    """A patient's usual values when well (for heart failure, weight is the dry weight)."""

    systolic: float = 128.0
    diastolic: float = 80.0
    heart_rate: float = 70.0
    body_weight: float = 80.0
    spo2: float = 97.0

    def of(self, quantity: Quantity) -> float:
        """The baseline of ``quantity`` (mean arterial pressure is derived)."""
        if quantity is Quantity.MEAN_ARTERIAL:
            return self.diastolic + (self.systolic - self.diastolic) / 3
        return float(getattr(self, quantity.value))


@dataclasses.dataclass(frozen=True, slots=True)
class Variation:
    """How one quantity varies around its baseline.

    ``circadian`` is the amplitude of a 24-hour cosine peaking at local hour ``peak_hour``;
    ``drift_sd`` and ``drift_days`` are the stationary deviation and time constant of the
    slow day-to-day drift; ``noise_sd`` is the spread of repeated measurements.
    """

    circadian: float
    peak_hour: float
    drift_sd: float
    drift_days: float
    noise_sd: float


#: Typical home-measurement variability (orders of magnitude from the literature on home
#: BP, daily weights and spot SpO2; tuned so a stable patient rarely crosses a threshold).
VARIATION: Mapping[Quantity, Variation] = {
    Quantity.SYSTOLIC: Variation(6.0, 10.0, 3.5, 2.0, 4.5),
    Quantity.DIASTOLIC: Variation(4.0, 10.0, 2.0, 2.0, 3.0),
    Quantity.HEART_RATE: Variation(5.0, 15.0, 2.5, 1.5, 3.0),
    Quantity.BODY_WEIGHT: Variation(0.5, 20.0, 0.25, 3.0, 0.1),
    Quantity.SPO2: Variation(0.3, 14.0, 0.5, 1.0, 0.7),
}

#: What a device can physically show: outside these the model clamps.
_LIMITS: Mapping[Quantity, tuple[float, float]] = {
    Quantity.SYSTOLIC: (60.0, 260.0),
    Quantity.DIASTOLIC: (30.0, 160.0),
    Quantity.HEART_RATE: (30.0, 220.0),
    Quantity.BODY_WEIGHT: (20.0, 300.0),
    Quantity.SPO2: (70.0, 100.0),
}


class Physiology:
    """One patient's vital signs, sampled at increasing simulated instants.

    ``variation`` replaces :data:`VARIATION` (the demo's) for this patient: the evaluation
    cohort (:mod:`homemonitor_devices.cohort`) uses variability from the literature.

    >>> body = Physiology(Baseline(), random.Random(7))
    >>> body.measure(Metric.SPO2, datetime(2026, 1, 1, 8, tzinfo=HOME_TZ))[Quantity.SPO2]
    97.0
    """

    def __init__(
        self,
        baseline: Baseline,
        rng: random.Random,
        variation: Mapping[Quantity, Variation] | None = None,
    ) -> None:
        self.baseline = baseline
        self.variation = VARIATION if variation is None else variation
        self._rng = rng
        self._drift: dict[Quantity, tuple[datetime, float]] = {}

    def true_value(
        self, quantity: Quantity, at: datetime, shift: Mapping[Quantity, float] | None = None
    ) -> float:
        """The underlying value of ``quantity`` at ``at`` (no measurement noise)."""
        var = self.variation[quantity]
        local = at.astimezone(HOME_TZ)
        hour = local.hour + local.minute / 60
        circadian = var.circadian * math.cos(2 * math.pi * (hour - var.peak_hour) / 24)
        offset = (shift or {}).get(quantity, 0.0)
        return self.baseline.of(quantity) + offset + circadian + self._drift_at(quantity, at)

    def measure(
        self, metric: Metric, at: datetime, shift: Mapping[Quantity, float] | None = None
    ) -> dict[Quantity, float]:
        """What a device of ``metric`` shows when used at ``at``, at device resolution."""
        if metric is Metric.BLOOD_PRESSURE:
            systolic = self._noisy(Quantity.SYSTOLIC, at, shift)
            diastolic = min(self._noisy(Quantity.DIASTOLIC, at, shift), systolic - 15)
            return {
                Quantity.SYSTOLIC: float(round(systolic)),
                Quantity.DIASTOLIC: float(round(diastolic)),
                Quantity.MEAN_ARTERIAL: float(round(diastolic + (systolic - diastolic) / 3)),
                Quantity.HEART_RATE: self._whole(Quantity.HEART_RATE, at, shift),
            }
        if metric is Metric.BODY_WEIGHT:
            return {Quantity.BODY_WEIGHT: round(self._noisy(Quantity.BODY_WEIGHT, at, shift), 1)}
        if metric is Metric.SPO2:
            return {
                Quantity.SPO2: self._whole(Quantity.SPO2, at, shift),
                Quantity.HEART_RATE: self._whole(Quantity.HEART_RATE, at, shift),
            }
        return {Quantity.HEART_RATE: self._whole(Quantity.HEART_RATE, at, shift)}

    def _whole(
        self, quantity: Quantity, at: datetime, shift: Mapping[Quantity, float] | None
    ) -> float:
        """A measurement a device shows in whole units (mmHg, %, /min)."""
        return float(round(self._noisy(quantity, at, shift)))

    def _noisy(
        self, quantity: Quantity, at: datetime, shift: Mapping[Quantity, float] | None
    ) -> float:
        value = self.true_value(quantity, at, shift) + self._rng.gauss(
            0.0, self.variation[quantity].noise_sd
        )
        low, high = _LIMITS[quantity]
        return min(high, max(low, value))

    def _drift_at(self, quantity: Quantity, at: datetime) -> float:
        """Advance the quantity's Ornstein-Uhlenbeck drift to ``at`` (exact discretisation).

        The first call draws from the stationary distribution; asking for an earlier
        instant than the last one gives the last value (the drift never runs backwards).
        """
        var = self.variation[quantity]
        previous = self._drift.get(quantity)
        if previous is None:
            value = self._rng.gauss(0.0, var.drift_sd)
        else:
            since, last = previous
            days = max(0.0, (at - since) / _DAY)
            decay = math.exp(-days / var.drift_days)
            value = last * decay + self._rng.gauss(0.0, var.drift_sd * math.sqrt(1 - decay**2))
            at = max(at, since)
        self._drift[quantity] = (at, value)
        return value
