"""Replaying a history through a plan with a simulated clinician (``homemonitor.rules.replay``)."""

from __future__ import annotations

from datetime import timedelta

from homemonitor.rules.plan import ChangeRule, ThresholdRule
from homemonitor.rules.replay import Raised, ResolvePolicy, replay
from tests.unit.rulekit import S, W, at, bp, plan, weight

HIGH = ThresholdRule(id="systolic.high", quantity=S, direction="high", warning=160, urgent=180)
RETAKE = HIGH.model_copy(update={"retake_minutes": 15.0})


def _summary(raised: list[Raised]) -> list[tuple[object, ...]]:
    return [
        (r.rule, r.severity, r.opened_at, r.resolved_at, r.resolved_by, r.reopened) for r in raised
    ]


def test_an_urgent_episode_latches_until_the_clinician_resolves_it() -> None:
    """Urgent, then normal: cleared but open, resolved by the clinician 24 h after it opened."""
    raised = replay(plan(HIGH), [bp(at(), 185), bp(at(hours=6), 150), bp(at(days=2), 150)])
    assert [("systolic.high", "urgent", at(), at(days=1), "clinician", False)] == _summary(raised)
    assert at(hours=6) == raised[0].cleared_at
    assert raised[0].sentence.startswith("systolic 185 mmHg, at or above the urgent bound")


def test_a_warning_resolves_itself_when_it_clears() -> None:
    """A non-latching warning that clears is resolved by the rule, not the clinician."""
    raised = replay(plan(HIGH), [bp(at(), 165), bp(at(hours=6), 150)])
    assert [("systolic.high", "warning", at(), at(hours=6), "rule", False)] == _summary(raised)


def test_a_value_near_its_bound_does_not_re_alert_every_day() -> None:
    """165 every day, resolved after 24 h each time: a re-alert only once it persisted 72 h."""
    readings = [bp(at(days=d), 165) for d in range(8)]
    raised = replay(plan(HIGH), readings)
    assert [(at(), False), (at(days=4), True)] == [(r.opened_at, r.reopened) for r in raised]
    assert ["clinician", "clinician"] == [r.resolved_by for r in raised]


def test_a_pending_breach_opens_at_due_on_the_simulated_clock() -> None:
    """No retake within 15 min: the breach opens at due, before the next reading arrives."""
    raised = replay(plan(RETAKE), [bp(at(), 185), bp(at(days=1), 185)])
    assert [("systolic.high", "urgent", at(), at(days=1, minutes=15), "clinician", False)] == (
        _summary(raised)
    )


def test_an_artefact_with_a_normal_retake_raises_nothing() -> None:
    """A cuff misfit followed by a normal retake minutes later is not an alert."""
    assert [] == replay(plan(RETAKE), [bp(at(), 195), bp(at(minutes=4), 138)])


def test_the_end_of_the_replay_decides_every_pending_breach() -> None:
    """A last reading that breaches with no retake still opens (the clock runs on to its due)."""
    raised = replay(plan(RETAKE), [bp(at(), 185)], clinician=ResolvePolicy(after=None))
    assert [("systolic.high", "urgent", at(), None, None, False)] == _summary(raised)


def test_a_delayed_backlog_alerts_only_for_what_is_still_current() -> None:
    """Readings arriving 3 days late are history: a gain that old raises nothing."""
    gain = ChangeRule(
        id="weight.gain_3d", quantity=W, direction="rise", warning=2.0, window_hours=72
    )
    readings = [weight(at(d), kg) for d, kg in enumerate([80.0, 81.0, 82.5, 80.2])]
    assert 1 == len(replay(plan(gain), readings))
    assert [] == replay(plan(gain), readings, received_delay=timedelta(days=3))


def test_readings_at_the_same_instant_and_duplicates_arrive_once() -> None:
    """Two readings measured at the same second, one of them twice, make one episode."""
    readings = [bp(at(), 185), bp(at(), 185), bp(at(), 170, device="cuff-2")]
    raised = replay(plan(HIGH), readings)
    assert 1 == len(raised)
