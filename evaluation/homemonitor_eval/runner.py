"""A cohort through every rule set, scored per condition and overall.

Each patient's readings are generated once (:meth:`~homemonitor_devices.cohort.Cohort.readings`)
and replayed through each rule set's plan for them (:data:`~homemonitor_eval.engine.RunPlan`);
their episodes are scored against the patient's events (:func:`~homemonitor_eval.metrics.score`).
A rule set the checkout cannot run (no templates yet) is skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from homemonitor.errors import PlanError
from homemonitor_devices.cohort import CONDITIONS, Cohort, CohortPatient, CohortReading
from homemonitor_devices.measurement import HOME_TZ
from homemonitor_eval.engine import EngineUnavailableError, RunPlan, run_plan
from homemonitor_eval.metrics import (
    Episode,
    PatientOutcome,
    RuleCounts,
    Scores,
    by_rule,
    meets,
    score,
)
from homemonitor_eval.rulesets import RULE_SETS, RuleSet

__all__ = ["ALL", "Report", "Row", "evaluate", "outcome"]

#: The condition name of a rule set's overall row.
ALL = "all"


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a rule set on one condition's patients (or on ``all``)."""

    rule_set: str
    condition: str
    scores: Scores

    def as_dict(self) -> dict[str, Any]:
        """The row for ``--json``."""
        return {
            "rule_set": self.rule_set,
            "condition": self.condition,
            **dataclasses.asdict(self.scores),
            "lift": self.scores.lift,
            "meets": meets(self.scores),
        }


@dataclasses.dataclass(slots=True)
class Report:
    """What a run measured: the cohort, the rows, what was skipped and why."""

    seed: int | str
    patients: int
    days: float
    shuffles: int
    cohort: dict[str, dict[str, int]]
    rows: list[Row] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Per rule set, where each rule's alerts fell (all patients of the rule set).
    rules: dict[str, dict[str, RuleCounts]] = dataclasses.field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The whole report for ``--json``."""
        return {
            "seed": self.seed,
            "patients": self.patients,
            "days": self.days,
            "shuffles": self.shuffles,
            "cohort": self.cohort,
            "rows": [row.as_dict() for row in self.rows],
            "skipped": self.skipped,
            "rules": {
                name: {rule: dataclasses.asdict(c) for rule, c in counts.items()}
                for name, counts in self.rules.items()
            },
            "elapsed_seconds": round(self.elapsed_seconds, 2),
        }


def outcome(
    patient: CohortPatient,
    readings: Sequence[CohortReading],
    alerts: Sequence[Episode],
    *,
    start: datetime,
) -> PatientOutcome:
    """``patient``'s ground truth beside the ``alerts`` a rule set raised for them.

    The observed period is first to last reading (``start`` alone when there are none).
    """
    first, last = (
        (readings[0].measured_at, readings[-1].measured_at) if readings else (start, start)
    )
    return PatientOutcome(
        patient_id=patient.patient_id,
        condition=patient.condition,
        events=tuple(e.at for e in patient.events),
        observed=(first, last),
        measured_days=frozenset(r.measured_at.astimezone(HOME_TZ).date() for r in readings),
        alerts=tuple(alerts),
    )


def _summary(cohort: Cohort, readings: dict[str, list[CohortReading]]) -> dict[str, dict[str, int]]:
    summary: dict[str, Counter[str]] = {c: Counter() for c in CONDITIONS}
    for patient in cohort.patients:
        counts = summary[patient.condition]
        rows = readings[patient.patient_id]
        counts["patients"] += 1
        counts["deteriorating"] += bool(patient.events)
        counts["events"] += len(patient.events)
        counts["readings"] += len(rows)
        counts["artefacts"] += sum(r.artefact for r in rows)
        counts["flagged"] += sum(bool(r.quality) for r in rows)
        counts["device_swaps"] += len(patient.devices) - len({b.kind for b in patient.devices})
        counts["holidays"] += sum(g.reason == "holiday" for g in patient.gaps)
        counts["admissions"] += sum(g.reason == "admission" for g in patient.gaps)
    return {c: dict(counts) for c, counts in summary.items()}


def evaluate(
    cohort: Cohort,
    rule_sets: Sequence[RuleSet] = RULE_SETS,
    *,
    run: RunPlan = run_plan,
    shuffles: int = 20,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Every rule set of ``rule_sets`` over ``cohort``: one row per condition, and ``all``."""
    started = time.monotonic()
    tell = progress or (lambda _: None)
    readings: dict[str, list[CohortReading]] = {}
    for number, patient in enumerate(cohort.patients, 1):
        tell(f"generating readings: patient {number}/{len(cohort.patients)}")
        readings[patient.patient_id] = cohort.readings(patient)
    report = Report(
        seed=cohort.seed,
        patients=len(cohort.patients),
        days=cohort.days,
        shuffles=shuffles,
        cohort=_summary(cohort, readings),
    )
    for rule_set in rule_sets:
        outcomes: list[PatientOutcome] = []
        try:
            for number, patient in enumerate(cohort.patients, 1):
                tell(f"{rule_set.name}: patient {number}/{len(cohort.patients)}")
                spec = rule_set.plan_for(patient)
                if spec is None:
                    continue
                rows = readings[patient.patient_id]
                outcomes.append(outcome(patient, rows, run(spec, rows), start=cohort.start))
        except (EngineUnavailableError, PlanError) as exc:
            report.skipped[rule_set.name] = str(exc)
            continue
        report.rules[rule_set.name] = by_rule(outcomes)
        conditions = [c for c in CONDITIONS if any(o.condition == c for o in outcomes)]
        for condition in conditions:
            group = [o for o in outcomes if o.condition == condition]
            report.rows.append(
                Row(rule_set.name, condition, score(group, shuffles=shuffles, seed=cohort.seed))
            )
        if len(conditions) > 1:
            report.rows.append(
                Row(rule_set.name, ALL, score(outcomes, shuffles=shuffles, seed=cohort.seed))
            )
    report.elapsed_seconds = time.monotonic() - started
    return report
