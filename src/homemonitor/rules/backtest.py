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
from homemonitor.rules.kinds import LOCAL_ZONE
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


#: The words of :meth:`Proposal.describe`, :func:`clinician_text` and :func:`as_text`.
_WORDS: Mapping[Lang, Mapping[str, str]] = {
    "en": {
        "template": "template {name}",
        "no_template": "no template",
        "given": "the given plan ({template}, {n} own rules/bounds)",
        "swap": "each patient's current plan with template {template}",
        "and": " and {personal}",
        "never": "never resolves an alert",
        "after": "resolves each alert {hours} h after it opened",
        "title": "Backtest {since} to {until} UTC ({days} days)",
        "proposed": "proposed: {proposal}",
        "clinician": "simulated clinician (both sides): {clinician}",
        "skipped": "{patient}: skipped: {why}",
        "no_plan": "no plan",
        "patient": "{patient} (current plan {version}, {readings})",
        "reading": "reading",
        "readings": "readings",
        "patient_one": "patient",
        "patients": "patients",
        "header": "opened (UTC)|current|proposed|rule|why",
        "total": "Total: {patients}, {readings}",
        "skips": " ({patients} skipped)",
        "counts": "alerts|stored|current|proposed",
        "warning": "warning",
        "urgent": "urgent",
        "all": "total",
        "note": "note: {text}",
    },
    "sv": {
        "template": "mall {name}",
        "no_template": "ingen mall",
        "given": "den givna planen ({template}, {n} egna regler/gränser)",
        "swap": "varje patients nuvarande plan med mallen {template}",
        "and": " och {personal}",
        "never": "avslutar aldrig ett larm",
        "after": "avslutar varje larm {hours} h efter att det öppnades",
        "title": "Backtest {since} till {until} svensk tid ({days} dagar)",
        "proposed": "föreslaget: {proposal}",
        "clinician": "simulerad kliniker (båda sidor): {clinician}",
        "skipped": "{patient}: överhoppad: {why}",
        "no_plan": "ingen plan",
        "patient": "{patient} (nuvarande plan {version}, {readings})",
        "reading": "mätning",
        "readings": "mätningar",
        "patient_one": "patient",
        "patients": "patienter",
        "header": "öppnat|nuvarande|föreslagen|regel|varför",
        "total": "Totalt: {patients}, {readings}",
        "skips": " (överhoppade: {patients})",
        "counts": "larm|lagrade|nuvarande|föreslagna",
        "warning": "varning",
        "urgent": "brådskande",
        "all": "totalt",
        "note": "obs: {text}",
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


def clinician_text(policy: ResolvePolicy, lang: Lang = "en") -> str:
    """The simulated clinician in words.

    >>> clinician_text(ResolvePolicy(), "sv")
    'avslutar varje larm 24 h efter att det öppnades'
    """
    words = _WORDS[lang]
    if policy.after is None:
        return words["never"]
    hours = f"{policy.after.total_seconds() / 3600:g}"
    return words["after"].format(hours=hours.replace(".", ",") if lang == "sv" else hours)


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


_ASSUMPTIONS_EN = (
    "both plans are replayed through the engine the worker runs, reading by reading, on a "
    "simulated clock",
    "every reading is replayed as if it arrived when it was measured (a gateway's backlog "
    "that was history when it arrived is current here); clock-flagged readings stay history",
    "the current plan is the newest version, replayed over the whole period; the stored "
    "alerts came from the versions in force at the time and from real clinicians",
    "readings from before the period warm the rules up (the plans' lookback, at most 90 "
    "days); only alerts that opened within the period count",
)
_ASSUMPTIONS_SV = (
    "båda planerna spelas upp genom motorn som arbetaren kör, mätning för mätning, på en "
    "simulerad klocka",
    "varje mätning spelas upp som om den kom när den mättes (en hubbs eftersläpning som var "
    "historik när den kom är aktuell här); mätningar med klockflaggor förblir historik",
    "den nuvarande planen är den senaste versionen, uppspelad över hela perioden; de lagrade "
    "larmen kom från de versioner som gällde då och från riktiga kliniker",
    "mätningar från före perioden värmer upp reglerna (planernas tillbakablick, högst 90 "
    "dagar); bara larm som öppnades inom perioden räknas",
)
#: What a backtest assumes, in words, per language.
ASSUMPTIONS: Mapping[Lang, tuple[str, ...]] = {"en": _ASSUMPTIONS_EN, "sv": _ASSUMPTIONS_SV}


def report(
    patients: Sequence[PatientOut],
    *,
    since: datetime,
    until: datetime,
    days: int,
    proposal: str,
    policy: ResolvePolicy = SIMULATED_CLINICIAN,
    lang: Lang = "en",
) -> ReportOut:
    """The whole backtest with its totals; its words (``proposal`` aside) in ``lang``."""
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
        clinician=clinician_text(policy, lang),
        assumptions=list(ASSUMPTIONS[lang]),
        patients=list(patients),
        total=total,
    )


def as_json(r: ReportOut) -> str:
    """The report as the ``--json`` output and the API's body."""
    return json.dumps(r.model_dump(mode="json"), indent=2, ensure_ascii=False)


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


#: The text report's column widths: opened, current, proposed, rule (then why).
_WIDTHS: Mapping[Lang, tuple[int, int, int, int]] = {"en": (17, 9, 10, 18), "sv": (17, 12, 12, 18)}


def _when(t: datetime, lang: Lang = "en") -> str:
    return (t if lang == "en" else t.astimezone(LOCAL_ZONE)).strftime("%Y-%m-%d %H:%M")


def as_text(r: ReportOut, lang: Lang = "en") -> str:
    """The report for a person: per patient counts and the alerts side by side, then totals.

    In ``lang``: the headings, the alerts' sentences and severities, and the times (UTC in
    English, Swedish time in Swedish); the report's own words are as :func:`report` wrote them.
    """
    w = _WORDS[lang]
    opened, now_w, new_w, rule_w = _WIDTHS[lang]
    sev = {"warning": w["warning"], "urgent": w["urgent"], None: "-"}
    out = [
        w["title"].format(since=_when(r.since, lang), until=_when(r.until, lang), days=r.days),
        w["proposed"].format(proposal=r.proposal),
        w["clinician"].format(clinician=r.clinician),
        "",
    ]
    for p in r.patients:
        if p.skipped is not None:
            out += [w["skipped"].format(patient=p.patient_id, why=p.skipped), ""]
            continue
        version = w["no_plan"] if p.current_version is None else f"v{p.current_version}"
        readings = _n(p.readings, w["reading"], w["readings"])
        out.append(w["patient"].format(patient=p.patient_id, version=version, readings=readings))
        out += _table(w, p.stored, p.current.counts, p.proposed.counts)
        if p.rows:
            h = w["header"].split("|")
            out.append(f"  {h[0]:<{opened}} {h[1]:<{now_w}}{h[2]:<{new_w}}{h[3]:<{rule_w}} {h[4]}")
            for row in p.rows:
                out.append(
                    f"  {_when(row.opened_at, lang):<{opened}} {sev[row.current]:<{now_w}}"
                    f"{sev[row.proposed]:<{new_w}}{row.rule:<{rule_w}} {row.said(lang)}"
                )
        out.append("")
    t = r.total
    skips = sum(1 for p in r.patients if p.skipped is not None)
    out.append(
        w["total"].format(
            patients=_n(t.patients, w["patient_one"], w["patients"]),
            readings=_n(t.readings, w["reading"], w["readings"]),
        )
        + (w["skips"].format(patients=_n(skips, w["patient_one"], w["patients"])) if skips else "")
    )
    out += _table(w, t.stored, t.current, t.proposed)
    out.append("")
    out += [w["note"].format(text=a) for a in r.assumptions]
    return "\n".join(out)


def _table(w: Mapping[str, str], stored: Counts, now: Counts, new: Counts) -> list[str]:
    head = w["counts"].split("|")
    width = max(len(head[0]), *(len(w[k]) for k in ("warning", "urgent", "all"))) + 3
    cols = [max(len(x), 6) + 2 for x in head[1:]]
    lines = [f"  {head[0]:<{width}}{head[1]:>{cols[0]}}{head[2]:>{cols[1]}}{head[3]:>{cols[2]}}"]
    for label, word in (("warning", w["warning"]), ("urgent", w["urgent"]), ("total", w["all"])):
        values = [getattr(c, label) for c in (stored, now, new)]
        lines.append(
            f"  {word:<{width}}{values[0]:>{cols[0]}}{values[1]:>{cols[1]}}{values[2]:>{cols[2]}}"
        )
    return lines
