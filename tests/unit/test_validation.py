"""Plausibility and clock sanity (``homemonitor.ingest.validation``), the same for every format.

Limits are written out here from docs/protocol.md ("What happens to a reading"), so a
change to them in the code is a change to the published contract and fails here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from homemonitor.contract.readings import Flag, Metric, Quantity, Reading, Reason, Rejection
from homemonitor.ingest.validation import PLAUSIBLE, ClockPolicy, implausibility, validate

NOW = datetime(2026, 11, 22, 7, 31, tzinfo=UTC)
TICK = timedelta(microseconds=1)  # the smallest step a datetime can take

#: A normal value of every quantity of each metric, for the quantities a row does not set.
NORMAL: dict[Metric, dict[Quantity, float]] = {
    Metric.BLOOD_PRESSURE: {Quantity.SYSTOLIC: 120.0, Quantity.DIASTOLIC: 80.0},
    Metric.BODY_WEIGHT: {Quantity.BODY_WEIGHT: 78.5},
    Metric.SPO2: {Quantity.SPO2: 96.0},
    Metric.HEART_RATE: {Quantity.HEART_RATE: 72.0},
}
#: The metric a reading of each quantity is sent as.
METRIC: dict[Quantity, Metric] = {
    Quantity.SYSTOLIC: Metric.BLOOD_PRESSURE,
    Quantity.DIASTOLIC: Metric.BLOOD_PRESSURE,
    Quantity.MEAN_ARTERIAL: Metric.BLOOD_PRESSURE,
    Quantity.HEART_RATE: Metric.HEART_RATE,
    Quantity.BODY_WEIGHT: Metric.BODY_WEIGHT,
    Quantity.SPO2: Metric.SPO2,
}


def reading(
    metric: Metric,
    values: dict[Quantity, float],
    *,
    at: datetime = NOW,
    device: str = "cuff-1",
    index: int = 0,
) -> Reading:
    """A reading of ``metric`` with exactly ``values``."""
    return Reading(device, metric, at, dict(values), index=index)


def normal(metric: Metric, at: datetime = NOW) -> Reading:
    """A plausible reading of ``metric``, measured ``at``."""
    return reading(metric, NORMAL[metric], at=at)


def below(x: float) -> float:
    """The nearest float below ``x``."""
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    """The nearest float above ``x``."""
    return math.nextafter(x, math.inf)


# --- physiological limits -----------------------------------------------------------------------

#: (quantity, lowest plausible, highest plausible, canonical unit) as docs/protocol.md states.
LIMITS = [
    (Quantity.SYSTOLIC, 40.0, 300.0, "mmHg"),
    (Quantity.DIASTOLIC, 20.0, 200.0, "mmHg"),
    (Quantity.MEAN_ARTERIAL, 25.0, 250.0, "mmHg"),
    (Quantity.HEART_RATE, 20.0, 300.0, "/min"),
    (Quantity.BODY_WEIGHT, 2.0, 400.0, "kg"),
    (Quantity.SPO2, 50.0, 100.0, "%"),
]
#: Companions that keep systolic above diastolic whatever the value under test.
_COMPANION = {
    Quantity.SYSTOLIC: {Quantity.DIASTOLIC: 20.0},
    Quantity.DIASTOLIC: {Quantity.SYSTOLIC: 300.0},
}


def _edge_rows() -> list[tuple[str, Quantity, float, str | None]]:
    """Four rows per quantity: each end is plausible, the nearest float beyond it is not."""
    rows: list[tuple[str, Quantity, float, str | None]] = []
    for q, low, high, unit in LIMITS:
        out = f"{q.value} outside plausible range {low:g}-{high:g} {unit}"
        rows += [
            (f"{q.value}-at-lowest", q, low, None),
            (f"{q.value}-just-below-lowest", q, below(low), out),
            (f"{q.value}-at-highest", q, high, None),
            (f"{q.value}-just-above-highest", q, above(high), out),
        ]
    return rows


EDGES = _edge_rows()


@pytest.mark.parametrize(
    ("quantity", "value", "expected"), [r[1:] for r in EDGES], ids=[r[0] for r in EDGES]
)
def test_plausible_range_is_inclusive_at_both_ends(
    quantity: Quantity, value: float, expected: str | None
) -> None:
    """A value at either limit is plausible; the nearest float beyond either is rejected."""
    metric = METRIC[quantity]
    values = NORMAL[metric] | _COMPANION.get(quantity, {}) | {quantity: value}
    assert expected == implausibility(reading(metric, values))


def test_every_quantity_has_the_documented_limits() -> None:
    """The code's limits are the documented ones, for every quantity there is."""
    assert {q: (low, high) for q, low, high, _ in LIMITS} == PLAUSIBLE
    assert set(Quantity) == set(PLAUSIBLE)


NOT_FINITE = [
    ("systolic-nan", Metric.BLOOD_PRESSURE, Quantity.SYSTOLIC, math.nan, "40-300 mmHg"),
    ("diastolic-inf", Metric.BLOOD_PRESSURE, Quantity.DIASTOLIC, math.inf, "20-200 mmHg"),
    ("mean-minus-inf", Metric.BLOOD_PRESSURE, Quantity.MEAN_ARTERIAL, -math.inf, "25-250 mmHg"),
    ("weight-nan", Metric.BODY_WEIGHT, Quantity.BODY_WEIGHT, math.nan, "2-400 kg"),
    ("spo2-inf", Metric.SPO2, Quantity.SPO2, math.inf, "50-100 %"),
    ("heart-rate-minus-inf", Metric.HEART_RATE, Quantity.HEART_RATE, -math.inf, "20-300 /min"),
    ("optional-pulse-nan", Metric.SPO2, Quantity.HEART_RATE, math.nan, "20-300 /min"),
    (
        "optional-pulse-inf-in-bp",
        Metric.BLOOD_PRESSURE,
        Quantity.HEART_RATE,
        math.inf,
        "20-300 /min",
    ),
]


@pytest.mark.parametrize(
    ("metric", "quantity", "value", "limits"),
    [r[1:] for r in NOT_FINITE],
    ids=[r[0] for r in NOT_FINITE],
)
def test_nan_and_infinity_are_implausible(
    metric: Metric, quantity: Quantity, value: float, limits: str
) -> None:
    """NaN and the infinities never pass as a value, required or optional."""
    values = NORMAL[metric] | {quantity: value}
    assert f"{quantity.value} outside plausible range {limits}" == implausibility(
        reading(metric, values)
    )


ORDER = [
    ("systolic-above-diastolic", 120.0, 80.0, None),
    ("systolic-just-above-diastolic", above(90.0), 90.0, None),
    ("systolic-equal-to-diastolic", 90.0, 90.0, "systolic must be above diastolic"),
    ("systolic-below-diastolic", 70.0, 90.0, "systolic must be above diastolic"),
    ("both-at-limits-crossed", 40.0, 200.0, "systolic must be above diastolic"),
]


@pytest.mark.parametrize(
    ("systolic", "diastolic", "expected"), [r[1:] for r in ORDER], ids=[r[0] for r in ORDER]
)
def test_systolic_must_be_above_diastolic(
    systolic: float, diastolic: float, expected: str | None
) -> None:
    """A pressure pair is plausible only when systolic is strictly above diastolic."""
    values = {Quantity.SYSTOLIC: systolic, Quantity.DIASTOLIC: diastolic}
    assert expected == implausibility(reading(Metric.BLOOD_PRESSURE, values))


def test_range_is_checked_before_the_order_of_the_pair() -> None:
    """A pair that is both out of range and inverted is reported for its range."""
    values = {Quantity.SYSTOLIC: 30.0, Quantity.DIASTOLIC: 80.0}
    assert "systolic outside plausible range 40-300 mmHg" == implausibility(
        reading(Metric.BLOOD_PRESSURE, values)
    )


MISSING = [
    ("bp-without-diastolic", Metric.BLOOD_PRESSURE, {Quantity.SYSTOLIC: 120.0}, "diastolic"),
    ("bp-without-systolic", Metric.BLOOD_PRESSURE, {Quantity.DIASTOLIC: 80.0}, "systolic"),
    ("bp-empty", Metric.BLOOD_PRESSURE, {}, "systolic"),
    (
        "bp-with-only-optional",
        Metric.BLOOD_PRESSURE,
        {Quantity.MEAN_ARTERIAL: 93.0, Quantity.HEART_RATE: 70.0},
        "systolic",
    ),
    ("weight-empty", Metric.BODY_WEIGHT, {}, "body_weight"),
    ("spo2-with-only-pulse", Metric.SPO2, {Quantity.HEART_RATE: 70.0}, "spo2"),
    ("heart-rate-empty", Metric.HEART_RATE, {}, "heart_rate"),
]


@pytest.mark.parametrize(
    ("metric", "values", "quantity"), [r[1:] for r in MISSING], ids=[r[0] for r in MISSING]
)
def test_missing_required_quantity_is_named(
    metric: Metric, values: dict[Quantity, float], quantity: str
) -> None:
    """A reading lacking a quantity its metric requires names the first one missing."""
    assert f"{metric.value} needs {quantity}" == implausibility(reading(metric, values))


def test_missing_quantity_is_reported_before_an_implausible_one() -> None:
    """A reading both incomplete and out of range is reported as incomplete."""
    values = {Quantity.SYSTOLIC: 999.0}
    assert "blood_pressure needs diastolic" == implausibility(
        reading(Metric.BLOOD_PRESSURE, values)
    )


@pytest.mark.parametrize("metric", list(Metric), ids=[m.value for m in Metric])
def test_normal_reading_is_plausible(metric: Metric) -> None:
    """A normal reading of each metric passes."""
    assert None is implausibility(normal(metric))


# --- clock sanity -------------------------------------------------------------------------------

DEFAULT = ClockPolicy()
TIGHT = ClockPolicy(future_tolerance=timedelta(0), stale_after=timedelta(hours=1))
PLUS_ONE = timezone(timedelta(hours=1))

CLOCK = [
    ("now", DEFAULT, NOW, []),
    ("future-within-tolerance", DEFAULT, NOW + timedelta(minutes=4), []),
    ("future-at-tolerance", DEFAULT, NOW + timedelta(minutes=5), []),
    ("future-just-beyond-tolerance", DEFAULT, NOW + timedelta(minutes=5) + TICK, [Flag.FUTURE]),
    ("future-hours-ahead", DEFAULT, NOW + timedelta(hours=3), [Flag.FUTURE]),
    ("old-within-limit", DEFAULT, NOW - timedelta(days=6), []),
    ("stale-at-limit", DEFAULT, NOW - timedelta(days=7), []),
    ("stale-just-beyond-limit", DEFAULT, NOW - timedelta(days=7) - TICK, [Flag.STALE]),
    ("stale-a-month-old", DEFAULT, NOW - timedelta(days=30), [Flag.STALE]),
    (
        "other-zone-at-tolerance",
        DEFAULT,
        (NOW + timedelta(minutes=5)).astimezone(PLUS_ONE),
        [],
    ),
    (
        "other-zone-just-beyond-tolerance",
        DEFAULT,
        (NOW + timedelta(minutes=5) + TICK).astimezone(PLUS_ONE),
        [Flag.FUTURE],
    ),
    ("zero-tolerance-now", TIGHT, NOW, []),
    ("zero-tolerance-just-ahead", TIGHT, NOW + TICK, [Flag.FUTURE]),
    ("short-limit-at-limit", TIGHT, NOW - timedelta(hours=1), []),
    ("short-limit-just-beyond", TIGHT, NOW - timedelta(hours=1) - TICK, [Flag.STALE]),
]


@pytest.mark.parametrize(
    ("policy", "measured_at", "expected"), [r[1:] for r in CLOCK], ids=[r[0] for r in CLOCK]
)
def test_clock_flags(policy: ClockPolicy, measured_at: datetime, expected: list[Flag]) -> None:
    """A reading is flagged only when strictly beyond the tolerance or the stale limit."""
    accepted, rejected = validate([normal(Metric.SPO2, at=measured_at)], NOW, policy)
    assert (1, [], expected) == (len(accepted), rejected, accepted[0].flags)


def test_default_policy_is_five_minutes_and_seven_days() -> None:
    """The defaults are the documented ones."""
    assert (timedelta(minutes=5), timedelta(days=7)) == (
        DEFAULT.future_tolerance,
        DEFAULT.stale_after,
    )


def test_batch_keeps_order_and_rejects_only_the_implausible() -> None:
    """Good readings stay in order with their flags; a bad one becomes a Rejection at its index.

    An implausible reading is rejected whatever its clock: it is never stored, so never
    flagged.
    """
    good, bad = NORMAL[Metric.SPO2], {Quantity.SPO2: 120.0}
    batch = [
        reading(Metric.SPO2, good, device="oxi-2", index=0),
        reading(Metric.SPO2, bad, device="oxi-2", index=1, at=NOW + timedelta(hours=3)),
        reading(Metric.SPO2, good, device="oxi-2", index=2, at=NOW + timedelta(hours=3)),
        reading(Metric.SPO2, good, device="oxi-2", index=3, at=NOW - timedelta(days=30)),
    ]
    accepted, rejected = validate(batch, NOW, DEFAULT)
    assert (
        [(0, []), (2, [Flag.FUTURE]), (3, [Flag.STALE])],
        [Rejection(Reason.IMPLAUSIBLE, "spo2 outside plausible range 50-100 %", 1, "oxi-2")],
        [],
    ) == ([(r.index, r.flags) for r in accepted], rejected, batch[1].flags)


def test_empty_batch() -> None:
    """Nothing in, nothing out."""
    assert ([], []) == validate([], NOW, DEFAULT)
