"""The pure side of backtesting a plan change (``homemonitor.rules.backtest``)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from homemonitor.errors import PlanError
from homemonitor.rules import backtest
from homemonitor.rules.backtest import Counts, Proposal
from homemonitor.rules.careplan import Bounds, Levels
from homemonitor.rules.plan import CarePlanSpec, ChangeRule, ThresholdRule, resolve
from homemonitor.rules.replay import ResolvePolicy
from homemonitor.rules.templates import TEMPLATES
from tests.unit.rulekit import S, W, at, bp, plan, weight

HIGH = ThresholdRule(id="systolic.high", quantity=S, direction="high", warning=160, urgent=180)
GAIN = ChangeRule(id="weight.gain_3d", quantity=W, direction="rise", warning=2.0, window_hours=72)
#: A week of weights rising 2.5 kg in two days, and one systolic 190 on day 3.
WEEK = [
    *(weight(at(days=d), kg) for d, kg in enumerate([78, 78, 78, 78, 78, 79, 80.5])),
    bp(at(days=3, hours=2), 190),
]
SINCE, UNTIL = at(), at(days=7)


def test_the_proposed_side_shows_exactly_the_alert_the_current_plan_lacks() -> None:
    """Current: systolic only; proposed adds the weight rule: one row more, proposed only."""
    p = backtest.patient(
        "p-1", WEEK, plan(HIGH), plan(HIGH, GAIN), since=SINCE, until=UNTIL, stored=["urgent"]
    )
    assert [
        (at(days=3, hours=2), "systolic.high", "urgent", "urgent"),
        (at(days=6), "weight.gain_3d", None, "warning"),
    ] == [(r.opened_at, r.rule, r.current, r.proposed) for r in p.rows]
    assert (Counts(urgent=1, total=1), Counts(warning=1, urgent=1, total=2)) == (
        p.current.counts,
        p.proposed.counts,
    )
    assert Counts(urgent=1, total=1) == p.stored
    assert p.rows[1].sentence.startswith("weight 80.5 kg, 2.5 kg above the lowest")


def test_only_alerts_that_open_within_the_period_count() -> None:
    """The systolic alert of day 3 lies before a period starting on day 4: warm-up only."""
    p = backtest.patient("p-1", WEEK, plan(HIGH), plan(HIGH), since=at(days=4), until=UNTIL)
    assert ([], 3) == (p.rows, p.readings)


def test_both_sides_share_the_simulated_clinician() -> None:
    """A clinician who never resolves: the urgent alert stays open on both sides."""
    never = ResolvePolicy(after=None)
    p = backtest.patient(
        "p-1", WEEK, plan(HIGH), plan(HIGH), since=SINCE, until=UNTIL, policy=never
    )
    assert [None, None] == [a.resolved_by for a in (*p.current.alerts, *p.proposed.alerts)]
    report = backtest.report([p], since=SINCE, until=UNTIL, days=7, proposal="x", policy=never)
    assert "never resolves an alert" == report.clinician


def test_a_template_swap_keeps_personal_values_and_bounds_the_template_does_not_have() -> None:
    """Swap to heart_failure: dry weight kept, systolic.high kept, systolic.low yields."""
    current = CarePlanSpec(
        personal={"dry_weight": 80.0},
        thresholds={S: Bounds(high=Levels(urgent=180), low=Levels(warning=95))},
    )
    proposed = Proposal(template="heart_failure", personal={"target": 1.0}).for_patient(
        current, TEMPLATES
    )
    assert {"dry_weight": 80.0, "target": 1.0} == proposed.personal
    rules = resolve(proposed, 2, TEMPLATES).rules
    assert ThresholdRule(id="systolic.high", quantity=S, direction="high", urgent=180) in rules
    low = next(r for r in rules if r.id == "systolic.low")
    assert (90, 2) == (low.warning, getattr(low, "k", None))


def test_a_template_swap_drops_the_old_templates_overrides() -> None:
    """Overrides name the old template's rules: dropped with it, kept when it stays."""
    current = CarePlanSpec(template="hypertension", overrides={"bp.home_mean": {"days": 5}})
    other = Proposal(template="copd").for_patient(current, TEMPLATES)
    same = Proposal(template="hypertension").for_patient(current, TEMPLATES)
    assert ({}, current.overrides) == (other.overrides, same.overrides)


def test_plan_files_and_personal_options_say_what_is_wrong() -> None:
    """A file that is not a plan, a --personal that is not key=number: PlanError naming it."""
    with pytest.raises(PlanError, match=r"^plan.yaml: invalid care plan: rules.0.threshold"):
        backtest.parse_spec("rules:\n  - {id: x, kind: threshold}\n", "plan.yaml")
    with pytest.raises(PlanError, match="not YAML or JSON"):
        backtest.parse_spec("{", "plan.yaml")
    with pytest.raises(PlanError, match="key=number"):
        backtest.parse_personal(["dry_weight=heavy"])
    assert {"dry_weight": 82.5} == backtest.parse_personal(["dry_weight=82.5"])


def test_warm_up_is_the_longest_lookback_and_capped() -> None:
    """The plans' longest lookback, at most MAX_WARMUP; none for no plan."""
    assert timedelta(hours=72, minutes=10) == backtest.warmup(plan(HIGH), plan(GAIN), None)
    assert timedelta(0) == backtest.warmup(None)


def test_totals_leave_out_skipped_patients_and_json_has_the_same_numbers() -> None:
    """A skipped patient counts nowhere; the JSON is the report's own numbers."""
    done = backtest.patient("p-1", WEEK, plan(HIGH), plan(HIGH, GAIN), since=SINCE, until=UNTIL)
    report = backtest.report(
        [done, backtest.skipped("p-3", "no dry weight")],
        since=SINCE,
        until=UNTIL,
        days=7,
        proposal="x",
    )
    data = json.loads(backtest.as_json(report))
    assert (1, len(WEEK)) == (data["total"]["patients"], data["total"]["readings"])
    assert {"warning": 1, "urgent": 1, "total": 2} == data["total"]["proposed"]
    assert "no dry weight" == data["patients"][1]["skipped"]
    text = backtest.as_text(report)
    assert "p-3: skipped: no dry weight" in text
    assert "Total: 1 patient, 8 readings (1 patient skipped)" in text


def test_rows_carry_both_languages_and_the_text_report_speaks_the_one_asked_for() -> None:
    """Each row has sv and en sentences; ``as_text(lang="sv")`` shows the Swedish one only."""
    p = backtest.patient("p-1", WEEK, plan(HIGH), plan(HIGH, GAIN), since=SINCE, until=UNTIL)
    report = backtest.report([p], since=SINCE, until=UNTIL, days=7, proposal="x")
    svensk = backtest.report([p], since=SINCE, until=UNTIL, days=7, proposal="x", lang="sv")
    row = p.rows[1]
    assert ["sv", "en"] == list(row.sentences)
    assert row.sentence == row.sentences["en"] == row.said("en")
    assert row.sentences["sv"].startswith("vikt 80,5 kg, 2,5 kg över den lägsta")
    swedish, english = backtest.as_text(svensk, "sv"), backtest.as_text(report)
    assert [
        "Backtest 2026-03-02 07:00 till 2026-03-09 07:00 svensk tid (7 dagar)",
        "föreslaget: x",
        "simulerad kliniker (båda sidor): avslutar varje larm 24 h efter att det öppnades",
    ] == swedish.splitlines()[:3]
    assert "  2026-03-08 07:00  -           varning     weight.gain_3d     vikt 80,5 kg" in swedish
    assert "obs: båda planerna spelas upp genom motorn som arbetaren kör" in swedish
    assert (True, False, True, False) == (
        row.sentences["sv"] in swedish,
        row.sentence in swedish,
        row.sentence in english,
        row.sentences["sv"] in english,
    )


def test_a_proposal_is_described_in_swedish_or_english() -> None:
    """The preview's summary of a proposed plan, in either language."""
    spec = CarePlanSpec(template="heart_failure", personal={"dry_weight": 80.0})
    assert (
        "den givna planen (mall heart_failure, 0 egna regler/gränser)",
        "the given plan (template heart_failure, 0 own rules/bounds)",
    ) == (Proposal(spec=spec).describe("sv"), Proposal(spec=spec).describe("en"))


def test_backtest_help_offers_the_language(capsys: pytest.CaptureFixture[str]) -> None:
    """``rules backtest --help`` shows --lang sv|en, English by default."""
    from homemonitor.cli import main  # noqa: PLC0415 - the CLI only for this test

    with pytest.raises(SystemExit) as exited:
        main(["rules", "backtest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (0, True, True) == (exited.value.code, "--lang {sv,en}" in text, "(en;" in text)
