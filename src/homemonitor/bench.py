"""``homemonitor bench``: what the real worker sustains, how fast alerts open, where CPU goes.

Everything runs on this machine: a private Mosquitto and PostgreSQL (:mod:`homemonitor.embedded`),
a registry of 10 000 patients with devices and care plans, and a load generator in a
process of its own that publishes numbered QoS 1 readings at a controlled rate, with a
window of outstanding publishes (a minimal MQTT 3.1.1 publisher on a plain socket:
paho's ~100 us of CPU per publish would be taken from the system under test). The worker
is the service itself, ``python -m homemonitor.cli run --no-http``, unchanged,
acknowledging after commit, configured only through ``HOMEMONITOR_*`` variables.

Readings carry ``message_id = seq`` and ``measured_at = base + seq ms``: unique, so a
redelivery is idempotent and the database can be checked by sequence number. About 1 %
breach the patient's care plan (native JSON, a mix of cuffs, scales, oximeters and
heart-rate monitors, some scales in pounds).

Phases, each against the same broker, database and load generator:

* **step search** per consumer: publish at a rate for a few seconds. A step passes when
  the publisher held the rate, the consumer stored at least 95 % of it over the last three
  quarters of the step, stored lagged published by at most one second's worth at the end,
  and, after the drain, every sequence number the broker acknowledged is stored exactly
  once. Rates double until a step fails, then the failing step's measured consumer rate
  and bisection narrow it down. Consumers: (a) the bare MQTT client as the issue
  defines it (aiomqtt + paho manual acknowledgement per message, no work), (a') the
  worker's own MQTT intake (``homemonitor._mqtt.Intake``, batched PUBACKs, no work: the
  ceiling the worker itself can approach), (b) a naive consumer (aiomqtt with
  its automatic acknowledgement, one ``INSERT`` per message, as tutorials do), one worker,
  two workers on an MQTT 5 shared subscription;
* **latency** at 1 000/s and 5 000/s: the publish wall-clock time (recorded per sequence
  number by the load generator, also sent as ``sent_at``) against ``readings.stored_at``
  and ``alerts.opened_at`` (both ``clock_timestamp()`` at insert, a few milliseconds
  before the commit);
* **profile**: py-spy samples the worker (non-blocking) while it runs below its
  sustained rate; its CPU time from ``/proc/<pid>/stat`` is split by each stage's share
  of the samples (attributed to the innermost frame that names a stage);
* **outage**: PostgreSQL stopped for 60 s under 1 000 readings/s; the worker's memory is
  sampled, and the drain rate measured when the database returns.

Results go to ``bench-results/bench-<time>.json`` and a table on standard output.
``--quick`` runs every phase briefly (under a minute): for trying the harness, not for
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import multiprocessing as mp
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, Protocol

import aiomqtt
import asyncpg
import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from homemonitor import _mqtt, database, registry
from homemonitor.embedded import PrivateMosquitto, PrivatePostgres
from homemonitor.protocol import SUBSCRIPTION, readings_topic
from homemonitor.registry import RegistryCache
from homemonitor.settings import Settings
from homemonitor.store import Inbound

#: Share of readings that breach the patient's care plan, in percent.
BREACH_PERCENT = 1
#: Receive Maximum of the client baselines: the worker's default ``max_inflight``.
RECEIVE_MAXIMUM = Settings.model_fields["max_inflight"].default
#: Outstanding (un-PUBACKed) publishes the load generator allows itself.
PUBLISH_WINDOW = 2000

_PAYLOAD = '{"v":1,"sent_at":"%s","reading":{%s"measured_at":"%s",%s,"message_id":"%d"}}'
_HASH = 2654435761  # Knuth's multiplicative hash: which sequence numbers breach
_TICK = 0.001  # the load generator publishes in bursts at most this often


# -- the clinic and its readings -----------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceLoad:
    """How one device's readings look: topic, fixed fields, normal and breaching values."""

    topic: str
    head: str
    normal: tuple[str, ...]
    breach: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Clinic:
    """A registry description (for :func:`homemonitor.registry.apply`) and its devices."""

    registry: dict[str, Any]
    devices: tuple[DeviceLoad, ...]


def _cuff(i: int, topic: str, rng: random.Random, pulse: int) -> DeviceLoad:
    systolic, diastolic = rng.randint(112, 140), rng.randint(66, 84)
    return DeviceLoad(
        topic,
        f'"device_id":"cuff-{i:05d}","metric":"blood_pressure","unit":"mmHg",',
        tuple(
            f'"systolic":{systolic + d},"diastolic":{diastolic + d // 2},"pulse":{pulse + d}'
            for d in (-4, 0, 3, 6)
        ),
        (
            f'"systolic":166,"diastolic":{diastolic + 4},"pulse":{pulse}',
            f'"systolic":171,"diastolic":{diastolic + 6},"pulse":{pulse + 4}',
            f'"systolic":186,"diastolic":104,"pulse":{pulse + 9}',
        ),
    )


def _scale(i: int, topic: str, weight: float, pounds: bool) -> DeviceLoad:
    unit, factor = ("lb", 2.20462) if pounds else ("kg", 1.0)
    return DeviceLoad(
        topic,
        f'"device_id":"scale-{i:05d}","metric":"body_weight","unit":"{unit}",',
        tuple(f'"value":{round((weight + d) * factor, 1)}' for d in (-0.4, -0.1, 0.2, 0.5)),
        (
            f'"value":{round((weight + 2.6) * factor, 1)}',
            f'"value":{round((weight + 4.2) * factor, 1)}',
        ),
    )


def _oximeter(i: int, topic: str, pulse: int) -> DeviceLoad:
    return DeviceLoad(
        topic,
        f'"device_id":"oxi-{i:05d}","metric":"spo2","unit":"%",',
        tuple(f'"value":{v},"pulse":{pulse + v - 95}' for v in (94, 95, 96, 98)),
        (f'"value":90,"pulse":{pulse + 8}', f'"value":86,"pulse":{pulse + 14}'),
    )


def _monitor(i: int, topic: str, pulse: int) -> DeviceLoad:
    return DeviceLoad(
        topic,
        f'"device_id":"hr-{i:05d}","metric":"heart_rate","unit":"/min",',
        tuple(f'"value":{pulse + d}' for d in (-3, 0, 4, 9)),
        ('"value":128', '"value":146'),
    )


def build_clinic(patients: int, seed: int = 7) -> Clinic:
    """A deterministic clinic: every patient has a cuff, and a scale, oximeter or monitor.

    Care teams of 500 patients; heart failure (scale, a tenth in pounds), COPD
    (oximeter), hypertension; a quarter also wear a heart-rate monitor. Each plan bounds
    systolic and diastolic pressure and every other quantity the patient's devices measure.
    """
    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not cryptography
    n_teams = max(1, patients // 500)
    teams: list[dict[str, Any]] = [
        {
            "id": f"vc-{t:03d}",
            "name": f"Vårdcentral {t}",
            "clinicians": [{"id": f"cl-{t:03d}-{c}", "name": f"Nurse {t}.{c}"} for c in range(3)],
        }
        for t in range(n_teams)
    ]
    devices: list[dict[str, str]] = []
    gateways: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    loads: list[DeviceLoad] = []
    for i in range(patients):
        team = teams[i % n_teams]
        topic = readings_topic(f"gw-{i:05d}")
        condition = rng.choices(("heart_failure", "hypertension", "copd"), (2, 1, 1))[0]
        pulse = rng.randint(58, 84)
        thresholds: dict[str, Any] = {
            "systolic": {"high": {"warning": 160, "urgent": 180}, "low": {"warning": 95}},
            "diastolic": {"high": {"warning": 100, "urgent": 110}},
        }
        own = [(f"cuff-{i:05d}", "blood_pressure_cuff", _cuff(i, topic, rng, pulse))]
        if condition == "heart_failure":
            weight = round(rng.uniform(58, 112), 1)
            thresholds["body_weight"] = {
                "high": {"warning": round(weight + 2, 1), "urgent": round(weight + 3.5, 1)}
            }
            own.append((f"scale-{i:05d}", "scale", _scale(i, topic, weight, rng.random() < 0.1)))
        if condition == "copd":
            thresholds["spo2"] = {"low": {"warning": 92, "urgent": 88}}
            own.append((f"oxi-{i:05d}", "pulse_oximeter", _oximeter(i, topic, pulse)))
        if rng.random() < 0.25:
            thresholds["heart_rate"] = {
                "high": {"warning": 120, "urgent": 140},
                "low": {"warning": 45},
            }
            own.append((f"hr-{i:05d}", "heart_rate_monitor", _monitor(i, topic, pulse)))
        devices += [{"id": d, "kind": kind} for d, kind, _ in own]
        loads += [load for _, _, load in own]
        since = [{"device": d, "from": "2020-01-01T00:00:00Z"} for d, _, _ in own]
        gateways.append({"id": f"gw-{i:05d}", "devices": list(since)})  # the home's hub
        people.append(
            {
                "id": f"p-{i:05d}",
                "care_team": team["id"],
                "care_contact": team["clinicians"][i % 3]["id"],
                "condition": condition,
                "devices": since,
                "care_plan": {
                    "version": 1,
                    "changed_by": team["clinicians"][0]["id"],
                    "reason": "initial",
                    "thresholds": thresholds,
                },
            }
        )
    order = list(range(len(loads)))
    rng.shuffle(order)  # consecutive readings come from unrelated patients
    return Clinic(
        {"care_teams": teams, "devices": devices, "gateways": gateways, "patients": people},
        tuple(loads[k] for k in order),
    )


def breaches(seq: int) -> bool:
    """Whether reading ``seq`` breaches its patient's plan (about 1 in 100)."""
    return ((seq * _HASH) & 0xFFFFFFFF) % 100 < BREACH_PERCENT


class Payloads:
    """Reading number ``seq`` as an MQTT PUBLISH, the same in every process."""

    def __init__(self, devices: Sequence[DeviceLoad], base_ms: int) -> None:
        self.devices = devices
        self.base_ms = base_ms
        self._topics = [len(d.topic).to_bytes(2, "big") + d.topic.encode() for d in devices]
        self._second = -1
        self._prefix = ""

    def payload(self, seq: int, sent_at: str) -> bytes:
        """The native JSON payload of reading ``seq`` (``sent_at`` already formatted)."""
        n = len(self.devices)
        device = self.devices[seq % n]
        h = (seq * _HASH) & 0xFFFFFFFF
        if h % 100 < BREACH_PERCENT:
            values = device.breach[(h // 100) % len(device.breach)]
        else:
            values = device.normal[(seq // n) % len(device.normal)]
        second, millis = divmod(self.base_ms + seq, 1000)
        if second != self._second:  # strftime once per second of readings
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        measured_at = f"{self._prefix}.{millis:03d}+00:00"
        return (_PAYLOAD % (sent_at, device.head, measured_at, values, seq)).encode()

    def publish_packet(self, seq: int, sent_at: str, packet_id: int) -> bytes:
        """An MQTT 3.1.1 PUBLISH of reading ``seq`` at QoS 1 with ``packet_id``."""
        topic = self._topics[seq % len(self.devices)]
        body = self.payload(seq, sent_at)
        length = len(topic) + 2 + len(body)
        if length < 128:
            header = bytes((0x32, length))
        else:
            header = bytes((0x32, (length & 0x7F) | 0x80, length >> 7))  # < 16 KiB
        return header + topic + packet_id.to_bytes(2, "big") + body


def _iso_wall(t: float) -> str:
    seconds = int(t)
    micros = int((t - seconds) * 1e6)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros:06d}+00:00"


class RawPublisher:
    """A minimal MQTT 3.1.1 QoS 1 publisher on a plain socket: a gateway stand-in.

    paho spends about 100 us of CPU per QoS 1 publish in Python; on a two-core machine
    that is taken from the system under test. This writes each tick's PUBLISH packets
    with one ``sendall`` and counts PUBACKs. Packet ids cycle through 1..65535; the
    window of outstanding publishes is far below that, so an id is never reused while
    in flight.
    """

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # CONNECT: protocol "MQTT" level 4, clean session, keep-alive 0 (idle between runs)
        variable = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(bytes((0x10, len(variable))) + variable)
        connack = self._read_exactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            msg = f"broker refused the load generator: CONNACK {connack.hex()}"
            raise ConnectionError(msg)
        self.sock.setblocking(False)
        self._pending = b""

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                msg = "broker closed the connection"
                raise ConnectionError(msg)
            data += chunk
        return data

    def send(self, packets: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(packets)
        finally:
            self.sock.setblocking(False)

    def acks(self, wait: float) -> int:
        """PUBACKs received within ``wait`` seconds (0: only what has arrived)."""
        ready, _, _ = select.select([self.sock], [], [], wait)
        if not ready:
            return 0
        try:
            data = self._pending + self.sock.recv(1 << 16)
        except BlockingIOError:
            return 0
        count, i = 0, 0
        while len(data) - i >= 2:  # a publisher only gets short packets: PUBACK, PINGRESP
            kind, length = data[i] >> 4, data[i + 1]
            if length & 0x80:
                msg = f"unexpected packet from the broker: {data[i : i + 8].hex()}"
                raise ConnectionError(msg)
            if len(data) - i < 2 + length:
                break
            count += kind == 4  # PUBACK
            i += 2 + length
        self._pending = data[i:]
        return count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


@dataclasses.dataclass(frozen=True, slots=True)
class LoadConfig:
    """What the load-generator process needs to rebuild the clinic's payloads."""

    host: str
    port: int
    patients: int
    seed: int
    base_ms: int  # measured_at of reading 0, epoch milliseconds


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """What one run of the load generator did."""

    first: int
    count: int
    acked: int
    rate: float
    achieved: float  # readings/s it actually published at
    seconds: float  # from the first publish to the last PUBACK
    sent_at: npt.NDArray[np.float64] | None  # wall clock of each publish, when recorded


def _loadgen_main(pipe: Connection, config: LoadConfig, counters: Any) -> None:
    """Publish on command: ``(rate, count, first, record)``; ``None`` ends the process."""
    payloads = Payloads(build_clinic(config.patients, config.seed).devices, config.base_ms)
    try:
        publisher = RawPublisher(config.host, config.port, f"bench-load-{os.getpid()}")
    except OSError as exc:
        pipe.send(f"cannot connect: {exc}")
        return
    pipe.send("ready")
    packet_id = 0
    while True:
        command = pipe.recv()
        if command is None:
            break
        rate, count, first, record = command
        times = np.zeros(count) if record else None
        counters[0] = counters[1] = 0
        sent = acked = 0
        last = t0 = next_burst = time.monotonic()
        while sent < count or acked < count:
            now = time.monotonic()
            due = min(count, int((now - t0) * rate) + 1, acked + PUBLISH_WINDOW)
            if due > sent and now >= next_burst:
                wall = time.time()
                stamp = _iso_wall(wall)
                burst = []
                for seq in range(first + sent, first + due):
                    packet_id = packet_id % 65535 + 1
                    burst.append(payloads.publish_packet(seq, stamp, packet_id))
                publisher.send(b"".join(burst))
                if times is not None:
                    times[sent:due] = wall
                sent, last, next_burst = due, now, now + _TICK  # fewer, larger writes
            if sent < min(count, acked + PUBLISH_WINDOW):
                wait = max(t0 + sent / rate, next_burst) - time.monotonic()
            else:
                wait = 0.005  # the window is full: PUBACKs first
            acked += publisher.acks(min(max(wait, 0.0), 0.005))
            counters[0], counters[1] = sent, acked
        elapsed = time.monotonic() - t0
        achieved = (count - 1) / (last - t0) if count > 1 and last > t0 else float(rate)
        pipe.send((count, acked, min(achieved, float(rate)), elapsed, times))
    publisher.close()


class LoadGenerator:
    """The parent's handle on the load-generator process."""

    def __init__(self, config: LoadConfig) -> None:
        ctx = mp.get_context("spawn")
        self._counters: Any = ctx.Array("q", 2, lock=False)
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_loadgen_main,
            args=(child, config, self._counters),
            name="bench-load",
            daemon=True,
        )
        self._child = child

    async def start(self) -> None:
        self._proc.start()
        self._child.close()
        ready = await asyncio.wait_for(asyncio.to_thread(self._pipe.recv), 60)
        if ready != "ready":
            msg = f"load generator: {ready}"
            raise RuntimeError(msg)

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    @property
    def sent(self) -> int:
        return int(self._counters[0])

    @property
    def acked(self) -> int:
        """Readings of the current run the broker has PUBACKed so far."""
        return int(self._counters[1])

    async def publish(self, rate: float, count: int, first: int, *, record: bool) -> Published:
        """Publish readings ``first .. first + count - 1`` at ``rate``; wait for every PUBACK."""
        self._pipe.send((rate, count, first, record))
        n, acked, achieved, seconds, times = await asyncio.to_thread(self._pipe.recv)
        return Published(first, n, acked, rate, achieved, seconds, times)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send(None)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._pipe.close()
        self._proc.close()


# -- processes: CPU and memory from /proc --------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its children it has waited for)."""
    try:
        f = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(f[11]) + int(f[12])
    if reaped_children:
        ticks += int(f[13]) + int(f[14])
    return ticks / _HZ


def memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in kB; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def reset_peak_memory(pid: int) -> None:
    """Reset VmHWM to the current RSS (``clear_refs`` 5), so a phase has its own peak."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _children(ppid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(int(entry.name))[1]) == ppid:
                    found.append(int(entry.name))
    return found


def _pid_with_argument(argument: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if argument.encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def _machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _HZ


@dataclasses.dataclass(slots=True)
class CpuMeter:
    """CPU seconds of each part of the bench, read from /proc."""

    loadgen: int
    mosquitto: int | None
    postmaster: int | None

    def snapshot(self, consumer: Sequence[int]) -> dict[str, float]:
        pg = 0.0
        if self.postmaster is not None:
            pg = cpu_seconds(self.postmaster, reaped_children=True) + sum(
                cpu_seconds(p) for p in _children(self.postmaster)
            )
        return {
            "consumer": sum(cpu_seconds(p) for p in consumer),
            "postgres": pg,
            "mosquitto": cpu_seconds(self.mosquitto) if self.mosquitto else 0.0,
            "loadgen": cpu_seconds(self.loadgen),
            "machine": _machine_busy_seconds(),
        }


# -- the database, as the bench sees it ----------------------------------------------------


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


_NAIVE_TABLE = """
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
    db: Db, table: Literal["readings", "bench_naive_readings"], first: int, published: int
) -> Verification:
    """Check ``table`` (readings or the naive table) against ``first .. first+published-1``."""
    row = (
        await db.fetch(
            f"SELECT count(*) AS n, count(DISTINCT message_id) AS ids, "
            f"count(DISTINCT message_id) FILTER (WHERE message_id::bigint >= $1 "
            f"AND message_id::bigint < $2) AS wanted FROM {table}",
            first,
            first + published,
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
    """``homemonitor run --no-http`` in ``n`` processes of their own, as in production."""

    def __init__(
        self,
        n: int,
        db: Db,
        broker: PrivateMosquitto,
        workdir: Path,
        *,
        name: str,
        shared_group: str | None = None,
        extra_env: dict[str, str] | None = None,
        pythonpath: str | None = None,
    ) -> None:
        self.label = f"worker x{n}" + (" (shared subscription)" if shared_group else "")
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
                        [sys.executable, "-m", "homemonitor.cli", "run", "--no-http"],
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
        return int(await self.db.fetchval("SELECT count(*) FROM readings"))

    async def verify(self, first: int, published: int) -> Verification:
        return await verify_table(self.db, "readings", first, published)

    async def reset(self) -> None:
        await self.db.execute("TRUNCATE readings, alerts, quarantine")

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
    _mqtt.enable_manual_ack(client)
    return client


def _bare_main(host: str, port: int, counter: Any, ready: Any) -> None:
    asyncio.run(_bare(host, port, counter, ready))


async def _bare(host: str, port: int, counter: Any, ready: Any) -> None:
    """Stock aiomqtt with a manual PUBACK per message (via paho), draining and acking only."""
    client = _manual_ack_client(host, port, "bench-bare")
    async with client:
        await client.subscribe(SUBSCRIPTION, qos=1)
        ready.set()
        incoming = _mqtt.queue(client)
        n = 0
        while True:
            message = await incoming.get()
            _mqtt.ack(client, message.mid, message.qos)
            n += 1
            while not incoming.empty():
                message = incoming.get_nowait()
                _mqtt.ack(client, message.mid, message.qos)
                n += 1
            counter.value = n


def _intake_main(host: str, port: int, counter: Any, ready: Any) -> None:
    asyncio.run(_intake(host, port, counter, ready))


async def _intake(host: str, port: int, counter: Any, ready: Any) -> None:
    """The worker's own MQTT path (:class:`homemonitor._mqtt.Intake`, batched PUBACKs), no work.

    The ceiling of the client as the worker uses it: the worker can only approach it.
    """
    client = _manual_ack_client(host, port, "bench-intake")
    intake = _mqtt.Intake(client, functools.partial(Inbound, generation=0))  # as the worker
    async with client:
        await client.subscribe(SUBSCRIPTION, qos=1)
        ready.set()
        n = 0
        while True:
            await intake.wait()
            messages = intake.take(len(intake))
            _mqtt.ack_all(client, [m.mid for m in messages])
            n += len(messages)
            counter.value = n


def _naive_main(host: str, port: int, dsn: str, counter: Any, ready: Any) -> None:
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


def forget_session(host: str, port: int, client_id: str) -> None:
    """End a persistent session, so the broker stops queueing for a worker that is gone."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho
    properties.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=properties)
    deadline = time.monotonic() + 5
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    client.loop(0.1)


# -- one step: publish at a rate, see whether the consumer keeps up ------------------------


@dataclasses.dataclass(slots=True)
class Step:
    """One step of a search, or a latency or profile run."""

    consumer: str
    rate: float
    seconds: float
    achieved: float  # publish rate the load generator held
    consumer_rate: float  # stored per second over the last three quarters of publishing
    lag_end: int  # PUBACKed by the broker but not yet stored when publishing ended
    drain_s: float  # from the end of publishing until everything was stored
    verification: Verification
    ok: bool
    why: str
    cpu_us: dict[str, float]  # CPU microseconds per reading, by process
    consumer_cpu_share: float  # consumer CPU / wall time while publishing and draining
    peak_rss_mb: float  # consumer's peak resident memory during the step


@dataclasses.dataclass(slots=True)
class Search:
    consumer: str
    steps: list[Step]
    best: Step | None
    limit: str  # what stopped the search


class Bench:
    """The phases, against one broker, database and load generator."""

    def __init__(
        self,
        *,
        db: Db,
        broker: PrivateMosquitto,
        load: LoadGenerator,
        meter: CpuMeter,
        base_ms: int,
        workdir: Path,
        quiet: bool = False,
    ) -> None:
        self.db = db
        self.broker = broker
        self.load = load
        self.meter = meter
        self.base_ms = base_ms
        self.workdir = workdir
        self.quiet = quiet
        self.next_seq = 0
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def take(self, count: int) -> int:
        first = self.next_seq
        self.next_seq += count
        return first

    async def until_consuming(self, consumer: Consumer, within: float = 60) -> None:
        """Publish a few readings until the consumer stores some; then start clean."""
        await consumer.reset()
        deadline = time.monotonic() + within
        while True:
            await self.load.publish(200, 20, self.take(20), record=False)
            for _ in range(20):
                if await consumer.processed() > 0:
                    await asyncio.sleep(0.3)
                    warm, _ = await self.step(consumer, 500, 1.0, quiet=True)  # then clean
                    if warm.verification.lost or warm.verification.duplicated:
                        msg = f"{consumer.label} lost readings while warming up: {warm.why}"
                        raise RuntimeError(msg)
                    return
                await asyncio.sleep(0.1)
            if time.monotonic() > deadline:
                msg = f"{consumer.label} stored nothing within {within:g} s"
                raise RuntimeError(msg)

    async def wait_drained(self, consumer: Consumer, target: int, within: float) -> float | None:
        """Seconds until ``consumer`` has processed ``target``; None if not ``within``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if await consumer.processed() >= target:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        return None

    async def step(
        self,
        consumer: Consumer,
        rate: float,
        seconds: float,
        *,
        record: bool = False,
        quiet: bool = False,
    ) -> tuple[Step, Published]:
        """Publish ``rate`` readings/s for ``seconds`` and judge whether the consumer kept up."""
        count = max(2, round(rate * seconds))
        first = self.take(count)
        await consumer.reset()
        pids = consumer.pids()
        for pid in pids:
            reset_peak_memory(pid)
        cpu0, wall0 = self.meter.snapshot(pids), time.monotonic()
        publishing = asyncio.create_task(self.load.publish(rate, count, first, record=record))
        t0 = time.monotonic()
        await asyncio.sleep(seconds / 4)
        q_done, q_t = await consumer.processed(), time.monotonic()
        while not publishing.done() and self.load.sent < count:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)
        end_done, end_acked, end_t = await consumer.processed(), self.load.acked, time.monotonic()
        published = await publishing
        consumer_rate = (end_done - q_done) / max(end_t - q_t, 1e-3)
        lag = max(0, end_acked - end_done)
        timeout = min(180.0, 20 + 3 * lag / max(consumer_rate, 100.0))
        drain = await self.wait_drained(consumer, published.acked, timeout)
        cpu1, wall1 = self.meter.snapshot(pids), time.monotonic()
        verification = await consumer.verify(first, published.acked)
        n = max(1, verification.stored)
        cpu_us = {k: (cpu1[k] - cpu0[k]) / n * 1e6 for k in cpu0}
        peak = sum(memory_kb(pid, "VmHWM") for pid in pids) / 1024
        problems = []
        if published.achieved < 0.95 * rate:
            problems.append(f"publisher held only {published.achieved:.0f}/s")
        if consumer_rate < 0.95 * rate or lag > rate:
            problems.append(f"consumer behind ({consumer_rate:.0f}/s, lag {lag})")
        if drain is None:
            problems.append(f"not drained within {timeout:.0f} s")
        if verification.lost or verification.duplicated or verification.unexpected:
            problems.append(
                f"LOST {verification.lost} DUPLICATED {verification.duplicated} "
                f"UNEXPECTED {verification.unexpected}"
            )
        result = Step(
            consumer=consumer.label,
            rate=rate,
            seconds=seconds,
            achieved=published.achieved,
            consumer_rate=consumer_rate,
            lag_end=lag,
            drain_s=drain if drain is not None else float("nan"),
            verification=verification,
            ok=not problems,
            why="; ".join(problems) or "kept up",
            cpu_us=cpu_us,
            consumer_cpu_share=(cpu1["consumer"] - cpu0["consumer"]) / (wall1 - wall0),
            peak_rss_mb=peak,
        )
        if not quiet:
            self.say(
                f"  {consumer.label:<34} {rate:>7.0f}/s x {seconds:g}s: "
                f"{'ok  ' if result.ok else 'FAIL'} stored {consumer_rate:7.0f}/s, "
                f"lag {lag:>6}, drained in {result.drain_s:5.2f}s, "
                f"{cpu_us['consumer']:5.0f} us/reading, lost {verification.lost}, "
                f"dup {verification.duplicated}" + ("" if result.ok else f"  [{result.why}]")
            )
        _ = t0
        return result, published

    async def search(
        self, consumer: Consumer, start: float, seconds: float, max_steps: int
    ) -> Search:
        """Double the rate until a step fails, then narrow down to within about 5 %."""
        self.say(f"step search: {consumer.label}")
        steps: list[Step] = []
        best: Step | None = None
        fail: Step | None = None
        rate, estimated, limit = start, False, "step budget"
        for _ in range(max_steps):
            step, _published = await self.step(consumer, rate, seconds)
            steps.append(step)
            if step.ok:
                best = step if best is None or step.rate > best.rate else best
            else:
                fail = step if fail is None or step.rate < fail.rate else fail
                if step.verification.lost or step.verification.duplicated:
                    limit = "readings lost or duplicated"
                    break
            if fail is None:
                rate *= 2
                continue
            publisher_limited = "publisher" in fail.why and "consumer" not in fail.why
            limit = "load generator" if publisher_limited else "consumer"
            low = best.rate if best else 0.0
            if best is not None and fail.rate <= best.rate * 1.05:
                break
            candidate = 0.97 * min(fail.consumer_rate, fail.achieved)
            if not estimated and low * 1.05 < candidate < fail.rate * 0.95:
                estimated, rate = True, candidate
            else:
                rate = (low + fail.rate) / 2 if best else fail.rate / 2
            rate = float(round(rate / 50) * 50)
            if rate < 50:
                break
        return Search(consumer.label, steps, best, limit)


# -- latency, profile, outage ---------------------------------------------------------------


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _percentiles(values: npt.NDArray[np.float64]) -> dict[str, float]:
    if not len(values):
        return {"n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": len(values),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
    }


async def latency(
    bench: Bench, workers: ServiceWorkers, rate: float, seconds: float
) -> dict[str, Any]:
    """Publish → stored and publish → alert opened, in milliseconds, at ``rate``."""
    bench.say(f"latency at {rate:.0f}/s for {seconds:g} s")
    step, published = await bench.step(workers, rate, seconds, record=True)
    assert published.sent_at is not None
    rows = await bench.db.fetch(
        "SELECT message_id::bigint AS seq, extract(epoch FROM stored_at)::float8 AS t FROM readings"
    )
    seq = np.fromiter((r["seq"] for r in rows), np.int64, len(rows))
    stored = np.fromiter((r["t"] for r in rows), np.float64, len(rows))
    sent = published.sent_at[seq - published.first]
    base = datetime.fromtimestamp(bench.base_ms / 1000, UTC)
    alerts = await bench.db.fetch(
        "SELECT (extract(epoch FROM opening_measured_at - $1::timestamptz) * 1000)::bigint "
        "AS seq, extract(epoch FROM opened_at)::float8 AS t FROM alerts",
        base,
    )
    a_seq = np.fromiter((r["seq"] for r in alerts), np.int64, len(alerts))
    a_t = np.fromiter((r["t"] for r in alerts), np.float64, len(alerts))
    inside = (a_seq >= published.first) & (a_seq < published.first + published.count)
    a_sent = published.sent_at[a_seq[inside] - published.first]
    to_stored = _percentiles((stored - sent) * 1000)
    second = (sent - published.sent_at[0]).astype(np.int64) if len(sent) else sent.astype(np.int64)
    worst = np.zeros(int(second.max()) + 1 if len(second) else 0)
    np.maximum.at(worst, second, (stored - sent) * 1000)
    to_alert = _percentiles((a_t[inside] - a_sent) * 1000)
    breaching = sum(breaches(s) for s in range(published.first, published.first + published.count))

    def summary(p: dict[str, float]) -> str:
        return " ".join(f"{k} {p.get(k, float('nan')):6.1f}" for k in ("p50", "p95", "p99"))

    bench.say(
        f"  publish -> stored {summary(to_stored)} ms; publish -> alert opened "
        f"{summary(to_alert)} ms ({to_alert['n']} alerts from {breaching} breaches)"
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "kept_up": step.ok,
        "step": dataclasses.asdict(step),
        "publish_to_stored_ms": to_stored,
        "publish_to_alert_opened_ms": to_alert,
        "worst_stored_ms_by_second": [round(float(w), 1) for w in worst],
        "breaching_readings": breaching,
    }


#: Stages of the worker, by the frames py-spy samples. For each frame, innermost first,
#: the first pattern that matches decides. asyncpg's protocol is Cython: its work shows as
#: the asyncio transport frame that calls it (only asyncpg uses transports in a worker
#: run with ``--no-http``).
#: A stack with a registry (re)load anywhere in it is that, whatever it calls.
_RELOAD = re.compile(
    r"^(?:RegistryCache\.(?:load|refresh)|Worker\._(?:reload|refresh)_registry) \(|"
    r"^_build \((?:homemonitor/)?registry\.py"
)
_STAGE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("decode + validate", r"^(?:Worker\._prepare(?:_now)?|prepare|RegistryCache\.resolve) \("),
    ("rule evaluation", r"^_alerts \(|careplan\.py|numpy/"),
    (
        "database write",
        r"asyncpg/|store\.py|_read_ready__data_received|_SelectorSocketTransport\.write|"
        r"^Worker\._commit",
    ),
    ("decode + validate", r"decoding/|validation\.py|units\.py|protocol\.py|pydantic/"),
    (
        "MQTT client + intake",
        r"paho/|aiomqtt/|_mqtt\.py|^Worker\.(?:_inbound|_next|_collect|_acknowledge|_consume) \(",
    ),
    ("metrics, logging", r"prometheus_client/|logging/|^Worker\._record \("),
)
_STAGES = tuple((stage, re.compile(pattern)) for stage, pattern in _STAGE_PATTERNS)
STAGE_ORDER = (
    "MQTT client + intake",
    "decode + validate",
    "rule evaluation",
    "database write",
    "metrics, logging",
    "registry reload",
    "asyncio event loop, other",
)


def classify(frames: Sequence[str]) -> str:
    """The stage a sampled stack (outermost frame first) was in."""
    if any(_RELOAD.search(frame) for frame in frames):
        return "registry reload"
    for frame in reversed(frames):
        for stage, pattern in _STAGES:
            if pattern.search(frame):
                return stage
    return "asyncio event loop, other"


def parse_raw_profile(text: str) -> dict[str, int]:
    """Samples per stage from py-spy's ``--format raw`` (collapsed stacks)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        stage = classify(stack.split(";"))
        counts[stage] = counts.get(stage, 0) + int(n)
    return counts


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile(
    bench: Bench, workers: ServiceWorkers, rate: float, seconds: float
) -> dict[str, Any]:
    """CPU per reading of the worker, split by stage with py-spy samples."""
    spy = _py_spy()
    bench.say(
        f"profile: worker at {rate:.0f}/s for {seconds:g} s" + ("" if spy else " (no py-spy)")
    )
    out = bench.workdir / "worker-profile.txt"
    sampler = None
    if spy:
        sampler = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(workers.pids()[0]), "--rate", "250", "--nonblocking",
            "--format", "raw", "--duration", str(max(1, int(seconds - 0.5))), "--output",
            str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    step, _ = await bench.step(workers, rate, seconds)
    result: dict[str, Any] = {
        "rate": rate,
        "worker_cpu_us_per_reading": step.cpu_us["consumer"],
        "cpu_us_per_reading": step.cpu_us,
        "step": dataclasses.asdict(step),
        "stages": None,
    }
    if sampler is not None:
        _, err = await sampler.communicate()
        if sampler.returncode == 0 and out.exists():
            counts = parse_raw_profile(out.read_text())
            total = sum(counts.values()) or 1
            result["samples"] = total
            result["stages"] = {
                stage: {
                    "share": n / total,
                    "cpu_us_per_reading": n / total * step.cpu_us["consumer"],
                }
                for stage in STAGE_ORDER
                if (n := counts.get(stage, 0))
            }
            bench.say(
                "  worker CPU per reading: "
                + ", ".join(
                    f"{s} {v['cpu_us_per_reading']:.0f} us" for s, v in result["stages"].items()
                )
            )
        else:
            result["error"] = err.decode(errors="replace")[-500:]
            bench.say(f"  py-spy failed: {result['error'].strip()}")
    return result


async def outage(
    bench: Bench,
    workers: ServiceWorkers,
    pg: PrivatePostgres,
    *,
    rate: float,
    before: float,
    down: float,
    after: float,
) -> dict[str, Any]:
    """PostgreSQL stopped for ``down`` seconds while readings arrive at ``rate``.

    Sampled every 0.25 s: published, stored, the worker's and the broker's RSS. The
    restart runs in the background, so the first commit is timed from the restart
    request (PostgreSQL's own start-up included), not from when ``pg_ctl`` returned.
    """
    bench.say(f"outage: PostgreSQL stopped for {down:g} s at {rate:.0f}/s")
    count = round(rate * (before + down + after))
    first = bench.take(count)
    await workers.reset()
    pid, broker = workers.pids()[0], bench.meter.mosquitto
    samples: list[dict[str, float]] = []
    stored = 0
    publishing = asyncio.create_task(bench.load.publish(rate, count, first, record=False))
    t0 = time.monotonic()
    t_down: float | None = None
    t_restart: float | None = None
    restarting: asyncio.Task[None] | None = None
    t_ready = t_first_commit = t_caught_up = None
    stored_before = backlog = 0
    while True:
        now = time.monotonic() - t0
        if t_down is None and now >= before:
            await bench.db.close()
            stored_before = stored
            await asyncio.to_thread(pg.stop)
            t_down = time.monotonic() - t0
            bench.say(f"  database stopped; {bench.load.acked} published, {stored} stored")
        elif t_down is not None and restarting is None and now >= t_down + down:
            restarting = asyncio.create_task(asyncio.to_thread(pg.start))
            t_restart, backlog = now, bench.load.acked - stored_before
            bench.say(f"  database restarting; backlog {backlog} readings")
        if restarting is not None and t_ready is None and restarting.done():
            restarting.result()
            t_ready = time.monotonic() - t0
        now = time.monotonic() - t0
        if t_down is None or t_ready is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                stored = await workers.processed()
        acked = bench.load.acked
        samples.append(
            {
                "t": now,
                "published": acked,
                "stored": stored,
                "worker_rss_mb": memory_kb(pid) / 1024,
                "broker_rss_mb": memory_kb(broker) / 1024 if broker else 0.0,
            }
        )
        if t_ready is not None:
            if t_first_commit is None and stored > stored_before:
                t_first_commit = now
            if t_caught_up is None and acked - stored <= rate * 0.5:
                t_caught_up = now
        if (publishing.done() and t_caught_up is not None) or now > before + down + after + 180:
            break
        await asyncio.sleep(0.25)
    published = await publishing
    drained = await bench.wait_drained(workers, published.acked, 120)
    verification = await workers.verify(first, published.acked)
    rss_before = max((s["worker_rss_mb"] for s in samples if s["t"] < before), default=0.0)
    broker_before = max((s["broker_rss_mb"] for s in samples if s["t"] < before), default=0.0)
    in_outage = [s for s in samples if t_down is not None and s["t"] >= t_down]
    drain_rate = None
    if t_first_commit is not None and t_caught_up is not None:
        caught = next(s["stored"] for s in samples if s["t"] == t_caught_up)
        drain_rate = (caught - stored_before) / max(t_caught_up - t_first_commit, 0.25)

    def since(t: float | None) -> float | None:
        return None if t is None or t_restart is None else t - t_restart

    result: dict[str, Any] = {
        "rate": rate,
        "down_s": down,
        "backlog_at_restart": backlog,
        "postgres_start_s": since(t_ready),
        "first_commit_after_restart_s": since(t_first_commit),
        "caught_up_after_restart_s": since(t_caught_up),
        "drain_rate_per_s": drain_rate,
        "worker_rss_mb": {
            "before": rss_before,
            "max_down": max(
                (s["worker_rss_mb"] for s in in_outage if t_restart and s["t"] <= t_restart),
                default=0.0,
            ),
            "max_after": max((s["worker_rss_mb"] for s in in_outage), default=0.0),
        },
        "broker_rss_mb": {
            "before": broker_before,
            "max": max((s["broker_rss_mb"] for s in in_outage), default=0.0),
        },
        "drained": drained is not None,
        "verification": dataclasses.asdict(verification),
        "samples": samples[::4],
    }
    rss = result["worker_rss_mb"]
    bench.say(
        f"  worker RSS {rss['before']:.0f} MB before, {rss['max_down']:.0f} MB at most while "
        f"down; first commit {_nan(since(t_first_commit)):.1f} s after the restart request, "
        f"caught up after {_nan(since(t_caught_up)):.1f} s, drain {_nan(drain_rate):.0f}/s; "
        f"lost {verification.lost}, duplicated {verification.duplicated}"
    )
    return result


# -- the whole run ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """How long each phase runs."""

    step_seconds: float
    max_steps: int
    latency_seconds: tuple[float, float]
    profile_seconds: float
    outage: tuple[float, float, float]  # before, down, after
    patients: int


#: Latency runs last 60 s: long enough to include full garbage collections and periodic work.
FULL = Plan(7.0, 7, (60.0, 60.0), 8.0, (5.0, 60.0, 15.0), patients=10_000)
QUICK = Plan(2.0, 3, (3.0, 2.0), 2.0, (1.5, 5.0, 3.0), patients=2_000)
PHASES = ("bare", "intake", "naive", "worker", "latency", "profile", "scale", "outage")


def machine() -> dict[str, Any]:
    """What the figures came from."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _mosquitto_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-h"], capture_output=True, timeout=5, check=False)
        first = out.stdout.decode(errors="replace").splitlines()
        if first:
            return first[0].replace("mosquitto version ", "")
    return "unknown"


async def prepare_database(db: Db, patients: int, seed: int) -> dict[str, Any]:
    """Migrate, apply the clinic's registry (timed) and create the naive table."""
    conn = await db.conn()
    await database.migrate(conn)
    clinic = build_clinic(patients, seed)
    t0 = time.perf_counter()
    parsed = registry.parse(clinic.registry)
    t1 = time.perf_counter()
    summary = await registry.apply(conn, parsed)
    t2 = time.perf_counter()
    await conn.execute(_NAIVE_TABLE)
    cache = RegistryCache()
    t3, cpu = time.perf_counter(), time.process_time()
    await cache.load(conn)  # what a worker does at start and when the registry changes
    return {
        "patients": summary.patients,
        "devices": summary.devices,
        "care_plans": summary.plans_added,
        "parse_s": t1 - t0,
        "apply_s": t2 - t1,
        "cache_load_s": time.perf_counter() - t3,
        "cache_load_cpu_s": time.process_time() - cpu,
        "cache_max_age_s": getattr(cache, "max_age", None),  # reloaded by age, if it is
    }


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="homemonitor-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs and data kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    patients = args.patients or plan.patients
    phases = set(args.phases.split(",")) if args.phases else set(PHASES)
    extra_env = dict(kv.split("=", 1) for kv in args.worker_env)
    base_ms = int((datetime.now(UTC) - timedelta(hours=2)).timestamp()) * 1000
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "machine": machine(),
        "worker_env": extra_env,
        "worker_pythonpath": args.worker_pythonpath,
    }
    t_start = time.monotonic()
    print(f"homemonitor bench ({'quick' if args.quick else 'full'}) in {workdir}", flush=True)
    with (
        PrivatePostgres(workdir / "postgres", durable=not args.no_fsync) as pg,
        PrivateMosquitto(workdir / "mosquitto", extra_config="log_type subscribe\n") as mq,
    ):
        db = Db(pg.dsn)
        load: LoadGenerator | None = None
        consumers: list[Consumer] = []
        try:
            result["postgres"] = str(await db.fetchval("SHOW server_version"))
            result["postgres_fsync"] = not args.no_fsync
            result["mosquitto"] = _mosquitto_version(mq.binary)
            result["registry"] = await prepare_database(db, patients, args.seed)
            r = result["registry"]
            print(
                f"registry: {r['patients']} patients, {r['devices']} devices, "
                f"{r['care_plans']} care plans (parse {r['parse_s']:.1f} s, "
                f"apply {r['apply_s']:.1f} s)",
                flush=True,
            )
            load = LoadGenerator(LoadConfig(mq.host, mq.port, patients, args.seed, base_ms))
            await load.start()
            meter = CpuMeter(load.pid, _pid_with_argument(str(mq.directory)), pg._postmaster_pid())
            bench = Bench(
                db=db, broker=mq, load=load, meter=meter, base_ms=base_ms, workdir=workdir
            )
            searches: dict[str, Any] = {}
            result["searches"] = searches

            async def searched(key: str, consumer: Consumer, start: float) -> Search:
                consumers.append(consumer)
                await consumer.start()
                await bench.until_consuming(consumer)
                found = await bench.search(consumer, start, plan.step_seconds, plan.max_steps)
                searches[key] = dataclasses.asdict(found)
                return found

            async def retire(consumer: Consumer) -> None:
                await consumer.stop()
                consumers.remove(consumer)
                if isinstance(consumer, ServiceWorkers):
                    for cid in consumer.client_ids:
                        await asyncio.to_thread(forget_session, mq.host, mq.port, cid)

            if "bare" in phases:
                bare = ChildConsumer(
                    "bare client (aiomqtt, manual ack)", _bare_main, (mq.host, mq.port), None
                )
                await searched("bare", bare, 1000)
                await retire(bare)
            if "intake" in phases:
                alone = ChildConsumer(
                    "the worker's MQTT intake, no work", _intake_main, (mq.host, mq.port), None
                )
                await searched("intake", alone, 1000)
                await retire(alone)
            if "naive" in phases:
                naive = ChildConsumer(
                    "naive (auto ack, INSERT each)", _naive_main, (mq.host, mq.port, pg.dsn), db
                )
                await searched("naive", naive, 500)
                await retire(naive)

            def workers(n: int, name: str, group: str | None = None) -> ServiceWorkers:
                return ServiceWorkers(
                    n,
                    db,
                    mq,
                    workdir,
                    name=name,
                    shared_group=group,
                    extra_env=extra_env,
                    pythonpath=args.worker_pythonpath,
                )

            one_sustained = 0.0
            if phases & {"worker", "latency", "profile"}:
                one = workers(1, "worker")
                if "worker" in phases:
                    found = await searched("worker", one, 1000)
                    one_sustained = found.best.rate if found.best else 0.0
                else:
                    consumers.append(one)
                    await one.start()
                    await bench.until_consuming(one)
                if "latency" in phases:
                    durations = (args.latency_seconds,) * 2 if args.latency_seconds else None
                    result["latency"] = [
                        await latency(bench, one, rate, seconds)
                        for rate, seconds in zip(
                            (1000, 5000), durations or plan.latency_seconds, strict=True
                        )
                    ]
                if "profile" in phases:
                    rate = args.profile_rate or (0.8 * one_sustained if one_sustained else 1000.0)
                    result["profile"] = await profile(
                        bench, one, float(round(rate / 50) * 50), plan.profile_seconds
                    )
                result["worker_quarantined"] = await one.quarantined()
                await retire(one)
            if "scale" in phases:
                two = workers(2, "shared", group="bench")
                start = float(round(max(one_sustained, 1000) * 1.2 / 50) * 50)
                await searched("two_workers", two, start)
                await retire(two)
            if "outage" in phases:
                lone = workers(1, "outage")
                consumers.append(lone)
                await lone.start()
                await bench.until_consuming(lone)
                before, down, after = plan.outage
                down = args.outage_seconds or down
                result["outage"] = await outage(
                    bench, lone, pg, rate=1000, before=before, down=down, after=after
                )
                await retire(lone)
        finally:
            for consumer in consumers:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            if load is not None:
                load.close()
            await db.close()
    result["duration_s"] = time.monotonic() - t_start
    return result


# -- the report ----------------------------------------------------------------------------


def _best(result: dict[str, Any], key: str) -> float | None:
    found = result.get("searches", {}).get(key)
    if not found or not found.get("best"):
        return None
    return float(found["best"]["rate"])


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, passed) for each target of issue 4; None when not measured."""
    out: list[tuple[str, str, bool | None]] = []
    one, bare, naive, two = (_best(result, k) for k in ("worker", "bare", "naive", "two_workers"))
    if one and bare:
        out.append(
            ("one worker >= 90 % of the bare client", f"{one / bare:.0%}", one >= 0.9 * bare)
        )
    if one and naive:
        out.append(("one worker >= 3x the naive consumer", f"{one / naive:.1f}x", one >= 3 * naive))
    for lat, limit in zip(result.get("latency", []), (50.0, 200.0), strict=False):
        p99 = lat["publish_to_alert_opened_ms"].get("p99")
        label = f"publish -> alert p99 <= {limit:g} ms at {lat['rate']:.0f}/s"
        if p99 is None:
            out.append((label, "no alerts", None))
        else:
            out.append((label, f"{p99:.0f} ms", p99 <= limit and lat["kept_up"]))
    if one and two:
        out.append(("two workers >= 1.3x one", f"{two / one:.2f}x", two >= 1.3 * one))
    o = result.get("outage")
    if o:
        v, rss = o["verification"], o["worker_rss_mb"]
        growth = rss["max_down"] - rss["before"]
        flat = growth <= max(20.0, 0.2 * rss["before"])
        out.append(
            (
                f"outage {o['down_s']:g} s: nothing lost, memory flat",
                f"lost {v['lost']}, dup {v['duplicated']}, RSS {growth:+.1f} MB while down",
                v["lost"] == 0 and v["duplicated"] == 0 and flat and o["drained"],
            )
        )
    return out


_CONSUMERS = {
    "bare": "(a) bare client: aiomqtt + manual ack",
    "intake": "(a') the worker's MQTT intake, no work",
    "naive": "(b) naive: auto ack, INSERT each",
    "worker": "one worker",
    "two_workers": "two workers, shared subscription",
}


def _render_header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    kind = "QUICK: for trying the harness, not for figures" if result["quick"] else "full"
    fsync = "on" if result.get("postgres_fsync") else "off"
    lines = [
        "",
        f"homemonitor bench, {result['started_at']} ({kind})",
        f"machine:  {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"software: Python {m['python']}, PostgreSQL {result.get('postgres')} (fsync {fsync}), "
        f"Mosquitto {result.get('mosquitto')}",
    ]
    reg = result.get("registry")
    if reg:
        lines.append(
            f"registry: {reg['patients']} patients, {reg['devices']} devices, "
            f"{reg['care_plans']} care plans; registry.apply {reg['apply_s']:.1f} s; a worker's "
            f"cache load {reg['cache_load_s'] * 1000:.0f} ms ({reg['cache_load_cpu_s'] * 1000:.0f}"
            f" ms CPU)"
            + (f", also every {reg['cache_max_age_s']:g} s" if reg["cache_max_age_s"] else "")
        )
    return lines


def _render_throughput(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{'throughput, nothing lost or duplicated':<40} {'sustained':>9} {'peak':>7} "
        f"{'| CPU us per reading:':<21}{'consumer':>9} {'postgres':>9} {'broker':>7} "
        f"{'loadgen':>8} {'machine':>8} {'| peak RSS':>10}",
    ]
    for key, name in _CONSUMERS.items():
        found = result.get("searches", {}).get(key)
        if not found:
            continue
        best = found.get("best")
        peak = max((s["consumer_rate"] for s in found["steps"]), default=0.0)
        if not best:
            lines.append(f"{name:<40} {'none':>9} {peak:>7.0f}   (limit: {found['limit']})")
            continue
        c = best["cpu_us"]
        bound = "  (load generator's limit)" if found["limit"] == "load generator" else ""
        lines.append(
            f"{name:<40} {best['rate']:>9.0f} {peak:>7.0f} {'|':<21}{c['consumer']:>9.0f} "
            f"{c['postgres']:>9.0f} {c['mosquitto']:>7.0f} {c['loadgen']:>8.0f} "
            f"{c['machine']:>8.0f} | {best['peak_rss_mb']:>5.0f} MB{bound}"
        )
    lines.append(
        "  sustained: highest step rate kept up with; peak: most stored per second in any step"
    )
    one = _best(result, "worker")
    ratios = [
        f"{one / base:.0%} of {label}"
        for base, label in ((_best(result, "bare"), "(a)"), (_best(result, "intake"), "(a')"))
        if one and base
    ]
    if ratios:
        lines.append(f"  one worker sustains {' and '.join(ratios)}")
    return lines


def _render_latency(result: dict[str, Any]) -> list[str]:
    if not result.get("latency"):
        return []
    lines = [
        "",
        f"{'latency, one worker, ms':<40} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'n':>7}",
    ]
    for lat in result["latency"]:
        kept = "" if lat["kept_up"] else "  (did not keep up)"
        for what, key in (
            ("stored", "publish_to_stored_ms"),
            ("alert opened", "publish_to_alert_opened_ms"),
        ):
            p = lat[key]
            if p["n"]:
                label = f"  {lat['rate']:.0f}/s publish -> {what}"
                lines.append(
                    f"{label:<40} {p['p50']:>7.1f} {p['p95']:>7.1f} {p['p99']:>7.1f} "
                    f"{p['max']:>7.0f} {p['n']:>7}{kept}"
                )
    return lines


def _render_profile(result: dict[str, Any]) -> list[str]:
    prof = result.get("profile")
    if not prof:
        return []
    cpu = prof["cpu_us_per_reading"]
    lines = [
        "",
        f"CPU per reading, one worker at {prof['rate']:.0f}/s: "
        f"{prof['worker_cpu_us_per_reading']:.0f} us in the worker "
        f"(+ {cpu['postgres']:.0f} us PostgreSQL, {cpu['mosquitto']:.0f} us Mosquitto); "
        f"split by py-spy samples ({prof.get('samples', 0)}):",
    ]
    for stage, v in (prof.get("stages") or {}).items():
        lines.append(f"  {stage:<38} {v['cpu_us_per_reading']:>7.1f} us {v['share']:>5.0%}")
    if prof.get("error"):
        lines.append(f"  (no stage split: {prof['error'].strip()[:200]})")
    return lines


def _render_outage(result: dict[str, Any]) -> list[str]:
    o = result.get("outage")
    if not o:
        return []
    rss, broker = o["worker_rss_mb"], o["broker_rss_mb"]
    return [
        "",
        f"outage: PostgreSQL down {o['down_s']:g} s at {o['rate']:.0f}/s, backlog "
        f"{o['backlog_at_restart']} readings; worker RSS {rss['before']:.0f} MB before, at most "
        f"{rss['max_down']:.0f} MB while down, {rss['max_after']:.0f} MB draining; broker "
        f"{broker['before']:.0f} -> {broker['max']:.0f} MB",
        f"  after the restart request: PostgreSQL up in {_nan(o['postgres_start_s']):.1f} s, "
        f"first commit {_nan(o['first_commit_after_restart_s']):.1f} s, caught up "
        f"{_nan(o['caught_up_after_restart_s']):.1f} s; drain rate "
        f"{_nan(o['drain_rate_per_s']):.0f} readings/s (while {o['rate']:.0f}/s kept arriving)",
    ]


def render(result: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    lines = _render_header(result)
    lines += _render_throughput(result)
    lines += _render_latency(result)
    lines += _render_profile(result)
    lines += _render_outage(result)
    checks = targets(result)
    if checks:
        lines += ["", "targets (issue 4)"]
        for label, measured, ok in checks:
            verdict = "n/a " if ok is None else ("PASS" if ok else "MISS")
            lines.append(f"  {verdict}  {label:<48} {measured}")
    lines.append(f"\n{result.get('duration_s', 0):.0f} s in all")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``homemonitor bench``."""
    parser.add_argument("--quick", action="store_true", help="every phase briefly (< 1 min)")
    parser.add_argument(
        "--patients", type=int, default=None, help="registry size (10 000; --quick: 2 000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="clinic seed (7)")
    parser.add_argument(
        "--phases",
        default="",
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--output", default="bench-results", help="directory for the JSON result (bench-results)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="HOMEMONITOR_X=VALUE",
        help="extra environment for the workers, e.g. HOMEMONITOR_BATCH_MAX=1000 (repeatable)",
    )
    parser.add_argument(
        "--worker-pythonpath",
        default=None,
        help="run the workers from another source tree (PYTHONPATH), to compare a change",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="PostgreSQL without fsync (not the default)"
    )
    parser.add_argument(
        "--profile-rate",
        type=float,
        default=None,
        help="profile at this rate (default: 80 %% of the sustained rate found)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=None, help="length of each latency run"
    )
    parser.add_argument(
        "--outage-seconds", type=float, default=None, help="how long PostgreSQL is down (60)"
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and data directories")


def run(args: argparse.Namespace) -> int:
    """Run the bench; 0 when every reading was stored exactly once, 1 otherwise."""
    if args.phases:
        unknown = set(args.phases.split(",")) - set(PHASES)
        if unknown:
            print(f"homemonitor bench: unknown phases {sorted(unknown)}", file=sys.stderr)
            return 2
    with _workdir(args.keep) as workdir:
        result = asyncio.run(_run(args, workdir))
    print(render(result))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=_json_default))
    print(f"results: {path}")
    return 0 if _nothing_lost(result) else 1


def _json_default(value: object) -> object:
    if isinstance(value, np.ndarray):
        return None  # publish times are not part of the result
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _nothing_lost(result: dict[str, Any]) -> bool:
    steps = [s for found in result.get("searches", {}).values() for s in found["steps"]]
    steps += [lat["step"] for lat in result.get("latency", [])]
    verifications = [s["verification"] for s in steps]
    if result.get("outage"):
        verifications.append(result["outage"]["verification"])
    return all(v["lost"] == 0 and v["duplicated"] == 0 for v in verifications)


# -- the smoke run the test suite keeps -----------------------------------------------------


async def smoke(
    dsn: str,
    broker: PrivateMosquitto,
    workdir: Path,
    *,
    patients: int = 20,
    readings: int = 1500,
    rate: float = 1000.0,
) -> Verification:
    """The harness end to end, briefly: registry, worker process, load generator, check."""
    db = Db(dsn)
    base_ms = int((datetime.now(UTC) - timedelta(hours=2)).timestamp()) * 1000
    load = LoadGenerator(LoadConfig(broker.host, broker.port, patients, 7, base_ms))
    worker = ServiceWorkers(1, db, broker, workdir, name="smoke")
    try:
        await registry.apply(await db.conn(), registry.parse(build_clinic(patients).registry))
        await worker.start()
        await load.start()
        meter = CpuMeter(load.pid, None, None)
        bench = Bench(
            db=db,
            broker=broker,
            load=load,
            meter=meter,
            base_ms=base_ms,
            workdir=workdir,
            quiet=True,
        )
        await bench.until_consuming(worker)
        step, _ = await bench.step(worker, rate, readings / rate, quiet=True)
        return step.verification
    finally:
        await worker.stop()
        load.close()
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homemonitor bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
