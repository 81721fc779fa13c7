"""Replaying a patient's history through a plan: for ``homemonitor rules backtest`` and
for the clinical evaluation (``make evaluate``). Pure, no I/O.

:func:`replay` feeds readings one at a time, in measured order, to the same
:func:`homemonitor.rules.evaluate.evaluate` the worker runs, each arriving
``received_delay`` after it was measured, with a simulated clinician
(:class:`ResolvePolicy`) and the time-driven hook (:func:`homemonitor.rules.episodes.due`)
on the simulated clock between readings and at the end. It returns every episode it
raised (:class:`Raised`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from homemonitor.rules import episodes
from homemonitor.rules.episodes import IDLE, Change, EpisodeState
from homemonitor.rules.evaluate import evaluate
from homemonitor.rules.history import History, StoredReading, as_history, instants
from homemonitor.rules.kinds import LEVEL_NAMES
from homemonitor.rules.plan import Plan, RuleSpec


@dataclasses.dataclass(frozen=True, slots=True)
class ResolvePolicy:
    """The simulated clinician: resolves an open episode ``after`` it opened (None: never)."""

    after: timedelta | None = timedelta(hours=24)


@dataclasses.dataclass(slots=True)
class Raised:
    """One episode of a replay.

    ``severity`` is the worst it reached; ``opened_at`` the measured_at of the point that
    opened it; ``cleared_at`` when its rule last cleared (None when it did not, or
    breached again); ``resolved_by`` ``"clinician"``, ``"rule"`` (auto-resolved) or None
    (still open at the end); ``sentences`` the opening explanation by language (``sv``,
    ``en``); ``reopened`` whether it was a re-alert after a clinician's resolution.
    """

    rule: str
    kind: str
    severity: str
    opened_at: datetime
    cleared_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    sentences: Mapping[str, str]
    reopened: bool = False

    @property
    def sentence(self) -> str:
        """The opening explanation in English."""
        return self.sentences.get("en", "")


def replay(
    plan: Plan,
    readings: Sequence[StoredReading] | History,
    *,
    clinician: ResolvePolicy = ResolvePolicy(),
    received_delay: timedelta = timedelta(0),
    now: datetime | None = None,
) -> list[Raised]:
    """The episodes ``plan`` raises over ``readings``, in the order they opened.

    Readings measured at the same instant arrive together; duplicates collapse. The
    simulated clock ends at ``now`` (default: the last arrival plus the plan's longest
    ``retake_minutes``, so every pending breach is decided); episodes still open then
    have ``resolved_by`` None.
    """
    return _Replay(plan, as_history(readings), clinician, received_delay).run(now)


class _Replay:
    """The simulated world of one replay: states, raised episodes, the clinician's diary."""

    def __init__(
        self, plan: Plan, history: History, clinician: ResolvePolicy, delay: timedelta
    ) -> None:
        self.plan, self.history, self.clinician, self.delay = plan, history, clinician, delay
        self.rules: dict[str, RuleSpec] = {r.id: r for r in plan.rules}
        self.states: dict[str, EpisodeState] = {}
        self.raised: list[Raised] = []
        self.current: dict[str, Raised] = {}  # the active episode of each rule
        self.resolve_at: dict[str, datetime] = {}  # when the clinician resolves it
        for q in plan.quantities():  # build every series once; replay steps take views
            history.series(q)
            history.series(q, questionable=True)

    def run(self, end: datetime | None) -> list[Raised]:
        last = None
        for at, group in instants(self.history.readings):
            arrival = at + self.delay
            self.advance(arrival)
            outcome = evaluate(self.plan, self.history.until(at), group, self.states, arrival)
            self.states.update(outcome.states)
            self.record(outcome.changes, arrival)
            last = arrival
        if end is None and last is not None:
            retake = max((r.retake_minutes or 0.0 for r in self.plan.rules), default=0.0)
            end = last + timedelta(minutes=retake)
        if end is not None:
            self.advance(end)
        return self.raised

    def advance(self, clock: datetime) -> None:
        """Run time-driven work (pending breaches, the clinician) up to ``clock``, in order."""
        while True:
            events: list[tuple[datetime, str]] = [
                (s.due_at, rule_id)
                for rule_id, s in self.states.items()
                if s.status == "pending" and s.due_at is not None and s.due_at <= clock
            ]
            events += [(t, rule_id) for rule_id, t in self.resolve_at.items() if t <= clock]
            if not events:
                return
            when, rule_id = min(events)
            state = self.states.get(rule_id, IDLE)
            if state.status == "pending":
                new, changes = episodes.due(self.rules[rule_id], state, when)
                self.states[rule_id] = new
                self.record(changes, when)
            else:
                self.states[rule_id] = episodes.resolve(state, when)
                del self.resolve_at[rule_id]
                raised = self.current.pop(rule_id, None)
                if raised is not None:
                    raised.resolved_at, raised.resolved_by = when, "clinician"

    def record(self, changes: list[Change], clock: datetime) -> None:
        for c in changes:
            if c.kind in ("opened", "reopened"):
                raised = Raised(
                    rule=c.rule,
                    kind=c.rule_kind,
                    severity=LEVEL_NAMES[c.level],
                    opened_at=c.at,
                    cleared_at=None,
                    resolved_at=None,
                    resolved_by=None,
                    sentences=c.sentences or {},
                    reopened=c.kind == "reopened",
                )
                self.raised.append(raised)
                self.current[c.rule] = raised
                if self.clinician.after is not None:
                    self.resolve_at[c.rule] = (c.clock or clock) + self.clinician.after
                continue
            raised_or_none = self.current.get(c.rule)
            if raised_or_none is None:
                continue
            raised = raised_or_none
            raised.severity = LEVEL_NAMES[max(LEVEL_NAMES.index(raised.severity), c.level)]
            if c.kind == "cleared":
                raised.cleared_at = c.at
            elif c.kind in ("updated", "severity_changed"):
                raised.cleared_at = None
            elif c.kind == "auto_resolved":
                raised.cleared_at = raised.resolved_at = c.at
                raised.resolved_by = "rule"
                del self.current[c.rule]
                self.resolve_at.pop(c.rule, None)
