"""One patient's care plan over the new readings of a batch: pure, no I/O.

:func:`evaluate` is what the worker calls per patient in a batch (inside the batch's
transaction, under the patient's advisory lock), and what
:func:`homemonitor.rules.replay.replay` calls per replayed reading: one code path.

Evaluation points are the measured times of the new readings (``points``), in measured
order; at each, every rule that got a usable new reading there (one carrying a quantity
it reads, and not questionable unless the rule includes those) is assessed over the
history measured at or before it, and the episode state machine
(:func:`homemonitor.rules.episodes.decide`) turns the assessment into changes.

- A point older than ``plan.current_hours`` before ``now``, or whose readings carry clock
  flags, is *history*: it can clear, de-escalate and count, never open.
- A point older than a reading already stored before this batch for the rule's
  quantities (an out-of-order arrival), or than the episode's ``evaluated_at``,
  transitions nothing: it is history for the next point. So redelivery and batching
  never change an outcome.
- At the end, pending breaches whose ``due_at`` passed by ``now`` open
  (:func:`homemonitor.rules.episodes.due`).

Plain 1-of-1 thresholds (``ThresholdRule.simple``) are judged on the point's reading
alone: a plan of only those never builds a series.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from homemonitor.contract.readings import Quantity
from homemonitor.rules import episodes
from homemonitor.rules.episodes import IDLE, Change, EpisodeState
from homemonitor.rules.history import History, StoredReading, instants
from homemonitor.rules.kinds import assess_at, assess_reading, may_breach, quick_level, screened
from homemonitor.rules.plan import Plan, RuleSpec, ThresholdRule, triggers


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one patient's new readings did.

    ``changes``: every episode transition, in measured order (then in plan order).
    ``states``: the new state of each rule whose state changed, by rule id (an idle
    state, ``EpisodeState()``, means the stored row can be deleted); rules not in it keep
    the state they had. ``assessed``: how many (point, rule) assessments ran.
    """

    changes: list[Change] = dataclasses.field(default_factory=list)
    states: dict[str, EpisodeState] = dataclasses.field(default_factory=dict)
    assessed: int = 0


def _order(r: StoredReading) -> tuple[datetime, str, str]:
    return (r.measured_at, r.device_id, r.metric.value)


class _Newer:
    """Whether a stored reading that is not a point is newer than a point, for a rule."""

    def __init__(self, history: History, points: Sequence[StoredReading]) -> None:
        self._history, self._points = history, points
        #: The newest measured time of the history: no reading is newer than a point there.
        self._newest = history.newest_time()

    def than(
        self, at: datetime, ts: float, quantities: tuple[Quantity, ...], *, include: bool
    ) -> bool:
        """A reading of ``quantities`` measured after ``at`` (``ts``) that is not a point.

        Per quantity: more readings after ``at`` in its series than points after ``at``
        carrying it (every point is in the history). A series at the cap may have lost
        some: then the readings themselves are asked.
        """
        if ts >= self._newest:  # in order, the common case: nothing is newer at all
            return False
        h = self._history
        for q in quantities:
            s = h.series(q, questionable=include)
            newer = len(s) - s.end(ts)
            if not newer:
                continue
            if len(s) >= h.cap:
                return h.newest(quantities, questionable=include, besides=self._points) > ts
            points = sum(
                1
                for p in self._points
                if p.measured_at > at and q in p.values and (include or not p.quality)
            )
            if newer > points:
                return True
        return False


#: Per rule of a plan: the rule, the quantity of a plain threshold (else None), whether it
#: excludes questionable readings, the quantities whose readings run it
#: (:func:`~homemonitor.rules.plan.triggers`), and whether
#: :func:`~homemonitor.rules.kinds.may_breach` can rule out its breach (a threshold with
#: persistence or a clear condition over several readings, an average protocol). Plans
#: are immutable, so this is computed once each.
_Compiled = list[tuple[RuleSpec, Quantity | None, bool, tuple[Quantity, ...], bool]]


def _compile(plan: Plan) -> _Compiled:
    found: _Compiled | None = plan.derived.get("evaluate")
    if found is None:
        found = plan.derived["evaluate"] = [
            (
                rule,
                rule.quantity if isinstance(rule, ThresholdRule) and rule.simple else None,
                rule.questionable == "exclude",
                triggers(rule),
                screened(rule),
            )
            for rule in plan.rules
        ]
    return found


def _run_points(
    plan: Plan,
    history: History,
    unique: list[StoredReading],
    live: dict[str, EpisodeState],
    now: datetime,
    *,
    out: Outcome,
) -> None:
    """Every point of ``unique`` (sorted, distinct) through every rule, updating ``live``."""
    compiled = _compile(plan)
    newer: _Newer | None = None
    current_after: datetime | None = None
    for at, group in instants(unique):
        ts: float | None = None
        for rule, plain, exclude, quantities, screen in compiled:
            value = 0.0
            if plain is not None:
                used = [r for r in group if plain in r.values and not (exclude and r.quality)]
                if not used:
                    continue
                value = used[-1].values[plain]
                if rule.id not in live and not quick_level(rule, plan, value):  # type: ignore[arg-type]
                    out.assessed += 1  # idle and no breach: nothing can change
                    continue
            else:
                used = [
                    r
                    for r in group
                    if not (exclude and r.quality) and any(q in r.values for q in quantities)
                ]
                if not used:
                    continue
            if ts is None:
                ts = at.timestamp()
            if newer is None:
                newer = _Newer(history, unique)
            if newer.than(at, ts, quantities, include=not exclude):
                continue
            state = live.get(rule.id, IDLE)
            if state.evaluated_at is not None and at < state.evaluated_at:
                continue
            if plain is not None:
                assessment = assess_reading(rule, plan, value, at)  # type: ignore[arg-type]
            elif screen and rule.id not in live and not may_breach(rule, plan, history, ts):
                out.assessed += 1  # idle and it cannot breach: level 0, no change
                continue
            else:
                resolved = state.resolved_at
                assessment = assess_at(
                    rule,
                    plan,
                    history,
                    at,
                    ts,
                    resolved=None if resolved is None or state.active else resolved.timestamp(),
                )
            out.assessed += 1
            if current_after is None:
                current_after = now - timedelta(hours=plan.current_hours)
            current = at >= current_after and not any(r.flags for r in used)
            new, changes = episodes.decide(rule, state, assessment, current=current)
            if new is not state:
                live[rule.id] = new
            out.changes += changes


def evaluate(
    plan: Plan,
    history: History,
    points: Sequence[StoredReading],
    states: Mapping[str, EpisodeState],
    now: datetime,
) -> Outcome:
    """Run ``plan`` at each new reading of ``points``, threading the episode ``states``.

    ``history`` holds the patient's stored readings of the window (per quantity at
    least the lookback of every rule a point runs that reads it, before that point, and
    everything newer; ``plan.lookback()`` before the oldest point is always enough),
    including the ``points`` themselves (they are added when missing). ``states`` maps rule ids to
    their stored state; a missing rule is idle. ``points`` need no order; a point that
    is a duplicate of another is evaluated once. ``now`` is the worker's clock.
    """
    out = Outcome()
    live = dict(states)
    if len(points) == 1:
        unique = list(points)
    else:
        unique = sorted({p.key: p for p in points}.values(), key=_order)
    if unique:
        if not all(p in history for p in unique):
            history = history.with_readings(unique)
        _run_points(plan, history, unique, live, now, out=out)
    for rule_id, state in list(live.items()):
        if state.status == "pending":
            rule = plan.rule(rule_id)
            if rule is None:
                continue
            new, changes = episodes.due(rule, state, now)
            live[rule_id] = new
            out.changes += changes
    out.states = {
        rule_id: state for rule_id, state in live.items() if state != states.get(rule_id, IDLE)
    }
    return out
