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
from collections.abc import Sequence
from datetime import datetime, timedelta

from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.plan import Plan


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
    (still open at the end); ``sentence`` the opening explanation; ``reopened`` whether it
    was a re-alert after a clinician's resolution.
    """

    rule: str
    kind: str
    severity: str
    opened_at: datetime
    cleared_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    sentence: str
    reopened: bool = False


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
    raise NotImplementedError
