"""Gateway to database: store-and-forward across a broker outage and a gateway crash."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from homemonitor.contract.protocol import PayloadFormat
from homemonitor.embedded import PrivateMosquitto
from homemonitor.runtime import Backoff
from homemonitor_devices.gateway import Gateway
from tests.conftest import RunningService, numbered, wait_until

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

CHILD = """
import asyncio, json, sys
from datetime import datetime, timedelta
from pathlib import Path
from homemonitor.contract.protocol import PayloadFormat
from homemonitor_devices.gateway import Gateway

async def main() -> None:
    base = datetime.fromisoformat(sys.argv[3])
    gateway = Gateway("gw-1", queue_path=Path(sys.argv[1]), port=int(sys.argv[2]))
    await gateway.start()
    for n in range(30):
        reading = {"device_id": "scale-1", "metric": "body_weight", "value": 79.0,
                   "measured_at": (base + timedelta(minutes=n)).isoformat(), "message_id": str(n)}
        payload = json.dumps({"v": 1, "reading": reading}).encode()
        await gateway.submit(PayloadFormat.NATIVE, payload)
    print("queued", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_gateway_killed_during_broker_outage_delivers_each_reading_once_in_order(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Broker down, gateway SIGKILLed, restarted: the service stores each reading once, in order."""
    queue = tmp_path / "gw-1.sqlite3"
    broker.stop()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(queue),
        str(broker.port),
        BASE.isoformat(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert b"queued\n" == await asyncio.wait_for(child.stdout.readline(), 20)
    os.kill(child.pid, signal.SIGKILL)
    await child.wait()
    gateway = Gateway(
        "gw-1", queue_path=queue, port=broker.port, backoff=Backoff(initial=0.05, cap=0.5)
    )
    async with gateway:
        for n in range(30, 40):
            await gateway.submit(
                PayloadFormat.NATIVE, numbered(n, "scale-1", BASE, timedelta(minutes=1))
            )
        assert 40 == gateway.pending
        broker.start()
        await asyncio.wait_for(gateway.drained(), 30)
    rows = await wait_until(
        lambda: db.fetch("SELECT message_id FROM readings ORDER BY received_at, measured_at"),
        lambda r: len(r) >= 40,
        60,
    )
    assert [str(n) for n in range(40)] == [r["message_id"] for r in rows]
