"""The quiet envelope of an idle patient: readings that provably change nothing. Pure.

After the engine evaluated a patient whose rules are all idle (no episode, nothing
remembered), :func:`quiet` derives from the same history an envelope: per quantity, the
values (and for personal baselines the device) a new reading may carry, and until when,
such that any sequence of new readings inside it, each measured after every stored one,
leaves every rule of the plan at level 0, so no episode can change. The worker then skips
evaluating such readings (:func:`homemonitor.alerts.episodes.evaluate_batch`); any other
reading is evaluated as always and the envelope is derived again.

Each rule kind's envelope comes with its argument, written beside it: what the kind's
assessment (:mod:`homemonitor.rules.kinds`) can reach from the stored readings plus new
readings bounded by the envelope, at any later point until ``until``. The arguments rely
on new readings being later than every stored one (an out-of-order reading is evaluated)
and on the stored readings being exactly the database's (the patient's count of stored
readings, :mod:`homemonitor.rules.histories`).
A rule without such an argument (a kind without one, MACD; or a rule whose stored
readings already leave no room, such as a change rule whose current session's mean is
past its reach) closes the envelope to every quantity it reads: any reading carrying one is
evaluated. A reading carrying none of them cannot move it, for a rule is assessed only
at readings of its own quantities and reads nothing else (``RuleSpec.quantities``), so
the envelope stays open to those.

``tests/unit/test_rules_quiet.py`` replays simulated patients and checks every reading an
envelope accepted against the full evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import NamedTuple

import numpy as np

from homemonitor.contract.readings import Quantity
from homemonitor.rules.history import FloatArray, History, Packed, Series
from homemonitor.rules.kinds import (
    EPS,
    NEWS2_OXYGEN,
    _day_start,
    _ewma_of,
    _ewma_split,
    _local_day,
    _sessions,
    news2_pulse,
    news2_spo2,
    news2_systolic,
)
from homemonitor.rules.plan import (
    AverageRule,
    BaselineRule,
    ChangeRule,
    Plan,
    RuleSpec,
    ScoreRule,
    ThresholdRule,
)

#: How far inside a bound an envelope stays: more than any rounding of the engine's sums.
MARGIN = 1e-6
_DAY = 86400.0


class Limit(NamedTuple):
    """New readings carrying ``quantity`` must lie in ``[low, high]``.

    ``device`` None: every reading carrying it. Otherwise the readings of that device;
    with ``only``, a reading of any other device carrying it is outside the envelope (a
    personal baseline follows the device of its latest reading). Made by :func:`limit`:
    the quantity is its plain string, so that a limit holds only plain values and the
    garbage collector leaves the thousands a worker keeps alone (as plain tuples).
    """

    quantity: str
    low: float = -math.inf
    high: float = math.inf
    device: str | None = None
    only: bool = False


def limit(
    quantity: Quantity,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    device: str | None = None,
    only: bool = False,
) -> Limit:
    """A :class:`Limit` of ``quantity``."""
    return Limit(quantity.value, low, high, device, only)


@dataclasses.dataclass(frozen=True, slots=True)
class Quiet:
    """An idle patient's envelope: see the module.

    ``plan``: the plan it was derived for (another plan object, another envelope);
    ``newest``: the measured time (POSIX s) of the newest stored reading, which a new
    reading must follow; ``until``: the latest measured time it holds for.
    """

    plan: Plan
    newest: float
    until: float
    #: :class:`Limit`\ s as plain tuples: a tuple subclass stays tracked by the garbage
    #: collector, a tuple of plain values does not (:attr:`bounds` reads them as limits).
    limits: tuple[tuple[str, float, float, str | None, bool], ...]

    @property
    def bounds(self) -> tuple[Limit, ...]:
        """The limits, by field name."""
        return tuple(Limit(*x) for x in self.limits)

    def accepts(self, readings: Sequence[Packed]) -> Quiet | None:
        """The envelope after ``readings`` (new ones, in any order, as
        :func:`~homemonitor.rules.history.packed` gives them), or None when one is outside
        it (questionable, clock-flagged, not after the newest, too late, or a value or
        device outside a limit)."""
        newest, until = self.newest, self.until
        for us, device_id, _, values, quality, flags in sorted(readings):
            ts = us / 1e6  # == measured_at.timestamp(): micros
            if quality or flags or not newest < ts <= until:
                return None
            carried = dict(values)
            for quantity, low, high, device, only in self.limits:
                x = carried.get(quantity)
                if x is None:
                    continue
                if device is not None and device_id != device:
                    if only:
                        return None
                    continue
                if not low <= x <= high:
                    return None
            newest = ts
        return Quiet(self.plan, newest, until, self.limits)


#: What a rule kind's envelope is: its limits and until when they hold (None: no envelope).
_Envelope = tuple[list[Limit], float] | None


def quiet(plan: Plan, history: History) -> Quiet | None:
    """The envelope of a patient whose every rule of ``plan`` is idle, over ``history``
    (every stored reading the rules read, as the engine got it), or None when there is no
    stored reading or no time left."""
    newest = history.newest_time()
    if newest == -math.inf:
        return None
    limits: list[Limit] = []
    until = math.inf
    for rule in plan.rules:
        found = _envelope(rule, plan, history, newest)
        if found is None:  # no argument: closed to what it reads (see the module)
            limits += [limit(q, low=math.inf, high=-math.inf) for q in rule.quantities]
            continue
        limits += found[0]
        until = min(until, found[1])
    if until <= newest:
        return None
    return Quiet(plan, newest, until, _merged(limits))


def _merged(limits: Sequence[Limit]) -> tuple[tuple[str, float, float, str | None, bool], ...]:
    """``limits`` as plain tuples, those of one quantity, device and ``only`` as one (both
    hold: the intersection), so that a reading is checked against each once."""
    found: dict[tuple[str, str | None, bool], tuple[float, float]] = {}
    for x in limits:
        key = (x.quantity, x.device, x.only)
        low, high = found.get(key, (-math.inf, math.inf))
        found[key] = (max(low, x.low), min(high, x.high))
    return tuple((q, low, high, device, only) for (q, device, only), (low, high) in found.items())


def _lowest(*bounds: float | None) -> float:
    """The bound a rule breaches first (larger is worse): the least of those it has."""
    found = [b for b in bounds if b is not None]
    assert found  # the models require one
    return min(found)


def _envelope(rule: RuleSpec, plan: Plan, history: History, newest: float) -> _Envelope:
    include = rule.questionable == "include"
    if isinstance(rule, ThresholdRule):
        return _threshold(rule, plan)
    if isinstance(rule, ChangeRule):
        return _change(rule, history.series(rule.quantity, questionable=include), newest)
    if isinstance(rule, AverageRule):
        return _average(rule, history, newest)
    if isinstance(rule, BaselineRule):
        if rule.method == "ewma":
            return _ewma(rule, history.series(rule.quantity, questionable=include), newest)
        if rule.method == "composite":
            return _composite(rule, history, newest)
        return None  # MACD: no argument
    return _score(rule, history, newest)


# -- threshold ----------------------------------------------------------------------------
# Persistence or not, a threshold reaches a level only when the reading it judges (the
# point's) is at or beyond its lowest bound: a new reading inside it leaves it at 0.


def _threshold(rule: ThresholdRule, plan: Plan) -> _Envelope:
    base = plan.personal[rule.relative_to] if rule.relative_to is not None else 0.0
    offsets = [x for x in (rule.warning, rule.urgent) if x is not None]
    if rule.direction == "high":
        return [limit(rule.quantity, high=base + min(offsets) - EPS - MARGIN)], math.inf
    return [limit(rule.quantity, low=base + max(offsets) + EPS + MARGIN)], math.inf


# -- change -------------------------------------------------------------------------------
# At a later point t the value is the mean of its session (readings within
# session_minutes before t: stored ones measured at or after newest - session, or new
# ones) and the reference is taken from the readings of [t - window, session start):
# stored ones measured at or after newest - window, or new ones. For a rise, take a floor
# L at or below R, the lowest stored reading from newest - window on (any L when there is
# none). The reference (lowest, mean, first: never below the lowest) is at least L when
# every new reading is at least L. A later session keeps of the stored session only its
# newest readings, so the value is at most the largest of M, the highest mean of the
# stored session's newest k readings (any k), and the new readings. New readings within
# [L, L + delta) and M below L + delta keep value - reference below delta. The envelope
# takes the L that centres that interval on the window's mean (without a stored reading
# in the window, on the latest reading), where the next reading most likely lies, as far
# as R and M allow. A fall is the mirror image. A patient who never had the quantity
# measured gets no envelope.


def _change(rule: ChangeRule, s: Series, newest: float) -> _Envelope:
    if not len(s):
        return None
    delta = _lowest(rule.warning, rule.urgent)
    window = s.value[s.start(newest - rule.window_hours * 3600) :]
    session = s.value[s.start(newest - rule.session_minutes * 60) :]
    reach = delta - EPS - MARGIN
    centre = float(window.mean()) if len(window) else float(s.value[-1])
    if rule.direction == "rise":
        highest = float(window.min()) if len(window) else math.inf
        lowest = float(_newest_means(session).max()) - reach if len(session) else -math.inf
        if lowest > highest:
            return None
        low = min(max(centre - reach / 2, lowest), highest)
        return [limit(rule.quantity, low=low, high=low + reach)], math.inf
    lowest = float(window.max()) if len(window) else -math.inf
    highest = float(_newest_means(session).min()) + reach if len(session) else math.inf
    if lowest > highest:
        return None
    high = min(max(centre + reach / 2, lowest), highest)
    return [limit(rule.quantity, low=high - reach, high=high)], math.inf


def _newest_means(values: FloatArray) -> FloatArray:
    """The mean of the newest k of ``values`` (in measured order), for each k from 1."""
    return np.cumsum(values[::-1]) / np.arange(1, len(values) + 1)


# -- average protocol ---------------------------------------------------------------------
# Until the next local midnight (``until``), a later point's mean is the mean of at least
# min_days day means (fewer: level 0) of the window's days at ``newest``. Days before the
# day of the last stored session keep their stored day means (new readings are later).
# New readings fall on newest's local day; they form sessions of their own or join the
# last stored session, and a session's mean is then at most the largest of its stored
# part's mean and the new readings. So the last stored session's day, and newest's day,
# have day means of at most the larger of their largest stored session mean and h, the
# largest new reading; the other days' means are fixed. A mean of k >= min_days of these
# days is at most the mean of the k = min_days largest candidates (the fixed means, the
# largest session means, and h once for each of those at most two days). The envelope is
# the largest h that keeps that below the lowest bound.


def _average(rule: AverageRule, history: History, newest: float) -> _Envelope:
    today = _local_day(newest)
    start = _day_start(today - timedelta(days=rule.days - 1))
    until = _day_start(today + timedelta(days=1)) - MARGIN
    limits: list[Limit] = []
    k = rule.min_days
    for q, bound in rule.bounds.items():
        ceiling = k * (_lowest(bound.warning, bound.urgent) - EPS - MARGIN)
        s = history.series(q, questionable=rule.questionable == "include")
        j = s.start(start)
        fixed: list[float] = []
        copies = 1  # newest's day
        if j < len(s):
            sessions = _sessions(s.t[j:], s.value[j:], rule.session_minutes)
            by_day: dict[date, list[float]] = {}
            for first, mean, _ in sessions:
                by_day.setdefault(_local_day(first), []).append(mean)
            last = _local_day(sessions[-1][0])
            if last != today:
                copies = 2  # and the last session's day, which a new reading may join
            for day, means in by_day.items():
                fixed.append(max(means) if day == last else sum(means) / len(means))
        top = sorted(fixed, reverse=True)[:k]
        if len(top) == k and sum(top) >= ceiling:
            return None
        sums = [0.0, *itertools.accumulate(top)]  # sums[i]: the i largest candidates
        if len(top) + copies < k:
            continue  # too few days for a mean before midnight: no limit
        high = min((ceiling - sums[k - m]) / m for m in range(max(1, k - len(top)), copies + 1))
        limits.append(limit(q, high=high))
    return limits, until


# -- personal baseline: EWMA and composite ------------------------------------------------
# The run-in (mean mu, SD) stays as it is while the window's first reading stays in the
# window: until that reading's time plus the window's span (then the window, and so the
# run-in, moves), and while no new reading can join the run-in (until its end). Within
# that time, new readings of the baseline's device come after the run-in: the EWMA less mu
# becomes lambda (x - mu) + (1 - lambda) (EWMA - mu), below L when both terms are. The
# EWMA rule's limit grows with n (its sigma does): with the current deviation below the
# limit at n + 1 and every new reading of the device within mu +- L, the deviation stays
# below every later limit. Each device has a baseline of its own, with its own limit; a
# device without a reading in the window starts a run-in. A composite's parts are read
# from the device of its first quantity's latest reading (another device's reading of the
# first quantity is outside the envelope); its score is the mean of the parts' deviations
# in SDs, below the cut-off when each part stays below its share of it. Not armed: level 0 until
# the run-in can end (or, with too few run-in readings, the window moves).


@dataclasses.dataclass(frozen=True, slots=True)
class _Baseline:
    """One EWMA (a rule, or a composite's part) at ``newest``: see above."""

    device: str  # whose readings it follows
    until: float
    armed: bool  # with enough run-in: the next reading of the device is monitored
    mu: float = 0.0
    sd: float = 0.0
    deviation: float = 0.0  # oriented: larger is worse
    n: int = 0  # monitored readings


def _baseline(  # noqa: PLR0917 -- one EWMA: its rule, series, time, device and direction
    rule: BaselineRule, s: Series, newest: float, code: int, device: str, direction: str
) -> _Baseline:
    """The EWMA of ``device`` (``code``, its index into the history's devices) at ``newest``
    (``s`` may have no reading at all, and then no devices)."""
    split = _ewma_split(s, rule, newest, code)
    if isinstance(split, str):  # no reading of the device in the window: a run-in to come
        return _Baseline(device, newest + rule.run_in_days * _DAY, armed=False)
    span = (rule.run_in_days + rule.monitor_days) * _DAY
    until = float(s.t[s.start(newest - span)]) + span
    run_in_end = split.run_in_start + rule.run_in_days * _DAY
    if newest < run_in_end:  # a reading at its end is monitored: until just before
        return _Baseline(device, min(until, run_in_end - MARGIN), armed=False)
    if len(split.run_in) < rule.min_run_in_readings:
        return _Baseline(device, until, armed=False)
    mu, sd, z = _ewma_of(split, rule.weight)
    sign = 1.0 if direction == "high" else -1.0
    return _Baseline(device, until, True, mu, sd, sign * (z - mu), len(split.monitored))


def _bounded(q: Quantity, b: _Baseline, direction: str, reach: float, *, only: bool) -> Limit:
    """New readings of ``b``'s device within ``reach`` (oriented) of its mean."""
    if direction == "high":
        return limit(q, high=b.mu + reach, device=b.device, only=only)
    return limit(q, low=b.mu - reach, device=b.device, only=only)


def _ewma(rule: BaselineRule, s: Series, newest: float) -> _Envelope:
    # Each device is a baseline of its own (kinds._own_device): a reading of a device
    # judges that device's baseline. A device without a reading in the window starts a
    # run-in with its first, armed no sooner than run_in_days later.
    span = (rule.run_in_days + rule.monitor_days) * _DAY
    limits: list[Limit] = []
    until = newest + rule.run_in_days * _DAY
    lam = rule.weight
    cut = _lowest(rule.warning, rule.urgent)
    for code in np.unique(s.device[s.start(newest - span) : s.end(newest)]).tolist():
        b = _baseline(rule, s, newest, code, s.devices[code], rule.direction)
        until = min(until, b.until)
        if not b.armed:
            continue
        sigma = b.sd * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * (b.n + 1))))
        reach = max(cut * sigma, rule.min_deviation) - EPS - MARGIN
        if b.deviation >= reach:
            return None
        limits.append(_bounded(rule.quantity, b, rule.direction, reach, only=False))
    return limits, until


def _composite(rule: BaselineRule, history: History, newest: float) -> _Envelope:
    include = rule.questionable == "include"
    first = history.series(rule.quantity, questionable=include)
    i = first.end(newest)
    if not i:
        return None  # which device the parts follow comes with the first reading
    code = int(first.device[i - 1])
    device = first.devices[code]
    parts = [
        (
            p,
            _baseline(
                rule,
                first if k == 0 else history.series(p.quantity, questionable=include),
                newest,
                code,
                device,
                p.direction,
            ),
        )
        for k, p in enumerate(rule.parts)
    ]
    until = min(b.until for _, b in parts)
    follows = limit(rule.quantity, device=device, only=True)
    if not all(b.armed for _, b in parts):
        return [follows], until
    cut = _lowest(rule.warning, rule.urgent)
    scores = [b.deviation / max(b.sd, p.min_sd) for p, b in parts]
    slack = (len(parts) * (cut - EPS - MARGIN) - sum(scores)) / len(parts)
    if slack <= 0:
        return None
    return [
        _bounded(p.quantity, b, p.direction, (z + slack) * max(b.sd, p.min_sd), only=k == 0)
        for k, ((p, b), z) in enumerate(zip(parts, scores, strict=True))
    ], until


# -- score (NEWS2 home subset) ------------------------------------------------------------
# At a later point each parameter scores its latest reading in the session: a stored one
# only if measured at or after newest - session, else a new one. With every new reading
# of a parameter scoring at most s (an interval of values: the bands are monotone or
# U-shaped), the total is at most the sum of max(stored, s) over the parameters, plus
# oxygen's. The s are the patient's usual points (their latest reading's), widened while
# the total stays below the lowest level (and each at most 2 with a single-red trigger).

_PARAMETERS: tuple[tuple[Quantity, str], ...] = (
    (Quantity.SPO2, "spo2"),
    (Quantity.HEART_RATE, "pulse"),
    (Quantity.SYSTOLIC, "systolic"),
)


def _points(rule: ScoreRule, q: Quantity) -> Callable[[float], int]:
    if q is Quantity.SPO2:
        return functools.partial(news2_spo2, scale=rule.spo2_scale, on_oxygen=rule.on_oxygen)
    return news2_pulse if q is Quantity.HEART_RATE else news2_systolic


@functools.cache
def _band(scale: int, on_oxygen: bool, q: Quantity, most: int) -> tuple[float, float] | None:
    """The values (an interval) whose points are at most ``most``; None: not an interval."""
    rule = ScoreRule(id="band", spo2_scale=scale, on_oxygen=on_oxygen, warning=5)  # type: ignore[arg-type]
    points = _points(rule, q)
    inside = [x for x in range(401) if points(x) <= most]
    if not inside or inside[-1] - inside[0] + 1 != len(inside):
        return None
    low = -math.inf if inside[0] == 0 else inside[0] - 0.5
    high = math.inf if inside[-1] == 400 else inside[-1] + 0.5 - MARGIN  # rounded half up
    return low, high


def _score(rule: ScoreRule, history: History, newest: float) -> _Envelope:
    lowest = int(_lowest(rule.warning, rule.urgent))
    most = 2 if rule.single_red is not None else 3
    budget = lowest - 1 - (NEWS2_OXYGEN if rule.on_oxygen else 0)
    stored: list[int] = []
    usual: list[int] = []
    for q, _ in _PARAMETERS:
        s = history.series(q, questionable=rule.questionable == "include")
        i = s.end(newest)
        latest = _points(rule, q)(float(s.value[i - 1])) if i else 0
        usual.append(min(latest, most))
        in_session = i and float(s.t[i - 1]) >= newest - rule.session_minutes * 60 - EPS
        stored.append(latest if in_session else 0)
    if max(stored) > most or sum(stored) > budget:
        return None
    allowed = [max(a, b) for a, b in zip(stored, usual, strict=True)]
    if sum(allowed) > budget:
        allowed = list(stored)
    left = budget - sum(allowed)
    while left > 0 and min(allowed) < most:
        for k in range(len(allowed)):
            if left and allowed[k] < most:
                allowed[k] += 1
                left -= 1
    limits: list[Limit] = []
    for (q, _), points in zip(_PARAMETERS, allowed, strict=True):
        band = _band(rule.spo2_scale, rule.on_oxygen, q, points)
        if band is None:
            return None
        limits.append(limit(q, low=band[0], high=band[1]))
    return limits, math.inf
