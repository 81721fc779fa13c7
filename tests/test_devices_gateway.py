"""The reference gateway's store-and-forward, and the simulation, against a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from homemonitor.contract.protocol import SUBSCRIPTION, PayloadFormat, readings_topic
from homemonitor.embedded import PrivateMosquitto, free_port
from homemonitor.runtime import Backoff
from homemonitor_devices.gateway import Gateway, OutboxQueue, TlsConfig
from homemonitor_devices.simulate import ProgressLine, demo_clinic, run_simulation

FAST = Backoff(initial=0.05, cap=0.3)
TIMEOUT = 10.0


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(tmp_path / "mq")
    broker.start()
    yield broker
    broker.kill()


class Collector:
    """Everything published on the readings topics, kept across broker restarts.

    Its session is persistent (clean_session false), so messages published while it is
    reconnecting are queued for it by the broker.
    """

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.broker = broker
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = asyncio.Event()
        self._changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier="test-collector",
                    clean_session=False,
                ) as client:
                    await client.subscribe(SUBSCRIPTION, qos=1)
                    self._client = client
                    self.subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.messages.append((str(message.topic), message.payload))
                        self._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # broker down: try again shortly

    async def wait_for(self, done: Callable[[list[tuple[str, bytes]]], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not done(self.messages):
                self._changed.clear()
                await self._changed.wait()

    async def settle(self) -> None:
        """Make sure the broker has our PUBACKs (it handles a client's packets in order).

        Otherwise a broker stopped right now would deliver the messages again after its
        restart (at least once, towards this subscriber) and blur what the gateway did.
        """
        assert self._client is not None
        await self._client.subscribe("test/settle", qos=1)

    def payloads(self) -> list[bytes]:
        return [payload for _, payload in self.messages]


@pytest.fixture
async def collector(mosquitto: PrivateMosquitto) -> AsyncIterator[Collector]:
    collecting = Collector(mosquitto)
    task = asyncio.create_task(collecting.run(), name="collector")
    await asyncio.wait_for(collecting.subscribed.wait(), TIMEOUT)
    yield collecting
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _gateway(broker: PrivateMosquitto, queue: Path) -> Gateway:
    return Gateway("gw-0001", queue_path=queue, host=broker.host, port=broker.port, backoff=FAST)


def _payload(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def _rows(queue: Path) -> int:
    with contextlib.closing(sqlite3.connect(queue)) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def test_gateway_publishes_in_order(
    mosquitto: PrivateMosquitto, collector: Collector, tmp_path: Path
) -> None:
    """Submitted messages arrive once each, in order, on the format's topic; the queue empties."""
    queue = tmp_path / "gw.sqlite3"
    async with _gateway(mosquitto, queue) as gateway:
        for n in range(50):
            await gateway.submit(PayloadFormat.BLE if n % 2 else PayloadFormat.NATIVE, _payload(n))
        await asyncio.wait_for(gateway.drained(), TIMEOUT)
        await collector.wait_for(lambda got: len(got) >= 50)
        assert 50 == gateway.stats.published
    assert [_payload(n) for n in range(50)] == collector.payloads()
    assert readings_topic("gw-0001", PayloadFormat.BLE) == collector.messages[1][0]
    assert 0 == _rows(queue)


async def test_gateway_stores_and_forwards_across_an_outage_and_a_restart(
    mosquitto: PrivateMosquitto, collector: Collector, tmp_path: Path
) -> None:
    """Broker down, gateway killed and recreated from its file: every message once, in order."""
    queue = tmp_path / "gw.sqlite3"
    first = _gateway(mosquitto, queue)
    await first.start()
    for n in range(5):
        await first.submit(PayloadFormat.NATIVE, _payload(n))
    await asyncio.wait_for(first.drained(), TIMEOUT)
    await collector.wait_for(lambda got: len(got) >= 5)
    await collector.settle()

    mosquitto.stop()
    for n in range(5, 15):
        await first.submit(PayloadFormat.NATIVE, _payload(n))
    assert 10 == first.pending
    await first.close(grace=0)  # killed: nothing flushed beyond what each submit committed
    assert 10 == _rows(queue)

    second = _gateway(mosquitto, queue)
    await second.start()
    for n in range(15, 20):
        await second.submit(PayloadFormat.NATIVE, _payload(n))
    assert 15 == second.pending
    mosquitto.start()
    await asyncio.wait_for(second.drained(), TIMEOUT)
    await second.submit(PayloadFormat.NATIVE, b"end")  # published after everything else
    await collector.wait_for(lambda got: got[-1][1] == b"end")
    await second.close()

    assert [_payload(n) for n in range(20)] + [b"end"] == collector.payloads()
    assert 0 == _rows(queue)


async def test_outage_in_the_middle_of_a_backlog_loses_nothing_and_keeps_order(
    mosquitto: PrivateMosquitto, collector: Collector, tmp_path: Path
) -> None:
    """Broker stopped while a backlog streams out: after restart the rest follows, in order.

    QoS 1 is at least once: a message in flight when the broker went down may come twice
    (from the gateway, or from the broker to this subscriber); first arrivals are in order.
    """
    expected = [_payload(n) for n in range(1500)]
    async with _gateway(mosquitto, tmp_path / "gw.sqlite3") as gateway:
        await gateway.submit_many([(PayloadFormat.NATIVE, p) for p in expected])
        await collector.wait_for(lambda got: len(got) >= 200)
        mosquitto.stop()
        assert 0 < gateway.pending < len(expected)
        mosquitto.start()
        await asyncio.wait_for(gateway.drained(), TIMEOUT)
        await gateway.submit(PayloadFormat.NATIVE, b"end")
        await collector.wait_for(lambda got: got[-1][1] == b"end")
    received = collector.payloads()[:-1]
    assert expected == list(dict.fromkeys(received))  # first arrivals, in order
    assert 2 <= gateway.stats.connects


CHILD = """
import asyncio, sys
from pathlib import Path
from homemonitor.contract.protocol import PayloadFormat
from homemonitor_devices.gateway import Gateway

async def main() -> None:
    gateway = Gateway("gw-0001", queue_path=Path(sys.argv[1]), port=int(sys.argv[2]))
    await gateway.start()
    for n in range(int(sys.argv[3])):
        await gateway.submit(PayloadFormat.NATIVE, b'{"n": %d}' % n)
    print("queued", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_queue_survives_sigkill_of_the_gateway_process(
    mosquitto: PrivateMosquitto, collector: Collector, tmp_path: Path
) -> None:
    """Messages a gateway process queued while the broker was down survive its SIGKILL."""
    queue = tmp_path / "gw.sqlite3"
    mosquitto.stop()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(queue),
        str(mosquitto.port),
        "30",
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert b"queued\n" == await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
    os.kill(child.pid, signal.SIGKILL)
    assert -signal.SIGKILL == await asyncio.wait_for(child.wait(), TIMEOUT)

    mosquitto.start()
    async with _gateway(mosquitto, queue) as gateway:
        assert 30 == gateway.pending
        await asyncio.wait_for(gateway.drained(), TIMEOUT)
        await collector.wait_for(lambda got: len(got) >= 30)
    assert [b'{"n": %d}' % n for n in range(30)] == collector.payloads()


def test_outbox_keeps_order_and_deletes_only_what_was_acknowledged(tmp_path: Path) -> None:
    """The outbox is FIFO, survives reopening, and deletes through a sequence number."""
    queue = OutboxQueue(tmp_path / "q.sqlite3")
    queue.append([("t", b"a"), ("t", b"b"), ("t", b"c")])
    head = queue.head(2)
    queue.remove_through(head[0].seq)
    queue.close()
    reopened = OutboxQueue(tmp_path / "q.sqlite3")
    assert [b"b", b"c"] == [m.payload for m in reopened.head(10)]
    assert 2 == len(reopened)
    reopened.close()


async def test_simulation_delivers_every_message_and_reports(
    mosquitto: PrivateMosquitto, collector: Collector, tmp_path: Path
) -> None:
    """A demo clinic run sends each generated message (duplicates and garbage included)."""
    _, assignments = demo_clinic(8, seed=3, start=datetime(2026, 3, 2, tzinfo=UTC), days=1)
    expected = [(p.topic, p.payload) for p in assignments.publications()]
    progress = io.StringIO()
    summary = await run_simulation(
        assignments,
        queue_dir=tmp_path / "queues",
        port=mosquitto.port,
        progress=ProgressLine(progress, interactive=True),
        backoff=FAST,
    )
    await collector.wait_for(lambda got: len(got) >= len(expected))
    assert len(expected) == summary.generated == summary.published
    assert 0 == summary.queued
    assert sorted(expected) == sorted(collector.messages)
    for gateway in {topic.split("/")[3] for topic, _ in expected}:  # per gateway: in order
        assert [m for m in expected if m[0].split("/")[3] == gateway] == [
            m for m in collector.messages if m[0].split("/")[3] == gateway
        ]
    assert progress.getvalue().startswith("\rsent")
    assert progress.getvalue().endswith("\n")


def test_progress_line_never_shares_a_row_and_is_plain_when_piped() -> None:
    """On a terminal a line printed above the status gets its own row; piped, no \\r at all."""
    terminal, pipe = io.StringIO(), io.StringIO()
    for stream, interactive in ((terminal, True), (pipe, False)):
        progress = ProgressLine(stream, interactive=interactive, every=3600)
        progress.status("sent 1")
        progress.line("  alert opened")
        progress.status("sent 2")  # piped: within `every` of the last one, so not shown
        progress.status("sent 3", final=True)
        progress.finish()
    blank = " " * 96
    assert (
        f"\rsent 1{blank[6:]}\r{blank}\r  alert opened\nsent 1{blank[6:]}"
        f"\rsent 2{blank[6:]}\rsent 3{blank[6:]}\n"
    ) == terminal.getvalue()
    assert "sent 1\n  alert opened\nsent 3\n" == pipe.getvalue()


async def test_simulation_stops_when_asked(
    mosquitto: PrivateMosquitto, collector: Collector, tmp_path: Path
) -> None:
    """Setting the stop event ends a real-time run early, with what was sent counted."""
    _, assignments = demo_clinic(4, seed=3, start=datetime(2026, 3, 2, 6, tzinfo=UTC), days=1)
    stop = asyncio.Event()
    run = asyncio.create_task(
        run_simulation(
            assignments,
            queue_dir=tmp_path / "queues",
            port=mosquitto.port,
            speedup=20000.0,
            stop=stop,
            progress=None,
            backoff=FAST,
        )
    )
    await collector.wait_for(lambda got: len(got) >= 3)
    stop.set()
    summary = await asyncio.wait_for(run, TIMEOUT)
    assert summary.stopped_early
    assert 3 <= summary.published < len(list(assignments.publications()))


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (EC keys)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    files = {name: directory / name for name in ("ca.crt", "ca.key", "server.crt", "client.crt")}
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*argv: str) -> None:
        subprocess.run([openssl, *argv], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca",
        "-days", "2")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.ext"]), ("client", [])):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extra)  # fmt: skip
    return files


async def test_gateway_publishes_over_tls_with_a_client_certificate(
    tmp_path: Path,
) -> None:
    """With a CA file and a client certificate the gateway reaches a TLS-only listener."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _certificates(certs)
    tls_port = free_port()
    broker = PrivateMosquitto(
        tmp_path / "mq",
        extra_config=(
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
            f"keyfile {certs / 'server.key'}\nrequire_certificate true\n"
        ),
    )
    broker.start()
    try:
        tls = TlsConfig(certs / "ca.crt", certs / "client.crt", certs / "client.key")
        gateway = Gateway(
            "gw-0001", queue_path=tmp_path / "gw.sqlite3", port=tls_port, tls=tls, backoff=FAST
        )
        async with gateway:
            await gateway.submit(PayloadFormat.NATIVE, b"over tls")
            await asyncio.wait_for(gateway.drained(), TIMEOUT)
            assert 1 == gateway.stats.published
    finally:
        broker.kill()
