"""The Patient page's plan form: a plan shown as fields and read back into the same plan,
a changed number as the override or rule the engine runs, a wrong one named by its field."""

from __future__ import annotations

from typing import Any

import pytest

from homemonitor.rules.plan import CarePlanSpec, resolve
from homemonitor.rules.templates import TEMPLATES
from homemonitor.web import i18n, planform
from homemonitor.web.pages import patient  # noqa: F401  (adds the page's words)

T = i18n.translator("sv")

PLANS = {
    "heart_failure": {"template": "heart_failure", "personal": {"dry_weight": 82.0}},
    "copd": {
        "template": "copd",
        "personal": {"target_spo2_low": 88.0, "target_spo2_high": 92.0},
        "overrides": {"news2.home": {"spo2_scale": 2}, "spo2.below_target": {"k": 1, "n": 1}},
        "disabled": ["heart_rate.trend"],
    },
    "hypertension": {"template": "hypertension"},
    "thresholds": {
        "thresholds": {
            "systolic": {"high": {"warning": 160, "urgent": 180}, "low": {"warning": 95}}
        }
    },
    "own": {
        "rules": [
            {
                "id": "spo2.own",
                "kind": "threshold",
                "quantity": "spo2",
                "direction": "low",
                "warning": 92,
                "k": 2,
                "n": 3,
                "source": "läkarens ordination",
            }
        ]
    },
}


def fields(form: planform.Form) -> dict[str, str]:
    """What a browser posts from ``form`` untouched."""
    found = {"template": form.template}
    found.update({i.name: i.value for i in form.personal})
    for group in form.groups:
        found.update({i.name: i.value for i in group.inputs})
        if group.enabled:
            found[f"enabled.{group.rule_id}"] = "on"
    return found


def edited(data: dict[str, Any], **changes: str) -> tuple[CarePlanSpec | None, planform.Form]:
    """The plan ``data`` posted from its form with ``changes`` (field name → text)."""
    base = CarePlanSpec.model_validate(data)
    posted = fields(planform.show(base, TEMPLATES, T))
    posted.update({k.replace("__", "."): v for k, v in changes.items()})
    return planform.read(base, posted, TEMPLATES, T, "sv")


def errors(form: planform.Form) -> dict[str, str]:
    every = [*form.personal, *(i for g in form.groups for i in g.inputs)]
    return {i.name: i.error for i in every if i.error}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_a_plan_posted_unchanged_from_its_form_is_the_same_plan(name: str) -> None:
    """Every kind of plan goes through its form untouched: nothing set that was not."""
    spec, form = edited(PLANS[name])
    assert ({}, PLANS[name]) == (
        errors(form),
        spec.model_dump(mode="json", exclude_unset=True) if spec else None,
    )


def test_a_changed_template_number_is_an_override_and_back_is_none() -> None:
    """Only what differs from the template is an override, merged with the base's others."""
    spec, _ = edited(PLANS["copd"], **{"rule.spo2.below_target.urgent": "-4"})
    back, _ = edited(PLANS["hypertension"], **{"rule.bp.home_mean.bounds.systolic.warning": "135"})
    mean, _ = edited(PLANS["hypertension"], **{"rule.bp.home_mean.bounds.systolic.warning": "130"})
    assert spec is not None and back is not None and mean is not None
    assert {"spo2_scale": 2} == spec.overrides["news2.home"]
    assert {"k": 1, "n": 1, "urgent": -4.0} == spec.overrides["spo2.below_target"]
    bounds = mean.overrides["bp.home_mean"]["bounds"]
    assert ({}, {"systolic": 130.0, "diastolic": 85.0}) == (
        back.overrides,
        {q: b["warning"] for q, b in bounds.items()},
    )
    plan = resolve(mean, 1, TEMPLATES)
    assert 130.0 == plan.rule("bp.home_mean").bounds["systolic"].warning  # type: ignore[union-attr]


def test_an_unticked_rule_is_disabled_and_its_numbers_are_not_judged() -> None:
    """A template rule the nurse switches off goes to disabled, whatever its fields hold."""
    posted = {"rule.heart_rate.high.urgent": "1"}  # below warning, but the rule is off
    base = CarePlanSpec.model_validate(PLANS["heart_failure"])
    sent = {**fields(planform.show(base, TEMPLATES, T)), **posted}
    del sent["enabled.heart_rate.high"]
    spec, form = planform.read(base, sent, TEMPLATES, T, "sv")
    assert ({}, ["heart_rate.high"]) == (errors(form), spec.disabled if spec else None)
    assert [False] == [g.enabled for g in form.groups if g.rule_id == "heart_rate.high"]


def test_wrong_numbers_are_named_by_their_field_and_nothing_comes_of_them() -> None:
    """Beyond a model limit, urgent on the wrong side, not a number: each said by its field."""
    spec, form = edited(
        PLANS["own"],
        **{"own.spo2.own.urgent": "95", "own.spo2.own.n": "2,5", "own.spo2.own.within_hours": "x"},
    )
    legacy, legacy_form = edited(PLANS["thresholds"], **{"threshold.systolic.low.urgent": "99"})
    low, low_form = edited(PLANS["heart_failure"], **{"rule.weight.gain_3d.window_hours": "800"})
    assert (None, None, None) == (spec, legacy, low)
    assert {
        "own.spo2.own.n": "Skriv ett heltal.",
        "own.spo2.own.within_hours": "Skriv ett tal.",
    } == errors(form)
    assert {
        "threshold.systolic.low.urgent": "Brådskande måste vara på eller under varningsgränsen."
    } == errors(legacy_form)
    assert {"rule.weight.gain_3d.window_hours": "Får vara högst 720."} == errors(low_form)


def test_own_rules_and_bounds_change_in_place_and_an_emptied_bound_goes() -> None:
    """An own rule's number changes the rule; a bound emptied of both levels is removed."""
    own, _ = edited(PLANS["own"], **{"own.spo2.own.warning": "90,5"})
    gone, _ = edited(
        PLANS["thresholds"],
        **{"threshold.systolic.low.warning": "", "threshold.systolic.high.urgent": "175"},
    )
    assert own is not None and gone is not None
    assert (90.5, "läkarens ordination") == (own.rules[0].warning, own.rules[0].source)  # type: ignore[union-attr]
    assert {"systolic": {"high": {"warning": 160.0, "urgent": 175.0}}} == gone.model_dump(
        mode="json", exclude_unset=True
    )["thresholds"]


def test_a_new_template_shows_its_own_fields_and_asks_for_its_values() -> None:
    """Heart failure to COPD: the old overrides and dry weight go, the SpO2 target is asked."""
    spec, form = edited(PLANS["heart_failure"], template="copd")
    filled, _ = planform.read(
        form.base,
        {**fields(form), "personal.target_spo2_low": "90"},
        TEMPLATES,
        T,
        "sv",
    )
    assert None is spec
    assert ("copd", {"personal.target_spo2_low": T("planform.err.required")}) == (
        form.template,
        errors(form),
    )
    assert "spo2.below_target" in [g.rule_id for g in form.groups]
    assert {"template": "copd", "personal": {"target_spo2_low": 90.0}} == (
        filled.model_dump(mode="json", exclude_unset=True) if filled else None
    )
    own_rule = {
        "id": "weight.own",
        "kind": "threshold",
        "quantity": "body_weight",
        "direction": "high",
        "relative_to": "dry_weight",
        "warning": 3.0,
    }
    kept, _ = edited({**PLANS["heart_failure"], "rules": [own_rule]}, template="hypertension")
    assert {"dry_weight": 82.0} == (kept.personal if kept else None)  # the own rule needs it
    unknown, refused = edited(PLANS["heart_failure"], template="nosuch")
    assert (None, "Välj en av mallarna.") == (unknown, refused.template_error)
