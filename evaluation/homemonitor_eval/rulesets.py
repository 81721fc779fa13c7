"""The rows of the evaluation: the condition templates, and the reference rules beside them.

* ``templates``: each patient on the template of their condition
  (``homemonitor.rules.templates``), personalised as a clinician would (:func:`personal_for`);
* ``thresholds only``: absolute bounds, the older plan form, as the demo's registry
  wrote them before it used the templates
  (:func:`~homemonitor_devices.simulate.thresholds_for`: a heart-failure weight ceiling of
  dry weight + 2 / + 3 kg, fixed bounds for the rest);
* ``2 kg in 3 days``: the heart-failure rule of thumb of the ESC/HFA self-care advice, a
  change rule against the lowest weight of the preceding 3 days (heart failure only);
* ``MACD weight``: a moving average convergence divergence of weight (Zhang et al., Eur J
  Heart Fail 2009; Gyllensten et al., JMIR Med Inform 2016), the engine's baseline rule
  with ``method: macd`` and its default spans (heart failure only).

A rule set gives each patient a plan, or None when it does not apply to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from homemonitor.contract.readings import Quantity
from homemonitor.rules.plan import BaselineRule, CarePlanSpec, ChangeRule
from homemonitor_devices.cohort import CohortPatient
from homemonitor_devices.simulate import COPD, HEART_FAILURE, thresholds_for

__all__ = ["RULE_SETS", "RuleSet", "personal_for"]


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    """One row group: a name, what it is, and each patient's plan (None: not applicable)."""

    name: str
    description: str
    plan_for: Callable[[CohortPatient], CarePlanSpec | None]
    needs_templates: bool = False


#: How far below a COPD patient's usual resting SpO2 the clinician sets the lower end of
#: the target range (the template asks for "the lowest SpO2 the clinician accepts as that
#: patient's usual, at or below the stable resting value"): two stable-state SDs of about
#: 1 % (Hurst et al. 2010), fixed before any template was evaluated.
SPO2_TARGET_BELOW_USUAL = 2.0


def personal_for(patient: CohortPatient) -> dict[str, float]:
    """The personal values a clinician would enter for ``patient``'s template.

    Heart failure: the dry weight (the patient's true usual weight, as on the clinic's
    scale). COPD breathing air: the lower end of the SpO2 target, the usual resting value
    minus :data:`SPO2_TARGET_BELOW_USUAL`. Hypertension: none.
    """
    if patient.condition == HEART_FAILURE:
        return {"dry_weight": patient.baseline.body_weight}
    if patient.condition == COPD:
        return {"target_spo2_low": patient.baseline.spo2 - SPO2_TARGET_BELOW_USUAL}
    return {}


def _template(patient: CohortPatient) -> CarePlanSpec:
    return CarePlanSpec(template=patient.condition, personal=personal_for(patient))


def _thresholds(patient: CohortPatient) -> CarePlanSpec:
    bounds = thresholds_for(patient.condition, patient.baseline, patient.kinds)
    return CarePlanSpec.model_validate({"thresholds": bounds})


_RULE_OF_THUMB = ChangeRule(
    id="weight.gain_3d",
    quantity=Quantity.BODY_WEIGHT,
    direction="rise",
    warning=2.0,
    window_hours=72.0,
    reference="min",
    source="ESC/HFA self-care advice: a weight gain of more than 2 kg in 3 days",
)
_MACD = BaselineRule(
    id="weight.macd",
    quantity=Quantity.BODY_WEIGHT,
    direction="high",
    method="macd",
    warning=1.0,
    source="Zhang et al., Eur J Heart Fail 2009; Gyllensten et al., JMIR Med Inform 2016",
    note="spans are the engine's defaults; the 1.0 kg level is not taken from either study",
)


def _heart_failure_only(
    rule: ChangeRule | BaselineRule,
) -> Callable[[CohortPatient], CarePlanSpec | None]:
    def plan_for(patient: CohortPatient) -> CarePlanSpec | None:
        if patient.condition != HEART_FAILURE:
            return None
        return CarePlanSpec(rules=[rule])

    return plan_for


RULE_SETS: tuple[RuleSet, ...] = (
    RuleSet("templates", "each patient on their condition's template", _template, True),
    RuleSet("thresholds only", "absolute bounds, the plans before the templates", _thresholds),
    RuleSet(
        "2 kg in 3 days",
        "weight rule of thumb (heart failure)",
        _heart_failure_only(_RULE_OF_THUMB),
    ),
    RuleSet("MACD weight", "MACD of daily weight (heart failure)", _heart_failure_only(_MACD)),
)
