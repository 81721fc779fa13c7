"""Condition templates: documented default plans a care plan starts from.

Each template is a YAML file in ``templates/`` next to this module (package data, shipped
in the wheel): a title, a version, a description, the ``personal`` values its rules refer
to, and its rules (:data:`homemonitor.rules.plan.RuleSpec`), each citing its ``source``.
A registry entry references one by name (``template: heart_failure``) and personalises it;
:func:`homemonitor.rules.plan.resolve` takes :data:`TEMPLATES` as it is::

    >>> from homemonitor.rules import plan, templates
    >>> spec = plan.CarePlanSpec(template="heart_failure", personal={"dry_weight": 82.0})
    >>> [r.id for r in plan.resolve(spec, 1, templates.TEMPLATES).rules][:2]
    ['weight.gain_3d', 'weight.above_dry']

The files are read and validated once, on first use; a template that does not validate is
a :class:`~homemonitor.errors.PlanError` naming the file. The thresholds are examples to
start from, never clinical advice: the clinician responsible for the patient sets them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from homemonitor.errors import PlanError
from homemonitor.fields import PlainText
from homemonitor.rules.plan import Expected, PersonalKey, RuleSpec

#: The templates shipped with homemonitor, by name (the file name without ``.yaml``).
NAMES: tuple[str, ...] = ("copd", "heart_failure", "hypertension")

_RULES = TypeAdapter(list[RuleSpec])


class PersonalValue(BaseModel):
    """A value a template's rules refer to, which the patient's plan sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    unit: PlainText
    description: PlainText = Field(min_length=1)
    #: A required value is one a rule is ``relative_to``: resolving without it fails.
    required: bool = True


class _File(BaseModel):
    """A template file as written (its rules are validated separately, by position)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: PlainText = Field(min_length=1)
    version: int = Field(ge=1)
    description: PlainText = Field(min_length=1)
    personal: dict[PersonalKey, PersonalValue] = {}
    rules: list[dict[str, Any]] = Field(min_length=1)
    #: The missing-data rules: how often each metric is expected, the silence tolerated.
    expected: list[Expected] = []


@dataclasses.dataclass(frozen=True, slots=True)
class Template(Sequence[RuleSpec]):
    """A loaded template: its rules in order (a :data:`homemonitor.rules.plan.Template`)."""

    name: str
    title: str
    version: int
    description: str
    personal: Mapping[str, PersonalValue]
    rules: tuple[RuleSpec, ...]
    expected: tuple[Expected, ...] = ()

    @overload
    def __getitem__(self, index: int) -> RuleSpec: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RuleSpec]: ...
    def __getitem__(self, index: int | slice) -> RuleSpec | Sequence[RuleSpec]:
        return self.rules[index]

    def __len__(self) -> int:
        return len(self.rules)

    def rule(self, rule_id: str) -> RuleSpec | None:
        """The rule named ``rule_id``, or None."""
        return next((r for r in self.rules if r.id == rule_id), None)

    @property
    def required(self) -> frozenset[str]:
        """The personal values a plan from this template must set."""
        return frozenset(k for k, v in self.personal.items() if v.required)


def parse(name: str, text: str) -> Template:
    """The template ``name`` from its YAML ``text``; PlanError says what is wrong."""
    try:
        head = _File.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise PlanError(f"template {name!r} is invalid: {_describe(exc)}") from exc
    try:
        rules = tuple(_RULES.validate_python(head.rules))
    except ValidationError as exc:
        raise PlanError(f"template {name!r} is invalid: rules.{_describe(exc)}") from exc
    problems = []
    ids = [r.id for r in (*rules, *head.expected)]
    problems += [f"two rules are named {i!r}" for i in sorted(set(ids)) if ids.count(i) > 1]
    cited = (*rules, *head.expected)
    problems += [f"rule {r.id!r} cites no source" for r in cited if not r.source.strip()]
    for rule in rules:
        ref = getattr(rule, "relative_to", None)
        declared = head.personal.get(ref) if ref is not None else None
        if ref is not None and (declared is None or not declared.required):
            problems.append(f"rule {rule.id!r} is relative to {ref!r}: declare it required")
    if problems:
        raise PlanError(f"template {name!r} is invalid: " + "; ".join(problems))
    return Template(
        name,
        head.title,
        head.version,
        head.description,
        head.personal,
        rules,
        tuple(head.expected),
    )


@functools.cache
def load() -> Mapping[str, Template]:
    """Every shipped template by name, read and validated once (cached)."""
    folder = resources.files(__package__ or "homemonitor.rules").joinpath("templates")
    return {n: parse(n, folder.joinpath(f"{n}.yaml").read_text(encoding="utf-8")) for n in NAMES}


class _Templates(Mapping[str, Template]):
    """:func:`load` as a mapping, so that importing this module reads no file."""

    def __getitem__(self, name: str) -> Template:
        return load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(load())

    def __len__(self) -> int:
        return len(load())


#: The shipped templates by name; pass it to :func:`homemonitor.rules.plan.resolve`.
TEMPLATES: Mapping[str, Template] = _Templates()


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"
    return str(exc).splitlines()[0]
