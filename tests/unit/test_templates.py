"""Condition templates (``homemonitor.rules.templates``): load, resolve, personalise."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest

from homemonitor.errors import PlanError
from homemonitor.rules import plan, templates
from homemonitor.rules.plan import CarePlanSpec, ScoreRule, ThresholdRule

#: The personal values each shipped template expects, as a clinician would set them.
PERSONAL: dict[str, dict[str, float]] = {
    "heart_failure": {"dry_weight": 82.0},
    "hypertension": {},
    "copd": {"target_spo2_low": 88, "target_spo2_high": 92},
}
ALL_RULES = [(name, rule) for name, t in templates.TEMPLATES.items() for rule in t]


def _resolve(name: str, **spec: Any) -> plan.Plan:
    fields: dict[str, Any] = {"template": name, "personal": PERSONAL[name], **spec}
    return plan.resolve(CarePlanSpec.model_validate(fields), 3, templates.TEMPLATES)


def test_the_three_templates_load_with_their_description() -> None:
    """heart_failure, hypertension and copd load, each with a title, version, description."""
    assert ["copd", "heart_failure", "hypertension"] == sorted(templates.TEMPLATES)
    for name, template in templates.TEMPLATES.items():
        assert (name, True, True) == (template.name, template.version >= 1, len(template) > 0)
        assert template.title and template.description


def test_templates_are_package_data() -> None:
    """The YAML files are package resources (what the wheel ships) and say they are examples."""
    folder = resources.files("homemonitor.rules").joinpath("templates")
    for name in templates.NAMES:
        text = folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        assert "not clinical advice" in text


@pytest.mark.parametrize("name", sorted(PERSONAL))
def test_every_template_resolves_with_its_personal_values(name: str) -> None:
    """plan.resolve turns a template and its personal values into the template's rules, in order."""
    resolved = _resolve(name)
    template = templates.TEMPLATES[name]
    assert [r.id for r in template] == [r.id for r in resolved.rules]
    assert (3, name, PERSONAL[name]) == (resolved.version, resolved.template, resolved.personal)


def test_personal_values_declared_are_those_the_tests_set() -> None:
    """Each template's required personal values are the ones its plans must set."""
    expected = {"heart_failure": {"dry_weight"}, "hypertension": set(), "copd": {"target_spo2_low"}}
    assert expected == {n: set(t.required) for n, t in templates.TEMPLATES.items()}
    assert {"target_spo2_low", "target_spo2_high"} == set(templates.TEMPLATES["copd"].personal)


@pytest.mark.parametrize(
    ("name", "key"), [("heart_failure", "dry_weight"), ("copd", "target_spo2_low")]
)
def test_a_missing_personal_value_is_a_plan_error_that_names_it(name: str, key: str) -> None:
    """Resolving without a value a rule is relative to fails and says which value is missing."""
    with pytest.raises(PlanError, match=re.escape(f"personal '{key}', which is not set")):
        _resolve(name, personal={})


def test_an_override_replaces_a_parameter_of_one_rule() -> None:
    """overrides change the named rule's parameter and leave the other rules as they are."""
    resolved = _resolve("heart_failure", overrides={"weight.gain_3d": {"warning": 1.5}})
    template = templates.TEMPLATES["heart_failure"]
    changed = resolved.rule("weight.gain_3d")
    assert changed is not None and 1.5 == getattr(changed, "warning", None)
    assert [r for r in template if r.id != "weight.gain_3d"] == [
        r for r in resolved.rules if r.id != "weight.gain_3d"
    ]


def test_hypercapnic_copd_switches_the_score_to_scale_2() -> None:
    """The documented override gives NEWS2 SpO2 scale 2 with the 88-92 % target."""
    resolved = _resolve("copd", overrides={"news2.home": {"spo2_scale": 2, "on_oxygen": True}})
    score = resolved.rule("news2.home")
    assert isinstance(score, ScoreRule)
    assert (2, True) == (score.spo2_scale, score.on_oxygen)
    below = resolved.rule("spo2.below_target")
    assert isinstance(below, ThresholdRule)
    assert ("target_spo2_low", -1.0, -5.0) == (below.relative_to, below.warning, below.urgent)


def test_an_override_that_makes_a_rule_invalid_is_a_plan_error() -> None:
    """An override is validated like the rule itself: NEWS2 has no SpO2 scale 3."""
    with pytest.raises(PlanError, match=re.escape("override of 'news2.home': spo2_scale")):
        _resolve("copd", overrides={"news2.home": {"spo2_scale": 3}})


def test_disabled_leaves_a_rule_out() -> None:
    """disabled removes the named rule of the template and nothing else."""
    resolved = _resolve("hypertension", disabled=["systolic.low"])
    expected = [r.id for r in templates.TEMPLATES["hypertension"] if r.id != "systolic.low"]
    assert expected == [r.id for r in resolved.rules]


def test_overrides_and_disabled_must_name_template_rules() -> None:
    """An override or a disabled id the template does not have is refused, naming it."""
    with pytest.raises(PlanError, match=r"override of 'weight\.gain_7d'.*disabled 'spo2\.lo'"):
        _resolve(
            "heart_failure", overrides={"weight.gain_7d": {"warning": 3}}, disabled=["spo2.lo"]
        )


def test_own_rules_add_to_a_template_but_cannot_reuse_its_ids() -> None:
    """A plan's own rules come after the template's; one with a template rule's id is refused."""
    own = {
        "id": "spo2.above_target",
        "kind": "threshold",
        "quantity": "spo2",
        "direction": "high",
        "relative_to": "target_spo2_high",
        "warning": 3,
        "k": 2,
        "n": 3,
    }
    resolved = _resolve("copd", rules=[own])
    assert "spo2.above_target" == resolved.rules[-1].id
    with pytest.raises(PlanError, match=re.escape("two rules are named 'news2.home'")):
        _resolve("copd", rules=[{**own, "id": "news2.home"}])


@pytest.mark.parametrize(("name", "rule"), ALL_RULES, ids=[f"{n}:{r.id}" for n, r in ALL_RULES])
def test_every_rule_cites_a_source(name: str, rule: plan.RuleSpec) -> None:
    """Each template rule says where it and its numbers come from."""
    assert rule.source.strip(), f"{name}: {rule.id} has no source"


_MINIMAL = """
title: T
version: 1
description: d
personal: {}
rules:
  - {id: a.b, kind: threshold, quantity: spo2, direction: low, warning: 90, source: s}
"""


def test_parse_refuses_a_rule_without_source() -> None:
    """A template rule without a citation is refused when the template is read."""
    with pytest.raises(
        PlanError, match=re.escape("template 't' is invalid: rule 'a.b' cites no source")
    ):
        templates.parse("t", _MINIMAL.replace(", source: s", ""))


def test_parse_refuses_an_undeclared_personal_value() -> None:
    """A rule relative to a personal value the template does not declare required is refused."""
    text = _MINIMAL.replace("warning: 90", "relative_to: target, warning: -2")
    with pytest.raises(PlanError, match=re.escape("relative to 'target': declare it required")):
        templates.parse("t", text)


def test_parse_names_the_invalid_field() -> None:
    """A rule that does not validate is refused with the path of the first problem."""
    with pytest.raises(PlanError, match=r"template 't' is invalid: rules\.0\.threshold\.n: "):
        templates.parse("t", _MINIMAL.replace("warning: 90", "warning: 90, n: 99"))
