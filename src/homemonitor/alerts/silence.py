"""Missing data: a patient who stopped measuring, or a home gateway that stopped sending.

The care plan says per metric how often a reading is expected and how long a silence it
tolerates (:class:`~homemonitor.rules.plan.Expected`, rule id ``missing.<metric>``). Two
halves, both writing through the batch's write path
(:func:`homemonitor.alerts.episodes.write`), so a missing-data alert is an episode like any
other (kind ``missing``: the same tables, events, routing and notifications):

- **time-driven** (:func:`check`, the scheduler's ``alerts.silence`` job, on its clock): one
  query finds the latest reading of every (patient, expected metric) (``LATERAL ... ORDER
  BY measured_at DESC LIMIT 1`` on ``readings_patient_time``: the same on a hypertable,
  whose chunks have that index) and returns only the silences past their tolerance, plus
  the earliest deadline still to come; a second query looks at those few: pauses, the
  gateway's last contact, whether the patient measured regularly before. For each patient
  silent past the plan's tolerance who measured regularly, and is not paused, it opens
  ``missing.<metric>``, or ``gateway.silent`` when nothing at all has come from the
  gateway of the patient's latest reading for that long (the hub is off or offline, or
  nobody in the home measures anything: without a heartbeat in the contract the two look
  alike). Each silence is alerted once: an episode remembers when its silence began
  (``opening_measured_at``). Under the patients' episode locks, re-checked after taking
  them, so a reading a batch commits meanwhile is seen. A ``gateway.silent`` whose gateway
  has been heard from since, without this patient's readings, is auto-resolved first
  (``gateway_back``): the silence, if it lasts, is the patient's.
- **batch** (:func:`split` and :func:`closing`, from
  :func:`~homemonitor.alerts.episodes.evaluate_batch`, which loads the episode states
  anyway: nothing more to ask the database for a patient with no missing-data episode): a
  new reading ends the silence it falls in. ``missing.<metric>`` auto-resolves on a reading
  of that metric measured after the silence began, ``gateway.silent`` on any reading of
  the patient; the event says ``backlog`` when the reading was measured before the alert
  was raised (it was measured, only late: a gateway outage, explained) and ``resumed``
  otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from homemonitor.alerts import episodes, rows
from homemonitor.alerts.rows import Draft, Stored
from homemonitor.registry.cache import PatientPlan, Plans
from homemonitor.rules import adherence
from homemonitor.rules.explain import every_language
from homemonitor.rules.history import StoredReading
from homemonitor.rules.plan import GATEWAY_SILENT, Expected, is_silence_rule
from homemonitor.storage.database import Conn

#: How far back the latest reading is looked for (before now, or before a pause that ended
#: since): a metric silent longer was alerted (the longest tolerance is 21 days) or never
#: measured regularly. It keeps the walk down a patient's index short, and, under
#: TimescaleDB, out of chunks compressed after 30 days (whose segments are by device and
#: metric, not patient: each (patient, metric) looked for there decompresses the chunk's
#: segments of that metric).
HORIZON = timedelta(days=28)
#: The soonest a check asks to run again for a deadline (a silence alerts at its deadline,
#: or within this after it): 10 000 patients' deadlines are seconds apart, and a check over
#: them all takes about a second (docs/care-plans.md).
MIN_GAP = timedelta(minutes=1)
#: Patients one :func:`check` opens alerts for at most (more: the job runs again at once).
LIMIT = 1000

#: The latest reading per (patient, metric) of ``$1``/``$2`` (tolerance ``$3`` hours) no
#: later than ``$4``, within :data:`HORIZON` (``$5``) of it or of the start of a pause that
#: ended within the horizon (a long admission): the rows whose tolerance has run out
#: (``i`` their position in the arrays), and one row (``i`` NULL) with the earliest
#: deadline still to come. ``last`` is used twice, so it is computed once.
_LATEST = """
WITH last AS (
    SELECT e.i, l.measured_at AS last_at, l.received_at, l.gateway_id,
           l.measured_at + make_interval(secs => e.tolerate_h * 3600) AS deadline
    FROM unnest($1::text[], $2::text[], $3::float8[]) WITH ORDINALITY
         AS e(patient_id, metric, tolerate_h, i)
    CROSS JOIN LATERAL (
        SELECT least($4, min(lower(pp.during))) - $5::interval AS since FROM patient_pauses pp
        WHERE pp.patient_id = e.patient_id AND coalesce(upper(pp.during), 'infinity') > $4 - $5
    ) AS h
    CROSS JOIN LATERAL (
        SELECT r.measured_at, r.received_at, r.gateway_id FROM readings r
        WHERE r.patient_id = e.patient_id AND r.metric = e.metric
          AND r.measured_at <= $4 AND r.measured_at > h.since
        ORDER BY r.measured_at DESC LIMIT 1
    ) AS l
)
SELECT i, last_at, received_at, gateway_id FROM last WHERE deadline <= $4
UNION ALL
SELECT NULL, min(deadline), NULL, NULL FROM last WHERE deadline > $4
"""
#: For the late rows only: whether a pause is under way at ``$7`` (and has no end, or its
#: latest end),
#: the end of the last pause before ``$7``, the gateway's recorded last contact, and how
#: many readings of the metric the run-in up to the last one holds.
_LATE = """
SELECT c.i, p.paused, p.open_ended, p.paused_until, p.resumed_at, g.last_seen_at, n.readings
FROM unnest($1::int[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::float8[])
     AS c(i, patient_id, metric, last_at, gateway_id, run_in_h)
LEFT JOIN gateways g ON g.id = c.gateway_id
CROSS JOIN LATERAL (
    SELECT coalesce(bool_or(pp.during @> $7::timestamptz), false) AS paused,
           bool_or(pp.during @> $7 AND upper_inf(pp.during)) AS open_ended,
           max(upper(pp.during)) FILTER (WHERE pp.during @> $7) AS paused_until,
           max(upper(pp.during)) FILTER (WHERE upper(pp.during) <= $7) AS resumed_at
    FROM patient_pauses pp WHERE pp.patient_id = c.patient_id
) AS p
CROSS JOIN LATERAL (
    SELECT count(*) AS readings FROM readings r
    WHERE r.patient_id = c.patient_id AND r.metric = c.metric AND r.measured_at <= c.last_at
      AND r.measured_at > c.last_at - make_interval(secs => c.run_in_h * 3600)
) AS n
"""
#: Active gateway.silent episodes whose gateway's recorded contact is newer than the one
#: they were raised on (the partial index ``alerts_silence`` holds missing-data rows only).
_GATEWAY_BACK = f"""
SELECT a.id, a.patient_id, g.last_seen_at
FROM alerts AS a JOIN gateways AS g ON g.id = a.opening_explanation -> 'facts' ->> 'gateway_id'
WHERE a.kind = 'missing' AND a.rule = '{GATEWAY_SILENT}'
  AND a.status IN ('open', 'acknowledged', 'cleared') AND g.last_seen_at > a.opening_measured_at
"""
_ACTIVE_BY_ID = f"""
SELECT {rows.STATE_COLUMNS} FROM alerts
WHERE id = ANY($1::bigint[]) AND status IN ('open', 'acknowledged', 'cleared')
"""
_ALERTED = """
SELECT patient_id, rule, opening_measured_at, status IN ('pending', 'open', 'acknowledged',
       'cleared') AS active
FROM alerts WHERE kind = 'missing' AND patient_id = ANY($1::text[])
"""


@dataclasses.dataclass(frozen=True, slots=True)
class _Expectation:
    plan: PatientPlan
    expected: Expected


@dataclasses.dataclass(frozen=True, slots=True)
class Silence:
    """One (patient, metric) silent past its tolerance, as :func:`check` judged it."""

    plan: PatientPlan
    expected: Expected
    last_at: datetime  # the latest reading's measured_at
    silent_from: datetime  # last_at, or the end of a pause after it
    gateway_id: str | None
    contact_at: datetime | None  # the gateway's last contact, as far as it is known
    readings: int  # in the run-in up to last_at

    @property
    def regular(self) -> bool:
        """The patient measured this metric regularly before the silence."""
        return self.readings >= self.expected.min_readings()

    def gateway_silent(self, now: datetime) -> bool:
        """Nothing has come from the gateway for longer than the metric's tolerance."""
        tolerance = timedelta(hours=self.expected.tolerate_hours)
        return self.contact_at is not None and self.contact_at + tolerance <= now


def _expectations(plans: Plans) -> list[_Expectation]:
    return [_Expectation(p, e) for p in plans.patients.values() for e in p.plan.expected]


async def _assess(
    conn: Conn, wanted: Sequence[_Expectation], now: datetime
) -> tuple[list[Silence], datetime | None]:
    """The silences past tolerance of ``wanted`` at ``now``, and the next deadline."""
    if not wanted:
        return [], None
    late = await conn.fetch(
        _LATEST,
        [w.plan.patient_id for w in wanted],
        [w.expected.metric.value for w in wanted],
        [w.expected.tolerate_hours for w in wanted],
        now,
        HORIZON,
    )
    next_at: datetime | None = None
    found = []
    for r in late:
        if r["i"] is None:
            next_at = r["last_at"]
        else:
            found.append((wanted[r["i"] - 1], r))
    if not found:
        return [], next_at
    details = {
        d["i"]: d
        for d in await conn.fetch(
            _LATE,
            list(range(len(found))),
            [w.plan.patient_id for w, _ in found],
            [w.expected.metric.value for w, _ in found],
            [r["last_at"] for _, r in found],
            [r["gateway_id"] for _, r in found],
            [w.expected.run_in_days * 24 for w, _ in found],
            now,
        )
    }
    silences = []
    for i, (w, r) in enumerate(found):
        d = details[i]
        tolerance = timedelta(hours=w.expected.tolerate_hours)
        silent_from = max(r["last_at"], d["resumed_at"] or r["last_at"])
        if d["paused"] or silent_from + tolerance > now:
            if not d["open_ended"]:  # an admission without an end sets no deadline
                later = (d["paused_until"] or silent_from) + tolerance
                next_at = later if next_at is None else min(next_at, later)
            continue
        contacts = [t for t in (d["last_seen_at"], r["received_at"]) if t is not None]
        silences.append(
            Silence(
                w.plan,
                w.expected,
                r["last_at"],
                silent_from,
                r["gateway_id"],
                max(contacts) if r["gateway_id"] is not None and contacts else None,
                d["readings"],
            )
        )
    # One contact per patient and gateway: the latest any of its metrics shows.
    latest: dict[tuple[str, str | None], datetime] = {}
    for x in silences:
        key = (x.plan.patient_id, x.gateway_id)
        if x.contact_at is not None and (key not in latest or x.contact_at > latest[key]):
            latest[key] = x.contact_at
    silences = [
        dataclasses.replace(x, contact_at=latest.get((x.plan.patient_id, x.gateway_id)))
        for x in silences
    ]
    return silences, next_at


async def check(conn: Conn, plans: Plans, now: datetime, *, limit: int = LIMIT) -> episodes.Due:
    """Open the missing-data alerts due at ``now``; one transaction (see the module)."""
    tally = episodes.Tally()
    async with conn.transaction():
        await _gateways_back(conn, now, tally)
        wanted = _expectations(plans)
        silences, next_at = await _assess(conn, wanted, now)
        due = await _unalerted(conn, [s for s in silences if s.regular], now)
        patients = sorted({s.plan.patient_id for s in due})[:limit]
        if patients:
            await episodes.lock_patients(conn, patients)
            chosen = set(patients)
            # Again under the locks: a batch committed meanwhile may have ended a silence.
            again = [_Expectation(s.plan, s.expected) for s in due if s.plan.patient_id in chosen]
            silences, _ = await _assess(conn, again, now)
            due = await _unalerted(conn, [s for s in silences if s.regular], now)
            await episodes.write(conn, _drafts(due, now), tally, actor="scheduler", now=now)
    if next_at is not None:
        next_at = max(next_at, now + MIN_GAP)
    return episodes.Due(tally, more=len(patients) >= limit, next_at=next_at)


async def _gateways_back(conn: Conn, now: datetime, tally: episodes.Tally) -> None:
    """End each ``gateway.silent`` whose gateway has been in contact since it was raised.

    The hub is back (readings of another patient of the home, any message) though none of
    this patient's arrived: the silence, if it lasts, is the patient's, and this same check
    raises ``missing.<metric>`` for it.
    """
    back = await conn.fetch(_GATEWAY_BACK)
    if not back:
        return
    await episodes.lock_patients(conn, [r["patient_id"] for r in back])
    drafts = []
    for r in await conn.fetch(_ACTIVE_BY_ID, [r["id"] for r in back]):  # again, locked
        contact = next(b["last_seen_at"] for b in back if b["id"] == r["id"])
        facts = {"measured_at": None, "last_contact_at": contact.isoformat()}
        drafts.append(_ended(dict(r), "gateway_back", facts, now))
    await episodes.write(conn, drafts, tally, actor="scheduler", now=now)


async def _unalerted(conn: Conn, silences: Sequence[Silence], now: datetime) -> list[Silence]:
    """The silences no episode was raised for yet (a gateway's: one per patient)."""
    if not silences:
        return []
    alerted: dict[tuple[str, str], list[tuple[datetime, bool]]] = defaultdict(list)
    for r in await conn.fetch(_ALERTED, sorted({s.plan.patient_id for s in silences})):
        alerted[(r["patient_id"], r["rule"])].append((r["opening_measured_at"], r["active"]))

    def done(patient_id: str, rule: str, began: datetime | None) -> bool:
        return any(active or at == began for at, active in alerted[(patient_id, rule)])

    out = []
    for s in silences:
        if s.gateway_silent(now):
            if not done(s.plan.patient_id, GATEWAY_SILENT, s.contact_at):
                out.append(s)
        elif not done(s.plan.patient_id, s.expected.id, s.silent_from):
            out.append(s)
    return out


def _draft(  # noqa: PLR0917 - one call site, every argument a different fact
    plan: PatientPlan,
    rule: str,
    metric: str,
    began: datetime,
    last_at: datetime,
    severity: str,
    tolerate_hours: float,
    sentences: dict[str, str],
    facts: dict[str, Any],
    now: datetime,
) -> Draft:
    explanation = rows.explanation(sentences, facts, plan.version)
    details = {
        "measured_at": began.isoformat(),
        "severity": severity,
        "previous": "none",
        "value": None,
        "sentence": explanation["sentence"],
        "sentences": sentences,
        "facts": facts,
        "plan_version": plan.version,
        "reason": "silence",
        "decided_at": now.isoformat(),
    }
    return Draft(
        id=None,
        patient_id=plan.patient_id,
        care_team_id=plan.care_team_id,
        rule=rule,
        kind="missing",
        quantity=None,
        direction=None,
        plan_version=plan.version,
        opening_device_id="",
        opening_metric=metric,
        opening_measured_at=began,
        opening_value=None,
        opening_explanation=explanation,
        status="open",
        severity=severity,
        peak_severity=severity,
        threshold=tolerate_hours,
        worst_value=None,
        last_measured_at=last_at,
        breach_count=1,
        due_at=None,
        cleared_at=None,
        resolve_due_at=None,
        evaluated_at=now,
        latest_explanation=explanation,
        state={},
        events=[("opened", json.dumps(details))],
        dirty=True,
        opened_severity=severity,
    )


def _drafts(due: Sequence[Silence], now: datetime) -> list[Draft]:
    """A ``missing.<metric>`` episode per patient silence, one ``gateway.silent`` per patient."""
    out = []
    gateways: dict[str, list[Silence]] = defaultdict(list)
    for s in due:
        if s.gateway_silent(now):
            gateways[s.plan.patient_id].append(s)
            continue
        e = s.expected
        silent = now - s.silent_from
        paused = s.silent_from > s.last_at
        sentences = adherence.sentences(e, s.silent_from, now, s.readings, s.plan.version, paused)
        facts = {
            "metric": e.metric.value,
            "silent_hours": adherence.hours(silent),
            "tolerate_hours": e.tolerate_hours,
            "every_hours": e.every_hours,
            "last_measured_at": s.last_at.isoformat(),
            "silent_from": s.silent_from.isoformat(),
            "run_in_readings": s.readings,
            "gateway_id": s.gateway_id,
        }
        out.append(
            _draft(
                s.plan,
                e.id,
                e.metric.value,
                s.silent_from,
                s.last_at,
                e.severity,
                e.tolerate_hours,
                sentences,
                facts,
                now,
            )
        )
    for group in gateways.values():
        first = min(group, key=lambda s: s.expected.tolerate_hours)
        assert first.contact_at is not None  # gateway_silent needs a contact time
        severity = "urgent" if any(s.expected.severity == "urgent" for s in group) else "warning"
        sentences = every_language(
            functools.partial(
                adherence.gateway_sentence,
                first.gateway_id,
                first.contact_at,
                now,
                [s.expected.metric for s in group],
                first.plan.version,
                first.expected.tolerate_hours,
            )
        )
        facts = {
            "gateway_id": first.gateway_id,
            "last_contact_at": first.contact_at.isoformat(),
            "silent_hours": adherence.hours(now - first.contact_at),
            "tolerate_hours": first.expected.tolerate_hours,
            "metrics": ",".join(sorted(s.expected.metric.value for s in group)),
            "last_measured_at": max(s.last_at for s in group).isoformat(),
        }
        out.append(
            _draft(
                first.plan,
                GATEWAY_SILENT,
                "",
                first.contact_at,
                max(s.last_at for s in group),
                severity,
                first.expected.tolerate_hours,
                sentences,
                facts,
                now,
            )
        )
    return out


# -- the batch half ----------------------------------------------------------------------


def split(states: dict[str, dict[str, Stored]]) -> dict[str, dict[str, Stored]]:
    """Take the active missing-data episodes out of ``states`` (the engine has no rule for
    them); returned by patient and rule. Resolved ones are dropped: nothing to move."""
    taken: dict[str, dict[str, Stored]] = {}
    for patient_id, per_rule in states.items():
        for rule in [r for r in per_rule if is_silence_rule(r)]:
            stored = per_rule.pop(rule)
            if stored.active is not None:
                taken.setdefault(patient_id, {})[rule] = stored
    return taken


def _ended(
    active: Mapping[str, Any], reason: adherence.Ended, facts: Mapping[str, Any], now: datetime
) -> Draft:
    """An active missing-data episode, auto-resolved for ``reason``."""
    sentences = every_language(lambda lang: adherence.ended_sentence(reason, lang))
    d = rows.from_row(active)
    d.status = "auto_resolved"
    d.resolve_due_at = None
    d.dirty = True
    details = {
        **facts,
        "severity": d.severity,
        "reason": reason,
        "sentence": sentences["en"],
        "sentences": sentences,
        "silent_from": active["opening_measured_at"].isoformat(),
        "decided_at": now.isoformat(),
    }
    d.events.append(("auto_resolved", json.dumps(details)))
    return d


def closing(
    silent: Mapping[str, Mapping[str, Stored]],
    points: Mapping[str, Sequence[StoredReading]],
    now: datetime,
) -> list[Draft]:
    """The missing-data episodes the batch's new readings (``points``) end, auto-resolved."""
    out = []
    for patient_id, per_rule in silent.items():
        for rule, stored in per_rule.items():
            assert stored.active is not None  # split keeps active episodes only
            began: datetime = stored.active["opening_measured_at"]
            ends = [
                p
                for p in points.get(patient_id, ())
                if rule == GATEWAY_SILENT  # the gateway is back: any reading of the patient
                or (rule == f"missing.{p.metric.value}" and p.measured_at > began)
            ]
            if not ends:
                continue
            first = min(ends, key=lambda p: p.measured_at)
            backlog = first.measured_at <= stored.active["evaluated_at"]
            facts = {"measured_at": first.measured_at.isoformat(), "readings": len(ends)}
            out.append(_ended(stored.active, "backlog" if backlog else "resumed", facts, now))
    return out
