"""The TimescaleDB path, against a real TimescaleDB 2.x server when one is given.

TimescaleDB is not installed on the machines this suite normally runs on, so most of
these tests need ``HOMEMONITOR_TEST_TIMESCALEDB_URL`` (a superuser DSN to a server that
preloads the extension, where each test creates a database of its own:
``../shared/tools/timescaledb/start.sh``, or e.g.
``docker run -e POSTGRES_PASSWORD=x -p 5433:5432 timescale/timescaledb:2.17.2-pg16``);
without it they skip and say so. One test runs on the suite's own PostgreSQL when the
extension is installed there but not preloaded.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.contract.readings import Metric, Quality, Quantity, Reading
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.storage import database
from homemonitor.storage.transaction import commit
from tests.conftest import REGISTRY

URL = os.environ.get("HOMEMONITOR_TEST_TIMESCALEDB_URL")
needs_tsdb = pytest.mark.skipif(
    URL is None, reason="set HOMEMONITOR_TEST_TIMESCALEDB_URL to a TimescaleDB 2.x database"
)


_databases = itertools.count()


@pytest.fixture
async def tsdb() -> AsyncIterator[asyncpg.Connection]:
    """A database of this test's own on the TimescaleDB server (tests run in parallel)."""
    assert URL is not None
    name = f"hm_tsdb_{os.getpid()}_{next(_databases)}"
    admin = await asyncpg.connect(URL)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
        conn = await asyncpg.connect(URL, database=name)
        try:
            yield conn
        finally:
            await conn.close()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@needs_tsdb
async def test_migrations_build_hypertable_policies_and_aggregate(tsdb: asyncpg.Connection) -> None:
    """readings becomes a hypertable with compression and retention jobs and an hourly aggregate."""
    mode = await database.migrate(tsdb, retention="5 years")
    assert database.StorageMode.TIMESCALEDB == mode
    hypertables = await tsdb.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables"
    )
    jobs = await tsdb.fetch("SELECT proc_name FROM timescaledb_information.jobs")
    caggs = await tsdb.fetch("SELECT view_name FROM timescaledb_information.continuous_aggregates")
    assert "readings" in {r["hypertable_name"] for r in hypertables}
    procs = {r["proc_name"] for r in jobs}
    assert {
        "policy_compression",
        "policy_retention",
        "policy_refresh_continuous_aggregate",
    } <= procs
    assert ["readings_hourly"] == [r["view_name"] for r in caggs]
    assert database.StorageMode.TIMESCALEDB == await database.migrate(tsdb)  # idempotent


@needs_tsdb
async def test_batches_store_once_and_trend_reads_back(tsdb: asyncpg.Connection) -> None:
    """A batch committed twice is stored once; the hourly trend answers in real time."""
    await database.migrate(tsdb)
    await registry.apply(tsdb, registry.parse(REGISTRY))
    cache = registry.RegistryCache()
    await cache.load(tsdb)
    now = datetime.now(UTC)
    reading = Reading(
        "cuff-1",
        Metric.BLOOD_PRESSURE,
        now - timedelta(minutes=5),
        {Quantity.SYSTOLIC: 190.0, Quantity.DIASTOLIC: 100.0},
    )
    message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", now, 0.0)
    batch = Batch([message], [Candidate(reading, "p-1", "gw-1", now, 0)])
    first = await commit(tsdb, batch, cache.plans)
    second = await commit(tsdb, batch, cache.plans)
    assert (1, {"urgent": 1}, 0, 1) == (
        first.stored,
        dict(first.opened),
        second.stored,
        second.duplicates,
    )
    trend = await tsdb.fetch("SELECT n, systolic FROM readings_hourly WHERE patient_id = 'p-1'")
    assert [(1, 190.0)] == [(r["n"], r["systolic"]) for r in trend]


_HOURLY = """
SELECT patient_id, metric, bucket, n, round(systolic::numeric, 6) AS systolic,
       round(body_weight::numeric, 6) AS body_weight, round(spo2::numeric, 6) AS spo2,
       spo2_min, systolic_max
FROM readings_hourly ORDER BY patient_id, metric, bucket
"""
#: The same trend computed from the raw rows: what readings_hourly must agree with.
_GROUPED = """
SELECT patient_id, metric, time_bucket(INTERVAL '1 hour', measured_at) AS bucket,
       count(*) AS n, round(avg(systolic)::numeric, 6) AS systolic,
       round(avg(body_weight)::numeric, 6) AS body_weight, round(avg(spo2)::numeric, 6) AS spo2,
       min(spo2) AS spo2_min, max(systolic) AS systolic_max
FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


async def _store(conn: asyncpg.Connection, cache: registry.RegistryCache, *ages: timedelta) -> None:
    """One batch, as the worker commits it: a weight and an SpO2 reading measured ``ages`` ago."""
    now = datetime.now(UTC)
    message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", now, 0.0)
    candidates = []
    for i, age in enumerate(ages):
        weight = Reading("scale-1", Metric.BODY_WEIGHT, now - age, {Quantity.BODY_WEIGHT: 78 + i})
        spo2 = Reading("oxi-2", Metric.SPO2, now - age, {Quantity.SPO2: 95.0 + i % 3})
        candidates += [
            Candidate(weight, "p-1", "gw-1", now, 0),
            Candidate(spo2, "p-2", "gw-2", now, 0),
        ]
    result = await commit(conn, Batch([message], candidates), cache.plans)
    assert 2 * len(ages) == result.stored


@needs_tsdb
async def test_hourly_aggregate_holds_every_stored_reading(tsdb: asyncpg.Connection) -> None:
    """History, readings stored 5 and 20 days late, dropped chunks: readings_hourly == GROUP BY."""
    await database.migrate(tsdb)
    await registry.apply(tsdb, registry.parse(REGISTRY))
    cache = registry.RegistryCache()
    await cache.load(tsdb)
    job = await tsdb.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
    )
    # Runs by hand only: a background run at the same time makes ours fail ("concurrent refresh").
    await tsdb.execute("SELECT alter_job($1, scheduled => false)", job)
    day = timedelta(days=1)
    await _store(tsdb, cache, 100 * day, 60 * day, 40 * day, timedelta(hours=3))  # history
    await tsdb.execute(f"CALL run_job({job})")
    after_history = await tsdb.fetch(_HOURLY)
    assert await tsdb.fetch(_GROUPED) == after_history
    # A gateway's backlog, stored after its hours were materialised, in a batch with news.
    await _store(tsdb, cache, 5 * day, 20 * day, 20 * day + timedelta(minutes=5))
    await _store(tsdb, cache, timedelta(minutes=10), 5 * day + timedelta(hours=1))
    await tsdb.execute(f"CALL run_job({job})")
    after_late = await tsdb.fetch(_HOURLY)
    assert await tsdb.fetch(_GROUPED) == after_late
    # Retention drops raw chunks; the aggregate keeps nothing the raw table no longer has.
    await tsdb.execute("SELECT drop_chunks('readings', older_than => now() - INTERVAL '50 days')")
    await tsdb.execute(f"CALL run_job({job})")
    after_drop = await tsdb.fetch(_HOURLY)
    assert await tsdb.fetch(_GROUPED) == after_drop
    readings = [sum(r["n"] for r in rows) for rows in (after_history, after_late, after_drop)]
    assert [8, 18, 18 - 4] == readings  # the drop took the 100 and 60 days old ones


@needs_tsdb
async def test_quality_column_joins_a_compressed_hypertable(
    tsdb: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0009 on a deployment with compressed history: old rows read '{}', flags store anywhere."""
    every = database._scripts
    monkeypatch.setattr(
        database, "_scripts", lambda folder: [s for s in every(folder) if s[0] < "0009"]
    )
    await database.migrate(tsdb)  # the schema before 0009, TimescaleDB part included
    await tsdb.execute(  # history, as the service before 0009 wrote it
        "INSERT INTO readings (device_id, metric, measured_at, patient_id, received_at, spo2,"
        " source) SELECT 'oxi-2', 'spo2', now() - i * INTERVAL '1 day', 'p-2', now(), 95,"
        " 'json' FROM generate_series(42, 45) AS i"
    )
    compressed = await tsdb.fetch(
        "SELECT compress_chunk(c) FROM show_chunks('readings', older_than => INTERVAL '30 days') c"
    )
    monkeypatch.setattr(database, "_scripts", every)
    await database.migrate(tsdb)
    await registry.apply(tsdb, registry.parse(REGISTRY))  # today's registry needs today's schema
    cache = registry.RegistryCache()
    await cache.load(tsdb)
    before = await tsdb.fetch("SELECT quality FROM readings")
    now = datetime.now(UTC)
    flagged = [
        Reading(
            "oxi-2",
            Metric.SPO2,
            now - age,
            {Quantity.SPO2: 91.0},
            quality=frozenset({Quality.LOW_PERFUSION, Quality.POOR_SIGNAL}),
        )
        for age in (timedelta(days=45, minutes=1), timedelta(minutes=5))  # compressed, new
    ]
    message = Inbound("homemonitor/v1/gw/gw-2/readings", b"{}", now, 0.0)
    batch = Batch([message], [Candidate(r, "p-2", "gw-2", now, 0) for r in flagged])
    first, again = await commit(tsdb, batch, cache.plans), await commit(tsdb, batch, cache.plans)
    rows = await tsdb.fetch(
        "SELECT quality FROM readings WHERE quality <> '{}' ORDER BY measured_at"
    )
    assert [] != compressed  # history in one or two 7-day chunks, all compressed now
    assert [[]] * 4 == [r["quality"] for r in before]
    assert (2, 0, 2) == (first.stored, again.stored, again.duplicates)
    assert [["low_perfusion", "poor_signal"]] * 2 == [r["quality"] for r in rows]


async def _p1_planned(tsdb: asyncpg.Connection, plan: dict[str, object]) -> registry.RegistryCache:
    """Migrated, the test registry applied with ``plan`` as p-1's; the worker's cache of it."""
    await database.migrate(tsdb)
    described = copy.deepcopy(REGISTRY)
    described["patients"][0]["care_plan"] = plan
    await registry.apply(tsdb, registry.parse(described))
    cache = registry.RegistryCache()
    await cache.load(tsdb)
    return cache


@needs_tsdb
async def test_a_trend_rule_reads_its_history_across_chunks_compressed_ones_too(
    tsdb: asyncpg.Connection,
) -> None:
    """A 10-day change rule: its reference sits in a compressed chunk; one episode, explained."""
    rule = {
        "id": "weight.gain_10d",
        "kind": "change",
        "quantity": "body_weight",
        "direction": "rise",
        "warning": 2.0,
        "window_hours": 240,
    }
    cache = await _p1_planned(tsdb, {"version": 2, "rules": [rule]})
    now = datetime.now(UTC)
    message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", now, 0.0)

    def weight(age: timedelta, kg: float) -> Batch:
        reading = Reading("scale-1", Metric.BODY_WEIGHT, now - age, {Quantity.BODY_WEIGHT: kg})
        return Batch([message], [Candidate(reading, "p-1", "gw-1", now, 0)])

    await commit(tsdb, weight(timedelta(days=9), 80.0), cache.plans)
    compressed = await tsdb.fetchval(
        "SELECT count(compress_chunk(format('%I.%I', chunk_schema, chunk_name)::regclass)) "
        "FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' AND range_end < now()"
    )
    result = await commit(tsdb, weight(timedelta(minutes=5), 82.5), cache.plans)
    alert = await tsdb.fetchrow("SELECT rule, kind, opening_explanation FROM alerts")
    assert (1, {"warning": 1}) == (compressed, dict(result.opened))
    assert ("weight.gain_10d", "change", 80.0) == (
        alert["rule"],
        alert["kind"],
        json.loads(alert["opening_explanation"])["facts"]["reference"],
    )


async def test_installed_but_not_preloaded_runs_on_plain_postgresql(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """timescaledb installed, not preloaded: migrate works in plain mode, conn alive, says how."""
    conn = await asyncpg.connect(dsn)
    try:
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
        if not available or "timescaledb" in preload:
            pytest.skip("needs the timescaledb extension installed but not preloaded")
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        with caplog.at_level(logging.INFO, logger="homemonitor.storage.database"):
            mode = await database.migrate(conn)
        alive = await conn.fetchval("SELECT 1")
        hourly_kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'readings_hourly'"
        )
    finally:
        await conn.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (database.StorageMode.POSTGRESQL, 1, "v") == (mode, alive, hourly_kind)
    assert 1 == len(warnings)
    assert "add 'timescaledb' to shared_preload_libraries and restart" in warnings[0]


@needs_tsdb
async def test_a_silence_is_found_on_a_hypertable_with_compressed_chunks(
    tsdb: asyncpg.Connection,
) -> None:
    """Daily weights over three chunks, the older compressed: one missing-data alert."""
    from homemonitor.alerts import silence  # noqa: PLC0415 - only this test needs it

    weight = {"metric": "body_weight", "every_hours": 24, "tolerate_hours": 72}
    cache = await _p1_planned(tsdb, {"version": 2, "expected": [weight]})
    now = datetime.now(UTC)
    last = now - timedelta(days=4)
    for n in range(20, -1, -1):
        at = last - timedelta(days=n)
        reading = Reading("scale-1", Metric.BODY_WEIGHT, at, {Quantity.BODY_WEIGHT: 80.0})
        message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", at, 0.0)
        await commit(
            tsdb, Batch([message], [Candidate(reading, "p-1", "gw-1", at, 0)]), cache.plans
        )
    await tsdb.execute(  # gw-1 is alive: the silence is the patient's
        "UPDATE gateways SET last_seen_at = $1 WHERE id = 'gw-1'", now
    )
    compressed = await tsdb.fetchval(
        "SELECT count(compress_chunk(format('%I.%I', chunk_schema, chunk_name)::regclass)) "
        "FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' AND range_end < $1",
        last - timedelta(days=7),
    )
    done = await silence.check(tsdb, cache.plans, now)
    rows = await tsdb.fetch("SELECT rule, opening_measured_at FROM alerts")
    assert compressed >= 1
    assert {"warning": 1} == dict(done.tally.opened)
    assert [("missing.body_weight", last)] == [tuple(r) for r in rows]
