"""Care-plan thresholds and their evaluation over a batch (``homemonitor.rules.careplan``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from homemonitor.contract.readings import QUANTITIES, Quantity
from homemonitor.rules.careplan import (
    RULES,
    Bounds,
    Levels,
    PlanRow,
    PlanTable,
    Thresholds,
    evaluate,
    values_matrix,
)

S, D, MAP, HR, W, O2 = (
    Quantity.SYSTOLIC,
    Quantity.DIASTOLIC,
    Quantity.MEAN_ARTERIAL,
    Quantity.HEART_RATE,
    Quantity.BODY_WEIGHT,
    Quantity.SPO2,
)

#: One plan with every shape a bound can take: both levels, warning only, urgent only.
PLAN: Thresholds = {
    S: Bounds(high=Levels(warning=160, urgent=180), low=Levels(warning=95)),
    O2: Bounds(low=Levels(warning=92, urgent=88)),
    W: Bounds(high=Levels(urgent=84.0)),
    HR: Bounds(high=Levels(warning=120), low=Levels(warning=45, urgent=40)),
}
TABLE = PlanTable(
    [
        PlanRow("p-1", "vc-a", 3, PLAN),
        PlanRow("p-2", "vc-b", 1, {S: Bounds(high=Levels(warning=170))}),
        PlanRow("p-empty", "vc-a", 1, {}),
    ]
)
RULE_INDEX = {rule.name: j for j, rule in enumerate(RULES)}


def breaches(patient: str, readings: Sequence[Mapping[Quantity, float]]) -> list[dict[str, int]]:
    """Per reading of ``patient``: the rules it breaches and at which level (1 or 2)."""
    rows = np.full(len(readings), TABLE.row(patient), dtype=np.intp)
    levels = evaluate(TABLE, rows, values_matrix(list(readings)))
    return [{RULES[j].name: int(level) for j, level in enumerate(r) if level} for r in levels]


LEVELS = [
    ("systolic-below-warning", {S: 159.9}, {}),
    ("systolic-at-warning", {S: 160.0}, {"systolic.high": 1}),
    ("systolic-between-warning-and-urgent", {S: 179.9}, {"systolic.high": 1}),
    ("systolic-at-urgent", {S: 180.0}, {"systolic.high": 2}),
    ("systolic-far-above-urgent", {S: 260.0}, {"systolic.high": 2}),
    ("systolic-just-above-low-warning", {S: 95.1}, {}),
    ("systolic-at-low-warning", {S: 95.0}, {"systolic.low": 1}),
    ("systolic-low-without-urgent-stays-warning", {S: 60.0}, {"systolic.low": 1}),
    ("spo2-just-above-warning", {O2: 92.1}, {}),
    ("spo2-at-warning", {O2: 92.0}, {"spo2.low": 1}),
    ("spo2-between-warning-and-urgent", {O2: 89.0}, {"spo2.low": 1}),
    ("spo2-at-urgent", {O2: 88.0}, {"spo2.low": 2}),
    ("spo2-high-is-not-bounded", {O2: 100.0}, {}),
    ("weight-below-urgent-only", {W: 83.9}, {}),
    ("weight-at-urgent-only", {W: 84.0}, {"body_weight.high": 2}),
    ("heart-rate-at-high-warning", {HR: 120.0}, {"heart_rate.high": 1}),
    ("heart-rate-at-low-warning", {HR: 45.0}, {"heart_rate.low": 1}),
    ("heart-rate-at-low-urgent", {HR: 40.0}, {"heart_rate.low": 2}),
    ("unbounded-quantity", {D: 150.0, MAP: 200.0}, {}),
    ("no-quantities", {}, {}),
    (
        "two-rules-in-one-reading",
        {S: 185.0, D: 100.0, HR: 130.0},
        {"systolic.high": 2, "heart_rate.high": 1},
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), [r[1:] for r in LEVELS], ids=[r[0] for r in LEVELS]
)
def test_breach_level_per_rule(values: dict[Quantity, float], expected: dict[str, int]) -> None:
    """Bounds are inclusive; the level is the worst one reached; absent quantities never breach."""
    assert [expected] == breaches("p-1", [values])


def test_one_batch_evaluates_each_reading_against_its_own_patients_plan() -> None:
    """Readings of different patients in one batch meet different bounds."""
    patients = ["p-1", "p-2", "p-empty", "nobody"]
    rows = np.array([TABLE.row(p) for p in patients], dtype=np.intp)
    levels = evaluate(TABLE, rows, values_matrix([{S: 165.0}] * len(patients)))
    assert [1, 0, 0, 0] == levels[:, RULE_INDEX["systolic.high"]].tolist()


NO_PLAN = [
    ("patient-not-in-the-table", "nobody"),
    ("patient-with-empty-plan", "p-empty"),
]


@pytest.mark.parametrize("patient", [r[1] for r in NO_PLAN], ids=[r[0] for r in NO_PLAN])
def test_patient_without_bounds_never_breaches(patient: str) -> None:
    """Extreme values of every quantity breach nothing for a patient with no bounds."""
    extreme = [dict.fromkeys(QUANTITIES, 1e9), dict.fromkeys(QUANTITIES, -1e9)]
    assert [{}, {}] == breaches(patient, extreme)


def test_unknown_patient_maps_to_the_all_nan_row() -> None:
    """A patient without a plan gets the extra last row, and it holds no bound at all."""
    row = TABLE.row("nobody")
    assert (3, 4, True, True) == (
        row,
        len(TABLE.warning),
        bool(np.isnan(TABLE.warning[row]).all()),
        bool(np.isnan(TABLE.urgent[row]).all()),
    )


def test_empty_batch_gives_an_empty_matrix() -> None:
    """No readings: a 0 x rules matrix, not an error."""
    levels = evaluate(TABLE, np.array([], dtype=np.intp), values_matrix([]))
    assert ((0, len(RULES)), np.dtype(np.int8)) == (levels.shape, levels.dtype)


THRESHOLDS = [
    ("systolic-high-warning", "p-1", "systolic.high", 1, 160.0),
    ("systolic-high-urgent", "p-1", "systolic.high", 2, 180.0),
    ("systolic-low-warning", "p-1", "systolic.low", 1, 95.0),
    ("spo2-low-warning", "p-1", "spo2.low", 1, 92.0),
    ("spo2-low-urgent", "p-1", "spo2.low", 2, 88.0),
    ("weight-high-urgent", "p-1", "body_weight.high", 2, 84.0),
    ("other-patient-warning", "p-2", "systolic.high", 1, 170.0),
]


@pytest.mark.parametrize(
    ("patient", "rule", "level", "expected"),
    [r[1:] for r in THRESHOLDS],
    ids=[r[0] for r in THRESHOLDS],
)
def test_threshold_per_severity(patient: str, rule: str, level: int, expected: float) -> None:
    """threshold() gives the bound of the level that was crossed, from the patient's plan."""
    assert expected == TABLE.threshold(TABLE.row(patient), RULE_INDEX[rule], level)


UNSET = [
    ("warning-not-set", "p-1", "body_weight.high", 1),
    ("urgent-not-set", "p-1", "systolic.low", 2),
    ("direction-not-set", "p-1", "spo2.high", 1),
    ("quantity-not-set", "p-1", "diastolic.high", 2),
    ("no-plan", "nobody", "systolic.high", 1),
]


@pytest.mark.parametrize(
    ("patient", "rule", "level"), [r[1:] for r in UNSET], ids=[r[0] for r in UNSET]
)
def test_threshold_not_in_the_plan_is_nan(patient: str, rule: str, level: int) -> None:
    """A level the plan does not set is NaN in the table, so it can never be crossed."""
    assert math.isnan(TABLE.threshold(TABLE.row(patient), RULE_INDEX[rule], level))


def test_values_matrix_columns_follow_quantities_with_nan_where_absent() -> None:
    """Each reading is a row in QUANTITIES order; a quantity it lacks is NaN."""
    nan = math.nan
    expected = np.array(
        [
            [120.0, 80.0, nan, 71.0, nan, nan],
            [nan, nan, nan, nan, 78.5, nan],
            [nan, nan, nan, nan, nan, nan],
        ]
    )
    actual = values_matrix([{S: 120.0, D: 80.0, HR: 71.0}, {W: 78.5}, {}])
    assert (S, D, MAP, HR, W, O2) == QUANTITIES
    assert np.array_equal(expected, actual, equal_nan=True)


def test_values_matrix_of_no_readings_has_one_column_per_quantity() -> None:
    """No readings: a 0 x quantities matrix of floats."""
    actual = values_matrix([])
    assert ((0, len(QUANTITIES)), np.dtype(np.float64)) == (actual.shape, actual.dtype)


def test_rules_are_every_quantity_in_both_directions() -> None:
    """There is one rule per quantity and direction, named quantity.direction."""
    expected = [f"{q.value}.{d}" for q in QUANTITIES for d in ("high", "low")]
    assert expected == [rule.name for rule in RULES]


VALID_BOUNDS = [
    (
        "both-directions-both-levels",
        {"high": {"warning": 160, "urgent": 180}, "low": {"warning": 95, "urgent": 90}},
    ),
    ("high-urgent-equal-to-warning", {"high": {"warning": 160, "urgent": 160}}),
    ("low-urgent-equal-to-warning", {"low": {"warning": 92, "urgent": 92}}),
    ("warning-only", {"high": {"warning": 160}}),
    ("urgent-only", {"low": {"urgent": 88}}),
    ("nothing-set", {}),
]


@pytest.mark.parametrize("bounds", [r[1] for r in VALID_BOUNDS], ids=[r[0] for r in VALID_BOUNDS])
def test_valid_bounds_are_accepted(bounds: dict[str, dict[str, float]]) -> None:
    """Bounds whose urgent level is at or beyond the warning level are accepted as given."""
    assert bounds == Bounds.model_validate(bounds).model_dump(exclude_none=True)


INVALID_BOUNDS = [
    (
        "high-urgent-below-warning",
        {"high": {"warning": 160, "urgent": 150}},
        "high.urgent must be at or above high.warning",
    ),
    (
        "low-urgent-above-warning",
        {"low": {"warning": 88, "urgent": 92}},
        "low.urgent must be at or below low.warning",
    ),
    ("unknown-direction", {"up": {"warning": 160}}, "Extra inputs are not permitted"),
    ("unknown-level", {"high": {"critical": 200}}, "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("bounds", "message"),
    [r[1:] for r in INVALID_BOUNDS],
    ids=[r[0] for r in INVALID_BOUNDS],
)
def test_invalid_bounds_are_refused(bounds: dict[str, dict[str, float]], message: str) -> None:
    """An urgent level short of the warning level, or an unknown key, is refused."""
    with pytest.raises(ValidationError, match=message):
        Bounds.model_validate(bounds)
