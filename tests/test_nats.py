"""NATS Server's MQTT gateway on JetStream as the broker: what the service does about it.

Every test starts its own ``nats-server`` (JetStream in a temporary directory, free ports)
and is skipped when the binary is not installed. The broker tests of ``test_broker.py`` and
``test_nothing_lost.py`` marked ``BOTH_BROKERS`` (a reconnect after a broker crash, the
3.1.1 session kept while the worker is away, nothing acknowledged before commit, a worker
SIGKILLed mid-stream) run against it as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import asyncpg
import pytest
import yaml

from homemonitor.contract.protocol import SUBSCRIPTION, readings_topic
from homemonitor.embedded import PrivateNats, _wait_for_port, free_port, start_all
from homemonitor.ingest import transport
from homemonitor.ingest.pipeline import Inbound
from homemonitor.settings import Settings
from tests.conftest import (
    RunningService,
    numbered,
    private_nats,
    publisher,
    settings_for,
    wait_until,
)

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
ROOT = Path(__file__).resolve().parents[1]
#: The subject mappings that split readings into partitions, as deploy/nats/ ships them.
PARTITIONS_CONF = ROOT / "deploy" / "nats" / "partitions.conf"


def _count(db: asyncpg.Connection) -> object:
    return db.fetchval("SELECT count(*) FROM readings")


async def _publish_through_crashes(
    server: PrivateNats, device: str, gateway: str, total: int, acked: list[int]
) -> None:
    """Numbered readings 0..total-1 at QoS 1; ``acked`` gets each once its PUBACK came back.

    A publish the broker did not acknowledge (it was killed) is sent again after
    reconnecting, as a gateway would.
    """
    seq = 0
    while seq < total:
        try:
            async with aiomqtt.Client(
                server.host, server.port, identifier=gateway, timeout=5
            ) as gw:
                while seq < total:
                    await gw.publish(readings_topic(gateway), numbered(seq, device, BASE), qos=1)
                    acked.append(seq)
                    seq += 1
                    if seq % 20 == 0:
                        await asyncio.sleep(0.005)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


async def _stored_once(db: asyncpg.Connection, acked: list[int]) -> None:
    """Every acknowledged reading is stored, none twice."""
    rows = await db.fetch("SELECT message_id FROM readings")
    stored = [int(r["message_id"]) for r in rows]
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored)


async def test_nats_killed_and_restarted_loses_no_acknowledged_reading(
    db: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """nats-server SIGKILLed mid-stream and restarted: every PUBACKed reading stored, once.

    Mosquitto loses what arrived since its last autosave here; NATS acknowledges a QoS 1
    PUBLISH only once JetStream has it.
    """
    with private_nats(tmp_path / "nats") as server:
        worker = RunningService(settings_for(dsn, server), http=False)
        await worker.start()
        total, acked = 3000, list[int]()
        publishing = asyncio.create_task(
            _publish_through_crashes(server, "scale-1", "gw-1", total, acked)
        )
        await wait_until(lambda: _count(db), lambda n: n >= 500)
        server.kill()
        killed_at = len(acked)
        await asyncio.sleep(0.3)
        server.start()
        await publishing
        await wait_until(lambda: _count(db), lambda n: n >= total, 60)
        await worker.stop()
    assert 0 < killed_at < total
    assert list(range(total)) == sorted(set(acked))
    await _stored_once(db, acked)


def test_shared_group_on_nats_is_refused_at_start(tmp_path: Path) -> None:
    """``homemonitor run`` with a shared group on NATS exits 2, saying what to set instead."""
    env = {
        **os.environ,
        "HOMEMONITOR_DATABASE_URL": "postgresql://hm@127.0.0.1:1/hm",
        "HOMEMONITOR_MQTT_HOST": "127.0.0.1",
        "HOMEMONITOR_MQTT_BROKER": "nats",
        "HOMEMONITOR_MQTT_SHARED_GROUP": "homemonitor",
        "HOMEMONITOR_HTTP_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "homemonitor.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "HOMEMONITOR_MQTT_SHARED_GROUP cannot be used with HOMEMONITOR_MQTT_BROKER=nats" in (
        done.stderr
    )
    assert "Unset HOMEMONITOR_MQTT_SHARED_GROUP" in done.stderr
    assert "HOMEMONITOR_MQTT_PARTITIONS" in done.stderr
    assert "Traceback" not in done.stderr


async def test_why_shared_subscriptions_are_refused_on_nats(nats: PrivateNats) -> None:
    """NATS grants ``$share/...`` and delivers nothing to it while the gateway gets PUBACKs."""
    async with aiomqtt.Client(nats.host, nats.port, identifier="w", clean_session=False) as w:
        granted = await w.subscribe(f"$share/hm/{SUBSCRIPTION}", qos=1)
        assert [1] == [g if isinstance(g, int) else g.value for g in granted]
        async with publisher(nats) as gw:
            await gw.publish(readings_topic("gw-1"), numbered(0, "cuff-1", BASE), qos=1)

        async def first() -> aiomqtt.Message:
            async for message in w.messages:
                return message
            raise AssertionError

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first(), 1.5)


async def test_partitions_split_the_load_between_workers_on_nats(
    db: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """Two workers own one partition each: each gateway's readings go to one, stored once.

    NATS's ``{{partition(2,1)}}`` mapping puts gw-2 in partition 0 and gw-1 in 1. A worker
    restarted with other partitions drops the ones it gave away from its session.
    """
    extra = PARTITIONS_CONF.read_text().replace("partition(12,", "partition(2,")
    with private_nats(tmp_path / "nats", extra_config=extra) as server:

        def worker(partitions: str, client_id: str) -> RunningService:
            settings = settings_for(
                dsn,
                server,
                mqtt_client_id=client_id,
                mqtt_partition_count=2,
                mqtt_partitions=partitions,
            )
            return RunningService(settings, http=False)

        owners = [worker("0", "hm-part-a"), worker("1", "hm-part-b")]
        for w in owners:
            await w.start()
        async with publisher(server, "gw-1") as gw1, publisher(server, "gw-2") as gw2:
            for seq in range(100):
                await gw1.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)
                await gw2.publish(readings_topic("gw-2"), numbered(seq, "oxi-2", BASE), qos=1)
        await wait_until(lambda: _count(db), lambda n: n == 200)
        shares = [
            await w.counted("homemonitor_readings_stored_total", at_least=100) for w in owners
        ]
        assert [100.0, 100.0] == shares
        assert 0 == await db.fetchval("SELECT count(*) FROM quarantine")
        for w in owners:
            await w.stop()
        # a takes over partition 1 and gives 0 away (to a worker not running now)
        moved = worker("1", "hm-part-a")
        await moved.start()
        async with publisher(server, "gw-1") as gw1, publisher(server, "gw-2") as gw2:
            await gw2.publish(readings_topic("gw-2"), numbered(100, "oxi-2", BASE), qos=1)
            await gw1.publish(readings_topic("gw-1"), numbered(100, "scale-1", BASE), qos=1)
        await wait_until(lambda: moved.metric_async("homemonitor_readings_stored_total"), bool)
        await asyncio.sleep(0.5)
        assert 1.0 == moved.metric("homemonitor_readings_stored_total")  # gw-1's only
        await moved.stop()


async def test_mqtt5_worker_pointed_at_nats_is_told_what_to_set(
    db: asyncpg.Connection, dsn: str, nats: PrivateNats, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS refuses an MQTT 5 CONNECT: the log names HOMEMONITOR_MQTT_BROKER=nats."""
    worker = RunningService(settings_for(dsn, nats, mqtt_broker="mosquitto"), http=False)
    with caplog.at_level(logging.WARNING, logger="homemonitor.ingest.worker"):
        await worker.start(ready=False)

        async def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if "CONNECT" in r.getMessage()]

        lines = await wait_until(warnings, bool, 10)
        await worker.stop()
    assert "for it set HOMEMONITOR_MQTT_BROKER=nats" in lines[0]
    assert not worker.health.broker_connected


def test_partitions_are_checked_at_start() -> None:
    """Partitions outside the count, or on Mosquitto, are refused with what to set."""
    with pytest.raises(ValueError, match="names partition 4, but there are 4"):
        Settings(_env_file=None, mqtt_broker="nats", mqtt_partition_count=4, mqtt_partitions="0,4")
    with pytest.raises(ValueError, match="needs HOMEMONITOR_MQTT_BROKER=nats"):
        Settings(_env_file=None, mqtt_partition_count=4, mqtt_partitions="0-3")
    with pytest.raises(ValueError, match="go together"):
        Settings(_env_file=None, mqtt_broker="nats", mqtt_partitions="0-3")
    with pytest.raises(ValueError, match=r"speaks MQTT 3\.1\.1 only"):
        Settings(_env_file=None, mqtt_broker="nats", mqtt_protocol="5")


# -- the intake bounds what it holds under MQTT 3.1.1 --------------------------------------


@pytest.mark.parametrize("kind", ["mosquitto", "nats"])
async def test_intake_stops_reading_past_its_limit_under_mqtt_311(
    kind: str, tmp_path: Path
) -> None:
    """A broker that sends without bound: the intake holds at most limit + one read, then resumes.

    MQTT 3.1.1 cannot tell the broker HOMEMONITOR_MAX_INFLIGHT; Mosquitto with
    ``max_inflight_messages 0`` and NATS with ``max_ack_pending`` 30000 send everything.
    """
    from homemonitor.embedded import PrivateMosquitto  # noqa: PLC0415

    server = (
        PrivateMosquitto(tmp_path / "mq", extra_config="max_inflight_messages 0\n")
        if kind == "mosquitto"
        else private_nats(tmp_path / "nats", max_ack_pending=30000)  # twice that: the most
    )
    limit, total, payload = 100, 1000, b"x" * 1000
    with server:
        worker = aiomqtt.Client(
            server.host, server.port, identifier="bounded", clean_session=False, keepalive=30
        )
        transport.enable_manual_ack(worker)
        intake = transport.Intake(worker, Inbound, limit=limit)
        async with worker:
            granted = await worker.subscribe(SUBSCRIPTION, qos=1)
            assert [1] == [g if isinstance(g, int) else g.value for g in granted]
            async with publisher(server) as gw:
                for _ in range(total):
                    await gw.publish(readings_topic("gw-1"), payload, qos=1)
            await asyncio.sleep(1.0)
            held = len(intake)
            assert intake.paused, (held, intake.unacknowledged)
            assert limit < held <= limit + (64 * 1024) // len(payload) + 1
            assert held == intake.unacknowledged
            received: list[Inbound] = []
            deadline = asyncio.get_running_loop().time() + 20
            while len(received) < total and asyncio.get_running_loop().time() < deadline:
                batch = intake.take(50)
                if not batch:
                    await intake.wait(asyncio.ensure_future(asyncio.sleep(0.2)))
                    continue
                received += batch
                transport.ack_all(worker, [m.mid for m in batch])
                intake.settle(len(batch))
                assert intake.unacknowledged <= limit + (64 * 1024) // len(payload) + 1
            assert total == len(received)
            assert not intake.paused


# -- several broker addresses ----------------------------------------------------------------


async def test_worker_moves_to_the_next_cluster_node_when_its_node_dies(
    db: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """Three NATS nodes, the worker on the first: SIGKILL it; the worker resumes its session
    on another node (JetStream replicates it three times) and nothing acknowledged is lost.
    """
    try:
        nodes = PrivateNats.cluster(tmp_path / "cluster", 3)
    except Exception as exc:  # noqa: BLE001 - ServiceStartError: no binary
        pytest.skip(f"needs nats-server: {exc}")
    start_all(nodes)
    try:
        hosts = ",".join(f"{n.host}:{n.port}" for n in nodes)
        settings = settings_for(
            dsn, nodes[0], mqtt_host=hosts, mqtt_client_id="hm-rotate", mqtt_connect_timeout_s=5
        )
        worker = RunningService(settings, http=False)
        await worker.start()
        total, acked = 1500, list[int]()
        publishing = asyncio.create_task(
            _publish_through_crashes(nodes[2], "cuff-1", "gw-1", total, acked)
        )
        await wait_until(lambda: _count(db), lambda n: n >= 300, 30)
        nodes[0].kill()
        await publishing
        await wait_until(lambda: _count(db), lambda n: n >= total, 90)
        await worker.stop()
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop()
    await _stored_once(db, acked)


# -- deploy/nats/ as shipped -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeployNats:
    """nats-server running deploy/nats/ as shipped: its MQTT TLS port and the CA to trust."""

    port: int
    ca: str


@pytest.fixture
def deploy_nats(tmp_path: Path) -> Iterator[DeployNats]:
    """deploy/nats/nats-server.conf with users from make-users.sh, on the real nats-server.

    Only ports, the store directory and certificate paths are rewritten; on NATS before
    2.10 ``sync_interval`` too (it does not know the key).
    """
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed for the TLS listener's certificates")
    installed = private_nats(tmp_path / "unused")
    binary = installed.binary
    deploy = ROOT / "deploy" / "nats"
    conf = tmp_path / "conf"
    conf.mkdir()
    certs = ROOT / "deploy" / "mosquitto" / "make-dev-certs.sh"
    subprocess.run(["sh", str(certs), str(conf / "certs")], check=True, capture_output=True)
    (tmp_path / "gateways.txt").write_text("gw-1:gw-one-secret\ngw-2:gw-two-secret\n")
    (tmp_path / "worker-password").write_text("w-secret\n")
    make_users = [str(deploy / "make-users.sh"), str(tmp_path / "gateways.txt")]
    users = subprocess.run(
        ["sh", *make_users, str(tmp_path / "worker-password")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "w-secret" not in users and "gw-one-secret" not in users  # hashes only
    (conf / "users.conf").write_text(users)
    shutil.copy(deploy / "partitions.conf", conf / "partitions.conf")
    port = free_port()
    text = (
        (deploy / "nats-server.conf")
        .read_text()
        .replace("listen: 127.0.0.1:4222", f"listen: 127.0.0.1:{free_port()}")
        .replace("http: 127.0.0.1:8222", f"http: 127.0.0.1:{free_port()}")
        .replace("/data/jetstream", str(tmp_path / "js"))
        .replace("listen: 0.0.0.0:8883", f"listen: 127.0.0.1:{port}")
        .replace("/etc/nats/certs", str(conf / "certs"))
    )
    if installed.version() < (2, 10):
        text = text.replace("  sync_interval: always\n", "")
    (conf / "nats-server.conf").write_text(text)
    with (tmp_path / "nats.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(conf / "nats-server.conf")], stdout=log, stderr=log
        )
    try:
        _wait_for_port(port, proc, "nats-server", tmp_path / "nats.log")
        yield DeployNats(port, str(conf / "certs" / "ca.crt"))
    finally:
        proc.terminate()
        proc.wait(10)


def _client(deploy: DeployNats, client_id: str, user: str, password: str) -> aiomqtt.Client:
    tls = aiomqtt.TLSParameters(ca_certs=deploy.ca)
    return aiomqtt.Client(
        "localhost",
        deploy.port,
        identifier=client_id,
        username=user,
        password=password,
        tls_params=tls,
        timeout=5,
    )


async def test_deploy_config_runs_and_enforces_gateway_permissions(
    db: asyncpg.Connection, dsn: str, deploy_nats: DeployNats
) -> None:
    """The worker owns all 12 partitions over TLS; gw-1 reaches it on its own topic only.

    Posing as gw-2 is dropped (as Mosquitto's ACL drops it); a wrong password is refused;
    a worker subscribing to the readings without partitions is refused, not starved.
    """
    settings = Settings(
        _env_file=None,
        database_url=dsn,
        mqtt_broker="nats",
        mqtt_host="localhost",
        mqtt_port=deploy_nats.port,
        mqtt_tls_ca=deploy_nats.ca,
        mqtt_username="homemonitor.worker",
        mqtt_password="w-secret",
        mqtt_client_id="hm-deploy-nats",
        mqtt_partition_count=12,
        mqtt_partitions="0-11",
    )
    worker = RunningService(settings, http=False)
    await worker.start()
    async with _client(deploy_nats, "gw-1", "gw-1", "gw-one-secret") as gw:
        await gw.publish(readings_topic("gw-2"), numbered(0, "oxi-2", BASE), qos=1)
        await gw.publish(readings_topic("gw-1"), numbered(1, "cuff-1", BASE), qos=1)
    await wait_until(lambda: _count(db), lambda n: n == 1)
    await asyncio.sleep(0.5)
    assert ["1"] == [r[0] for r in await db.fetch("SELECT message_id FROM readings")]
    assert 0 == await db.fetchval("SELECT count(*) FROM quarantine")
    await worker.stop()
    with pytest.raises(aiomqtt.MqttError):
        async with _client(deploy_nats, "gw-2", "gw-2", "wrong"):
            pass
    async with _client(deploy_nats, "plain", "homemonitor.worker", "w-secret") as unpartitioned:
        granted = await unpartitioned.subscribe(SUBSCRIPTION, qos=1)
        assert [0x80] == [g if isinstance(g, int) else g.value for g in granted]


def test_compose_nats_profile_fits_deploy_nats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compose worker on NATS is a valid configuration that matches deploy/nats/."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    nats, worker = compose["nats"], compose["homemonitor-nats"]
    assert ["nats"] == nats["profiles"] == worker["profiles"]
    version = re.fullmatch(r"nats:(\d+)\.(\d+)\.\d+-alpine", nats["image"])
    assert version is not None
    assert (int(version[1]), int(version[2])) >= (2, 10)  # sync_interval: always
    conf = (ROOT / "deploy" / "nats" / "nats-server.conf").read_text()
    partitions = re.findall(r"partition\((\d+),1\)", PARTITIONS_CONF.read_text())
    max_ack_pending = int(re.findall(r"^\s*max_ack_pending: (\d+)", conf, re.MULTILINE)[0])
    env = worker["environment"]
    for key, value in env.items():
        if not key.endswith("_FILE"):
            monkeypatch.setenv(key, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
    settings = Settings(_env_file=None)
    assert ("nats", "3.1.1", None) == (
        settings.mqtt_broker,
        settings.mqtt_protocol,
        settings.mqtt_shared_group,
    )
    assert {str(settings.mqtt_partition_count)} == set(partitions)
    assert tuple(range(settings.mqtt_partition_count or 0)) == settings.owned_partitions
    assert settings.max_inflight == 2 * max_ack_pending  # a # subscription: two consumers
    assert f"{env['HOMEMONITOR_MQTT_TLS_CA']}:ro" in [v.split(":", 1)[1] for v in worker["volumes"]]
    assert "include ./users.conf" in conf and "include ./partitions.conf" in conf
