"""The MQTT side: reconnecting after a broker crash, and workers sharing a subscription."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import RunningService, numbered, publisher, settings_for, wait_until

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


async def test_worker_reconnects_after_broker_crash(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Broker SIGKILLed and restarted: /ready goes false, the worker reconnects, readings flow."""
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-2"), numbered(0, "oxi-2", BASE), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
    broker.kill()
    async with httpx.AsyncClient(base_url=service.url) as http:
        await wait_until(lambda: http.get("/ready"), lambda r: r.status_code == 503)
        broker.start()
        await wait_until(lambda: http.get("/ready"), lambda r: r.status_code == 200, 60)
    async with publisher(broker, "gw-2") as gw:
        await gw.publish(readings_topic("gw-2"), numbered(1, "oxi-2", BASE), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 2)


async def test_shared_subscription_splits_without_duplicates(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> None:
    """Two workers in one MQTT 5 shared group split the stream; each reading is stored once."""
    workers = [
        RunningService(settings_for(dsn, broker, mqtt_shared_group="hm"), http=False)
        for _ in range(2)
    ]
    for w in workers:
        await w.start()
    total = 400
    async with publisher(broker) as gw:
        for seq in range(total):
            await gw.publish(readings_topic("gw-2"), numbered(seq, "oxi-2", BASE), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == total)
    shares = [w.metric("homemonitor_readings_stored_total") for w in workers]
    for w in workers:
        await w.stop()
    assert total == sum(shares)
    assert all(share > 0 for share in shares)


async def test_worker_speaks_mqtt_311_with_a_persistent_session(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> None:
    """HOMEMONITOR_MQTT_PROTOCOL=3.1.1: a clean_session=false session that survives a restart."""
    settings = settings_for(dsn, broker, mqtt_protocol="3.1.1")
    worker = RunningService(settings, http=False)
    await worker.start()
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-2"), numbered(0, "oxi-2", BASE), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
    await worker.stop()
    async with publisher(broker) as gw:  # while the worker is away: kept by its session
        await gw.publish(readings_topic("gw-2"), numbered(1, "oxi-2", BASE), qos=1)
    await worker.start()
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 2)
    await worker.stop()
