"""The episode state machine: artefacts, severity, clearing, latching, re-alerts
(``homemonitor.rules.episodes``), driven through ``evaluate`` one reading at a time."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from homemonitor.alerts import rows
from homemonitor.rules import episodes
from homemonitor.rules.episodes import IDLE, EpisodeState
from homemonitor.rules.evaluate import evaluate
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.plan import AverageBound, AverageRule, Realert, ThresholdRule
from tests.unit.rulekit import S, at, bp, kinds_of, one_by_one, plan

HIGH = ThresholdRule(id="systolic.high", quantity=S, direction="high", warning=160, urgent=180)
RETAKE = HIGH.model_copy(update={"retake_minutes": 15.0})


def _run(rule: ThresholdRule, points: list[tuple[float, float]]) -> tuple[list[str], EpisodeState]:
    """Systolic readings at (minutes after T0, value), each its own batch, evaluated on arrival."""
    outcomes, states = one_by_one(plan(rule), [bp(at(minutes=m), v) for m, v in points])
    return kinds_of(outcomes), states.get(rule.id, IDLE)


#: A warning that resolves by itself only after its rule stayed clear for a day.
OFF_DELAY = HIGH.model_copy(update={"resolve_after_hours": 24.0})

SEQUENCES = [
    ("artefact-retake-withdrawn", RETAKE, [(0, 185), (5, 140)], ["withdrawn"], "none"),
    ("breaching-retake-opens", RETAKE, [(0, 185), (5, 182)], ["opened"], "open"),
    ("pending-until-due", RETAKE, [(0, 185)], [], "pending"),
    (
        "pending-opens-at-the-next-point-after-due",
        RETAKE,
        [(0, 185), (30, 150)],
        ["opened", "cleared"],
        "cleared",
    ),
    ("warning-auto-resolves", HIGH, [(0, 165), (60, 150)], ["opened", "auto_resolved"], "none"),
    ("urgent-latches", HIGH, [(0, 185), (60, 150)], ["opened", "cleared"], "cleared"),
    (
        "off-delay-holds-a-cleared-warning",
        OFF_DELAY,
        [(0, 165), (60, 150)],
        ["opened", "cleared"],
        "cleared",
    ),
    (
        "off-delay-resolves-once-clear-for-a-day",
        OFF_DELAY,
        [(0, 165), (60, 150), (60 + 24 * 60, 150)],
        ["opened", "cleared", "auto_resolved"],
        "none",
    ),
    (
        "breach-within-the-off-delay-is-the-same-episode",
        OFF_DELAY,
        [(0, 165), (60, 150), (600, 166)],
        ["opened", "cleared", "updated"],
        "open",
    ),
    (
        "never-latching-urgent",
        HIGH.model_copy(update={"latching": "never"}),
        [(0, 185), (60, 150)],
        ["opened", "auto_resolved"],
        "none",
    ),
    (
        "always-latching-warning",
        HIGH.model_copy(update={"latching": "always"}),
        [(0, 165), (60, 150)],
        ["opened", "cleared"],
        "cleared",
    ),
    (
        "escalates-then-de-escalates",
        HIGH,
        [(0, 165), (60, 185), (120, 170)],
        ["opened", "severity_changed", "severity_changed"],
        "open",
    ),
    ("repeats-update", HIGH, [(0, 165), (60, 168)], ["opened", "updated"], "open"),
    (
        "latched-breaches-again",
        HIGH,
        [(0, 185), (60, 150), (120, 165)],
        ["opened", "cleared", "severity_changed"],
        "open",
    ),
    (
        "hysteresis-band-holds-then-clears",
        HIGH.model_copy(update={"clear_margin": 10.0}),
        [(0, 165), (60, 155), (120, 149)],
        ["opened", "auto_resolved"],
        "none",
    ),
    (
        "urgent-de-escalates-inside-the-band",
        HIGH.model_copy(update={"clear_margin": 10.0}),
        [(0, 185), (60, 155)],
        ["opened", "severity_changed"],
        "open",
    ),
]


@pytest.mark.parametrize(
    ("case", "rule", "points", "kinds", "status"), SEQUENCES, ids=[s[0] for s in SEQUENCES]
)
def test_episode_sequences(
    case: str,
    rule: ThresholdRule,
    points: list[tuple[float, float]],
    kinds: list[str],
    status: str,
) -> None:
    """Each sequence of readings makes exactly these changes and leaves this status."""
    actual_kinds, state = _run(rule, points)
    assert (kinds, status) == (actual_kinds, state.status)


def test_de_escalation_keeps_the_peak_for_latching() -> None:
    """urgent -> warning -> clear: severity follows the data, the urgent peak still latches."""
    outcomes, states = one_by_one(
        plan(HIGH), [bp(at(hours=0), 185), bp(at(hours=1), 165), bp(at(hours=2), 150)]
    )
    changes = [c for o in outcomes for c in o.changes]
    assert [(2, 0), (1, 2), (1, 1)] == [(c.level, c.previous) for c in changes]
    state = states[HIGH.id]
    assert ("cleared", 1, 2, 185.0, 2) == (
        state.status,
        state.level,
        state.peak,
        state.worst,
        state.count,
    )


def test_a_pending_breach_opens_at_due_with_its_own_explanation() -> None:
    """``due`` opens a pending breach at due_at, with the breach's time and sentence."""
    _, states = one_by_one(plan(RETAKE), [bp(at(), 185)])
    pending = states[RETAKE.id]
    assert ("pending", at(minutes=15)) == (pending.status, pending.due_at)
    assert (pending, []) == episodes.due(RETAKE, pending, at(minutes=14))
    state, changes = episodes.due(RETAKE, pending, at(minutes=15))
    assert [("opened", at(), 2, at(minutes=15))] == [
        (c.kind, c.at, c.level, c.clock) for c in changes
    ]
    assert pending.sentence == changes[0].sentence
    assert ("open", at()) == (state.status, state.opened_at)


def test_due_resolves_a_cleared_warning_once_its_off_delay_passed() -> None:
    """The clock, not a reading, ends a cleared non-latching episode after resolve_after."""
    _, states = one_by_one(plan(OFF_DELAY), [bp(at(), 165), bp(at(hours=1), 150)])
    cleared = states[OFF_DELAY.id]
    assert ("cleared", at(hours=1)) == (cleared.status, cleared.cleared_at)
    assert (cleared, []) == episodes.due(OFF_DELAY, cleared, at(hours=24))
    state, changes = episodes.due(OFF_DELAY, cleared, at(hours=30))
    assert [("auto_resolved", at(hours=25), at(hours=30))] == [
        (c.kind, c.at, c.clock) for c in changes
    ]
    assert state.idle


def test_evaluate_runs_due_at_its_clock() -> None:
    """A later batch of another quantity opens a pending breach whose due_at passed by ``now``."""
    _, states = one_by_one(plan(RETAKE), [bp(at(), 185)])
    out = evaluate(plan(RETAKE), History([bp(at(), 185)]), [], states, at(minutes=20))
    assert ["opened"] == [c.kind for c in out.changes]
    assert "open" == out.states[RETAKE.id].status


def test_history_points_never_open() -> None:
    """A breach older than current_hours (or with a clock flag) opens nothing."""
    old = bp(at(), 185)
    out = evaluate(plan(HIGH), History([old]), [old], {}, at(days=2))
    flagged = bp(at(), 185, flags=["clock_future"])
    out2 = evaluate(plan(HIGH), History([flagged]), [flagged], {}, at())
    assert ([], {}, [], {}) == (out.changes, out.states, out2.changes, out2.states)


def test_history_points_clear_but_never_escalate() -> None:
    """An old normal reading clears an open episode; an old urgent one does not escalate it."""
    _, states = one_by_one(plan(HIGH), [bp(at(), 165)])
    urgent = bp(at(hours=1), 190)
    out = evaluate(plan(HIGH), History([urgent]), [urgent], states, at(days=3))
    assert [("updated", 1)] == [(c.kind, c.level) for c in out.changes]
    normal = bp(at(hours=2), 150)
    out = evaluate(plan(HIGH), History([normal]), [normal], states, at(days=3))
    assert ["auto_resolved"] == [c.kind for c in out.changes]


def _resolved_after(readings: list[StoredReading], rule: ThresholdRule, when: datetime) -> dict:
    _, states = one_by_one(plan(rule), readings)
    return {rule.id: episodes.resolve(states[rule.id], when)}


REALERTS = [
    # after 165 on day 0, resolved an hour later: what the next days' readings do
    ("identical-next-day", [(1, 165)], [], None),
    ("identical-for-two-days", [(1, 165), (2, 166)], [], None),
    ("worse-by-10", [(1, 175)], ["reopened"], "worse"),
    ("worse-by-less", [(1, 170)], [], None),
    ("higher-level", [(1, 181)], ["reopened"], "higher"),
    (
        "persists-beyond-after-hours",
        [(1, 165), (2, 165), (3, 165), (3.1, 165)],
        ["reopened"],
        "persisted",
    ),
    ("cleared-then-breached", [(1, 150), (2, 165)], ["reopened"], "rearmed"),
]


@pytest.mark.parametrize(
    ("case", "days", "kinds", "reason"), REALERTS, ids=[r[0] for r in REALERTS]
)
def test_realert_after_a_clinician_resolved(
    case: str, days: list[tuple[float, float]], kinds: list[str], reason: str | None
) -> None:
    """No re-alert on the next day's identical reading; one when it worsens, persists, re-arms."""
    states = _resolved_after([bp(at(), 165)], HIGH, at(hours=1))
    outcomes, _ = one_by_one(plan(HIGH), [bp(at(days=d), v) for d, v in days], states)
    changes = [c for o in outcomes for c in o.changes]
    assert kinds == [c.kind for c in changes]
    assert [reason] * len(kinds) == [c.reason for c in changes]


def test_realert_worsen_by_and_after_hours_come_from_the_rule() -> None:
    """A rule's own worsen_by (3 mmHg) and after_hours (12 h) replace the defaults."""
    rule = HIGH.model_copy(update={"realert": Realert(after_hours=12, worsen_by=3)})
    states = _resolved_after([bp(at(), 165)], rule, at(hours=1))
    worse, _ = one_by_one(plan(rule), [bp(at(hours=2), 168)], states)
    later, _ = one_by_one(plan(rule), [bp(at(hours=12), 165), bp(at(hours=13), 165)], states)
    assert (["reopened"], ["reopened"]) == (kinds_of(worse), kinds_of(later))
    assert "persisted" == later[-1].changes[0].reason


def test_a_momentary_dip_does_not_re_arm_a_rule_with_an_off_delay() -> None:
    """With resolve_after 24 h, one clear reading between breaches is not a recovery."""
    states = _resolved_after([bp(at(), 165)], OFF_DELAY, at(hours=1))
    dip = [bp(at(days=1), 150), bp(at(days=1, hours=6), 165)]
    spell = [bp(at(days=1), 150), bp(at(days=2, hours=1), 150), bp(at(days=2, hours=6), 165)]
    dipped, _ = one_by_one(plan(OFF_DELAY), dip, states)
    recovered, _ = one_by_one(plan(OFF_DELAY), spell, states)
    assert ([], ["reopened"]) == (kinds_of(dipped), kinds_of(recovered))
    assert "rearmed" == recovered[-1].changes[0].reason


def test_resolving_a_latched_cleared_episode_re_arms_it() -> None:
    """Resolved after it had cleared (no off-delay), the next breach re-alerts at once."""
    _, states = one_by_one(plan(HIGH), [bp(at(), 185), bp(at(hours=1), 150)])
    resolved = episodes.resolve(states[HIGH.id], at(hours=2))
    assert (2, 185.0, at(hours=1)) == (
        resolved.resolved_level,
        resolved.resolved_worst,
        resolved.cleared_at,
    )
    outcomes, _ = one_by_one(plan(HIGH), [bp(at(hours=3), 165)], {HIGH.id: resolved})
    assert ["reopened"] == kinds_of(outcomes)
    assert "rearmed" == outcomes[-1].changes[0].reason


def test_a_latched_episode_that_cleared_just_before_its_resolution_is_not_re_armed() -> None:
    """With resolve_after 24 h, a latched episode clear for an hour when resolved keeps its
    spell: a breach then is no relapse; once the spell lasted 24 h, the next breach is."""
    latched = OFF_DELAY.model_copy(update={"latching": "always"})
    _, states = one_by_one(plan(latched), [bp(at(), 165), bp(at(hours=1), 150)])
    resolved = episodes.resolve(states[latched.id], at(hours=2))
    soon, _ = one_by_one(plan(latched), [bp(at(hours=3), 165)], {latched.id: resolved})
    later, _ = one_by_one(
        plan(latched),
        [bp(at(hours=12), 150), bp(at(days=1, hours=2), 150), bp(at(days=1, hours=3), 165)],
        {latched.id: resolved},
    )
    assert ([], ["reopened"]) == (kinds_of(soon), kinds_of(later))
    assert "rearmed" == later[-1].changes[0].reason


def test_resolve_of_nothing_changes_nothing() -> None:
    """Resolving an idle or pending state returns it as it is."""
    pending = EpisodeState(status="pending", level=1, due_at=at(minutes=15))
    assert (IDLE, pending) == (episodes.resolve(IDLE, at()), episodes.resolve(pending, at()))


def test_an_older_point_never_transitions_an_episode() -> None:
    """A point before the episode's evaluated_at changes nothing (out-of-order arrival)."""
    _, states = one_by_one(plan(HIGH), [bp(at(hours=2), 185)])
    late = bp(at(hours=1), 150)
    out = evaluate(plan(HIGH), History([late]), [late], states, at(hours=2))
    assert ([], {}) == (out.changes, out.states)


def test_a_redelivered_point_changes_nothing() -> None:
    """The same point evaluated again (a redelivery) makes no change and no new count."""
    first = bp(at(), 165)
    _, states = one_by_one(plan(HIGH), [first, bp(at(hours=1), 170)])
    again = evaluate(
        plan(HIGH),
        History([first, bp(at(hours=1), 170)]),
        [bp(at(hours=1), 170)],
        states,
        at(hours=1),
    )
    assert ([], {}) == (again.changes, again.states)


def test_idle_state_is_the_default() -> None:
    """After auto-resolve the state is exactly the default: the stored row can be deleted."""
    _, states = one_by_one(plan(HIGH), [bp(at(), 165), bp(at(hours=1), 150)])
    assert states[HIGH.id].idle
    assert (None, None) == (states[HIGH.id].evaluated_at, states[HIGH.id].opened_at)


def test_a_re_arming_spell_survives_the_row_between_batches() -> None:
    """The resolved row keeps the clear spell that re-arms the rule: a worker reading the
    state back next batch (rows.state_of) continues the spell, as one replay would."""
    latched = OFF_DELAY.model_copy(update={"latching": "always"})
    _, states = one_by_one(plan(latched), [bp(at(), 165), bp(at(hours=1), 150)])
    resolved = episodes.resolve(states[latched.id], at(hours=2))
    _, spell = one_by_one(plan(latched), [bp(at(hours=12), 150)], {latched.id: resolved})
    row = {
        "state": json.dumps(rows.resolution_part(spell[latched.id])),
        "peak_severity": "warning",
        "resolved_at": at(hours=2),
        "evaluated_at": at(hours=12),
    }
    assert spell[latched.id] == rows.state_of(None, row)
    again, _ = one_by_one(
        plan(latched),
        [bp(at(days=1, hours=2), 150), bp(at(days=1, hours=3), 165)],
        {latched.id: rows.state_of(None, row)},
    )
    assert ["reopened"] == kinds_of(again)


def _home_mean(*, new_protocol: bool) -> AverageRule:
    return AverageRule(
        id="bp.home_mean",
        bounds={S: AverageBound(warning=135)},
        days=7,
        min_days=4,
        min_readings=1,
        new_protocol_after_resolution=new_protocol,
        realert=Realert(worsen_by=5),
    )


def _twice_a_day(first_day: int, days: int, systolic: float) -> list[StoredReading]:
    return [
        bp(at(days=d, hours=h), systolic)
        for d in range(first_day, first_day + days)
        for h in (0, 12)
    ]


@pytest.mark.parametrize("new_protocol", [False, True])
def test_an_average_protocol_after_a_resolution_starts_a_new_protocol(new_protocol: bool) -> None:
    """A home mean resolved at 140 and rising to 150: a rolling mean re-alerts within 48 h on
    mostly the readings the clinician acted on; a new protocol only once it has 4 days
    after the day it discards, and its sentence says which readings it used."""
    rule = _home_mean(new_protocol=new_protocol)
    before = _twice_a_day(0, 6, 140)
    _, states = one_by_one(plan(rule), before)
    assert "open" == states[rule.id].status
    states = {rule.id: episodes.resolve(states[rule.id], at(days=6))}
    stored, changes = list(before), []
    for r in _twice_a_day(6, 6, 150):
        stored.append(r)
        out = evaluate(plan(rule), History(stored), [r], states, r.measured_at)
        states.update(out.states)
        changes += [(r.measured_at, c) for c in out.changes if c.kind != "updated"]
    assert ["reopened"] == [c.kind for _, c in changes]
    when, change = changes[0]
    assert "worse" == change.reason
    if not new_protocol:
        assert when == at(days=8)  # 48 h on: three days of 150 beside three of 140 are 145
        assert "after_resolution" not in change.facts
        return
    assert when == at(days=10)  # day 6 discarded, then the 4 days 7, 8, 9 and 10
    assert 150.0 == change.facts["mean_systolic"]
    assert "readings since the resolution on 2026-03-08 only" in change.sentences["en"]
    assert "bara mätningar efter avslutet 2026-03-08" in change.sentences["sv"]
