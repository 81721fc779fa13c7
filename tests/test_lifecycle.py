"""An alert reaches a person: routing at creation, escalation on the clock, clinicians' actions.

Against real PostgreSQL (and Mosquitto where a reading flows through the worker); time is
the scheduler's ManualClock, so each deadline is checked to the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from homemonitor import jobs, registry
from homemonitor.api import build_app
from homemonitor.api.auth import issue_token
from homemonitor.contract.protocol import readings_topic
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.embedded import PrivateMosquitto
from homemonitor.errors import RegistryError
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.metrics import Metrics
from homemonitor.registry import RegistryCache
from homemonitor.runtime import Health
from homemonitor.scheduler import ManualClock, Scheduler
from homemonitor.storage.transaction import commit
from tests.conftest import REGISTRY, RunningService, bp, publisher, settings_for, wait_until

STOCKHOLM = ZoneInfo("Europe/Stockholm")
#: vc-a's policy: urgent → the team after 15 min, the on-call team after 30; warning → the
#: team after 30 min. vc-a works weekdays 08-17 and is closed on 2026-06-02 besides the
#: public holidays; out of hours its alerts go to jour-ost.
POLICY: dict[str, Any] = {
    "urgent": [{"after_minutes": 15, "to": "team"}, {"after_minutes": 30, "to": "out_of_hours"}],
    "warning": [{"after_minutes": 30, "to": "team"}],
}


def _described(*, working_hours: bool = True) -> dict[str, Any]:
    described = copy.deepcopy(REGISTRY)
    team_a = described["care_teams"][0]
    team_a["clinicians"].append({"id": "cl-a2", "name": "Nurse A2", "email": "a2@example.org"})
    team_a["clinicians"].append({"id": "ops-a", "name": "Ops", "role": "ops"})
    if working_hours:
        team_a["working_hours"] = {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "08:00",
            "end": "17:00",
        }
        team_a["holidays"] = ["2026-06-02"]
    team_a["out_of_hours"] = "jour-ost"
    team_a["escalation"] = POLICY
    described["patients"][2]["care_plan"] = {  # p-3: the same systolic bounds as p-1
        "version": 1,
        "thresholds": {"systolic": {"high": {"warning": 160, "urgent": 180}}},
    }
    described["care_teams"].append(
        {"id": "jour-ost", "name": "Jourcentral Öst", "clinicians": [{"id": "cl-j1", "name": "J"}]}
    )
    return described


async def _cache(db: asyncpg.Connection, described: dict[str, Any]) -> RegistryCache:
    await registry.apply(db, registry.parse(described))
    cache = RegistryCache()
    await cache.load(db)
    return cache


def _systolic(value: float, at: datetime, patient: str = "p-1") -> Batch:
    """One blood-pressure reading of the patient's cuff, measured and received at ``at``."""
    device = {"p-1": "cuff-1", "p-3": "cuff-3"}[patient]
    values = {Quantity.SYSTOLIC: value, Quantity.DIASTOLIC: 90.0}
    reading = Reading(device, Metric.BLOOD_PRESSURE, at, values)
    message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", at, 0.0)
    return Batch([message], [Candidate(reading, patient, "gw-1", at, 0)])


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=STOCKHOLM)


async def _events(db: asyncpg.Connection, alert_id: int) -> list[tuple[str, str, Any]]:
    rows = await db.fetch(
        "SELECT kind, actor, details::text AS d FROM alert_events WHERE alert_id = $1 ORDER BY id",
        alert_id,
    )
    return [(r["kind"], r["actor"], json.loads(r["d"])) for r in rows]


def _scheduler(pool: asyncpg.Pool, clock: ManualClock) -> Scheduler:
    return Scheduler(pool, Metrics(), handlers=jobs.service_handlers(), clock=clock)


@pytest.fixture
async def api(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app over the test's database (in process; its routes as the service has them)."""
    app = build_app(pools[0], Metrics(), Health())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hm") as http:
        yield http


async def _token(db: asyncpg.Connection, clinician: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await issue_token(db, clinician)}"}


@pytest.mark.parametrize(
    ("at", "level", "team", "clinicians"),
    [
        ("2026-06-03T10:00", "care_contact", "vc-a", ["cl-a1"]),  # a Wednesday, working hours
        ("2026-06-03T07:59", "out_of_hours", "jour-ost", ["cl-j1"]),  # before opening
        ("2026-06-03T17:00", "out_of_hours", "jour-ost", ["cl-j1"]),  # closing time
        ("2026-06-06T10:00", "out_of_hours", "jour-ost", ["cl-j1"]),  # a Saturday (and 6 June)
        ("2026-06-02T10:00", "out_of_hours", "jour-ost", ["cl-j1"]),  # the team's own holiday
        ("2026-06-19T10:00", "out_of_hours", "jour-ost", ["cl-j1"]),  # midsommarafton, a Friday
        ("2026-05-14T10:00", "out_of_hours", "jour-ost", ["cl-j1"]),  # Kristi himmelsfärd
    ],
)
async def test_a_new_alert_goes_to_the_care_contact_in_hours_and_to_the_on_call_team_outside(
    db: asyncpg.Connection,
    api: httpx.AsyncClient,
    at: str,
    level: str,
    team: str,
    clinicians: list[str],
) -> None:
    """Stockholm working hours and holidays decide: care contact, or the out-of-hours route."""
    cache = await _cache(db, _described())
    when = _local(at)
    await commit(db, _systolic(185, when), cache.plans, when)
    alert = await db.fetchrow("SELECT id, assigned_to, routed_to, escalation_level FROM alerts")
    events = await _events(db, alert["id"])
    on_call = await api.get("/api/v1/alerts", headers=await _token(db, "cl-j1"))
    home = await api.get("/api/v1/alerts", headers=await _token(db, "cl-a2"))
    routed = team if level == "out_of_hours" else None
    assert ("cl-a1", routed, level) == (
        alert["assigned_to"],
        alert["routed_to"],
        alert["escalation_level"],
    )
    assert [("opened", "rule")] == [(k, a) for k, a, _ in events]
    assert {"level": level, "clinicians": clinicians, "team": team} == events[0][2]["to"]
    assert [alert["id"]] == [a["id"] for a in home.json()]  # the whole team sees it
    assert ([alert["id"]] if routed else []) == [a["id"] for a in on_call.json()]


async def test_an_urgent_alert_escalates_at_the_policy_deadlines_until_acknowledged(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, pools: Any
) -> None:
    """Through the worker: 15 min unacknowledged → the team, to the second; acknowledged →
    the 30 min step to the on-call team does nothing."""
    await _cache(db, _described(working_hours=False))  # staffed around the clock
    start = datetime.now(UTC)
    service = RunningService(settings_for(dsn, broker), clock=ManualClock(start))
    await service.start()
    try:
        async with publisher(broker) as gw:
            await gw.publish(readings_topic("gw-1"), bp("cuff-1", 190, 100, start), qos=1)
        alert_id = await wait_until(
            lambda: db.fetchval("SELECT id FROM alerts"), lambda i: i is not None
        )
        job = await db.fetchrow(
            "SELECT key, due_at FROM scheduled_jobs WHERE name = $1", "alerts.escalate"
        )
        opened_at = await db.fetchval("SELECT opened_at FROM alerts")
        clock = ManualClock(start)
        scheduler = _scheduler(pools[0], clock)
        clock.set(job["due_at"] - timedelta(seconds=1))
        early = await scheduler.run_due()
        clock.set(job["due_at"])
        on_time = await scheduler.run_due()
        after_first = await _events(db, alert_id)
        async with httpx.AsyncClient(base_url=service.url) as http:
            acked = await http.post(
                f"/api/v1/alerts/{alert_id}/acknowledge", headers=await _token(db, "cl-a2")
            )
        clock.set(job["due_at"] + timedelta(minutes=15))
        second = await scheduler.run_due()
        final = await _events(db, alert_id)
        left = await db.fetch(
            "SELECT key, status FROM scheduled_jobs WHERE name = 'alerts.escalate' ORDER BY id"
        )
    finally:
        await service.stop()
    assert f"alert:{alert_id}:chain:1:step:1" == job["key"]
    assert abs((job["due_at"] - opened_at) - timedelta(minutes=15)) < timedelta(seconds=2)
    assert (0, 1, 200, 1) == (early, on_time, acked.status_code, second)
    assert ["opened", "escalated"] == [k for k, _, _ in after_first]
    assert ("scheduler", {"level": "team", "clinicians": ["cl-a1", "cl-a2"], "team": "vc-a"}) == (
        after_first[1][1],
        after_first[1][2]["to"],
    )
    assert ["opened", "escalated", "acknowledged"] == [k for k, _, _ in final]
    assert [
        (f"alert:{alert_id}:chain:1:step:1", "done"),
        (f"alert:{alert_id}:chain:1:step:2", "done"),
    ] == [tuple(r) for r in left]


async def test_two_scheduler_processes_fire_each_escalation_step_once(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Two schedulers on two pools, three urgent alerts: every step one escalated event."""
    described = _described()
    del described["patients"][2]["care_contact"]
    cache = await _cache(db, described)
    opened = _local("2026-06-03T10:00")
    await commit(db, _systolic(190, opened, "p-1"), cache.plans, opened)
    await commit(db, _systolic(195, opened, "p-3"), cache.plans, opened)
    clock = ManualClock(opened)
    schedulers = [_scheduler(pool, clock) for pool in pools]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    query = (
        "SELECT a.patient_id, e.details->'to'->>'level' AS level, e.details->>'step' AS step "
        "FROM alert_events e JOIN alerts a ON a.id = e.alert_id WHERE e.kind = 'escalated' "
        "ORDER BY a.patient_id, e.id"
    )
    try:
        for minutes in (10, 15, 20, 30, 45):
            clock.set(opened + timedelta(minutes=minutes))
            for s in schedulers:
                s.wake()
            await wait_until(
                lambda: db.fetchval(
                    "SELECT count(*) FROM scheduled_jobs WHERE status = 'scheduled' "
                    "AND due_at <= $1",
                    clock.now(),
                ),
                lambda n: n == 0,
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    found = [tuple(r) for r in await db.fetch(query)]
    # p-3 has no care contact: it starts at the team, so its 15 min step has nothing to add
    assert [
        ("p-1", "team", "1"),
        ("p-1", "out_of_hours", "2"),
        ("p-3", "out_of_hours", "2"),
    ] == found
    runs = await db.fetchval("SELECT sum(runs) FROM scheduled_jobs WHERE name = 'alerts.escalate'")
    assert 4 == runs  # two steps of two alerts, each claimed once


async def test_an_urgent_alert_cannot_be_snoozed_and_a_snoozed_warning_escalates_after_it(
    db: asyncpg.Connection, api: httpx.AsyncClient, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Snoozing urgent: 409 saying to acknowledge; a warning's 30 min step waits for the
    snooze's end, which is an event of the scheduler."""
    cache = await _cache(db, _described(working_hours=False))
    now = datetime.now(UTC)
    await commit(db, _systolic(185, now, "p-1"), cache.plans, now)
    urgent = await db.fetchval("SELECT id FROM alerts WHERE patient_id = 'p-1'")
    headers = await _token(db, "cl-a1")
    refused = await api.post(
        f"/api/v1/alerts/{urgent}/snooze", json={"minutes": 30, "reason": "later"}, headers=headers
    )
    too_long = await api.post(
        f"/api/v1/alerts/{urgent}/snooze", json={"minutes": 1441, "reason": "x"}, headers=headers
    )
    await commit(db, _systolic(165, now, "p-3"), cache.plans, now)
    warning = await db.fetchval("SELECT id FROM alerts WHERE patient_id = 'p-3'")
    snoozed = await api.post(
        f"/api/v1/alerts/{warning}/snooze",
        json={"minutes": 60, "reason": "patient calls back after lunch"},
        headers=headers,
    )
    until = datetime.fromisoformat(snoozed.json()["snoozed_until"])
    clock = ManualClock(now)
    scheduler = _scheduler(pools[0], clock)
    clock.set(now + timedelta(minutes=31))
    await scheduler.run_due()
    during = [k for k, _, _ in await _events(db, warning)]
    held = await db.fetchrow(
        "SELECT status, due_at FROM scheduled_jobs WHERE key = $1",
        f"alert:{warning}:chain:1:step:1",
    )
    clock.set(until)
    await scheduler.run_due()
    after = await _events(db, warning)
    assert (409, {"detail": "an urgent alert cannot be snoozed: acknowledge it instead"}) == (
        refused.status_code,
        refused.json(),
    )
    assert 422 == too_long.status_code
    assert 200 == snoozed.status_code
    assert abs(until - now - timedelta(minutes=60)) < timedelta(seconds=5)
    assert (("scheduled", until), ["opened", "snoozed"]) == (tuple(held), during)
    assert ["opened", "snoozed", "snooze_ended", "escalated"] == [k for k, _, _ in after]
    assert ("scheduler", "expired") == (after[2][1], after[2][2]["reason"])
    assert None is await db.fetchval("SELECT snoozed_until FROM alerts WHERE id = $1", warning)


async def test_every_action_is_in_the_alerts_history_with_who_and_when(
    db: asyncpg.Connection, api: httpx.AsyncClient
) -> None:
    """Comment, assign, snooze, acknowledge, resolve (actionable: no): each an event with
    the clinician and time, each access-logged; assigning outside the team is 409."""
    cache = await _cache(db, _described(working_hours=False))
    now = datetime.now(UTC)
    await commit(db, _systolic(165, now), cache.plans, now)
    alert = await db.fetchval("SELECT id FROM alerts")
    a1, a2 = await _token(db, "cl-a1"), await _token(db, "cl-a2")
    base = f"/api/v1/alerts/{alert}"
    answers = [
        await api.post(f"{base}/comment", json={"text": "Ringt, inget svar."}, headers=a1),
        await api.post(f"{base}/assign", json={"clinician_id": "cl-a2"}, headers=a1),
        await api.post(f"{base}/assign", json={"clinician_id": "cl-b1"}, headers=a1),
        await api.post(f"{base}/snooze", json={"minutes": 90, "reason": "ringer igen"}, headers=a2),
        await api.post(f"{base}/acknowledge", headers=a2),
        await api.post(
            f"{base}/resolve",
            json={"note": "Mätfel, ny mätning normal.", "actionable": False},
            headers=a2,
        ),
    ]
    history = await api.get(f"{base}/events", headers=a1)
    foreign = await api.get(f"{base}/events", headers=await _token(db, "cl-b1"))
    log = await db.fetch(
        "SELECT clinician_id, action, outcome FROM access_log WHERE requested_id = $1 ORDER BY id",
        str(alert),
    )
    assert [200, 200, 409, 200, 200, 200] == [r.status_code for r in answers]
    assert "cl-b1 is not a clinician of the alert's care team" == answers[2].json()["detail"]
    assert ("cl-a2", False) == (answers[5].json()["assigned_to"], answers[5].json()["actionable"])
    events = history.json()
    assert [
        ("opened", "rule", None),
        ("commented", "clinician", "cl-a1"),
        ("assigned", "clinician", "cl-a1"),
        ("snoozed", "clinician", "cl-a2"),
        ("acknowledged", "clinician", "cl-a2"),
        ("resolved", "clinician", "cl-a2"),
    ] == [(e["kind"], e["actor"], e["clinician_id"]) for e in events]
    assert all(now - timedelta(minutes=1) < datetime.fromisoformat(e["at"]) for e in events)
    assert "Ringt, inget svar." == events[1]["details"]["text"]
    assert {"level": "team", "clinicians": ["cl-a2"], "team": "vc-a"} == events[2]["details"]["to"]
    assert ("ringer igen", 90) == (events[3]["details"]["reason"], events[3]["details"]["minutes"])
    assert False is events[5]["details"]["actionable"]
    assert 404 == foreign.status_code
    assert [
        ("cl-a1", "comment_alert", "allowed"),
        ("cl-a1", "assign_alert", "allowed"),
        ("cl-a2", "snooze_alert", "allowed"),
        ("cl-a2", "acknowledge_alert", "allowed"),
        ("cl-a2", "resolve_alert", "allowed"),
        ("cl-a1", "view_alert_events", "allowed"),
        ("cl-b1", "view_alert_events", "denied"),
    ] == [tuple(r) for r in log]


def test_the_registry_refuses_routing_that_cannot_work() -> None:
    """An unknown on-call team, steps to an absent route, unquoted times: named problems."""
    described = _described()
    described["care_teams"][0]["out_of_hours"] = "jour-nowhere"
    described["care_teams"][1]["escalation"] = {
        "urgent": [{"after_minutes": 5, "to": "out_of_hours"}]
    }
    with pytest.raises(RegistryError) as refused:
        registry.parse(described)
    unquoted = _described()
    unquoted["care_teams"][0]["working_hours"]["start"] = 480  # YAML's reading of 08:00
    with pytest.raises(RegistryError) as wrong_time:
        registry.parse(unquoted)
    assert [
        "care team vc-a: out_of_hours 'jour-nowhere' is not described",
        "care team vc-b: escalation to out_of_hours, but it has none",
    ] == [line.strip() for line in str(refused.value).splitlines()[1:]]
    assert "care_teams.0.working_hours.start" in str(wrong_time.value)


@contextlib.asynccontextmanager
async def _worker(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, described: dict[str, Any]
) -> AsyncIterator[RunningService]:
    """The service (worker, API) on the test's broker and database, ``described`` applied."""
    await _cache(db, described)
    service = RunningService(settings_for(dsn, broker))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def _publish(broker: PrivateMosquitto, systolic: float, at: datetime) -> None:
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), bp("cuff-1", systolic, 90, at), qos=1)


async def _due(db: asyncpg.Connection, alert_id: int, chain: int, step: int) -> datetime:
    """When that escalation step is due (it must have been scheduled)."""
    due: datetime | None = await db.fetchval(
        "SELECT due_at FROM scheduled_jobs WHERE key = $1",
        f"alert:{alert_id}:chain:{chain}:step:{step}",
    )
    assert due is not None, f"step {step} of chain {chain} was not scheduled"
    return due


async def _history(http: httpx.AsyncClient, alert_id: int, headers: dict[str, str]) -> list[Any]:
    """The alert's history as a clinician reads it (the API's events endpoint)."""
    answer = await http.get(f"/api/v1/alerts/{alert_id}/events", headers=headers)
    assert 200 == answer.status_code
    events: list[Any] = answer.json()
    return events


async def test_a_warning_made_urgent_escalates_on_the_urgent_policy_not_the_warnings(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, pools: Any
) -> None:
    """Through the worker: warning (team after 10 min), then urgent a moment later (team
    after 15, on-call after 30). At 10 min the warning's step addresses nobody; the urgent
    chain's steps do, at their deadlines from when it became urgent."""
    described = _described(working_hours=False)
    described["care_teams"][0]["escalation"] = POLICY | {
        "warning": [{"after_minutes": 10, "to": "team"}]
    }
    start = datetime.now(UTC)
    async with _worker(db, dsn, broker, described) as service:
        await _publish(broker, 165, start)
        alert_id = await wait_until(
            lambda: db.fetchval("SELECT id FROM alerts"), lambda i: i is not None
        )
        warning_step = await _due(db, alert_id, 1, 1)
        await _publish(broker, 185, start + timedelta(minutes=1))
        await wait_until(
            lambda: db.fetchval("SELECT severity FROM alerts WHERE id = $1", alert_id),
            lambda s: s == "urgent",
        )
        urgent_step = await _due(db, alert_id, 2, 1)
        clock = ManualClock(warning_step)
        scheduler = _scheduler(pools[0], clock)
        headers = await _token(db, "cl-a2")
        async with httpx.AsyncClient(base_url=service.url) as http:
            ran_at_10 = await scheduler.run_due()
            at_10 = await _history(http, alert_id, headers)
            clock.set(urgent_step)
            await scheduler.run_due()
            at_15 = await _history(http, alert_id, headers)
            clock.set(await _due(db, alert_id, 2, 2))
            await scheduler.run_due()
            at_30 = await _history(http, alert_id, headers)
        chains = await db.fetch(
            "SELECT key, status FROM scheduled_jobs WHERE name = 'alerts.escalate' ORDER BY key"
        )
    assert abs(warning_step - start - timedelta(minutes=10)) < timedelta(seconds=30)
    assert timedelta(minutes=4) < urgent_step - warning_step < timedelta(minutes=6)
    assert 1 == ran_at_10  # the warning's step ran, and did nothing
    assert ["opened", "severity_changed"] == [e["kind"] for e in at_10]
    assert ("warning", "urgent") == (
        at_10[1]["details"]["previous"],
        at_10[1]["details"]["severity"],
    )
    escalated = [e for e in at_30 if e["kind"] == "escalated"]
    assert [e["kind"] for e in at_15] == ["opened", "severity_changed", "escalated"]
    assert [
        ("scheduler", "team", ["cl-a1", "cl-a2"], "urgent", 2, 1),
        ("scheduler", "out_of_hours", ["cl-j1"], "urgent", 2, 2),
    ] == [
        (
            e["actor"],
            e["details"]["to"]["level"],
            e["details"]["to"]["clinicians"],
            e["details"]["severity"],
            e["details"]["chain"],
            e["details"]["step"],
        )
        for e in escalated
    ]
    assert [
        (f"alert:{alert_id}:chain:1:step:1", "done"),  # no step 2: the chain ended there
        (f"alert:{alert_id}:chain:2:step:1", "done"),
        (f"alert:{alert_id}:chain:2:step:2", "done"),
    ] == [tuple(r) for r in chains]


async def test_a_snoozed_warning_that_becomes_urgent_is_no_longer_snoozed(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, pools: Any
) -> None:
    """Snoozed for an hour, then urgent through the worker: the history says the snooze
    ended because the alert became urgent (actor rule), the alert is not snoozed, the
    urgent chain escalates at 15 min, and the hour's end adds nothing."""
    start = datetime.now(UTC)
    async with _worker(db, dsn, broker, _described(working_hours=False)) as service:
        await _publish(broker, 165, start)
        alert_id = await wait_until(
            lambda: db.fetchval("SELECT id FROM alerts"), lambda i: i is not None
        )
        headers = await _token(db, "cl-a1")
        async with httpx.AsyncClient(base_url=service.url) as http:
            snoozed = await http.post(
                f"/api/v1/alerts/{alert_id}/snooze",
                json={"minutes": 60, "reason": "ringer efter lunch"},
                headers=headers,
            )
            await _publish(broker, 188, start + timedelta(minutes=1))
            await wait_until(
                lambda: db.fetchval("SELECT severity FROM alerts WHERE id = $1", alert_id),
                lambda s: s == "urgent",
            )
            listed = await http.get("/api/v1/alerts", headers=headers)
            made_urgent = await _history(http, alert_id, headers)
            clock = ManualClock(await _due(db, alert_id, 2, 1))
            scheduler = _scheduler(pools[0], clock)
            await scheduler.run_due()
            clock.set(datetime.fromisoformat(snoozed.json()["snoozed_until"]))
            await scheduler.run_due()
            after_the_hour = await _history(http, alert_id, headers)
    assert 200 == snoozed.status_code
    assert [(alert_id, "urgent", None)] == [
        (a["id"], a["severity"], a["snoozed_until"]) for a in listed.json()
    ]
    assert [
        ("opened", "rule", None),
        ("snoozed", "clinician", "cl-a1"),
        ("severity_changed", "rule", None),
        ("snooze_ended", "rule", None),
    ] == [(e["kind"], e["actor"], e["clinician_id"]) for e in made_urgent]
    ended = made_urgent[3]["details"]
    assert ("urgent", made_urgent[1]["details"]["until"]) == (ended["reason"], ended["until"])
    # by the hour's end the urgent chain's 30 min step has run too; the snooze's own end
    # (and the warning chain's step) found nothing to do
    assert [
        ("opened", "care_contact"),
        ("snoozed", None),
        ("severity_changed", None),
        ("snooze_ended", None),
        ("escalated", "team"),
        ("escalated", "out_of_hours"),
    ] == [(e["kind"], (e["details"].get("to") or {}).get("level")) for e in after_the_hour]
    assert {"urgent"} == {e["details"]["severity"] for e in after_the_hour[4:]}


async def test_the_on_call_nurse_reads_the_patient_of_a_routed_alert_while_it_is_active(
    db: asyncpg.Connection, api: httpx.AsyncClient
) -> None:
    """Routed out of hours to jour-ost: its nurse reads p-1's trend, readings and plan
    (each access-logged), not p-3 of the same team, may not change p-1's plan, and reads
    nothing of p-1 once the alert is resolved; every refusal is logged as denied."""
    cache = await _cache(db, _described())
    night = _local("2026-06-03T02:00")
    await commit(db, _systolic(185, night), cache.plans, night)
    alert = await db.fetchval("SELECT id FROM alerts WHERE routed_to = 'jour-ost'")
    j1, a1 = await _token(db, "cl-j1"), await _token(db, "cl-a1")
    base = "/api/v1/patients"
    plan_change = {"spec": {"thresholds": {}}, "reason": "natt"}
    while_active = [
        await api.get(f"{base}/p-1/trend?days=365", headers=j1),
        await api.get(f"{base}/p-1/readings?days=365", headers=j1),
        await api.get(f"{base}/p-1/care-plan", headers=j1),
        await api.get(f"{base}/p-3/trend", headers=j1),
        await api.post(f"{base}/p-1/care-plan", json=plan_change, headers=j1),
    ]
    resolved = await api.post(
        f"/api/v1/alerts/{alert}/resolve", json={"note": "Ringt, mår bra."}, headers=a1
    )
    after = await api.get(f"{base}/p-1/trend", headers=j1)
    still_the_alert = await api.get(f"/api/v1/alerts/{alert}/events", headers=j1)
    log = await db.fetch(
        "SELECT patient_id, action, outcome FROM access_log WHERE clinician_id = 'cl-j1' "
        "ORDER BY id"
    )
    assert [200, 200, 200, 404, 404] == [r.status_code for r in while_active]
    assert [185.0] == [r["systolic"] for r in while_active[1].json()]
    assert while_active[0].json() and {"blood_pressure"} == {
        p["metric"] for p in while_active[0].json()
    }
    assert 1 == while_active[2].json()["version"]
    assert {"detail": "no such patient"} == while_active[3].json() == while_active[4].json()
    assert (200, 404, 200) == (
        resolved.status_code,
        after.status_code,
        still_the_alert.status_code,
    )
    assert [
        ("p-1", "view_trend", "allowed"),
        ("p-1", "view_readings", "allowed"),
        ("p-1", "view_care_plan", "allowed"),
        ("p-3", "view_trend", "denied"),
        ("p-1", "change_care_plan", "denied"),
        ("p-1", "view_trend", "denied"),
        ("p-1", "view_alert_events", "allowed"),
    ] == [tuple(r) for r in log]


async def test_an_action_on_another_teams_alert_is_refused_as_unknown_and_logged_denied(
    db: asyncpg.Connection, api: httpx.AsyncClient
) -> None:
    """cl-b1 acknowledging, snoozing or resolving vc-a's alert: 404 as for no alert, the
    alert unchanged, each attempt a denied row. A 409 on an alert the clinician sees is a
    refused change, not a denied access: it shows no patient data and logs nothing."""
    cache = await _cache(db, _described(working_hours=False))
    now = datetime.now(UTC)
    await commit(db, _systolic(185, now), cache.plans, now)
    alert = await db.fetchval("SELECT id FROM alerts")
    b1, a1 = await _token(db, "cl-b1"), await _token(db, "cl-a1")
    base = f"/api/v1/alerts/{alert}"
    foreign = [
        await api.post(f"{base}/acknowledge", headers=b1),
        await api.post(f"{base}/snooze", json={"minutes": 30, "reason": "x"}, headers=b1),
        await api.post(f"{base}/resolve", json={"note": "x"}, headers=b1),
        await api.post(f"/api/v1/alerts/{alert + 1000}/acknowledge", headers=b1),
    ]
    refused = await api.post(f"{base}/snooze", json={"minutes": 30, "reason": "x"}, headers=a1)
    log = await db.fetch(
        "SELECT clinician_id, patient_id, action, requested_id, outcome FROM access_log ORDER BY id"
    )
    assert [404] * 4 == [r.status_code for r in foreign]
    assert {"detail": "no such alert"} == foreign[0].json() == foreign[3].json()
    assert 409 == refused.status_code
    assert ("open", None) == tuple(
        await db.fetchrow("SELECT status, snoozed_until FROM alerts WHERE id = $1", alert)
    )
    assert [
        ("cl-b1", "p-1", "acknowledge_alert", str(alert), "denied"),
        ("cl-b1", "p-1", "snooze_alert", str(alert), "denied"),
        ("cl-b1", "p-1", "resolve_alert", str(alert), "denied"),
        ("cl-b1", None, "acknowledge_alert", str(alert + 1000), "denied"),
    ] == [tuple(r) for r in log]
