"""Backtesting a care-plan change: what a proposed plan would have raised. Pure, no I/O.

``homemonitor rules backtest`` and ``POST /api/v1/patients/{id}/care-plan/backtest`` replay
each patient's stored readings of a period through the patient's current plan and through
the proposed one, with the engine the worker runs (:func:`homemonitor.rules.replay.replay`)
and the same simulated clinician on both sides, and put the alerts side by side beside
the ones the ``alerts`` table holds. This module is the comparison and the report; the
reads are :mod:`homemonitor.storage.backtest`.

- The proposal (:class:`Proposal`) is either a whole :class:`CarePlanSpec` (a file, the
  API's body), the same for every patient, or a template swap: each patient's current
  spec with ``template`` replaced, ``personal`` values added or changed, and the old
  template's ``overrides``/``disabled`` dropped when the template changes (they name its
  rules); the patient's own rules and legacy bounds stay, but a bound whose rule id the
  new template has (``systolic.low``) gives way to the template's rule.
- Readings of the plans' lookback before the period (at most :data:`MAX_WARMUP`) warm the
  rules up; only alerts that opened within the period count.
- Every reading is replayed as if it arrived when it was measured: a backlog that was
  history when it arrived is current here. Clock-flagged readings stay history.
- The current plan is the patient's newest version over the whole period, though the
  stored alerts came from whichever version was in force then.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from homemonitor.errors import PlanError
from homemonitor.rules import adherence
from homemonitor.rules.explain import Lang
from homemonitor.rules.history import StoredReading
from homemonitor.rules.plan import CarePlanSpec, Plan, Template
from homemonitor.rules.replay import Raised, ResolvePolicy, replay

#: The period a backtest looks at unless told otherwise, and the longest it may.
DEFAULT_DAYS = 90
MAX_DAYS = 366
#: The simulated clinician of both sides: resolves an alert 24 h after it opened.
SIMULATED_CLINICIAN = ResolvePolicy()
#: The most history before the period that warms the rules up (a baseline's run-in).
MAX_WARMUP = timedelta(days=90)

Severity = Literal["warning", "urgent"]
_SEVERITIES: tuple[Severity, ...] = ("warning", "urgent")
_Model = ConfigDict(extra="forbid", frozen=True)
_RESOLVED_BY: dict[str, Literal["clinician", "rule"]] = {"clinician": "clinician", "rule": "rule"}


#: The words of :meth:`Proposal.describe`, per language.
_WORDS: Mapping[Lang, Mapping[str, str]] = {
    "en": {
        "template": "template {name}",
        "no_template": "no template",
        "given": "the given plan ({template}, {n} own rules/bounds)",
        "swap": "each patient's current plan with template {template}",
        "and": " and {personal}",
    },
    "sv": {
        "template": "mall {name}",
        "no_template": "ingen mall",
        "given": "den givna planen ({template}, {n} egna regler/gränser)",
        "swap": "varje patients nuvarande plan med mallen {template}",
        "and": " och {personal}",
    },
}


class BacktestIn(BaseModel):
    """What the API takes: the proposed plan and how many days back to replay."""

    model_config = _Model
    spec: CarePlanSpec = Field(description="The proposed care plan, as a new version would be.")
    days: int = Field(default=DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="Days back from now.")


class Counts(BaseModel):
    """Alerts by the worst severity they reached."""

    model_config = _Model
    warning: int = 0
    urgent: int = 0
    total: int = 0

    @classmethod
    def of(cls, severities: Iterable[str]) -> Counts:
        """The counts of ``severities`` (``warning``/``urgent`` strings)."""
        found = list(severities)
        warning, urgent = found.count("warning"), found.count("urgent")
        return cls(warning=warning, urgent=urgent, total=warning + urgent)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            warning=self.warning + other.warning,
            urgent=self.urgent + other.urgent,
            total=self.total + other.total,
        )


class AlertOut(BaseModel):
    """One alert a replayed plan raised."""

    model_config = _Model
    opened_at: datetime = Field(description="measured_at of the reading that opened it.")
    severity: Severity = Field(description="The worst it reached.")
    rule: str
    kind: str
    sentence: str = Field(description="Why it opened, as the nurse would have read it.")
    sentences: dict[str, str] = Field(
        default_factory=dict, description="The same sentence by language (sv, en)."
    )
    reopened: bool = Field(description="A re-alert after the simulated clinician resolved one.")
    resolved_at: datetime | None
    resolved_by: Literal["clinician", "rule"] | None = Field(
        description="clinician (simulated), rule (cleared by itself), None: open at the end."
    )

    @classmethod
    def of(cls, r: Raised) -> AlertOut:
        """The report's view of one replayed episode."""
        return cls(
            opened_at=r.opened_at,
            severity="urgent" if r.severity == "urgent" else "warning",
            rule=r.rule,
            kind=r.kind,
            sentence=r.sentence,
            sentences=dict(r.sentences),
            reopened=r.reopened,
            resolved_at=r.resolved_at,
            resolved_by=_RESOLVED_BY.get(r.resolved_by or ""),
        )


class SideOut(BaseModel):
    """What one plan raised for one patient (or, in the total, for all: no list)."""

    model_config = _Model
    counts: Counts
    alerts: list[AlertOut] = []


class RowOut(BaseModel):
    """One line of the side-by-side comparison: an alert of either plan, or of both."""

    model_config = _Model
    opened_at: datetime
    rule: str
    current: Severity | None = Field(description="Its severity under the current plan, if raised.")
    proposed: Severity | None = Field(description="Its severity under the proposed plan.")
    sentence: str = Field(description="The proposed plan's sentence, else the current one's.")
    sentences: dict[str, str] = Field(
        default_factory=dict, description="The same sentence by language (sv, en)."
    )

    def said(self, lang: Lang) -> str:
        """The sentence in ``lang`` (English when the row has no such language)."""
        return self.sentences.get(lang) or self.sentence


class PatientOut(BaseModel):
    """One patient's backtest."""

    model_config = _Model
    patient_id: str
    readings: int = Field(description="Stored readings in the period.")
    current_version: int | None = Field(description="The plan version replayed as current.")
    stored: Counts = Field(description="Alerts the alerts table holds from the period.")
    current: SideOut
    proposed: SideOut
    rows: list[RowOut] = Field(description="Both sides' alerts, merged in time order.")
    skipped: str | None = Field(
        default=None, description="Why this patient was not backtested (a team's plan swap)."
    )


class TotalOut(BaseModel):
    model_config = _Model
    patients: int
    readings: int
    stored: Counts
    current: Counts
    proposed: Counts


class ReportOut(BaseModel):
    """A whole backtest: the period, the assumptions, per patient and in total."""

    model_config = _Model
    since: datetime
    until: datetime
    days: int
    proposal: str = Field(description="What was proposed, in words.")
    clinician: str = Field(description="The simulated clinician both sides were replayed with.")
    assumptions: list[str]
    patients: list[PatientOut]
    total: TotalOut


@dataclasses.dataclass(frozen=True, slots=True)
class Proposal:
    """The proposed plan: a whole ``spec``, or a ``template`` swap with ``personal`` values."""

    spec: CarePlanSpec | None = None
    template: str | None = None
    personal: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def for_patient(
        self, current: CarePlanSpec | None, templates: Mapping[str, Template]
    ) -> CarePlanSpec:
        """The spec proposed for a patient whose current spec is ``current``.

        A template swap keeps the patient's own rules and legacy bounds, except a bound
        whose rule id (``systolic.low``) the new template has: the template's rule
        replaces it.
        """
        if self.spec is not None:
            return self.spec
        base = current or CarePlanSpec()
        keep = base.template == self.template
        ids = {r.id for r in templates.get(self.template or "", ())}
        thresholds = {}
        for quantity, bounds in base.thresholds.items():
            left = {
                d: None if f"{quantity.value}.{d}" in ids else getattr(bounds, d)
                for d in ("high", "low")
            }
            if any(left.values()):
                thresholds[quantity] = bounds.model_copy(update=left)
        return CarePlanSpec.model_validate(
            {
                **base.model_dump(exclude_unset=True),
                "template": self.template,
                "personal": {**base.personal, **self.personal},
                "overrides": base.overrides if keep else {},
                "disabled": base.disabled if keep else [],
                "thresholds": thresholds,
            }
        )

    def describe(self, lang: Lang = "en") -> str:
        """The proposal in words, for the report.

        >>> Proposal(spec=CarePlanSpec(template="copd")).describe("sv")
        'den givna planen (mall copd, 0 egna regler/gränser)'
        """
        words = _WORDS[lang]
        if self.spec is not None:
            n = len(self.spec.rules) + len(self.spec.thresholds)
            template = (
                words["template"].format(name=self.spec.template)
                if self.spec.template
                else words["no_template"]
            )
            return words["given"].format(template=template, n=n)
        personal = ", ".join(f"{k}={v:g}" for k, v in sorted(self.personal.items()))
        return words["swap"].format(template=self.template) + (
            words["and"].format(personal=personal) if personal else ""
        )


def parse_spec(text: str, where: str) -> CarePlanSpec:
    """A proposed plan from YAML or JSON ``text``; PlanError names ``where`` and the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise PlanError(f"{where}: not YAML or JSON: {first}") from exc
    try:
        return CarePlanSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "") + e["msg"]
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise PlanError(f"{where}: invalid care plan: " + "; ".join(problems)) from exc


def parse_personal(pairs: Sequence[str]) -> dict[str, float]:
    """``key=value`` options as personal values; PlanError for one that is not that."""
    found: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not key.strip() or not math.isfinite(number):
            raise PlanError(f"--personal {pair!r}: give it as key=number, e.g. dry_weight=82.5")
        found[key.strip()] = number
    return found


def warmup(*plans: Plan | None) -> timedelta:
    """How much history before the period the plans' rules read (at most MAX_WARMUP)."""
    longest = max((_lookback(p) for p in plans if p is not None), default=timedelta(0))
    return min(longest, MAX_WARMUP)


def _lookback(plan: Plan) -> timedelta:
    """The engine's lookback, or a missing-data rule's run-in and tolerance if longer."""
    silent = (timedelta(days=e.run_in_days, hours=e.tolerate_hours) for e in plan.expected)
    return max([plan.lookback(), *silent])


def clinician_text(policy: ResolvePolicy) -> str:
    """The simulated clinician in words."""
    if policy.after is None:
        return "never resolves an alert"
    hours = policy.after.total_seconds() / 3600
    return f"resolves each alert {hours:g} h after it opened"


def _raised(
    plan: Plan | None,
    readings: Sequence[StoredReading],
    since: datetime,
    until: datetime,
    policy: ResolvePolicy,
) -> list[AlertOut]:
    if plan is None or not readings:
        return []
    episodes = replay(plan, readings, clinician=policy, now=until) if plan.rules else []
    episodes += adherence.silences(plan.expected, readings, until, plan.version)
    episodes.sort(key=lambda r: r.opened_at)
    return [AlertOut.of(r) for r in episodes if since <= r.opened_at <= until]


def compare(current: Sequence[AlertOut], proposed: Sequence[AlertOut]) -> list[RowOut]:
    """Both sides' alerts in time order; one that opened on both (same rule and time) once."""
    mine = {(a.rule, a.opened_at): a for a in proposed}
    rows = []
    for a in current:
        other = mine.pop((a.rule, a.opened_at), None)
        why = other if other is not None else a
        rows.append(
            RowOut(
                opened_at=a.opened_at,
                rule=a.rule,
                current=a.severity,
                proposed=other.severity if other is not None else None,
                sentence=why.sentence,
                sentences=why.sentences,
            )
        )
    rows += [
        RowOut(
            opened_at=a.opened_at,
            rule=a.rule,
            current=None,
            proposed=a.severity,
            sentence=a.sentence,
            sentences=a.sentences,
        )
        for a in mine.values()
    ]
    return sorted(rows, key=lambda r: (r.opened_at, r.rule))


def patient(
    patient_id: str,
    readings: Sequence[StoredReading],
    current: Plan | None,
    proposed: Plan,
    *,
    since: datetime,
    until: datetime,
    stored: Iterable[str] = (),
    policy: ResolvePolicy = SIMULATED_CLINICIAN,
) -> PatientOut:
    """One patient's backtest over ``readings`` (warm-up included) in ``[since, until]``.

    ``stored`` holds the worst severity of each alert the alerts table has from the period.
    """
    now_side = _raised(current, readings, since, until, policy)
    new_side = _raised(proposed, readings, since, until, policy)
    return PatientOut(
        patient_id=patient_id,
        readings=sum(1 for r in readings if since <= r.measured_at <= until),
        current_version=None if current is None else current.version,
        stored=Counts.of(stored),
        current=SideOut(counts=Counts.of(a.severity for a in now_side), alerts=now_side),
        proposed=SideOut(counts=Counts.of(a.severity for a in new_side), alerts=new_side),
        rows=compare(now_side, new_side),
    )


def skipped(patient_id: str, why: str) -> PatientOut:
    """A patient the proposal could not be applied to (their plan does not resolve)."""
    empty = SideOut(counts=Counts())
    return PatientOut(
        patient_id=patient_id,
        readings=0,
        current_version=None,
        stored=Counts(),
        current=empty,
        proposed=empty,
        rows=[],
        skipped=why,
    )


ASSUMPTIONS = (
    "both plans are replayed through the engine the worker runs, reading by reading, on a "
    "simulated clock",
    "every reading is replayed as if it arrived when it was measured (a gateway's backlog "
    "that was history when it arrived is current here); clock-flagged readings stay history",
    "the current plan is the newest version, replayed over the whole period; the stored "
    "alerts came from the versions in force at the time and from real clinicians",
    "readings from before the period warm the rules up (the plans' lookback, at most 90 "
    "days); only alerts that opened within the period count",
)


def report(
    patients: Sequence[PatientOut],
    *,
    since: datetime,
    until: datetime,
    days: int,
    proposal: str,
    policy: ResolvePolicy = SIMULATED_CLINICIAN,
) -> ReportOut:
    """The whole backtest with its totals."""
    done = [p for p in patients if p.skipped is None]
    total = TotalOut(
        patients=len(done),
        readings=sum(p.readings for p in done),
        stored=sum((p.stored for p in done), Counts()),
        current=sum((p.current.counts for p in done), Counts()),
        proposed=sum((p.proposed.counts for p in done), Counts()),
    )
    return ReportOut(
        since=since,
        until=until,
        days=days,
        proposal=proposal,
        clinician=clinician_text(policy),
        assumptions=list(ASSUMPTIONS),
        patients=list(patients),
        total=total,
    )


def as_json(r: ReportOut) -> str:
    """The report as the ``--json`` output and the API's body."""
    return json.dumps(r.model_dump(mode="json"), indent=2, ensure_ascii=False)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def as_text(r: ReportOut, lang: Lang = "en") -> str:
    """The report for a person: per patient counts and the alerts side by side, then totals.

    ``lang`` is the language of the alerts' sentences (the rest is English).
    """
    out = [
        f"Backtest {_when(r.since)} to {_when(r.until)} UTC ({r.days} days)",
        f"proposed: {r.proposal}",
        f"simulated clinician (both sides): {r.clinician}",
        "",
    ]
    for p in r.patients:
        if p.skipped is not None:
            out += [f"{p.patient_id}: skipped: {p.skipped}", ""]
            continue
        version = "no plan" if p.current_version is None else f"v{p.current_version}"
        out.append(f"{p.patient_id} (current plan {version}, {_n(p.readings, 'reading')})")
        out += _table(p.stored, p.current.counts, p.proposed.counts)
        if p.rows:
            out.append(f"  {'opened (UTC)':<17} {'current':<9}{'proposed':<10}{'rule':<18} why")
            for row in p.rows:
                out.append(
                    f"  {_when(row.opened_at):<17} {row.current or '-':<9}"
                    f"{row.proposed or '-':<10}{row.rule:<18} {row.said(lang)}"
                )
        out.append("")
    t = r.total
    skips = sum(1 for p in r.patients if p.skipped is not None)
    out.append(
        f"Total: {_n(t.patients, 'patient')}, {_n(t.readings, 'reading')}"
        + (f" ({_n(skips, 'patient')} skipped)" if skips else "")
    )
    out += _table(t.stored, t.current, t.proposed)
    out.append("")
    out += [f"note: {a}" for a in r.assumptions]
    return "\n".join(out)


def _table(stored: Counts, now: Counts, new: Counts) -> list[str]:
    lines = [f"  {'alerts':<10}{'stored':>8}{'current':>9}{'proposed':>10}"]
    for label in (*_SEVERITIES, "total"):
        values = [getattr(c, label) for c in (stored, now, new)]
        lines.append(f"  {label:<10}{values[0]:>8}{values[1]:>9}{values[2]:>10}")
    return lines
