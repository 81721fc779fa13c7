"""The episode state machine of one (patient, rule): pure, no SQL.

An episode is one alert per patient and rule. Its whole state between batches is an
:class:`EpisodeState`, small enough to be one database row; the worker loads it, calls
:func:`homemonitor.rules.evaluate.evaluate` (which calls :func:`decide` per point and rule)
and saves what comes back, together with the :class:`Change` events, in the batch's
transaction. (:mod:`homemonitor.alerts.episodes` is that SQL; this module is the logic.)

Statuses:

- ``none``: no episode. ``resolved_*`` may remember the last episode a clinician
  resolved, for the re-alert policy.
- ``pending``: a breach waiting ``retake_minutes`` for a retake (artefact handling). A
  normal retake withdraws it (``withdrawn``, never an alert); a breaching retake, or
  ``due_at`` passing (:func:`due`), opens it.
- ``open``: an alert. Severity follows the data up and down (``severity_changed``);
  further breaches are ``updated``.
- ``cleared``: an episode whose rule cleared. A latching one stays until a clinician
  resolves it; a non-latching one resolves by itself (``auto_resolved``) once its rule
  has stayed clear for ``resolve_after_hours`` (at once when that is 0), and goes back
  to open if the rule breaches before.

A clinician's resolution (:func:`resolve`) ends an episode; afterwards the rule re-alerts
(``reopened``) only when the level is higher than at resolution, the measure is worse
than the resolved worst by ``worsen_by``, the rule cleared after the resolution and
breached again, or the condition still holds ``realert.after_hours`` later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

from homemonitor.contract.readings import Quantity
from homemonitor.rules.kinds import EPS, LEVEL_NAMES, URGENT, WARNING, Assessment, Fact
from homemonitor.rules.plan import (
    AverageRule,
    BaselineRule,
    ChangeRule,
    RuleSpec,
    ScoreRule,
    ThresholdRule,
)

Status: TypeAlias = Literal["none", "pending", "open", "cleared"]
ChangeKind: TypeAlias = Literal[
    "opened",  # a new episode (from a breach, a breaching retake, or a pending one at due)
    "reopened",  # a new episode of a rule whose last one a clinician resolved (re-alert)
    "severity_changed",  # an open episode's severity went up or down
    "updated",  # an open episode saw another breach (count, worst); or breached again
    # after it had cleared (latched), which makes it open again
    "cleared",  # a latching episode's clear condition holds: it stays until resolved
    "auto_resolved",  # a non-latching episode cleared and resolved itself
    "withdrawn",  # a pending breach was an artefact: a normal retake came in time
]
CHANGE_KINDS: tuple[ChangeKind, ...] = (
    "opened",
    "reopened",
    "severity_changed",
    "updated",
    "cleared",
    "auto_resolved",
    "withdrawn",
)
#: Why a re-alert was allowed (``Change.reason`` of ``reopened``).
RealertReason: TypeAlias = Literal["higher", "worse", "rearmed", "persisted"]


@dataclasses.dataclass(frozen=True, slots=True)
class EpisodeState:
    """Everything the engine remembers about one (patient, rule) between batches.

    The default value is the *idle* state (no episode, nothing remembered): the worker
    need not store it, and deletes the row when a state becomes idle again (``idle``).

    - ``status``: ``none`` | ``pending`` | ``open`` | ``cleared`` (see the module).
    - ``level``: the current severity, 1 warning or 2 urgent (pending: the breach's).
    - ``peak``: the highest severity this episode reached (``latching: auto`` latches at 2).
    - ``opened_at``: measured_at of the point that opened it (pending: that breached).
    - ``evaluated_at``: measured_at of the newest point that changed this state; older
      points (out-of-order arrivals) never transition it.
    - ``cleared_at``: when the rule cleared (status ``cleared``); after a clinician's
      resolution (status ``none``), when the current clear spell began (re-arming).
    - ``due_at``: when a pending breach opens without a normal retake.
    - ``worst``: the worst measure (see :class:`~homemonitor.rules.kinds.Assessment`).
    - ``count``: breaching points in this episode.
    - ``sentences``, ``facts``: the explanation of the opening (pending: of the breach, which
      opens the episode at ``due_at``), its sentence by language (``sv``, ``en``).
    - ``resolved_level``, ``resolved_worst``, ``resolved_at``: the last episode a clinician
      resolved (its peak, worst measure and time); ``rearmed``: the rule cleared since.
    """

    status: Status = "none"
    level: int = 0
    peak: int = 0
    opened_at: datetime | None = None
    evaluated_at: datetime | None = None
    cleared_at: datetime | None = None
    due_at: datetime | None = None
    worst: float | None = None
    count: int = 0
    sentences: Mapping[str, str] | None = None
    facts: Mapping[str, Fact] | None = None
    resolved_level: int = 0
    resolved_worst: float | None = None
    resolved_at: datetime | None = None
    rearmed: bool = False

    @property
    def idle(self) -> bool:
        """No episode and nothing remembered: equal to ``EpisodeState()``."""
        return self == IDLE

    @property
    def active(self) -> bool:
        """An alert exists: open, or cleared but not yet resolved."""
        return self.status in ("open", "cleared")

    @property
    def severity(self) -> str:
        """``none``, ``warning`` or ``urgent``."""
        return LEVEL_NAMES[self.level]

    @property
    def sentence(self) -> str | None:
        """The explanation's English sentence (the API's ``sentence``)."""
        return english(self.sentences)


IDLE = EpisodeState()


def english(sentences: Mapping[str, str] | None) -> str | None:
    """The English one of a sentence by language, if there is one."""
    return None if sentences is None else sentences.get("en")


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One transition of one (patient, rule) episode: what the worker writes as an event.

    ``at`` is the measured_at of the point that caused it (for a pending breach opened by
    :func:`due`: the breach's measured_at; ``clock`` says when it was decided).
    ``level``/``previous`` are the severity after and before (0 when none). ``value`` and
    ``measure`` come from the assessment (None for ``due`` and ``withdrawn``...), and
    ``sentences`` (by language)/``facts`` explain it. ``reason`` says why a re-alert was allowed.
    ``state`` is the episode's state after the change.
    """

    kind: ChangeKind
    rule: str
    rule_kind: str
    at: datetime
    level: int
    previous: int
    value: float | None
    measure: float | None
    sentences: Mapping[str, str] | None
    facts: Mapping[str, Fact] | None
    state: EpisodeState
    reason: RealertReason | None = None
    clock: datetime | None = None

    @property
    def severity(self) -> str:
        """The severity after the change: ``none``, ``warning`` or ``urgent``."""
        return LEVEL_NAMES[self.level]

    @property
    def sentence(self) -> str | None:
        """The explanation's English sentence (the API's ``sentence``)."""
        return english(self.sentences)


#: ``realert.worsen_by`` when a rule does not set it, per quantity (thresholds, changes,
#: baselines: the measure is in the quantity's unit).
WORSEN_BY: Mapping[Quantity, float] = {
    Quantity.BODY_WEIGHT: 1.0,
    Quantity.SYSTOLIC: 10.0,
    Quantity.DIASTOLIC: 10.0,
    Quantity.MEAN_ARTERIAL: 10.0,
    Quantity.HEART_RATE: 10.0,
    Quantity.SPO2: 2.0,
}
#: ... for an average protocol (mmHg above its bound), a score (points) and a composite
#: baseline (its score, in stable-state SDs: two, as SpO2's 2 % and pulse's 10/min above).
WORSEN_BY_AVERAGE = 5.0
WORSEN_BY_SCORE = 2.0
WORSEN_BY_COMPOSITE = 2.0


def worsen_by(rule: RuleSpec) -> float:
    """How much worse than a resolved episode's worst a measure must be to re-alert."""
    if rule.realert.worsen_by is not None:
        return rule.realert.worsen_by
    if isinstance(rule, BaselineRule) and rule.method == "composite":
        return WORSEN_BY_COMPOSITE
    if isinstance(rule, ThresholdRule | ChangeRule | BaselineRule):
        return WORSEN_BY[rule.quantity]
    if isinstance(rule, AverageRule):
        return WORSEN_BY_AVERAGE
    assert isinstance(rule, ScoreRule)
    return WORSEN_BY_SCORE


def latches(rule: RuleSpec, peak: int) -> bool:
    """Whether an episode that reached ``peak`` stays after its rule cleared."""
    if rule.latching == "always":
        return True
    if rule.latching == "never":
        return False
    return peak >= URGENT


def _worse(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _change(
    kind: ChangeKind,
    rule: RuleSpec,
    before: EpisodeState,
    after: EpisodeState,
    at: datetime,
    *,
    a: Assessment | None,
    reason: RealertReason | None = None,
    clock: datetime | None = None,
) -> Change:
    return Change(
        kind=kind,
        rule=rule.id,
        rule_kind=rule.kind,
        at=at,
        level=after.level if after.status != "none" else 0,
        previous=before.level if before.active else 0,
        value=None if a is None else a.value,
        measure=None if a is None else a.measure,
        sentences=after.sentences if a is None else a.sentences(),
        facts=after.facts if a is None else a.facts,
        state=after,
        reason=reason,
        clock=clock,
    )


def _realert(rule: RuleSpec, state: EpisodeState, a: Assessment) -> RealertReason | None:
    """Why the rule may alert again after a clinician's resolution (None: it may not)."""
    assert state.resolved_at is not None
    if state.rearmed or (
        state.cleared_at is not None
        and state.evaluated_at is not None
        and _clear_long_enough(rule, state.cleared_at, state.evaluated_at)
    ):
        return "rearmed"
    if a.level > state.resolved_level:
        return "higher"
    if (
        state.resolved_worst is not None
        and a.measure is not None
        and a.measure - state.resolved_worst >= worsen_by(rule) - EPS
    ):
        return "worse"
    if a.at - state.resolved_at >= timedelta(hours=rule.realert.after_hours):
        return "persisted"
    return None


def _opened(
    rule: RuleSpec,
    before: EpisodeState,
    a: Assessment,
    *,
    level: int,
    count: int,
    worst: float | None,
    reason: RealertReason | None,
) -> tuple[EpisodeState, list[Change]]:
    after = EpisodeState(
        status="open",
        level=level,
        peak=level,
        opened_at=a.at,
        evaluated_at=a.at,
        worst=worst,
        count=count,
        sentences=a.sentences(),
        facts=a.facts,
    )
    kind: ChangeKind = "reopened" if before.resolved_at is not None else "opened"
    return after, [_change(kind, rule, before, after, a.at, a=a, reason=reason)]


def decide(
    rule: RuleSpec, state: EpisodeState, assessment: Assessment, *, current: bool
) -> tuple[EpisodeState, list[Change]]:
    """The next state of ``rule``'s episode after ``assessment``, and the changes on the way.

    ``current`` is false for a point that is history (older than the plan's
    ``current_hours``, or a reading with clock flags): it can clear, de-escalate and count
    but never opens (or escalates) an episode. A point older than ``state.evaluated_at``
    changes nothing. A pending breach whose ``due_at`` has passed by ``assessment.at``
    opens first (:func:`due`). Returns ``state`` itself when nothing changed.
    """
    a, at = assessment, assessment.at
    if state.evaluated_at is not None and at < state.evaluated_at:
        return state, []
    changes: list[Change] = []
    if state.status == "pending" and state.due_at is not None and state.due_at <= at:
        state, changes = due(rule, state, state.due_at)
    new, more = _step(rule, state, a, current=current)
    return new, changes + more


def _step(
    rule: RuleSpec, state: EpisodeState, a: Assessment, *, current: bool
) -> tuple[EpisodeState, list[Change]]:
    at = a.at
    same_point = state.evaluated_at == at
    judged = a.value is not None and "insufficient" not in a.facts
    if state.status == "none":
        if not a.level:
            if state.resolved_at is not None and not state.rearmed:
                return _rearming(rule, state, a, judged=judged)
            return state, []
        if not current:
            return state, []
        reason = None
        if state.resolved_at is not None:
            reason = _realert(rule, state, a)
            if reason is None:  # resolved by a clinician, and nothing new since
                if state.cleared_at is not None:  # a breach ends a clear spell
                    return dataclasses.replace(state, cleared_at=None, evaluated_at=at), []
                return state, []
        if rule.retake_minutes is not None:
            pending = dataclasses.replace(
                state,
                status="pending",
                level=a.level,
                peak=a.level,
                opened_at=at,
                evaluated_at=at,
                due_at=at + timedelta(minutes=rule.retake_minutes),
                worst=a.measure,
                count=1,
                sentences=a.sentences(),
                facts=a.facts,
            )
            return pending, []
        return _opened(rule, state, a, level=a.level, count=1, worst=a.measure, reason=reason)

    if state.status == "pending":
        if a.level:
            if not current or same_point:  # history, or the pending breach itself again
                return state, []
            return _opened(
                rule,
                state,
                a,
                level=max(state.level, a.level),
                count=state.count + (0 if same_point else 1),
                worst=_worse(state.worst, a.measure),
                reason=_realert(rule, state, a) if state.resolved_at is not None else None,
            )
        if not judged:
            return state, []
        after = EpisodeState(
            resolved_level=state.resolved_level,
            resolved_worst=state.resolved_worst,
            resolved_at=state.resolved_at,
            rearmed=state.rearmed,
            evaluated_at=at if state.resolved_at is not None else None,
        )
        return after, [_change("withdrawn", rule, state, after, at, a=a)]

    # open, or cleared and not yet resolved
    if same_point:  # this point was applied already (a redelivery): nothing new
        return state, []
    if a.level:
        level = a.level if current else min(a.level, state.level)
        count = state.count + (0 if same_point else 1)
        worst = _worse(state.worst, a.measure)
        after = dataclasses.replace(
            state,
            status="open",
            level=level,
            peak=max(state.peak, level),
            evaluated_at=at,
            cleared_at=None,
            worst=worst,
            count=count,
        )
        if after == state:
            return state, []
        kind: ChangeKind = "severity_changed" if level != state.level else "updated"
        return after, [_change(kind, rule, state, after, at, a=a)]
    if state.status == "cleared":
        if a.cleared or not judged:
            return _auto_resolve(rule, state, at, a=a)
        return state, []  # in the hysteresis band: neither breaching nor clear
    if a.cleared:
        if not latches(rule, state.peak) and not rule.resolve_after_hours:
            return IDLE, [_change("auto_resolved", rule, state, IDLE, at, a=a)]
        after = dataclasses.replace(state, status="cleared", cleared_at=at, evaluated_at=at)
        return after, [_change("cleared", rule, state, after, at, a=a)]
    if judged and state.level > WARNING:
        # back below the urgent bound but not (yet) clear: de-escalate, stay open
        after = dataclasses.replace(state, level=WARNING, evaluated_at=at)
        return after, [_change("severity_changed", rule, state, after, at, a=a)]
    return state, []


def _rearming(
    rule: RuleSpec, state: EpisodeState, a: Assessment, *, judged: bool
) -> tuple[EpisodeState, list[Change]]:
    """After a clinician's resolution: the rule re-arms once it stayed clear long enough.

    "Clear" means clear for ``resolve_after_hours`` (at once when 0), the same spell that
    lets a non-latching episode resolve by itself: a noisy value that dips below its limit
    for one reading has not recovered, and its next breach is not a relapse.
    ``cleared_at`` holds when the current clear spell began.
    """
    at = a.at
    if not a.cleared:
        if judged and state.cleared_at is not None:  # in the band again: the spell ends
            return dataclasses.replace(state, cleared_at=None, evaluated_at=at), []
        return state, []
    since = state.cleared_at or at
    if _clear_long_enough(rule, since, at):
        return dataclasses.replace(state, rearmed=True, cleared_at=None, evaluated_at=at), []
    if state.cleared_at is None:
        return dataclasses.replace(state, cleared_at=at, evaluated_at=at), []
    return state, []


def _auto_resolve(
    rule: RuleSpec,
    state: EpisodeState,
    at: datetime,
    *,
    a: Assessment | None,
    clock: datetime | None = None,
) -> tuple[EpisodeState, list[Change]]:
    """A cleared, non-latching episode resolves by itself once clear for ``resolve_after``."""
    assert state.cleared_at is not None
    if latches(rule, state.peak):
        return state, []
    if not _clear_long_enough(rule, state.cleared_at, at):
        return state, []
    return IDLE, [_change("auto_resolved", rule, state, IDLE, at, a=a, clock=clock)]


_TICK = timedelta(microseconds=1)


def _clear_long_enough(rule: RuleSpec, since: datetime, at: datetime) -> bool:
    """Whether a clear spell that began at ``since`` lasts ``resolve_after_hours`` by ``at``."""
    return at - since >= timedelta(hours=rule.resolve_after_hours) - _TICK


def due(rule: RuleSpec, state: EpisodeState, at: datetime) -> tuple[EpisodeState, list[Change]]:
    """Time-driven work for ``rule``'s episode on the clock at ``at``.

    A pending breach whose ``due_at`` is at or before ``at`` opens (``opened``, or
    ``reopened`` after a clinician's resolution) with the breach's level and
    explanation; the change's ``at`` is the breach's measured_at and ``clock`` is ``at``.
    The scheduler (and :func:`homemonitor.rules.replay.replay`) calls this; so do
    :func:`decide` before a later point and :func:`~homemonitor.rules.evaluate.evaluate`
    at its ``now``, so a worker without a scheduler opens it with the patient's next batch.
    """
    if state.status == "cleared" and state.cleared_at is not None:
        resolves_at = state.cleared_at + timedelta(hours=rule.resolve_after_hours)
        if resolves_at <= at:
            return _auto_resolve(rule, state, resolves_at, a=None, clock=at)
        return state, []
    if state.status != "pending" or state.due_at is None or state.due_at > at:
        return state, []
    assert state.opened_at is not None
    after = EpisodeState(
        status="open",
        level=state.level,
        peak=state.level,
        opened_at=state.opened_at,
        evaluated_at=state.evaluated_at,
        worst=state.worst,
        count=state.count,
        sentences=state.sentences,
        facts=state.facts,
    )
    kind: ChangeKind = "reopened" if state.resolved_at is not None else "opened"
    return after, [_change(kind, rule, state, after, state.opened_at, a=None, clock=at)]


def resolve(state: EpisodeState, at: datetime) -> EpisodeState:
    """The state after a clinician resolved the episode at ``at``.

    Remembers its peak level, worst measure and the time for the re-alert policy. A
    latched episode whose rule had already cleared keeps its clear spell: the rule is
    re-armed once that spell lasts ``resolve_after_hours``, as after any resolution, not
    at once (a value that dipped inside its bound an hour before the clinician resolved
    has not recovered, and its next breach is no relapse). Resolving when nothing is open
    (idle, pending) changes nothing.
    """
    if not state.active:
        return state
    return EpisodeState(
        evaluated_at=state.evaluated_at,
        cleared_at=state.cleared_at if state.status == "cleared" else None,
        resolved_level=state.peak,
        resolved_worst=state.worst,
        resolved_at=at,
    )
