"""Plausibility and clock sanity, the same for every payload format.

A reading outside physiological limits is rejected (quarantined with its reason). So is
one whose time has no place on the storage's time line: not a time in UTC at all (year
9999 at a negative offset is year 10000 in UTC), or measured longer ago than readings are
kept (the retention would delete it after it was acknowledged). A reading whose clock is
otherwise off (from the future beyond a tolerance, or older than a limit) is stored but
flagged, and never alerted as current.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

from homemonitor.contract.readings import REQUIRED, Flag, Quantity, Reading, Reason, Rejection
from homemonitor.settings import DEFAULT_RETENTION, Settings, parse_retention

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

_DEFAULT_RETENTION = parse_retention(DEFAULT_RETENTION)


@dataclasses.dataclass(frozen=True, slots=True)
class ClockPolicy:
    """How far a device clock may stray before its readings are flagged, or refused.

    ``retention`` is how long readings are kept (the ``retention`` setting at its shortest):
    a reading measured longer ago is refused before it is acknowledged, never stored to be
    deleted by the next retention run.
    """

    future_tolerance: timedelta = timedelta(minutes=5)
    stale_after: timedelta = timedelta(days=7)
    retention: timedelta = _DEFAULT_RETENTION

    @classmethod
    def from_settings(cls, settings: Settings) -> ClockPolicy:
        """The policy the ``clock_*`` and ``retention`` settings describe."""
        return cls(
            future_tolerance=timedelta(seconds=settings.clock_future_tolerance_s),
            stale_after=timedelta(seconds=settings.clock_stale_after_s),
            retention=settings.retention_period,
        )


def validate(
    readings: list[Reading], now: datetime, clock: ClockPolicy
) -> tuple[list[Reading], list[Rejection]]:
    """Split ``readings`` into those to store (clock flags set) and those to quarantine."""
    accepted: list[Reading] = []
    rejected: list[Rejection] = []
    kept_since = now - clock.retention
    for reading in readings:
        problem = implausibility(reading)
        if problem is not None:
            rejected.append(
                Rejection(Reason.IMPLAUSIBLE, problem, reading.index, reading.device_id)
            )
            continue
        refusal = untimeliness(reading, kept_since)
        if refusal is not None:
            rejected.append(Rejection(*refusal, reading.index, reading.device_id))
            continue
        if reading.measured_at > now + clock.future_tolerance:
            reading.flags.append(Flag.FUTURE)
        elif reading.measured_at < now - clock.stale_after:
            reading.flags.append(Flag.STALE)
        accepted.append(reading)
    return accepted, rejected


def untimeliness(reading: Reading, kept_since: datetime) -> tuple[Reason, str] | None:
    """Why ``reading``'s time cannot be stored, or None when it can."""
    try:
        reading.measured_at.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        return Reason.NO_TIMESTAMP, "measured_at is outside years 1-9999 in UTC"
    if reading.measured_at < kept_since:
        return (
            Reason.BEYOND_RETENTION,
            "measured_at is longer ago than readings are kept (setting retention)",
        )
    return None


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
