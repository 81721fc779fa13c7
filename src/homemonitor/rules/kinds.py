"""What each rule kind makes of a patient's history at one evaluation point. Pure.

:func:`assess` runs one rule at one point in time over the readings measured at or before
it and returns an :class:`Assessment`: the level it reached, whether its clear condition
holds, the value it judged and the facts it used. The episode state machine
(:mod:`homemonitor.rules.episodes`) turns assessments into alert changes;
:mod:`homemonitor.rules.explain` turns one into the sentence a nurse reads.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from homemonitor.contract.readings import Quantity
from homemonitor.rules.history import FloatArray, History, Series
from homemonitor.rules.plan import (
    MACD_MEMORY,
    PERSISTENCE_HOURS,
    AverageRule,
    BaselineRule,
    ChangeRule,
    Plan,
    RuleSpec,
    ScoreRule,
    ThresholdRule,
)

#: A fact an assessment used: a number, a text (a quantity, a time), or None (absent).
Fact = float | int | str | None

NONE, WARNING, URGENT = 0, 1, 2
LEVEL_NAMES = ("none", "warning", "urgent")
#: Local days of the average protocol (home blood pressure) are days in Sweden.
LOCAL_ZONE = ZoneInfo("Europe/Stockholm")
#: Comparisons with a bound forgive float rounding (86.3 is 84.3 + 2.0).
EPS = 1e-9
_DAY = 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """One rule at one evaluation point.

    ``level``: 0 none, 1 warning, 2 urgent. ``cleared``: the rule's clear condition holds
    (level 0 and, for thresholds, back inside the bound by the clear margin for enough
    readings); level 0 with ``cleared`` false means "not enough to say" (too little data,
    not armed, inside the hysteresis band) and leaves an episode as it is.
    ``value`` is the reading (or mean) the rule judged, in the quantity's unit;
    ``measure`` the number compared with the rule's bounds, oriented so that larger is
    worse (the value for a high threshold, minus the value for a low one, the delta of a
    change, the excess of an average over its bound, a baseline's deviation, a score):
    an episode's ``worst`` and the re-alert's ``worsen_by`` are in it. ``facts`` are the
    numbers it used (window, reference, mean, delta, baseline, n, ...), JSON-ready.
    """

    rule: RuleSpec
    plan_version: int
    at: datetime
    level: int
    cleared: bool
    value: float | None
    measure: float | None
    facts: Mapping[str, Fact]

    @property
    def severity(self) -> str:
        """``none``, ``warning`` or ``urgent``."""
        return LEVEL_NAMES[self.level]

    def sentence(self) -> str:
        """One plain sentence a nurse can read (see :mod:`homemonitor.rules.explain`)."""
        from homemonitor.rules.explain import sentence  # noqa: PLC0415 -- explain imports us

        return sentence(self)

    def sentences(self) -> dict[str, str]:
        """The sentence in Swedish and English, by language (``{"sv": ..., "en": ...}``)."""
        from homemonitor.rules.explain import sentences  # noqa: PLC0415 -- explain imports us

        return sentences(self)


def assess(rule: RuleSpec, plan: Plan, history: History, at: datetime) -> Assessment:
    """``rule`` of ``plan`` at ``at``, over the readings of ``history`` measured at or before.

    Readings after ``at`` are never used, so one history can serve every point of a batch
    (or of a replay). Questionable readings are left out unless the rule includes them.
    """
    return assess_at(rule, plan, history, at, at.timestamp())


def assess_at(
    rule: RuleSpec,
    plan: Plan,
    history: History,
    at: datetime,
    ts: float,
    *,
    resolved: float | None = None,
) -> Assessment:
    """:func:`assess` with ``at`` also given as POSIX seconds (``ts``): the engine's loop.

    ``resolved``: when (POSIX s) a clinician resolved the rule's last episode, for an
    average protocol with ``new_protocol_after_resolution`` (only readings measured after
    it count); other rules ignore it.
    """
    ctx = _Ctx(rule, plan, history, at, ts, resolved)
    if isinstance(rule, ThresholdRule):
        return _threshold(ctx, rule)
    if isinstance(rule, ChangeRule):
        return _change(ctx, rule)
    if isinstance(rule, AverageRule):
        return _average(ctx, rule)
    if isinstance(rule, BaselineRule):
        if rule.method == "composite":
            return _composite(ctx, rule)
        return _macd(ctx, rule) if rule.method == "macd" else _ewma(ctx, rule)
    return _score(ctx, rule)


@dataclasses.dataclass(frozen=True, slots=True)
class _Ctx:
    rule: RuleSpec
    plan: Plan
    history: History
    at: datetime
    ts: float
    resolved: float | None = None

    def series(self, quantity: Quantity) -> Series:
        return self.history.series(quantity, questionable=self.rule.questionable == "include")

    def result(
        self,
        level: int,
        cleared: bool,
        value: float | None,
        measure: float | None,
        facts: dict[str, Fact],
    ) -> Assessment:
        return Assessment(
            self.rule, self.plan.version, self.at, level, cleared, value, measure, facts
        )

    def unknown(
        self, why: str, facts: dict[str, Fact] | None = None, value: float | None = None
    ) -> Assessment:
        """Too little to say: level 0, not cleared (an episode stays as it is)."""
        return self.result(NONE, False, value, None, {**(facts or {}), "insufficient": why})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _levels(value: float, warning: float | None, urgent: float | None) -> int:
    """The level of an oriented value (larger is worse) against oriented bounds."""
    if urgent is not None and value >= urgent - EPS:
        return URGENT
    if warning is not None and value >= warning - EPS:
        return WARNING
    return NONE


# -- threshold ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Bounds:
    rule: ThresholdRule
    sign: float
    warning: float | None  # absolute, in the quantity's unit
    urgent: float | None
    ow: float | None  # oriented: larger is worse
    ou: float | None
    clear: float  # oriented bound the clear condition is measured from

    @classmethod
    def of(cls, rule: ThresholdRule, plan: Plan) -> _Bounds:
        """``rule``'s bounds in ``plan`` (computed once per plan and rule)."""
        cache: dict[str, _Bounds] = plan.derived.setdefault("bounds", {})
        found = cache.get(rule.id)
        if found is None or found.rule is not rule:
            found = cache[rule.id] = cls._of(rule, plan)
        return found

    @classmethod
    def _of(cls, rule: ThresholdRule, plan: Plan) -> _Bounds:
        sign = 1.0 if rule.direction == "high" else -1.0
        base = plan.personal[rule.relative_to] if rule.relative_to is not None else 0.0
        warning = None if rule.warning is None else base + rule.warning
        urgent = None if rule.urgent is None else base + rule.urgent
        ow = None if warning is None else sign * warning
        ou = None if urgent is None else sign * urgent
        clear = ow if ow is not None else ou
        assert clear is not None  # the model requires warning or urgent
        return cls(rule, sign, warning, urgent, ow, ou, clear)


def absolute_bounds(rule: ThresholdRule, plan: Plan) -> tuple[float | None, float | None]:
    """``rule``'s warning and urgent bounds in ``plan`` as values of its quantity (a
    ``relative_to`` rule's offsets added to the patient's personal value): what the engine
    compares readings with, and what a chart draws."""
    b = _Bounds.of(rule, plan)
    return b.warning, b.urgent


def _threshold_facts(rule: ThresholdRule, plan: Plan, b: _Bounds) -> dict[str, Fact]:
    facts: dict[str, Fact] = {
        "quantity": rule.quantity.value,
        "direction": rule.direction,
        "warning": b.warning,
        "urgent": b.urgent,
    }
    if rule.relative_to is not None:
        facts["relative_to"] = rule.relative_to
        facts["reference"] = plan.personal[rule.relative_to]
    return facts


def quick_level(rule: ThresholdRule, plan: Plan, value: float) -> int:
    """The level of a plain threshold's one reading, without building an assessment.

    The engine's cheapest path: an idle rule whose reading does not breach needs nothing
    more.
    """
    base = plan.personal[rule.relative_to] if rule.relative_to is not None else 0.0
    x = value - base if rule.direction == "high" else base - value
    urgent, warning = rule.urgent, rule.warning
    if urgent is not None and x >= (urgent if rule.direction == "high" else -urgent) - EPS:
        return URGENT
    if warning is not None and x >= (warning if rule.direction == "high" else -warning) - EPS:
        return WARNING
    return NONE


#: How far inside its bounds an average's readings must all be for :func:`may_breach` to
#: rule a breach out: more than the rounding of any mean of them.
_MEAN_SLACK = 1e-6


def screened(rule: RuleSpec) -> bool:
    """Whether :func:`may_breach` can rule out a breach of ``rule`` without assessing it."""
    if isinstance(rule, BaselineRule):
        return rule.method == "ewma"
    if isinstance(rule, ThresholdRule):
        return not rule.simple
    return isinstance(rule, AverageRule | ScoreRule)


def may_breach(rule: RuleSpec, plan: Plan, history: History, ts: float) -> bool:
    """Whether ``rule`` may reach a level above none at ``ts`` (POSIX s); False only when
    :func:`assess` would certainly say level 0, so an idle rule needs no assessment.

    A threshold: whether the reading it judges reaches one of its bounds (persistence only
    ever lowers the level; the same comparison as :func:`assess`). An average protocol:
    whether any reading of its window reaches the lowest bound of its quantity (a mean is
    never above its largest reading). An EWMA baseline: whether its deviation may reach
    its floor (:func:`_ewma_may_breach`). A score: whether it reaches a level (the same
    score as :func:`assess`, without its facts). Other kinds (see :func:`screened`): always True.
    """
    questionable = rule.questionable == "include"
    if isinstance(rule, ThresholdRule):
        s = history.series(rule.quantity, questionable=questionable)
        i = s.end(ts)
        if i == 0:
            return False
        b = _Bounds.of(rule, plan)
        return _levels(b.sign * float(s.value[i - 1]), b.ow, b.ou) > NONE
    if isinstance(rule, BaselineRule):
        if rule.method != "ewma":
            return True
        return _ewma_may_breach(history.series(rule.quantity, questionable=questionable), rule, ts)
    if isinstance(rule, ScoreRule):
        return _score_may_breach(rule, history, ts)
    if not isinstance(rule, AverageRule):
        return True
    window_start = _day_start(_local_day(ts) - timedelta(days=rule.days - 1))
    for q, bound in rule.bounds.items():
        s = history.series(q, questionable=questionable)
        j, i = s.start(window_start), s.end(ts)
        lowest = bound.warning if bound.warning is not None else bound.urgent
        if i > j and (lowest is None or float(s.value[j:i].max()) >= lowest - _MEAN_SLACK):
            return True
    return False


def assess_reading(rule: ThresholdRule, plan: Plan, value: float, at: datetime) -> Assessment:
    """A plain threshold (``rule.simple``: 1 of 1, no ``for_hours``, one clear reading) on
    the one reading it needs: the engine's fast path, the same answer as :func:`assess`.
    """
    b = _Bounds.of(rule, plan)
    measure = b.sign * value
    facts = _threshold_facts(rule, plan, b)
    level = _levels(measure, b.ow, b.ou)
    if level:
        facts["bound"] = b.warning if level == WARNING else b.urgent
        return Assessment(rule, plan.version, at, level, False, value, measure, facts)
    inside = b.clear - measure
    cleared = inside > EPS and inside >= rule.clear_margin - EPS
    facts["bound"] = b.warning if b.warning is not None else b.urgent
    if rule.clear_margin:
        facts["clear_margin"] = rule.clear_margin
    return Assessment(rule, plan.version, at, NONE, cleared, value, measure, facts)


def _threshold(ctx: _Ctx, rule: ThresholdRule) -> Assessment:
    s = ctx.series(rule.quantity)
    i = s.end(ctx.ts)
    if i == 0:
        return ctx.unknown("no reading")
    value = float(s.value[i - 1])
    if rule.simple:
        return assess_reading(rule, ctx.plan, value, ctx.at)
    b = _Bounds.of(rule, ctx.plan)
    measure = b.sign * value
    facts = _threshold_facts(rule, ctx.plan, b)
    now_level = _levels(measure, b.ow, b.ou)
    level = now_level
    if now_level and rule.n > 1:
        window = (rule.within_hours or PERSISTENCE_HOURS) * 3600
        j = max(i - rule.n, s.start(ctx.ts - window))
        oriented = b.sign * s.value[j:i]
        level = NONE
        for candidate, bound in ((URGENT, b.ou), (WARNING, b.ow)):
            if candidate > now_level or bound is None:
                continue
            hits = int(np.count_nonzero(oriented >= bound - EPS))
            if hits >= rule.k:
                level, facts["breaching"] = candidate, hits
                break
        facts.update(k=rule.k, n=rule.n, readings=i - j, within_hours=rule.within_hours)
    elif now_level and rule.for_hours is not None:
        j = s.start(ctx.ts - 2 * rule.for_hours * 3600)
        oriented = b.sign * s.value[j:i]
        level = NONE
        for candidate, bound in ((URGENT, b.ou), (WARNING, b.ow)):
            if candidate > now_level or bound is None:
                continue
            below = np.nonzero(oriented < bound - EPS)[0]
            first = j + (int(below[-1]) + 1 if len(below) else 0)
            hours = (ctx.ts - float(s.t[first])) / 3600
            if hours >= rule.for_hours - EPS:
                level, facts["run_hours"] = candidate, round(hours, 2)
                break
        facts["for_hours"] = rule.for_hours
    if level:
        facts["bound"] = b.warning if level == WARNING else b.urgent
        return ctx.result(level, False, value, measure, facts)
    # the clear condition: the last clear_readings readings inside the bound by the margin
    m = rule.clear_readings
    j = max(i - m, s.start(ctx.ts - PERSISTENCE_HOURS * 3600))
    inside = [b.clear - b.sign * x for x in s.value[j:i].tolist()]  # a few readings
    margin = rule.clear_margin - EPS
    cleared = len(inside) >= m and all(x > EPS and x >= margin for x in inside)
    facts["bound"] = b.warning if b.warning is not None else b.urgent
    facts.update(clear_margin=rule.clear_margin, clear_readings=m)
    return ctx.result(NONE, cleared, value, measure, facts)


# -- change -------------------------------------------------------------------------------


def _change(ctx: _Ctx, rule: ChangeRule) -> Assessment:
    s = ctx.series(rule.quantity)
    i = s.end(ctx.ts)
    if i == 0:
        return ctx.unknown("no reading")
    last = float(s.t[i - 1])
    session = max(s.start(last - rule.session_minutes * 60), 0)
    session = min(session, i - 1)
    value = float(np.mean(s.value[session:i]))
    j = s.start(last - rule.window_hours * 3600)
    ref_values = s.value[j:session]
    facts: dict[str, Fact] = {
        "quantity": rule.quantity.value,
        "window_hours": rule.window_hours,
        "reference_kind": rule.reference,
        "n": len(ref_values),
        "session_n": i - session,
    }
    if len(ref_values) < rule.min_reference_readings:
        return ctx.unknown("too few reference readings", facts, value)
    if rule.reference == "min":
        k = int(np.argmin(ref_values))
    elif rule.reference == "max":
        k = int(np.argmax(ref_values))
    else:
        k = 0
    ref = float(np.mean(ref_values)) if rule.reference == "mean" else float(ref_values[k])
    ref_at = None if rule.reference == "mean" else _iso(float(s.t[j + k]))
    sign = 1.0 if rule.direction == "rise" else -1.0
    delta = sign * (value - ref)
    level = _levels(delta, rule.warning, rule.urgent)
    facts.update(reference=ref, reference_at=ref_at, delta=round(delta, 6))
    if level:
        facts["bound"] = rule.warning if level == WARNING and rule.warning else rule.urgent
    return ctx.result(level, level == NONE, value, delta, facts)


# -- average protocol ---------------------------------------------------------------------


def _local_day(ts: float) -> date:
    """The local date at ``ts``: the same through each UTC hour (zone changes fall on one)."""
    return _hour_day(int(ts // 3600))


@functools.lru_cache(maxsize=1 << 16)
def _hour_day(hour: int) -> date:
    return datetime.fromtimestamp(hour * 3600, LOCAL_ZONE).date()


@functools.lru_cache(maxsize=1 << 12)
def _day_start(day: date) -> float:
    """POSIX seconds of local midnight starting ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=LOCAL_ZONE).timestamp()


def _sessions(t: FloatArray, v: FloatArray, minutes: float) -> list[tuple[float, float, int]]:
    """(start, mean, readings) of each session: readings within ``minutes`` of its first."""
    out: list[tuple[float, float, int]] = []
    width = minutes * 60
    start, total, count = float(t[0]), 0.0, 0
    for ti, vi in zip(t.tolist(), v.tolist(), strict=True):
        if ti - start > width + EPS:
            out.append((start, total / count, count))
            start, total, count = ti, 0.0, 0
        total += vi
        count += 1
    out.append((start, total / count, count))
    return out


def _average(ctx: _Ctx, rule: AverageRule) -> Assessment:
    today = _local_day(ctx.ts)
    first = today - timedelta(days=rule.days - 1)
    window_start = _day_start(first)
    after = ctx.resolved if rule.new_protocol_after_resolution else None
    per_quantity: dict[Quantity, list[tuple[date, float, int]]] = {}
    for q in rule.bounds:
        s = ctx.series(q)
        j, i = s.start(window_start), s.end(ctx.ts)
        if after is not None:
            j = max(j, s.end(after))  # measured after the resolution: a new protocol
        if i <= j:
            per_quantity[q] = []
            continue
        sessions = _sessions(s.t[j:i], s.value[j:i], rule.session_minutes)
        per_quantity[q] = [(_local_day(start), mean, n) for start, mean, n in sessions]
    days_seen = sorted({d for sessions in per_quantity.values() for d, _, _ in sessions})
    facts: dict[str, Fact] = {"window_days": rule.days, "from": first.isoformat()}
    if after is not None:
        facts["after_resolution"] = _iso(after)
    discarded = days_seen[0] if rule.discard_first_day and days_seen else None
    facts["discarded_day"] = discarded.isoformat() if discarded else None
    best: tuple[int, float] | None = None
    value: float | None = None
    clear = True  # every mean below its lowest bound by the clear margin
    short = ""
    n_days = n_sessions = n_readings = 0
    for q, bound in rule.bounds.items():
        by_day: dict[date, list[float]] = {}
        readings = 0
        for d, mean, n in per_quantity[q]:
            if d != discarded:
                by_day.setdefault(d, []).append(mean)
                readings += n
        n_days = max(n_days, len(by_day))
        n_sessions = max(n_sessions, sum(len(m) for m in by_day.values()))
        n_readings = max(n_readings, readings)
        if len(by_day) < rule.min_days or readings < rule.min_readings:
            short = short or q.value
            facts[f"mean_{q.value}"] = None
            continue
        mean = sum(sum(m) / len(m) for m in by_day.values()) / len(by_day)
        facts[f"mean_{q.value}"] = mean
        lowest = bound.warning if bound.warning is not None else bound.urgent
        assert lowest is not None  # the model requires one
        key = (_levels(mean, bound.warning, bound.urgent), mean - lowest)
        clear = clear and mean < lowest - rule.clear_margin
        if best is None or key > best:
            best, value = key, mean
    facts.update(n_days=n_days, n_sessions=n_sessions, n_readings=n_readings)
    if short or best is None:
        return ctx.unknown(f"too few days or readings of {short}", facts)
    level, measure = best
    return ctx.result(level, level == NONE and clear, value, measure, facts)


# -- personal baseline --------------------------------------------------------------------


def _own_device(s: Series, j0: int, i: int, code: int | None = None) -> npt.NDArray[np.intp]:
    """The indices in ``[j0, i)`` measured by device ``code`` (by default the device of
    reading ``i - 1``), in order; codes are the history's, the same in every series.

    Each device is a baseline of its own: a new scale has its own offset (its run-in starts
    with its first reading), and a pulse measured by both a cuff and an oximeter is two
    baselines, never one that re-arms at every alternation.
    """
    devices = s.device[j0:i]
    return j0 + np.nonzero(devices == (devices[-1] if code is None else code))[0]


def _mean_sd(x: FloatArray) -> tuple[float, float]:
    """``np.mean(x)`` and ``np.std(x, ddof=1)``, the same operations without their wrappers."""
    n = len(x)
    mean = float(np.add.reduce(x)) / n
    d = x - mean
    d *= d
    return mean, math.sqrt(float(np.add.reduce(d)) / (n - 1))


#: The EWMA's weights of n monitored readings, by (lambda, n): the same few again and again.
_WEIGHTS: dict[tuple[float, int], FloatArray] = {}


def _weights(lam: float, n: int) -> FloatArray:
    found = _WEIGHTS.get((lam, n))
    if found is None:
        found = lam * (1 - lam) ** np.arange(n - 1, -1, -1, dtype=np.float64)
        found.flags.writeable = False
        if len(_WEIGHTS) < 4096:
            _WEIGHTS[lam, n] = found
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class _Split:
    """An EWMA's readings at a point: the run-in and the monitored values after it."""

    run_in: FloatArray
    monitored: FloatArray
    run_in_start: float  # POSIX s
    device_changed: bool
    last: float  # the reading at the point
    armed: bool  # a run-in long enough, and monitored readings after it


def _ewma_split(s: Series, rule: BaselineRule, ts: float, code: int | None = None) -> _Split | str:
    """The run-in and monitored readings of ``rule`` at ``ts``, or why there are none.

    ``code``: only that device's readings (a composite's further parts follow the device
    of its first); by default the device of the latest reading (:func:`_own_device`).
    """
    i = s.end(ts)
    if i == 0:
        return "no reading"
    span = (rule.run_in_days + rule.monitor_days) * _DAY
    j0 = s.start(ts - span)
    if j0 >= i:
        return "no reading in the window"
    window = s.device[j0:i]
    if code is None:
        code = int(window[-1])
    if len(s.devices) == 1 or not (window != code).any():  # one device: all of it
        first = j0
        run_in_start = float(s.t[j0])
        k = min(s.start(run_in_start + rule.run_in_days * _DAY), i)
        run_in, monitored = s.value[j0:k], s.value[k:i]
        last = float(s.value[i - 1])
    else:
        own = _own_device(s, j0, i, code)
        if not len(own):
            return "no reading of the device in the window"
        first = int(own[0])
        run_in_start = float(s.t[first])  # the device's first reading in the window
        run_in_end = run_in_start + rule.run_in_days * _DAY
        in_run_in = s.t[own] < run_in_end
        run_in = s.value[own[in_run_in]]
        monitored = s.value[own[~in_run_in]]
        last = float(s.value[own[-1]])
    armed = len(run_in) >= rule.min_run_in_readings and bool(len(monitored))
    return _Split(run_in, monitored, run_in_start, first > j0, last, armed)


def _ewma_may_breach(s: Series, rule: BaselineRule, ts: float) -> bool:
    """Whether the EWMA's deviation may reach its floor (``min_deviation``) at ``ts``.

    The EWMA less the run-in mean is a sum of the monitored values less that mean with
    positive weights summing to ``1 - (1 - lambda)^n``: never above that times the
    largest of them (oriented), and every limit is at least the floor.
    """
    split = _ewma_split(s, rule, ts)
    if isinstance(split, str) or not split.armed:
        return False  # not armed: level 0
    run_in, monitored = split.run_in, split.monitored
    mu = float(np.add.reduce(run_in)) / len(run_in)
    # max(x - mu) is max(x) - mu exactly: a rounded subtraction never changes the order
    top = float(monitored.max()) - mu if rule.direction == "high" else mu - float(monitored.min())
    reach = (1 - (1 - rule.weight) ** len(monitored)) * max(top, 0.0)
    return reach >= rule.min_deviation - _MEAN_SLACK


def _ewma_of(split: _Split, lam: float) -> tuple[float, float, float]:
    """The run-in's mean and SD, and the EWMA (lambda ``lam``) of the monitored readings
    started at that mean."""
    mu, sd = _mean_sd(split.run_in)
    n = len(split.monitored)
    return mu, sd, (1 - lam) ** n * mu + float(_weights(lam, n) @ split.monitored)


def _ewma(ctx: _Ctx, rule: BaselineRule) -> Assessment:
    split = _ewma_split(ctx.series(rule.quantity), rule, ctx.ts)
    if isinstance(split, str):
        return ctx.unknown(split)
    run_in, monitored = split.run_in, split.monitored
    facts: dict[str, Fact] = {
        "quantity": rule.quantity.value,
        "method": "ewma",
        "run_in_n": len(run_in),
        "n": len(monitored),
        "run_in_from": _iso(split.run_in_start),
        "device_changed": split.device_changed,
    }
    if not split.armed:
        return ctx.unknown("baseline not armed", facts, split.last)
    lam, n = rule.weight, len(monitored)
    mu, sd, z = _ewma_of(split, lam)
    sigma_z = sd * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * n)))
    sign = 1.0 if rule.direction == "high" else -1.0
    deviation = sign * (z - mu)
    warning = None if rule.warning is None else max(rule.warning * sigma_z, rule.min_deviation)
    urgent = None if rule.urgent is None else max(rule.urgent * sigma_z, rule.min_deviation)
    level = _levels(deviation, warning, urgent)
    facts.update(
        baseline=mu, sd=sd, ewma=z, deviation=deviation, limit=warning if warning else urgent
    )
    return ctx.result(level, level == NONE, split.last, deviation, facts)


def _composite(ctx: _Ctx, rule: BaselineRule) -> Assessment:
    """The mean of each part's EWMA deviation in its run-in SDs (Hurst et al. 2010).

    Every part is read from the device of ``quantity``'s latest reading (an oximeter's
    SpO2 and pulse together; a cuff's pulse is another device's, not this score's).
    """
    facts: dict[str, Fact] = {"quantity": rule.quantity.value, "method": "composite"}
    first = ctx.series(rule.quantity)
    i = first.end(ctx.ts)
    code = int(first.device[i - 1]) if i else None
    deviations: list[float] = []
    value: float | None = None
    unarmed: list[str] = []
    lam = rule.weight
    for k, part in enumerate(rule.parts):
        q = part.quantity.value
        s = first if k == 0 else ctx.series(part.quantity)
        split = _ewma_split(s, rule, ctx.ts, code)
        if isinstance(split, str):
            facts[f"{q}_run_in_n"] = 0
            unarmed.append(q)
            continue
        if value is None:
            value = split.last
            facts["device_changed"] = split.device_changed
        facts[f"{q}_value"] = split.last
        facts[f"{q}_run_in_n"] = len(split.run_in)
        if not split.armed:
            unarmed.append(q)
            continue
        mu, sd, z = _ewma_of(split, lam)
        sd = max(sd, part.min_sd)
        sign = 1.0 if part.direction == "high" else -1.0
        deviation = sign * (z - mu) / sd
        facts.update({f"{q}_baseline": mu, f"{q}_sd": sd, f"{q}_ewma": z, f"{q}_z": deviation})
        deviations.append(deviation)
    facts.setdefault("device_changed", False)
    facts["run_in_n"] = min(int(facts[f"{p.quantity.value}_run_in_n"] or 0) for p in rule.parts)
    if unarmed:
        facts["unarmed"] = ",".join(unarmed)
        return ctx.unknown("baseline not armed", facts, value)
    score = sum(deviations) / len(deviations)
    level = _levels(score, rule.warning, rule.urgent)
    facts.update(score=score, limit=rule.warning if rule.warning else rule.urgent)
    return ctx.result(level, level == NONE, value, score, facts)


def _tau(span_days: float) -> float:
    """The time constant (s) of an EWMA whose daily weight is 2 / (span + 1)."""
    if span_days <= 1:
        return 1e-9
    return _DAY / math.log((span_days + 1) / (span_days - 1))


def _macd(ctx: _Ctx, rule: BaselineRule) -> Assessment:
    s = ctx.series(rule.quantity)
    i = s.end(ctx.ts)
    if i == 0:
        return ctx.unknown("no reading")
    j0 = s.start(ctx.ts - max(rule.run_in_days, MACD_MEMORY * rule.long_days) * _DAY)
    if j0 >= i:
        return ctx.unknown("no reading in the window")
    own = _own_device(s, j0, i)
    t, v = s.t[own].tolist(), s.value[own].tolist()
    facts: dict[str, Fact] = {
        "quantity": rule.quantity.value,
        "method": "macd",
        "n": len(v),
        "short_days": rule.short_days,
        "long_days": rule.long_days,
        "device_changed": bool(own[0] > j0),
    }
    if len(v) < rule.min_run_in_readings or t[-1] - t[0] < rule.run_in_days * _DAY - EPS:
        return ctx.unknown("baseline not armed", facts, v[-1])
    tau_short, tau_long = _tau(rule.short_days), _tau(rule.long_days)
    short = long = v[0]
    for k in range(1, len(v)):
        dt = t[k] - t[k - 1]
        short += (1 - math.exp(-dt / tau_short)) * (v[k] - short)
        long += (1 - math.exp(-dt / tau_long)) * (v[k] - long)
    sign = 1.0 if rule.direction == "high" else -1.0
    macd = sign * (short - long)
    warning = None if rule.warning is None else max(rule.warning, rule.min_deviation)
    urgent = None if rule.urgent is None else max(rule.urgent, rule.min_deviation)
    level = _levels(macd, warning, urgent)
    facts.update(short=short, long=long, macd=macd, limit=warning if warning else urgent)
    return ctx.result(level, level == NONE, v[-1], macd, facts)


# -- score (NEWS2 home subset) ------------------------------------------------------------


def _banded(value: int, bands: tuple[tuple[int, int], ...], above: int) -> int:
    """The score of ``value``: the first (upper bound, score) with value <= bound."""
    for upper, score in bands:
        if value <= upper:
            return score
    return above


def news2_spo2(spo2: float, *, scale: int, on_oxygen: bool) -> int:
    """NEWS2 points for SpO2 (RCP 2017 chart 1), scale 1 or 2.

    >>> news2_spo2(91, scale=1, on_oxygen=False), news2_spo2(91, scale=2, on_oxygen=False)
    (3, 0)
    >>> news2_spo2(95, scale=2, on_oxygen=True), news2_spo2(95, scale=2, on_oxygen=False)
    (2, 0)
    """
    x = math.floor(spo2 + 0.5)
    if scale == 1:
        return _banded(x, ((91, 3), (93, 2), (95, 1)), 0)
    if x <= 92 or not on_oxygen:  # 93 or more on air scores 0 on scale 2
        return _banded(x, ((83, 3), (85, 2), (87, 1)), 0)
    return _banded(x, ((94, 1), (96, 2)), 3)


def news2_pulse(pulse: float) -> int:
    """NEWS2 points for pulse (RCP 2017): <=40 3, 41-50 1, 51-90 0, 91-110 1, 111-130 2, >=131 3.

    >>> [news2_pulse(p) for p in (40, 41, 51, 90, 91, 111, 130, 131)]
    [3, 1, 0, 0, 1, 2, 2, 3]
    """
    return _banded(math.floor(pulse + 0.5), ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2)), 3)


def news2_systolic(systolic: float) -> int:
    """NEWS2 points for systolic pressure (RCP 2017): <=90 3, 91-100 2, 101-110 1, >=220 3.

    >>> [news2_systolic(p) for p in (90, 91, 100, 101, 110, 111, 219, 220)]
    [3, 2, 2, 1, 1, 0, 0, 3]
    """
    return _banded(math.floor(systolic + 0.5), ((90, 3), (100, 2), (110, 1), (219, 0)), 3)


#: NEWS2's "air or oxygen?" parameter: supplemental oxygen scores 2.
NEWS2_OXYGEN = 2
_NEWS2_PARAMETERS = (
    (Quantity.SPO2, "spo2"),
    (Quantity.HEART_RATE, "pulse"),
    (Quantity.SYSTOLIC, "systolic"),
)


def _news2(
    rule: ScoreRule, history: History, ts: float
) -> tuple[list[tuple[str, float | None, int | None]], int, bool]:
    """Each parameter's (name, value, points) at ``ts`` (None: no reading in the session),
    the total (with oxygen) and whether one parameter scored 3."""
    since = ts - rule.session_minutes * 60
    questionable = rule.questionable == "include"
    parts: list[tuple[str, float | None, int | None]] = []
    total, red = 0, False
    for q, name in _NEWS2_PARAMETERS:
        s = history.series(q, questionable=questionable)
        i = s.end(ts)
        if i == 0 or s.t[i - 1] < since - EPS:
            parts.append((name, None, None))
            continue
        value = float(s.value[i - 1])
        if q is Quantity.SPO2:
            points = news2_spo2(value, scale=rule.spo2_scale, on_oxygen=rule.on_oxygen)
        elif q is Quantity.HEART_RATE:
            points = news2_pulse(value)
        else:
            points = news2_systolic(value)
        parts.append((name, value, points))
        total += points
        red = red or points == 3
    if rule.on_oxygen:
        total += NEWS2_OXYGEN
    return parts, total, red


def _score_level(rule: ScoreRule, total: int, red: bool) -> int:
    level = _levels(float(total), rule.warning, rule.urgent)
    if red and rule.single_red is not None:
        level = max(level, WARNING if rule.single_red == "warning" else URGENT)
    return level


def _score_may_breach(rule: ScoreRule, history: History, ts: float) -> bool:
    parts, total, red = _news2(rule, history, ts)
    present = any(value is not None for _, value, _ in parts)
    return present and _score_level(rule, total, red) > NONE


def _score(ctx: _Ctx, rule: ScoreRule) -> Assessment:
    facts: dict[str, Fact] = {"scale": rule.spo2_scale, "on_oxygen": int(rule.on_oxygen)}
    parts, total, red = _news2(rule, ctx.history, ctx.ts)
    for name, value, points in parts:
        facts[name], facts[f"{name}_score"] = value, points
    if all(value is None for _, value, _ in parts):
        return ctx.unknown("no SpO2, pulse or systolic reading in the session", facts)
    facts["oxygen_score"] = NEWS2_OXYGEN if rule.on_oxygen else 0
    facts["score"] = total
    level = _score_level(rule, total, red)
    if red and rule.single_red is not None:
        facts["single_red"] = 1
    return ctx.result(level, level == NONE, float(total), float(total), facts)
