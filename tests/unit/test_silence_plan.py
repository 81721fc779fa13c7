"""The missing-data part of the care plan: schedules, tolerances, templates, personalising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from homemonitor.contract.readings import Metric
from homemonitor.errors import PlanError
from homemonitor.rules import backtest, templates
from homemonitor.rules.history import StoredReading
from homemonitor.rules.plan import CarePlanSpec, Expected, is_silence_rule, resolve

WEIGHT = {"metric": "body_weight", "every_hours": 24, "tolerate_hours": 72}


def _resolved(**spec: object) -> dict[str, Expected]:
    plan = resolve(CarePlanSpec.model_validate(spec), 1, templates.TEMPLATES)
    return {e.id: e for e in plan.expected}


def test_each_template_expects_its_metrics_with_a_tolerance_and_a_source() -> None:
    """Heart failure expects weight and blood pressure, hypertension BP, COPD SpO2."""
    expected = {name: [e.id for e in t.expected] for name, t in templates.TEMPLATES.items()}
    assert {
        "heart_failure": ["missing.body_weight", "missing.blood_pressure"],
        "hypertension": ["missing.blood_pressure"],
        "copd": ["missing.spo2"],
    } == expected
    for t in templates.TEMPLATES.values():
        for e in t.expected:
            assert e.source.strip()
            assert e.tolerate_hours >= e.every_hours


def test_a_plan_overrides_and_disables_a_templates_missing_data_rules_by_id() -> None:
    """overrides and disabled name missing.<metric> as they name a template rule."""
    found = _resolved(
        template="heart_failure",
        personal={"dry_weight": 82.0},
        overrides={"missing.body_weight": {"tolerate_hours": 96}},
        disabled=["missing.blood_pressure"],
    )
    assert ["missing.body_weight"] == list(found)
    assert 96.0 == found["missing.body_weight"].tolerate_hours
    assert 24.0 == found["missing.body_weight"].every_hours


def test_a_plan_without_a_template_has_its_own_expectations() -> None:
    """A plan's own ``expected`` entries are its missing-data rules."""
    found = _resolved(expected=[{"metric": "spo2", "every_hours": 24, "tolerate_hours": 48}])
    assert {"missing.spo2"} == set(found)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {
                "template": "copd",
                "personal": {"target_spo2_low": 92},
                "expected": [{"metric": "spo2", "every_hours": 24, "tolerate_hours": 48}],
            },
            "two rules are named 'missing.spo2'",
        ),
        (
            {
                "template": "copd",
                "personal": {"target_spo2_low": 92},
                "overrides": {"missing.spo2": {"metric": "body_weight"}},
            },
            "metric cannot be overridden",
        ),
        (
            {
                "template": "copd",
                "personal": {"target_spo2_low": 92},
                "overrides": {"missing.spo2": {"tolerate_hours": 1}},
            },
            "tolerate_hours must be at least every_hours",
        ),
        (
            {
                "rules": [
                    {
                        "id": "missing.weight",
                        "kind": "threshold",
                        "quantity": "body_weight",
                        "direction": "high",
                        "warning": 90,
                    }
                ]
            },
            "missing.* and gateway.* name missing-data rules",
        ),
    ],
)
def test_a_plan_that_misuses_missing_data_rules_is_refused(
    spec: dict[str, object], problem: str
) -> None:
    """Two rules of one metric, an override of the metric, a bad tolerance, a taken id."""
    with pytest.raises(PlanError, match=problem.replace("*", r"\*")):
        _resolved(**spec)


def test_a_tolerance_shorter_than_the_schedule_is_refused() -> None:
    """Daily readings cannot be expected with 12 hours of silence tolerated."""
    with pytest.raises(ValidationError, match="tolerate_hours must be at least every_hours"):
        Expected(metric=Metric.BODY_WEIGHT, every_hours=24, tolerate_hours=12)


@pytest.mark.parametrize(
    ("every", "run_in_days", "share", "needed"),
    [(24, 14, 0.5, 7), (84, 28, 0.5, 4), (24, 14, 1.0, 14), (24, 1, 0.1, 1)],
)
def test_regular_means_a_share_of_the_schedule_in_the_run_in(
    every: float, run_in_days: float, share: float, needed: int
) -> None:
    """Daily for 14 days at half: 7 readings; twice a week for 28 days at half: 4."""
    e = Expected(
        metric=Metric.SPO2,
        every_hours=every,
        tolerate_hours=every * 3,
        run_in_days=run_in_days,
        min_share=share,
    )
    assert needed == e.min_readings()


def test_missing_data_rule_ids_are_told_apart_from_engine_rules() -> None:
    """missing.<metric> and gateway.silent are silence rules; weight.gain_3d is not."""
    assert [True, True, False] == [
        is_silence_rule(r) for r in ("missing.spo2", "gateway.silent", "weight.gain_3d")
    ]


def test_a_backtest_shows_the_missing_data_alerts_a_plan_would_have_raised() -> None:
    """Daily weights with a 5-day gap: the proposed plan's missing.body_weight, 72 h in."""
    t0 = datetime(2026, 6, 1, 7, tzinfo=UTC)
    days = [*range(20), *range(25, 30)]
    readings = [
        StoredReading(t0 + timedelta(days=d), "scale-1", Metric.BODY_WEIGHT, {}) for d in days
    ]
    current = resolve(CarePlanSpec(), 1, templates.TEMPLATES)
    proposed = resolve(CarePlanSpec.model_validate({"expected": [WEIGHT]}), 2, templates.TEMPLATES)
    out = backtest.patient(
        "p-1", readings, current, proposed, since=t0, until=t0 + timedelta(days=30)
    )
    gap = t0 + timedelta(days=19)
    assert [] == out.current.alerts
    assert [("missing.body_weight", "missing", gap + timedelta(hours=72), "rule")] == [
        (a.rule, a.kind, a.opened_at, a.resolved_by) for a in out.proposed.alerts
    ]
    assert out.proposed.alerts[0].sentence.startswith("No weight reading for 72 h")
