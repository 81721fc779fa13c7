"""The composition root: settings in, a running service out.

``serve`` opens the pool, migrates, and runs the worker, the scheduler, the HTTP server
and the health probe in one TaskGroup until ``stop`` is set (SIGTERM/SIGINT in
``homemonitor run``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg
import uvicorn

from homemonitor import jobs, logs
from homemonitor.alerts import transitions
from homemonitor.api import build_app
from homemonitor.api.auth import WebConfig
from homemonitor.errors import ConfigurationError
from homemonitor.ingest.validation import ClockPolicy
from homemonitor.ingest.worker import Worker
from homemonitor.metrics import Metrics
from homemonitor.runtime import TRANSIENT_DB_ERRORS, Backoff, Health, sleep_unless
from homemonitor.scheduler import Clock, Scheduler
from homemonitor.settings import Settings
from homemonitor.storage import database

log = logs.get_logger(__name__)


def require(settings: Settings) -> str:
    """The database DSN, or an error that says what to set."""
    if settings.database_url is None or settings.mqtt_host is None:
        msg = (
            "set HOMEMONITOR_DATABASE_URL and HOMEMONITOR_MQTT_HOST (see README), "
            "or run 'homemonitor demo' to start a private broker and database"
        )
        raise ConfigurationError(msg)
    return settings.database_url.get_secret_value()


async def migrate_when_up(
    pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event, health: Health
) -> bool:
    """Migrate, waiting for the database to come up; False if stopped first."""
    backoff = Backoff(0.5, 15)
    while not stop.is_set():
        try:
            async with pool.acquire(timeout=10) as conn:
                health.storage_mode = await database.migrate(conn, retention=settings.retention)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("database not reachable yet; retrying", error=type(exc).__name__)
            await sleep_unless(stop, backoff.next())
            continue
        log.info("storage mode", mode=health.storage_mode)
        return True
    return False


async def refresh_open_alerts(db: asyncpg.Pool | database.Conn, metrics: Metrics) -> None:
    """Set the open-alerts gauge from the database, which every replica shares.

    Every replica therefore exports the same value: aggregate it with ``max``, not ``sum``
    (see :mod:`homemonitor.metrics`).
    """
    counts = await transitions.count_open(db)
    for severity in ("warning", "urgent"):
        metrics.alerts_open.labels(severity).set(counts.get(severity, 0))


#: How often the idle database is probed, and how long an answer may take.
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 2.0


class _Probe:
    """One database round trip at a time, given up on after a timeout without the server.

    ``asyncio.wait_for`` around a query does not return on time when the server hangs
    (stopped, or its host gone without a reset): it waits for the cancelled query, and
    cancelling needs the server's answer. So the query runs as a task that is only
    waited for; one still running at the timeout has its connection terminated (it is
    never handed back to the pool), and no new probe starts until it has ended.
    """

    def __init__(self, pool: asyncpg.Pool, metrics: Metrics) -> None:
        self.pool = pool
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._conn: database.Conn | None = None

    async def check(self) -> BaseException | None:
        """None if the database answered within ``PROBE_TIMEOUT_S``, else why not."""
        if self._task is not None and self._task.done():
            self._task.exception()  # a probe given up on earlier: its result is stale
            self._task = None
        if self._task is not None:  # still ending: do not start another beside it
            return TimeoutError("the previous probe has not ended")
        task = asyncio.create_task(self._query(), name="database-probe")
        self._task = task
        await asyncio.wait({task}, timeout=PROBE_TIMEOUT_S)
        if not task.done():
            self._terminate()
            return TimeoutError(f"no answer within {PROBE_TIMEOUT_S:g} s")
        self._task = None
        exc = task.exception()
        if exc is not None and not isinstance(exc, TRANSIENT_DB_ERRORS):
            raise exc
        return exc

    async def _query(self) -> None:
        async with self.pool.acquire(timeout=PROBE_TIMEOUT_S) as conn:
            self._conn = conn
            try:
                await refresh_open_alerts(conn, self.metrics)
            finally:
                self._conn = None

    def _terminate(self) -> None:
        if self._conn is not None:
            self._conn.terminate()  # the query fails at once; the pool replaces it

    async def close(self) -> None:
        """End a probe still running, without waiting for the server."""
        if self._task is not None:
            self._terminate()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *TRANSIENT_DB_ERRORS):
                await self._task
            self._task = None


async def _probe(pool: asyncpg.Pool, worker: Worker, metrics: Metrics, stop: asyncio.Event) -> None:
    """Keep database readiness and the open-alerts gauge true while idle."""
    probe = _Probe(pool, metrics)
    try:
        while not await sleep_unless(stop, PROBE_INTERVAL_S):
            failed = await probe.check()
            if failed is not None:
                metrics.alerts_open.clear()  # unknown now: no stale number for max() to pick
                worker.database_state(ok=False, why=failed)
            elif not worker.health.database_ok:
                worker.database_state(ok=True)
    finally:
        await probe.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``stop`` is the one shutdown signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    http: bool = True,
    metrics: Metrics | None = None,
    health: Health | None = None,
    clock: Clock | None = None,
) -> Worker | None:
    """Run the whole service until ``stop`` is set; return the worker (for its totals).

    ``/health``, ``/ready`` and ``/metrics`` answer from the start, so a database that is
    down at boot shows as not ready (and ``homemonitor_database_up 0``) instead of silence.
    ``clock`` is the scheduler's (the wall clock unless a test drives it).
    """
    dsn = require(settings)
    metrics = metrics or Metrics()
    health = health or Health()
    metrics.inflight_limit.set(settings.max_inflight)
    # min_size=0: creating the pool does not need the database to be up yet.
    # 8: the commit loop, the probe, the API's requests, and the scheduler (a running job
    # holds its claim's connection; the retention job borrows one more per chunk).
    pool = await database.create_pool(dsn, min_size=0, max_size=8)
    read_pool = None
    if settings.database_read_url is not None:  # a replica for the API's reads
        read_pool = await database.create_pool(
            settings.database_read_url.get_secret_value(),
            min_size=0,
            max_size=4,
            target_session_attrs="prefer-standby",
        )
    worker = Worker(settings, pool, metrics, health)
    cache = worker.cache
    scheduler = Scheduler(
        pool,
        metrics,
        recurring=jobs.service_jobs(
            settings, metrics, lambda: cache.plans if cache.revision is not None else None
        ),
        handlers=jobs.service_handlers(),
        clock=clock,
        grace=settings.shutdown_grace_s,
    )
    ran = False

    async def pipeline() -> None:
        nonlocal ran
        if await migrate_when_up(pool, settings, stop, health):
            ran = True
            async with asyncio.TaskGroup() as tg:
                tg.create_task(worker.run(stop), name="worker")
                tg.create_task(scheduler.run(stop), name="scheduler")
                tg.create_task(_probe(pool, worker, metrics, stop), name="probe")

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(pipeline(), name="pipeline")
            if http:
                config = uvicorn.Config(
                    build_app(
                        pool,
                        metrics,
                        health,
                        fhir_patient_system=settings.fhir_patient_system,
                        read_pool=read_pool,
                        clock=ClockPolicy.from_settings(settings),
                        max_payload_bytes=settings.max_payload_bytes,
                        web=WebConfig.from_settings(settings),
                    ),
                    host=settings.http_host,
                    port=settings.http_port,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                )
                server = _Server(config)
                tg.create_task(server.serve(), name="http")

                async def stop_http() -> None:
                    await stop.wait()
                    server.should_exit = True

                tg.create_task(stop_http(), name="http-stop")
    finally:
        for opened in (pool, read_pool):
            if opened is not None:
                with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                    await asyncio.wait_for(opened.close(), 5)
    return worker if ran else None
