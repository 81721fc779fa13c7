"""Who a new alert goes to, and when nobody acknowledging it starts the escalation chain.

A care team's registry entry says when it is staffed (``working_hours`` in
Europe/Stockholm, closed on Swedish public holidays and the team's own ``holidays``), who
takes over while it is closed (``out_of_hours``: another care team, the on-call or mobile
team) and, per severity, its escalation steps (docs/alerts.md). Three levels, in order:

- ``care_contact``: the patient's fixed care contact (``patients.care_contact_id``);
- ``team``: every clinician of the patient's care team;
- ``out_of_hours``: every clinician of the team's out-of-hours route.

Whatever the level, outside the team's working hours a level inside the team
(``care_contact``, ``team``) becomes ``out_of_hours`` when the team has such a route: at
night nobody at the vårdcentral reads it. Escalation deadlines are clock minutes and are
never shifted by working hours (an urgent alert does not wait for Monday); the route
follows the clock instead.

:func:`on_write` is the worker's hook (:func:`homemonitor.alerts.episodes._write`): for a
batch that opened alerts (or made one worse) it takes the teams' routing from the
registry cache (loaded with the plans, reloaded with the registry; a patient the copy
lacks: ONE query), assigns each new alert to the care contact, writes the "to" of its
opened event, and schedules the first escalation step in the same transaction. A batch
that opened nothing costs nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from homemonitor.registry.description import WEEKDAYS, EscalationIn, WorkingHoursIn
from homemonitor.scheduler import schedule_many
from homemonitor.storage.database import Conn

if TYPE_CHECKING:  # the registry cache holds a Routing, and rows reads the cache
    from homemonitor.alerts.rows import Draft

STOCKHOLM = ZoneInfo("Europe/Stockholm")
Level = Literal["care_contact", "team", "out_of_hours"]
#: The levels in escalation order: a step never addresses a lower level than the last.
LEVELS: tuple[Level, ...] = ("care_contact", "team", "out_of_hours")
#: The scheduler's job of one escalation step (:mod:`homemonitor.alerts.escalation`).
ESCALATE_JOB = "alerts.escalate"
_SEVERITY = {"warning": 1, "urgent": 2}


def easter_sunday(year: int) -> date:
    """Easter Sunday of ``year`` (Gregorian; the anonymous Meeus/Jones/Butcher algorithm).

    >>> easter_sunday(2026), easter_sunday(2027)
    (datetime.date(2026, 4, 5), datetime.date(2027, 3, 28))
    """
    a, (b, c) = year % 19, divmod(year, 100)
    d, e = divmod(b, 4)
    g = (b - (b + 8) // 25 + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    weekday = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * weekday) // 451
    month, day = divmod(h + weekday - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _saturday_between(start: date) -> date:
    """The Saturday of the seven days from ``start``."""
    return start + timedelta(days=(5 - start.weekday()) % 7)


@functools.cache
def swedish_holidays(year: int) -> frozenset[date]:
    """The days a Swedish vårdcentral is closed in ``year``, weekends aside.

    The public holidays of lag (1989:253) om allmänna helgdagar, and the three eves that
    are closed days in practice (midsommarafton, julafton, nyårsafton). National Day and
    every holiday on a weekday count; those on a weekend change nothing.

    >>> sorted(d.isoformat() for d in swedish_holidays(2026))[:4]
    ['2026-01-01', '2026-01-06', '2026-04-03', '2026-04-05']
    """
    easter = easter_sunday(year)
    return frozenset(
        {
            date(year, 1, 1),  # nyårsdagen
            date(year, 1, 6),  # trettondedag jul
            easter - timedelta(days=2),  # långfredagen
            easter,  # påskdagen
            easter + timedelta(days=1),  # annandag påsk
            date(year, 5, 1),  # första maj
            easter + timedelta(days=39),  # Kristi himmelsfärds dag
            easter + timedelta(days=49),  # pingstdagen
            date(year, 6, 6),  # Sveriges nationaldag
            _saturday_between(date(year, 6, 20)) - timedelta(days=1),  # midsommarafton
            _saturday_between(date(year, 6, 20)),  # midsommardagen
            _saturday_between(date(year, 10, 31)),  # alla helgons dag
            date(year, 12, 24),  # julafton
            date(year, 12, 25),  # juldagen
            date(year, 12, 26),  # annandag jul
            date(year, 12, 31),  # nyårsafton
        }
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Team:
    """A care team's routing, as stored by ``registry apply``."""

    id: str
    working_hours: WorkingHoursIn | None = None
    holidays: frozenset[date] = frozenset()
    out_of_hours: str | None = None
    escalation: EscalationIn = dataclasses.field(default_factory=EscalationIn)
    #: Its clinicians (not the ops role): who "team" and "out_of_hours" address.
    clinicians: tuple[str, ...] = ()

    def staffed(self, at: datetime) -> bool:
        """Whether the team works at ``at`` (always, without working hours).

        >>> from datetime import UTC
        >>> hours = WorkingHoursIn(days=["mon"], start="08:00", end="17:00")
        >>> t = Team("vc", hours)
        >>> [t.staffed(datetime(2026, 6, 1, h, tzinfo=UTC)) for h in (5, 6, 15)]
        [False, True, False]
        """
        if self.working_hours is None:
            return True
        local = at.astimezone(STOCKHOLM)
        day = local.date()
        if day in self.holidays or day in swedish_holidays(day.year):
            return False
        if WEEKDAYS[local.weekday()] not in self.working_hours.days:
            return False
        start, end = self.working_hours.span()
        now = local.time().replace(tzinfo=None)
        return start <= now and (end is None or now < end)


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Who is addressed: the "to" of an opened, escalated or assigned event (DESIGN.md)."""

    level: Level
    team: str
    clinicians: tuple[str, ...]

    def to(self) -> dict[str, Any]:
        return {"level": self.level, "clinicians": list(self.clinicians), "team": self.team}


@dataclasses.dataclass(frozen=True, slots=True)
class Routing:
    """What one :func:`load` read: the teams involved, and each patient's team and contact."""

    teams: Mapping[str, Team]
    homes: Mapping[str, tuple[str, str | None]]

    def home(self, patient_id: str) -> Team:
        """The patient's care team."""
        return self.teams[self.homes[patient_id][0]]

    def route(self, level: Level, patient_id: str, at: datetime) -> Route | None:
        """Who ``level`` of ``patient_id``'s alert is at ``at``; None: nobody (no route).

        A patient without a care contact is their team's from the start. Outside working
        hours the team's levels become its out-of-hours route, if it has one.
        """
        home = self.home(patient_id)
        contact = self.homes[patient_id][1]
        if level == "care_contact" and contact is None:
            level = "team"
        if level != "out_of_hours" and not home.staffed(at) and home.out_of_hours is not None:
            level = "out_of_hours"
        if level == "out_of_hours":
            other = self.teams.get(home.out_of_hours or "")
            return None if other is None else Route(level, other.id, other.clinicians)
        if level == "team":
            return Route(level, home.id, home.clinicians)
        assert contact is not None
        return Route(level, home.id, (contact,))


_LOAD = """
WITH home AS (
    SELECT id AS patient_id, care_team_id, care_contact_id FROM patients
    WHERE $1::text[] IS NULL OR id = ANY($1::text[])
), involved AS (
    SELECT care_team_id AS id FROM home
    UNION SELECT t.out_of_hours FROM care_teams t JOIN home h ON h.care_team_id = t.id
)
SELECT t.id, t.working_hours::text AS working_hours, t.holidays, t.out_of_hours,
       t.escalation::text AS escalation,
       coalesce(array_agg(c.id ORDER BY c.id) FILTER (WHERE c.id IS NOT NULL), '{}') AS clinicians,
       (SELECT jsonb_object_agg(h.patient_id, h.care_contact_id) FROM home h
        WHERE h.care_team_id = t.id)::text AS contacts
FROM care_teams t
LEFT JOIN clinicians c ON c.care_team_id = t.id AND c.role <> 'ops'
WHERE t.id IN (SELECT id FROM involved)
GROUP BY t.id
"""


async def load(conn: Conn, patient_ids: Sequence[str] | None = None) -> Routing:
    """The routing of these patients' teams and their out-of-hours teams: ONE query.

    ``None``: of every patient (the registry cache's copy, :attr:`Plans.routing
    <homemonitor.registry.cache.Plans.routing>`).
    """
    teams: dict[str, Team] = {}
    homes: dict[str, tuple[str, str | None]] = {}
    ids = None if patient_ids is None else sorted(set(patient_ids))
    for r in await conn.fetch(_LOAD, ids):
        hours = r["working_hours"]
        teams[r["id"]] = Team(
            r["id"],
            None if hours is None else WorkingHoursIn.model_validate_json(hours),
            frozenset(r["holidays"]),
            r["out_of_hours"],
            EscalationIn.model_validate_json(r["escalation"]),
            tuple(r["clinicians"]),
        )
        for patient_id, contact in json.loads(r["contacts"] or "{}").items():
            homes[patient_id] = (r["id"], contact)
    return Routing(teams, homes)


def step_key(alert_id: int, chain: int, step: int) -> str:
    """The idempotency key of one escalation step: once per alert, chain and step."""
    return f"alert:{alert_id}:chain:{chain}:step:{step}"


def first_step(
    team: Team, severity: str, level: str, started: datetime
) -> tuple[datetime, int] | None:
    """When the first step of a chain started at ``started`` is due, and its number.

    None when the policy has no step for ``severity``, or the chain starts at the top
    (out of hours: nobody is above).
    """
    steps = team.escalation.steps(severity)
    if not steps or level == "out_of_hours":
        return None
    return started + timedelta(minutes=steps[0].after_minutes), 1


_ROUTE = """
UPDATE alerts AS a SET assigned_to = u.contact, routed_to = u.routed, escalation_level = u.level,
    escalation_chain = 1
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, contact, routed, level)
WHERE a.id = u.id
"""
#: Open alerts made worse: a new chain (the worse severity's policy, from now) and, made
#: urgent, no more snooze. Returns whether each was snoozed, from before this statement.
_RECHAIN = """
WITH before AS (
    SELECT id, snoozed_until FROM alerts WHERE id = ANY($1::bigint[]) AND status = 'open'
)
UPDATE alerts AS a SET escalation_chain = a.escalation_chain + 1,
    snoozed_until = CASE WHEN u.severity = 'urgent' THEN NULL ELSE a.snoozed_until END
FROM unnest($1::bigint[], $2::text[]) AS u(id, severity) JOIN before b ON b.id = u.id
WHERE a.id = u.id
RETURNING a.id, a.escalation_chain, a.escalation_level, b.snoozed_until
"""


def _worse(details: str) -> bool:
    d = json.loads(details)
    return _SEVERITY.get(d.get("severity"), 0) > _SEVERITY.get(d.get("previous"), 0)


async def on_write(
    conn: Conn, drafts: Sequence[Draft], now: datetime, cached: Routing | None = None
) -> None:
    """Route the batch's new alerts and start their escalation chains; see the module.

    ``drafts`` are the batch's :class:`~homemonitor.alerts.rows.Draft` rows, with ids,
    before their events are written: the "to" goes into each opened event's details, a
    snooze ended by urgency becomes an event of the batch. ``cached``: the registry
    cache's routing (the worker's; reloaded with the registry), else ONE query.
    """
    opened: list[Draft] = []
    worse: list[Draft] = []
    for d in drafts:
        if any(k in ("opened", "reopened") for k, _ in d.events):
            opened.append(d)
        elif d.status == "open" and any(k == "severity_changed" and _worse(x) for k, x in d.events):
            worse.append(d)
    if not opened and not worse:
        return
    patients = [d.patient_id for d in (*opened, *worse)]
    if cached is not None and all(p in cached.homes for p in patients):
        routing = cached
    else:
        routing = await load(conn, patients)
    rows: list[tuple[int | None, str | None, str | None, Level]] = []
    jobs: list[tuple[str, datetime, dict[str, Any]]] = []
    for d in opened:
        home = routing.home(d.patient_id)
        route = routing.route("care_contact", d.patient_id, now)
        if route is None:  # an out-of-hours route to a team no longer described
            route = Route("team", home.id, home.clinicians)
        d.events = [
            (
                k,
                json.dumps({**json.loads(x), "to": route.to()})
                if k in ("opened", "reopened")
                else x,
            )
            for k, x in d.events
        ]
        routed = route.team if route.level == "out_of_hours" else None
        rows.append((d.id, routing.homes[d.patient_id][1], routed, route.level))
        due = first_step(home, d.severity, route.level, now)
        if due is not None and d.status == "open":
            jobs.append(_job(d.id, 1, d.severity, due[0]))
    if rows:
        await conn.execute(_ROUTE, *map(list, zip(*rows, strict=True)))
    if worse:
        by_id = {d.id: d for d in worse}
        for r in await conn.fetch(_RECHAIN, list(by_id), [d.severity for d in worse]):
            d = by_id[r["id"]]
            if r["snoozed_until"] is not None and d.severity == "urgent":
                ended = {"until": r["snoozed_until"].isoformat(), "reason": "urgent"}
                d.events.append(("snooze_ended", json.dumps(ended)))
            level = r["escalation_level"] or "care_contact"
            due = first_step(routing.home(d.patient_id), d.severity, level, now)
            if due is not None:
                jobs.append(_job(d.id, r["escalation_chain"], d.severity, due[0]))
    if jobs:
        await schedule_many(conn, ESCALATE_JOB, jobs)


def _job(
    alert_id: int | None, chain: int, severity: str, due: datetime
) -> tuple[str, datetime, dict[str, Any]]:
    """Step 1 of a chain, as :func:`homemonitor.scheduler.schedule_many` takes it."""
    assert alert_id is not None  # the batch drew the ids before routing
    payload = {"alert_id": alert_id, "chain": chain, "step": 1, "severity": severity}
    return step_key(alert_id, chain, 1), due, payload


__all__ = [
    "ESCALATE_JOB",
    "LEVELS",
    "Route",
    "Routing",
    "Team",
    "load",
    "on_write",
    "step_key",
    "swedish_holidays",
]
