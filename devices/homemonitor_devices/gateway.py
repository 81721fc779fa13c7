"""A reference store-and-forward gateway: SQLite outbox, QoS 1 publishing in order.

Every message is first committed to a local SQLite queue (WAL), then published with QoS 1
in queue order; a row is deleted only after the broker's PUBACK. While the broker is
unreachable the gateway keeps queueing and reconnects with capped, jittered exponential
backoff; on reconnect the backlog goes out in order. Messages survive a restart (or a
kill) of the gateway: a new :class:`Gateway` on the same file picks up where the old one
stopped.

Delivery is at least once: a message whose PUBACK was lost (connection cut, process
killed between PUBACK and delete) is published again. The MQTT client id and, by
default, the user name are the gateway id, so a broker ACL ``pattern write
homemonitor/v1/gw/%u/#`` pins the gateway to its own topics.

    >>> gateway = Gateway("gw-0001", queue_path=Path("gw.sqlite3"), port=1883)  # doctest: +SKIP
    >>> async with gateway as gw:  # doctest: +SKIP
    ...     await gw.submit(PayloadFormat.NATIVE, payload)
    ...     await asyncio.wait_for(gw.drained(), 10)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import aiomqtt

from homemonitor import logs
from homemonitor.contract.protocol import (
    GATEWAY_ID_PATTERN,
    PayloadFormat,
    is_gateway_id,
    readings_topic,
)
from homemonitor.errors import HomemonitorError
from homemonitor.runtime import Backoff

__all__ = ["Gateway", "GatewayError", "GatewayStats", "OutboxQueue", "TlsConfig"]

log = logs.get_logger(__name__)


class GatewayError(HomemonitorError):
    """The gateway cannot do what was asked (not started, closed, bad id)."""

    def __init__(self, gateway_id: str, detail: str) -> None:
        super().__init__(f"gateway {gateway_id}: {detail}")
        self.gateway_id = gateway_id
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS towards the broker.

    ``ca_file`` None uses the system's trust store; ``cert_file``/``key_file`` give a
    client certificate; ``insecure`` skips the host-name check (as ``mosquitto_pub
    --insecure``), for development certificates only.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One row of the outbox."""

    seq: int
    topic: str
    payload: bytes


class OutboxQueue:
    """A durable FIFO of MQTT messages in SQLite (WAL).

    Every method is synchronous and serialised by a lock, so the queue may be used from a
    worker thread (the gateway does, to keep fsyncs off the event loop). ``synchronous``
    "FULL" survives power loss; "NORMAL" survives a process crash and is faster.
    """

    _SCHEMA_VERSION = 1

    def __init__(self, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " topic TEXT NOT NULL,"
                " payload BLOB NOT NULL,"
                " queued_at REAL NOT NULL)"
            )
            self._db.execute(f"PRAGMA user_version={self._SCHEMA_VERSION}")
        elif version != self._SCHEMA_VERSION:
            self._db.close()
            msg = f"outbox {path} has schema version {version}, expected {self._SCHEMA_VERSION}"
            raise HomemonitorError(msg)

    def append(self, messages: Sequence[tuple[str, bytes]]) -> int:
        """Commit ``messages`` (topic, payload) at the tail; the last one's sequence number.

        Sequence numbers grow by one per message and are never reused (AUTOINCREMENT).
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, queued_at) VALUES (?, ?, ?)",
                    [(topic, payload, now) for topic, payload in messages],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return int(self._db.execute("SELECT max(seq) FROM outbox").fetchone()[0])

    def bounds(self) -> tuple[int, int]:
        """(last sequence number acknowledged, last appended): equal when the queue is empty."""
        with self._lock:
            first, last = self._db.execute("SELECT min(seq), max(seq) FROM outbox").fetchone()
            if first is None:
                row = self._db.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
                ).fetchone()
                done = int(row[0]) if row else 0
                return done, done
            return int(first) - 1, int(last)

    def head(self, limit: int) -> list[QueuedMessage]:
        """The oldest ``limit`` messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [QueuedMessage(int(seq), str(topic), bytes(payload)) for seq, topic, payload in rows]

    def remove_through(self, seq: int) -> None:
        """Delete every message up to and including ``seq`` (they were acknowledged)."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        """Close the database (waits for a call in progress)."""
        with self._lock:
            self._db.close()


@dataclasses.dataclass(slots=True)
class GatewayStats:
    """What a gateway has done since it started."""

    submitted: int = 0
    published: int = 0
    connects: int = 0
    connection_failures: int = 0


class Gateway:
    """A home gateway that stores every message, then forwards it with QoS 1, in order.

    Use as an async context manager; :meth:`submit` queues (durably) and returns at once,
    a background task publishes. :meth:`close` (and leaving the ``async with``) waits up
    to ``shutdown_grace`` seconds for the queue to drain, then stops; what is left stays
    in the file for the next start. ``backoff`` spaces the reconnect attempts (by attempt
    number, :meth:`Backoff.delay`); its ``rng``, seeded, makes them repeatable.
    """

    def __init__(
        self,
        gateway_id: str,
        *,
        queue_path: Path,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        tls: TlsConfig | None = None,
        keepalive: int = 30,
        batch: int = 64,
        publish_timeout: float = 30.0,
        backoff: Backoff | None = None,
        shutdown_grace: float = 5.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if not is_gateway_id(gateway_id):
            raise GatewayError(gateway_id, f"id must match {GATEWAY_ID_PATTERN}")
        self.gateway_id = gateway_id
        self.queue_path = queue_path
        self.stats = GatewayStats()
        self._host = host
        self._port = port
        self._username = username if username is not None else gateway_id
        self._password = password
        self._tls = tls
        self._keepalive = keepalive
        self._batch = batch
        self._publish_timeout = publish_timeout
        self._backoff = backoff or Backoff()
        self._shutdown_grace = shutdown_grace
        self._synchronous: Literal["FULL", "NORMAL"] = synchronous
        self._queue: OutboxQueue | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._connected = asyncio.Event()
        self._first_attempt: asyncio.Future[str | None] | None = None  # None: it connected
        # Sequence numbers of the last message acknowledged and the last one queued: both
        # only grow, so the gateway is drained exactly when the first reaches the second.
        self._acked = 0
        self._appended = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close(self._shutdown_grace if et is None else 0.0)

    async def start(self) -> None:
        """Open the queue and start forwarding."""
        if self._task is not None:
            raise GatewayError(self.gateway_id, "already started")
        self._queue = await asyncio.to_thread(
            OutboxQueue, self.queue_path, synchronous=self._synchronous
        )
        self._acked, self._appended = await asyncio.to_thread(self._queue.bounds)
        self._update_drained()
        self._first_attempt = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"gateway {self.gateway_id}")
        self._task.add_done_callback(self._report_failure)

    async def close(self, grace: float | None = None) -> None:
        """Wait up to ``grace`` seconds for the backlog to go out, then stop.

        ``grace=0`` stops at once, as a power cut would (everything queued is on disk).
        """
        task, self._task = self._task, None
        if task is None:
            return
        grace = self._shutdown_grace if grace is None else grace
        if grace > 0 and not task.done():
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except TimeoutError:
                log.warning(
                    "gateway.close: leaving the rest queued",
                    gateway=self.gateway_id,
                    pending=self.pending,
                    grace_s=round(grace, 1),
                )
        task.cancel()
        await asyncio.wait({task})
        self._connected.clear()
        self._first_attempt_ended("the gateway was closed before it connected")
        if self._queue is not None:
            queue, self._queue = self._queue, None
            await asyncio.shield(asyncio.to_thread(queue.close))

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        """Log at once when forwarding dies of something other than the connection."""
        if not task.cancelled() and task.exception() is not None:
            self._first_attempt_ended(f"forwarding failed ({type(task.exception()).__name__})")
            log.error(
                "gateway.failed: forwarding stopped; messages stay queued",
                gateway=self.gateway_id,
                pending=self.pending,
                exc_info=task.exception(),
            )

    # -- what callers use ------------------------------------------------------------------
    async def submit(self, fmt: PayloadFormat, payload: bytes) -> None:
        """Queue one message for the gateway's ``fmt`` topic; returns once it is on disk."""
        await self.submit_many([(fmt, payload)])

    async def submit_many(self, messages: Iterable[tuple[PayloadFormat, bytes]]) -> None:
        """Queue several messages in one transaction, in the order given."""
        queue = self._require_queue()
        rows = [(readings_topic(self.gateway_id, fmt), payload) for fmt, payload in messages]
        if not rows:
            return
        last = await asyncio.to_thread(queue.append, rows)
        self.stats.submitted += len(rows)
        self._appended = max(self._appended, last)
        self._update_drained()
        self._wake.set()

    @property
    def pending(self) -> int:
        """Messages queued and not yet acknowledged."""
        return max(0, self._appended - self._acked)

    def _update_drained(self) -> None:
        if self._acked >= self._appended:
            self._drained.set()
        else:
            self._drained.clear()

    async def drained(self) -> None:
        """Return once every queued message has been acknowledged by the broker."""
        await self._drained.wait()

    async def connected(self) -> None:
        """Return once the gateway is connected to the broker."""
        await self._connected.wait()

    async def first_connection(self) -> None:
        """Return once the first connection attempt succeeded; raise GatewayError if it failed.

        For a caller that would rather stop than queue for ever against a broker that
        refuses the gateway (wrong password, not authorised, nothing listening). The
        gateway itself keeps retrying, as one in a home must.
        """
        if self._first_attempt is None:
            raise GatewayError(self.gateway_id, "not started (use 'async with Gateway(...)')")
        failure = await asyncio.shield(self._first_attempt)
        if failure is not None:
            where = f"{self._host}:{self._port}"
            detail = f"cannot connect to the broker at {where}: {failure}"
            raise GatewayError(self.gateway_id, detail)

    def _first_attempt_ended(self, failure: str | None) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(failure)

    @property
    def is_connected(self) -> bool:
        """Whether the gateway has a broker connection right now."""
        return self._connected.is_set()

    def _require_queue(self) -> OutboxQueue:
        if self._queue is None:
            raise GatewayError(self.gateway_id, "not started (use 'async with Gateway(...)')")
        return self._queue

    # -- the background loop ---------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        tls_params = None
        if self._tls is not None:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(self._tls.ca_file) if self._tls.ca_file else None,
                certfile=str(self._tls.cert_file) if self._tls.cert_file else None,
                keyfile=str(self._tls.key_file) if self._tls.key_file else None,
            )
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.gateway_id,
            username=self._username,
            password=self._password,
            clean_session=True,
            keepalive=self._keepalive,
            tls_params=tls_params,
            tls_insecure=self._tls.insecure if self._tls is not None else None,
            logger=logging.getLogger(__name__),  # aiomqtt and paho log through stdlib
        )

    async def _run(self) -> None:
        """Connect, forward until the connection fails, back off, repeat."""
        attempt = 0
        while True:
            try:
                async with self._client() as client:
                    attempt = 0
                    self.stats.connects += 1
                    self._connected.set()
                    self._first_attempt_ended(None)
                    log.info("gateway.connected", gateway=self.gateway_id)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                failure = exc
            finally:
                self._connected.clear()
            self._first_attempt_ended(str(failure))
            self.stats.connection_failures += 1
            delay = self._backoff.delay(attempt)
            attempt += 1
            log.warning(
                "gateway.disconnected",
                gateway=self.gateway_id,
                reason=str(failure),
                pending=self.pending,
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Forward the queue; end (with MqttError) when the connection drops."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._forward(client), name=f"gateway {self.gateway_id} forward")
                tasks.create_task(self._watch(client), name=f"gateway {self.gateway_id} watch")
        except* aiomqtt.MqttError as group:
            first = group.exceptions[0]
            raise aiomqtt.MqttError(str(first)) from first

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the connection is lost.

        A publish waiting for its PUBACK is not woken by a disconnect, only by its timeout;
        the message iterator is (it raises on disconnection), and the task group then
        cancels the waiting publish.
        """
        async for _ in client.messages:  # the gateway subscribes to nothing
            pass

    async def _forward(self, client: aiomqtt.Client) -> None:
        """Publish the queue head in order, one at a time, deleting what was acknowledged."""
        queue = self._require_queue()
        while True:
            self._wake.clear()
            batch = await asyncio.to_thread(queue.head, self._batch)
            if not batch:
                await self._wake.wait()
                continue
            acknowledged: int | None = None
            try:
                for message in batch:
                    await client.publish(
                        message.topic, message.payload, qos=1, timeout=self._publish_timeout
                    )
                    acknowledged = message.seq
            finally:
                if acknowledged is not None:
                    done = sum(1 for m in batch if m.seq <= acknowledged)
                    await asyncio.shield(asyncio.to_thread(queue.remove_through, acknowledged))
                    self.stats.published += done
                    self._acked = max(self._acked, acknowledged)
                    self._update_drained()
