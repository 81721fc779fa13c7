"""The load generator: a raw MQTT 3.1.1 QoS 1 publisher in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import select
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

from homemonitor_bench.clinic import Payloads, build_clinic

#: Outstanding (un-PUBACKed) publishes the load generator allows itself.
PUBLISH_WINDOW = 2000
_TICK = 0.001  # the load generator publishes in bursts at most this often


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
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            return 0
        if not chunk:
            msg = "broker closed the connection"
            raise ConnectionError(msg)
        data = self._pending + chunk
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
    #: Wall clock at which the broker's PUBACK of each publish was read, when recorded: the
    #: broker acknowledges on receipt, so a late PUBACK is a broker (or load-generator) pause.
    acked_at: npt.NDArray[np.float64] | None = None


def _loadgen_main(pipe: Connection, config: LoadConfig, counters: Any) -> None:
    """Publish on command: ``(rate, count, first, record)``; ``None`` ends the process.

    When the broker goes away mid-run the process answers with what it had acknowledged
    so far and ends.
    """
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
        ack_times = np.zeros(count) if record else None
        counters[0] = counters[1] = 0
        sent = acked = 0
        last = t0 = next_burst = time.monotonic()
        gone = False
        try:
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
                got = publisher.acks(min(max(wait, 0.0), 0.005))
                if got and ack_times is not None:
                    ack_times[acked : acked + got] = time.time()  # the broker acks in order
                acked += got
                counters[0], counters[1] = sent, acked
        except OSError:  # ConnectionError too: the broker is gone (the crash phase kills it)
            gone = True
        elapsed = time.monotonic() - t0
        achieved = (count - 1) / (last - t0) if count > 1 and last > t0 else float(rate)
        pipe.send((count, acked, min(achieved, float(rate)), elapsed, times, ack_times))
        if gone:  # readings first .. first + acked - 1 were acknowledged; nothing more
            return
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
        self._closed = False

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
        """Publish readings ``first .. first + count - 1`` at ``rate``; wait for every PUBACK.

        If the broker goes away first, ``acked`` says how many (from ``first``, in order) it
        had acknowledged, and the load generator is done: start another.
        """
        self._pipe.send((rate, count, first, record))
        n, acked, achieved, seconds, times, ack_times = await asyncio.to_thread(self._pipe.recv)
        return Published(first, n, acked, rate, achieved, seconds, times, ack_times)

    def close(self) -> None:
        """End the process (once; a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._pipe.send(None)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._pipe.close()
        self._proc.close()
