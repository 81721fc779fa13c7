"""The alert evaluation: its metrics on hand-built cases, the cohort, and the runner."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from homemonitor.contract.readings import Metric, Quality, Quantity
from homemonitor.rules.plan import CarePlanSpec, ThresholdRule, resolve
from homemonitor_devices.cohort import (
    FIRST_EVENT_AFTER,
    CohortReading,
    generate_cohort,
)
from homemonitor_devices.measurement import DeviceKind
from homemonitor_eval.cli import main
from homemonitor_eval.engine import EngineUnavailableError
from homemonitor_eval.metrics import (
    Alert,
    Episode,
    PatientOutcome,
    by_rule,
    local_days,
    meets,
    score,
)
from homemonitor_eval.report import COLUMNS, as_json, render
from homemonitor_eval.rulesets import RULE_SETS, RuleSet
from homemonitor_eval.runner import ALL, evaluate

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
PERIOD = 100 * DAY


def _patient(
    events: Sequence[datetime],
    alerts: Sequence[Episode],
    *,
    patient_id: str = "p-1",
    condition: str = "copd",
) -> PatientOutcome:
    """A patient observed for 100 days from T0, measuring every day."""
    observed = (T0, T0 + PERIOD)
    return PatientOutcome(
        patient_id,
        condition,
        tuple(events),
        observed,
        frozenset(local_days(*observed)),
        tuple(alerts),
    )


def _cohort_of(n: int, fire: timedelta | None) -> list[PatientOutcome]:
    """``n`` patients with one event each, and an alert ``fire`` before it (None: never)."""
    rng = random.Random(5)
    patients = []
    for i in range(n):
        event = T0 + DAY * rng.uniform(30, 90)
        alerts = [] if fire is None else [Alert("x", event - fire, event - fire + DAY)]
        patients.append(_patient([event], alerts, patient_id=f"p-{i}"))
    return patients


def test_a_detector_firing_two_days_ahead_detects_every_event() -> None:
    """An alert exactly two days before each event scores detection 1.0 and PPV 1.0."""
    scores = score(_cohort_of(40, 2 * DAY))
    assert 1.0 == scores.detection
    assert 1.0 == scores.ppv
    assert 1.0 == scores.specificity
    assert 0.0 == scores.non_actionable_per_week
    assert scores.chance is not None
    assert scores.chance < 0.3  # one alert in 100 days lands in a 13-day window by chance


def test_a_detector_that_never_fires_scores_zero() -> None:
    """No alerts: detection and chance 0, specificity 1, no PPV and no re-opens to speak of."""
    scores = score(_cohort_of(10, None))
    assert (0.0, 0.0, 1.0) == (scores.detection, scores.chance, scores.specificity)
    assert (None, None, 0) == (scores.ppv, scores.reopen_48h, scores.alerts)


def test_an_alert_in_the_last_day_before_the_event_is_not_24_hours_ahead() -> None:
    """Detection needs an opening between 14 days and 24 hours before the event."""
    late = score(_cohort_of(5, timedelta(hours=23)))
    early = score(_cohort_of(5, 15 * DAY))
    edge = score(_cohort_of(5, 14 * DAY))
    assert (0.0, 0.0, 1.0) == (late.detection, early.detection, edge.detection)
    assert 1.0 == late.ppv  # inside the prodrome window, if too late to count as ahead


def test_chance_of_a_constant_rate_detector_is_its_raw_detection() -> None:
    """Alerts every 20 days at a random phase: shifting them changes nothing on average."""
    rng = random.Random(11)
    patients = []
    for i in range(300):
        phase = rng.uniform(0, 20)
        alerts = [Alert("x", T0 + DAY * (phase + 20 * k)) for k in range(5)]
        event = T0 + DAY * rng.uniform(30, 90)
        patients.append(_patient([event], alerts, patient_id=f"p-{i}"))
    scores = score(patients, shuffles=20, seed=3)
    assert scores.detection is not None
    assert scores.chance is not None
    assert abs(scores.detection - 13 / 20) < 0.08
    assert abs(scores.chance - scores.detection) < 0.05
    assert scores.lift is not None
    assert abs(scores.lift) < 0.05


def test_chance_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    """The shifts are seeded per patient: a score is reproducible."""
    patients = _cohort_of(30, 2 * DAY)
    assert score(patients, seed=1).chance == score(patients, seed=1).chance
    assert score(patients, seed=1).chance != score(patients, seed=2).chance


def test_quiet_days_specificity_non_actionable_and_ppv() -> None:
    """One alert in the prodrome, one in the aftermath, two on one quiet day."""
    event = T0 + 50 * DAY
    alerts = [
        Alert("a", event - 3 * DAY),  # prodrome: detected, positive
        Alert("a", event + 5 * DAY),  # aftermath: neither
        Alert("a", T0 + 10 * DAY),  # quiet
        Alert("b", T0 + 10 * DAY + timedelta(hours=1)),  # the same quiet day
    ]
    scores = score([_patient([event], alerts)])
    all_days = len(list(local_days(T0, T0 + PERIOD)))
    window = set(local_days(event - 14 * DAY, event + 14 * DAY))
    quiet = all_days - len(window)
    assert quiet == scores.quiet_days
    assert pytest.approx(1 - 1 / quiet) == scores.specificity
    assert pytest.approx(2 / (quiet / 7)) == scores.non_actionable_per_week
    assert 0.25 == scores.ppv
    assert 1.0 == scores.detection


def test_by_rule_says_where_each_rules_alerts_fell() -> None:
    """Per rule: all alerts, those in a prodrome window, on quiet days, re-opened."""
    event = T0 + 50 * DAY
    alerts = [
        Alert("a", event - 3 * DAY, event - 2 * DAY),
        Alert("a", event - 2 * DAY + timedelta(hours=5)),  # re-opened, still in the prodrome
        Alert("b", T0 + 10 * DAY),  # quiet
        Alert("b", event + 5 * DAY),  # aftermath
    ]
    counts = by_rule([_patient([event], alerts)])
    assert ["a", "b"] == list(counts)
    assert (2, 2, 0, 1) == dataclasses.astuple(counts["a"])
    assert (2, 0, 1, 0) == dataclasses.astuple(counts["b"])


def test_days_without_readings_or_alerts_are_not_counted() -> None:
    """A holiday (no readings, no alerts) is not a quiet day."""
    observed = (T0, T0 + PERIOD)
    measured = frozenset(d for d in local_days(*observed) if d.day % 2)
    patient = PatientOutcome("p-1", "copd", (), observed, measured, ())
    assert len(measured) == score([patient]).quiet_days


def test_reopens_within_48_hours_of_a_resolution_of_the_same_rule() -> None:
    """Re-opened at 30 h counts, at 50 h or for another rule does not."""
    first = Alert("spo2.low", T0, T0 + DAY)
    alerts = [
        first,
        Alert("spo2.low", T0 + DAY + timedelta(hours=30), T0 + 3 * DAY),  # re-open
        Alert("spo2.low", T0 + 5 * DAY + timedelta(hours=2), None),  # 50 h after: no
        Alert("heart_rate.high", T0 + DAY + timedelta(hours=1), None),  # other rule: no
    ]
    assert 0.25 == score([_patient([], alerts)]).reopen_48h


def test_targets_are_judged_per_row() -> None:
    """meets() says which aims a row reaches."""
    scores = score(_cohort_of(40, 2 * DAY))
    assert {
        "specificity": True,
        "lift": True,
        "non_actionable_per_week": True,
        "reopen_48h": True,
    } == meets(scores)


# --- the cohort ---------------------------------------------------------------------------------
def test_the_cohort_is_deterministic_per_seed() -> None:
    """Same seed, same patients and readings; another seed, other ones."""
    one, again, other = (generate_cohort(9, days=40, seed=s) for s in (4, 4, 5))
    assert one == again
    assert [one.readings(p) for p in one.patients] == [again.readings(p) for p in again.patients]
    assert [one.readings(p) for p in one.patients] != [other.readings(p) for p in other.patients]


def test_the_cohort_has_its_ingredients() -> None:
    """Thirds per condition, events inside the run, stable patients, artefacts, swaps, gaps."""
    cohort = generate_cohort(60, days=120, seed=2)
    conditions = [p.condition for p in cohort.patients]
    assert {20} == {conditions.count(c) for c in set(conditions)}
    events = [e for p in cohort.patients for e in p.events]
    assert events
    assert all(cohort.start + FIRST_EVENT_AFTER <= e.at < cohort.end for e in events)
    assert any(not p.events for p in cohort.patients)
    assert any(g.reason == "holiday" for p in cohort.patients for g in p.gaps)
    swapped = [p for p in cohort.patients if len(p.devices) > len(p.kinds)]
    assert swapped
    readings = [r for p in cohort.patients for r in cohort.readings(p)]
    assert any(r.artefact and r.quality for r in readings)
    assert any(r.artefact and not r.quality for r in readings)
    assert {f for r in readings for f in r.quality} <= set(Quality)
    for patient in cohort.patients:
        for gap in patient.gaps:
            assert not any(gap.covers(r.measured_at) for r in cohort.readings(patient))


def test_an_artefact_is_mostly_followed_by_a_normal_retake_within_minutes() -> None:
    """After most artefacts the same device measures again within 10 minutes."""
    cohort = generate_cohort(30, days=60, seed=8)
    artefacts = retaken = 0
    for patient in cohort.patients:
        readings = cohort.readings(patient)
        for i, reading in enumerate(readings):
            if not reading.artefact:
                continue
            artefacts += 1
            retaken += any(
                r.device_id == reading.device_id
                and not r.artefact
                and timedelta(0) < r.measured_at - reading.measured_at <= timedelta(minutes=10)
                for r in readings[i + 1 : i + 8]
            )
    assert artefacts > 20
    assert 0.6 < retaken / artefacts <= 1.0


def test_a_new_scale_reads_several_hundred_grams_differently() -> None:
    """A swapped scale's offset differs from its predecessor's by 0.3-0.8 kg."""
    cohort = generate_cohort(150, days=120, seed=1)
    steps = []
    for patient in cohort.patients:
        scales = [b for b in patient.devices if b.kind is DeviceKind.SCALE]
        if len(scales) == 2:
            steps.append(
                abs(patient.offsets[scales[1].device_id] - patient.offsets[scales[0].device_id])
            )
    assert steps
    assert all(0.29 <= s <= 0.81 for s in steps)


# --- the runner ---------------------------------------------------------------------------------
def _thresholds_detector(spec: CarePlanSpec, readings: Sequence[CohortReading]) -> list[Alert]:
    """A stand-in for the engine: legacy thresholds, resolved by a clinician after 24 h."""
    alerts = []
    for rule in resolve(spec, 1, {}).rules:
        if not isinstance(rule, ThresholdRule):
            continue
        sign = 1 if rule.direction == "high" else -1
        bound = rule.warning if rule.warning is not None else rule.urgent
        assert bound is not None
        until: datetime | None = None
        for reading in readings:
            value = reading.values.get(rule.quantity)
            if value is None or sign * value < sign * bound:
                continue
            if until is None or reading.measured_at >= until:
                until = reading.measured_at + DAY
                alerts.append(Alert(rule.id, reading.measured_at, until))
    return alerts


def test_the_runner_scores_every_condition_and_all() -> None:
    """A tiny cohort through a stand-in engine gives a row per condition and one for all."""
    cohort = generate_cohort(12, days=45, seed=6)
    thresholds = next(r for r in RULE_SETS if r.name == "thresholds only")
    report = evaluate(cohort, [thresholds], run=_thresholds_detector, shuffles=3)
    assert [ALL, "copd", "heart_failure", "hypertension"] == sorted(
        r.condition for r in report.rows
    )
    overall = next(r for r in report.rows if r.condition == ALL).scores
    assert 12 == overall.patients
    assert overall.alerts > 0
    assert "thresholds only" in render(report, rules=True)
    assert report.rules["thresholds only"]
    assert "all" in json.loads(as_json(report))["rows"][-1]["condition"]


def test_a_rule_set_the_checkout_cannot_run_is_skipped_with_its_reason() -> None:
    """No engine (or no templates): the row is skipped and the report says why."""

    def missing(spec: CarePlanSpec, readings: Sequence[CohortReading]) -> list[Alert]:
        raise EngineUnavailableError("homemonitor.rules.replay is not available")

    cohort = generate_cohort(3, days=30, seed=1)
    heart = RuleSet("2 kg", "test", lambda p: CarePlanSpec())
    report = evaluate(cohort, [heart], run=missing, shuffles=1)
    assert [] == report.rows
    assert {"2 kg": "homemonitor.rules.replay is not available"} == report.skipped


def test_the_help_defines_every_metric(capsys: pytest.CaptureFixture[str]) -> None:
    """--help explains each column and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert 0 == exited.value.code
    text = capsys.readouterr().out
    for column in COLUMNS[2:]:
        assert column in text


def test_bad_arguments_exit_2() -> None:
    """Too few days for an event is refused before anything runs."""
    assert 2 == main(["--days", "10"])


def test_readings_carry_canonical_quantities() -> None:
    """Cohort readings are what the service stores: metric, values in canonical quantities."""
    cohort = generate_cohort(3, days=30, seed=1)
    reading = cohort.readings(cohort.patients[0])[0]
    assert reading.measured_at.tzinfo is UTC
    assert reading.metric in set(Metric)
    assert set(reading.values) <= set(Quantity)


def test_the_real_engine_runs_every_rule_set_on_a_tiny_cohort() -> None:
    """Templates and reference rules through the engine's replay: rows, nothing skipped."""
    cohort = generate_cohort(6, days=35, seed=2)
    report = evaluate(cohort, RULE_SETS, shuffles=2)
    assert {} == report.skipped
    assert {r.name for r in RULE_SETS} == {row.rule_set for row in report.rows}
    assert all(row.scores.patients > 0 for row in report.rows)
    assert json.loads(as_json(report))["rows"]
