"""One patient's plan over a batch (``homemonitor.rules.evaluate``): batching independence,
redelivery, out-of-order arrivals and backlogs, and the plan's lookback."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from homemonitor.alerts.episodes import _reads
from homemonitor.contract.readings import Metric, Quantity
from homemonitor.rules.episodes import Change, EpisodeState
from homemonitor.rules.evaluate import evaluate
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.plan import CarePlanSpec, ChangeRule, ScoreRule, ThresholdRule, resolve
from homemonitor.rules.templates import TEMPLATES
from tests.unit.rulekit import S, W, at, bp, kinds_of, one_by_one, plan, weight

GAIN = ChangeRule(id="weight.gain_3d", quantity=W, direction="rise", warning=2.0, window_hours=72)
HIGH = ThresholdRule(id="systolic.high", quantity=S, direction="high", warning=160, urgent=180)
MIXED = plan(
    HIGH.model_copy(update={"retake_minutes": 15.0}),
    ThresholdRule(id="systolic.persist", quantity=S, direction="high", warning=150, k=2, n=3),
    ThresholdRule(id="weight.ceiling", quantity=W, direction="high", warning=85, clear_margin=1),
    ChangeRule(id="weight.gain_12h", quantity=W, direction="rise", warning=1.0, window_hours=12),
    ScoreRule(id="news2", warning=3, urgent=5),
)


def _by_rule(changes: list[Change]) -> dict[str, list[tuple[str, object, int]]]:
    out: dict[str, list[tuple[str, object, int]]] = {}
    for c in changes:
        out.setdefault(c.rule, []).append((c.kind, c.at, c.level))
    return out


def _in_batches(
    readings: list[StoredReading], cuts: list[int]
) -> tuple[list[Change], dict[str, EpisodeState]]:
    """``readings`` (in measured order) in consecutive batches split at ``cuts``."""
    states: dict[str, EpisodeState] = {}
    changes: list[Change] = []
    bounds = [0, *sorted(set(cuts)), len(readings)]
    for lo, hi in itertools.pairwise(bounds):
        batch = readings[lo:hi]
        if not batch:
            continue
        out = evaluate(MIXED, History(readings[:hi]), batch, states, batch[-1].measured_at)
        states.update(out.states)
        changes += out.changes
    return changes, {rule: s for rule, s in states.items() if not s.idle}


_reading = st.tuples(
    st.integers(min_value=1, max_value=90),  # minutes after the previous reading
    st.sampled_from(["bp", "weight"]),
    st.floats(min_value=0, max_value=1),
)


def _readings(raw: list[tuple[int, str, float]]) -> list[StoredReading]:
    readings, minutes = [], 0
    for gap, kind, x in raw:
        minutes += gap
        when = at(minutes=minutes)
        if kind == "bp":
            readings.append(bp(when, 130 + 60 * x, 80, pulse=60 + 70 * x))
        else:
            readings.append(weight(when, 82 + 5 * x))
    return readings


@settings(max_examples=60, deadline=None)
@example(raw=[(1, "bp", 1.0), (1, "bp", 0.5)], cuts=[])  # a retake that opened, redelivered
@given(
    st.lists(_reading, min_size=1, max_size=14),
    st.lists(st.integers(min_value=0, max_value=14), max_size=5),
)
def test_batching_and_redelivery_never_change_the_outcome(
    raw: list[tuple[int, str, float]], cuts: list[int]
) -> None:
    """One batch, one by one, or any split, then every reading redelivered: the same outcome."""
    readings = _readings(raw)
    whole, whole_states = _in_batches(readings, [])
    split, split_states = _in_batches(readings, cuts)
    single, single_states = _in_batches(readings, list(range(len(readings))))
    assert _by_rule(whole) == _by_rule(split) == _by_rule(single)
    assert whole_states == split_states == single_states
    for r in readings:
        again = evaluate(MIXED, History(readings), [r], whole_states, readings[-1].measured_at)
        assert ([], {}) == (again.changes, again.states)


def test_points_in_one_batch_are_evaluated_in_measured_order() -> None:
    """A batch that arrived newest first is evaluated oldest first: open, then auto-resolve."""
    readings = [bp(at(hours=1), 150), bp(at(), 165)]
    out = evaluate(plan(HIGH), History(readings), readings, {}, at(hours=1))
    assert [("opened", at()), ("auto_resolved", at(hours=1))] == [
        (c.kind, c.at) for c in out.changes
    ]


def test_an_out_of_order_point_is_history_for_the_next() -> None:
    """A late weighing older than one already stored opens nothing, but the next point sees it."""
    stored = [weight(at(0), 80.0), weight(at(2), 81.0)]
    late = weight(at(1), 79.5)  # arrives after day 2 was evaluated
    out = evaluate(plan(GAIN), History([*stored, late]), [late], {}, at(2, hours=1))
    assert ([], 0) == (out.changes, out.assessed)
    nxt = weight(at(3), 81.6)  # 2.1 above the late 79.5, only 1.6 above 80.0
    out = evaluate(plan(GAIN), History([*stored, late, nxt]), [nxt], {}, at(3))
    assert [("opened", 79.5)] == [(c.kind, c.facts and c.facts["reference"]) for c in out.changes]


def test_an_out_of_order_point_is_history_also_in_a_history_at_its_cap() -> None:
    """A series holding only the newest readings still tells a late point from a current one."""
    stored = [weight(at(0), 80.0), weight(at(2), 81.0), weight(at(3), 81.2)]
    late = weight(at(1), 83.5)
    batch = [late, weight(at(4), 81.3), weight(at(5), 81.4)]  # the late one and two newer
    history = History([*stored, *batch], cap=2)
    out = evaluate(plan(GAIN), history, batch, {}, at(5, hours=1))
    assert 2 == out.assessed  # the late point is history: only the two newer are assessed


def test_points_missing_from_history_are_added() -> None:
    """``evaluate`` adds points the caller's history lacks; a duplicate point is evaluated once."""
    r = weight(at(3), 84.6)
    out = evaluate(plan(GAIN), History([weight(at(0), 82.2)]), [r, r], {}, at(3))
    assert (["opened"], 1) == ([c.kind for c in out.changes], out.assessed)


def _week(kgs: list[float]) -> list[StoredReading]:
    return [weight(at(day), kg) for day, kg in enumerate(kgs)]


def test_a_backlog_ending_in_an_ongoing_deterioration_opens_once_at_the_current_point() -> None:
    """A gateway's week-long backlog, still gaining at its end: one episode, at the newest point."""
    backlog = _week([80.0, 80.1, 79.9, 80.0, 80.2, 81.2, 82.5])
    out = evaluate(plan(GAIN), History(backlog), backlog, {}, at(6, hours=1))
    assert [("opened", at(6))] == [(c.kind, c.at) for c in out.changes]
    assert 1 == sum(1 for s in out.states.values() if s.status == "open")


def test_a_backlog_whose_deterioration_ended_days_ago_opens_nothing() -> None:
    """The same gain on days 1-2, back to normal since: history, so no alert at all."""
    backlog = _week([80.0, 81.0, 82.5, 80.3, 80.1, 80.0, 80.2])
    out = evaluate(plan(GAIN), History(backlog), backlog, {}, at(6, hours=1))
    assert ([], {}) == (out.changes, out.states)


def test_a_backlog_clears_an_episode_that_ended_while_the_gateway_was_offline() -> None:
    """An open episode clears on a backlog's normal (history) readings."""
    _, states = one_by_one(plan(HIGH), [bp(at(), 165)])
    backlog = [bp(at(days=d), 140) for d in (1, 2, 3)]
    out = evaluate(plan(HIGH), History(backlog), backlog, states, at(days=5))
    assert ["auto_resolved"] == [c.kind for c in out.changes]


def test_a_plain_threshold_plan_needs_no_history() -> None:
    """Plain 1-of-1 thresholds: lookback 0; every other kind names the history it needs."""
    assert timedelta(0) == plan(HIGH).lookback()
    assert timedelta(hours=72, minutes=10) == plan(HIGH, GAIN).lookback()
    assert {S, W} == plan(HIGH, GAIN).quantities()
    assert timedelta(days=7) == plan(MIXED.rules[1]).lookback()


def test_one_by_one_and_batched_give_the_same_kinds() -> None:
    """A small fixed case of the property: a retake, a gain and a persistent breach."""
    readings = [
        bp(at(minutes=0), 185, pulse=70),
        bp(at(minutes=5), 140, pulse=70),
        weight(at(minutes=30), 82.0),
        bp(at(hours=2), 155, pulse=95),
        bp(at(hours=3), 158, pulse=95),
        weight(at(hours=4), 83.2),
    ]
    outcomes, _ = one_by_one(MIXED, readings)
    batch, _ = _in_batches(readings, [])
    assert kinds_of(outcomes) == [c.kind for c in sorted(batch, key=lambda c: c.at)]
    assert ["withdrawn", "opened", "updated", "opened"] == kinds_of(outcomes)


def test_a_cuffs_pulse_does_not_fetch_the_oximeter_history_of_the_composite() -> None:
    """The history query fetches what the rules a point triggers read: an oximeter reading
    runs the COPD composite (21 days of SpO2 and pulse), a cuff's pulse does not (only the
    pulse bound's 48 hours)."""
    spec = CarePlanSpec(template="copd", personal={"target_spo2_low": 92})
    plan = resolve(spec, 1, TEMPLATES)
    oximeter = _reads(plan, frozenset({Quantity.SPO2, Quantity.HEART_RATE}))
    cuff = _reads(plan, frozenset({Quantity.SYSTOLIC, Quantity.DIASTOLIC, Quantity.HEART_RATE}))
    assert timedelta(days=21) == oximeter[Metric.SPO2]
    assert timedelta(days=21) > cuff[Metric.SPO2]
