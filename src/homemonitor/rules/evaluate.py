"""One patient's care plan over the new readings of a batch: pure, no I/O.

:func:`evaluate` is what the worker calls per patient in a batch (inside the batch's
transaction, under the patient's advisory lock), and what
:func:`homemonitor.rules.replay.replay` calls per replayed reading: one code path.

Evaluation points are the measured times of the new readings (``points``), in measured
order; at each, every rule that got a usable new reading there is assessed over the
history measured at or before it, and the episode state machine
(:func:`homemonitor.rules.episodes.decide`) turns the assessment into changes.

- A point older than ``plan.current_hours`` before ``now``, or whose readings carry clock
  flags, is *history*: it can clear, de-escalate and count, never open.
- A point older than a newer reading already stored for the rule's quantities (an
  out-of-order arrival), or than the episode's ``evaluated_at``, transitions nothing: it
  is history for the next point. So redelivery and batching never change an outcome.
- At the end, pending breaches whose ``due_at`` passed by ``now`` open
  (:func:`homemonitor.rules.episodes.due`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime

from homemonitor.rules.episodes import Change, EpisodeState
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.plan import Plan


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


def evaluate(
    plan: Plan,
    history: History,
    points: Sequence[StoredReading],
    states: Mapping[str, EpisodeState],
    now: datetime,
) -> Outcome:
    """Run ``plan`` at each new reading of ``points``, threading the episode ``states``.

    ``history`` holds the patient's stored readings of the window (at least
    ``plan.lookback()`` before the oldest point, and everything newer), including the
    ``points`` themselves (they are added when missing). ``states`` maps rule ids to
    their stored state; a missing rule is idle. ``points`` need no order; a point that
    is a duplicate of another is evaluated once. ``now`` is the worker's clock.
    """
    raise NotImplementedError
