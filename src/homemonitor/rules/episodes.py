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
- ``cleared``: a latching episode whose rule cleared; it stays until a clinician
  resolves it. A non-latching one resolves by itself instead (``auto_resolved``).

A clinician's resolution (:func:`resolve`) ends an episode; afterwards the rule re-alerts
(``reopened``) only when the level is higher than at resolution, the measure is worse
than the resolved worst by ``worsen_by``, the rule cleared after the resolution and
breached again, or the condition still holds ``realert.after_hours`` later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Literal, TypeAlias

from homemonitor.rules.kinds import LEVEL_NAMES, Assessment, Fact
from homemonitor.rules.plan import RuleSpec

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
    - ``cleared_at``: when a latching episode's rule cleared (status ``cleared``).
    - ``due_at``: when a pending breach opens without a normal retake.
    - ``worst``: the worst measure (see :class:`~homemonitor.rules.kinds.Assessment`).
    - ``count``: breaching points in this episode.
    - ``sentence``, ``facts``: the explanation of the opening (pending: of the breach, which
      opens the episode at ``due_at``).
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
    sentence: str | None = None
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


IDLE = EpisodeState()


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One transition of one (patient, rule) episode: what the worker writes as an event.

    ``at`` is the measured_at of the point that caused it (for a pending breach opened by
    :func:`due`: the breach's measured_at; ``clock`` says when it was decided).
    ``level``/``previous`` are the severity after and before (0 when none). ``value`` and
    ``measure`` come from the assessment (None for ``due`` and ``withdrawn``...), and
    ``sentence``/``facts`` explain it. ``reason`` says why a re-alert was allowed.
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
    sentence: str | None
    facts: Mapping[str, Fact] | None
    state: EpisodeState
    reason: RealertReason | None = None
    clock: datetime | None = None

    @property
    def severity(self) -> str:
        """The severity after the change: ``none``, ``warning`` or ``urgent``."""
        return LEVEL_NAMES[self.level]


def decide(
    rule: RuleSpec, state: EpisodeState, assessment: Assessment, *, current: bool
) -> tuple[EpisodeState, list[Change]]:
    """The next state of ``rule``'s episode after ``assessment``, and the changes on the way.

    ``current`` is false for a point that is history (older than the plan's
    ``current_hours``, or a reading with clock flags): it can clear, de-escalate and count
    but never opens (or escalates) an episode. A point older than ``state.evaluated_at``
    changes nothing. A pending breach whose ``due_at`` has passed by ``assessment.at``
    opens first (:func:`due`).
    """
    raise NotImplementedError


def due(rule: RuleSpec, state: EpisodeState, at: datetime) -> tuple[EpisodeState, list[Change]]:
    """Time-driven work for ``rule``'s episode on the clock at ``at``.

    A pending breach whose ``due_at`` is at or before ``at`` opens (``opened``). The
    scheduler (and :func:`homemonitor.rules.replay.replay`) calls this; so does
    :func:`decide` before a later point, so a worker without a scheduler opens it with the
    patient's next reading.
    """
    raise NotImplementedError


def resolve(state: EpisodeState, at: datetime) -> EpisodeState:
    """The state after a clinician resolved the episode at ``at``.

    Remembers its peak level, worst measure and the time for the re-alert policy; a
    latched episode whose rule had already cleared counts as re-armed. Resolving when
    nothing is open changes nothing.
    """
    raise NotImplementedError
