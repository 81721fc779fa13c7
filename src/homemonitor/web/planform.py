"""The care plan as a form a district nurse fills in, and the form read back into a spec.

The Patient page shows a plan (:class:`~homemonitor.rules.plan.CarePlanSpec`) as fields:
the template (one of the shipped ones, or none), the ``personal`` values it uses, and per
rule its main numbers (bounds or deltas, windows, ``k`` of ``n``), each with its unit, its
rule's id and its source. :func:`show` builds the fields from a spec; :func:`read` applies
what was posted to the spec the form was built from (the *base*) and returns the new spec,
or the fields with what was typed and a translated message beside each one that is wrong.

A template rule's changed number becomes an ``overrides`` entry of the spec (only what
differs from the template, merged with the base's other overrides of that rule), so the
plan keeps following the template wherever the nurse changed nothing; an unticked template
rule goes to ``disabled``. A plan's own rules and the older ``thresholds`` are changed in
place. Each changed rule is validated by its own model, the engine's, so the form refuses
exactly what the engine would, and names the field.

Nothing here touches the database: the page's routes hand the spec to the API's own
preview and save functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from homemonitor.contract.readings import Quantity
from homemonitor.rules.plan import (
    AverageBound,
    AverageRule,
    BaselineRule,
    CarePlanSpec,
    ChangeRule,
    RuleSpec,
    ScoreRule,
    Template,
    ThresholdRule,
)
from homemonitor.rules.templates import PersonalValue
from homemonitor.web import charts

Translate = Callable[..., str]

#: The words of the form, Swedish first (added by the Patient page's module).
MESSAGES: dict[str, dict[str, str]] = {
    "sv": {
        "planform.legend": "Mall och personliga värden",
        "planform.template": "Mall (diagnos)",
        "planform.no_template": "Ingen mall: bara egna regler",
        "planform.template_help": (
            "Byter du mall visas den nya mallens regler och värden när du förhandsgranskar."
        ),
        "template.heart_failure": "Hjärtsvikt",
        "template.copd": "KOL",
        "template.hypertension": "Högt blodtryck",
        "personal.dry_weight": "Torrvikt",
        "personal.target_spo2_low": "Mål för SpO2, lägst",
        "personal.target_spo2_high": "Mål för SpO2, högst",
        "planform.personal": "{name} ({unit})",
        "planform.rules": "Reglernas värden",
        "planform.source": "Källa: {source}",
        "planform.enabled": "Regeln {id} används",
        "planform.from_template": "från mallen",
        "planform.own": "egen regel",
        "planform.legacy": "egen gräns",
        "planform.kind.threshold": "Gräns för {q}",
        "planform.kind.change": "Förändring av {q}",
        "planform.kind.average": "Medelvärde över dagar",
        "planform.kind.baseline": "{q} mot patientens egen baslinje",
        "planform.kind.score": "NEWS2-poäng (det som mäts hemma)",
        "planform.high": "hög",
        "planform.low": "låg",
        "planform.warning": "Varning ({unit})",
        "planform.urgent": "Brådskande ({unit})",
        "planform.avg_warning": "Varning, medel av {q} ({unit})",
        "planform.avg_urgent": "Brådskande, medel av {q} ({unit})",
        "planform.k": "Minst antal mätningar bortom gränsen (k)",
        "planform.n": "Av de senaste mätningarna (n)",
        "planform.within_hours": "Inom (timmar)",
        "planform.for_hours": "Under minst (timmar)",
        "planform.window_hours": "Jämfört med tiden före (timmar)",
        "planform.days": "Medel över (dagar)",
        "planform.min_days": "Minst antal dagar med mätning",
        "planform.run_in_days": "Inkörning (dagar)",
        "planform.min_deviation": "Minsta avvikelse ({unit})",
        "planform.from": "{unit} från {ref}",
        "planform.rise": "ökning, {unit}",
        "planform.fall": "minskning, {unit}",
        "planform.sd": "standardavvikelser",
        "planform.points": "poäng",
        "planform.invalid": (
            "Planen kan inte förhandsgranskas eller sparas: rätta de markerade fälten."
        ),
        "planform.err.template": "Välj en av mallarna.",
        "planform.err.number": "Skriv ett tal.",
        "planform.err.integer": "Skriv ett heltal.",
        "planform.err.required": "Fyll i ett värde: mallens regler utgår från det.",
        "planform.err.gt": "Måste vara större än {x}.",
        "planform.err.ge": "Måste vara minst {x}.",
        "planform.err.lt": "Måste vara mindre än {x}.",
        "planform.err.le": "Får vara högst {x}.",
        "planform.err.urgent_high": "Brådskande måste vara på eller över varningsgränsen.",
        "planform.err.urgent_low": "Brådskande måste vara på eller under varningsgränsen.",
        "planform.err.a_level": "Ange varning, brådskande eller båda.",
        "planform.err.k_of_n": "k får inte vara större än n.",
        "planform.err.k_or_for": "Ange antingen k av n eller en tid, inte båda.",
        "planform.err.min_days": "Får inte vara fler än dagarna medlet tas över.",
        "planform.err.other": "Ogiltigt värde: {msg}",
    },
    "en": {
        "planform.legend": "Template and personal values",
        "planform.template": "Template (condition)",
        "planform.no_template": "No template: own rules only",
        "planform.template_help": (
            "When you change the template, its rules and values appear when you preview."
        ),
        "template.heart_failure": "Heart failure",
        "template.copd": "COPD",
        "template.hypertension": "Hypertension",
        "personal.dry_weight": "Dry weight",
        "personal.target_spo2_low": "SpO2 target, lowest",
        "personal.target_spo2_high": "SpO2 target, highest",
        "planform.personal": "{name} ({unit})",
        "planform.rules": "The rules' values",
        "planform.source": "Source: {source}",
        "planform.enabled": "Rule {id} is used",
        "planform.from_template": "from the template",
        "planform.own": "own rule",
        "planform.legacy": "own bound",
        "planform.kind.threshold": "Bound of {q}",
        "planform.kind.change": "Change of {q}",
        "planform.kind.average": "Mean over days",
        "planform.kind.baseline": "{q} against the patient's own baseline",
        "planform.kind.score": "NEWS2 score (the part measured at home)",
        "planform.high": "high",
        "planform.low": "low",
        "planform.warning": "Warning ({unit})",
        "planform.urgent": "Urgent ({unit})",
        "planform.avg_warning": "Warning, mean of {q} ({unit})",
        "planform.avg_urgent": "Urgent, mean of {q} ({unit})",
        "planform.k": "At least this many readings beyond the bound (k)",
        "planform.n": "Of the latest readings (n)",
        "planform.within_hours": "Within (hours)",
        "planform.for_hours": "For at least (hours)",
        "planform.window_hours": "Against the time before (hours)",
        "planform.days": "Mean over (days)",
        "planform.min_days": "At least this many days with a reading",
        "planform.run_in_days": "Run-in (days)",
        "planform.min_deviation": "Smallest deviation ({unit})",
        "planform.from": "{unit} from {ref}",
        "planform.rise": "rise, {unit}",
        "planform.fall": "fall, {unit}",
        "planform.sd": "standard deviations",
        "planform.points": "points",
        "planform.invalid": "The plan cannot be previewed or saved: correct the marked fields.",
        "planform.err.template": "Choose one of the templates.",
        "planform.err.number": "Enter a number.",
        "planform.err.integer": "Enter a whole number.",
        "planform.err.required": "Enter a value: the template's rules start from it.",
        "planform.err.gt": "Must be greater than {x}.",
        "planform.err.ge": "Must be at least {x}.",
        "planform.err.lt": "Must be less than {x}.",
        "planform.err.le": "Must be at most {x}.",
        "planform.err.urgent_high": "Urgent must be at or above the warning bound.",
        "planform.err.urgent_low": "Urgent must be at or below the warning bound.",
        "planform.err.a_level": "Set warning, urgent or both.",
        "planform.err.k_of_n": "k must not exceed n.",
        "planform.err.k_or_for": "Use either k of n or a time, not both.",
        "planform.err.min_days": "Must not exceed the days the mean is taken over.",
        "planform.err.other": "Invalid value: {msg}",
    },
}

#: The engine's own messages (rules.plan, rules.careplan) as a key and the field they name.
_RULE_ERRORS: dict[str, tuple[str, str]] = {
    "urgent must be beyond warning for a high bound": ("planform.err.urgent_high", "urgent"),
    "urgent must be beyond warning for a low bound": ("planform.err.urgent_low", "urgent"),
    "urgent must be at or above warning": ("planform.err.urgent_high", "urgent"),
    "set warning, urgent or both": ("planform.err.a_level", "warning"),
    "k must not exceed n": ("planform.err.k_of_n", "k"),
    "use either k of n or for_hours, not both": ("planform.err.k_or_for", "for_hours"),
    "min_days must not exceed days": ("planform.err.min_days", "min_days"),
}
#: pydantic's error types of a Field limit, and the limit's name in its context.
_LIMITS = {
    "greater_than": "gt",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "less_than_equal": "le",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Input:
    """One number field: its form name, id, label (with the unit) and what it holds."""

    name: str
    id: str
    label: str
    value: str
    min: str | None = None
    max: str | None = None
    step: str = "any"
    required: bool = False
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """One rule's fieldset: its id as the legend, what it is, its source, its numbers."""

    rule_id: str
    title: str
    origin: str
    source: str
    inputs: tuple[Input, ...]
    #: The "rule is used" checkbox of a template rule (None for the plan's own rules).
    enabled: bool | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Form:
    """The whole form: the spec it was built from, the template choice, the fields."""

    base: CarePlanSpec
    template: str
    templates: tuple[tuple[str, str], ...]
    personal: tuple[Input, ...]
    groups: tuple[Group, ...]
    template_error: str | None = None

    @property
    def invalid(self) -> bool:
        """Whether some field holds an error."""
        fields = [*self.personal, *(i for g in self.groups for i in g.inputs)]
        errors = [self.template_error, *(f.error for f in fields), *(g.error for g in self.groups)]
        return any(errors)


@dataclasses.dataclass(frozen=True, slots=True)
class _Param:
    """A number of a rule: its path in the rule's model, its label and unit."""

    path: tuple[str, ...]
    label: str
    unit: str = ""
    quantity: str = ""  # the quantity's name, for an average's bounds


@dataclasses.dataclass(frozen=True, slots=True)
class _Editable:
    """A rule the form shows: as the base has it, and where it lives in the spec."""

    group: str  # the prefix of its fields' names
    rule: RuleSpec
    origin: str  # template, own, legacy
    original: RuleSpec | None = None  # the template's own rule (origin template)


def show(base: CarePlanSpec, templates: Mapping[str, Template], t: Translate) -> Form:
    """The form of ``base``, every field holding what the plan says."""
    return _Reader(base, templates, t, "sv", None).form()


def read(
    base: CarePlanSpec,
    posted: Mapping[str, str],
    templates: Mapping[str, Template],
    t: Translate,
    lang: str,
) -> tuple[CarePlanSpec | None, Form]:
    """``posted`` applied to ``base``: the new spec (None when a field is wrong) and the form.

    A changed template starts from the new template (the old one's overrides and disabled
    rules dropped; the personal values kept that it declares or an own rule is relative
    to): the form returned is the new template's, so the nurse sees its rules and fills in
    what it needs.
    """
    chosen = posted.get("template", base.template or "") or None
    reader = _Reader(base, templates, t, lang, posted)
    form = reader.form()
    if chosen is not None and chosen not in templates:
        unknown = t("planform.err.template")
        return None, dataclasses.replace(form, template=chosen, template_error=unknown)
    if form.invalid or chosen == base.template:
        return (None if form.invalid else reader.spec()), dataclasses.replace(
            form, template=chosen or ""
        )
    data = _dump(reader.spec())
    for key in ("template", "overrides", "disabled"):
        data.pop(key, None)
    if chosen is not None:
        data["template"] = chosen
    keep = set(_declared(templates[chosen])) if chosen is not None else set()
    keep |= {ref for r in reader.own if (ref := getattr(r, "relative_to", None)) is not None}
    data["personal"] = {k: v for k, v in data.get("personal", {}).items() if k in keep}
    switched = _Reader(CarePlanSpec.model_validate(data), templates, t, lang, None)
    form = switched.form(mark_missing=True)
    return (None if form.invalid else switched.spec()), form


def _declared(template: Template) -> Mapping[str, PersonalValue]:
    """The personal values a template declares (a shipped one: :mod:`rules.templates`)."""
    declared: Mapping[str, PersonalValue] = getattr(template, "personal", {})
    return declared


def _dump(spec: CarePlanSpec) -> dict[str, Any]:
    """What the spec's author set (as ``care_plans`` stores it)."""
    return spec.model_dump(mode="json", exclude_unset=True)


def _text(value: object) -> str:
    """A number as an ``<input type=number>`` holds it (a point, no trailing zeros)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _field_id(name: str) -> str:
    return "f-" + "".join(c if c.isalnum() or c in "_-" else "-" for c in name)


class _Reader:
    """The form of one base spec, read against what was posted (or nothing)."""

    def __init__(
        self,
        base: CarePlanSpec,
        templates: Mapping[str, Template],
        t: Translate,
        lang: str,
        posted: Mapping[str, str] | None,
    ) -> None:
        self.base = base
        self.template = templates.get(base.template) if base.template is not None else None
        self.templates = templates
        self.t = t
        self.lang = lang
        self.posted = posted
        self.personal: dict[str, float] = dict(base.personal)
        self.overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in base.overrides.items()}
        self.disabled: list[str] = list(base.disabled)
        self.own: list[RuleSpec] = list(base.rules)
        self.thresholds: dict[str, dict[str, dict[str, float | None]]] = {
            q.value: {
                d: {"warning": lv.warning, "urgent": lv.urgent}
                for d in ("high", "low")
                if (lv := getattr(b, d)) is not None
            }
            for q, b in base.thresholds.items()
        }

    # -- the fields ---------------------------------------------------------------------

    def form(self, *, mark_missing: bool = False) -> Form:
        """Every field, read and validated when something was posted."""
        personal = tuple(self._personal(mark_missing))
        groups = tuple(self._group(e) for e in self._editables())
        names = sorted(self.templates)
        return Form(
            self.base,
            self.base.template or "",
            tuple((n, self.t(f"template.{n}")) for n in names),
            personal,
            groups,
        )

    def spec(self) -> CarePlanSpec:
        """The spec with what was read (only valid once :meth:`form` found no error)."""
        data = _dump(self.base)
        for key, value in (
            ("personal", self.personal),
            ("overrides", {k: v for k, v in self.overrides.items() if v}),
            ("disabled", self.disabled),
            ("rules", [r.model_dump(mode="json", exclude_unset=True) for r in self.own]),
            ("thresholds", self._thresholds()),
        ):
            if value or key in data:
                data[key] = value
        return CarePlanSpec.model_validate(data)

    def _thresholds(self) -> dict[str, dict[str, dict[str, float]]]:
        found: dict[str, dict[str, dict[str, float]]] = {}
        for q, directions in self.thresholds.items():
            for d, levels in directions.items():
                kept = {k: v for k, v in levels.items() if v is not None}
                if kept:
                    found.setdefault(q, {})[d] = kept
        return found

    def _personal(self, mark_missing: bool) -> list[Input]:
        declared = _declared(self.template) if self.template is not None else {}
        keys = [*declared, *(k for k in self.base.personal if k not in declared)]
        inputs = []
        for key in keys:
            unit = declared[key].unit if key in declared else ""
            required = key in declared and declared[key].required
            name = f"personal.{key}"
            label = self.t(f"personal.{key}")
            label = label if label != f"personal.{key}" else key
            label = self.t("planform.personal", name=label, unit=unit) if unit else label
            value, error = _text(self.base.personal.get(key)), None
            if self.posted is not None:
                value = self.posted.get(name, "").strip()
                number, error = self._number(value, integer=False)
                if error is None and number is not None:
                    self.personal[key] = float(number)
                elif error is None:
                    self.personal.pop(key, None)
            asked = mark_missing or self.posted is not None
            if error is None and required and asked and key not in self.personal:
                error = self.t("planform.err.required")
            inputs.append(
                Input(name, _field_id(name), label, value, None, None, "any", required, error)
            )
        return inputs

    def _editables(self) -> list[_Editable]:
        found = []
        if self.template is not None:
            for original in self.template:
                change = self.base.overrides.get(original.id, {})
                try:
                    rule = type(original).model_validate({**original.model_dump(), **change})
                except ValidationError:
                    rule = original
                found.append(_Editable(f"rule.{original.id}", rule, "template", original))
        found += [_Editable(f"own.{r.id}", r, "own") for r in self.base.rules]
        for q, directions in sorted(self.thresholds.items()):
            for d, levels in directions.items():
                rule = ThresholdRule.model_construct(
                    id=f"{q}.{d}",
                    quantity=Quantity(q),
                    direction=d,
                    warning=levels["warning"],
                    urgent=levels["urgent"],
                )
                found.append(_Editable(f"threshold.{q}.{d}", rule, "legacy"))
        return found

    def _group(self, item: _Editable) -> Group:
        rule = item.rule
        params = _params(rule, self.t, self._personal_name)
        enabled: bool | None = None
        if item.origin == "template":
            enabled = rule.id not in self.base.disabled
            if self.posted is not None:
                enabled = f"enabled.{rule.id}" in self.posted
                self.disabled = [i for i in self.disabled if i != rule.id]
                if not enabled:
                    self.disabled.append(rule.id)
        typed: dict[tuple[str, ...], str] = {}
        values: dict[tuple[str, ...], object] = {}
        errors: dict[tuple[str, ...], str] = {}
        for p in params:
            shown = _at(rule, p.path)
            typed[p.path] = _text(shown)
            values[p.path] = shown
            if self.posted is None or enabled is False:
                continue
            text = self.posted.get(f"{item.group}.{'.'.join(p.path)}", "").strip()
            typed[p.path] = text
            number, error = self._number(text, integer=_integer(rule, p.path))
            if error is not None:
                errors[p.path] = error
            else:
                values[p.path] = number
        group_error = None
        if self.posted is not None and not errors and enabled is not False:
            group_error = self._apply(item, values, errors)
        inputs = tuple(
            self._input(item.group, rule, p, typed[p.path], errors.get(p.path)) for p in params
        )
        quantity = getattr(rule, "quantity", None)
        q = self.t(f"q.{quantity.value}") if quantity is not None else ""
        title = self.t(f"planform.kind.{rule.kind}", q=q)
        if isinstance(rule, ThresholdRule):
            title = f"{title}, {self.t('planform.' + rule.direction)}"
        return Group(
            rule.id,
            title,
            self.t(f"planform.{'from_template' if item.origin == 'template' else item.origin}"),
            rule.source,
            inputs,
            enabled,
            group_error,
        )

    def _apply(
        self,
        item: _Editable,
        values: Mapping[tuple[str, ...], object],
        errors: dict[tuple[str, ...], str],
    ) -> str | None:
        """Validate the rule with the posted numbers; keep it, or put the errors in place."""
        if item.origin == "legacy":
            levels = {p[0]: v for p, v in values.items()}
            if all(v is None for v in levels.values()):
                q, d = item.rule.id.split(".")
                self.thresholds[q][d] = {"warning": None, "urgent": None}
                return None
        data: dict[str, Any] = {}
        for path, value in values.items():
            _put(data, path, value)
        start = item.original if item.original is not None else item.rule
        seed = start.model_dump() if item.origin != "own" else start.model_dump(exclude_unset=True)
        if item.origin == "own":  # what its author left unset stays unset, unless changed
            kept = start.model_fields_set
            data = {k: v for k, v in data.items() if k in kept or getattr(start, k) != v}
        if item.origin == "template":
            seed = {**seed, **self.overrides.get(start.id, {})}
        try:
            changed = type(start).model_validate({**seed, **data})
        except ValidationError as exc:
            return self._errors(exc, values, errors)
        if item.origin == "template" and item.original is not None:
            override = {k: v for k, v in self.overrides.get(start.id, {}).items() if k not in data}
            for key in data:
                if getattr(item.original, key) != getattr(changed, key):
                    override[key] = changed.model_dump(mode="json")[key]
            self.overrides[start.id] = override
        elif item.origin == "own":
            self.own = [changed if r.id == start.id else r for r in self.own]
        else:
            q, d = start.id.split(".")
            self.thresholds[q][d] = {"warning": data.get("warning"), "urgent": data.get("urgent")}
        return None

    def _errors(
        self,
        exc: ValidationError,
        values: Mapping[tuple[str, ...], object],
        errors: dict[tuple[str, ...], str],
    ) -> str | None:
        """The model's errors beside the fields they name; the rest for the fieldset."""
        rest = []
        for detail in exc.errors(include_url=False):
            loc = tuple(str(p) for p in detail["loc"])
            message, field = self._message(detail)
            target = loc if loc in values else None
            if target is None and field is not None:
                target = next((p for p in values if p[: len(loc)] == loc and p[-1] == field), None)
            if target is not None:
                errors.setdefault(target, message)
            else:
                rest.append(message)
        return " ".join(rest) or None

    def _message(self, detail: ErrorDetails) -> tuple[str, str | None]:
        ctx = detail.get("ctx") or {}
        limit = _LIMITS.get(detail["type"])
        if limit is not None and limit in ctx:
            return self.t(
                f"planform.err.{limit}", x=charts.number(float(ctx[limit]), self.lang)
            ), None
        said = str(ctx.get("error", detail["msg"]))
        known = _RULE_ERRORS.get(said)
        if known is not None:
            return self.t(known[0]), known[1]
        return self.t("planform.err.other", msg=said), None

    def _number(self, text: str, *, integer: bool) -> tuple[float | int | None, str | None]:
        if not text:
            return None, None
        try:
            number = float(text.replace(",", ".").replace("\u2212", "-"))
        except ValueError:
            return None, self.t("planform.err.number")
        if not math.isfinite(number):
            return None, self.t("planform.err.number")
        if integer:
            if not number.is_integer():
                return None, self.t("planform.err.integer")
            return int(number), None
        return number, None

    def _input(
        self, group: str, rule: RuleSpec, param: _Param, value: str, error: str | None
    ) -> Input:
        name = f"{group}.{'.'.join(param.path)}"
        low, high = _limits(rule, param.path)
        step = "1" if _integer(rule, param.path) else "any"
        label = self.t(param.label, unit=param.unit, q=param.quantity)
        return Input(name, _field_id(name), label, value, low, high, step, False, error)

    def _personal_name(self, key: str) -> str:
        label = self.t(f"personal.{key}")
        return label if label != f"personal.{key}" else key


def _params(rule: RuleSpec, t: Translate, personal: Callable[[str], str]) -> list[_Param]:
    """The main numbers of a rule, in the order a nurse reads them."""
    levels = ("warning", "urgent")
    if isinstance(rule, ThresholdRule):
        unit = rule.quantity.unit
        if rule.relative_to is not None:
            unit = t("planform.from", unit=unit, ref=personal(rule.relative_to))
        found = [_Param((lv,), f"planform.{lv}", unit) for lv in levels]
        if rule.n > 1 or rule.within_hours is not None:
            found += [_Param(("k",), "planform.k"), _Param(("n",), "planform.n")]
            found.append(_Param(("within_hours",), "planform.within_hours"))
        if rule.for_hours is not None:
            found.append(_Param(("for_hours",), "planform.for_hours"))
        return found
    if isinstance(rule, ChangeRule):
        unit = t(f"planform.{rule.direction}", unit=rule.quantity.unit)
        found = [_Param((lv,), f"planform.{lv}", unit) for lv in levels]
        return [*found, _Param(("window_hours",), "planform.window_hours")]
    if isinstance(rule, AverageRule):
        found = [
            _Param(("bounds", q.value, lv), f"planform.avg_{lv}", q.unit, t(f"q.{q.value}"))
            for q in rule.bounds
            for lv in levels
        ]
        found.append(_Param(("days",), "planform.days"))
        return [*found, _Param(("min_days",), "planform.min_days")]
    if isinstance(rule, BaselineRule):
        unit = t("planform.sd") if rule.method != "macd" else rule.quantity.unit
        found = [_Param((lv,), f"planform.{lv}", unit) for lv in levels]
        if rule.method != "composite":  # a composite's SD floors are per part: YAML
            found.append(_Param(("min_deviation",), "planform.min_deviation", rule.quantity.unit))
        return [*found, _Param(("run_in_days",), "planform.run_in_days")]
    if isinstance(rule, ScoreRule):
        return [_Param((lv,), f"planform.{lv}", t("planform.points")) for lv in levels]
    return []


def _at(rule: BaseModel, path: Sequence[str]) -> object:
    """The value at ``path`` in a rule (None when a step is missing)."""
    value: object = rule
    for step in path:
        if isinstance(value, BaseModel):
            value = getattr(value, step, None)
        elif isinstance(value, Mapping):
            value = value.get(step) if step in value else value.get(Quantity(step))
        else:
            return None
    return value


def _put(data: dict[str, Any], path: Sequence[str], value: object) -> None:
    for step in path[:-1]:
        data = data.setdefault(step, {})
    data[path[-1]] = value


def _model_field(rule: RuleSpec, path: Sequence[str]) -> Any:
    model: type[BaseModel] = AverageBound if path[0] == "bounds" else type(rule)
    return model.model_fields.get(path[-1])


def _integer(rule: RuleSpec, path: Sequence[str]) -> bool:
    field = _model_field(rule, path)
    if field is None:
        return False
    annotation = field.annotation
    return annotation is int or int in get_args(annotation)


def _limits(rule: RuleSpec, path: Sequence[str]) -> tuple[str | None, str | None]:
    """An input's min and max from the model's Field constraints.

    An HTML ``min`` is inclusive: for ``gt`` it is the limit itself, and the server's
    message refuses the limit."""
    field = _model_field(rule, path)
    low = high = None
    for item in getattr(field, "metadata", ()):
        if isinstance(item, annotated_types.Ge):
            low = _text(item.ge)
        elif isinstance(item, annotated_types.Gt):
            low = _text(item.gt)
        elif isinstance(item, annotated_types.Le):
            high = _text(item.le)
    return low, high
