"""The care plan as clinicians write it, and the concrete rules a patient is evaluated with.

A plan (:class:`CarePlanSpec`) usually starts from a condition *template*
(:mod:`homemonitor.rules.templates`) and personalises it: ``personal`` values the template's
rules refer to (a dry weight, a target SpO2 range), ``overrides`` of a template rule's
parameters by rule id, rules ``disabled`` by id, and ``rules`` of its own. The older form,
``thresholds`` (absolute bounds per quantity), still works: each bound becomes a threshold
rule named ``<quantity>.<high|low>``. :func:`resolve` turns a spec into a :class:`Plan`, the
frozen list of rules the engine runs.

Every rule kind shares :class:`RuleBase`: an id, where its numbers come from, whether an
episode latches, how questionable readings and retakes are treated, and when it may alert
again after a clinician resolved it. Thresholds are examples to start from, never clinical
advice: the clinician responsible for the patient sets them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homemonitor.contract.readings import Metric, Quantity
from homemonitor.errors import PlanError
from homemonitor.fields import PlainText
from homemonitor.rules.careplan import Bounds

#: A rule's id: what ``alerts.rule`` holds and an override or ``disabled`` names.
RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9_.]{0,63}$"
RuleId = Annotated[str, Field(pattern=RULE_ID_PATTERN)]
#: A key of ``personal`` (``dry_weight``, ``target_spo2_low``, ...).
PersonalKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]

_Model = ConfigDict(extra="forbid", frozen=True)

#: How far back a count-based window (``k`` of ``n`` without ``within_hours``,
#: ``clear_readings`` > 1) looks for its readings: older readings never count.
PERSISTENCE_HOURS = 7 * 24.0
#: The most readings per quantity a patient's history needs to hold (a safety bound on
#: memory and on the worker's windowed query; see :meth:`Plan.lookback`).
HISTORY_CAP = 2000
#: A MACD's EWMAs start this many long spans before the evaluation point.
MACD_MEMORY = 3.0


class Realert(BaseModel):
    """When a rule may alert again after a clinician resolved its episode.

    It re-opens only when the level is higher than at resolution, when the value is worse
    than the resolved episode's worst by ``worsen_by`` (in the rule's unit; the kind's
    default when absent), when the rule cleared after the resolution and breached again,
    or when the condition still holds ``after_hours`` after the resolution.
    """

    model_config = _Model
    after_hours: float = Field(default=72.0, gt=0, le=24 * 90)
    worsen_by: float | None = Field(default=None, ge=0)


class RuleBase(BaseModel):
    """What every rule kind has."""

    model_config = _Model
    id: RuleId
    #: Where the rule and its numbers come from (templates cite a guideline or study).
    source: PlainText = ""
    note: PlainText = ""
    #: ``auto``: an episode that reached urgent stays until a clinician resolves it, a
    #: warning resolves by itself once the rule clears (IEC 60601-1-8: acknowledging is
    #: not silencing). ``always`` / ``never`` decide it for every severity.
    latching: Literal["auto", "always", "never"] = "auto"
    #: Readings a device marked as questionable (body movement, cuff fit, ...): left out
    #: of this rule's evaluation (``exclude``) or used like any other (``include``).
    questionable: Literal["exclude", "include"] = "exclude"
    #: A breach without an open episode waits this long for a retake: a normal retake
    #: withdraws it (an artefact), a breaching one or none at all opens the episode.
    retake_minutes: float | None = Field(default=None, gt=0, le=240)
    #: A non-latching episode whose rule cleared resolves by itself only once the rule
    #: has stayed clear this long (0, the default: at once); a breach in between keeps
    #: the episode open rather than opening a new one, so values hovering at a bound make
    #: one episode, not one a day. The templates set it.
    resolve_after_hours: float = Field(default=0.0, ge=0, le=24 * 14)
    realert: Realert = Realert()


class ThresholdRule(RuleBase):
    """A quantity beyond a bound, optionally persisting, clearing with hysteresis.

    Bounds are inclusive (``urgent: 180`` fires at 180). With ``relative_to``, they are
    offsets from a ``personal`` value (``relative_to: dry_weight, warning: 2.0``).
    Persistence: at least ``k`` of the last ``n`` readings (within ``within_hours`` when
    set) breach, or every reading for at least ``for_hours`` does. It clears when
    ``clear_readings`` consecutive readings are back inside the bound by ``clear_margin``.
    """

    kind: Literal["threshold"] = "threshold"
    quantity: Quantity
    direction: Literal["high", "low"]
    warning: float | None = None
    urgent: float | None = None
    relative_to: PersonalKey | None = None
    k: int = Field(default=1, ge=1, le=50)
    n: int = Field(default=1, ge=1, le=50)
    within_hours: float | None = Field(default=None, gt=0, le=24 * 30)
    for_hours: float | None = Field(default=None, gt=0, le=24 * 30)
    clear_margin: float = Field(default=0.0, ge=0)
    clear_readings: int = Field(default=1, ge=1, le=50)

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        _levels_present(self.warning, self.urgent)
        if self.k > self.n:
            raise ValueError("k must not exceed n")
        if self.for_hours is not None and (self.k, self.n) != (1, 1):
            raise ValueError("use either k of n or for_hours, not both")
        if self.warning is not None and self.urgent is not None:
            sign = 1 if self.direction == "high" else -1
            if sign * (self.urgent - self.warning) < 0:
                raise ValueError(f"urgent must be beyond warning for a {self.direction} bound")
        return self

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        """The quantities this rule reads."""
        return (self.quantity,)

    @property
    def simple(self) -> bool:
        """True when an assessment needs only the reading at the evaluation point."""
        return self.n == 1 and self.for_hours is None and self.clear_readings == 1

    def lookback_hours(self) -> float:
        """How much history before an evaluation point this rule reads (0: none)."""
        hours = 0.0
        if self.n > 1:
            hours = self.within_hours or PERSISTENCE_HOURS
        if self.for_hours is not None:
            hours = max(hours, 2 * self.for_hours)  # the run's start may lie before the window
        if self.clear_readings > 1:
            hours = max(hours, PERSISTENCE_HOURS)
        return hours


class ChangeRule(RuleBase):
    """A rise or fall of at least a delta against a reference in the preceding window.

    The value at an evaluation point is the reading there; the reference is the ``min``,
    ``max``, ``mean`` or ``first`` of the readings in the ``window_hours`` before it
    (at least ``min_reference_readings`` of them). Deltas are inclusive and positive:
    ``direction`` says which way.
    """

    kind: Literal["change"] = "change"
    quantity: Quantity
    direction: Literal["rise", "fall"]
    warning: float | None = Field(default=None, gt=0)
    urgent: float | None = Field(default=None, gt=0)
    window_hours: float = Field(gt=0, le=24 * 30)
    reference: Literal["min", "max", "mean", "first"] = "min"
    min_reference_readings: int = Field(default=1, ge=1, le=100)
    #: Readings this close before the evaluation point are its session: their mean is the
    #: value, and they are not part of the reference.
    session_minutes: float = Field(default=10.0, ge=0, le=120)

    @model_validator(mode="after")
    def _consistent(self) -> ChangeRule:
        _levels_rising(self.warning, self.urgent)
        return self

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        """The quantities this rule reads."""
        return (self.quantity,)

    def lookback_hours(self) -> float:
        """How much history before an evaluation point this rule reads."""
        return self.window_hours + self.session_minutes / 60


class AverageBound(BaseModel):
    """The bounds of one quantity's mean in an average protocol (inclusive, high)."""

    model_config = _Model
    warning: float | None = None
    urgent: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AverageBound:
        _levels_rising(self.warning, self.urgent)
        return self


class AverageRule(RuleBase):
    """The mean over a home-measurement protocol: e.g. home blood pressure per ESH/NICE.

    Readings within ``session_minutes`` of a session's first are one session and are
    averaged first; sessions are averaged per local day (Europe/Stockholm), over the last
    ``days`` days with readings, the first of them discarded when ``discard_first_day``.
    It needs ``min_days`` days and ``min_readings`` readings after that. A quantity's mean
    at or above its bound breaches; the worst level over ``bounds`` counts. It clears when
    every mean is below its lowest bound by ``clear_margin`` (hysteresis).

    ``new_protocol_after_resolution``: once a clinician has resolved an episode, the mean
    is taken over readings measured after the resolution only, until the rule alerts
    again: a new measurement protocol (its first day discarded too), as the guidelines
    ask after a change of treatment, rather than a rolling mean that is mostly the
    readings the clinician just acted on.
    """

    kind: Literal["average"] = "average"
    bounds: dict[Quantity, AverageBound] = Field(min_length=1)
    days: int = Field(default=7, ge=1, le=30)
    min_days: int = Field(default=4, ge=1, le=30)
    discard_first_day: bool = True
    session_minutes: float = Field(default=10.0, gt=0, le=120)
    min_readings: int = Field(default=1, ge=1, le=200)
    clear_margin: float = Field(default=0.0, ge=0)
    new_protocol_after_resolution: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> AverageRule:
        if self.min_days > self.days:
            raise ValueError("min_days must not exceed days")
        return self

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        """The quantities this rule reads."""
        return tuple(self.bounds)

    def lookback_hours(self) -> float:
        """How much history before an evaluation point this rule reads (local days + DST)."""
        return self.days * 24.0 + 1 + self.session_minutes / 60


class BaselinePart(BaseModel):
    """A further quantity of a ``composite`` baseline: which way is worse, and the least
    standard deviation its run-in is taken to have (a device's resolution, so a run-in
    of identical readings does not make every change infinitely many SDs)."""

    model_config = _Model
    quantity: Quantity
    direction: Literal["high", "low"]
    min_sd: float = Field(gt=0)


class BaselineRule(RuleBase):
    """A deviation from the patient's own history, armed after a run-in.

    ``ewma``: an exponentially weighted moving average of the readings against control
    limits from the run-in mean and standard deviation (warning/urgent are the limits'
    multipliers of the EWMA's standard deviation), with ``min_deviation`` as an absolute
    floor. ``macd``: the difference of a short and a long EWMA (spans in days), warning
    and urgent in the quantity's unit; the evaluation's reference row. The run-in restarts
    when the device measuring the quantity changes: a new scale has its own offset.
    ``composite``: the EWMA of ``quantity`` and of each of ``also``, each as a deviation
    from its own run-in mean in its run-in SDs (oriented so that worse is positive), and
    their mean compared with warning/urgent (in SDs): the composite oximetry score of
    Hurst et al. (2010), a fall in SpO2 and a rise in pulse together. ``min_sd`` is the
    least SD of ``quantity``'s run-in (each part has its own); armed once every part is.
    """

    kind: Literal["baseline"] = "baseline"
    quantity: Quantity
    direction: Literal["high", "low"]
    method: Literal["ewma", "macd", "composite"] = "ewma"
    also: tuple[BaselinePart, ...] = ()
    min_sd: float = Field(default=0.0, ge=0)
    run_in_days: float = Field(default=14.0, gt=0, le=90)
    min_run_in_readings: int = Field(default=7, ge=2, le=500)
    #: ``ewma``: the window is the last ``run_in_days + monitor_days``; the run-in is the
    #: first ``run_in_days`` of the current device's readings in it (with daily readings:
    #: the ``run_in_days`` before the last ``monitor_days``; after a device change: the new
    #: device's first days), and the EWMA runs over the readings after the run-in.
    monitor_days: float = Field(default=7.0, gt=0, le=60)
    weight: float = Field(default=0.3, gt=0, le=1)  # the EWMA's lambda
    short_days: float = Field(default=3.0, gt=0, le=30)  # macd
    long_days: float = Field(default=10.0, gt=0, le=90)  # macd
    warning: float | None = Field(default=None, gt=0)
    urgent: float | None = Field(default=None, gt=0)
    min_deviation: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> BaselineRule:
        _levels_rising(self.warning, self.urgent)
        if self.method == "macd" and self.short_days >= self.long_days:
            raise ValueError("short_days must be below long_days")
        if self.method == "composite":
            if not self.also:
                raise ValueError("a composite baseline needs at least one quantity in also")
            if len(set(self.quantities)) < len(self.quantities):
                raise ValueError("a composite baseline reads each quantity once")
            if self.min_sd <= 0:
                raise ValueError("a composite baseline needs min_sd above 0")
            if self.min_deviation:
                raise ValueError("a composite baseline has min_sd per part, not min_deviation")
        elif self.also or self.min_sd:
            raise ValueError("also and min_sd are for method composite only")
        return self

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        """The quantities this rule reads."""
        return (self.quantity, *(p.quantity for p in self.also))

    @property
    def parts(self) -> tuple[BaselinePart, ...]:
        """Every quantity of a composite as a part: ``quantity`` first, then ``also``."""
        first = BaselinePart.model_construct(
            quantity=self.quantity, direction=self.direction, min_sd=self.min_sd
        )
        return (first, *self.also)

    def lookback_hours(self) -> float:
        """How much history before an evaluation point this rule reads."""
        if self.method == "macd":
            return 24.0 * max(self.run_in_days, MACD_MEMORY * self.long_days)
        return 24.0 * (self.run_in_days + self.monitor_days)


class ScoreRule(RuleBase):
    """A home-measurable subset of NEWS2 (Royal College of Physicians, 2017).

    SpO2 (scale 1, or scale 2 only for hypercapnic respiratory failure with a prescribed
    target of 88-92 %), pulse and systolic pressure, each the latest reading within
    ``session_minutes`` before the evaluation point. No respiratory rate, consciousness or
    temperature can be measured at home, so the score is a partial NEWS2 and not
    validated as such; ``warning``/``urgent`` are aggregate cut-offs, ``single_red`` the
    level of any one parameter scoring 3.
    """

    kind: Literal["score"] = "score"
    spo2_scale: Literal[1, 2] = 1
    on_oxygen: bool = False
    session_minutes: float = Field(default=30.0, gt=0, le=240)
    warning: int | None = Field(default=None, ge=1, le=9)
    urgent: int | None = Field(default=None, ge=1, le=9)
    single_red: Literal["warning", "urgent"] | None = "warning"

    @model_validator(mode="after")
    def _consistent(self) -> ScoreRule:
        _levels_rising(self.warning, self.urgent)
        return self

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        """The quantities this rule reads."""
        return (Quantity.SPO2, Quantity.HEART_RATE, Quantity.SYSTOLIC)

    def lookback_hours(self) -> float:
        """How much history before an evaluation point this rule reads."""
        return self.session_minutes / 60


RuleSpec: TypeAlias = Annotated[
    ThresholdRule | ChangeRule | AverageRule | BaselineRule | ScoreRule,
    Field(discriminator="kind"),
]


def triggers(rule: RuleSpec) -> tuple[Quantity, ...]:
    """The quantities whose new readings run ``rule``: the engine assesses it at a point
    carrying one, and the history query fetches what it reads for such a point. Those it
    reads, but a composite baseline's first only (its other parts are read from that
    reading's device)."""
    if isinstance(rule, BaselineRule) and rule.method == "composite":
        return (rule.quantity,)
    return rule.quantities


#: The rule id of a patient's metric gone silent: ``missing.<metric>``.
MISSING_PREFIX = "missing."
#: The rule id of a patient whose home gateway has gone silent (one per patient).
GATEWAY_SILENT = "gateway.silent"


def is_silence_rule(rule_id: str) -> bool:
    """Whether ``rule_id`` names a missing-data rule (an expectation), not an engine rule."""
    return rule_id.startswith(MISSING_PREFIX) or rule_id == GATEWAY_SILENT


class Expected(BaseModel):
    """How often a patient is expected to measure one metric, and how long a silence the
    plan tolerates before it alerts (a missing-data rule, ``missing.<metric>``).

    The silence is the time since the patient's latest reading of ``metric`` (or since
    the end of a pause, whichever is later); it alerts once it exceeds ``tolerate_hours``,
    but only for a patient who measured *regularly* before: at least ``min_share`` of the
    readings ``every_hours`` asks for in the ``run_in_days`` up to that latest reading.
    A patient who never started, or measured only now and then, is not alerted for (an
    onboarding question, not a change in the patient: docs/care-plans.md).
    """

    model_config = _Model
    metric: Metric
    #: The schedule: one reading this often (24: daily; 84: twice a week).
    every_hours: float = Field(gt=0, le=24 * 14)
    #: At most 21 days: the silence job looks 28 days back (alerts.silence.HORIZON).
    tolerate_hours: float = Field(gt=0, le=24 * 21)
    run_in_days: float = Field(default=14.0, gt=0, le=90)
    min_share: float = Field(default=0.5, gt=0, le=1)
    severity: Literal["warning", "urgent"] = "warning"
    source: PlainText = ""
    note: PlainText = ""

    @model_validator(mode="after")
    def _consistent(self) -> Expected:
        if self.tolerate_hours < self.every_hours:
            raise ValueError("tolerate_hours must be at least every_hours")
        if self.run_in_days * 24 < self.every_hours:
            raise ValueError("run_in_days must cover at least one expected reading")
        return self

    @property
    def id(self) -> str:
        """The rule id its alerts carry: ``missing.<metric>``."""
        return f"{MISSING_PREFIX}{self.metric.value}"

    def min_readings(self) -> int:
        """Readings in the run-in that make a patient one who measures regularly (>= 1)."""
        expected = self.run_in_days * 24 / self.every_hours
        return max(1, math.ceil(self.min_share * expected - 1e-9))


def _levels_present(warning: float | None, urgent: float | None) -> None:
    if warning is None and urgent is None:
        raise ValueError("set warning, urgent or both")


def _levels_rising(warning: float | None, urgent: float | None) -> None:
    """At least one level, and urgent at or above warning (every kind but a low threshold)."""
    _levels_present(warning, urgent)
    if warning is not None and urgent is not None and urgent < warning:
        raise ValueError("urgent must be at or above warning")


class CarePlanSpec(BaseModel):
    """A care plan as the registry description and the API take it (see the module)."""

    model_config = _Model
    template: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    personal: dict[PersonalKey, float] = {}
    #: Parameters of a template rule replaced, by rule id (``{weight.gain_3d: {warning: 1.5}}``).
    overrides: dict[RuleId, dict[str, Any]] = {}
    disabled: list[RuleId] = []
    rules: list[RuleSpec] = []
    #: The older form: absolute bounds per quantity, each a threshold rule ``<q>.<dir>``.
    thresholds: dict[Quantity, Bounds] = {}
    #: How old (now - measured_at) an evaluation point may be and still open an episode.
    current_hours: float = Field(default=24.0, gt=0, le=24 * 14)
    #: Missing-data rules of the plan's own (a template's are overridden and disabled by
    #: their id, ``missing.<metric>``, like its rules).
    expected: list[Expected] = []


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """A patient's concrete rules, as the engine runs them."""

    version: int
    rules: tuple[ThresholdRule | ChangeRule | AverageRule | BaselineRule | ScoreRule, ...]
    personal: Mapping[str, float]
    current_hours: float = 24.0
    template: str | None = None
    #: The missing-data rules (:class:`Expected`), one per metric at most.
    expected: tuple[Expected, ...] = ()
    #: What the engine and the worker derive from the rules, computed once per plan (a
    #: cache, by its users' keys; never part of the plan's value).
    derived: dict[str, Any] = dataclasses.field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def rule(self, rule_id: str) -> RuleSpec | None:
        """The rule named ``rule_id``, or None."""
        return next((r for r in self.rules if r.id == rule_id), None)

    def lookback(self) -> timedelta:
        """The longest history before an evaluation point that any rule reads.

        The worker's windowed query fetches a patient's readings measured at or after
        ``min(points) - lookback()`` (and everything newer: the engine needs to see what
        is newer than an out-of-order point), at most :data:`HISTORY_CAP` per quantity.
        Zero for a plan of plain 1-of-1 thresholds: the points alone are enough.
        """
        found: timedelta | None = self.derived.get("lookback")
        if found is None:
            hours = max((r.lookback_hours() for r in self.rules), default=0.0)
            found = self.derived["lookback"] = timedelta(hours=hours)
        return found

    def quantities(self) -> frozenset[Quantity]:
        """Every quantity some rule reads (the others need not be fetched)."""
        return frozenset(q for r in self.rules for q in r.quantities)


#: A template as :mod:`homemonitor.rules.templates` loads it: its rules by id, in order.
Template: TypeAlias = Sequence[RuleSpec]


def legacy_rules(thresholds: Mapping[Quantity, Bounds]) -> list[ThresholdRule]:
    """The older ``thresholds`` form as threshold rules named ``<quantity>.<direction>``."""
    rules = []
    for quantity, bounds in sorted(thresholds.items()):
        for direction in ("high", "low"):
            levels = getattr(bounds, direction)
            if levels is None or (levels.warning is None and levels.urgent is None):
                continue
            rules.append(
                ThresholdRule(
                    id=f"{quantity.value}.{direction}",
                    quantity=quantity,
                    direction=direction,
                    warning=levels.warning,
                    urgent=levels.urgent,
                )
            )
    return rules


def resolve(spec: CarePlanSpec, version: int, templates: Mapping[str, Template]) -> Plan:
    """The concrete rules of ``spec``: template, personalised, plus its own rules.

    Raises :class:`~homemonitor.errors.PlanError` naming what is wrong: an unknown
    template, an override or ``disabled`` id the template does not have, an override that
    makes a rule invalid, a ``relative_to`` without its ``personal`` value, two rules with
    one id.
    """
    base: list[RuleSpec] = []
    base_expected: list[Expected] = []
    if spec.template is not None:
        template = templates.get(spec.template)
        if template is None:
            known = ", ".join(sorted(templates)) or "none"
            raise PlanError(f"unknown template {spec.template!r} (known: {known})")
        base = list(template)
        base_expected = list(getattr(template, "expected", ()))
    elif spec.overrides or spec.disabled:
        raise PlanError("overrides and disabled need a template")
    ids = {r.id for r in base} | {e.id for e in base_expected}
    problems = [f"override of {i!r}: the template has no such rule" for i in spec.overrides]
    problems = [p for i, p in zip(spec.overrides, problems, strict=True) if i not in ids]
    problems += [
        f"disabled {i!r}: the template has no such rule" for i in spec.disabled if i not in ids
    ]
    rules: list[RuleSpec] = _personalised(base, spec, ("id", "kind"), problems)
    rules += [*spec.rules, *legacy_rules(spec.thresholds)]
    expected = [*_personalised(base_expected, spec, ("metric",), problems), *spec.expected]
    seen: set[str] = set()
    for rule in (*rules, *expected):
        if rule.id in seen:
            problems.append(f"two rules are named {rule.id!r}")
        seen.add(rule.id)
    for rule in rules:
        if is_silence_rule(rule.id):
            problems.append(f"rule {rule.id!r}: missing.* and gateway.* name missing-data rules")
        ref = getattr(rule, "relative_to", None)
        if ref is not None and ref not in spec.personal:
            problems.append(f"rule {rule.id!r} is relative to personal {ref!r}, which is not set")
    if problems:
        raise PlanError("care plan is invalid: " + "; ".join(problems))
    return Plan(
        version,
        tuple(rules),
        dict(spec.personal),
        spec.current_hours,
        spec.template,
        tuple(expected),
    )


_Item = TypeVar("_Item", bound=RuleBase | Expected)


def _personalised(
    base: Sequence[_Item], spec: CarePlanSpec, fixed: tuple[str, ...], problems: list[str]
) -> list[_Item]:
    """A template's rules (or missing-data rules) with the spec's overrides and disabled.

    ``fixed`` names the fields an override cannot change; what is wrong goes to ``problems``.
    """
    found: list[_Item] = []
    for original in base:
        if original.id in spec.disabled:
            continue
        change = spec.overrides.get(original.id)
        if not change:
            found.append(original)
            continue
        if any(key in change for key in fixed):
            problems.append(
                f"override of {original.id!r}: {' and '.join(fixed)} cannot be overridden"
            )
            continue
        try:
            changed = type(original).model_validate({**original.model_dump(), **change})
            found.append(cast(_Item, changed))  # type(original) is _Item's own class
        except ValueError as exc:
            problems.append(f"override of {original.id!r}: {_first_error(exc)}")
    return found


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)
