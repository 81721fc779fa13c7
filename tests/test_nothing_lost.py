"""Nothing acknowledged is lost: worker killed, database held, broker session kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateBroker
from tests.conftest import (
    BOTH_BROKERS,
    RunningService,
    WorkerProcess,
    numbered,
    publisher,
    settings_for,
    wait_until,
)

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


@pytest.mark.slow
@BOTH_BROKERS
async def test_sigkill_mid_stream_loses_nothing(
    worker_process: WorkerProcess, broker: PrivateBroker, db: asyncpg.Connection
) -> None:
    """Worker SIGKILLed mid-stream, restarted: every reading the broker PUBACKed is stored once."""
    total = 4000
    worker_process.start()
    await worker_process.ready()  # from here on the broker keeps the worker's session
    acked: list[int] = []
    killed = asyncio.Event()

    async def publish_all() -> None:
        async with publisher(broker) as gw:
            for seq in range(total):
                await gw.publish(readings_topic("gw-1"), numbered(seq, "cuff-1", BASE), qos=1)
                acked.append(seq)
                if seq % 10 == 0:
                    await asyncio.sleep(0.005)  # a steady stream of about 1 500 readings/s

    async def kill_midway() -> None:
        await wait_until(
            lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n >= 500, 60
        )
        worker_process.kill()
        killed.set()
        worker_process.start()

    await asyncio.gather(publish_all(), kill_midway())
    assert killed.is_set()
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n >= total, 90)
    stored = await db.fetch("SELECT message_id FROM readings")
    assert list(range(total)) == acked
    assert sorted(acked) == sorted(int(r["message_id"]) for r in stored)
    assert 0 == worker_process.terminate()


@BOTH_BROKERS
async def test_nothing_is_acknowledged_before_commit(
    db: asyncpg.Connection, dsn: str, broker: PrivateBroker
) -> None:
    """A message whose commit is blocked is not acknowledged: a worker that dies gets it back."""
    settings = settings_for(dsn, broker, mqtt_client_id="hm-ack-test", shutdown_grace_s=0.5)
    first = RunningService(settings, http=False)  # it is cancelled: no server to leak
    await first.start()
    blocker = await asyncpg.connect(dsn)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), numbered(1, "cuff-1", BASE), qos=1)
    # The worker has the message and waits on the lock: it must not have acknowledged it.
    await wait_until(lambda: first.metric_async("homemonitor_inflight_messages"), lambda n: n == 1)
    assert first.task is not None
    first.task.cancel()  # the worker dies with the commit pending
    with pytest.raises(asyncio.CancelledError):
        await first.task
    await tx.rollback()
    await blocker.close()
    assert 0 == await db.fetchval("SELECT count(*) FROM readings")
    second = RunningService(settings, http=False)  # same client id: the broker's session redelivers
    await second.start()
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
    await second.stop()
