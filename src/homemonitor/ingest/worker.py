"""The ingestion worker: MQTT in, batches committed, PUBACKs out in arrival order.

Two tasks in one TaskGroup, joined by a bounded queue of prepared batches:

- *consume* keeps one persistent MQTT session (fixed client id, no clean start, session
  expiry), collects messages into batches that close on size or after a few
  milliseconds, and prepares them (decode, validate, resolve, evaluate);
- *commit* stores each batch in one transaction and only then acknowledges its
  messages, in the order they arrived.

Nothing is acknowledged before it is committed, so a crash anywhere means redelivery,
and redelivery is harmless because storage is idempotent. While the database is down
the commit task retries and acknowledges nothing; the queue fills, the broker stops
sending at Receive Maximum, and keeps the rest: memory stays bounded.

No message can stop the stream. A batch the database refuses is stored message by
message, and a message whose rows are refused is quarantined, at last whole with a fixed
text (:meth:`Worker._commit_alone`). A message that kills the worker (a crash, an OOM, a
bug) comes back from the broker with the DUP flag; redelivered messages are counted in
``delivery_attempts`` before they are processed, one that failed on a redelivery before
is tried alone, and one delivered more than ``max_delivery_attempts`` times is
quarantined as ``repeated_failure`` without being decoded (:meth:`Worker._hand_over`).
Messages without DUP, nearly all of them, pay nothing for this.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import aiomqtt
import asyncpg
from aiomqtt.exceptions import MqttConnectError  # a refused CONNACK; not re-exported
from paho.mqtt.reasoncodes import ReasonCode

from homemonitor import logs
from homemonitor.contract.protocol import SUBSCRIPTION, partition_subscription, unpartitioned
from homemonitor.contract.readings import Reason, Rejection
from homemonitor.errors import StorageRefusedError, SubscriptionRefusedError
from homemonitor.ingest import pipeline, transport
from homemonitor.ingest.contacts import Contacts
from homemonitor.ingest.pipeline import Batch, Inbound
from homemonitor.ingest.validation import ClockPolicy
from homemonitor.metrics import Metrics
from homemonitor.registry import NOTIFY_CHANNEL, RegistryCache
from homemonitor.runtime import TRANSIENT_DB_ERRORS, Backoff, Health, sleep_unless
from homemonitor.settings import Settings
from homemonitor.storage import transaction
from homemonitor.storage.database import Conn
from homemonitor.storage.transaction import CommitResult

log = logs.get_logger(__name__)
T = TypeVar("T")

#: What a message's part of a refused batch becomes when the database refuses its own
#: rows as well: fixed text, no device, the raw bytes (``Worker._commit_alone``).
LAST_RESORT = Rejection(
    Reason.STORAGE_REJECTED,
    "the database refused this message's rows; kept whole with its raw payload (report it)",
)

#: CONNACK codes of a broker that does not speak the CONNECT's protocol version
#: (3.1.1: 1, unacceptable protocol version; MQTT 5: 0x84, unsupported protocol version).
_UNSUPPORTED_PROTOCOL = (1, 0x84)


#: Errors after which the commit task holds the batch, unacknowledged, and tries again.
_HOLD_AND_RETRY: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, StorageRefusedError)


def _lost(gone: asyncio.Future[None]) -> aiomqtt.MqttError:
    """The error to reconnect on, chained to why aiomqtt says the link dropped.

    Reading the future's exception also marks it retrieved, so asyncio does not complain
    about it when the client is collected.
    """
    cause = gone.exception() if not gone.cancelled() else None
    error = aiomqtt.MqttError(f"lost the broker connection ({cause or 'closed'})")
    error.__cause__ = cause
    return error


class Worker:
    """See the module docstring. ``run`` returns after a drained, committed shutdown."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        metrics: Metrics,
        health: Health,
        cache: RegistryCache | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.health = health
        self.cache = cache or RegistryCache()
        self.clock = ClockPolicy.from_settings(settings)
        self._client: aiomqtt.Client | None = None
        self._intake: transport.Intake[Inbound] | None = None
        self._generation = 0
        self._inflight = 0
        self.totals = CommitResult()
        self._leaving: float | None = None  # leave(): seconds of quiet that mean "all taken"
        self.contacts = Contacts()  # gateways' last contact, written off the batch path

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain and return."""
        await self._load_registry_until_ready(stop)
        batches: asyncio.Queue[Batch] = asyncio.Queue(maxsize=2)
        drained = asyncio.Event()  # the contacts' last flush comes after the last commit
        async with asyncio.TaskGroup() as tg:
            committer = tg.create_task(self._commit_loop(batches), name="commit")
            tg.create_task(self._listen_registry(stop), name="registry-listen")
            tg.create_task(self._keep_registry_fresh(stop), name="registry-refresh")
            tg.create_task(self.contacts.keep_flushing(self.pool, drained), name="contacts")
            await self._consume(stop, batches)
            committer.cancel()
            drained.set()
        log.info(
            "worker stopped",
            stored=self.totals.stored,
            duplicates=self.totals.duplicates,
            quarantined=self.totals.quarantined,
            alerts_opened=self.totals.opened.total(),
            plans_evaluated=self.totals.evaluated,
            plans_screened=self.totals.screened,
        )

    async def leave(self, stop: asyncio.Event, idle_s: float = 2.0) -> bool:
        """End this worker's broker session for good, storing what it still holds first.

        For scaling down: a departed replica's persistent session keeps its share of the
        readings (Mosquitto hands shared-subscription messages to every member session,
        connected or not) until it expires. Run with the departed replica's client id,
        after it has stopped: this connects as it, unsubscribes (the broker assigns it
        nothing new), stores and acknowledges everything the session delivers until
        ``idle_s`` pass without a message, and then ends the session. True when the
        session was ended; False when stopped first or when messages were left
        uncommitted (the database is down): then the session is kept, run it again.
        """
        self._leaving = idle_s
        await self.run(stop)
        if self._inflight or not self.health.database_ok:
            log.warning("messages left unacknowledged; the session is kept", held=self._inflight)
            return False
        backoff = Backoff(0.5, 5)
        for address in self.settings.mqtt_addresses * 3:
            try:
                await transport.end_session(self.settings, address)
            except aiomqtt.MqttError as exc:
                self._broker_state(connected=False, why=exc, address=address)
                if await sleep_unless(stop, backoff.next()):
                    return False
                continue
            log.info("broker session ended", client_id=self.settings.mqtt_client_id)
            return True
        return False

    async def _load_registry_until_ready(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.2, 10)
        while not stop.is_set():
            try:
                async with self.pool.acquire(timeout=5) as conn:
                    await self.cache.load(conn)
            except TRANSIENT_DB_ERRORS as exc:
                self.database_state(ok=False, why=exc)
                await sleep_unless(stop, backoff.next())
            else:
                self._registry_metrics()
                self.database_state(ok=True)
                self.health.registry_loaded = True
                return

    # -- MQTT side -------------------------------------------------------------------

    def _subscriptions(self) -> list[str]:
        """What this worker subscribes to: all readings, its shared group's, or its partitions'."""
        owned = self.settings.owned_partitions
        if owned:
            return [partition_subscription(p) for p in owned]
        group = self.settings.mqtt_shared_group
        return [f"$share/{group}/{SUBSCRIPTION}" if group else SUBSCRIPTION]

    def _not_ours(self) -> list[str]:
        """Subscriptions the session may hold from an earlier configuration, and must drop.

        A persistent session keeps its subscriptions: a worker that gave a partition away
        (or moved from all readings to partitions) would otherwise go on receiving it.
        """
        count, owned = self.settings.mqtt_partition_count, self.settings.owned_partitions
        if count is None:
            return []
        return [SUBSCRIPTION] + [partition_subscription(p) for p in range(count) if p not in owned]

    def _make(self) -> transport.Make[Inbound]:
        """How the intake turns a PUBLISH into an :class:`Inbound` of this connection.

        A partition's topic becomes the topic the gateway published to: the gateway's
        identity and the format are read from it, as from every other.
        """
        generation = self._generation
        inbound = functools.partial(Inbound, generation=generation)
        if not self.settings.owned_partitions:
            return inbound

        def make(topic: str, *rest: Any) -> Inbound:
            return inbound(unpartitioned(topic), *rest)

        return make

    async def _consume(self, stop: asyncio.Event, batches: asyncio.Queue[Batch]) -> None:
        """Keep a session on one broker address; when one fails, try the next.

        Every address of ``HOMEMONITOR_MQTT_HOST`` is tried in turn, without waiting
        between them; the backoff applies once all have failed. A connection that was up
        and is lost is tried again on the same address first (a restart of that broker),
        and on the next once that fails (a node that is gone).
        """
        backoff = Backoff(0.5, 30)
        addresses = self.settings.mqtt_addresses
        at = failed_in_a_row = 0
        while not stop.is_set():
            address = addresses[at]
            try:
                client = transport.client(self.settings, address)
                self._generation += 1  # before connecting: the session may deliver at once
                intake = transport.Intake(client, self._make(), limit=self.settings.max_inflight)
                async with client:
                    self._client, self._intake = client, intake
                    if self._leaving is None:
                        await self._subscribe(client)
                    else:  # the broker assigns nothing new; the session delivers what it has
                        await client.unsubscribe(self._subscriptions() + self._not_ours())
                    self._broker_state(connected=True, address=address)
                    backoff.reset()
                    failed_in_a_row = 0
                    await self._collect(client, intake, stop, batches)
                    await self._drain(batches)
            except (aiomqtt.MqttError, SubscriptionRefusedError) as exc:
                failed_in_a_row += 1
                at = (at + 1) % len(addresses)
                # the next address at once, unless every one has just failed
                delay = backoff.next() if failed_in_a_row >= len(addresses) else 0.0
                self._broker_state(connected=False, why=exc, retry_in=delay, address=address)
                if await sleep_unless(stop, delay):
                    break
            finally:
                self._broker_state(connected=False)
                self._client = self._intake = None

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Subscribe at QoS 1; a refused or downgraded subscription is an error.

        Only a QoS 1 subscription makes the broker keep and redeliver what the worker has
        not acknowledged; a worker without one must not look healthy.
        """
        dropped = self._not_ours()
        if dropped:
            await client.unsubscribe(dropped)
        topics = self._subscriptions()
        answer: Sequence[int | ReasonCode] = await client.subscribe([(t, 1) for t in topics])
        for topic, granted in zip(topics, answer, strict=True):
            code = granted if isinstance(granted, int) else granted.value
            if code != 1:
                reason = "QoS 0" if isinstance(granted, int) else granted.getName()
                raise SubscriptionRefusedError(topic, code, reason)

    def _explain(self, exc: BaseException) -> str:
        """Why the broker link failed, naming the setting to change when it is one."""
        protocol = self.settings.mqtt_protocol
        other = "3.1.1" if protocol == "5" else "5"
        if isinstance(exc, transport.ClosedBeforeConnackError) or (
            isinstance(exc, MqttConnectError) and exc.rc in _UNSUPPORTED_PROTOCOL
        ):
            what = (
                "closed the connection without answering"
                if isinstance(exc, transport.ClosedBeforeConnackError)
                else f"refused ({exc.rc})"
            )
            nats = (
                " (NATS's MQTT gateway speaks only 3.1.1: for it set HOMEMONITOR_MQTT_BROKER=nats)"
                if protocol == "5"
                else ""
            )
            return (
                f"the broker {what} the MQTT {protocol} CONNECT: a broker that does not "
                f"speak MQTT {protocol} does this; if it speaks only {other}, set "
                f"HOMEMONITOR_MQTT_PROTOCOL={other}{nats} (or, if the port expects TLS, set "
                "HOMEMONITOR_MQTT_TLS_CA)"
            )
        return str(exc)

    async def _drain(self, batches: asyncio.Queue[Batch]) -> None:
        """Let the commit task finish what is queued, within the grace period."""
        try:
            await asyncio.wait_for(batches.join(), self.settings.shutdown_grace_s)
        except TimeoutError:
            log.warning(
                "shutdown grace over with batches uncommitted; they stay "
                "unacknowledged and the broker will redeliver them",
                grace_s=self.settings.shutdown_grace_s,
            )

    async def _collect(
        self,
        client: aiomqtt.Client,
        intake: transport.Intake[Inbound],
        stop: asyncio.Event,
        batches: asyncio.Queue[Batch],
    ) -> None:
        loop = asyncio.get_running_loop()
        gone = transport.disconnected(client)
        stopping = asyncio.ensure_future(stop.wait())
        wait = self.settings.batch_wait_ms / 1000
        limit = self.settings.batch_max
        try:
            while True:
                if self._leaving is None:
                    await intake.wait(gone, stopping)
                elif not await self._more_to_take(intake, gone, stopping, batches):
                    stop.set()  # leaving, and the session has delivered everything
                    return
                if gone.done() and not stopping.done():
                    raise _lost(gone)
                if not len(intake):
                    return  # stopping, and nothing received
                deadline = loop.time() + wait
                messages = intake.take(limit)
                while len(messages) < limit and not stopping.done():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    # one wake-up at the deadline, not one per message
                    await asyncio.wait((gone, stopping), timeout=remaining)
                    if gone.done() and not stopping.done():
                        raise _lost(gone)
                    messages += intake.take(limit - len(messages))
                self._inflight += len(messages)
                await self._hand_over(messages, batches, stop)
                if stop.is_set():
                    return
        finally:
            stopping.cancel()

    async def _more_to_take(
        self,
        intake: transport.Intake[Inbound],
        gone: asyncio.Future[None],
        stopping: asyncio.Future[Literal[True]],
        batches: asyncio.Queue[Batch],
    ) -> bool:
        """Leaving: wait for a message; False once all is committed and none came for a while."""
        assert self._leaving is not None
        while True:
            quiet = asyncio.ensure_future(asyncio.sleep(self._leaving))
            try:
                await intake.wait(gone, stopping, quiet)
            finally:
                quiet.cancel()
            if len(intake) or gone.done() or stopping.done():
                return True
            if not self._inflight:  # nothing arrived, and everything taken is acknowledged
                await batches.join()
                return False

    async def _hand_over(
        self,
        messages: list[Inbound],
        batches: asyncio.Queue[Batch],
        stop: asyncio.Event,
    ) -> None:
        """Prepare ``messages`` and queue them for commit, in arrival order.

        Messages without the DUP flag go as one batch, at no extra cost. Redelivered ones
        are counted first (:func:`transaction.record_redelivered`, committed before any of them
        is decoded). Those that had been redelivered before, and still not stored, are
        suspects: each goes alone, only after everything before it is committed, and its
        delivery is counted just before, so that if it kills the worker again, it alone
        is blamed (:meth:`_isolate`). When stopping while the database is away, messages
        not yet queued stay unacknowledged for the broker to redeliver.
        """
        if not any(m.dup for m in messages):
            await batches.put(await self._prepare(messages))
            return
        keep = timedelta(seconds=self.settings.mqtt_session_expiry)
        redelivered = [m for m in messages if m.dup]
        suspects = await self._until_recorded(
            lambda conn: transaction.record_redelivered(conn, redelivered, keep), stop, set[bytes]()
        )
        if suspects is None:
            self._left_to_broker(len(messages))
            return
        run: list[Inbound] = []
        for i, message in enumerate(messages):
            if not (message.dup and message.digest() in suspects):
                run.append(message)
                continue
            if run:
                await batches.put(await self._prepare(run))
                run = []
            if not await self._isolate(message, batches, stop):
                self._left_to_broker(len(messages) - i)
                return
        if run:
            await batches.put(await self._prepare(run))

    async def _isolate(
        self, message: Inbound, batches: asyncio.Queue[Batch], stop: asyncio.Event
    ) -> bool:
        """Queue a suspect alone, or quarantined if it has been delivered too often.

        False when stopped first (it is then not queued).
        """
        committed = asyncio.ensure_future(batches.join())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((committed, stopped), return_when=asyncio.FIRST_COMPLETED)
        committed.cancel()
        stopped.cancel()
        if stop.is_set():
            return False
        deliveries = await self._until_recorded(
            lambda conn: transaction.count_delivery(conn, message), stop, 0
        )
        if deliveries is None:
            return False
        limit = self.settings.max_delivery_attempts
        if deliveries <= limit:
            await batches.put(await self._prepare([message]))
            return True
        log.warning(
            "message delivered repeatedly without being stored; quarantined "
            "undecoded as repeated_failure",
            deliveries=deliveries,
            limit=limit,
        )
        detail = (
            f"delivered {deliveries} times without being stored (limit {limit}); "
            "not decoded again: a worker failed or died on it each time (report it)"
        )
        batch = pipeline.set_aside(message, Rejection(Reason.REPEATED_FAILURE, detail))
        self.metrics.messages_received.labels(batch.formats[0]).inc()
        await batches.put(batch)
        return True

    async def _until_recorded(
        self, count: Callable[[Conn], Awaitable[T]], stop: asyncio.Event, refused: T
    ) -> T | None:
        """Run a delivery ``count``, waiting out database outages; None when stopped first.

        Processing a redelivered message uncounted could let it kill the worker forever,
        so this waits, as the batch's commit would. Should the database refuse the count
        itself (never expected: a fixed statement over a hash), the stream goes on
        without it (``refused``), logged.
        """
        backoff = Backoff(0.1, 1)
        while not stop.is_set():
            try:
                async with self.pool.acquire(timeout=5) as conn:
                    return await count(conn)
            except TRANSIENT_DB_ERRORS as exc:
                self.database_state(ok=False, why=exc)
                await sleep_unless(stop, backoff.next())
            except asyncpg.PostgresError as exc:
                log.error(
                    "delivery count refused by the database; going on without it",
                    sqlstate=exc.sqlstate,
                    error=type(exc).__name__,
                )
                return refused
        return None

    def _left_to_broker(self, n: int) -> None:
        """``n`` messages not queued (stopping): the broker keeps them, the gauge forgets them."""
        self._inflight -= n
        self.metrics.inflight.set(self._inflight)

    async def _prepare(self, messages: list[Inbound]) -> Batch:
        batch = self._prepare_now(messages)
        for fmt, n in collections.Counter(batch.formats).items():  # received, even if it waits
            self.metrics.messages_received.labels(fmt).inc(n)
        if batch.needs_registry_reload() and await self._refresh_registry(for_unknown=True):
            batch = self._prepare_now(messages)  # the registry changed: look again
        for gateway, refused in batch.refused_gateways().items():
            log.warning(
                "gateway sent readings it may not (misconfigured or compromised hub?)",
                gateway=gateway,
                **dict(sorted(refused.items())),
            )
        self.metrics.inflight.set(self._inflight)
        return batch

    def _prepare_now(self, messages: list[Inbound]) -> Batch:
        return pipeline.prepare(
            messages, self.cache, self.clock, self.settings.max_payload_bytes, datetime.now(UTC)
        )

    async def _refresh_registry(self, *, for_unknown: bool = False) -> bool:
        """Bring the cache up to date; True when its copy changed.

        ``for_unknown``: for a batch with devices the copy does not resolve, which waits
        for a check under way and is rate-limited (:meth:`RegistryCache.check_for_unknown`).
        """
        check = self.cache.check_for_unknown if for_unknown else self.cache.refresh
        try:
            changed = await check(functools.partial(self.pool.acquire, timeout=5))
        except TRANSIENT_DB_ERRORS as exc:  # keep the cache we have; commit will wait anyway
            log.warning("registry check failed, keeping the cached copy", error=type(exc).__name__)
            return False
        self._registry_metrics()
        return changed

    def _registry_metrics(self) -> None:
        """What the registry cache now holds, as gauges."""
        self.metrics.registry_revision.set(self.cache.revision or 0)
        plans = self.cache.plans
        self.metrics.care_plans_not_in_force.labels("older").set(len(plans.older))
        self.metrics.care_plans_not_in_force.labels("none").set(len(plans.unresolved))

    async def _keep_registry_fresh(self, stop: asyncio.Event) -> None:
        """Check the registry's revision on every NOTIFY, and every 30 s in case one was missed."""
        while not stop.is_set():
            changed = asyncio.ensure_future(self.cache.stale.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait((changed, stopped), timeout=30, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopped.cancel()
            if not stop.is_set():
                await self._refresh_registry()

    async def _listen_registry(self, stop: asyncio.Event) -> None:
        """Wake the refresher on ``NOTIFY homemonitor_registry``; reconnect when cut."""
        backoff = Backoff(1, 30)

        def changed(*_: object) -> None:
            self.cache.mark_stale()

        while not stop.is_set():
            closed = asyncio.Event()
            try:
                conn = await self.pool.acquire(timeout=5)
            except TRANSIENT_DB_ERRORS:
                await sleep_unless(stop, backoff.next())
                continue
            try:
                await conn.add_listener(NOTIFY_CHANNEL, changed)
                conn.add_termination_listener(lambda _c, cut=closed: cut.set())
                backoff.reset()
                self.cache.mark_stale()  # anything may have changed while unheard
                stopped = asyncio.ensure_future(stop.wait())
                cut = asyncio.ensure_future(closed.wait())
                await asyncio.wait((stopped, cut), return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                cut.cancel()
            except TRANSIENT_DB_ERRORS:
                await sleep_unless(stop, backoff.next())
            finally:
                with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                    await conn.remove_listener(NOTIFY_CHANNEL, changed)
                with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                    await self.pool.release(conn, timeout=5)

    # -- database side ---------------------------------------------------------------

    async def _commit_loop(self, batches: asyncio.Queue[Batch]) -> None:
        while True:
            batch = await batches.get()
            try:
                await self._commit_with_retry(batch)
                self._acknowledge(batch)
            finally:
                batches.task_done()

    async def _commit_with_retry(self, batch: Batch) -> None:
        backoff = Backoff(0.1, 1)
        while True:
            started = time.perf_counter()
            try:
                result = await self._commit_once(batch)
            except _HOLD_AND_RETRY as exc:
                self.database_state(ok=False, why=exc)
                await self.pool.expire_connections()  # the rest are as dead: replace them all
                self.metrics.commit_retries.inc()
                await asyncio.sleep(backoff.next())
                continue
            self.database_state(ok=True)
            self._record(batch, result, time.perf_counter() - started)
            return

    async def _commit_once(self, batch: Batch) -> CommitResult:
        """One attempt; transient database errors propagate for the caller to retry."""
        try:
            async with self.pool.acquire(timeout=5) as conn:
                try:
                    return await transaction.commit(conn, batch, self.cache.plans)
                except TRANSIENT_DB_ERRORS:
                    conn.terminate()  # never hand a half-broken connection back
                    raise
        except TRANSIENT_DB_ERRORS:
            raise
        except asyncpg.PostgresError as exc:
            log.error(
                "batch refused by the database; storing its messages one by one",
                sqlstate=exc.sqlstate,
                error=type(exc).__name__,
            )
            return await self._commit_one_by_one(batch)

    async def _commit_one_by_one(self, batch: Batch) -> CommitResult:
        """A batch the database refuses: each message alone (:meth:`_commit_alone`)."""
        total = CommitResult()
        parts = [batch.part_of(index) for index in range(len(batch.messages))]
        for index, part in enumerate(parts):
            parts[index], result = await self._commit_alone(part)
            total.add(result)
        batch.quarantined = [
            pipeline.Quarantined(q.rejection, message_index)
            for message_index, part in enumerate(parts)
            for q in part.quarantined
        ]
        return total

    async def _commit_alone(self, part: Batch) -> tuple[Batch, CommitResult]:
        """One message's part of a refused batch, committed so that the stream goes on.

        As it is; if the database refuses that, with its readings quarantined as
        ``storage_rejected``; if it refuses its quarantine rows too, set aside whole with
        :data:`LAST_RESORT` (fixed text, no device, the raw bytes, the topic made safe).
        Returns what was committed. A database that refuses even that refuses every
        write, not this message: :class:`StorageRefusedError` makes the caller hold the
        batch unacknowledged and retry, as in an outage. Acknowledging instead would lose
        this message and every one after it.
        """
        outcome = await self._try_commit(part)
        if isinstance(outcome, asyncpg.PostgresError) and part.candidates:
            detail = f"database refused the reading: {type(outcome).__name__} ({outcome.sqlstate})"
            part.quarantined += [
                pipeline.Quarantined(
                    Rejection(
                        Reason.STORAGE_REJECTED, detail, c.reading.index, c.reading.device_id
                    ),
                    0,
                )
                for c in part.candidates
            ]
            part.candidates = []
            outcome = await self._try_commit(part)
        if isinstance(outcome, asyncpg.PostgresError):
            log.error(
                "quarantine rows refused by the database; message kept whole instead",
                sqlstate=outcome.sqlstate,
                error=type(outcome).__name__,
            )
            part = pipeline.set_aside(part.messages[0], LAST_RESORT)
            outcome = await self._try_commit(part)
        if isinstance(outcome, asyncpg.PostgresError):
            log.error(
                "database refused a fixed quarantine row; holding the batch",
                sqlstate=outcome.sqlstate,
                error=type(outcome).__name__,
            )
            raise StorageRefusedError(outcome.sqlstate) from outcome
        return part, outcome

    async def _try_commit(self, batch: Batch) -> CommitResult | asyncpg.PostgresError:
        """Commit ``batch`` once: what it did, or the refusal; transient errors propagate."""
        try:
            async with self.pool.acquire(timeout=5) as conn:
                return await transaction.commit(conn, batch, self.cache.plans)
        except TRANSIENT_DB_ERRORS:
            raise
        except asyncpg.PostgresError as exc:
            return exc

    def _acknowledge(self, batch: Batch) -> None:
        """PUBACK every message of a committed batch, in arrival order."""
        client, intake = self._client, self._intake
        if client is not None and intake is not None:
            current = [m for m in batch.messages if m.generation == self._generation]
            transport.ack_all(client, [m.mid for m in current if m.qos == 1])
            for m in current:
                if m.qos == 2:  # only a misbehaving broker sends QoS 2 to a QoS 1 subscription
                    transport.ack(client, m.mid, 2)
            intake.settle(sum(1 for m in current if m.qos))
        self._inflight -= len(batch.messages)
        self.metrics.inflight.set(self._inflight)

    def _record(self, batch: Batch, result: CommitResult, seconds: float) -> None:
        metrics = self.metrics
        now_mono, now = time.monotonic(), datetime.now(UTC)
        metrics.batch_size.observe(len(batch.messages))
        metrics.commit_seconds.observe(seconds)
        metrics.readings_stored.inc(result.stored)
        metrics.readings_duplicate.inc(result.duplicates)
        for flag, n in result.flagged.items():
            metrics.readings_flagged.labels(flag).inc(n)
        for q in batch.quarantined:
            metrics.rejected(q.rejection)
        for severity, n in result.opened.items():
            metrics.alerts_opened.labels(severity).inc(n)
        if result.evaluated:
            metrics.plan_evaluations.labels("evaluated").inc(result.evaluated)
        if result.screened:
            metrics.plan_evaluations.labels("screened").inc(result.screened)
        for msg in batch.messages:
            metrics.receive_to_stored.observe(now_mono - msg.received_mono)
        for sent in batch.sent_at:
            metrics.publish_to_stored.observe(max(0.0, (now - sent).total_seconds()))
        self.totals.add(result)
        if batch.messages:  # in arrival order: the last arrived last
            self.contacts.note([m.topic for m in batch.messages], batch.messages[-1].received_at)
        if result.opened:
            log.info(
                "alerts opened",
                count=result.opened.total(),
                severities=sorted(result.opened.elements()),
            )
        if batch.quarantined:
            reasons = sorted({q.rejection.reason.value for q in batch.quarantined})
            log.info("quarantined", count=len(batch.quarantined), reasons=reasons)

    def database_state(self, *, ok: bool, why: BaseException | None = None) -> None:
        if ok != self.health.database_ok:
            if ok:
                log.info("database available")
            else:
                log.warning(
                    "database unavailable; holding batches unacknowledged, retrying",
                    error=type(why).__name__,
                )
        self.health.database_ok = ok
        self.metrics.database_up.set(1 if ok else 0)

    def _broker_state(
        self,
        *,
        connected: bool,
        why: BaseException | None = None,
        retry_in: float = 0.0,
        address: tuple[str, int] | None = None,
    ) -> None:
        broker = {} if address is None else {"broker": f"{address[0]}:{address[1]}"}
        if connected != self.health.broker_connected:
            log.info("broker connected" if connected else "broker disconnected", **broker)
        if why is not None:
            log.warning(
                "broker unusable; retrying",
                reason=self._explain(why),
                retry_in_s=round(retry_in, 1),
                **broker,
            )
        self.health.broker_connected = connected
        self.metrics.broker_connected.set(1 if connected else 0)
