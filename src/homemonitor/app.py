"""The composition root: settings in, a running service out.

``serve`` opens the pool, migrates, and runs the worker, the HTTP server and the health
probe in one TaskGroup until ``stop`` is set (SIGTERM/SIGINT in ``homemonitor run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import asyncpg
import uvicorn

from homemonitor import database
from homemonitor.api import build_app, refresh_open_alerts
from homemonitor.errors import ConfigurationError
from homemonitor.ingest import TRANSIENT_DB_ERRORS, Backoff, Health, Worker, sleep_unless
from homemonitor.metrics import Metrics
from homemonitor.settings import Settings

log = logging.getLogger(__name__)


def require(settings: Settings) -> str:
    """The database DSN, or an error that says what to set."""
    if settings.database_url is None or settings.mqtt_host is None:
        msg = (
            "set HOMEMONITOR_DATABASE_URL and HOMEMONITOR_MQTT_HOST (see README), "
            "or run 'homemonitor demo' to start a private broker and database"
        )
        raise ConfigurationError(msg)
    return settings.database_url.get_secret_value()


async def open_and_migrate(
    dsn: str, settings: Settings, stop: asyncio.Event, health: Health, *, max_size: int = 6
) -> asyncpg.Pool | None:
    """Connect and migrate, waiting for the database to come up; None if stopped first."""
    backoff = Backoff(0.5, 15)
    while not stop.is_set():
        try:
            pool = await database.create_pool(dsn, max_size=max_size)
            async with pool.acquire() as conn:
                health.storage_mode = await database.migrate(conn, retention=settings.retention)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("database not reachable yet (%s); retrying", type(exc).__name__)
            await sleep_unless(stop, backoff.next())
            continue
        log.info("storage mode=%s", health.storage_mode)
        return pool
    return None


async def _probe(pool: asyncpg.Pool, worker: Worker, metrics: Metrics, stop: asyncio.Event) -> None:
    """Keep database readiness and the open-alerts gauge true while idle."""
    while not await sleep_unless(stop, 2.0):
        try:
            await asyncio.wait_for(refresh_open_alerts(pool, metrics), 2.0)
        except TRANSIENT_DB_ERRORS as exc:
            worker._database_state(ok=False, why=exc)
        else:
            if not worker.health.database_ok:
                worker._database_state(ok=True)


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
) -> Worker | None:
    """Run the whole service until ``stop`` is set; return the worker (for its totals)."""
    dsn = require(settings)
    metrics = metrics or Metrics()
    health = health or Health()
    pool = await open_and_migrate(dsn, settings, stop, health)
    if pool is None:
        return None
    worker = Worker(settings, pool, metrics, health)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker.run(stop), name="worker")
            tg.create_task(_probe(pool, worker, metrics, stop), name="probe")
            if http:
                config = uvicorn.Config(
                    build_app(pool, metrics, health),
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
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            await asyncio.wait_for(pool.close(), 5)
    return worker
