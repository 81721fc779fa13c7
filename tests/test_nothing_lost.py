"""Nothing acknowledged is lost: worker killed, database held, broker session kept."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto, free_port
from tests.conftest import RunningService, numbered, publisher, settings_for, wait_until

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


class WorkerProcess:
    """``homemonitor run`` in a process of its own, so it can be SIGKILLed."""

    def __init__(self, dsn: str, broker: PrivateMosquitto, log: Path) -> None:
        self.env = {
            **os.environ,
            "HOMEMONITOR_DATABASE_URL": dsn,
            "HOMEMONITOR_MQTT_HOST": broker.host,
            "HOMEMONITOR_MQTT_PORT": str(broker.port),
            "HOMEMONITOR_MQTT_CLIENT_ID": "hm-kill-test",
            "HOMEMONITOR_BATCH_MAX": "50",
            "HOMEMONITOR_HTTP_PORT": str(free_port()),
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "homemonitor.cli", "run"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self) -> None:
        """Wait until the worker has its session and subscription (``/ready``)."""
        url = f"http://127.0.0.1:{self.env['HOMEMONITOR_HTTP_PORT']}/ready"

        async def probe() -> int:
            async with httpx.AsyncClient() as http:
                try:
                    return (await http.get(url)).status_code
                except httpx.TransportError:
                    return 0

        await wait_until(probe, lambda code: code == 200, 30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def worker_process(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, tmp_path: Path
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(dsn, broker, tmp_path / "worker.log")
    yield w
    if w.proc is not None and w.proc.poll() is None:
        w.kill()


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(
    worker_process: WorkerProcess, broker: PrivateMosquitto, db: asyncpg.Connection
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


async def test_nothing_is_acknowledged_before_commit(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
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
