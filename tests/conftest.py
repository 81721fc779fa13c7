"""Fixtures: private Mosquitto and PostgreSQL started from the installed binaries.

One PostgreSQL cluster per session holds a migrated template database; each test gets
its own database cloned from it (fast, isolated). Tests that stop or kill the database
start a cluster of their own (``own_postgres``). Brokers are per test: Mosquitto starts
in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import asyncpg
import httpx
import pytest

from homemonitor import registry
from homemonitor.app import serve
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto, PrivatePostgres, free_port
from homemonitor.ingest.worker import Worker
from homemonitor.metrics import Metrics
from homemonitor.runtime import Health
from homemonitor.scheduler import Clock
from homemonitor.settings import Settings
from homemonitor.storage import database

T = TypeVar("T")
_counter = itertools.count()

#: A small registry: two care teams, three patients, devices, two gateways, plans.
REGISTRY: dict[str, Any] = {
    "care_teams": [
        {
            "id": "vc-a",
            "name": "Vårdcentral A",
            "clinicians": [{"id": "cl-a1", "name": "Nurse A1"}],
        },
        {
            "id": "vc-b",
            "name": "Vårdcentral B",
            "clinicians": [{"id": "cl-b1", "name": "Nurse B1"}],
        },
    ],
    "devices": [
        {"id": "cuff-1", "kind": "blood_pressure_cuff"},
        {"id": "scale-1", "kind": "scale"},
        {"id": "oxi-2", "kind": "pulse_oximeter"},
        {"id": "cuff-3", "kind": "blood_pressure_cuff"},
        {"id": "spare-9", "kind": "scale"},
    ],
    # gw-1 is the hub of the home of p-1 and p-3 (and holds the spare scale), gw-2 of p-2's.
    "gateways": [
        {
            "id": "gw-1",
            "devices": [
                {"device": d, "from": "2020-01-01T00:00:00Z"}
                for d in ("cuff-1", "scale-1", "cuff-3", "spare-9")
            ],
        },
        {"id": "gw-2", "devices": [{"device": "oxi-2", "from": "2020-01-01T00:00:00Z"}]},
    ],
    "patients": [
        {
            "id": "p-1",
            "care_team": "vc-a",
            "care_contact": "cl-a1",
            "condition": "heart_failure",
            "devices": [
                {"device": "cuff-1", "from": "2020-01-01T00:00:00Z"},
                {"device": "scale-1", "from": "2020-01-01T00:00:00Z"},
            ],
            "care_plan": {
                "version": 1,
                "changed_by": "cl-a1",
                "reason": "initial",
                "thresholds": {
                    "systolic": {"high": {"warning": 160, "urgent": 180}, "low": {"warning": 95}},
                    "body_weight": {"high": {"warning": 82.0, "urgent": 84.0}},
                },
            },
        },
        {
            "id": "p-2",
            "care_team": "vc-b",
            "care_contact": "cl-b1",
            "condition": "copd",
            "devices": [{"device": "oxi-2", "from": "2020-01-01T00:00:00Z"}],
            "care_plan": {
                "version": 1,
                "changed_by": "cl-b1",
                "thresholds": {"spo2": {"low": {"warning": 92, "urgent": 88}}},
            },
        },
        {
            "id": "p-3",
            "care_team": "vc-a",
            "care_contact": "cl-a1",
            "condition": "hypertension",
            "devices": [{"device": "cuff-3", "from": "2020-01-01T00:00:00Z"}],
        },
    ],
}


#: A plan rule: the heart-failure weight rule of thumb, as a change rule.
WEIGHT_GAIN_3D: dict[str, Any] = {
    "id": "weight.gain_3d",
    "kind": "change",
    "quantity": "body_weight",
    "direction": "rise",
    "warning": 2.0,
    "window_hours": 72,
    "source": "ESC/HFA self-care advice: more than 2 kg in 3 days",
}

#: A normal (non-breaching) reading of each test device, by the registry above.
_NORMAL: dict[str, dict[str, Any]] = {
    "cuff-1": {"metric": "blood_pressure", "systolic": 120, "diastolic": 80},
    "scale-1": {"metric": "body_weight", "value": 78.5},
    "oxi-2": {"metric": "spo2", "value": 96},
}


def numbered(
    seq: int, device: str, base: datetime, step: timedelta = timedelta(seconds=1)
) -> bytes:
    """Normal reading number ``seq`` of ``device``: measured ``base + seq * step``, message_id seq.

    Unique per sequence number, so a test can check the database for loss and duplicates.
    """
    reading = {
        "device_id": device,
        **_NORMAL[device],
        "measured_at": (base + seq * step).isoformat(),
        "message_id": str(seq),
    }
    return json.dumps({"v": 1, "reading": reading}).encode()


def bp(device: str, systolic: float, diastolic: float, at: datetime, **extra: object) -> bytes:
    """A native message of one blood-pressure reading of ``device`` measured at ``at``."""
    reading = {
        "device_id": device,
        "metric": "blood_pressure",
        "measured_at": at.isoformat(),
        "systolic": systolic,
        "diastolic": diastolic,
        **extra,
    }
    return json.dumps({"v": 1, "reading": reading}).encode()


def weight(device: str, kg: float, at: datetime) -> bytes:
    """A native message of one body-weight reading of ``device`` measured at ``at``."""
    reading = {
        "device_id": device,
        "metric": "body_weight",
        "value": kg,
        "measured_at": at.isoformat(),
    }
    return json.dumps({"v": 1, "reading": reading}).encode()


async def wait_until(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], within: float = 20.0
) -> T:
    """Poll ``probe`` until ``accept`` holds; fail with the last value after ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    value = await probe()
    while not accept(value):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {within:g} s; last value: {value!r}")
        await asyncio.sleep(0.05)
        value = await probe()
    return value


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """A session-wide private PostgreSQL with a migrated template database."""
    pg = PrivatePostgres(tmp_path_factory.mktemp("pg"), durable=False, database="hm_template")
    with pg:

        async def migrate() -> None:
            conn = await asyncpg.connect(pg.dsn)
            try:
                await database.migrate(conn)
            finally:
                await conn.close()

        asyncio.run(migrate())
        yield pg


async def new_database(pg_cluster: PrivatePostgres) -> str:
    """The DSN of a fresh, migrated database cloned from the template."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_cluster.dsn.replace("/hm_template", "/postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE hm_template")
    finally:
        await admin.close()
    return pg_cluster.dsn.replace("/hm_template", f"/{name}")


@pytest.fixture
async def dsn(pg_cluster: PrivatePostgres) -> str:
    """A fresh, migrated database of this test's own."""
    return await new_database(pg_cluster)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database, with the test registry applied."""
    conn = await asyncpg.connect(dsn)
    await registry.apply(conn, registry.parse(REGISTRY))
    yield conn
    await conn.close()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster only this test uses, so it may stop or kill it."""
    pg = PrivatePostgres(tmp_path / "own-pg", durable=True)
    with pg:
        yield pg


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A private Mosquitto (persistence on) on a free port."""
    mq = PrivateMosquitto(tmp_path / "mq")
    with mq:
        yield mq


def settings_for(dsn: str, broker: PrivateMosquitto, **extra: Any) -> Settings:
    """Service settings pointing at a test's broker and database."""
    values: dict[str, Any] = {
        "database_url": dsn,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "mqtt_client_id": f"hm-test-{next(_counter)}",
        "http_port": free_port(),
    }
    return Settings(_env_file=None, **(values | extra))


class RunningService:
    """The service running in this test's event loop."""

    def __init__(
        self, settings: Settings, *, http: bool = True, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.http = http
        self.clock = clock
        self.metrics = Metrics()
        self.health = Health()
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[Worker | None] | None = None

    async def start(self, *, ready: bool = True) -> None:
        """Start the service; wait until /ready would say 200 unless ``ready`` is False."""
        self.stop_event = asyncio.Event()
        self.health = Health()
        self.task = asyncio.create_task(
            serve(
                self.settings,
                self.stop_event,
                http=self.http,
                metrics=self.metrics,
                health=self.health,
                clock=self.clock,
            )
        )

        async def is_ready() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()
            return self.health.ready

        if ready:
            await wait_until(is_ready, bool)

    async def stop(self) -> Worker | None:
        self.stop_event.set()
        assert self.task is not None
        return await asyncio.wait_for(self.task, 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    async def metric_async(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metric(name, labels)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


@pytest.fixture
async def service(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> AsyncIterator[RunningService]:
    """The whole service (worker, API, metrics) on the test's broker and database."""
    svc = RunningService(settings_for(dsn, broker))
    await svc.start()
    yield svc
    if svc.task is not None and not svc.task.done():
        with contextlib.suppress(Exception):
            await svc.stop()


@contextlib.asynccontextmanager
async def publisher(
    broker: PrivateMosquitto, client_id: str = "gw-1"
) -> AsyncIterator[aiomqtt.Client]:
    """A gateway-side client; ``publish(..., qos=1)`` returns after the PUBACK."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id) as client:
        yield client


async def publish_numbered(
    broker: PrivateMosquitto,
    published: list[int],
    over: asyncio.Event,
    then: int,
    base: datetime,
    *,
    pause: float = 0.005,
) -> None:
    """Numbered scale-1 readings at QoS 1 until ``then`` more after ``over`` is set.

    Numbering goes on from ``len(published)``; each number is appended once the broker's
    PUBACK came back, so ``published`` is what the broker took responsibility for.
    """
    async with publisher(broker) as gw:
        seq, last = len(published), None
        while last is None or seq < last:
            await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", base), qos=1)
            published.append(seq)
            seq += 1
            if last is None and over.is_set():
                last = seq + then
            await asyncio.sleep(pause)


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


# --- silence (missing-data alerts) -----------------------------------------------------


@pytest.fixture
async def pools(dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Two pools on the test's database: two processes' worth of connections."""
    a = await database.create_pool(dsn, min_size=0, max_size=4)
    b = await database.create_pool(dsn, min_size=0, max_size=4)
    yield a, b
    await a.close()
    await b.close()
