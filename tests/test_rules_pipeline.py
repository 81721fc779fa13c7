"""The rules engine through the whole pipeline: gateway → broker → worker → episodes + events."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.contract.protocol import readings_topic
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.embedded import PrivateMosquitto, PrivatePostgres
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.storage.transaction import commit
from tests.conftest import (
    REGISTRY,
    WEIGHT_GAIN_3D,
    RunningService,
    bp,
    new_database,
    publisher,
    settings_for,
    wait_until,
)

NOW = datetime.now(UTC).replace(microsecond=0)

#: p-1's plan in these tests: the heart-failure weight rule and its blood-pressure bounds.
PLAN: dict[str, Any] = {
    "version": 2,
    "changed_by": "cl-a1",
    "reason": "weight trend rule",
    "rules": [WEIGHT_GAIN_3D],
    "thresholds": {"systolic": {"high": {"warning": 160, "urgent": 180}}},
}


def _described() -> dict[str, Any]:
    described = copy.deepcopy(REGISTRY)
    described["patients"][0]["care_plan"] = PLAN
    return described


def weights(*readings: tuple[datetime, float]) -> bytes:
    """One message of p-1's scale with ``(measured_at, kg)`` readings, in the order given."""
    items = [
        {"device_id": "scale-1", "metric": "body_weight", "measured_at": t.isoformat(), "value": v}
        for t, v in readings
    ]
    return json.dumps({"v": 1, "readings": items}).encode()


def _bp(at: datetime, systolic: float) -> bytes:
    return bp("cuff-1", systolic, 85, at)


async def _apply_plan(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await registry.apply(conn, registry.parse(_described()))
    finally:
        await conn.close()


@pytest.fixture
async def worker(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> AsyncIterator[RunningService]:
    """The worker alone, with p-1 on :data:`PLAN` (version 2)."""
    await registry.apply(db, registry.parse(_described()))
    svc = RunningService(settings_for(dsn, broker), http=False)
    await svc.start()
    yield svc
    await svc.stop()


async def _publish(broker: PrivateMosquitto, *payloads: bytes) -> None:
    async with publisher(broker) as gw:
        for payload in payloads:
            await gw.publish(readings_topic("gw-1"), payload, qos=1)


async def _stored(db: asyncpg.Connection, n: int) -> None:
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda c: c == n)


async def _events(db: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await db.fetch("SELECT alert_id, kind, actor FROM alert_events ORDER BY id")
    return [(r["alert_id"], r["kind"], r["actor"]) for r in rows]


async def test_a_change_rule_opens_an_episode_that_explains_itself(
    worker: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """2.4 kg above the lowest of 3 days: one change episode, its sentence and facts stored."""
    await _publish(
        broker,
        weights((NOW - timedelta(hours=50), 80.0), (NOW - timedelta(hours=26), 80.6)),
        weights((NOW - timedelta(minutes=10), 82.4)),
    )
    alert = await wait_until(lambda: db.fetchrow("SELECT * FROM alerts"), lambda r: r is not None)
    explanation = json.loads(alert["opening_explanation"])
    assert (
        "weight.gain_3d",
        "change",
        "body_weight",
        "rise",
        "warning",
        "open",
        2,
        82.4,
        2.0,
    ) == (
        alert["rule"],
        alert["kind"],
        alert["quantity"],
        alert["direction"],
        alert["severity"],
        alert["status"],
        alert["plan_version"],
        alert["opening_value"],
        alert["threshold"],
    )
    assert (
        "weight 82.4 kg, 2.4 kg above the lowest of the previous 3 days (80 kg); "
        "plan v2: 2 kg or more in 3 days"
    ) == explanation["sentence"]
    assert {
        "sv": "vikt 82,4 kg, 2,4 kg över den lägsta de föregående 3 dagarna (80 kg); "
        "plan v2: 2 kg eller mer på 3 dagar",
        "en": explanation["sentence"],
    } == explanation["sentences"]
    assert (80.0, 2.4, 2) == (
        explanation["facts"]["reference"],
        round(explanation["facts"]["delta"], 6),
        explanation["plan_version"],
    )
    assert [(alert["id"], "opened", "rule")] == await _events(db)
    # counted after the commit that made the row visible: a moment later, not before
    opened = {"severity": "warning"}
    await wait_until(
        lambda: worker.metric_async("homemonitor_alerts_opened_total", opened), lambda n: n == 1
    )


async def test_a_warning_resolves_itself_when_it_clears_and_an_urgent_latches(
    worker: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Warning then normal: auto-resolved. Urgent then normal: cleared, kept for a clinician."""
    for n, (minutes, systolic) in enumerate([(40, 165), (30, 120), (20, 185), (10, 121)], 1):
        await _publish(broker, _bp(NOW - timedelta(minutes=minutes), systolic))
        await _stored(db, n)
    alerts = await db.fetch(
        "SELECT id, status, severity, peak_severity, resolved_by, cleared_at IS NOT NULL AS c "
        "FROM alerts ORDER BY id"
    )
    first, second = (a["id"] for a in alerts)
    assert [
        ("auto_resolved", "warning", "warning", None, False),
        ("cleared", "urgent", "urgent", None, True),
    ] == [tuple(a)[1:] for a in alerts]
    assert [
        (first, "opened", "rule"),
        (first, "auto_resolved", "rule"),
        (second, "opened", "rule"),
        (second, "cleared", "rule"),
    ] == await _events(db)


def _backlog(ongoing: bool) -> list[tuple[datetime, float]]:
    """Six days of daily weights ending now: a gain still going on, or one long past."""
    if ongoing:
        kilos = [80.0, 80.2, 79.9, 80.1, 80.2, 81.4, 82.6]
    else:
        kilos = [80.0, 82.4, 83.0, 80.3, 80.1, 80.0, 80.2]
    days = [NOW - timedelta(days=6 - i, hours=2) for i in range(7)]
    return list(zip(days, kilos, strict=True))


async def _publish_backlog(
    broker: PrivateMosquitto, readings: Sequence[tuple[datetime, float]]
) -> None:
    """The backlog as a gateway sends it after an outage: late, in two messages, shuffled."""
    shuffled = list(readings)
    random.Random(10).shuffle(shuffled)
    await _publish(broker, weights(*shuffled[:4]), weights(*shuffled[4:]))


async def test_a_backlog_ending_in_an_ongoing_gain_opens_exactly_one_episode(
    worker: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A week's backlog, late and out of order, still gaining now: one episode, at the newest."""
    readings = _backlog(ongoing=True)
    await _publish_backlog(broker, readings)
    await _stored(db, len(readings))
    alerts = await db.fetch("SELECT rule, status, opening_measured_at FROM alerts")
    assert [("weight.gain_3d", "open", readings[-1][0])] == [tuple(a) for a in alerts]


async def test_a_backlog_of_a_gain_long_past_opens_nothing(
    worker: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A gain five days ago, back to normal since: history, not news; no episode."""
    readings = _backlog(ongoing=False)
    await _publish_backlog(broker, readings)
    await _stored(db, len(readings))
    await wait_until(
        lambda: worker.metric_async("homemonitor_readings_stored_total"), lambda n: n == 7
    )
    assert 0 == await db.fetchval("SELECT count(*) FROM alerts")


async def test_redelivery_changes_no_episode_and_writes_no_event(
    worker: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """The same backlog sent again: stored once, evaluated never, the episode as it was."""
    readings = _backlog(ongoing=True)
    await _publish_backlog(broker, readings)
    await _stored(db, len(readings))
    before = [dict(r) for r in await db.fetch("SELECT * FROM alerts ORDER BY id")]
    events = await _events(db)
    evaluated = worker.metric("homemonitor_care_plan_evaluations_total", {"path": "evaluated"})
    await _publish_backlog(broker, readings)
    await wait_until(
        lambda: worker.metric_async("homemonitor_readings_duplicate_total"),
        lambda n: n == len(readings),
    )
    assert before == [dict(r) for r in await db.fetch("SELECT * FROM alerts ORDER BY id")]
    assert events == await _events(db)
    assert evaluated == worker.metric(
        "homemonitor_care_plan_evaluations_total", {"path": "evaluated"}
    )


#: p-1's history before the interleaved readings: the weights a gain is measured against.
_HISTORY = weights((NOW - timedelta(hours=50), 80.0), (NOW - timedelta(hours=30), 80.1))
#: Readings of p-1 that arrive at the same moment: rising pressure and weight, interleaved.
_INTERLEAVED = [
    _bp(NOW - timedelta(minutes=60), 120),
    weights((NOW - timedelta(minutes=55), 80.3)),
    _bp(NOW - timedelta(minutes=50), 125),
    _bp(NOW - timedelta(minutes=40), 170),
    weights((NOW - timedelta(minutes=35), 82.5)),
    _bp(NOW - timedelta(minutes=30), 172),
    _bp(NOW - timedelta(minutes=20), 185),
    weights((NOW - timedelta(minutes=15), 83.0)),
    _bp(NOW - timedelta(minutes=10), 190),
]


async def _episodes_with(workers: int, dsn: str, broker: PrivateMosquitto) -> list[tuple[Any, ...]]:
    """The episodes :data:`_INTERLEAVED` leaves with ``workers`` workers on one shared group."""
    await _apply_plan(dsn)
    group = f"rules{workers}"
    services = [
        RunningService(settings_for(dsn, broker, mqtt_shared_group=group), http=False)
        for _ in range(workers)
    ]
    for s in services:
        await s.start()
    conn = await asyncpg.connect(dsn)
    try:
        await _publish(broker, _HISTORY)
        await _stored(conn, 2)
        await _publish(broker, *_INTERLEAVED)
        await _stored(conn, 2 + len(_INTERLEAVED))
        total = 2 + len(_INTERLEAVED)

        async def stored_by_each() -> list[float]:
            return [s.metric("homemonitor_readings_stored_total") for s in services]

        shares = await wait_until(stored_by_each, lambda counts: sum(counts) == total)
        for s in services:
            await s.stop()
        rows = await conn.fetch(
            "SELECT rule, kind, status, severity, peak_severity FROM alerts ORDER BY rule"
        )
        firsts = await conn.fetch(
            "SELECT DISTINCT ON (alert_id) kind FROM alert_events ORDER BY alert_id, id"
        )
        assert (0, ["opened"] * len(rows)) == (
            await conn.fetchval("SELECT count(*) FROM quarantine"),
            [r["kind"] for r in firsts],
        )
    finally:
        await conn.close()
    if workers > 1:
        assert all(share > 0 for share in shares), shares
    return [tuple(r) for r in rows]


async def test_two_workers_on_a_shared_subscription_give_what_one_worker_gives(
    pg_cluster: PrivatePostgres, broker: PrivateMosquitto
) -> None:
    """Interleaved readings of one patient split over two workers: the same episodes as one."""
    alone = await _episodes_with(1, await new_database(pg_cluster), broker)
    shared = await _episodes_with(2, await new_database(pg_cluster), broker)
    assert [
        ("systolic.high", "threshold", "open", "urgent", "urgent"),
        ("weight.gain_3d", "change", "open", "warning", "warning"),
    ] == alone
    assert alone == shared


async def test_readings_inside_the_quiet_envelope_skip_the_engine_until_another_writer(
    worker: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """After 80.0 kg, nothing within a 2 kg band centred on it (79.0 to 81.0) can make 2 kg
    in 3 days: 80.6 and 80.9 are not evaluated. Then a reading this worker did not store
    (another worker's, 78.5) makes its cache stale: the next 80.7 is inside the old
    envelope, but the patient's count of stored readings grew by one more than this
    worker stored, so the engine runs, on the reloaded history, and opens the 2.2 kg
    gain."""
    name = "homemonitor_care_plan_evaluations_total"
    evaluated, screened = {"path": "evaluated"}, {"path": "screened"}
    await _publish(broker, weights((NOW - timedelta(hours=50), 80.0)))
    assert 1 == await worker.counted(name, evaluated)
    await _publish(broker, weights((NOW - timedelta(hours=26), 80.6)))
    assert 1 == await worker.counted(name, screened)
    await _publish(broker, weights((NOW - timedelta(hours=3), 80.9)))
    assert 2 == await worker.counted(name, screened, at_least=2)
    assert 1 == worker.metric(name, evaluated)
    other = registry.RegistryCache()  # another worker, storing a reading of p-1
    await other.load(db)
    at = NOW - timedelta(hours=2)
    reading = Reading("scale-1", Metric.BODY_WEIGHT, at, {Quantity.BODY_WEIGHT: 78.5})
    message = Inbound(readings_topic("gw-1"), b"{}", at, 0.0)
    await commit(db, Batch([message], [Candidate(reading, "p-1", "gw-1", at, 0)]), other.plans)
    await _publish(broker, weights((NOW - timedelta(hours=1), 80.7)))
    alert = await wait_until(lambda: db.fetchrow("SELECT * FROM alerts"), lambda r: r is not None)
    assert ("weight.gain_3d", 80.7) == (alert["rule"], alert["opening_value"])
    assert 78.5 == json.loads(alert["opening_explanation"])["facts"]["reference"]
    assert 2 == await worker.counted(name, evaluated, at_least=2)
    assert 2 == worker.metric(name, screened)
