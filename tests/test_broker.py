"""The MQTT side: reconnecting after a broker crash, and workers sharing a subscription."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import PIPE

import asyncpg
import httpx
import pytest

from homemonitor.contract.protocol import SUBSCRIPTION, readings_topic
from homemonitor.embedded import PrivateBroker, PrivateMosquitto, free_port
from tests.conftest import (
    BOTH_BROKERS,
    RunningService,
    numbered,
    publisher,
    settings_for,
    wait_until,
)

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@BOTH_BROKERS
async def test_worker_reconnects_after_broker_crash(
    service: RunningService, broker: PrivateBroker, db: asyncpg.Connection
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

    async def stored_by_each() -> list[float]:  # counted just after each batch's commit
        return [w.metric("homemonitor_readings_stored_total") for w in workers]

    shares = await wait_until(stored_by_each, lambda s: sum(s) >= total, within=5)
    for w in workers:
        await w.stop()
    assert total == sum(shares)
    assert all(share > 0 for share in shares)


async def test_scaling_down_leaves_no_share_stranded(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, tmp_path: Path
) -> None:
    """A replica gone for good: ``homemonitor leave`` stores its session's share, ends it.

    Mosquitto hands shared-subscription messages round robin to every member session,
    connected or not: while replica a is away, half the readings wait in its session.
    """
    a, b = (
        RunningService(settings_for(dsn, broker, mqtt_shared_group="hm"), http=False)
        for _ in range(2)
    )
    for w in (a, b):
        await w.start()
    await a.stop()  # scaled down
    async with publisher(broker) as gw:
        for seq in range(200):
            await gw.publish(readings_topic("gw-2"), numbered(seq, "oxi-2", BASE), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n >= 90)
    await asyncio.sleep(0.5)
    assert 100 == await db.fetchval("SELECT count(*) FROM readings")  # a's share is stranded
    env = {
        **os.environ,
        "HOMEMONITOR_DATABASE_URL": dsn,
        "HOMEMONITOR_MQTT_HOST": broker.host,
        "HOMEMONITOR_MQTT_PORT": str(broker.port),
        "HOMEMONITOR_MQTT_SHARED_GROUP": "hm",
    }
    leave = [sys.executable, "-m", "homemonitor.cli", "leave", "--idle", "1"]
    done = await asyncio.create_subprocess_exec(
        *leave, "--client-id", a.settings.mqtt_client_id, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err.decode()
    assert "ended: 100 readings stored" in out.decode()
    assert 200 == await db.fetchval("SELECT count(*) FROM readings")
    async with publisher(broker) as gw:  # a's session is gone: b gets every reading now
        for seq in range(200, 300):
            await gw.publish(readings_topic("gw-2"), numbered(seq, "oxi-2", BASE), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 300)
    await b.stop()


@BOTH_BROKERS
async def test_worker_speaks_mqtt_311_with_a_persistent_session(
    db: asyncpg.Connection, dsn: str, broker: PrivateBroker
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


def _ready(svc: RunningService) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return svc.health.ready

    return probe


def _warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], Awaitable[list[str]]]:
    async def probe() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "homemonitor.ingest.worker" and r.levelno == logging.WARNING
        ]

    return probe


def _dynamic_security(directory: Path, *, subscribe: bool) -> str:
    """Mosquitto config lines for its dynamic-security plugin, with subscribing allowed or not.

    Mosquitto's ``acl_file`` never refuses a subscription (it filters at delivery, so a
    worker without ``topic read`` gets a granted SUBACK and silence); this plugin refuses.
    """
    plugins = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    if not plugins:
        pytest.skip("needs Mosquitto's dynamic-security plugin (Debian package mosquitto)")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "dynamic-security.json"
    access = {
        "publishClientSend": True,
        "publishClientReceive": True,
        "subscribe": subscribe,
        "unsubscribe": True,
    }
    roles: dict[str, list[object]] = {"clients": [], "groups": [], "roles": []}
    config.write_text(json.dumps({"defaultACLAccess": access, **roles}))
    return f"plugin {plugins[0]}\nplugin_opt_config_file {config}\n"


@pytest.mark.parametrize(("protocol", "code"), [("5", "0x87"), ("3.1.1", "0x80")])
async def test_refused_subscription_is_not_ready_and_is_retried(
    db: asyncpg.Connection,
    dsn: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
    code: str,
) -> None:
    """The broker ACL refuses the subscription: /ready 503, a log line says so, retried; ready."""
    denied = _dynamic_security(tmp_path / "acl", subscribe=False)
    with PrivateMosquitto(tmp_path / "mq", extra_config=denied) as broker:
        svc = RunningService(settings_for(dsn, broker, mqtt_protocol=protocol))
        with caplog.at_level(logging.WARNING, logger="homemonitor.ingest.worker"):
            await svc.start(ready=False)
            refused = await wait_until(
                _warnings(caplog),
                lambda lines: sum("refused the subscription" in m for m in lines) >= 2,
            )
            assert svc.health.registry_loaded and svc.health.database_ok
            assert not svc.health.broker_connected
            assert 0 == svc.metric("homemonitor_broker_connected")
            async with httpx.AsyncClient(base_url=svc.url) as http:
                assert 503 == (await http.get("/ready")).status_code
            broker.stop()
            broker.extra_config = _dynamic_security(tmp_path / "acl", subscribe=True)
            broker.start()
            await wait_until(_ready(svc), bool, 40)
        async with publisher(broker) as gw:
            await gw.publish(readings_topic("gw-2"), numbered(0, "oxi-2", BASE), qos=1)
        await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
        await svc.stop()
    assert f"refused the subscription to {SUBSCRIPTION!r} (reason code {code}" in refused[0]
    assert "ACL" in refused[0]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_subscription_granted_at_qos_0_is_an_error(
    db: asyncpg.Connection,
    dsn: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
) -> None:
    """A broker that grants QoS 0 (max_qos 0) would not keep unacknowledged readings: not ready."""
    with PrivateMosquitto(tmp_path / "mq", extra_config="max_qos 0\n") as broker:
        svc = RunningService(settings_for(dsn, broker, mqtt_protocol=protocol))
        with caplog.at_level(logging.WARNING, logger="homemonitor.ingest.worker"):
            await svc.start(ready=False)
            lines = await wait_until(
                _warnings(caplog), lambda lines: any("at QoS 0, not 1" in m for m in lines)
            )
            assert not svc.health.ready
        await svc.stop()
    assert any("max_qos" in m for m in lines)


@pytest.mark.parametrize(
    ("protocol", "answer"),
    [
        ("5", b""),  # drops an MQTT 5 CONNECT unanswered, as a 3.1.1-only broker may
        ("5", b"\x20\x02\x00\x01"),  # 3.1.1 CONNACK: unacceptable protocol version
        ("3.1.1", b""),
    ],
)
async def test_broker_that_does_not_speak_the_protocol_is_named(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
    answer: bytes,
) -> None:
    """A broker that drops or refuses the CONNECT: the log names HOMEMONITOR_MQTT_PROTOCOL."""
    connects: list[bytes] = []

    async def not_our_protocol(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connects.append(await reader.read(1024))  # the CONNECT
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_our_protocol, "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    settings = settings_for(dsn, broker, mqtt_port=port, mqtt_protocol=protocol)
    svc = RunningService(settings, http=False)
    loop = asyncio.get_running_loop()
    async with server:
        with caplog.at_level(logging.WARNING, logger="homemonitor.ingest.worker"):
            await svc.start(ready=False)
            started = loop.time()
            lines = await wait_until(
                _warnings(caplog), lambda lines: any("CONNECT" in m for m in lines), 10
            )
            named_after = loop.time() - started
            await svc.stop()
    other = "3.1.1" if protocol == "5" else "5"
    assert f"set HOMEMONITOR_MQTT_PROTOCOL={other}" in lines[0]
    assert "timed out" not in lines[0]
    assert named_after < 5  # not after aiomqtt's connect timeout
    assert connects[0][0] == 0x10  # it was sent a CONNECT
    assert not svc.health.broker_connected
