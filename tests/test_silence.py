"""Missing-data alerts against real PostgreSQL (and Mosquitto where readings flow).

A silent patient raises one alert at the time the plan says, on the scheduler's driven
clock; a paused one none; a silent gateway the gateway rule; a backlog closes it; two
processes raise one alert; pauses through the registry and the API.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from homemonitor import jobs, registry
from homemonitor.alerts import silence
from homemonitor.api.auth import issue_token
from homemonitor.contract.protocol import readings_topic
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.embedded import PrivateMosquitto
from homemonitor.ingest.contacts import Contacts
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.metrics import Metrics
from homemonitor.registry import RegistryCache
from homemonitor.registry import pauses as registry_pauses
from homemonitor.scheduler import ManualClock, Scheduler
from homemonitor.storage.transaction import commit
from tests.conftest import REGISTRY, RunningService, publisher, settings_for, wait_until

T0 = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
DAY = timedelta(days=1)
#: Daily weight and SpO2 expected, 72 h of silence tolerated (the templates' numbers).
WEIGHT = {"metric": "body_weight", "every_hours": 24, "tolerate_hours": 72}
SPO2 = {"metric": "spo2", "every_hours": 24, "tolerate_hours": 72}


def described(pauses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The test registry, p-1 expected to weigh daily and p-2 to measure SpO2 daily."""
    reg = copy.deepcopy(REGISTRY)
    p1, p2, p3 = reg["patients"]
    p1["care_plan"] = {**p1["care_plan"], "version": 2, "expected": [WEIGHT]}
    p2["care_plan"] = {**p2["care_plan"], "version": 2, "expected": [SPO2]}
    p3["care_plan"] = {"version": 1, "thresholds": {"systolic": {"high": {"warning": 200}}}}
    if pauses is not None:
        p1["pauses"] = pauses
    return reg


async def applied(db: asyncpg.Connection, reg: dict[str, Any]) -> RegistryCache:
    await registry.apply(db, registry.parse(reg))
    cache = RegistryCache()
    await cache.load(db)
    return cache


def _batch(gateway: str, readings: list[tuple[Reading, str]], received: datetime) -> Batch:
    message = Inbound(readings_topic(gateway), b"{}", received, 0.0)
    return Batch(
        [message], [Candidate(r, patient, gateway, received, 0) for r, patient in readings]
    )


async def weigh(db: asyncpg.Connection, cache: RegistryCache, at: datetime) -> None:
    """p-1 weighs on scale-1 at ``at``; gw-1 sends it at once."""
    reading = Reading("scale-1", Metric.BODY_WEIGHT, at, {Quantity.BODY_WEIGHT: 78.0})
    await commit(db, _batch("gw-1", [(reading, "p-1")], at), cache.plans, at)


async def p3_measures(
    db: asyncpg.Connection, pool: asyncpg.Pool, cache: RegistryCache, at: datetime
) -> None:
    """p-3, in the same home, measures blood pressure through gw-1: the gateway is alive
    (its contact noted and written as the worker does after a commit)."""
    reading = Reading(
        "cuff-3", Metric.BLOOD_PRESSURE, at, {Quantity.SYSTOLIC: 125, Quantity.DIASTOLIC: 80}
    )
    batch = _batch("gw-1", [(reading, "p-3")], at)
    await commit(db, batch, cache.plans, at)
    contacts = Contacts()
    contacts.note([m.topic for m in batch.messages], at)
    assert 1 == await contacts.flush(pool)


async def daily_weights(
    db: asyncpg.Connection, cache: RegistryCache, last: datetime, days: int = 14
) -> None:
    for n in range(days, -1, -1):
        await weigh(db, cache, last - n * DAY)


async def weighed_then_silent(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> tuple[RegistryCache, datetime]:
    """p-1 weighed daily for two weeks to T0, then not; 4 days later, its home's gateway
    still sends (p-3). Returns the registry and that time, past the tolerance."""
    cache = await applied(db, described())
    await daily_weights(db, cache, T0)
    at = T0 + 4 * DAY
    await p3_measures(db, pool, cache, at)
    return cache, at


async def scheduler(pool: asyncpg.Pool, cache: RegistryCache, clock: ManualClock) -> Scheduler:
    """A scheduler with the silence job, registered (due at once) on ``clock``."""
    jobs_ = Scheduler(
        pool, Metrics(), recurring=[jobs.silence_job(lambda: cache.plans, Metrics())], clock=clock
    )
    async with pool.acquire() as conn:
        await jobs_.register(conn)
    return jobs_


async def alerts(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT a.patient_id, a.rule, a.kind, a.status, a.opening_measured_at, "
        "a.opening_explanation::text AS why, e.actor, e.details::text AS details "
        "FROM alerts a JOIN alert_events e ON e.alert_id = a.id AND e.kind = 'opened' "
        "ORDER BY a.id"
    )


async def test_a_silent_patient_raises_one_missing_data_alert_at_the_plans_time(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Weighed daily, then silent: nothing a second before 72 h, one alert at 72 h, no more."""
    cache = await applied(db, described())
    await daily_weights(db, cache, T0)
    clock = ManualClock(T0)
    jobs_a = await scheduler(pools[0], cache, clock)
    deadline = T0 + timedelta(hours=72)
    seen = []
    for at in (T0, deadline - timedelta(hours=1), deadline - timedelta(minutes=2)):
        clock.set(at)
        await p3_measures(db, pools[0], cache, at)  # the home's gateway keeps sending
        await jobs_a.run_due()
        seen.append(len(await alerts(db)))
    early = await silence.check(db, cache.plans, deadline - timedelta(seconds=1))
    clock.set(deadline)  # the job asked to run again at the deadline: it is due now
    ran = await jobs_a.run_due()
    seen.append(len(await alerts(db)))
    for at in (deadline + timedelta(hours=1), deadline + 3 * DAY):
        clock.set(at)
        await p3_measures(db, pools[0], cache, at)
        await jobs_a.run_due()
        seen.append(len(await alerts(db)))
    assert [0, 0, 0, 1, 1, 1] == seen
    assert (0, 1) == (early.tally.opened.total(), ran)
    (alert,) = await alerts(db)
    details = json.loads(alert["details"])
    why = json.loads(alert["why"])
    assert ("p-1", "missing.body_weight", "missing", "open", T0, "scheduler") == (
        alert["patient_id"],
        alert["rule"],
        alert["kind"],
        alert["status"],
        alert["opening_measured_at"],
        alert["actor"],
    )
    assert deadline.isoformat() == details["decided_at"]
    assert why["sentence"].startswith("No weight reading for 72 h since the last reading")
    assert why["sentences"]["sv"].startswith(
        "Ingen mätning av vikt på 72 h sedan den senaste mätningen"
    )
    assert (72.0, 14) == (why["facts"]["silent_hours"], why["facts"]["run_in_readings"])


async def test_a_patient_who_never_measured_regularly_raises_nothing(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Three weights in two weeks (the plan asks 7 of 14) or none at all: no alert."""
    cache = await applied(db, described())
    for n in (12, 6, 0):
        await weigh(db, cache, T0 - n * DAY)
    clock = ManualClock(T0 + 5 * DAY)
    await p3_measures(db, pools[0], cache, clock.now())
    jobs_a = await scheduler(pools[0], cache, clock)
    assert 1 == await jobs_a.run_due()
    assert [] == await alerts(db)  # p-2 never measured: nothing either


async def test_a_paused_patient_raises_nothing_and_the_silence_restarts_after_the_pause(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Admitted from day 1 to day 5: no alert then; one 72 h after the pause ended."""
    ends = T0 + 5 * DAY
    pause = {"from": (T0 + DAY).isoformat(), "until": ends.isoformat(), "reason": "admission"}
    cache = await applied(db, described([pause]))
    await daily_weights(db, cache, T0)
    clock = ManualClock(T0)
    jobs_a = await scheduler(pools[0], cache, clock)
    seen = []
    for at in (
        T0 + 3 * DAY,
        ends - timedelta(minutes=1),
        ends + timedelta(hours=71),
        ends + timedelta(hours=72),
    ):
        clock.set(at)
        await p3_measures(db, pools[0], cache, at)
        await jobs_a.run_due()
        seen.append([a["rule"] for a in await alerts(db)])
    assert [[], [], [], ["missing.body_weight"]] == seen
    (alert,) = await alerts(db)
    assert ends == alert["opening_measured_at"]
    assert "since the end of a pause" in json.loads(alert["why"])["sentence"]


async def test_an_admission_without_an_end_holds_every_missing_data_alert(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Admitted on day 1 with no end recorded: nothing raised, weeks later either."""
    pause = {"from": (T0 + DAY).isoformat(), "reason": "admission"}
    cache = await applied(db, described([pause]))
    await daily_weights(db, cache, T0)
    clock = ManualClock(T0)
    jobs_a = await scheduler(pools[0], cache, clock)
    for at in (T0 + 4 * DAY, T0 + 20 * DAY):
        clock.set(at)
        await p3_measures(db, pools[0], cache, at)
        await jobs_a.run_due()
    failed = await db.fetchval("SELECT failures FROM scheduled_jobs WHERE name = 'alerts.silence'")
    assert (0, []) == (failed, await alerts(db))


async def test_two_processes_checking_at_once_raise_one_alert(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Two schedulers, and two checks on two pools side by side: one alert."""
    cache, at = await weighed_then_silent(db, pools[0])
    clock = ManualClock(at)
    a, b = await scheduler(pools[0], cache, clock), await scheduler(pools[1], cache, clock)
    await asyncio.gather(a.run_due(), b.run_due())

    async def check(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            await silence.check(conn, cache.plans, at + timedelta(minutes=1))

    await asyncio.gather(check(pools[0]), check(pools[1]))
    assert ["missing.body_weight"] == [r["rule"] for r in await alerts(db)]


async def test_a_reading_after_the_alert_resolves_it_and_the_clock_starts_again(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """The patient weighs again: auto-resolved as resumed; silent again: a new alert later."""
    cache, raised = await weighed_then_silent(db, pools[0])
    clock = ManualClock(raised)
    jobs_a = await scheduler(pools[0], cache, clock)
    await jobs_a.run_due()
    back = raised + timedelta(hours=2)
    await weigh(db, cache, back)
    ended = await db.fetchrow(
        "SELECT e.details::text AS d, a.status FROM alert_events e "
        "JOIN alerts a ON a.id = e.alert_id WHERE e.kind = 'auto_resolved'"
    )
    assert "auto_resolved" == ended["status"]
    assert "resumed" == json.loads(ended["d"])["reason"]
    again = back + timedelta(hours=72)
    clock.set(again)
    await p3_measures(db, pools[0], cache, again)
    await jobs_a.run_due()
    assert [("missing.body_weight", T0), ("missing.body_weight", back)] == [
        (r["rule"], r["opening_measured_at"]) for r in await alerts(db)
    ]


async def _publish_spo2(broker: PrivateMosquitto, times: list[datetime]) -> None:
    """p-2's oximeter readings at ``times`` through gw-2, one message each, QoS 1."""
    async with publisher(broker, "gw-2") as gw:
        for at in times:
            payload = {
                "v": 1,
                "reading": {
                    "device_id": "oxi-2",
                    "metric": "spo2",
                    "measured_at": at.isoformat(),
                    "unit": "%",
                    "value": 96,
                },
            }
            await gw.publish(readings_topic("gw-2"), json.dumps(payload).encode(), qos=1)


async def test_a_silent_gateway_raises_the_gateway_rule_and_its_backlog_closes_it(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> None:
    """Nothing from gw-2 for 73 h: gateway.silent, not missing.spo2; its backlog resolves it."""
    await registry.apply(db, registry.parse(described()))
    now = datetime.now(UTC).replace(microsecond=0)
    last = now - timedelta(hours=70)
    clock = ManualClock(now)
    svc = RunningService(settings_for(dsn, broker), http=False, clock=clock)
    await svc.start()
    try:
        # The silence job's first run, before the history arrives: run with half of it
        # stored, it would rightly see the oximeter silent for days (missing.spo2). The
        # clock stands still, so it runs next when the test moves it.
        await wait_until(
            lambda: db.fetchval("SELECT runs FROM scheduled_jobs WHERE name = 'alerts.silence'"),
            lambda n: (n or 0) >= 1,
        )
        await _publish_spo2(broker, [last - n * DAY for n in range(14, -1, -1)])

        async def stored() -> int:
            return int(await db.fetchval("SELECT count(*) FROM readings WHERE patient_id = 'p-2'"))

        await wait_until(stored, lambda n: n == 15)
        contact = await db.fetchval(
            "SELECT max(received_at) FROM readings WHERE gateway_id = 'gw-2'"
        )
        clock.set(now + timedelta(hours=73))  # 72 h after the gateway's last contact
        raised = await wait_until(lambda: alerts(db), lambda rows: len(rows) > 0)
        backlog = [last + timedelta(hours=h) for h in (24, 48)]  # measured in the silence
        await _publish_spo2(broker, backlog)

        async def status() -> str:
            return str(await db.fetchval("SELECT status FROM alerts"))

        await wait_until(status, lambda s: s == "auto_resolved")
    finally:
        await svc.stop()
    seen = await db.fetchval("SELECT last_seen_at FROM gateways WHERE id = 'gw-2'")
    last_received = await db.fetchval("SELECT max(received_at) FROM readings")
    assert last_received == seen  # the backlog was the last contact, flushed at the stop
    assert [("p-2", "gateway.silent", contact)] == [
        (r["patient_id"], r["rule"], r["opening_measured_at"]) for r in raised
    ]
    why = json.loads(raised[0]["why"])
    assert why["sentence"].startswith("Nothing received from the patient's home gateway gw-2")
    ended = json.loads(
        await db.fetchval("SELECT details::text FROM alert_events WHERE kind = 'auto_resolved'")
    )
    assert ("backlog", backlog[0].isoformat()) == (ended["reason"], ended["measured_at"])


async def test_pauses_through_the_api_are_the_teams_and_access_logged(
    db: asyncpg.Connection, service: RunningService
) -> None:
    """A clinician adds, lists and deletes a pause; another team's gets 404, logged denied."""
    pause = {"from": (T0 + DAY).isoformat(), "until": None, "reason": "admission"}
    await registry.apply(db, registry.parse(described([{**pause, "reason": "absence"}])))
    own = {"Authorization": f"Bearer {await issue_token(db, 'cl-a1')}"}
    other = {"Authorization": f"Bearer {await issue_token(db, 'cl-b1')}"}
    url = f"{service.url}/api/v1/patients/p-1/pauses"
    async with httpx.AsyncClient() as http:
        made = await http.post(url, json=pause, headers=own)
        listed = await http.get(url, headers=own)
        refused = await http.post(url, json=pause, headers=other)
        registry_one = next(p for p in listed.json() if p["source"] == "registry")
        kept = await http.delete(f"{url}/{registry_one['id']}", headers=own)
        deleted = await http.delete(f"{url}/{made.json()['id']}", headers=own)
        after = await http.get(url, headers=own)
    assert (201, 200, 404, 409, 204) == (
        made.status_code,
        listed.status_code,
        refused.status_code,
        kept.status_code,
        deleted.status_code,
    )
    assert ("admission", None, "cl-a1", (T0 + DAY).isoformat().replace("+00:00", "Z")) == (
        made.json()["reason"],
        made.json()["until"],
        made.json()["created_by"],
        made.json()["from"],
    )
    assert [("absence", "registry")] == [(p["reason"], p["source"]) for p in after.json()]
    log = await db.fetch(
        "SELECT clinician_id, action, outcome FROM access_log WHERE patient_id = 'p-1' ORDER BY id"
    )
    assert [
        ("cl-a1", "add_pause", "allowed"),
        ("cl-a1", "view_pauses", "allowed"),
        ("cl-b1", "add_pause", "denied"),
        ("cl-a1", "delete_pause", "allowed"),
        ("cl-a1", "view_pauses", "allowed"),
    ] == [tuple(r) for r in log]


async def test_a_missing_data_alert_is_listed_and_explained_like_any_other(
    db: asyncpg.Connection, service: RunningService, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """GET /api/v1/alerts shows it: kind missing, its rule, the sentence a nurse reads."""
    cache, at = await weighed_then_silent(db, pools[0])
    await silence.check(db, cache.plans, at)
    own = {"Authorization": f"Bearer {await issue_token(db, 'cl-a1')}"}
    async with httpx.AsyncClient() as http:
        listed = await http.get(f"{service.url}/api/v1/alerts", headers=own)
    assert 200 == listed.status_code
    assert [("missing.body_weight", "missing", "warning", None, 72.0)] == [
        (a["rule"], a["kind"], a["severity"], a["quantity"], a["threshold"]) for a in listed.json()
    ]
    sentence = listed.json()[0]["opening_explanation"]["sentence"]
    assert sentence.startswith("No weight reading for 96 h since the last reading")


async def test_the_registry_file_is_the_truth_for_its_pauses_and_leaves_the_apis_alone(
    db: asyncpg.Connection,
) -> None:
    """Applied twice: unchanged; changed: replaced; a clinician's API pause stays throughout."""
    first = {"from": "2026-07-01T00:00:00Z", "until": "2026-07-15T00:00:00Z", "reason": "absence"}
    await registry.apply(db, registry.parse(described([first])))
    await registry_pauses.add(
        db, "p-1", registry_pauses.PauseIn.model_validate({**first, "reason": "other"}), "cl-a1"
    )

    async def listed() -> list[tuple[int, str, str]]:
        return [(p.id, p.reason, p.source) for p in await registry_pauses.of_patient(db, "p-1")]

    before = await listed()
    await registry.apply(db, registry.parse(described([first])))
    again = await listed()
    await registry.apply(db, registry.parse(described([{**first, "reason": "admission"}])))
    changed = await listed()
    assert before == again
    assert [("other", "api"), ("absence", "registry")] == [(r, s) for _, r, s in before]
    assert [("admission", "registry"), ("other", "api")] == sorted((r, s) for _, r, s in changed)


async def test_a_gateway_back_without_the_patients_readings_turns_into_a_patient_silence(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """gw-1 silent: gateway.silent; back (p-3 measures) but p-1 not: missing.body_weight."""
    cache = await applied(db, described())
    await daily_weights(db, cache, T0)
    clock = ManualClock(T0 + 4 * DAY)
    jobs_a = await scheduler(pools[0], cache, clock)
    await jobs_a.run_due()
    first = [(r["rule"], r["status"]) for r in await alerts(db)]
    back = clock.now() + timedelta(hours=1)
    await p3_measures(db, pools[0], cache, back)
    clock.set(back)
    await jobs_a.run_due()
    ended = json.loads(
        await db.fetchval("SELECT details::text FROM alert_events WHERE kind = 'auto_resolved'")
    )
    assert [("gateway.silent", "open")] == first
    assert [("gateway.silent", "auto_resolved"), ("missing.body_weight", "open")] == [
        (r["rule"], r["status"]) for r in await alerts(db)
    ]
    assert ("gateway_back", back.isoformat()) == (ended["reason"], ended["last_contact_at"])
