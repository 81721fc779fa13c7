"""The one adapter between the evaluation and the rules engine: :func:`run_plan`.

A care plan (:class:`~homemonitor.rules.plan.CarePlanSpec`) is resolved against the
condition templates (:data:`homemonitor.rules.templates.TEMPLATES`) and replayed over a
patient's readings with the engine's own replay (:func:`homemonitor.rules.replay.replay`,
the same ``evaluate`` the worker runs), with a simulated clinician who resolves every open
episode 24 hours after it opened. Nothing else in the evaluation knows how the engine is
called, so scoring can be tested with any function of the same shape (:data:`RunPlan`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from homemonitor.errors import HomemonitorError
from homemonitor.rules.history import StoredReading
from homemonitor.rules.plan import CarePlanSpec, resolve
from homemonitor.rules.replay import ResolvePolicy, replay
from homemonitor.rules.templates import TEMPLATES
from homemonitor_devices.cohort import CohortReading
from homemonitor_eval.metrics import Episode

__all__ = ["CLINICIAN", "EngineUnavailableError", "RunPlan", "run_plan"]

#: The simulated clinician: resolves each open episode 24 hours after it opened.
CLINICIAN = ResolvePolicy(after=timedelta(hours=24))

#: What the runner calls per patient and rule set: a plan and readings in, episodes out.
RunPlan = Callable[[CarePlanSpec, Sequence[CohortReading]], Sequence[Episode]]


class EngineUnavailableError(HomemonitorError):
    """A rule set cannot run in this checkout (raised by stand-ins; the runner skips it)."""


def stored(readings: Sequence[CohortReading]) -> list[StoredReading]:
    """The cohort's readings as the engine reads stored ones (quality flags included)."""
    return [
        StoredReading(r.measured_at, r.device_id, r.metric, r.values, frozenset(r.quality))
        for r in readings
    ]


def run_plan(plan_spec: CarePlanSpec, readings: Sequence[CohortReading]) -> Sequence[Episode]:
    """The episodes ``plan_spec`` raises over ``readings``, with the simulated clinician."""
    plan = resolve(plan_spec, 1, TEMPLATES)
    return replay(plan, stored(readings), clinician=CLINICIAN)
