"""The worker's numpy screen of plain-threshold plans never misses an engine breach."""

from __future__ import annotations

import json

import numpy as np
import pytest

from homemonitor.contract.readings import Quantity
from homemonitor.registry.cache import Plans
from homemonitor.rules import careplan
from homemonitor.rules.kinds import quick_level
from homemonitor.rules.plan import ThresholdRule

_PLAN = {
    "personal": {"dry_weight": 80.0},
    "rules": [
        {
            "id": "weight.above_dry",
            "kind": "threshold",
            "quantity": "body_weight",
            "direction": "high",
            "relative_to": "dry_weight",
            "warning": 2.0,
            "urgent": 3.5,
        },
        {
            "id": "weight.below_dry",
            "kind": "threshold",
            "quantity": "body_weight",
            "direction": "low",
            "relative_to": "dry_weight",
            "warning": -4.0,
        },
        {
            "id": "spo2.very_low",
            "kind": "threshold",
            "quantity": "spo2",
            "direction": "low",
            "urgent": 88,
        },
    ],
    "thresholds": {"spo2": {"low": {"warning": 92}}, "systolic": {"high": {"urgent": 180}}},
}


def _plans(plan: dict[str, object]) -> Plans:
    row = {"patient_id": "p-1", "care_team_id": "vc-a", "version": 1, "plan": json.dumps(plan)}
    return Plans.build([row])


@pytest.mark.parametrize(
    ("quantity", "values"),
    [
        (Quantity.BODY_WEIGHT, np.round(np.arange(74.0, 86.0, 0.1), 1)),
        (Quantity.SPO2, np.arange(80.0, 100.0, 1.0)),
        (Quantity.SYSTOLIC, np.arange(170.0, 190.0, 0.5)),
    ],
)
def test_the_screen_flags_every_reading_the_engine_would_judge_a_breach(
    quantity: Quantity, values: np.ndarray
) -> None:
    """Over a grid of values at and around every bound: engine breach ⇒ screen hit."""
    plans = _plans(_PLAN)
    patient = plans.get("p-1")
    assert patient is not None and patient.plain
    rules = [
        r for r in patient.plan.rules if isinstance(r, ThresholdRule) and r.quantity == quantity
    ]
    breach = [any(quick_level(r, patient.plan, float(v)) for r in rules) for v in values]
    matrix = careplan.values_matrix([{quantity: float(v)} for v in values])
    rows = np.full(len(values), plans.screen.row("p-1"), dtype=np.intp)
    hit = (careplan.evaluate(plans.screen, rows, matrix).max(axis=1) > 0).tolist()
    assert [] == [float(v) for v, b, h in zip(values, breach, hit, strict=True) if b and not h]
    assert breach == hit  # and it is no looser than the slack


def test_a_plan_with_a_trend_or_a_retake_is_not_plain() -> None:
    """A change rule, or a retake window, makes a plan need the engine for every reading."""
    retake = {"rules": [{**_PLAN["rules"][2], "retake_minutes": 5}]}  # type: ignore[dict-item]
    trend = {
        "rules": [
            {
                "id": "w",
                "kind": "change",
                "quantity": "body_weight",
                "direction": "rise",
                "warning": 2,
                "window_hours": 72,
            }
        ]
    }
    assert [False, False] == [_plans(p).get("p-1").plain for p in (retake, trend)]  # type: ignore[union-attr]
