"""PostgreSQL fails over: the worker follows the promoted standby; the API reads a replica.

A primary and a synchronous streaming standby, both started here: a commit returns only
once the standby has flushed it, so whatever the worker acknowledged survives the
primary's loss.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from homemonitor import registry
from homemonitor.api.auth import issue_token
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto, PrivatePostgres
from homemonitor.storage import database
from tests.conftest import (
    REGISTRY,
    RunningService,
    numbered,
    publish_numbered,
    publisher,
    settings_for,
    wait_until,
)

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
STANDBY_NAME = "standby1"

pytestmark = pytest.mark.slow


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[PrivatePostgres, PrivatePostgres]]:
    """A migrated primary with a synchronous streaming standby, the test registry applied."""
    primary = PrivatePostgres(tmp_path / "primary")
    standby = PrivatePostgres(tmp_path / "standby", settings={"cluster_name": STANDBY_NAME})
    with primary:
        await asyncio.to_thread(standby.init_standby, primary)
        try:
            conn = await asyncpg.connect(primary.dsn)
            try:  # only now: with no standby yet, every commit would wait for one
                await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
                await conn.execute("SELECT pg_reload_conf()")
                await wait_until(lambda: _sync_state(conn), lambda state: state == "sync")
                await database.migrate(conn)
                await registry.apply(conn, registry.parse(REGISTRY))
            finally:
                await conn.close()
            yield primary, standby
        finally:
            standby.stop()


async def _sync_state(conn: asyncpg.Connection) -> str | None:
    state: str | None = await conn.fetchval(
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1", STANDBY_NAME
    )
    return state


async def _stored(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT message_id FROM readings")
    finally:
        await conn.close()
    return sorted(int(r["message_id"]) for r in rows)


async def test_worker_follows_a_promoted_standby_and_loses_nothing(
    pair: tuple[PrivatePostgres, PrivatePostgres], broker: PrivateMosquitto
) -> None:
    """Primary SIGKILLed mid-stream, standby promoted: every reading stored on it exactly once."""
    primary, standby = pair
    two_hosts = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/homemonitor"
    )
    svc = RunningService(settings_for(two_hosts, broker, batch_max=50, max_inflight=500))
    await svc.start()
    published: list[int] = []
    promoted = asyncio.Event()

    # 300 readings more once the standby is promoted
    streaming = asyncio.create_task(
        publish_numbered(broker, published, promoted, 300, BASE, pause=0.003)
    )
    try:
        await wait_until(
            lambda: svc.metric_async("homemonitor_readings_stored_total"), lambda n: n >= 300
        )
        conn = await asyncpg.connect(primary.dsn)
        try:
            sync_state = await _sync_state(conn)
        finally:
            await conn.close()
        primary.crash()  # mid-stream: commits in flight, the next batch already held
        stored_before = svc.metric("homemonitor_readings_stored_total")
        await wait_until(lambda: svc.metric_async("homemonitor_database_up"), lambda v: v == 0)
        await asyncio.to_thread(standby.promote)
        promoted.set()
        await streaming
    finally:
        if not streaming.done():
            streaming.cancel()
    stored = await wait_until(lambda: _stored(standby.dsn), lambda s: len(s) >= len(published), 30)
    await wait_until(lambda: svc.metric_async("homemonitor_database_up"), lambda v: v == 1)
    retries = svc.metric("homemonitor_commit_retries_total")
    await svc.stop()
    assert "sync" == sync_state  # the commits before the crash waited for the standby
    assert published == stored  # every reading on the new primary, none twice
    assert stored_before < len(published) - 300  # it did store after the failover
    assert retries > 0  # it held a batch and retried it, rather than dropping it


async def test_a_retry_after_an_interrupted_wait_for_the_standby_waits_again(
    pair: tuple[PrivatePostgres, PrivatePostgres], broker: PrivateMosquitto
) -> None:
    """A commit cut off while waiting for the standby is committed only locally: the retry,
    which finds every row there, must still wait for the standby before anything is acked."""
    primary, standby = pair
    svc = RunningService(settings_for(primary.dsn, broker))
    await svc.start()
    admin = await asyncpg.connect(primary.dsn)
    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
        "AND application_name = 'homemonitor'"
    )
    try:
        standby.stop()
        async with publisher(broker) as gw:
            for seq in range(5):
                await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
        first = await wait_until(lambda: admin.fetchval(waiting), lambda pid: pid is not None)
        await admin.execute("SELECT pg_terminate_backend($1)", first)  # committed locally
        again = await wait_until(
            lambda: admin.fetchval(waiting), lambda pid: pid not in (None, first)
        )
        held = svc.metric("homemonitor_inflight_messages")
        standby.start()
        await wait_until(
            lambda: svc.metric_async("homemonitor_inflight_messages"), lambda n: n == 0
        )
        on_standby = await wait_until(lambda: _stored(standby.dsn), lambda s: len(s) == 5)
    finally:
        await admin.close()
        await svc.stop()
    assert again not in (None, first)  # the retry waits for the standby, on a new connection
    assert 5 == held  # unacknowledged until the standby has the rows
    assert list(range(5)) == on_standby


async def test_a_primary_turned_read_only_is_an_outage_not_a_refusal(
    own_postgres: PrivatePostgres, broker: PrivateMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Read-only, as a demoted primary answers: held and retried, no error, nothing quarantined."""
    admin = await asyncpg.connect(own_postgres.dsn)
    await database.migrate(admin)
    await registry.apply(admin, registry.parse(REGISTRY))
    svc = RunningService(settings_for(own_postgres.dsn, broker, batch_max=10))
    await svc.start()
    count = "SELECT count(*) FROM readings"
    try:
        with caplog.at_level(logging.WARNING, logger="homemonitor.ingest.worker"):
            async with publisher(broker) as gw:
                for seq in range(10):
                    await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
                await wait_until(lambda: admin.fetchval(count), lambda n: n == 10)
                await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
                await admin.execute("SELECT pg_reload_conf()")
                for seq in range(10, 60):
                    await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
            await wait_until(lambda: svc.metric_async("homemonitor_database_up"), lambda v: v == 0)
            await admin.execute("SET default_transaction_read_only = off")
            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
            await wait_until(lambda: admin.fetchval(count), lambda n: n == 60)
        quarantined = await admin.fetchval("SELECT count(*) FROM quarantine")
        stored = await _stored(own_postgres.dsn)
    finally:
        await admin.close()
        await svc.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert list(range(60)) == stored
    assert 0 == quarantined
    assert [] == errors  # no "batch refused ... one by one": the server's state, not the batch's


async def test_api_reads_from_a_replica_and_logs_access_on_the_primary(
    pair: tuple[PrivatePostgres, PrivatePostgres], broker: PrivateMosquitto
) -> None:
    """With replay paused, the API shows what the replica has; the access log is the primary's."""
    primary, standby = pair
    svc = RunningService(settings_for(primary.dsn, broker, database_read_url=standby.dsn))
    await svc.start()
    urgent = {
        "v": 1,
        "reading": {
            "device_id": "cuff-1",
            "metric": "blood_pressure",
            "measured_at": BASE.isoformat(),
            "systolic": 190,
            "diastolic": 100,
        },
    }
    primary_conn = await asyncpg.connect(primary.dsn)
    standby_conn = await asyncpg.connect(standby.dsn)
    try:
        async with publisher(broker) as gw:
            await gw.publish(readings_topic("gw-1"), json.dumps(urgent).encode(), qos=1)
            for seq in range(1, 6):
                await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
        count = "SELECT count(*) FROM readings WHERE patient_id = 'p-1'"
        await wait_until(lambda: standby_conn.fetchval(count), lambda n: n == 6)
        await standby_conn.execute("SELECT pg_wal_replay_pause()")
        await wait_until(
            lambda: standby_conn.fetchval("SELECT pg_get_wal_replay_pause_state()"),
            lambda state: state == "paused",
        )
        async with publisher(broker) as gw:  # committed on the primary, not yet replayed
            for seq in range(6, 11):
                await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
        await wait_until(lambda: primary_conn.fetchval(count), lambda n: n == 11)
        token = await issue_token(primary_conn, "cl-a1")  # the paused replica has no such token
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=svc.url, headers=auth) as http:
            readings = await http.get("/api/v1/patients/p-1/readings")
            alerts = await http.get("/api/v1/alerts")
            logged = await primary_conn.fetch(
                "SELECT action, patient_id FROM access_log WHERE clinician_id = 'cl-a1' "
                "AND outcome = 'allowed' ORDER BY id"
            )
            await standby_conn.execute("SELECT pg_wal_replay_resume()")

            async def readings_now() -> int:
                return len((await http.get("/api/v1/patients/p-1/readings")).json())

            caught_up = await wait_until(readings_now, lambda n: n == 11)
    finally:
        await primary_conn.close()
        await standby_conn.close()
        await svc.stop()
    assert (200, 200) == (readings.status_code, alerts.status_code)
    assert 6 == len(readings.json())  # the replica's view: five readings behind the primary
    assert [("p-1", "urgent")] == [(a["patient_id"], a["severity"]) for a in alerts.json()]
    assert [("view_readings", "p-1"), ("list_alerts", "p-1")] == [tuple(r) for r in logged]
    assert 11 == caught_up
