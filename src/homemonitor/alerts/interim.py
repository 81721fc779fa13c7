"""A stand-in for :func:`homemonitor.rules.evaluate.evaluate` while its body is not written.

TEMPORARY: the worker calls the engine's ``evaluate``; while that raises
``NotImplementedError`` (its signatures landed before its logic) it calls this, which
knows only plain 1-of-1 threshold rules (open, severity up and down, update, clear with
latching, a simple re-alert), with the engine's own types. It exists so that the SQL
around the engine is tested now; it goes when the engine's ``evaluate`` works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from homemonitor.rules.episodes import Change, ChangeKind, EpisodeState
from homemonitor.rules.evaluate import Outcome
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.plan import Plan, ThresholdRule


def evaluate(
    plan: Plan,
    history: History,
    points: Sequence[StoredReading],
    states: Mapping[str, EpisodeState],
    now: datetime,
) -> Outcome:
    """Plain thresholds only; see the module."""
    outcome = Outcome()
    current_since = now - timedelta(hours=plan.current_hours)
    state = {r.id: states.get(r.id, EpisodeState()) for r in plan.rules}
    for point in sorted({p.key: p for p in points}.values(), key=lambda p: p.key[2]):
        for rule in plan.rules:
            if not isinstance(rule, ThresholdRule) or rule.quantity not in point.values:
                continue
            if rule.questionable == "exclude" and point.quality:
                continue
            s = state[rule.id]
            if s.evaluated_at is not None and point.measured_at < s.evaluated_at:
                continue
            value = point.values[rule.quantity]
            sign = 1.0 if rule.direction == "high" else -1.0
            level = 0
            for n, offset in ((1, rule.warning), (2, rule.urgent)):
                if offset is None:
                    continue
                bound = offset
                if rule.relative_to is not None:
                    bound = plan.personal[rule.relative_to] + sign * offset
                if sign * value >= sign * bound:
                    level = n
            current = not point.flags and point.measured_at >= current_since
            outcome.assessed += 1
            new, kind = _step(rule, s, level, sign * value, point.measured_at, current=current)
            if new != s:
                state[rule.id] = outcome.states[rule.id] = new
            if kind is not None:
                text = f"{rule.quantity.value} {value:g}; plan v{plan.version}: rule {rule.id}"
                outcome.changes.append(
                    Change(
                        kind,
                        rule.id,
                        rule.kind,
                        point.measured_at,
                        new.level,
                        s.level,
                        value,
                        sign * value,
                        text,
                        {"value": value},
                        new,
                    )
                )
    return outcome


def _step(
    rule: ThresholdRule, s: EpisodeState, level: int, measure: float, at: datetime, *, current: bool
) -> tuple[EpisodeState, ChangeKind | None]:
    text = f"{rule.quantity.value} {measure:g}"
    if s.status == "none":
        if level == 0:
            if s.resolved_at is not None and not s.rearmed:
                return dataclasses.replace(s, rearmed=True), None
            return s, None
        if not current:
            return s, None
        kind: ChangeKind = "opened"
        if s.resolved_at is not None:
            if level <= s.resolved_level and not s.rearmed:
                return s, None
            kind = "reopened"
        opened = dataclasses.replace(
            s,
            status="open",
            level=level,
            peak=level,
            opened_at=at,
            evaluated_at=at,
            worst=measure,
            count=1,
            sentence=text,
            facts={"value": measure},
            rearmed=False,
        )
        return opened, kind
    if level == 0:
        if s.status != "open":
            return s, None
        latching = rule.latching == "always" or (rule.latching == "auto" and s.peak >= 2)
        if latching:
            return dataclasses.replace(
                s, status="cleared", cleared_at=at, evaluated_at=at
            ), "cleared"
        return (
            EpisodeState(
                resolved_level=s.resolved_level,
                resolved_worst=s.resolved_worst,
                resolved_at=s.resolved_at,
                rearmed=s.rearmed,
            ),
            "auto_resolved",
        )
    new_level = level if current else min(level, s.level)
    worst = measure if s.worst is None else max(s.worst, measure)
    updated = dataclasses.replace(
        s,
        status="open",
        level=new_level,
        peak=max(s.peak, new_level),
        evaluated_at=at,
        cleared_at=None,
        worst=worst,
        count=s.count + 1,
    )
    return updated, "severity_changed" if new_level != s.level else "updated"
