"""The one plain sentence of an assessment, for the episode, the API and the nurse.

It names the quantity, the value with its unit (``Quantity.unit``), what the rule compared
it with, and the plan's version and bound; never the patient. For example::

    weight 84.6 kg, 2.4 kg above the lowest of the previous 3 days (82.2 kg); plan v3:
    2 kg or more in 3 days
"""

from __future__ import annotations

from collections.abc import Mapping

from homemonitor.contract.readings import Quantity
from homemonitor.rules.kinds import Assessment, Fact
from homemonitor.rules.plan import (
    AverageRule,
    BaselineRule,
    ChangeRule,
    ScoreRule,
    ThresholdRule,
)

_NAMES = {
    Quantity.SYSTOLIC: "systolic",
    Quantity.DIASTOLIC: "diastolic",
    Quantity.MEAN_ARTERIAL: "mean arterial pressure",
    Quantity.HEART_RATE: "pulse",
    Quantity.BODY_WEIGHT: "weight",
    Quantity.SPO2: "SpO2",
}


def name(quantity: Quantity) -> str:
    """The quantity as a nurse says it (``weight``, ``SpO2``, ``pulse``)."""
    return _NAMES[quantity]


def number(x: float) -> str:
    """``x`` to one decimal, without a trailing ``.0``.

    >>> number(84.6), number(2.3999999), number(180.0), number(-0.04)
    ('84.6', '2.4', '180', '0')
    """
    text = f"{x:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def amount(x: float, quantity: Quantity) -> str:
    """``x`` with ``quantity``'s unit: ``84.6 kg``, ``182 mmHg``, ``91%``, ``112/min``.

    >>> amount(91, Quantity.SPO2), amount(112, Quantity.HEART_RATE)
    ('91%', '112/min')
    >>> amount(84.6, Quantity.BODY_WEIGHT)
    '84.6 kg'
    """
    unit = quantity.unit
    return f"{number(x)}{unit}" if unit[0] in "%/" else f"{number(x)} {unit}"


def _window(hours: float) -> str:
    if hours % 24 == 0:
        days = int(hours // 24)
        return "day" if days == 1 else f"{days} days"
    return f"{number(hours)} h"


def _f(facts: Mapping[str, Fact], key: str) -> float:
    value = facts.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def sentence(assessment: Assessment) -> str:
    """One plain sentence saying what ``assessment`` found and against which plan rule."""
    rule = assessment.rule
    if isinstance(rule, ThresholdRule):
        found, plan = _threshold(assessment, rule)
    elif isinstance(rule, ChangeRule):
        found, plan = _change(assessment, rule)
    elif isinstance(rule, AverageRule):
        found, plan = _average(assessment, rule)
    elif isinstance(rule, BaselineRule):
        found, plan = _baseline(assessment, rule)
    else:
        found, plan = _score(assessment, rule)
    return f"{found}; plan v{assessment.plan_version}: {plan}"


def _threshold(a: Assessment, rule: ThresholdRule) -> tuple[str, str]:
    q, facts = rule.quantity, a.facts
    side = "at or above" if rule.direction == "high" else "at or below"
    more = "or more" if rule.direction == "high" else "or less"
    personal = rule.relative_to.replace("_", " ") if rule.relative_to else None
    parts = []
    for level, offset in (("warning", rule.warning), ("urgent", rule.urgent)):
        if offset is None:
            continue
        if personal is None:
            parts.append(f"{level} at {amount(offset, q)} {more}")
        else:
            where = "above" if offset >= 0 else "below"
            parts.append(f"{level} at {amount(abs(offset), q)} {where} {personal}")
    if rule.n > 1:
        parts.append(f"in {rule.k} of {rule.n} readings")
    if rule.for_hours is not None:
        parts.append(f"for {_window(rule.for_hours)}")
    plan = ", ".join(parts)
    if a.value is None:
        return f"{name(q)}: no reading", plan
    found = f"{name(q)} {amount(a.value, q)}"
    if personal is not None:
        ref = _f(facts, "reference")
        diff = a.value - ref
        where = "above" if diff >= 0 else "below"
        found += f", {amount(abs(diff), q)} {where} {personal} ({amount(ref, q)})"
    bound = _f(facts, "bound")
    if a.level:
        found += f", {side} the {a.severity} bound of {amount(bound, q)}"
        if "breaching" in facts:
            found += f" in {facts['breaching']} of the last {facts['readings']} readings"
        if "run_hours" in facts:
            found += f" for {number(_f(facts, 'run_hours'))} h"
    else:
        inside = "below" if rule.direction == "high" else "above"
        which = "warning" if rule.warning is not None else "urgent"
        found += f", {inside} the {which} bound of {amount(bound, q)}"
    return found, plan


_REFERENCE = {"min": "lowest", "max": "highest", "mean": "mean", "first": "first reading"}


def _change(a: Assessment, rule: ChangeRule) -> tuple[str, str]:
    q, facts = rule.quantity, a.facts
    window = _window(rule.window_hours)
    levels = [
        (level, delta)
        for level, delta in (("warning", rule.warning), ("urgent", rule.urgent))
        if delta is not None
    ]
    if len(levels) == 1:
        plan = f"{amount(levels[0][1], q)} or more in {window}"
    else:
        plan = ", ".join(f"{lv} at {amount(d, q)} or more" for lv, d in levels)
        plan += f" in {window}"
    if rule.direction == "fall":
        plan = f"a fall of {plan}"
    previous = "the previous day" if window == "day" else f"the previous {window}"
    if a.value is None:
        return f"{name(q)}: no reading", plan
    found = f"{name(q)} {amount(a.value, q)}"
    if "reference" not in facts:
        return f"{found}, too few readings in {previous} to compare with", plan
    ref = _f(facts, "reference")
    diff = a.value - ref
    where = "above" if diff >= 0 else "below"
    what = _REFERENCE[rule.reference]
    found += f", {amount(abs(diff), q)} {where} the {what} of {previous} ({amount(ref, q)})"
    return found, plan


def _average(a: Assessment, rule: AverageRule) -> tuple[str, str]:
    facts = a.facts
    levels = []
    for level in ("warning", "urgent"):
        bounds = [amount(getattr(b, level), q) for q, b in rule.bounds.items() if getattr(b, level)]
        names = [name(q) for q, b in rule.bounds.items() if getattr(b, level)]
        if bounds:
            either = " or ".join(f"{n} {b}" for n, b in zip(names, bounds, strict=True))
            levels.append(f"{level} at a mean {either} or more")
    plan = ", ".join(levels) + f", over up to {rule.days} days"
    means = [
        f"{name(q)} {amount(_f(facts, f'mean_{q.value}'), q)}"
        for q in rule.bounds
        if facts.get(f"mean_{q.value}") is not None
    ]
    counts = (
        f"{facts.get('n_days', 0)} days, {facts.get('n_sessions', 0)} sessions, "
        f"{facts.get('n_readings', 0)} readings"
    )
    discarded = "; first day discarded" if facts.get("discarded_day") else ""
    if "insufficient" in facts:
        return f"home average: too few days or readings yet ({counts}{discarded})", plan
    return f"home mean {', '.join(means)} ({counts}{discarded})", plan


def _baseline(a: Assessment, rule: BaselineRule) -> tuple[str, str]:
    q, facts = rule.quantity, a.facts
    side = "above" if rule.direction == "high" else "below"
    floor = f", at least {amount(rule.min_deviation, q)}" if rule.min_deviation else ""
    if rule.method == "macd":
        parts = [
            f"{lv} at {amount(x, q)} or more"
            for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
            if x is not None
        ]
        plan = ", ".join(parts) + f" {side} ({number(rule.short_days)}- vs "
        plan += f"{number(rule.long_days)}-day trend){floor}"
    else:
        parts = [
            f"{lv} at {number(x)} SD"
            for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
            if x is not None
        ]
        plan = ", ".join(parts) + f" of the EWMA {side} the personal baseline{floor}"
    if a.value is None:
        return f"{name(q)}: no reading", plan
    found = f"{name(q)} {amount(a.value, q)}"
    if "insufficient" in facts:
        n = facts.get("run_in_n", facts.get("n", 0))
        swap = ", new device" if facts.get("device_changed") else ""
        return (
            f"{found}: personal baseline not armed yet ({n} of {rule.min_run_in_readings} "
            f"run-in readings{swap})",
            plan,
        )
    if rule.method == "macd":
        macd = _f(facts, "macd")
        where = side if macd >= 0 else ("below" if side == "above" else "above")
        found += (
            f", its {number(rule.short_days)}-day trend {amount(abs(macd), q)} {where} "
            f"its {number(rule.long_days)}-day trend (MACD)"
        )
        return found, plan
    dev = _f(facts, "deviation")
    where = side if dev >= 0 else ("below" if side == "above" else "above")
    found += (
        f", its EWMA {amount(_f(facts, 'ewma'), q)} is {amount(abs(dev), q)} {where} the "
        f"personal baseline of {amount(_f(facts, 'baseline'), q)} "
        f"(SD {amount(_f(facts, 'sd'), q)}, {facts.get('run_in_n')} run-in readings)"
    )
    return found, plan


def _score(a: Assessment, rule: ScoreRule) -> tuple[str, str]:
    facts = a.facts
    parts = [
        f"{lv} at {x} or more"
        for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
        if x is not None
    ]
    if rule.single_red is not None:
        parts.append(f"any single parameter scoring 3 {rule.single_red}")
    plan = ", ".join(parts) + "; no respiratory rate, consciousness or temperature"
    items = []
    for q, key in ((Quantity.SPO2, "spo2"), (Quantity.HEART_RATE, "pulse")):
        items.append(_param(facts, q, key))
    items.append(_param(facts, Quantity.SYSTOLIC, "systolic"))
    scale = f"SpO2 scale {rule.spo2_scale}"
    if rule.on_oxygen:
        scale += f", on oxygen: {facts.get('oxygen_score', 2)}"
    if "insufficient" in facts:
        return "NEWS2 home subset: no SpO2, pulse or systolic reading", plan
    found = f"NEWS2 home subset {facts.get('score')} ({', '.join(items)}; {scale})"
    if facts.get("single_red"):
        found += ", a single parameter scoring 3"
    return found, plan


def _param(facts: Mapping[str, Fact], q: Quantity, key: str) -> str:
    value = facts.get(key)
    if not isinstance(value, int | float):
        return f"{name(q)} not measured"
    return f"{name(q)} {amount(float(value), q)}: {facts.get(f'{key}_score')}"
