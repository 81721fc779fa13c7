"""Fixtures: private Mosquitto and PostgreSQL started from the installed binaries.

One PostgreSQL cluster per session holds a migrated template database; each test gets
its own database cloned from it (fast, isolated). Tests that stop or kill the database
start a cluster of their own (``own_postgres``). Brokers are per test: Mosquitto starts
in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import asyncpg
import httpx
import pytest

from homemonitor import registry
from homemonitor.api import build_app
from homemonitor.api.auth import SESSION_COOKIE, OidcConfig, WebConfig, open_session
from homemonitor.app import serve
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import (
    PrivateBroker,
    PrivateMosquitto,
    PrivateNats,
    PrivatePostgres,
    free_port,
)
from homemonitor.errors import ServiceStartError
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
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBroker]:
    """A private Mosquitto (persistence on) on a free port; NATS too under :data:`BOTH_BROKERS`."""
    kind = getattr(request, "param", "mosquitto")
    mq = (
        PrivateMosquitto(tmp_path / "mq")
        if kind == "mosquitto"
        else private_nats(tmp_path / "nats")
    )
    with mq:
        yield mq


def settings_for(dsn: str, broker: PrivateBroker, **extra: Any) -> Settings:
    """Service settings pointing at a test's broker and database."""
    values: dict[str, Any] = {
        "database_url": dsn,
        "mqtt_broker": broker.kind,
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

    async def counted(
        self, name: str, labels: dict[str, str] | None = None, *, at_least: float = 1
    ) -> float:
        """The counter once it has reached ``at_least`` (within 5 s), to be compared exactly.

        The worker counts a batch just after its commit returns; a test that has seen the
        rows in the database may look before that count (in CI under load it did)."""
        return await wait_until(
            lambda: self.metric_async(name, labels), lambda v: v >= at_least, within=5
        )


@pytest.fixture
async def service(
    db: asyncpg.Connection, dsn: str, broker: PrivateBroker
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
    broker: PrivateBroker, client_id: str = "gw-1"
) -> AsyncIterator[aiomqtt.Client]:
    """A gateway-side client; ``publish(..., qos=1)`` returns after the PUBACK."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id) as client:
        yield client


async def publish_numbered(
    broker: PrivateBroker,
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

    def __init__(self, dsn: str, broker: PrivateBroker, log: Path) -> None:
        self.env = {
            **os.environ,
            "HOMEMONITOR_DATABASE_URL": dsn,
            "HOMEMONITOR_MQTT_BROKER": broker.kind,
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
    db: asyncpg.Connection, dsn: str, broker: PrivateBroker, tmp_path: Path
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(dsn, broker, tmp_path / "worker.log")
    yield w
    if w.proc is not None and w.proc.poll() is None:
        w.kill()


# --- lifecycle and silence (issue #11): two processes' worth of pools ---------------


@pytest.fixture
async def pools(dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Two pools on the test's database: two processes' worth of connections."""
    a = await database.create_pool(dsn, min_size=0, max_size=4)
    b = await database.create_pool(dsn, min_size=0, max_size=4)
    yield a, b
    await a.close()
    await b.close()


# --- webauth: the web app signed in, over ASGI against the test's database -------------


@contextlib.asynccontextmanager
async def web_client(dsn: str, **web: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app (``build_app``) over a pool on ``dsn``, an HTTPS client to it, and the app.

    ``web``: :class:`~homemonitor.api.auth.WebConfig` fields (e.g. ``demo_login=True``).
    HTTPS because the session cookie is Secure: httpx sends it over https only.
    """
    pool = await database.create_pool(dsn, min_size=1, max_size=4)
    try:
        app = build_app(pool, Metrics(), Health(), web=WebConfig(**web))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            yield http, app
    finally:
        await pool.close()


async def sign_in(http: httpx.AsyncClient, conn: asyncpg.Connection, clinician: str) -> str:
    """Give ``http`` a web session of ``clinician`` (a row, as a sign-in makes); its CSRF token."""
    secret, csrf = await open_session(conn, clinician, "demo")
    http.cookies.set(
        SESSION_COOKIE, secret
    )  # no domain: cookiejar reads "testserver" as "testserver.local"
    return csrf


#: The directory of the test OpenID provider (``npm ci`` there: make test-deps).
OIDC_DIR = Path(__file__).parent / "oidc"

#: The provider's accounts: login (any password) → the claims it releases.
OIDC_ACCOUNTS: dict[str, dict[str, str]] = {
    "anna": {"employeeHsaId": "SE2321000016-1001"},  # cl-a1 in tests that give her that HSA id
    "rita": {"employeeHsaId": "SE2321000016-2001"},  # rv-1, a reviewer, in the browser tests
    "stranger": {"employeeHsaId": "SE2321000016-9999"},  # a clinician nobody registered
    "nohsa": {},  # an account without an HSA id
}


@dataclasses.dataclass(frozen=True)
class OidcProvider:
    """A running ``oidc-provider`` (tests/oidc/provider.mjs) and this service's client there."""

    issuer: str
    redirect_uri: str
    client_id: str = "homemonitor"
    client_secret: str = "test-secret-that-is-long-enough-for-hs256-0123456789"

    def config(self) -> OidcConfig:
        return OidcConfig(self.issuer, self.client_id, self.client_secret, self.redirect_uri)


@contextlib.contextmanager
def running_oidc_provider(tmp: Path, redirect_uri: str) -> Iterator[OidcProvider]:
    """Start the certified provider with Node for a client whose callback is ``redirect_uri``."""
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(f"the test OpenID provider is not installed: run 'npm ci' in {OIDC_DIR}")
    port = free_port()
    site = redirect_uri.rsplit("/auth/callback", 1)[0]
    provider = OidcProvider(f"http://localhost:{port}", redirect_uri)
    config = tmp / f"oidc-{port}.json"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
                "redirect_uri": redirect_uri,
                "post_logout_redirect_uri": site + "/login?error=ended",
                "accounts": OIDC_ACCOUNTS,
            }
        )
    )
    log = (tmp / f"oidc-{port}.log").open("wb")
    proc = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs"), str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=OIDC_DIR,
    )
    try:
        deadline = 20.0
        while b"listening" not in (tmp / f"oidc-{port}.log").read_bytes():
            if proc.poll() is not None or deadline <= 0:
                text = (tmp / f"oidc-{port}.log").read_text(errors="replace")
                pytest.fail(f"the test OpenID provider did not start:\n{text}")
            deadline -= 0.05
            time.sleep(0.05)
        yield provider
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """The provider, for an app at https://testserver (the ASGI tests' client)."""
    with running_oidc_provider(
        tmp_path_factory.mktemp("oidc"), "https://testserver/auth/callback"
    ) as provider:
        yield provider


async def provider_sign_in(
    app_http: httpx.AsyncClient, provider: OidcProvider, login: str, next_path: str = "/"
) -> httpx.Response:
    """Sign in through the provider as ``login`` (its own sign-in and consent pages, as a
    browser would fill them); the app's answer to the callback."""
    start = await app_http.get("/login/sso", params={"next": next_path})
    assert start.status_code == 303, start.text
    async with httpx.AsyncClient() as browser:  # the browser's side at the provider
        url = start.headers["location"]
        while url.startswith(provider.issuer):
            page = await browser.get(url)
            if page.status_code in (302, 303):
                url = httpx.URL(url).join(page.headers["location"]).__str__()
                continue
            assert page.status_code == 200, page.text
            action = re.search(r'action="([^"]+)"', page.text)
            assert action is not None, page.text
            prompt = re.search(r'name="prompt" value="([^"]+)"', page.text)
            assert prompt is not None, page.text
            form = {"prompt": prompt.group(1)}
            if prompt.group(1) == "login":
                form |= {"login": login, "password": "any"}
            answer = await browser.post(httpx.URL(url).join(action.group(1)), data=form)
            assert answer.status_code in (302, 303), answer.text
            url = str(httpx.URL(url).join(answer.headers["location"]))
    back = httpx.URL(url)
    assert back.host == "testserver", url
    return await app_http.get(back.raw_path.decode())


# -- nats: NATS Server's MQTT gateway on JetStream (issue 13, part 5) ---------------------------

#: Parametrize a test that takes ``broker`` (or ``service``, ``worker_process``) with this to
#: run it against Mosquitto and, when ``nats-server`` is installed, against NATS too.
BOTH_BROKERS = pytest.mark.parametrize("broker", ["mosquitto", "nats"], indirect=True)


def private_nats(directory: Path, **options: Any) -> PrivateNats:
    """A :class:`PrivateNats`, or the test skipped when ``nats-server`` is not installed."""
    try:
        return PrivateNats(directory, **options)
    except ServiceStartError as exc:
        pytest.skip(f"needs nats-server (Debian package nats-server): {exc}")


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A private NATS Server with JetStream and its MQTT gateway, on free ports."""
    with private_nats(tmp_path / "nats") as server:
        yield server


# --- notify: a webhook receiver and an SMTP server with STARTTLS, both real ------------


class WebhookReceiver:
    """A stdlib HTTP/1.1 server on a port of its own that records every POST it is sent.

    ``answer`` is the status it replies with; with ``hold`` True each request waits for
    ``release`` (a receiver slow enough for the sender to die mid-delivery). It keeps
    connections alive; ``peers`` is the client address of each request, in arrival order
    (the same one twice: one connection). :meth:`stop` takes it down, closing its
    connections too, and :meth:`start` brings it back on the same port.
    """

    def __init__(self, tls: Any = None) -> None:
        import threading  # noqa: PLC0415 - only the notify tests need it

        self.tls = tls  # an ssl.SSLContext: serve HTTPS
        self.port = free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.peers: list[tuple[str, int]] = []
        self._connections: set[Any] = set()
        self.answer = 200
        self.hold = False
        self.release = threading.Event()
        self.arrived = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        import http.server  # noqa: PLC0415
        import threading  # noqa: PLC0415

        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a receiver in front of a clinic's

            def setup(self) -> None:
                super().setup()
                receiver._connections.add(self.connection)

            def finish(self) -> None:
                receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((dict(self.headers.items()), body))
                receiver.peers.append(self.client_address)
                receiver.arrived.set()
                if receiver.hold:
                    receiver.release.wait(60)
                self.send_response(receiver.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        import socket  # noqa: PLC0415

        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self._connections):  # a receiver that goes down drops them
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request received, in arrival order."""
        return [headers["Idempotency-Key"] for headers, _ in self.received]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running webhook receiver; stopped at the end."""
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.release.set()
    receiver.stop()


def server_tls(directory: Path, cert: Path) -> Any:
    """A TLS server context with a new self-signed certificate for 127.0.0.1 (in ``cert``)."""
    import ssl  # noqa: PLC0415

    key = directory / f"{cert.stem}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    return tls


class SmtpServer:
    """aiosmtpd on a free port: STARTTLS required before AUTH, one user, messages kept."""

    user = "homemonitor"
    password = "smtp-secret"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.messages: list[Any] = []  # (envelope, email.message.Message)
        self.ca = directory / "smtp-cert.pem"
        self._controller: Any = None

    def start(self) -> None:
        import email  # noqa: PLC0415

        from aiosmtpd.controller import Controller  # noqa: PLC0415
        from aiosmtpd.smtp import AuthResult  # noqa: PLC0415

        tls = server_tls(self.directory, self.ca)
        server = self

        class Handler:
            async def handle_DATA(self, _: Any, __: Any, envelope: Any) -> str:  # noqa: N802
                server.messages.append((envelope, email.message_from_bytes(envelope.content)))
                return "250 OK"

        def authenticate(_: Any, __: Any, ___: Any, mechanism: str, data: Any) -> AuthResult:
            ok = data.login.decode() == self.user and data.password.decode() == self.password
            return AuthResult(success=ok, handled=False)

        self._controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=tls,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=True,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def settings(self) -> dict[str, Any]:
        """The service settings that send mail through this server."""
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_username": self.user,
            "smtp_password": self.password,
            "smtp_tls_ca": str(self.ca),
            "smtp_from": "alerts@vc-a.example",
        }


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) with STARTTLS and AUTH, on a free port."""
    server = SmtpServer(tmp_path)
    server.start()
    yield server
    server.stop()
