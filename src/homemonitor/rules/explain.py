"""The one plain sentence of an assessment, for the episode, the API and the nurse.

It names the quantity, the value with its unit (``Quantity.unit``), what the rule compared
it with, and the plan's version and bound; never the patient. For example::

    weight 84.6 kg, 2.4 kg above the lowest of the previous 3 days (82.2 kg); plan v3:
    2 kg or more in 3 days

Each sentence is written in Swedish and in English (:data:`LANGUAGES`) by the same
functions, one per rule kind, from a table of phrases per language (:data:`PHRASES`):
units stay, Swedish numbers have a decimal comma. In Swedish the one above is::

    vikt 84,6 kg, 2,4 kg över den lägsta de föregående 3 dagarna (82,2 kg); plan v3:
    2 kg eller mer på 3 dagar

An episode stores both (:func:`sentences`), built on its transitions only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal, TypeAlias

from homemonitor.contract.readings import Quantity
from homemonitor.rules.kinds import LOCAL_ZONE, Assessment, Fact
from homemonitor.rules.plan import (
    AverageRule,
    BaselineRule,
    ChangeRule,
    ScoreRule,
    ThresholdRule,
)

Lang: TypeAlias = Literal["sv", "en"]
#: The languages a sentence is written in, Swedish (the web app's default) first.
LANGUAGES: tuple[Lang, ...] = ("sv", "en")

#: Every phrase of every sentence, per language; ``{name}`` fields are filled by the rule.
PHRASES: Mapping[Lang, Mapping[str, str]] = {
    "en": {
        "q.systolic": "systolic",
        "q.diastolic": "diastolic",
        "q.mean_arterial": "mean arterial pressure",
        "q.heart_rate": "pulse",
        "q.body_weight": "weight",
        "q.spo2": "SpO2",
        "warning": "warning",
        "urgent": "urgent",
        "above": "above",
        "below": "below",
        "plan": "{found}; plan v{version}: {plan}",
        "no_reading": "{name}: no reading",
        "day": "day",
        "days": "{n} days",
        "hours": "{h} h",
        "previous_day": "the previous day",
        "previous_days": "the previous {n} days",
        "previous_hours": "the previous {h} h",
        "th.side.high": "at or above",
        "th.side.low": "at or below",
        "th.more.high": "or more",
        "th.more.low": "or less",
        "th.level": "{level} at {amount} {more}",
        "th.level_personal": "{level} at {amount} {where} {personal}",
        "th.k_of_n": "in {k} of {n} readings",
        "th.for": "for {window}",
        "th.personal": ", {amount} {where} {personal} ({reference})",
        "th.bound": ", {side} the {severity} bound of {bound}",
        "th.breaching": " in {breaching} of the last {readings} readings",
        "th.run": " for {h} h",
        "th.inside": ", {inside} the {which} bound of {bound}",
        "ch.ref.min": "the lowest of",
        "ch.ref.max": "the highest of",
        "ch.ref.mean": "the mean of",
        "ch.ref.first": "the first reading of",
        "ch.single": "{amount} or more in {window}",
        "ch.level": "{level} at {amount} or more",
        "ch.in": " in {window}",
        "ch.fall": "a fall of {plan}",
        "ch.too_few": "{found}, too few readings in {previous} to compare with",
        "ch.diff": ", {amount} {where} {reference} {previous} ({value})",
        "av.either": " or ",
        "av.level": "{level} at a mean {either} or more",
        "av.over": ", over up to {days} days",
        "av.counts": "{days} days, {sessions} sessions, {readings} readings",
        "av.discarded": "; first day discarded",
        "av.after": "; readings since the resolution on {day} only (a new protocol)",
        "av.insufficient": "home average: too few days or readings yet ({counts})",
        "av.found": "home mean {means} ({counts})",
        "bl.floor": ", at least {amount}",
        "bl.macd_level": "{level} at {amount} or more",
        "bl.macd_plan": "{levels} {side} ({short}- vs {long}-day trend){floor}",
        "bl.sd_level": "{level} at {x} SD",
        "bl.ewma_plan": "{levels} of the EWMA {side} the personal baseline{floor}",
        "bl.new_device": ", new device",
        "bl.insufficient": (
            "{found}: personal baseline not armed yet ({n} of {m} run-in readings{swap})"
        ),
        "bl.macd": ", its {short}-day trend {amount} {where} its {long}-day trend (MACD)",
        "bl.ewma": (
            ", its EWMA {ewma} is {amount} {where} the personal baseline of {baseline} "
            "(SD {sd}, {n} run-in readings)"
        ),
        "bl.composite_plan": (
            "{levels}, the mean of {parts} their personal baselines in SDs (composite of EWMAs)"
        ),
        "bl.part_plan": "{name} {side}",
        "bl.and": " and ",
        "bl.composite": ": composite score {score} SD ({parts}; {n} run-in readings)",
        "bl.part": "{name} EWMA {ewma}, {z} SD {where} the baseline of {baseline} (SD {sd})",
        "bl.composite_insufficient": "{found}: personal baseline not armed yet ({parts}{swap})",
        "bl.part_unarmed": "{name} {n} of {m} run-in readings",
        "bl.part_waiting": "{name}: no reading after its run-in",
        "sc.level": "{level} at {x} or more",
        "sc.single_red_plan": "any single parameter scoring 3 {severity}",
        "sc.plan": "{parts}; no respiratory rate, consciousness or temperature",
        "sc.scale": "SpO2 scale {scale}",
        "sc.oxygen": ", on oxygen: {score}",
        "sc.insufficient": "NEWS2 home subset: no SpO2, pulse or systolic reading",
        "sc.found": "NEWS2 home subset {score} ({items}; {scale})",
        "sc.single_red": ", a single parameter scoring 3",
        "sc.not_measured": "{name} not measured",
        "sc.param": "{name} {amount}: {score}",
    },
    "sv": {
        "q.systolic": "systoliskt",
        "q.diastolic": "diastoliskt",
        "q.mean_arterial": "medelartärtryck",
        "q.heart_rate": "puls",
        "q.body_weight": "vikt",
        "q.spo2": "SpO2",
        "warning": "varning",
        "urgent": "brådskande",
        "above": "över",
        "below": "under",
        "plan": "{found}; plan v{version}: {plan}",
        "no_reading": "{name}: ingen mätning",
        "day": "1 dag",
        "days": "{n} dagar",
        "hours": "{h} h",
        "previous_day": "den föregående dagen",
        "previous_days": "de föregående {n} dagarna",
        "previous_hours": "de föregående {h} timmarna",
        "th.side.high": "på eller över",
        "th.side.low": "på eller under",
        "th.more.high": "eller mer",
        "th.more.low": "eller mindre",
        "th.level": "{level} vid {amount} {more}",
        "th.level_personal": "{level} vid {amount} {where} {personal}",
        "th.k_of_n": "i {k} av {n} mätningar",
        "th.for": "under {window}",
        "th.personal": ", {amount} {where} {personal} ({reference})",
        "th.bound": ", {side} gränsen {bound} för {severity}",
        "th.breaching": " i {breaching} av de senaste {readings} mätningarna",
        "th.run": " under {h} h",
        "th.inside": ", {inside} gränsen {bound} för {which}",
        "ch.ref.min": "den lägsta",
        "ch.ref.max": "den högsta",
        "ch.ref.mean": "medelvärdet",
        "ch.ref.first": "den första mätningen",
        "ch.single": "{amount} eller mer på {window}",
        "ch.level": "{level} vid {amount} eller mer",
        "ch.in": " på {window}",
        "ch.fall": "en minskning med {plan}",
        "ch.too_few": "{found}, för få mätningar under {previous} att jämföra med",
        "ch.diff": ", {amount} {where} {reference} {previous} ({value})",
        "av.either": " eller ",
        "av.level": "{level} vid ett medelvärde {either} eller mer",
        "av.over": ", under högst {days} dagar",
        "av.counts": "{days} dagar, {sessions} mättillfällen, {readings} mätningar",
        "av.discarded": "; första dagen borträknad",
        "av.after": "; bara mätningar efter avslutet {day} (en ny mätperiod)",
        "av.insufficient": "hemmedelvärde: ännu för få dagar eller mätningar ({counts})",
        "av.found": "hemmedelvärde {means} ({counts})",
        "bl.floor": ", minst {amount}",
        "bl.macd_level": "{level} vid {amount} eller mer",
        "bl.macd_plan": "{levels} {side} ({short}- mot {long}-dagarstrend){floor}",
        "bl.sd_level": "{level} vid {x} SD",
        "bl.ewma_plan": "{levels} för EWMA {side} den personliga baslinjen{floor}",
        "bl.new_device": ", ny mätare",
        "bl.insufficient": (
            "{found}: personlig baslinje ännu inte klar ({n} av {m} inkörningsmätningar{swap})"
        ),
        "bl.macd": ", {short}-dagarstrenden {amount} {where} {long}-dagarstrenden (MACD)",
        "bl.ewma": (
            ", EWMA {ewma} är {amount} {where} den personliga baslinjen {baseline} "
            "(SD {sd}, {n} inkörningsmätningar)"
        ),
        "bl.composite_plan": (
            "{levels}, medelvärdet av {parts} sina personliga baslinjer i SD (sammanvägda EWMA)"
        ),
        "bl.part_plan": "{name} {side}",
        "bl.and": " och ",
        "bl.composite": ": sammanvägt värde {score} SD ({parts}; {n} inkörningsmätningar)",
        "bl.part": "{name} EWMA {ewma}, {z} SD {where} baslinjen {baseline} (SD {sd})",
        "bl.composite_insufficient": ("{found}: personlig baslinje ännu inte klar ({parts}{swap})"),
        "bl.part_unarmed": "{name} {n} av {m} inkörningsmätningar",
        "bl.part_waiting": "{name}: ingen mätning efter inkörningen",
        "sc.level": "{level} vid {x} eller mer",
        "sc.single_red_plan": "en enskild parameter med 3 poäng: {severity}",
        "sc.plan": "{parts}; inga andningsfrekvens, medvetandegrad eller temperatur",
        "sc.scale": "SpO2-skala {scale}",
        "sc.oxygen": ", med syrgas: {score}",
        "sc.insufficient": "NEWS2 hemdelmängd: ingen mätning av SpO2, puls eller systoliskt",
        "sc.found": "NEWS2 hemdelmängd {score} ({items}; {scale})",
        "sc.single_red": ", en enskild parameter med 3 poäng",
        "sc.not_measured": "{name} inte mätt",
        "sc.param": "{name} {amount}: {score}",
    },
}
#: Personal values a rule may be ``relative_to``, as Swedish says them (others: the key).
PERSONAL: Mapping[Lang, Mapping[str, str]] = {
    "en": {},
    "sv": {
        "dry_weight": "torrvikten",
        "target_spo2_low": "den nedre målnivån för SpO2",
        "target_spo2_high": "den övre målnivån för SpO2",
    },
}


class _Say:
    """The phrases, numbers and names of one language."""

    __slots__ = ("lang", "words")

    def __init__(self, lang: Lang) -> None:
        self.lang = lang
        self.words = PHRASES[lang]

    def __call__(self, key: str, /, **values: object) -> str:
        return self.words[key].format(**values) if values else self.words[key]

    def num(self, x: float) -> str:
        return number(x, self.lang)

    def amt(self, x: float, q: Quantity) -> str:
        return amount(x, q, self.lang)

    def name(self, q: Quantity) -> str:
        return self.words[f"q.{q.value}"]

    def window(self, hours: float) -> str:
        if hours % 24 == 0:
            days = int(hours // 24)
            return self("day") if days == 1 else self("days", n=days)
        return self("hours", h=self.num(hours))

    def previous(self, hours: float) -> str:
        if hours == 24:
            return self("previous_day")
        if hours % 24 == 0:
            return self("previous_days", n=int(hours // 24))
        return self("previous_hours", h=self.num(hours))

    def personal(self, key: str) -> str:
        return PERSONAL[self.lang].get(key) or key.replace("_", " ")


def name(quantity: Quantity, lang: Lang = "en") -> str:
    """The quantity as a nurse says it (``weight``, ``SpO2``, ``pulse``; ``vikt``, ``puls``)."""
    return PHRASES[lang][f"q.{quantity.value}"]


def number(x: float, lang: Lang = "en") -> str:
    """``x`` to one decimal, without a trailing ``.0``; Swedish with a decimal comma.

    >>> number(84.6), number(2.3999999), number(180.0), number(-0.04), number(84.6, "sv")
    ('84.6', '2.4', '180', '0', '84,6')
    """
    text = f"{x:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    if text == "-0":
        text = "0"
    return text.replace(".", ",") if lang == "sv" else text


def amount(x: float, quantity: Quantity, lang: Lang = "en") -> str:
    """``x`` with ``quantity``'s unit: ``84.6 kg``, ``182 mmHg``, ``91%``, ``112/min``.

    >>> amount(91, Quantity.SPO2), amount(112, Quantity.HEART_RATE)
    ('91%', '112/min')
    >>> amount(84.6, Quantity.BODY_WEIGHT), amount(84.6, Quantity.BODY_WEIGHT, "sv")
    ('84.6 kg', '84,6 kg')
    """
    unit = quantity.unit
    shown = number(x, lang)
    return f"{shown}{unit}" if unit[0] in "%/" else f"{shown} {unit}"


def _f(facts: Mapping[str, Fact], key: str) -> float:
    value = facts.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def sentence(assessment: Assessment, lang: Lang = "en") -> str:
    """One plain sentence saying what ``assessment`` found and against which plan rule."""
    say = _Say(lang)
    rule = assessment.rule
    if isinstance(rule, ThresholdRule):
        found, plan = _threshold(say, assessment, rule)
    elif isinstance(rule, ChangeRule):
        found, plan = _change(say, assessment, rule)
    elif isinstance(rule, AverageRule):
        found, plan = _average(say, assessment, rule)
    elif isinstance(rule, BaselineRule):
        found, plan = _baseline(say, assessment, rule)
    else:
        found, plan = _score(say, assessment, rule)
    return say("plan", found=found, version=assessment.plan_version, plan=plan)


def sentences(assessment: Assessment) -> dict[str, str]:
    """The sentence in every language of :data:`LANGUAGES`, by language code."""
    return every_language(lambda lang: sentence(assessment, lang))


def every_language(write: Callable[[Lang], str]) -> dict[str, str]:
    """``write(lang)`` for every language of :data:`LANGUAGES`, by language code.

    >>> every_language(lambda lang: number(2.5, lang))
    {'sv': '2,5', 'en': '2.5'}
    """
    return {lang: write(lang) for lang in LANGUAGES}


def _threshold(say: _Say, a: Assessment, rule: ThresholdRule) -> tuple[str, str]:
    q, facts = rule.quantity, a.facts
    side = say(f"th.side.{rule.direction}")
    more = say(f"th.more.{rule.direction}")
    personal = say.personal(rule.relative_to) if rule.relative_to else None
    parts = []
    for level, offset in (("warning", rule.warning), ("urgent", rule.urgent)):
        if offset is None:
            continue
        if personal is None:
            parts.append(say("th.level", level=say(level), amount=say.amt(offset, q), more=more))
        else:
            where = say("above" if offset >= 0 else "below")
            parts.append(
                say(
                    "th.level_personal",
                    level=say(level),
                    amount=say.amt(abs(offset), q),
                    where=where,
                    personal=personal,
                )
            )
    if rule.n > 1:
        parts.append(say("th.k_of_n", k=rule.k, n=rule.n))
    if rule.for_hours is not None:
        parts.append(say("th.for", window=say.window(rule.for_hours)))
    plan = ", ".join(parts)
    if a.value is None:
        return say("no_reading", name=say.name(q)), plan
    found = f"{say.name(q)} {say.amt(a.value, q)}"
    if personal is not None:
        ref = _f(facts, "reference")
        diff = a.value - ref
        found += say(
            "th.personal",
            amount=say.amt(abs(diff), q),
            where=say("above" if diff >= 0 else "below"),
            personal=personal,
            reference=say.amt(ref, q),
        )
    bound = say.amt(_f(facts, "bound"), q)
    if a.level:
        found += say("th.bound", side=side, severity=say(a.severity), bound=bound)
        if "breaching" in facts:
            found += say("th.breaching", breaching=facts["breaching"], readings=facts["readings"])
        if "run_hours" in facts:
            found += say("th.run", h=say.num(_f(facts, "run_hours")))
    else:
        inside = say("below" if rule.direction == "high" else "above")
        which = say("warning" if rule.warning is not None else "urgent")
        found += say("th.inside", inside=inside, which=which, bound=bound)
    return found, plan


def _change(say: _Say, a: Assessment, rule: ChangeRule) -> tuple[str, str]:
    q, facts = rule.quantity, a.facts
    window = say.window(rule.window_hours)
    levels = [
        (level, delta)
        for level, delta in (("warning", rule.warning), ("urgent", rule.urgent))
        if delta is not None
    ]
    if len(levels) == 1:
        plan = say("ch.single", amount=say.amt(levels[0][1], q), window=window)
    else:
        plan = ", ".join(say("ch.level", level=say(lv), amount=say.amt(d, q)) for lv, d in levels)
        plan += say("ch.in", window=window)
    if rule.direction == "fall":
        plan = say("ch.fall", plan=plan)
    previous = say.previous(rule.window_hours)
    if a.value is None:
        return say("no_reading", name=say.name(q)), plan
    found = f"{say.name(q)} {say.amt(a.value, q)}"
    if "reference" not in facts:
        return say("ch.too_few", found=found, previous=previous), plan
    ref = _f(facts, "reference")
    diff = a.value - ref
    found += say(
        "ch.diff",
        amount=say.amt(abs(diff), q),
        where=say("above" if diff >= 0 else "below"),
        reference=say(f"ch.ref.{rule.reference}"),
        previous=previous,
        value=say.amt(ref, q),
    )
    return found, plan


def _average(say: _Say, a: Assessment, rule: AverageRule) -> tuple[str, str]:
    facts = a.facts
    levels = []
    for level in ("warning", "urgent"):
        named = [
            f"{say.name(q)} {say.amt(getattr(b, level), q)}"
            for q, b in rule.bounds.items()
            if getattr(b, level)
        ]
        if named:
            levels.append(say("av.level", level=say(level), either=say("av.either").join(named)))
    plan = ", ".join(levels) + say("av.over", days=rule.days)
    means = [
        f"{say.name(q)} {say.amt(_f(facts, f'mean_{q.value}'), q)}"
        for q in rule.bounds
        if facts.get(f"mean_{q.value}") is not None
    ]
    counts = say(
        "av.counts",
        days=facts.get("n_days", 0),
        sessions=facts.get("n_sessions", 0),
        readings=facts.get("n_readings", 0),
    )
    if facts.get("discarded_day"):
        counts += say("av.discarded")
    if isinstance(after := facts.get("after_resolution"), str):
        day = datetime.fromisoformat(after).astimezone(LOCAL_ZONE).date()
        counts += say("av.after", day=day.isoformat())
    if "insufficient" in facts:
        return say("av.insufficient", counts=counts), plan
    return say("av.found", means=", ".join(means), counts=counts), plan


def _composite(say: _Say, a: Assessment, rule: BaselineRule) -> tuple[str, str]:
    """A composite baseline: the plan's parts, and each part's EWMA against its baseline."""
    facts = a.facts
    levels = ", ".join(
        say("bl.sd_level", level=say(lv), x=say.num(x))
        for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
        if x is not None
    )
    worse = {"high": "above", "low": "below"}
    parts = say("bl.and").join(
        say("bl.part_plan", name=say.name(p.quantity), side=say(worse[p.direction]))
        for p in rule.parts
    )
    plan = say("bl.composite_plan", levels=levels, parts=parts)
    values = [
        f"{say.name(p.quantity)} {say.amt(float(v), p.quantity)}"
        for p in rule.parts
        if isinstance(v := facts.get(f"{p.quantity.value}_value"), int | float)
    ]
    if not values:
        return say("no_reading", name=say.name(rule.quantity)), plan
    found = ", ".join(values)
    if "insufficient" in facts:
        swap = say("bl.new_device") if facts.get("device_changed") else ""
        m = rule.min_run_in_readings
        unarmed = str(facts.get("unarmed", "")).split(",")
        waiting = []
        for p in rule.parts:
            if p.quantity.value not in unarmed:
                continue
            n = int(_f(facts, f"{p.quantity.value}_run_in_n"))
            key = "bl.part_waiting" if n >= m else "bl.part_unarmed"
            waiting.append(say(key, name=say.name(p.quantity), n=n, m=m))
        parts = ", ".join(waiting)
        return say("bl.composite_insufficient", found=found, parts=parts, swap=swap), plan
    described = []
    for p in rule.parts:
        key = p.quantity.value
        z = _f(facts, f"{key}_z")
        side, opposite = worse[p.direction], worse["low" if p.direction == "high" else "high"]
        described.append(
            say(
                "bl.part",
                name=say.name(p.quantity),
                ewma=say.amt(_f(facts, f"{key}_ewma"), p.quantity),
                z=say.num(abs(z)),
                where=say(side if z >= 0 else opposite),
                baseline=say.amt(_f(facts, f"{key}_baseline"), p.quantity),
                sd=say.amt(_f(facts, f"{key}_sd"), p.quantity),
            )
        )
    found += say(
        "bl.composite",
        score=say.num(_f(facts, "score")),
        parts="; ".join(described),
        n=facts.get("run_in_n"),
    )
    return found, plan


def _baseline(say: _Say, a: Assessment, rule: BaselineRule) -> tuple[str, str]:
    if rule.method == "composite":
        return _composite(say, a, rule)
    q, facts = rule.quantity, a.facts
    side_word = "above" if rule.direction == "high" else "below"
    side = say(side_word)
    floor = say("bl.floor", amount=say.amt(rule.min_deviation, q)) if rule.min_deviation else ""
    short, long = say.num(rule.short_days), say.num(rule.long_days)
    if rule.method == "macd":
        levels = ", ".join(
            say("bl.macd_level", level=say(lv), amount=say.amt(x, q))
            for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
            if x is not None
        )
        plan = say("bl.macd_plan", levels=levels, side=side, short=short, long=long, floor=floor)
    else:
        levels = ", ".join(
            say("bl.sd_level", level=say(lv), x=say.num(x))
            for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
            if x is not None
        )
        plan = say("bl.ewma_plan", levels=levels, side=side, floor=floor)
    if a.value is None:
        return say("no_reading", name=say.name(q)), plan
    found = f"{say.name(q)} {say.amt(a.value, q)}"
    if "insufficient" in facts:
        n = facts.get("run_in_n", facts.get("n", 0))
        swap = say("bl.new_device") if facts.get("device_changed") else ""
        return say("bl.insufficient", found=found, n=n, m=rule.min_run_in_readings, swap=swap), plan
    opposite = say("below" if side_word == "above" else "above")
    if rule.method == "macd":
        macd = _f(facts, "macd")
        found += say(
            "bl.macd",
            short=short,
            long=long,
            amount=say.amt(abs(macd), q),
            where=side if macd >= 0 else opposite,
        )
        return found, plan
    dev = _f(facts, "deviation")
    found += say(
        "bl.ewma",
        ewma=say.amt(_f(facts, "ewma"), q),
        amount=say.amt(abs(dev), q),
        where=side if dev >= 0 else opposite,
        baseline=say.amt(_f(facts, "baseline"), q),
        sd=say.amt(_f(facts, "sd"), q),
        n=facts.get("run_in_n"),
    )
    return found, plan


def _score(say: _Say, a: Assessment, rule: ScoreRule) -> tuple[str, str]:
    facts = a.facts
    parts = [
        say("sc.level", level=say(lv), x=x)
        for lv, x in (("warning", rule.warning), ("urgent", rule.urgent))
        if x is not None
    ]
    if rule.single_red is not None:
        parts.append(say("sc.single_red_plan", severity=say(rule.single_red)))
    plan = say("sc.plan", parts=", ".join(parts))
    items = [
        _param(say, facts, q, key)
        for q, key in (
            (Quantity.SPO2, "spo2"),
            (Quantity.HEART_RATE, "pulse"),
            (Quantity.SYSTOLIC, "systolic"),
        )
    ]
    scale = say("sc.scale", scale=rule.spo2_scale)
    if rule.on_oxygen:
        scale += say("sc.oxygen", score=facts.get("oxygen_score", 2))
    if "insufficient" in facts:
        return say("sc.insufficient"), plan
    found = say("sc.found", score=facts.get("score"), items=", ".join(items), scale=scale)
    if facts.get("single_red"):
        found += say("sc.single_red")
    return found, plan


def _param(say: _Say, facts: Mapping[str, Fact], q: Quantity, key: str) -> str:
    value = facts.get(key)
    if not isinstance(value, int | float):
        return say("sc.not_measured", name=say.name(q))
    return say(
        "sc.param",
        name=say.name(q),
        amount=say.amt(float(value), q),
        score=facts.get(f"{key}_score"),
    )
