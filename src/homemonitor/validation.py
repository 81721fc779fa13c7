"""Plausibility and clock sanity, the same for every payload format.

A reading outside physiological limits is rejected (quarantined with its reason). A
reading whose clock is off (from the future beyond a tolerance, or older than a limit)
is stored but flagged, and never alerted as current.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta

from homemonitor.readings import REQUIRED, Flag, Quantity, Reading, Reason, Rejection

#: Physiologically possible ranges (inclusive), canonical units. Outside them a value is
#: a device or transmission error, not a patient finding.
PLAUSIBLE: dict[Quantity, tuple[float, float]] = {
    Quantity.SYSTOLIC: (40.0, 300.0),
    Quantity.DIASTOLIC: (20.0, 200.0),
    Quantity.MEAN_ARTERIAL: (25.0, 250.0),
    Quantity.HEART_RATE: (20.0, 300.0),
    Quantity.BODY_WEIGHT: (2.0, 400.0),
    Quantity.SPO2: (50.0, 100.0),
}


@dataclasses.dataclass(frozen=True, slots=True)
class ClockPolicy:
    """How far a device clock may stray before its readings are flagged."""

    future_tolerance: timedelta = timedelta(minutes=5)
    stale_after: timedelta = timedelta(days=7)


def validate(
    readings: list[Reading], now: datetime, clock: ClockPolicy
) -> tuple[list[Reading], list[Rejection]]:
    """Split ``readings`` into those to store (clock flags set) and those to quarantine."""
    accepted: list[Reading] = []
    rejected: list[Rejection] = []
    for reading in readings:
        problem = implausibility(reading)
        if problem is not None:
            rejected.append(
                Rejection(Reason.IMPLAUSIBLE, problem, reading.index, reading.device_id)
            )
            continue
        if reading.measured_at > now + clock.future_tolerance:
            reading.flags.append(Flag.FUTURE)
        elif reading.measured_at < now - clock.stale_after:
            reading.flags.append(Flag.STALE)
        accepted.append(reading)
    return accepted, rejected


def implausibility(reading: Reading) -> str | None:
    """Why ``reading`` cannot be a real measurement, or None when it can."""
    for quantity in REQUIRED[reading.metric]:
        if quantity not in reading.values:
            return f"{reading.metric.value} needs {quantity.value}"
    for quantity, value in reading.values.items():
        low, high = PLAUSIBLE[quantity]
        if not math.isfinite(value) or not low <= value <= high:
            return f"{quantity.value} outside plausible range {low:g}-{high:g} {quantity.unit}"
    systolic = reading.values.get(Quantity.SYSTOLIC)
    diastolic = reading.values.get(Quantity.DIASTOLIC)
    if systolic is not None and diastolic is not None and systolic <= diastolic:
        return "systolic must be above diastolic"
    return None
