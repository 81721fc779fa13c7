"""Builders for the rules-engine tests: readings at known times, plans, one-by-one runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from homemonitor.contract.readings import Metric, Quantity
from homemonitor.rules.episodes import EpisodeState
from homemonitor.rules.evaluate import Outcome, evaluate
from homemonitor.rules.history import History, Series, StoredReading
from homemonitor.rules.plan import Plan, RuleSpec

#: A Monday, 07:00 in Stockholm (CET, UTC+1).
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
S, D, HR, W, O2 = (
    Quantity.SYSTOLIC,
    Quantity.DIASTOLIC,
    Quantity.HEART_RATE,
    Quantity.BODY_WEIGHT,
    Quantity.SPO2,
)


def at(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    """T0 plus an offset."""
    return T0 + timedelta(days=days, hours=hours, minutes=minutes)


def weight(
    when: datetime, kg: float, device: str = "scale-1", quality: Iterable[str] = ()
) -> StoredReading:
    """A body-weight reading."""
    return StoredReading(when, device, Metric.BODY_WEIGHT, {W: kg}, frozenset(quality))


def bp(
    when: datetime,
    systolic: float,
    diastolic: float = 80,
    pulse: float | None = None,
    *,
    device: str = "cuff-1",
    quality: Iterable[str] = (),
    flags: Iterable[str] = (),
) -> StoredReading:
    """A blood-pressure reading (pulse optional)."""
    values = {S: float(systolic), D: float(diastolic)}
    if pulse is not None:
        values[HR] = float(pulse)
    return StoredReading(
        when, device, Metric.BLOOD_PRESSURE, values, frozenset(quality), frozenset(flags)
    )


def oximeter(when: datetime, spo2: float, pulse: float | None = None) -> StoredReading:
    """An SpO2 reading (pulse optional)."""
    values = {O2: float(spo2)}
    if pulse is not None:
        values[HR] = float(pulse)
    return StoredReading(when, "oxi-1", Metric.SPO2, values)


def plan(*rules: RuleSpec, personal: dict[str, float] | None = None, version: int = 3) -> Plan:
    """A resolved plan of ``rules``."""
    return Plan(version, tuple(rules), personal or {})


def one_by_one(
    p: Plan,
    readings: Sequence[StoredReading],
    states: dict[str, EpisodeState] | None = None,
    delay: timedelta = timedelta(0),
) -> tuple[list[Outcome], dict[str, EpisodeState]]:
    """Each reading its own batch, arriving ``delay`` after it was measured."""
    states = dict(states or {})
    stored: list[StoredReading] = []
    outcomes = []
    for r in readings:
        stored.append(r)
        out = evaluate(p, History(stored), [r], states, r.measured_at + delay)
        states.update(out.states)
        outcomes.append(out)
    return outcomes, states


def kinds_of(outcomes: Iterable[Outcome]) -> list[str]:
    """Every change's kind, in order."""
    return [c.kind for o in outcomes for c in o.changes]


def series_columns(s: Series) -> tuple[object, ...]:
    """A series as plain lists (devices by name), to compare two series with ``==``."""
    return (
        s.t.tolist(),
        s.value.tolist(),
        [s.devices[d] for d in s.device.tolist()],
        s.questionable.tolist(),
        s.clock.tolist(),
    )
