"""Between ``alerts`` rows and the engine's episode states and changes. Pure, no I/O.

An engine :class:`~homemonitor.rules.episodes.EpisodeState` is one (patient, rule); in the
table it is two rows at most: the *active* episode (pending, open, acknowledged, cleared)
and the *last one a clinician resolved*, which holds what the re-alert policy remembers
(``resolved_*``, ``rearmed``) in its ``state`` column. ``acknowledged`` is the table's
word for an open episode a clinician has seen: the engine does not distinguish it.

:func:`drafts` turns an :class:`~homemonitor.rules.evaluate.Outcome` into the rows to
write: each change moves the episode it belongs to (or starts a new one: several
episodes of one rule can begin and end within one batch), and becomes an event.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from homemonitor.registry.cache import PatientPlan
from homemonitor.rules.episodes import IDLE, Change, EpisodeState, Status, english, latches
from homemonitor.rules.evaluate import Outcome
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.kinds import LEVEL_NAMES
from homemonitor.rules.plan import AverageRule, RuleSpec, ThresholdRule

_LEVELS = {"warning": 1, "urgent": 2}
_ENGINE_STATUS: dict[str, Status] = {
    "pending": "pending",
    "open": "open",
    "acknowledged": "open",
    "cleared": "cleared",
}

#: What :func:`homemonitor.alerts.episodes.load_states` reads of a row.
STATE_COLUMNS = (
    "id, patient_id, rule, status, severity, peak_severity, opening_measured_at, "
    "evaluated_at, cleared_at, due_at, resolve_due_at, threshold, worst_value, last_measured_at, "
    "breach_count, acknowledged_at, resolved_at, opening_explanation::text AS opening, "
    "latest_explanation::text AS latest, state::text AS state"
)

#: Columns a batch may change on an existing episode, with their array types.
MUTABLE_TYPES: tuple[tuple[str, str], ...] = (
    ("status", "text"),
    ("severity", "text"),
    ("peak_severity", "text"),
    ("threshold", "float8"),
    ("worst_value", "float8"),
    ("last_measured_at", "timestamptz"),
    ("breach_count", "int"),
    ("due_at", "timestamptz"),
    ("cleared_at", "timestamptz"),
    ("resolve_due_at", "timestamptz"),
    ("evaluated_at", "timestamptz"),
    ("latest_explanation", "jsonb"),
    ("state", "jsonb"),
)
MUTABLE = tuple(c for c, _ in MUTABLE_TYPES)
#: Every column a new episode is inserted with, with their array types.
COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    ("patient_id", "text"),
    ("care_team_id", "text"),
    ("rule", "text"),
    ("kind", "text"),
    ("quantity", "text"),
    ("direction", "text"),
    ("plan_version", "int"),
    ("opening_device_id", "text"),
    ("opening_metric", "text"),
    ("opening_measured_at", "timestamptz"),
    ("opening_value", "float8"),
    ("opening_explanation", "jsonb"),
    *MUTABLE_TYPES,
)
COLUMNS = tuple(c for c, _ in COLUMN_TYPES)
_JSON = {c for c, t in COLUMN_TYPES if t == "jsonb"}


def arrays(types: Sequence[tuple[str, str]], *, first: int) -> str:
    """``$first::type[], ...``: one array parameter per column, for ``unnest``."""
    return ", ".join(f"${i + first}::{t}[]" for i, (_, t) in enumerate(types))


def _loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclasses.dataclass(slots=True)
class Stored:
    """One (patient, rule) as stored: its active row, its last resolved row, the state."""

    active: Mapping[str, Any] | None = None
    resolved: Mapping[str, Any] | None = None
    state: EpisodeState = IDLE


def with_row(stored: Stored, row: Mapping[str, Any], *, active: bool) -> Stored:
    """``stored`` with one more of its rows (from :data:`STATE_COLUMNS`)."""
    if active:
        stored = dataclasses.replace(stored, active=row)
    else:
        stored = dataclasses.replace(stored, resolved=row)
    return dataclasses.replace(stored, state=state_of(stored.active, stored.resolved))


def state_of(active: Mapping[str, Any] | None, resolved: Mapping[str, Any] | None) -> EpisodeState:
    """The engine's state of one (patient, rule) from its rows (of :data:`STATE_COLUMNS`)."""
    fields: dict[str, Any] = {}
    if resolved is not None:
        extra = _loads(resolved["state"])
        fields["resolved_level"] = int(
            extra.get("resolved_level", _LEVELS[resolved["peak_severity"]])
        )
        fields["resolved_worst"] = extra.get("resolved_worst", extra.get("worst"))
        fields["resolved_at"] = (
            _time(extra["resolved_at"]) if "resolved_at" in extra else resolved["resolved_at"]
        )
        fields["rearmed"] = bool(extra.get("rearmed", False))
        if extra.get("cleared_at"):  # a clear spell after the resolution, re-arming
            fields["cleared_at"] = _time(extra["cleared_at"])
        fields["evaluated_at"] = (
            _time(extra["evaluated_at"]) if "evaluated_at" in extra else resolved["evaluated_at"]
        )
    if active is not None:
        extra = _loads(active["state"])
        opening = _loads(active["opening"])
        fields |= {
            "status": _ENGINE_STATUS[active["status"]],
            "level": _LEVELS[active["severity"]],
            "peak": _LEVELS[active["peak_severity"]],
            "opened_at": active["opening_measured_at"],
            "evaluated_at": active["evaluated_at"],
            "cleared_at": active["cleared_at"],
            "due_at": active["due_at"],
            "worst": extra.get("worst"),
            "count": active["breach_count"],
            "sentences": stored_sentences(opening),
            "facts": opening.get("facts"),
        }
    return EpisodeState(**fields)


def needs_evaluation(per_rule: Mapping[str, Stored] | None) -> bool:
    """Whether a patient's stored states could move on a reading inside every bound.

    An active episode can clear; a resolved one not yet re-armed re-arms. Otherwise a
    normal reading of a plain plan changes nothing and needs no evaluation.
    """
    if not per_rule:
        return False
    return any(
        s.active is not None or (s.state.resolved_at is not None and not s.state.rearmed)
        for s in per_rule.values()
    )


def resolution_part(state: EpisodeState) -> dict[str, Any]:
    """What the last resolved row keeps of a state, as its ``state`` column merges it."""
    return {
        "resolved_level": state.resolved_level,
        "resolved_worst": state.resolved_worst,
        "resolved_at": state.resolved_at.isoformat() if state.resolved_at else None,
        "rearmed": state.rearmed,
        # the clear spell that re-arms the rule; an active episode's spell is its own row's
        "cleared_at": (
            state.cleared_at.isoformat() if state.cleared_at and state.status == "none" else None
        ),
        "evaluated_at": state.evaluated_at.isoformat() if state.evaluated_at else None,
    }


@dataclasses.dataclass(slots=True)
class Draft:
    """An episode row as it will be written, and the events of its transitions."""

    id: int | None
    patient_id: str
    care_team_id: str
    rule: str
    kind: str
    quantity: str | None
    direction: str | None
    plan_version: int
    opening_device_id: str
    opening_metric: str
    opening_measured_at: datetime
    opening_value: float | None
    opening_explanation: dict[str, Any]
    status: str
    severity: str
    peak_severity: str
    threshold: float | None
    worst_value: float | None
    last_measured_at: datetime
    breach_count: int
    due_at: datetime | None
    cleared_at: datetime | None
    resolve_due_at: datetime | None
    evaluated_at: datetime
    latest_explanation: dict[str, Any]
    state: dict[str, Any]
    events: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    dirty: bool = False
    opened_severity: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ("auto_resolved", "withdrawn", "resolved")


def _from_row(row: Mapping[str, Any]) -> Draft:
    """A draft of a loaded active row (only the mutable columns are ever written back)."""
    return Draft(
        id=row["id"],
        patient_id=row["patient_id"],
        care_team_id="",
        rule=row["rule"],
        kind="",
        quantity=None,
        direction=None,
        plan_version=0,
        opening_device_id="",
        opening_metric="",
        opening_measured_at=row["opening_measured_at"],
        opening_value=None,
        opening_explanation=_loads(row["opening"]),
        status=row["status"],
        severity=row["severity"],
        peak_severity=row["peak_severity"],
        threshold=row["threshold"],
        worst_value=row["worst_value"],
        last_measured_at=row["last_measured_at"],
        breach_count=row["breach_count"],
        due_at=row["due_at"],
        cleared_at=row["cleared_at"],
        resolve_due_at=row["resolve_due_at"],
        evaluated_at=row["evaluated_at"],
        latest_explanation=_loads(row["latest"]),
        state=_loads(row["state"]),
    )


#: A draft of a loaded active row, for code outside this module that moves an episode the
#: engine does not (:mod:`homemonitor.alerts.silence`).
from_row = _from_row


def _quantity(rule: RuleSpec) -> str | None:
    if isinstance(rule, AverageRule):
        return next(iter(rule.bounds)).value if len(rule.bounds) == 1 else None
    q = getattr(rule, "quantity", None)
    return None if q is None else str(q.value)


def _direction(rule: RuleSpec) -> str | None:
    if isinstance(rule, AverageRule):
        return "high"
    d = getattr(rule, "direction", None)
    return None if d is None else str(d)


def threshold(
    rule: RuleSpec, level: int, facts: Mapping[str, Any] | None, plan: PatientPlan
) -> float | None:
    """The bound a level of ``rule`` crossed, where the rule has one fixed number."""
    for key in ("bound", "threshold"):
        value = (facts or {}).get(key)
        if isinstance(value, int | float):
            return float(value)
    if isinstance(rule, ThresholdRule):
        bound = rule.urgent if level == 2 else rule.warning
        if bound is None:
            bound = rule.warning if level == 2 else rule.urgent
        if bound is not None and rule.relative_to is not None:  # as the engine: value + offset
            bound = plan.plan.personal[rule.relative_to] + bound
        return bound
    return None


def explanation(
    sentences: Mapping[str, str] | None, facts: Mapping[str, Any] | None, version: int
) -> dict[str, Any]:
    """An ``opening_explanation``/``latest_explanation`` as stored (jsonb).

    ``sentence`` is the English one, as it always was (the API's clients read it);
    ``sentences`` holds it by language (``sv``, ``en``) for the web app.
    """
    return {
        "sentence": english(sentences) or "",
        "sentences": dict(sentences or {}),
        "facts": dict(facts or {}),
        "plan_version": version,
    }


def stored_sentences(explanation: Mapping[str, Any]) -> dict[str, str] | None:
    """The sentence by language of a stored explanation; one stored before there were
    languages has its English ``sentence`` only."""
    found = explanation.get("sentences")
    if isinstance(found, dict) and found:
        return found
    sentence = explanation.get("sentence")
    return {"en": sentence} if sentence else None


class _Readings:
    """The readings of a history by measured_at, to name the reading that opened an episode."""

    def __init__(self, history: History) -> None:
        self._history = history

    def at(self, at: datetime, rule: RuleSpec) -> StoredReading | None:
        quantities = set(getattr(rule, "quantities", ()))
        candidates = self._history.measured(at)
        return next((r for r in candidates if quantities & r.values.keys()), None) or next(
            iter(candidates), None
        )


def _new(  # noqa: PLR0917 - one call site each, every argument a different fact
    plan: PatientPlan,
    rule: RuleSpec,
    state: EpisodeState,
    at: datetime,
    value: float | None,
    sentences: Mapping[str, str] | None,
    facts: Mapping[str, Any] | None,
    readings: _Readings,
    status: str,
) -> Draft:
    opened_at = state.opened_at or at
    reading = readings.at(opened_at, rule) or readings.at(at, rule)
    level = max(state.level, 1)
    why = explanation(state.sentences or sentences, state.facts or facts, plan.version)
    return Draft(
        id=None,
        patient_id=plan.patient_id,
        care_team_id=plan.care_team_id,
        rule=rule.id,
        kind=rule.kind,
        quantity=_quantity(rule),
        direction=_direction(rule),
        plan_version=plan.version,
        opening_device_id=reading.device_id if reading else "",
        opening_metric=reading.metric.value if reading else "",
        opening_measured_at=opened_at,
        opening_value=value,
        opening_explanation=why,
        status=status,
        severity=LEVEL_NAMES[level],
        peak_severity=LEVEL_NAMES[max(state.peak, level)],
        threshold=threshold(rule, level, state.facts or facts, plan),
        worst_value=value,
        last_measured_at=opened_at,
        breach_count=max(state.count, 1),
        due_at=state.due_at,
        cleared_at=state.cleared_at,
        resolve_due_at=resolve_due_at(rule, state),
        evaluated_at=state.evaluated_at or at,
        latest_explanation=why,
        state={"worst": state.worst},
        dirty=True,
    )


def resolve_due_at(rule: RuleSpec, state: EpisodeState) -> datetime | None:
    """When a cleared, non-latching episode resolves by itself (None: it does not wait).

    The scheduler's due job finds episodes by this column (migration 0012); the engine's
    :func:`~homemonitor.rules.episodes.due` decides, with the plan's rule as it is then.
    """
    if state.status != "cleared" or state.cleared_at is None or latches(rule, state.peak):
        return None
    return state.cleared_at + timedelta(hours=rule.resolve_after_hours)


#: The fields of a draft :func:`_apply_state` sets.
_STATE_FIELDS = operator.attrgetter(
    "severity",
    "peak_severity",
    "evaluated_at",
    "cleared_at",
    "resolve_due_at",
    "due_at",
    "breach_count",
    "state",
)


def _apply_state(d: Draft, s: EpisodeState, rule: RuleSpec) -> None:
    """Carry an active state's fields into its row (dirty when one of them changed)."""
    before = _STATE_FIELDS(d)
    if s.level > 0:
        d.severity = LEVEL_NAMES[s.level]
    if s.peak > 0:
        d.peak_severity = LEVEL_NAMES[max(s.peak, _LEVELS[d.peak_severity])]
    if s.evaluated_at is not None:
        d.evaluated_at = s.evaluated_at
    d.cleared_at = s.cleared_at
    d.resolve_due_at = resolve_due_at(rule, s)
    d.due_at = s.due_at if s.status == "pending" else d.due_at
    if s.count:
        d.breach_count = s.count
    d.state = {**d.state, "worst": s.worst}
    d.dirty = d.dirty or before != _STATE_FIELDS(d)


def _status_after(d: Draft, c: Change) -> str:
    if c.kind in ("opened", "reopened"):
        return "open"
    if c.kind == "updated":  # seen stays seen; a latched episode breaching again is open
        return "acknowledged" if d.status == "acknowledged" else "open"
    if c.kind == "severity_changed":  # worse needs to be seen again
        return "acknowledged" if d.status == "acknowledged" and c.level < c.previous else "open"
    return {"cleared": "cleared", "auto_resolved": "auto_resolved", "withdrawn": "withdrawn"}[
        c.kind
    ]


def _details(c: Change, version: int) -> str:
    return json.dumps(
        {
            "measured_at": c.at.isoformat(),
            "severity": c.severity,
            "previous": LEVEL_NAMES[c.previous],
            "value": c.value,
            "sentence": c.sentence,
            "sentences": dict(c.sentences) if c.sentences is not None else None,
            "facts": dict(c.facts) if c.facts is not None else None,
            "plan_version": version,
            "reason": c.reason,
            "decided_at": c.clock.isoformat() if c.clock else None,
        }
    )


def _apply_change(d: Draft, c: Change, plan: PatientPlan, rule: RuleSpec) -> None:
    d.events.append((c.kind, _details(c, plan.version)))
    d.status = _status_after(d, c)
    if c.kind in ("opened", "reopened"):
        d.opened_severity = c.severity
    if c.kind in ("opened", "reopened", "updated", "severity_changed"):
        d.last_measured_at = max(d.last_measured_at, c.at)
        if c.level > 0:
            d.threshold = threshold(rule, c.level, c.facts, plan)
    if c.measure is not None and (c.state.worst is None or c.measure >= c.state.worst):
        d.worst_value = c.value
    if c.sentences:
        d.latest_explanation = explanation(c.sentences, c.facts, plan.version)
    if d.ended:
        d.evaluated_at = max(d.evaluated_at, c.at)
        d.resolve_due_at = None
    else:
        _apply_state(d, c.state, rule)
    d.dirty = True


def drafts(
    plan: PatientPlan,
    history: History,
    stored: Mapping[str, Stored],
    outcome: Outcome,
    now: datetime,
) -> tuple[list[Draft], list[tuple[int, str]]]:
    """The episode rows one patient's outcome writes, and resolved rows' new ``state``.

    ``now`` is unused by the mapping itself; it is the batch's clock, for symmetry with
    :func:`~homemonitor.rules.evaluate.evaluate`.
    """
    del now
    readings = _Readings(history)
    changes: dict[str, list[Change]] = defaultdict(list)
    for c in outcome.changes:
        changes[c.rule].append(c)
    out: list[Draft] = []
    resolved_updates: list[tuple[int, str]] = []
    for rule_id in dict.fromkeys([*changes, *outcome.states]):
        rule = plan.plan.rule(rule_id)
        if rule is None:  # a rule the plan no longer has: nothing to evaluate it with
            continue
        s = stored.get(rule_id) or Stored()
        current = _from_row(s.active) if s.active is not None else None
        for c in changes[rule_id]:
            if current is None:
                status = "pending" if c.kind == "withdrawn" else "open"
                current = _new(
                    plan, rule, c.state, c.at, c.value, c.sentences, c.facts, readings, status
                )
            _apply_change(current, c, plan, rule)
            if current.ended:
                out.append(current)
                current = None
        final = outcome.states.get(rule_id)
        if final is not None:
            if final.status == "pending" and current is None:
                current = _pending(plan, rule, final, readings)
            elif current is not None and final.status != "none":
                _apply_state(current, final, rule)
            if s.resolved is not None and resolution_part(final) != resolution_part(s.state):
                resolved_updates.append((s.resolved["id"], json.dumps(resolution_part(final))))
        if current is not None:
            out.append(current)
    return out, resolved_updates


def _pending(plan: PatientPlan, rule: RuleSpec, state: EpisodeState, readings: _Readings) -> Draft:
    """A new pending episode (the engine has no change for it: the state says it)."""
    at = state.opened_at or state.evaluated_at or state.due_at
    assert at is not None  # a pending state knows when it breached
    d = _new(plan, rule, state, at, None, state.sentences, state.facts, readings, "pending")
    details = {
        "measured_at": at.isoformat(),
        "severity": d.severity,
        "due_at": state.due_at.isoformat() if state.due_at else None,
        "sentence": state.sentence,
        "sentences": dict(state.sentences) if state.sentences is not None else None,
        "plan_version": plan.version,
    }
    d.events.append(("pending", json.dumps(details)))
    return d


def encode(columns: Sequence[list[Any]], names: Sequence[str]) -> list[list[Any]]:
    """Column arrays ready for asyncpg: JSON columns as text, the rest as they are."""
    return [
        [_dumps(v) for v in col] if name in _JSON else col
        for col, name in zip(columns, names, strict=True)
    ]


def _dumps(value: Any) -> str:
    return json.dumps(value, default=lambda o: o.isoformat() if isinstance(o, datetime) else str(o))
