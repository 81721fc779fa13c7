"""The database as the bench sees it, and the consumers under test: the worker and the baselines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import aiomqtt
import asyncpg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from homemonitor.contract.protocol import SUBSCRIPTION
from homemonitor.embedded import PrivateBroker
from homemonitor.ingest import transport
from homemonitor.ingest.pipeline import Inbound
from homemonitor.settings import Settings

#: Receive Maximum of the client baselines: the worker's default ``max_inflight``.
RECEIVE_MAXIMUM = Settings.model_fields["max_inflight"].default


class Db:
    """One connection to the bench database that reconnects after an outage."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def conn(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=5)
        return self._conn

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            yield await self.conn()
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            self._conn = None  # reconnect next time
            raise

    async def fetchval(self, sql: str, *args: object) -> Any:
        async with self._using() as conn:
            return await conn.fetchval(sql, *args, timeout=30)

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async with self._using() as conn:
            return list(await conn.fetch(sql, *args, timeout=60))

    async def execute(self, sql: str, *args: object) -> None:
        async with self._using() as conn:
            await conn.execute(sql, *args, timeout=60)

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(OSError, asyncpg.InterfaceError):
                await self._conn.close(timeout=5)
        self._conn = None


NAIVE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_naive_readings (
    id          bigserial PRIMARY KEY,
    device_id   text NOT NULL,
    metric      text NOT NULL,
    measured_at timestamptz NOT NULL,
    systolic    double precision,
    diastolic   double precision,
    value       double precision,
    pulse       double precision,
    message_id  text,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""
_NAIVE_INSERT = (
    "INSERT INTO bench_naive_readings "
    "(device_id, metric, measured_at, systolic, diastolic, value, pulse, message_id) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Verification:
    """What a consumer stored of one run, checked by sequence number."""

    published: int
    stored: int
    lost: int
    duplicated: int
    unexpected: int  # stored, but not published in this run


async def verify_table(
    db: Db,
    table: Literal["readings", "bench_naive_readings"],
    first: int,
    published: int,
    live_since: datetime | None = None,
) -> Verification:
    """Check ``table`` (readings or the naive table) against ``first .. first+published-1``.

    With ``live_since`` only rows measured from then on count (a seeded history is older).
    """
    row = (
        await db.fetch(
            f"SELECT count(*) AS n, count(DISTINCT message_id) AS ids, "
            f"count(DISTINCT message_id) FILTER (WHERE message_id::bigint >= $1 "
            f"AND message_id::bigint < $2) AS wanted FROM {table}"
            + (" WHERE measured_at >= $3" if live_since else ""),
            first,
            first + published,
            *((live_since,) if live_since else ()),
        )
    )[0]
    return Verification(
        published,
        row["n"],
        published - row["wanted"],
        row["n"] - row["ids"],
        row["ids"] - row["wanted"],
    )


# -- consumers: the worker, and the two baselines ------------------------------------------


class Consumer(Protocol):
    label: str

    async def start(self) -> None: ...

    def pids(self) -> list[int]: ...

    async def processed(self) -> int: ...

    async def verify(self, first: int, published: int) -> Verification: ...

    async def reset(self) -> None: ...

    async def stop(self) -> None: ...


class ServiceWorkers:
    """``homemonitor run --no-http`` in ``n`` processes of their own, as in production.

    Each runs under :mod:`homemonitor_bench.probe`, which records its collections and
    event-loop lag for the latency phase and changes nothing else. With ``live_since`` the
    readings table holds a seeded history (:mod:`homemonitor_bench.history`) measured
    before it: only readings measured from then on are the bench's, and a step counts and
    checks those measured after the previous step's (which stay, as history).
    """

    def __init__(
        self,
        n: int,
        db: Db,
        broker: PrivateBroker,
        workdir: Path,
        *,
        name: str,
        shared_group: str | None = None,
        extra_env: dict[str, str] | None = None,
        pythonpath: str | None = None,
        live_since: datetime | None = None,
        label: str | None = None,
    ) -> None:
        self.label = label or (f"worker x{n}" + (" (shared subscription)" if shared_group else ""))
        self.live_since = live_since
        self.db = db
        self.broker = broker
        self.workdir = workdir
        base = {k: v for k, v in os.environ.items() if not k.startswith("HOMEMONITOR_")}
        if pythonpath:
            base["PYTHONPATH"] = pythonpath
        self.client_ids = [f"bench-{name}-{k}" for k in range(n)]
        self.envs = [
            {
                **base,
                "HOMEMONITOR_DATABASE_URL": db.dsn,
                "HOMEMONITOR_MQTT_BROKER": broker.kind,  # nats: MQTT 3.1.1
                "HOMEMONITOR_MQTT_HOST": broker.host,
                "HOMEMONITOR_MQTT_PORT": str(broker.port),
                "HOMEMONITOR_MQTT_CLIENT_ID": cid,
                **({"HOMEMONITOR_MQTT_SHARED_GROUP": shared_group} if shared_group else {}),
                **(extra_env or {}),
            }
            for cid in self.client_ids
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    def log_path(self, k: int) -> Path:
        return self.workdir / f"{self.client_ids[k]}.log"

    def probe_path(self, k: int) -> Path:
        """Where worker ``k``'s pauses go (:mod:`homemonitor_bench.probe`)."""
        return self.workdir / f"{self.client_ids[k]}.probe.jsonl"

    async def start(self) -> None:
        """Start the processes; with a broker that logs subscriptions, wait for theirs."""
        log = self.broker.log_path
        offset = log.stat().st_size if log.exists() else 0
        await asyncio.to_thread(self._spawn)
        if "log_type subscribe" not in self.broker.extra_config:
            return  # the caller's probe readings will tell
        deadline = time.monotonic() + 60
        waiting = set(self.client_ids)
        while waiting:
            self.check_alive()
            if time.monotonic() > deadline:
                msg = f"{sorted(waiting)} did not subscribe within 60 s"
                raise RuntimeError(msg)
            with log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            waiting = {c for c in waiting if f" {c} 1 " not in text}
            await asyncio.sleep(0.05)

    def _spawn(self) -> None:
        for k, env in enumerate(self.envs):
            with self.log_path(k).open("ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "homemonitor_bench.probe",  # homemonitor.cli, observed
                            str(self.probe_path(k)),
                            "run",
                            "--no-http",
                        ],
                        env=env,
                        cwd=self.workdir,  # no developer's .env file
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for k, p in enumerate(self.procs):
            if p.poll() is not None:
                tail = self.log_path(k).read_text(errors="replace")[-2000:]
                msg = f"{self.client_ids[k]} exited with {p.returncode}:\n{tail}"
                raise RuntimeError(msg)

    async def processed(self) -> int:
        self.check_alive()
        if self.live_since is None:
            return int(await self.db.fetchval("SELECT count(*) FROM readings"))
        return int(
            await self.db.fetchval(
                "SELECT count(*) FROM readings WHERE measured_at >= $1", self.live_since
            )
        )

    async def verify(self, first: int, published: int) -> Verification:
        return await verify_table(self.db, "readings", first, published, self.live_since)

    async def reset(self) -> None:
        if self.live_since is None:
            await self.db.execute("TRUNCATE readings, outbox, alert_events, alerts, quarantine")
            return
        await self.db.execute("TRUNCATE outbox, alert_events, alerts, quarantine")
        # The earlier steps' readings stay, as history: deleting them behind the worker's
        # back made every history cache entry stale at each step, a cold start each time.
        # A step counts what is measured after them (the bench's readings are measured
        # in order).
        newest = await self.db.fetchval(
            "SELECT max(measured_at) FROM readings WHERE measured_at >= $1", self.live_since
        )
        if newest is not None:
            self.live_since = newest + timedelta(microseconds=1)

    async def alerts_opened(self) -> int:
        """Episodes opened (or re-opened) since the last reset."""
        return int(
            await self.db.fetchval(
                "SELECT count(*) FROM alert_events WHERE kind IN ('opened', 'reopened')"
            )
        )

    async def quarantined(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM quarantine"))

    async def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
                await asyncio.to_thread(p.wait, 10)
        self.procs = []


def _manual_ack_client(host: str, port: int, name: str) -> aiomqtt.Client:
    """An MQTT 5 client with the worker's Receive Maximum and manual PUBACKs."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"{name}-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        properties=properties,
    )
    transport.enable_manual_ack(client)
    return client


def _incoming(client: aiomqtt.Client) -> asyncio.Queue[aiomqtt.Message]:
    """aiomqtt's incoming queue, to drain it without a task per message.

    Private to aiomqtt 2.5 (``Client._queue``; ``async for`` over ``client.messages``
    creates a task for every message). Only this baseline reaches in here: the service's
    own intake (:mod:`homemonitor.ingest.transport`) does not use aiomqtt's queue at all.
    """
    q: asyncio.Queue[aiomqtt.Message] = client._queue
    return q


def bare_main(host: str, port: int, counter: Any, ready: Any) -> None:
    asyncio.run(_bare(host, port, counter, ready))


async def _bare(host: str, port: int, counter: Any, ready: Any) -> None:
    """Stock aiomqtt with a manual PUBACK per message (via paho), draining and acking only."""
    client = _manual_ack_client(host, port, "bench-bare")
    async with client:
        await client.subscribe(SUBSCRIPTION, qos=1)
        ready.set()
        incoming = _incoming(client)
        n = 0
        while True:
            message = await incoming.get()
            transport.ack(client, message.mid, message.qos)
            n += 1
            while not incoming.empty():
                message = incoming.get_nowait()
                transport.ack(client, message.mid, message.qos)
                n += 1
            counter.value = n


def intake_main(host: str, port: int, counter: Any, ready: Any) -> None:
    asyncio.run(_intake(host, port, counter, ready))


async def _intake(host: str, port: int, counter: Any, ready: Any) -> None:
    """The worker's own MQTT path (:class:`~homemonitor.ingest.transport.Intake`), no work.

    The ceiling of the client as the worker uses it: the worker can only approach it.
    """
    client = _manual_ack_client(host, port, "bench-intake")
    intake = transport.Intake(client, functools.partial(Inbound, generation=0))  # as the worker
    async with client:
        await client.subscribe(SUBSCRIPTION, qos=1)
        ready.set()
        n = 0
        while True:
            await intake.wait()
            messages = intake.take(len(intake))
            transport.ack_all(client, [m.mid for m in messages])
            n += len(messages)
            counter.value = n


def naive_main(host: str, port: int, dsn: str, counter: Any, ready: Any) -> None:
    asyncio.run(_naive(host, port, dsn, counter, ready))


async def _naive(host: str, port: int, dsn: str, counter: Any, ready: Any) -> None:
    """The tutorial consumer: aiomqtt (acknowledged on receipt), one INSERT per message."""
    conn = await asyncpg.connect(dsn)
    async with aiomqtt.Client(host, port, identifier=f"bench-naive-{os.getpid()}") as client:
        await client.subscribe(SUBSCRIPTION, qos=1)
        ready.set()
        n = 0
        async for message in client.messages:
            payload = message.payload
            data = json.loads(payload if isinstance(payload, bytes | str) else str(payload))
            r = data["reading"]
            await conn.execute(
                _NAIVE_INSERT,
                r["device_id"],
                r["metric"],
                datetime.fromisoformat(r["measured_at"]),
                r.get("systolic"),
                r.get("diastolic"),
                r.get("value"),
                r.get("pulse"),
                r.get("message_id"),
            )
            n += 1
            counter.value = n


class ChildConsumer:
    """A baseline consumer in a process of its own (spawned), counting what it handled."""

    def __init__(self, label: str, target: Any, args: tuple[object, ...], db: Db | None) -> None:
        self.label = label
        self.db = db
        ctx = mp.get_context("spawn")
        self.counter: Any = ctx.Value("q", 0, lock=False)
        self.ready = ctx.Event()
        self.proc = ctx.Process(
            target=target, args=(*args, self.counter, self.ready), name=label, daemon=True
        )
        self.offset = 0

    async def start(self) -> None:
        self.proc.start()
        if not await asyncio.to_thread(self.ready.wait, 30):
            msg = f"{self.label} did not subscribe within 30 s"
            raise RuntimeError(msg)

    def pids(self) -> list[int]:
        assert self.proc.pid is not None
        return [self.proc.pid]

    async def processed(self) -> int:
        if not self.proc.is_alive():
            msg = f"{self.label} exited with {self.proc.exitcode}"
            raise RuntimeError(msg)
        if self.db is not None:
            return int(await self.db.fetchval("SELECT count(*) FROM bench_naive_readings"))
        return int(self.counter.value) - self.offset

    async def verify(self, first: int, published: int) -> Verification:
        if self.db is not None:
            return await verify_table(self.db, "bench_naive_readings", first, published)
        got = await self.processed()  # no payload parsed: counted, not checked by number
        return Verification(published, got, max(0, published - got), max(0, got - published), 0)

    async def reset(self) -> None:
        if self.db is not None:
            await self.db.execute("TRUNCATE bench_naive_readings")
        self.offset = int(self.counter.value)

    async def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        await asyncio.to_thread(self.proc.join, 10)
        if self.proc.is_alive():
            self.proc.kill()
            await asyncio.to_thread(self.proc.join, 5)
        self.proc.close()


async def forget_session(broker: PrivateBroker, client_id: str) -> None:
    """End a persistent session, so the broker stops queueing for a worker that is gone.

    The service's own clean start (:func:`~homemonitor.ingest.transport.end_session`, what
    ``homemonitor leave`` ends with): MQTT 5 on Mosquitto, 3.1.1 on NATS.
    """
    values: dict[str, Any] = {
        "_env_file": None,  # no developer's .env
        "database_url": "postgresql://unused@127.0.0.1/unused",
        "mqtt_broker": broker.kind,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "mqtt_client_id": client_id,
    }
    settings = Settings(**values)
    await transport.end_session(settings, settings.mqtt_addresses[0])
