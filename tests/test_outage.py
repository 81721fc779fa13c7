"""PostgreSQL goes away under load: the worker holds, acknowledges nothing, and catches up."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from homemonitor import registry
from homemonitor.app import serve
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

OUTAGE_S = float(os.environ.get("HOMEMONITOR_TEST_OUTAGE_S", "15"))
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


@pytest.mark.slow
async def stored_numbers(dsn: str, at_least: int) -> list[int]:
    """The sequence numbers stored, once at least ``at_least`` readings are (60 s at most)."""
    conn = await asyncpg.connect(dsn)
    try:
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) FROM readings"), lambda n: n >= at_least, 60
        )
        return sorted(
            int(r["message_id"]) for r in await conn.fetch("SELECT message_id FROM readings")
        )
    finally:
        await conn.close()


async def test_database_outage_loses_nothing_and_stays_bounded(
    own_postgres: PrivatePostgres, broker: PrivateMosquitto
) -> None:
    """PostgreSQL down under load: /ready false, in-flight bounded, then all stored once.

    Down for OUTAGE_S (15 s; HOMEMONITOR_TEST_OUTAGE_S). Meanwhile the replica exports no
    open-alert count: it cannot know it.
    """
    conn = await asyncpg.connect(own_postgres.dsn)
    await database.migrate(conn)
    await registry.apply(conn, registry.parse(REGISTRY))
    await conn.close()
    max_inflight = 200
    svc = RunningService(
        settings_for(own_postgres.dsn, broker, max_inflight=max_inflight, batch_max=50)
    )
    await svc.start()
    published: list[int] = []
    outage_over = asyncio.Event()

    async def alerts_open() -> float | None:
        return svc.metrics.registry.get_sample_value(
            "homemonitor_alerts_open", {"severity": "urgent"}
        )

    # until 200 readings after the outage is over
    streaming = asyncio.create_task(publish_numbered(broker, published, outage_over, 200, BASE))
    await wait_until(
        lambda: svc.metric_async("homemonitor_readings_stored_total"), lambda n: n >= 100
    )
    await wait_until(alerts_open, lambda n: n == 0)  # read from the database
    own_postgres.stop()
    ready_codes: list[int] = []
    inflight: list[float] = []
    async with httpx.AsyncClient(base_url=svc.url) as http:
        loop = asyncio.get_running_loop()
        until = loop.time() + OUTAGE_S
        while loop.time() < until:
            ready_codes.append((await http.get("/ready")).status_code)
            inflight.append(svc.metric("homemonitor_inflight_messages"))
            await asyncio.sleep(0.5)
    open_alerts_during_outage = await alerts_open()
    published_during_outage = len(published)
    own_postgres.start()
    outage_over.set()
    await streaming
    stored = await stored_numbers(own_postgres.dsn, len(published))
    await wait_until(lambda: svc.metric_async("homemonitor_database_up"), lambda v: v == 1)
    await svc.stop()
    assert published == stored  # nothing lost, nothing twice
    assert 503 in ready_codes[2:]  # not ready while the database is down
    assert max(inflight) <= max_inflight  # memory bounded: the broker keeps the rest
    assert published_during_outage > max_inflight + 1000  # the broker did hold a real backlog
    assert open_alerts_during_outage is None  # unknown, not a stale number


async def test_service_started_before_the_database_reports_it_and_recovers(
    own_postgres: PrivatePostgres, broker: PrivateMosquitto
) -> None:
    """Booted with PostgreSQL down: /health answers, /ready is 503, database_up is 0; then ready."""
    own_postgres.stop()
    svc = RunningService(settings_for(own_postgres.dsn, broker))
    svc.stop_event = asyncio.Event()
    svc.task = asyncio.create_task(
        serve(svc.settings, svc.stop_event, metrics=svc.metrics, health=svc.health)
    )
    async with httpx.AsyncClient(base_url=svc.url) as http:
        await wait_until(_status(http, "/health"), lambda code: code == 200)
        assert 503 == (await http.get("/ready")).status_code
        metrics = (await http.get("/metrics")).text
        assert "homemonitor_database_up 0.0" in metrics
        own_postgres.start()
        await wait_until(_status(http, "/ready"), lambda code: code == 200, 60)
        assert "homemonitor_database_up 1.0" in (await http.get("/metrics")).text
    await svc.stop()


def _status(http: httpx.AsyncClient, path: str) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        try:
            return (await http.get(path)).status_code
        except httpx.TransportError:
            return 0

    return probe


@pytest.mark.slow
async def test_hung_database_is_detected_and_the_worker_recovers(
    own_postgres: PrivatePostgres, broker: PrivateMosquitto
) -> None:
    """PostgreSQL frozen (SIGSTOP): /ready 503, database_up 0 in seconds; SIGCONT: all stored."""
    conn = await asyncpg.connect(own_postgres.dsn)
    await database.migrate(conn)
    await registry.apply(conn, registry.parse(REGISTRY))
    await conn.close()
    svc = RunningService(settings_for(own_postgres.dsn, broker, batch_max=20))
    await svc.start()
    published: list[int] = []
    async with publisher(broker) as gw:
        for seq in range(20):
            await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
            published.append(seq)
    await wait_until(
        lambda: svc.metric_async("homemonitor_readings_stored_total"), lambda n: n == 20
    )
    resumed = asyncio.Event()

    loop = asyncio.get_running_loop()
    codes: list[int] = []
    gauge: list[float] = []
    async with httpx.AsyncClient(base_url=svc.url) as http:
        own_postgres.pause()
        try:
            hung_at = loop.time()  # idle: only the health probe talks to the database
            await wait_until(_status(http, "/ready"), lambda code: code == 503, 8)
            detected_after = loop.time() - hung_at
            assert 0 == svc.metric("homemonitor_database_up")
            # while the database is hung, and 100 readings after it
            streaming = asyncio.create_task(
                publish_numbered(broker, published, resumed, 100, BASE, pause=0.01)
            )
            # Readings arrive and a commit hangs: nothing may call the database healthy.
            until = loop.time() + 6
            while loop.time() < until:
                codes.append((await http.get("/ready")).status_code)
                gauge.append(svc.metric("homemonitor_database_up"))
                await asyncio.sleep(0.25)
        finally:
            own_postgres.resume()
        resumed.set()
        await wait_until(_status(http, "/ready"), lambda code: code == 200, 60)
        await streaming
    stored = await stored_numbers(own_postgres.dsn, len(published))
    await svc.stop()
    assert detected_after < 6
    assert {503} == set(codes)
    assert {0.0} == set(gauge)
    assert published == stored  # nothing lost, nothing twice
