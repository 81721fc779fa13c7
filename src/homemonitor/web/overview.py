"""What the patient pages show: a team's patients at a glance, one patient's devices, gateways
and readings, and what of their care plan a chart draws.

Plain queries and shaping, no access log: a page calls them after it has checked and logged
the read (:mod:`homemonitor.api.access`), as the API's routes do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from homemonitor.alerts.transitions import ACTIONABLE
from homemonitor.contract.readings import REQUIRED, Metric, Quantity
from homemonitor.rules import kinds
from homemonitor.rules.plan import AverageRule, Plan, ThresholdRule
from homemonitor.storage.database import Conn
from homemonitor.web.charts import LOCAL_ZONE, Bound, Point, Window

#: The metrics a patient overview shows a last reading of, in this order.
METRICS: tuple[Metric, ...] = tuple(Metric)
#: The quantities the patient page draws, in this order (the storage columns).
QUANTITIES: tuple[Quantity, ...] = tuple(Quantity)
#: The most readings a patient page reads for its charts (90 days of four a day, twice over).
MAX_READINGS = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class LastReading:
    """A patient's latest reading of one metric: when, and the values it carried."""

    metric: Metric
    measured_at: datetime
    values: dict[Quantity, float]


@dataclasses.dataclass(frozen=True, slots=True)
class PatientSummary:
    """One line of *My patients*."""

    id: str
    condition: str
    care_contact_id: str | None
    care_contact_name: str | None
    active_alerts: int
    urgent_alerts: int
    last: dict[Metric, LastReading]


async def team_patients(conn: Conn, care_team_id: str, me: str) -> list[PatientSummary]:
    """The team's patients, those ``me`` is care contact of first, then by urgent and active
    alerts: each with their latest reading per metric and their alerts to act on."""
    rows = await conn.fetch(
        "SELECT p.id, p.condition, p.care_contact_id, c.name AS contact_name, "
        "count(a.id) AS active, count(a.id) FILTER (WHERE a.severity = 'urgent') AS urgent "
        "FROM patients p LEFT JOIN clinicians c ON c.id = p.care_contact_id "
        "LEFT JOIN alerts a ON a.patient_id = p.id AND a.status = ANY($2::text[]) "
        "WHERE p.care_team_id = $1 GROUP BY p.id, c.name "
        "ORDER BY (p.care_contact_id = $3) IS TRUE DESC, urgent DESC, active DESC, p.id",
        care_team_id,
        list(ACTIONABLE),
        me,
    )
    last = await last_readings(conn, [r["id"] for r in rows])
    return [
        PatientSummary(
            r["id"],
            r["condition"],
            r["care_contact_id"],
            r["contact_name"],
            r["active"],
            r["urgent"],
            last.get(r["id"], {}),
        )
        for r in rows
    ]


_VALUE_COLUMNS = ", ".join(q.value for q in QUANTITIES)


def _values(row: Any) -> dict[Quantity, float]:
    return {q: float(row[q.value]) for q in QUANTITIES if row[q.value] is not None}


async def last_readings(
    conn: Conn, patient_ids: Sequence[str]
) -> dict[str, dict[Metric, LastReading]]:
    """Each patient's latest reading per metric (one index probe per patient and metric)."""
    rows = await conn.fetch(
        f"SELECT p.id AS patient_id, m.metric, r.measured_at, {_VALUE_COLUMNS} "
        "FROM unnest($1::text[]) AS p(id) CROSS JOIN unnest($2::text[]) AS m(metric) "
        "JOIN LATERAL (SELECT * FROM readings r WHERE r.patient_id = p.id "
        "AND r.metric = m.metric ORDER BY r.measured_at DESC LIMIT 1) r ON true",
        list(patient_ids),
        [m.value for m in METRICS],
    )
    found: dict[str, dict[Metric, LastReading]] = {}
    for r in rows:
        metric = Metric(r["metric"])
        found.setdefault(r["patient_id"], {})[metric] = LastReading(
            metric, r["measured_at"], _values(r)
        )
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceLine:
    """A device bound to the patient now, the gateway it is paired with, and when each was
    last heard from in this patient's readings; ``days_with_readings`` of the last
    ``days`` local days (adherence at a glance)."""

    device_id: str
    kind: str
    model: str
    bound_since: datetime | None
    last_measured_at: datetime | None
    gateway_id: str | None
    gateway_last_received_at: datetime | None
    days_with_readings: int
    days: int


async def devices(conn: Conn, patient_id: str, now: datetime, days: int = 14) -> list[DeviceLine]:
    """The patient's devices bound at ``now``, each with its gateway and last readings.

    A gateway's last contact is the latest reading of *this patient's* it forwarded: a hub
    shared by a household says nothing here about the other patients' readings.
    """
    since = _local_midnight(now) - timedelta(days=days - 1)
    rows = await conn.fetch(
        "SELECT b.device_id, d.kind, d.model, lower(b.valid) AS bound_since, "
        "  (SELECT max(r.measured_at) FROM readings r WHERE r.patient_id = $1 "
        "   AND r.device_id = b.device_id) AS last_measured_at, "
        "  g.gateway_id, "
        "  (SELECT max(r.received_at) FROM readings r WHERE r.patient_id = $1 "
        "   AND r.gateway_id = g.gateway_id) AS gateway_last, "
        "  (SELECT count(DISTINCT (r.measured_at AT TIME ZONE $4)::date) FROM readings r "
        "   WHERE r.patient_id = $1 AND r.device_id = b.device_id "
        "   AND r.measured_at >= $3 AND r.measured_at <= $2) AS days_with "
        "FROM device_bindings b JOIN devices d ON d.id = b.device_id "
        "LEFT JOIN device_pairings g ON g.device_id = b.device_id AND g.valid @> $2::timestamptz "
        "WHERE b.patient_id = $1 AND b.valid @> $2::timestamptz ORDER BY b.device_id",
        patient_id,
        now,
        since,
        LOCAL_ZONE.key,
    )
    return [
        DeviceLine(
            r["device_id"],
            r["kind"],
            r["model"],
            r["bound_since"],
            r["last_measured_at"],
            r["gateway_id"],
            r["gateway_last"],
            r["days_with"],
            days,
        )
        for r in rows
    ]


def _local_midnight(at: datetime) -> datetime:
    local = at.astimezone(LOCAL_ZONE)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


async def series(
    conn: Conn, patient_id: str, start: datetime, end: datetime
) -> dict[Quantity, list[Point]]:
    """The patient's readings of ``[start, end)`` as points per quantity, oldest first.

    A reading the device flagged (``quality``) is a questionable point.
    """
    rows = await conn.fetch(
        f"SELECT measured_at, quality, {_VALUE_COLUMNS} FROM readings "
        "WHERE patient_id = $1 AND measured_at >= $2 AND measured_at < $3 "
        "ORDER BY measured_at LIMIT $4",
        patient_id,
        start,
        end,
        MAX_READINGS,
    )
    points: dict[Quantity, list[Point]] = {}
    for r in rows:
        for quantity, value in _values(r).items():
            points.setdefault(quantity, []).append(
                Point(r["measured_at"], value, bool(r["quality"]))
            )
    return points


def bounds(plan: Plan | None, quantity: Quantity) -> list[Bound]:
    """The fixed bounds ``plan`` sets on ``quantity``: its threshold rules' levels (the
    engine's own, :func:`~homemonitor.rules.kinds.absolute_bounds`) and its averages' bounds.

    Change, baseline and score rules have no fixed line to draw.
    """
    if plan is None:
        return []
    found: list[Bound] = []
    for rule in plan.rules:
        if isinstance(rule, ThresholdRule) and rule.quantity == quantity:
            warning, urgent = kinds.absolute_bounds(rule, plan)
            for level, value in (("warning", warning), ("urgent", urgent)):
                if value is not None:
                    found.append(Bound(value, level, rule.direction))  # type: ignore[arg-type]
        elif isinstance(rule, AverageRule) and quantity in rule.bounds:
            b = rule.bounds[quantity]
            for level, value in (("warning", b.warning), ("urgent", b.urgent)):
                if value is not None:
                    found.append(Bound(value, level, "high"))  # type: ignore[arg-type]
    return sorted(set(found), key=lambda b: (b.direction, b.value))


def window(plan: Plan | None, rule_id: str, at: datetime) -> Window:
    """What the rule ``rule_id`` of ``plan`` looked at for an evaluation point ``at``: the
    history before it the rule reads (:meth:`RuleBase.lookback_hours`), or ``at`` alone."""
    rule = None if plan is None else plan.rule(rule_id)
    hours = 0.0 if rule is None else rule.lookback_hours()
    return Window(at - timedelta(hours=hours), at)


def quantities_of(metric: Metric) -> tuple[Quantity, ...]:
    """The quantities every reading of ``metric`` carries (the overview's columns)."""
    return REQUIRED[metric]
