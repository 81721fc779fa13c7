"""The rules engine's storage: migration 0010 over existing rows, and the batch's fast path."""

from __future__ import annotations

import copy
import json
import os
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.alerts import episodes
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.embedded import PrivatePostgres
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.registry.cache import PatientPlan
from homemonitor.rules.histories import HistoryCache
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.plan import CarePlanSpec, resolve
from homemonitor.rules.templates import TEMPLATES
from homemonitor.storage import database
from homemonitor.storage.transaction import _insert_readings, commit
from tests.conftest import REGISTRY
from tests.unit.rulekit import series_columns

NOW = datetime.now(UTC).replace(microsecond=0)


async def _empty_database(pg_cluster: PrivatePostgres, name: str) -> str:
    admin = await asyncpg.connect(pg_cluster.dsn.replace("/hm_template", "/postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return pg_cluster.dsn.replace("/hm_template", f"/{name}")


async def test_migration_keeps_existing_plans_and_alerts_meaning_what_they_meant(
    pg_cluster: PrivatePostgres,
) -> None:
    """0010 over 0001-0009 data: plans become {thresholds}, alerts get explanations and events."""
    dsn = await _empty_database(pg_cluster, f"m_{os.getpid()}_{time.monotonic_ns()}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name, sql in database._scripts(""):
            if name < "0010":
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        await conn.execute(
            "INSERT INTO care_teams VALUES ('vc-a', 'A');"
            "INSERT INTO clinicians (id, care_team_id, name) VALUES ('cl-a1', 'vc-a', 'N');"
            "INSERT INTO patients (id, care_team_id) VALUES ('p-1', 'vc-a');"
            "INSERT INTO care_plans (patient_id, version, thresholds, changed_by) VALUES "
            "('p-1', 1, '{\"systolic\": {\"high\": {\"warning\": 160}}}', 'cl-a1')"
        )
        await conn.execute(
            "INSERT INTO alerts (patient_id, care_team_id, rule, quantity, direction, severity, "
            "status, plan_version, threshold, opening_device_id, opening_metric, "
            "opening_measured_at, opening_value, worst_value, last_measured_at, "
            "acknowledged_at, acknowledged_by) VALUES ('p-1', 'vc-a', 'systolic.high', "
            "'systolic', 'high', 'warning', 'acknowledged', 1, 160, 'cuff-1', "
            "'blood_pressure', $1, 165, 170, $1, $1, 'cl-a1')",
            NOW,
        )
        await database.migrate(conn)
        plan = await conn.fetchrow("SELECT plan, thresholds FROM care_plans")
        alert = await conn.fetchrow(
            "SELECT kind, peak_severity, evaluated_at, opening_explanation FROM alerts"
        )
        events = await conn.fetch("SELECT kind, actor, clinician_id FROM alert_events ORDER BY id")
        cache = registry.RegistryCache()
        await cache.load(conn)
    finally:
        await conn.close()
    bounds = {"systolic": {"high": {"warning": 160}}}
    assert ({"thresholds": bounds}, bounds) == (
        json.loads(plan["plan"]),
        json.loads(plan["thresholds"]),
    )
    assert ("threshold", "warning", NOW) == tuple(alert)[:3]
    assert (
        "systolic 165, at or above the warning bound 160; plan v1"
        == (json.loads(alert["opening_explanation"])["sentence"])
    )
    assert [("opened", "rule", None), ("acknowledged", "clinician", "cl-a1")] == [
        tuple(e) for e in events
    ]
    p1 = cache.plans.get("p-1")
    assert p1 is not None
    assert (1, ["systolic.high"], True) == (p1.version, [r.id for r in p1.plan.rules], p1.plain)


def _batch(patients: int, per_patient: int, systolic: float) -> Batch:
    """A batch of blood-pressure readings, ``per_patient`` each for ``patients`` patients."""
    now = datetime.now(UTC)
    message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", now, 0.0)
    candidates = [
        Candidate(
            Reading(
                f"cuff-{p}",
                Metric.BLOOD_PRESSURE,
                now - timedelta(seconds=i + 1, microseconds=p),
                {Quantity.SYSTOLIC: systolic, Quantity.DIASTOLIC: 80.0},
            ),
            f"p-{p}",
            "gw-1",
            now,
            0,
        )
        for p in range(patients)
        for i in range(per_patient)
    ]
    return Batch([message], candidates)


def _clinic(patients: int, plan: dict[str, object]) -> dict[str, object]:
    team = REGISTRY["care_teams"][0]
    return {
        "care_teams": [team],
        "devices": [{"id": f"cuff-{p}", "kind": "blood_pressure_cuff"} for p in range(patients)],
        "patients": [
            {"id": f"p-{p}", "care_team": team["id"], "care_plan": {"version": 1, **plan}}
            for p in range(patients)
        ],
    }


_THRESHOLDS = {"thresholds": {"systolic": {"high": {"warning": 160, "urgent": 180}}}}
_AVERAGE = {
    **_THRESHOLDS,
    "rules": [{"id": "bp.home_mean", "kind": "average", "bounds": {"systolic": {"warning": 135}}}],
}


@pytest.mark.parametrize(("plan", "path"), [(_THRESHOLDS, "screened"), (_AVERAGE, "evaluated")])
async def test_normal_readings_of_plain_threshold_plans_are_screened_not_evaluated(
    dsn: str, plan: dict[str, object], path: str
) -> None:
    """A batch inside every bound of plain thresholds runs no engine; a trend plan does."""
    conn = await asyncpg.connect(dsn)
    try:
        await registry.apply(conn, registry.parse(_clinic(50, plan)))
        cache = registry.RegistryCache()
        await cache.load(conn)
        result = await commit(conn, _batch(50, 4, 120.0), cache.plans)
    finally:
        await conn.close()
    assert {"screened": (50, 0), "evaluated": (0, 50)}[path] == (result.screened, result.evaluated)


async def test_a_retake_withdraws_a_pending_breach_and_no_retake_opens_it_on_time(
    db: asyncpg.Connection,
) -> None:
    """Pending, then a normal retake: withdrawn. Pending with no retake: opened when due."""
    described = copy.deepcopy(REGISTRY)
    described["patients"][1]["care_plan"] = {
        "version": 2,
        "rules": [
            {
                "id": "spo2.low",
                "kind": "threshold",
                "quantity": "spo2",
                "direction": "low",
                "warning": 90,
                "retake_minutes": 5,
            }
        ],
    }
    await registry.apply(db, registry.parse(described))
    cache = registry.RegistryCache()
    await cache.load(db)
    now = datetime.now(UTC)

    def spo2(minutes_ago: float, value: float) -> Batch:
        at = now - timedelta(minutes=minutes_ago)
        reading = Reading("oxi-2", Metric.SPO2, at, {Quantity.SPO2: value})
        message = Inbound("homemonitor/v1/gw/gw-2/readings", b"{}", now, 0.0)
        return Batch([message], [Candidate(reading, "p-2", "gw-2", now, 0)])

    await commit(db, spo2(3, 85), cache.plans, now)
    pending = await db.fetchrow("SELECT status, due_at FROM alerts")
    await commit(db, spo2(1, 96), cache.plans, now)
    await commit(db, spo2(0.5, 84), cache.plans, now)
    early = (await episodes.run_due(db, cache.plans, now)).tally
    late = (await episodes.run_due(db, cache.plans, now + timedelta(minutes=10))).tally
    alerts = await db.fetch("SELECT id, status FROM alerts ORDER BY id")
    events = await db.fetch("SELECT alert_id, kind, actor FROM alert_events ORDER BY id")
    first, second = (a["id"] for a in alerts)
    assert ("pending", now + timedelta(minutes=2)) == (pending["status"], pending["due_at"])
    assert (0, 1) == (early.opened.total(), late.opened.total())
    assert ["withdrawn", "open"] == [a["status"] for a in alerts]
    assert [
        (first, "pending", "rule"),
        (first, "withdrawn", "rule"),
        (second, "pending", "rule"),
        (second, "opened", "scheduler"),
    ] == [tuple(e) for e in events]


def _stored(
    device: str,
    metric: Metric,
    at: datetime,
    values: dict[Quantity, float],
    quality: frozenset[str] = frozenset(),
    flags: frozenset[str] = frozenset(),
) -> StoredReading:
    return StoredReading(at, device, metric, values, quality, flags)


async def _insert(db: asyncpg.Connection, stored: list[StoredReading]) -> None:
    """Store ``stored`` as p-1's readings, as another writer would."""
    await db.executemany(
        "INSERT INTO readings (device_id, metric, measured_at, patient_id, received_at, "
        "systolic, diastolic, heart_rate, body_weight, spo2, quality, flags, source) "
        "VALUES ($1, $2, $3, 'p-1', $3, $4, $5, $6, $7, $8, $9, $10, 'test')",
        [
            (
                r.device_id,
                r.metric.value,
                r.measured_at,
                *[
                    r.values.get(q)
                    for q in (
                        Quantity.SYSTOLIC,
                        Quantity.DIASTOLIC,
                        Quantity.HEART_RATE,
                        Quantity.BODY_WEIGHT,
                        Quantity.SPO2,
                    )
                ],
                sorted(r.quality),
                sorted(r.flags),
            )
            for r in stored
        ],
    )


async def test_the_history_query_returns_what_the_points_rules_read_as_history_would_hold_it(
    db: asyncpg.Connection,
) -> None:
    """Per metric only the windows the points' rules read; ties, flags and devices intact."""
    plan = resolve(
        CarePlanSpec(template="heart_failure", personal={"dry_weight": 80.0}), 1, TEMPLATES
    )
    now = NOW.replace(microsecond=123_456)
    day = timedelta(days=1)
    bp_values = {Quantity.SYSTOLIC: 121.5, Quantity.DIASTOLIC: 79.0, Quantity.HEART_RATE: 66.0}
    stored = [
        *[
            _stored(
                "scale-a" if d > 10 else "scale-b",
                Metric.BODY_WEIGHT,
                now - d * day,
                {Quantity.BODY_WEIGHT: 80.0 + d / 10},
            )
            for d in range(30)
        ],
        *[
            _stored(
                "cuff-1",
                Metric.BLOOD_PRESSURE,
                now - d * day - timedelta(hours=1),
                bp_values,
                frozenset({"cuff_loose", "body_movement"}) if d == 3 else frozenset(),
            )
            for d in range(30)
        ],
        _stored(
            "oxi-1",
            Metric.SPO2,
            now - 2 * day,
            {Quantity.SPO2: 95.0, Quantity.HEART_RATE: 70.0},
            flags=frozenset({"clock_stale"}),
        ),
        _stored("oxi-0", Metric.SPO2, now - 2 * day, {Quantity.SPO2: 96.0}),  # a tie
        _stored("oxi-1", Metric.SPO2, now - 25 * day, {Quantity.SPO2: 97.0}),
        _stored(
            "cuff-1",
            Metric.BLOOD_PRESSURE,
            now + timedelta(hours=2),  # newer than the points
            {Quantity.SYSTOLIC: 118.0, Quantity.DIASTOLIC: 77.0},
        ),
    ]
    await _insert(db, stored)
    weight_point, bp_point = stored[0], stored[30]
    chosen = [
        PatientPlan("p-1", "vc-1", 1, plan, plain=False),
        PatientPlan("p-2", "vc-1", 1, plan, plain=False),
    ]
    lone = _stored("scale-z", Metric.BODY_WEIGHT, now, {Quantity.BODY_WEIGHT: 70.0})
    points = {"p-1": [weight_point, bp_point], "p-2": [lone]}  # p-2's point is not stored
    found = await episodes._history(db, chosen, points)
    # The weight rules read 21 days (weight.trend) of weight; the pulse rules 21 days of
    # every metric carrying a pulse; nothing reads SpO2 beyond what the pulse needs.
    window = 21 * day
    expected = History(
        r
        for r in stored
        if r.measured_at
        >= (weight_point if r.metric is Metric.BODY_WEIGHT else bp_point).measured_at - window
    )
    history = found["p-1"]
    assert (["p-1"], expected.readings) == (list(found), history.readings)
    for q in Quantity:
        for questionable in (False, True):
            want = expected.series(q, questionable=questionable)
            got = history.series(q, questionable=questionable)
            assert series_columns(want) == series_columns(got)
    assert weight_point in history and lone not in history


async def test_the_history_cache_gives_what_the_database_holds_whoever_stored_it(
    db: asyncpg.Connection,
) -> None:
    """An entry is used only while it holds every stored reading; a stranger's reading is seen."""
    plan = resolve(
        CarePlanSpec(template="heart_failure", personal={"dry_weight": 80.0}), 1, TEMPLATES
    )
    chosen = [PatientPlan("p-1", "vc-1", 1, plan, plain=False)]
    day = timedelta(days=1)

    def weight(at: datetime, kg: float, device: str = "scale-1") -> StoredReading:
        return _stored(device, Metric.BODY_WEIGHT, at, {Quantity.BODY_WEIGHT: kg})

    await _insert(db, [weight(NOW - d * day, 80.0 + d / 10) for d in range(1, 30)])
    cache = HistoryCache()

    async def store(readings: list[StoredReading]) -> dict[str, int]:
        """Store ``readings`` as every writer does (the batch's insert statement)."""
        candidates = [
            Candidate(
                Reading(r.device_id, r.metric, r.measured_at, r.values), "p-1", "gw-1", NOW, 0
            )
            for r in readings
        ]
        _, stored = await _insert_readings(db, candidates, ["p-1"])
        return stored

    async def batch(point: StoredReading) -> tuple[History, int]:
        """One batch of ``point`` (stored by this worker): its history, its entry's start."""
        async with db.transaction():
            stored = await store([point])
            found, keep = await episodes._cached_history(
                db, chosen, {"p-1": [point]}, cache, stored
            )
        cache.keep(keep, stored)  # committed
        return found["p-1"], keep["p-1"].since

    async def stored_since(since: int) -> list[tuple[str, str, datetime, float]]:
        """What the database holds of p-1 from ``since`` (µs) on, in measured order."""
        start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=since)
        rows = await db.fetch(
            "SELECT device_id, metric, measured_at, body_weight FROM readings "
            "WHERE patient_id = 'p-1' AND measured_at >= $1 "
            "ORDER BY measured_at, device_id, metric",
            start,
        )
        return [tuple(r) for r in rows]

    def held(h: History) -> list[tuple[str, str, datetime, float]]:
        return [
            (r.device_id, r.metric.value, r.measured_at, r.values[Quantity.BODY_WEIGHT])
            for r in h.readings
        ]

    first, since = await batch(weight(NOW, 81.0))
    assert held(first) == await stored_since(since)
    # this worker's next reading: the entry is used, and holds it. (Stored readings never
    # change; this one does, only to show where the second batch's history came from.)
    await db.execute(
        "UPDATE readings SET body_weight = 1 WHERE patient_id = 'p-1' AND measured_at = $1",
        NOW - day,
    )
    second, again = await batch(weight(NOW + timedelta(hours=1), 81.2))
    assert since == again
    assert [w if at != NOW - day else 1.0 for _, _, at, w in held(second)] == [
        w for _, _, _, w in await stored_since(since)
    ]
    assert [*held(first), held(second)[-1]] == held(second)
    # another worker stored an older reading of another scale: the entry is no longer exact
    await store([weight(NOW - timedelta(hours=5), 90.0, "scale-2")])
    third, reloaded = await batch(weight(NOW + timedelta(hours=2), 81.4))
    assert held(third) == await stored_since(reloaded)
    assert weight(NOW - timedelta(hours=5), 90.0, "scale-2") in third
    # a rolled-back batch leaves no reading in the entry
    with pytest.raises(RuntimeError):
        async with db.transaction():
            point = weight(NOW + timedelta(hours=3), 99.0)
            stored = await store([point])
            await episodes._cached_history(db, chosen, {"p-1": [point]}, cache, stored)
            raise RuntimeError
    fourth, kept = await batch(weight(NOW + timedelta(hours=4), 81.6))
    assert (reloaded, held(fourth)) == (kept, await stored_since(kept))
    assert weight(NOW + timedelta(hours=3), 99.0) not in fourth


async def test_episodes_of_a_rule_no_longer_in_the_plan_leave_the_due_queue(
    db: asyncpg.Connection,
) -> None:
    """p-1's pending breach and cleared episode belong to rules its new plan version
    dropped: nothing can decide them. The due runner withdraws the breach, takes the
    cleared episode off the queue (a clinician resolves it), and so reaches p-2's breach
    even one patient per run (they used to come first in every run, for ever)."""

    def rule(rule_id: str, quantity: str, warning: float) -> dict[str, object]:
        direction = "low" if quantity == "spo2" else "high"
        return {"id": rule_id, "kind": "threshold", "quantity": quantity,
                "direction": direction, "warning": warning, "retake_minutes": 5}  # fmt: skip

    described = copy.deepcopy(REGISTRY)
    p1, p2 = described["patients"][0], described["patients"][1]
    dropped = [rule("systolic.high", "systolic", 160), rule("diastolic.high", "diastolic", 100)]
    p1["care_plan"] = {"version": 2, "rules": dropped}
    p2["care_plan"] = {"version": 2, "rules": [rule("spo2.low", "spo2", 90)]}
    await registry.apply(db, registry.parse(described))
    cache = registry.RegistryCache()
    await cache.load(db)
    now = datetime.now(UTC)

    def reading(patient: str, values: dict[Quantity, float]) -> Batch:
        at = now - timedelta(minutes=3)  # pending until now + 2 min
        device, metric, gw = (
            ("cuff-1", Metric.BLOOD_PRESSURE, "gw-1")
            if patient == "p-1"
            else ("oxi-2", Metric.SPO2, "gw-2")
        )
        message = Inbound(f"homemonitor/v1/gw/{gw}/readings", b"{}", now, 0.0)
        return Batch(
            [message], [Candidate(Reading(device, metric, at, values), patient, gw, now, 0)]
        )

    await commit(
        db, reading("p-1", {Quantity.SYSTOLIC: 170, Quantity.DIASTOLIC: 110}), cache.plans, now
    )
    await commit(db, reading("p-2", {Quantity.SPO2: 85}), cache.plans, now)
    await db.execute(  # as if the diastolic episode had opened, cleared, and its off-delay passed
        "UPDATE alerts SET status = 'cleared', resolve_due_at = $1 "
        "WHERE patient_id = 'p-1' AND rule = 'diastolic.high'",
        now,
    )
    p1["care_plan"] = {"version": 3, "rules": [rule("systolic.severe", "systolic", 200)]}
    await registry.apply(db, registry.parse(described))
    await cache.load(db)

    later = now + timedelta(minutes=10)
    first = await episodes.run_due(db, cache.plans, later, limit=1)
    second = await episodes.run_due(db, cache.plans, later, limit=1)
    alerts = await db.fetch("SELECT rule, status, resolve_due_at FROM alerts ORDER BY id")
    assert (0, 1) == (first.tally.opened.total(), second.tally.opened.total())
    assert [
        ("systolic.high", "withdrawn", None),
        ("diastolic.high", "cleared", None),
        ("spo2.low", "open", None),
    ] == [tuple(a) for a in alerts]
    assert [] == await db.fetch(episodes._DUE, later, 10)
    withdrawn = await db.fetchrow(
        "SELECT actor, details FROM alert_events WHERE kind = 'withdrawn'"
    )
    assert ("scheduler", {"reason": "rule_not_in_plan"}) == (
        withdrawn["actor"],
        json.loads(withdrawn["details"]),
    )
