"""The TimescaleDB path, against a real TimescaleDB 2.x server when one is given.

TimescaleDB cannot be installed on the machines this suite normally runs on, so these
tests need ``HOMEMONITOR_TEST_TIMESCALEDB_URL`` (a superuser DSN to an empty database on a
server with the extension, e.g. ``docker run -e POSTGRES_PASSWORD=x -p 5433:5432
timescale/timescaledb:2.17.2-pg16``); without it they skip and say so.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.storage import database
from homemonitor.storage.transaction import commit
from tests.conftest import REGISTRY

URL = os.environ.get("HOMEMONITOR_TEST_TIMESCALEDB_URL")
pytestmark = pytest.mark.skipif(
    URL is None, reason="set HOMEMONITOR_TEST_TIMESCALEDB_URL to a TimescaleDB 2.x database"
)


@pytest.fixture
async def tsdb() -> AsyncIterator[asyncpg.Connection]:
    assert URL is not None
    conn = await asyncpg.connect(URL)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    yield conn
    await conn.close()


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
