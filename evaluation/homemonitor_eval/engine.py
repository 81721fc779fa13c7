"""The one adapter between the evaluation and the rules engine: :func:`run_plan`.

A care plan (:class:`~homemonitor.rules.plan.CarePlanSpec`) is resolved against the
condition templates and replayed over a patient's readings with the engine's own replay
(``homemonitor.rules.replay.replay``, the same ``evaluate`` the worker runs), with a
simulated clinician who resolves every open episode 24 hours after it opened. Nothing
else in the evaluation knows how the engine is called, so scoring can be tested with any
function of the same shape (:data:`RunPlan`).

Until the engine is on this branch its modules are looked up when first called, and a
missing one raises :class:`EngineUnavailableError` naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from homemonitor.errors import HomemonitorError
from homemonitor.rules.plan import CarePlanSpec, Template, resolve
from homemonitor_devices.cohort import CohortReading
from homemonitor_eval.metrics import Episode

__all__ = ["CLINICIAN_AFTER", "EngineUnavailableError", "RunPlan", "run_plan", "templates"]

#: The simulated clinician resolves each open episode this long after it opened.
CLINICIAN_AFTER = timedelta(hours=24)

#: What the runner calls per patient and rule set: a plan and readings in, episodes out.
RunPlan = Callable[[CarePlanSpec, Sequence[CohortReading]], Sequence[Episode]]


class EngineUnavailableError(HomemonitorError):
    """The rules engine (or its templates) is not importable from this checkout."""


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"{name} is not available in this checkout: {exc}"
        raise EngineUnavailableError(msg) from exc


def templates() -> Mapping[str, Template]:
    """The condition templates by name (``homemonitor.rules.templates.TEMPLATES``)."""
    found = getattr(_module("homemonitor.rules.templates"), "TEMPLATES", None)
    if not isinstance(found, Mapping):
        msg = "homemonitor.rules.templates has no TEMPLATES mapping"
        raise EngineUnavailableError(msg)
    return found


def run_plan(plan_spec: CarePlanSpec, readings: Sequence[CohortReading]) -> Sequence[Episode]:
    """The episodes ``plan_spec`` raises over ``readings``, with the simulated clinician."""
    replay = _module("homemonitor.rules.replay")
    history = _module("homemonitor.rules.history")
    known = templates() if plan_spec.template is not None else {}
    plan = resolve(plan_spec, 1, known)
    stored = [
        history.StoredReading(
            measured_at=r.measured_at,
            device_id=r.device_id,
            metric=r.metric,
            values=r.values,
            quality=r.quality,
        )
        for r in readings
    ]
    raised: Sequence[Episode] = replay.replay(
        plan, stored, clinician=replay.ResolvePolicy(after=CLINICIAN_AFTER)
    )
    return raised
