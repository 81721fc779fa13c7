"""The notifier: delivers the outbox at least once, retries with backoff, dead-letters.

It runs in every service process beside the scheduler (:func:`homemonitor.app.serve`).
Each pass claims up to ``batch`` due rows (:func:`homemonitor.notify.outbox.claim`:
``FOR UPDATE SKIP LOCKED``, so processes never deliver the same row at once), delivers
them concurrently, each within ``HOMEMONITOR_NOTIFY_TIMEOUT_S``, and records every outcome
in the claiming transaction: delivered; failed, tried again after the scheduler's capped
exponential :class:`~homemonitor.scheduler.Retry` (``HOMEMONITOR_NOTIFY_RETRY_FIRST_S``
doubled per failure, at most ``..._CAP_S``); dead after ``HOMEMONITOR_NOTIFY_MAX_ATTEMPTS``
(a dead letter: ``homemonitor notifications dead-letters list|replay``); or skipped when
there is nobody to send it to. Each outcome is a ``notified`` event of the alert.

A process killed mid-delivery never records the outcome: its transaction rolls back, the
rows' locks go with its connection, and the next pass (of any process) delivers them
again with the same idempotency key. Time comes from the scheduler's clock, so tests
drive retries with a :class:`~homemonitor.scheduler.ManualClock`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta

import asyncpg
import structlog
from prometheus_client import Counter as PromCounter

from homemonitor import logs
from homemonitor.metrics import Metrics
from homemonitor.notify import outbox
from homemonitor.notify.channels import Channel, DeliveryError, Email, Mqtt, NothingToSend, Webhook
from homemonitor.notify.feed import AlertFeed
from homemonitor.notify.message import Notification
from homemonitor.notify.outbox import Outcome
from homemonitor.runtime import TRANSIENT_DB_ERRORS, Backoff, sleep_unless
from homemonitor.scheduler import Clock, Retry, SystemClock, describe, first_of
from homemonitor.settings import Settings

log = logs.get_logger(__name__)

#: Rows one pass claims at most (delivered concurrently, recorded in one transaction).
BATCH = 16
#: After a wake-up, how long the notifier lets more changes commit before it claims: a
#: busy worker commits alert changes many times a second, and one pass for all of them
#: costs the process far less than one each (the bench's outbox phase), for 0.1 s more
#: latency of a push.
LINGER_S = 0.1


def public_url(settings: Settings) -> str:
    """Where notifications link to: ``HOMEMONITOR_PUBLIC_URL``, else the API's own address."""
    return settings.public_url or f"http://{settings.http_host}:{settings.http_port}"


class Notifier:
    """Delivers due outbox rows until stopped; see the module docstring.

    ``channels`` replaces the real ones by name (``webhook``, ``email``, ``mqtt``,
    ``feedback``); ``max_idle`` bounds a sleep without a wake-up from the feed;
    ``linger_s`` (:data:`LINGER_S`) is how long it gathers changes after a wake-up.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        settings: Settings,
        feed: AlertFeed,
        *,
        clock: Clock | None = None,
        channels: Mapping[str, Channel] | None = None,
        batch: int = BATCH,
        max_idle: timedelta = timedelta(seconds=5),
        linger_s: float = LINGER_S,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.settings = settings
        self.feed = feed
        self.clock: Clock = clock or SystemClock()
        self.batch = batch
        self.max_idle = max_idle
        self.linger_s = linger_s
        self.retry = Retry(
            first=timedelta(seconds=settings.notify_retry_first_s),
            cap=timedelta(seconds=settings.notify_retry_cap_s),
        )
        self.channels: dict[str, Channel] = dict(channels or {})

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; a delivery under way finishes (bounded by its timeout)."""
        url = public_url(self.settings)
        mqtt = Mqtt(self.settings, url)
        webhook = Webhook(url, self.settings.notify_timeout_s)  # its connections kept alive
        real: dict[str, Channel] = {
            "webhook": webhook,
            "email": Email(self.settings, url),
            "mqtt": mqtt,
            "feedback": mqtt,
        }
        self.channels = real | self.channels
        try:
            await self._loop(stop)
        finally:
            await mqtt.close()
            await webhook.close()
        log.info("notifier stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.5, 15)
        while not stop.is_set():
            seen = self.feed.generation
            try:
                while not stop.is_set() and await self.deliver_due():
                    pass
                wake_at = await self._idle_until()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("notifier cannot reach the database", error=type(exc).__name__)
                await sleep_unless(stop, backoff.next())
                continue
            backoff.reset()
            await self._sleep(stop, seen, wake_at)
            await sleep_unless(stop, self.linger_s)

    async def deliver_due(self) -> int:
        """Claim, deliver and record one batch of due rows; how many were claimed."""
        async with self.pool.acquire(timeout=10) as conn, conn.transaction():
            now = self.clock.now()
            claimed = await outbox.claim(conn, now, self.batch)
            if not claimed:
                return 0
            outcomes = await asyncio.gather(*(self._deliver(n, now) for n in claimed))
            await outbox.record(conn, outcomes)
        counted = Counter((o.notification.channel, o.outcome) for o in outcomes)
        for (channel, outcome), n in counted.items():
            self._counter(outcome).labels(channel).inc(n)
            if outcome in ("failed", "dead"):
                self.metrics.notifications_failed.labels(channel).inc(n)
        return len(claimed)

    def _counter(self, outcome: str) -> PromCounter:
        m = self.metrics
        return {
            "delivered": m.notifications_sent,
            "failed": m.notifications_retried,
            "dead": m.notifications_dead,
            "skipped": m.notifications_skipped,
        }[outcome]

    async def _deliver(self, n: Notification, now: datetime) -> Outcome:
        bound = log.bind(outbox_id=n.outbox_id, channel=n.channel, attempt=n.attempt)
        if n.config is None:
            return Outcome(n, "skipped", "channel_removed")
        try:
            async with asyncio.timeout(self.settings.notify_timeout_s):
                await self.channels[n.channel].send(n)
        except NothingToSend as exc:
            bound.info("notification skipped", reason=exc.reason)
            return Outcome(n, "skipped", exc.reason)
        except DeliveryError as exc:
            return self._failed(n, now, exc.reason, bound)
        except TimeoutError:
            return self._failed(n, now, "timeout", bound)
        except Exception as exc:  # noqa: BLE001 - one channel's bug must not stop the others
            return self._failed(n, now, describe(exc), bound)
        bound.debug("notification delivered")
        return Outcome(n, "delivered")

    def _failed(
        self, n: Notification, now: datetime, reason: str, bound: structlog.stdlib.BoundLogger
    ) -> Outcome:
        if n.attempt >= self.settings.notify_max_attempts:
            bound.warning("notification dead-lettered", reason=reason)
            return Outcome(n, "dead", reason)
        retry_at = now + self.retry.after(n.attempt)
        bound.warning("notification failed", reason=reason, retry_at=retry_at.isoformat())
        return Outcome(n, "failed", reason, retry_at)

    async def _idle_until(self) -> datetime:
        """Update the backlog gauges; the next retry time, at most ``max_idle`` away."""
        async with self.pool.acquire(timeout=10) as conn:
            waiting = await outbox.backlog(conn)
        due = waiting.next_due
        self.metrics.outbox_pending.set(waiting.pending)
        self.metrics.outbox_dead.set(waiting.dead)
        self.metrics.outbox_oldest.set(waiting.oldest_s or 0.0)
        wake_at = self.clock.now() + self.max_idle
        return wake_at if due is None else min(wake_at, due)

    async def _sleep(self, stop: asyncio.Event, seen: int, until: datetime) -> None:
        await first_of(
            self.clock.sleep_until(until),
            self.feed.changed(seen, self.max_idle.total_seconds()),
            stop.wait(),
        )
