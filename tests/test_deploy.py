"""The deployment files: example registry, Mosquitto config and ACL, Prometheus, compose, image.

Each file is checked by the tool that will read it in production where that tool is on
this machine (mosquitto, mosquitto_passwd, openssl, promtool), and skipped with a reason
where it is not. Docker itself is not needed: the compose file and Dockerfile are checked
against what the service accepts (Settings, metrics, ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from homemonitor import __version__, registry
from homemonitor.contract.protocol import SUBSCRIPTION, feedback_topic, readings_topic
from homemonitor.contract.readings import Reason
from homemonitor.embedded import free_port
from homemonitor.ingest import transport
from homemonitor.ingest.pipeline import Inbound
from homemonitor.rules.plan import ScoreRule, ThresholdRule
from homemonitor.settings import Settings
from tests.conftest import RunningService
from tests.test_ops import exported_series

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MOSQUITTO_DIR = DEPLOY / "mosquitto"
PROMETHEUS_DIR = DEPLOY / "prometheus"
SETTINGS_VARS = {f"HOMEMONITOR_{name.upper()}" for name in Settings.model_fields}
#: Secrets may come from the file their _FILE variable names.
SECRET_FILE_VARS = {
    f"HOMEMONITOR_{name.upper()}_FILE"
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "homemonitor.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _mosquitto_options() -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition(" ")
            options.setdefault(key, []).append(value)
    return options


def _resolve(value: str) -> str:
    """A compose value with ``${VAR:-default}`` as its default, ``${VAR:?error}`` as x."""

    def one(m: re.Match[str]) -> str:
        return m.group(3) if m.group(2) == "-" else "x"

    return _INTERPOLATION.sub(one, value)


# -- the example registry -------------------------------------------------------------------


async def _registry_snapshot(conn: asyncpg.Connection) -> dict[str, list[str]]:
    tables = [
        "care_teams",
        "clinicians",
        "gateways",
        "devices",
        "device_pairings",
        "patients",
        "device_bindings",
        "care_plans",
    ]
    return {
        t: [r[0] for r in await conn.fetch(f"SELECT row_to_json(t)::text FROM {t} t ORDER BY 1")]
        for t in tables
    }


async def test_example_registry_applies_and_reapplying_changes_nothing(dsn: str) -> None:
    """deploy/registry-example.yaml loads, applies, and a second apply changes nothing."""
    reg = registry.load_file(DEPLOY / "registry-example.yaml")
    conn = await asyncpg.connect(dsn)
    try:
        first = await registry.apply(conn, reg)
        before = await _registry_snapshot(conn)
        second = await registry.apply(conn, reg)
        after = await _registry_snapshot(conn)
    finally:
        await conn.close()
    assert registry.ApplySummary(2, 4, 6, 11, 10, 6, 6, 12) == first
    assert registry.ApplySummary(2, 4, 6, 11, 10, 0, 6, 12) == second
    assert [] == registry.unpaired_devices(reg)
    assert before == after
    assert {"heart_failure", "hypertension", "copd"} == {p.condition for p in reg.patients}


async def _example_registry_cache(dsn: str) -> registry.RegistryCache:
    """The worker's cache of deploy/registry-example.yaml, applied to ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        await registry.apply(conn, registry.load_file(DEPLOY / "registry-example.yaml"))
        cache = registry.RegistryCache()
        await cache.load(conn)
    finally:
        await conn.close()
    return cache


async def test_example_registry_binds_shared_cuff_per_user(dsn: str) -> None:
    """The shared cuff's users resolve to two patients; the cuff itself to nobody."""
    cache = await _example_registry_cache(dsn)
    may = datetime(2026, 5, 4, 7, 30, tzinfo=UTC)
    october = datetime(2026, 10, 5, 7, 30, tzinfo=UTC)
    assert "p-0003" == cache.patient_for("cuff-0003:u1", may)
    assert "p-0004" == cache.patient_for("cuff-0003:u2", may)
    assert Reason.UNBOUND_DEVICE == cache.patient_for("cuff-0003", may)
    assert "p-0002" == cache.patient_for("scale-0007", may)
    assert Reason.UNBOUND_DEVICE == cache.patient_for("scale-0007", october)
    assert "p-0002" == cache.patient_for("scale-0002", october)


async def test_example_registry_pairs_each_home_and_hands_over_a_replaced_hub(dsn: str) -> None:
    """Each hub speaks for its home's devices; the replaced one only until the handover."""
    cache = await _example_registry_cache(dsn)
    may = datetime(2026, 5, 4, 7, 30, tzinfo=UTC)
    october = datetime(2026, 10, 5, 7, 30, tzinfo=UTC)
    assert [
        "p-0004",
        Reason.UNBOUND_DEVICE,  # the shared cuff without a user: paired, bound to nobody
        Reason.FOREIGN_DEVICE,  # gw-0001 posing as another home's cuff
        "p-0002",  # the returned scale's late upload, measured before its pairing ended
        "p-0005",
        Reason.FOREIGN_DEVICE,  # the replaced hub after the handover
        "p-0005",
        Reason.UNKNOWN_GATEWAY,
    ] == [
        cache.resolve("gw-0003", "cuff-0003:u2", may),
        cache.resolve("gw-0003", "cuff-0003", may),
        cache.resolve("gw-0001", "cuff-0003:u1", may),
        cache.resolve("gw-0002", "scale-0007", may),
        cache.resolve("gw-0005", "oxi-0005", may),
        cache.resolve("gw-0005", "oxi-0005", october),
        cache.resolve("gw-0008", "oxi-0005", october),
        cache.resolve("gw-0004", "oxi-0005", october),
    ]


async def test_example_registry_plans_start_from_the_condition_templates(dsn: str) -> None:
    """Every example plan is its condition's template, personalised, as the worker runs it."""
    cache = await _example_registry_cache(dsn)
    heart_failure = [
        "weight.gain_3d",
        "weight.above_dry",
        "weight.trend",
        "heart_rate.trend",
        "heart_rate.high",
        "heart_rate.low",
        "systolic.low",
    ]
    hypertension = ["bp.home_mean", "systolic.severe", "diastolic.severe", "systolic.low"]
    copd = ["spo2.below_target", "oximetry.trend", "heart_rate.high"]
    expected = {
        "p-0001": (2, "heart_failure", {"dry_weight": 82.0}, [*heart_failure, "spo2.low"]),
        "p-0002": (2, "heart_failure", {"dry_weight": 68.5}, [*heart_failure, "bp.home_mean"]),
        "p-0003": (2, "hypertension", {}, hypertension),
        "p-0004": (2, "hypertension", {}, [*hypertension, "heart_rate.low"]),
        "p-0005": (2, "copd", {"target_spo2_low": 91.0}, [*copd, "news2.home"]),
        "p-0006": (
            3,
            "copd",
            {"target_spo2_low": 88.0, "target_spo2_high": 92.0},
            [*copd, "news2.home", "spo2.above_target"],
        ),
    }
    actual = {}
    for patient_id in expected:
        current = cache.plans.get(patient_id)
        assert current is not None
        plan = current.plan
        actual[patient_id] = (
            current.version,
            plan.template,
            dict(plan.personal),
            [r.id for r in plan.rules],
        )
    assert expected == actual
    p6 = cache.plans.get("p-0006")
    assert p6 is not None
    news2, above = p6.plan.rule("news2.home"), p6.plan.rule("spo2.above_target")
    assert isinstance(news2, ScoreRule)
    assert isinstance(above, ThresholdRule)
    assert ((2, True), ("target_spo2_high", 3.0)) == (
        (news2.spo2_scale, news2.on_oxygen),
        (above.relative_to, above.warning),
    )


# -- Mosquitto: the real binary on the deploy config ----------------------------------------


@dataclass
class DeployBroker:
    plain_port: int
    tls_port: int | None
    ca_file: Path | None
    passwords: dict[str, str]
    worker: str
    group: str


def _adapt_config(
    text: str, directory: Path, plain_port: int, tls_port: int | None, log: Path
) -> str:
    """The deploy config with its ports and directories moved into ``directory``."""
    replacements = {
        "/mosquitto/config/": f"{directory}/config/",
        "/mosquitto/data/": f"{directory}/data/",
        "/mosquitto/certs/": f"{directory}/certs/",
        "log_dest stdout": f"log_dest file {log}",
    }
    for old, new in replacements.items():
        assert old in text, f"mosquitto.conf no longer mentions {old!r}"
        text = text.replace(old, new)
    lines, listener = [], None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            listener = words[1]
            port = {"1883": plain_port, "8883": tls_port}[listener]
            if port is None:
                continue
            lines.append(f"listener {port} 127.0.0.1")
            continue
        if listener == "8883" and tls_port is None and words and not line.startswith("#"):
            continue
        lines.append(line)
    run_as = ["user root"] if os.geteuid() == 0 else []
    return "\n".join([*run_as, *lines, ""])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.01)
    pytest.fail(f"mosquitto did not open port {port}: {log.read_text()}")


@pytest.fixture
def deploy_broker(tmp_path: Path) -> Iterator[DeployBroker]:
    """Mosquitto running deploy/mosquitto/mosquitto.conf and acl, on free ports."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    passwd_tool = shutil.which("mosquitto_passwd")
    if binary is None or passwd_tool is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)")
    for sub in ("config", "data", "certs"):
        (tmp_path / sub).mkdir()
    tls_port: int | None = None
    ca_file: Path | None = None
    if shutil.which("openssl"):
        subprocess.run(
            ["sh", str(MOSQUITTO_DIR / "make-dev-certs.sh"), str(tmp_path / "certs")],
            check=True,
            capture_output=True,
            env={**os.environ, "MOSQUITTO_UID": str(os.getuid())},
        )
        tls_port, ca_file = free_port(), tmp_path / "certs" / "ca.crt"
    worker = _env_example()["HOMEMONITOR_MQTT_USERNAME"]
    passwords = {"gw-0001": "gw-one-secret", "gw-0002": "gw-two-secret", worker: "w-secret"}
    passwd = tmp_path / "config" / "passwd"
    for user, password in passwords.items():
        create = [] if passwd.exists() else ["-c"]
        subprocess.run([passwd_tool, *create, "-b", str(passwd), user, password], check=True)
    shutil.copy(MOSQUITTO_DIR / "acl", tmp_path / "config" / "acl")
    plain_port, log = free_port(), tmp_path / "mosquitto.log"
    conf = tmp_path / "config" / "mosquitto.conf"
    conf.write_text(
        _adapt_config(
            (MOSQUITTO_DIR / "mosquitto.conf").read_text(), tmp_path, plain_port, tls_port, log
        )
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(plain_port, proc, log)
        if tls_port is not None:
            _wait_for_port(tls_port, proc, log)
        group = _compose()["services"]["homemonitor"]["environment"][
            "HOMEMONITOR_MQTT_SHARED_GROUP"
        ]
        yield DeployBroker(plain_port, tls_port, ca_file, passwords, worker, group)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _worker(
    broker: DeployBroker, port: int, name: str, tls: aiomqtt.TLSParameters | None = None
) -> aiomqtt.Client:
    """A client with the workers' credentials (not yet connected)."""
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=name,
        username=broker.worker,
        password=broker.passwords[broker.worker],
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_params=tls,
    )


@contextlib.asynccontextmanager
async def _gateway(broker: DeployBroker, user: str) -> AsyncIterator[aiomqtt.Client]:
    """A gateway's connection: TLS on the gateway listener when there is one."""
    tls = None
    port = broker.plain_port
    if broker.tls_port is not None and broker.ca_file is not None:
        tls = aiomqtt.TLSParameters(ca_certs=str(broker.ca_file))
        port = broker.tls_port
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=user,
        username=user,
        password=broker.passwords[user],
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_params=tls,
    ) as client:
        yield client


async def test_broker_accepts_deploy_config_and_enforces_acl(deploy_broker: DeployBroker) -> None:
    """A gateway reaches the workers' shared subscription on its own topic only."""
    b = deploy_broker
    own, fhir, other = (
        readings_topic("gw-0001"),
        f"{readings_topic('gw-0001')}/fhir",
        readings_topic("gw-0002"),
    )
    received: list[tuple[str, bytes]] = []
    async with _worker(b, b.plain_port, "homemonitor-test-worker") as worker:
        await worker.subscribe(f"$share/{b.group}/{SUBSCRIPTION}", qos=1)
        async with _gateway(b, "gw-0001") as gateway:
            await gateway.publish(own, b"own", qos=1)
            await gateway.publish(other, b"posing as gw-0002", qos=1)
            await gateway.publish(fhir, b"fence", qos=1)
        async with asyncio.timeout(10):
            async for message in worker.messages:
                assert isinstance(message.payload, bytes)
                received.append((str(message.topic), message.payload))
                if message.payload == b"fence":
                    break
    assert [(own, b"own"), (fhir, b"fence")] == received


async def test_acl_lets_the_service_tell_a_gateway_and_no_other_gateway_listen(
    deploy_broker: DeployBroker,
) -> None:
    """The service's user publishes feedback; gw-0001 reads its own, never gw-0002's."""
    b = deploy_broker
    heard: list[str] = []
    async with _gateway(b, "gw-0001") as gateway:
        await gateway.subscribe("homemonitor/v1/gw/+/feedback", qos=1)  # asks for every home
        async with _worker(b, b.plain_port, "homemonitor-test-notifier") as service:
            await service.publish(feedback_topic("gw-0002"), b"for another home", qos=1)
            await service.publish(feedback_topic("gw-0001"), b"for this home", qos=1)
        async with asyncio.timeout(10):
            async for message in gateway.messages:
                heard.append(str(message.topic))
                break
    assert [feedback_topic("gw-0001")] == heard


async def test_worker_intake_reads_over_tls(deploy_broker: DeployBroker) -> None:
    """The worker's own MQTT reader (``transport.Intake``) over the TLS listener, records split."""
    b = deploy_broker
    if b.tls_port is None or b.ca_file is None:
        pytest.skip("openssl is needed for the TLS listener's certificates")
    tls = aiomqtt.TLSParameters(ca_certs=str(b.ca_file))
    client = _worker(b, b.tls_port, "homemonitor-test-worker-tls", tls)
    transport.enable_manual_ack(client)
    intake = transport.Intake(client, functools.partial(Inbound, generation=1))
    payloads = [bytes([97 + i]) * size for i, size in enumerate((10, 200, 20_000, 100_000, 5))]
    async with client:
        await client.subscribe(f"$share/{b.group}/{SUBSCRIPTION}", qos=1)
        async with _gateway(b, "gw-0001") as gateway:
            for body in payloads:
                await gateway.publish(readings_topic("gw-0001"), body, qos=1)
        got: list[Inbound] = []
        async with asyncio.timeout(10):
            while len(got) < len(payloads):
                await intake.wait()
                got += intake.take(len(payloads))
        assert [m.payload for m in got] == payloads
        transport.ack_all(client, [m.mid for m in got])


async def test_broker_refuses_anonymous_and_wrong_password(deploy_broker: DeployBroker) -> None:
    """Neither an anonymous client nor a wrong password gets a session."""
    for username, password in [(None, None), ("gw-0001", "not-the-password")]:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "127.0.0.1",
                deploy_broker.plain_port,
                identifier="intruder",
                username=username,
                password=password,
                timeout=5,
            ):
                pass


async def _simulate(*args: str) -> tuple[int, str, str]:
    """``homemonitor simulate`` for two patients (gateways gw-0001, gw-0002), as fast as it goes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "homemonitor.cli", "simulate", "--patients", "2", "--days", "1",
        "--speed", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _gateway_listener(broker: DeployBroker) -> list[str]:
    """The simulator's options for the gateways' listener: TLS when the broker has it."""
    if broker.tls_port is not None and broker.ca_file is not None:
        return ["--port", str(broker.tls_port), "--tls-ca", str(broker.ca_file)]
    return ["--port", str(broker.plain_port)]


async def test_simulate_logs_each_gateway_in_from_a_password_file(
    deploy_broker: DeployBroker, tmp_path: Path
) -> None:
    """With --password-file every simulated gateway gets in and its readings reach the workers."""
    b = deploy_broker
    passwords = tmp_path / "gateways.txt"
    passwords.write_text("".join(f"{u}:{p}\n" for u, p in b.passwords.items() if u != b.worker))
    received = 0
    async with _worker(b, b.plain_port, "homemonitor-test-worker") as worker:
        await worker.subscribe(SUBSCRIPTION, qos=1)
        code, out, err = await _simulate(*_gateway_listener(b), "--password-file", str(passwords))
        published = int(out.split()[0])
        async with asyncio.timeout(10):
            async for _ in worker.messages:
                received += 1
                if received == published:
                    break
    assert (0, True) == (code, all(line.startswith("sent ") for line in err.splitlines()))
    assert 0 < published == received


async def test_simulate_refused_by_the_broker_is_an_error(deploy_broker: DeployBroker) -> None:
    """A wrong password, or no broker at all: one line naming the gateway and why, exit 2."""
    listener = _gateway_listener(deploy_broker)
    wrong = await _simulate(*listener, "--password", "not-the-password")
    port = free_port()
    nobody = await _simulate("--port", str(port))
    refused = "2 of 2 gateways could not connect, nothing was published"
    assert (2, "", [
        f"homemonitor: gateway gw-0001: cannot connect to the broker at 127.0.0.1:{listener[1]}"
        ": [code:135] Not authorized (each gateway logs in with its gateway id as user name); "
        + refused
    ]) == (wrong[0], wrong[1], wrong[2].splitlines())  # fmt: skip
    assert (2, "", [
        f"homemonitor: gateway gw-0001: cannot connect to the broker at 127.0.0.1:{port}: "
        f"[Errno 111] Connection refused; {refused}"
    ]) == (nobody[0], nobody[1], nobody[2].splitlines())  # fmt: skip


def test_compose_mosquitto_healthcheck_tells_up_from_down(deploy_broker: DeployBroker) -> None:
    """The compose healthcheck succeeds against the deploy broker, fails on a closed port."""
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub is needed (apt-get install mosquitto-clients)")
    kind, command = _compose()["services"]["mosquitto"]["healthcheck"]["test"]
    assert "CMD-SHELL" == kind
    assert "-p 1883" in command

    def run(port: int) -> int:
        script = command.replace("-p 1883", f"-p {port}")
        return subprocess.run(["sh", "-c", script], check=False, timeout=10).returncode

    assert (0, 1) == (run(deploy_broker.plain_port), run(free_port()))


def test_broker_limits_match_the_service() -> None:
    """mosquitto.conf keeps QoS 1 data and lets through every payload the service accepts."""
    options = _mosquitto_options()
    env = _compose()["services"]["homemonitor"]["environment"]
    settings = Settings(
        _env_file=None,
        max_inflight=int(env["HOMEMONITOR_MAX_INFLIGHT"]),
        max_payload_bytes=int(env["HOMEMONITOR_MAX_PAYLOAD_BYTES"]),
    )
    topic_and_headers = 5 + 2 + len(readings_topic("g" * 64)) + len("/fhir") + 2 + 1024
    assert ["true"] == options["persistence"]
    assert ["false"] == options["allow_anonymous"]
    assert [str(settings.max_inflight)] == options["max_inflight_messages"]
    assert int(options["max_queued_messages"][0]) >= 100 * settings.batch_max
    assert int(options["max_packet_size"][0]) >= settings.max_payload_bytes + topic_and_headers
    assert "message_size_limit" not in options
    assert 1 <= int(options["autosave_interval"][0]) <= 60
    assert ["1883", "8883"] == options["listener"]


# -- the container's entrypoint: one stable MQTT client id per replica ------------------------


def _fake_docker_dns(answer: str) -> tuple[int, threading.Thread]:
    """A one-shot DNS server answering any PTR query with ``answer``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)

    def serve() -> None:
        with sock:
            query, peer = sock.recvfrom(512)
            question_end = query.index(b"\0", 12) + 5
            rdata = b"".join(bytes([len(p)]) + p.encode() for p in answer.split(".")) + b"\0"
            reply = (
                query[:2]
                + struct.pack(">5H", 0x8180, 1, 1, 0, 0)
                + query[12:question_end]
                + struct.pack(">HHHIH", 0xC00C, 12, 1, 600, len(rdata))
                + rdata
            )
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock.getsockname()[1], thread


def _client_id(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "HOMEMONITOR_MQTT_CLIENT_ID"}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    done = subprocess.run(
        [
            "sh",
            str(DEPLOY / "entrypoint.sh"),
            "python",
            "-c",
            "import os; print(os.environ['HOMEMONITOR_MQTT_CLIENT_ID'])",
        ],
        env=base | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    return done.stdout.strip()


def test_entrypoint_names_each_replica_by_its_container_name() -> None:
    """The client id is the container name from Docker DNS, else the hostname, else as set."""
    port, server = _fake_docker_dns("homemonitor-homemonitor-2.homemonitor_default")
    from_dns = _client_id(DOCKER_DNS_SERVER=f"127.0.0.1:{port}")
    server.join(timeout=10)
    fallback = _client_id(DOCKER_DNS_SERVER=f"127.0.0.1:{free_port()}")
    explicit = _client_id(HOMEMONITOR_MQTT_CLIENT_ID="worker-east")
    assert "homemonitor-homemonitor-2" == from_dns
    assert f"homemonitor-{socket.gethostname()}" == fallback
    assert "worker-east" == explicit


# -- Prometheus ------------------------------------------------------------------------------


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool_accepts_prometheus_files(args: tuple[str, ...]) -> None:
    """promtool accepts the scrape config and alert rules, and the alert unit tests pass."""
    *verb, name = args
    done = _promtool(*verb, str(PROMETHEUS_DIR / name))
    assert (0, "") == (done.returncode, done.stderr)


async def test_metrics_endpoint_passes_promtool_check(service: RunningService) -> None:
    """/metrics of a running service lints clean and carries process and build information."""
    async with httpx.AsyncClient(base_url=service.url) as http:
        text = (await http.get("/metrics")).text
    done = _promtool("check", "metrics", stdin=text)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (0, "", "") == (done.returncode, done.stdout, done.stderr)
    assert 1 == samples[("homemonitor_build_info", (("version", __version__),))]
    assert 0 < samples[("process_resident_memory_bytes", ())]
    assert {"python_info", "process_cpu_seconds_total"} <= {name for name, _ in samples}


def test_alerts_use_only_exported_metrics() -> None:
    """Every homemonitor_* name in the rules and their tests is a metric the service exports."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    series = [s["series"] for t in tests["tests"] for s in t["input_series"]]
    used = {n for text in exprs + series for n in re.findall(r"\bhomemonitor_\w+", text)}
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    inflight = next(
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert", "").startswith("HomemonitorInflight")
    )
    assert set() == used - set(exported_series())
    assert {
        "HomemonitorBrokerDisconnected",
        "HomemonitorDatabaseDown",
        "HomemonitorQuarantineRising",
        "HomemonitorMessagesRejected",
        "HomemonitorUnknownDevices",
        "HomemonitorCommitLatencyHigh",
        "HomemonitorInflightNearMax",
        "HomemonitorNoReadingsStored",
        "HomemonitorGatewayForeignReadings",
    } <= alerts
    assert "> 0.9 * homemonitor_inflight_limit_messages" in inflight  # follows the setting


# -- docker-compose.yml, env file, Dockerfile --------------------------------------------------


def test_compose_uses_only_known_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docker-compose.yml and the env example name only HOMEMONITOR_* variables Settings has."""
    text = (ROOT / "docker-compose.yml").read_text()
    compose = _compose()
    env = compose["services"]["homemonitor"]["environment"]
    named = {k for s in compose["services"].values() for k in s.get("environment", {})}
    interpolated = {m.group(1) for m in _INTERPOLATION.finditer(text)}
    example = set(_env_example())
    used = {v for v in named | interpolated | example if v.startswith("HOMEMONITOR_")}
    assert set() == used - SETTINGS_VARS - SECRET_FILE_VARS
    assert "HOMEMONITOR_MQTT_CLIENT_ID" not in used  # per replica: deploy/entrypoint.sh
    # Passwords only from Docker secrets, never in the environment or the env file.
    secrets = compose["secrets"]
    assert {"HOMEMONITOR_DATABASE_PASSWORD_FILE", "HOMEMONITOR_MQTT_PASSWORD_FILE"} <= set(env)
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in named | example)
    for variable in ("HOMEMONITOR_DATABASE_PASSWORD_FILE", "HOMEMONITOR_MQTT_PASSWORD_FILE"):
        name = env[variable].removeprefix("/run/secrets/")
        assert name in compose["services"]["homemonitor"]["secrets"]
        assert secrets[name]["file"].startswith("./deploy/secrets/")
    # The environment, with defaults filled in and the secrets as files, is a valid configuration.
    files = {v: tmp_path / k for k, v in env.items() if k.endswith("_FILE")}
    for path in files.values():
        path.write_text("s3cret p@ss\n")
    for key, value in env.items():
        monkeypatch.setenv(key, str(files.get(value, _resolve(str(value)))))
    settings = Settings(_env_file=None)
    assert ("mosquitto", 1883, "5", "0.0.0.0", 8080) == (  # noqa: S104 - inside the container
        settings.mqtt_host,
        settings.mqtt_port,
        settings.mqtt_protocol,
        settings.http_host,
        settings.http_port,
    )
    assert settings.database_url is not None and settings.mqtt_password is not None
    dsn = settings.database_url.get_secret_value()
    assert "homemonitor:s3cret%20p%40ss@timescaledb:5432/" in dsn
    assert "s3cret p@ss" == settings.mqtt_password.get_secret_value()
    assert settings.mqtt_shared_group


def test_compose_wires_the_stack() -> None:
    """Pinned images, health-gated start, volumes for data, and no internal port published."""
    services = _compose()["services"]
    hm, db, mq, prom = (
        services[n] for n in ("homemonitor", "timescaledb", "mosquitto", "prometheus")
    )
    assert {
        "homemonitor",
        "timescaledb",
        "mosquitto",
        "prometheus",
        "alertmanager",
        "grafana",
    } == {n for n, s in services.items() if "profiles" not in s}
    assert {"nats", "homemonitor-nats"} == {n for n, s in services.items() if "profiles" in s}
    assert re.fullmatch(r"timescale/timescaledb:2\.\d+\.\d+-pg16", db["image"])
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", mq["image"])
    assert "." == hm["build"]
    assert {"timescaledb": "service_healthy", "mosquitto": "service_healthy"} == {
        k: v["condition"] for k, v in hm["depends_on"].items()
    }
    assert all("healthcheck" in s for s in (db, mq, prom))
    assert ["8883:8883"] == mq["ports"]
    assert "ports" not in db
    assert all(p.startswith("127.0.0.1:") for p in hm["ports"] + prom["ports"])
    volumes = {
        v.split(":")[0]: v.split(":")[1] for s in services.values() for v in s.get("volumes", [])
    }
    assert "/var/lib/postgresql/data" == volumes["timescaledb-data"]
    assert "/mosquitto/data" == volumes["mosquitto-data"]
    assert {
        "timescaledb-data",
        "mosquitto-data",
        "nats-data",
        "prometheus-data",
        "alertmanager-data",
        "grafana-data",
    } == set(_compose()["volumes"])
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"][0]
    names = ["homemonitor", "homemonitor-nats"]
    assert [{"names": names, "type": "A", "port": 8080, "refresh_interval": "30s"}] == (
        scrape["dns_sd_configs"]
    )


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *_: object) -> None:
        pass


def test_dockerfile_runs_as_user_and_its_healthcheck_works() -> None:
    """The image is python:3.12-slim, non-root, runs the service, and checks /health."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.12-slim\b", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert ["homemonitor:homemonitor"] == users
    assert 'CMD ["homemonitor", "run"]' in text
    assert "HOMEMONITOR_HTTP_HOST=0.0.0.0" in text
    env_vars = set(re.findall(r"\b(HOMEMONITOR_\w+)=", text))
    assert set() == env_vars - SETTINGS_VARS
    check = json.loads(re.search(r"^\s+CMD (\[.*\])$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def run(port: int) -> int:
        env = os.environ | {"HOMEMONITOR_HTTP_PORT": str(port)}
        argv = [sys.executable, *check[1:]]
        return subprocess.run(argv, env=env, capture_output=True, check=False).returncode

    try:
        assert (0, 1) == (run(server.server_address[1]), run(free_port()))
    finally:
        server.shutdown()
        server.server_close()
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".env", "!deploy/entrypoint.sh", "!deploy/registry-example.yaml"} <= set(ignored)
