"""The team's quality follow-up: how many alerts, how fast they were seen, how many were worth
raising, and how well patients measure. Figures per local (Europe/Stockholm) ISO week.

- *Alerts per patient-week*: alerts raised (an ``opened`` or ``reopened`` event; a pending
  breach that a retake withdrew never became one) over the team's patients that had a
  device bound in the week.
- *Time to acknowledge*: from the alert's raising to the first clinician who acknowledged or
  resolved it; median and 90th percentile of those raised in the week, and how many nobody
  has acknowledged yet.
- *Share actionable*: of the alerts a clinician resolved in the period and answered "was it
  actionable?" for (``alerts.actionable``), the share answered yes; per rule and per
  condition template of the plan version that raised them.
- *Adherence*: of the days a patient had a device bound, the share with at least one reading.
  Every bound day counts as expected until a plan says which days are (a measuring schedule).

Aggregates only: no patient id leaves these queries, so the page is not a read of any
patient's data and writes no access-log row.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

from homemonitor.storage.database import Conn
from homemonitor.web.charts import LOCAL_ZONE

#: A template name for plans that use none (their own rules or bounds only).
NO_TEMPLATE = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Week:
    """One local ISO week of the team's figures (``start``: its Monday)."""

    start: date
    alerts: int
    patients: int
    acknowledged: int
    unacknowledged: int
    ack_median_minutes: float | None
    ack_p90_minutes: float | None
    expected_days: int
    measured_days: int

    @property
    def per_patient(self) -> float | None:
        """Alerts per patient-week (None: no patient had a device bound)."""
        return self.alerts / self.patients if self.patients else None

    @property
    def adherence(self) -> float | None:
        """The share of expected days with a reading (None: none expected)."""
        return self.measured_days / self.expected_days if self.expected_days else None


@dataclasses.dataclass(frozen=True, slots=True)
class Share:
    """Of ``answered`` resolved alerts of a rule or template, ``actionable`` said yes."""

    label: str
    answered: int
    actionable: int
    unanswered: int

    @property
    def share(self) -> float | None:
        return self.actionable / self.answered if self.answered else None


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    weeks: list[Week]
    by_rule: list[Share]
    by_template: list[Share]


def first_week(now: datetime, weeks: int) -> date:
    """The Monday ``weeks - 1`` weeks before the local week of ``now``."""
    today = now.astimezone(LOCAL_ZONE).date()
    return today - timedelta(days=today.weekday(), weeks=weeks - 1)


# The local days of the period ($2 the first Monday, $3 the last day), each with its
# bounds as instants; the team is $1 and the zone $4.
_DAYS = (
    "days AS (SELECT d::date AS day, "
    "(d::date::timestamp AT TIME ZONE $4) AS day_start, "
    "((d::date + 1)::timestamp AT TIME ZONE $4) AS day_end, "
    "date_trunc('week', d)::date AS week "
    "FROM generate_series($2::date, $3::date, interval '1 day') AS d)"
)

_ALERTS = (
    "raised AS (SELECT a.id, min(e.at) AS at FROM alerts a "
    "JOIN alert_events e ON e.alert_id = a.id AND e.kind IN ('opened', 'reopened') "
    "WHERE a.care_team_id = $1 GROUP BY a.id), "
    "seen AS (SELECT r.id, r.at, "
    "(SELECT min(e.at) FROM alert_events e WHERE e.alert_id = r.id AND e.actor = 'clinician' "
    "AND e.kind IN ('acknowledged', 'resolved')) AS seen_at FROM raised r "
    "WHERE r.at >= ($2::date::timestamp AT TIME ZONE $4) "
    "AND r.at < (($3::date + 1)::timestamp AT TIME ZONE $4))"
)


async def figures(conn: Conn, care_team_id: str, now: datetime, weeks: int = 12) -> Figures:
    """The follow-up of ``care_team_id`` for the ``weeks`` local weeks up to ``now``'s."""
    start = first_week(now, weeks)
    end = now.astimezone(LOCAL_ZONE).date()
    args = (care_team_id, start, end, LOCAL_ZONE.key)
    alert_rows = await conn.fetch(
        f"WITH {_ALERTS} SELECT "
        "date_trunc('week', s.at AT TIME ZONE $4)::date AS week, count(*) AS alerts, "
        "count(s.seen_at) AS acknowledged, count(*) - count(s.seen_at) AS unacknowledged, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.seen_at - s.at)) "
        "  FILTER (WHERE s.seen_at IS NOT NULL) / 60 AS median, "
        "percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM s.seen_at - s.at)) "
        "  FILTER (WHERE s.seen_at IS NOT NULL) / 60 AS p90 "
        "FROM seen s GROUP BY week",
        *args,
    )
    day_rows = await conn.fetch(
        f"WITH {_DAYS}, expected AS ("
        "SELECT p.id, days.* FROM patients p CROSS JOIN days WHERE p.care_team_id = $1 "
        "AND EXISTS (SELECT 1 FROM device_bindings b WHERE b.patient_id = p.id "
        "AND b.valid && tstzrange(days.day_start, days.day_end))) "
        "SELECT week, count(DISTINCT id) AS patients, count(*) AS expected, "
        "count(*) FILTER (WHERE EXISTS (SELECT 1 FROM readings r WHERE r.patient_id = e.id "
        "AND r.measured_at >= e.day_start AND r.measured_at < e.day_end)) AS measured "
        "FROM expected e GROUP BY week",
        *args,
    )
    by_alerts = {r["week"]: r for r in alert_rows}
    by_days = {r["week"]: r for r in day_rows}
    week_list = []
    for i in range(weeks):
        monday = start + timedelta(weeks=i)
        a, d = by_alerts.get(monday), by_days.get(monday)
        week_list.append(
            Week(
                monday,
                alerts=a["alerts"] if a else 0,
                patients=d["patients"] if d else 0,
                acknowledged=a["acknowledged"] if a else 0,
                unacknowledged=a["unacknowledged"] if a else 0,
                ack_median_minutes=a["median"] if a else None,
                ack_p90_minutes=a["p90"] if a else None,
                expected_days=d["expected"] if d else 0,
                measured_days=d["measured"] if d else 0,
            )
        )
    shares = await conn.fetch(
        "SELECT a.rule, coalesce(c.plan ->> 'template', $4) AS template, a.actionable "
        "FROM alerts a LEFT JOIN care_plans c "
        "ON c.patient_id = a.patient_id AND c.version = a.plan_version "
        "WHERE a.care_team_id = $1 AND a.status = 'resolved' "
        "AND a.resolved_at >= ($2::date::timestamp AT TIME ZONE $3) ",
        care_team_id,
        start,
        LOCAL_ZONE.key,
        NO_TEMPLATE,
    )
    return Figures(
        week_list,
        _shares([(r["rule"], r["actionable"]) for r in shares]),
        _shares([(r["template"], r["actionable"]) for r in shares]),
    )


def _shares(answers: list[tuple[str, bool | None]]) -> list[Share]:
    """Per label: answered, said actionable, not answered; labels in order.

    >>> a, b = _shares([("a", True), ("a", False), ("b", None), ("a", None)])
    >>> (a.label, a.answered, a.actionable, a.unanswered, a.share), (b.label, b.share)
    (('a', 2, 1, 1, 0.5), ('b', None))
    """
    counts: dict[str, list[int]] = {}
    for label, answer in answers:
        c = counts.setdefault(label, [0, 0, 0])
        if answer is None:
            c[2] += 1
        else:
            c[0] += 1
            c[1] += answer
    return [Share(label, *c) for label, c in sorted(counts.items())]
