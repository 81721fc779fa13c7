"""The database: connection pool, numbered migrations, and which storage mode is active.

Migrations are the ``migrations/NNNN_*.sql`` files of this package, applied in order,
each in its own transaction, recorded in ``schema_migrations``. When the ``timescaledb``
extension is available, ``migrations/timescaledb/`` follows; otherwise the same schema
runs on plain PostgreSQL (>= 15). An advisory lock keeps concurrent starts from racing.
"""

from __future__ import annotations

import enum
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.connect_utils import SessionAttribute
from asyncpg.pool import PoolConnectionProxy

from homemonitor import logs

if TYPE_CHECKING:
    #: A connection, whether opened alone or borrowed from a pool.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:  # asyncpg's classes are not generic at run time
    Conn = asyncpg.Connection | PoolConnectionProxy

log = logs.get_logger(__name__)

_MIGRATION_LOCK = 0x686D6F6E  # "hmon"


class StorageMode(enum.StrEnum):
    """Which storage features are active."""

    POSTGRESQL = "postgresql"
    TIMESCALEDB = "timescaledb"
    TIMESCALEDB_APACHE = "timescaledb-apache"  # hypertable only: no compression or policies


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    target_session_attrs: str = "read-write",
) -> asyncpg.Pool[asyncpg.Record]:
    """A pool whose connections identify themselves in ``pg_stat_activity``.

    Each new connection tries the DSN's hosts in order and keeps the first that matches
    ``target_session_attrs`` (libpq's meaning; the DSN's own value, when it names one, wins).
    ``read-write``, the default, is what every writer needs: with several hosts it finds
    the primary; with one it refuses a server that is in recovery or read-only at connect
    time, so a demoted primary (or a DNS name still pointing at it) is a failed connect,
    retried, rather than a connection whose every write fails. PostgreSQL 14 and later
    report both facts when a session starts, so the check costs no query.
    """
    named = parse_qs(urlsplit(dsn).query).get("target_session_attrs")
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        server_settings={"application_name": "homemonitor"},
        target_session_attrs=SessionAttribute(named[-1] if named else target_session_attrs),
    )
    assert pool is not None  # create_pool returns the pool once initialised
    return pool


def _scripts(folder: str) -> list[tuple[str, str]]:
    base = resources.files("homemonitor.storage") / "migrations"
    if folder:
        base = base / folder
    found = [
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in base.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


async def migrate(conn: Conn, *, retention: str = "5 years") -> StorageMode:
    """Apply every migration not yet applied; return the storage mode now active."""
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        mode = await _detect_mode(conn)
        plan = [("", name, sql) for name, sql in _scripts("")]
        if mode is not StorageMode.POSTGRESQL:
            tsdb = _scripts("timescaledb")
            if mode is StorageMode.TIMESCALEDB_APACHE:
                tsdb = [s for s in tsdb if "policies" not in s[0]]
                log.warning(
                    "timescaledb runs under the Apache licence: hypertable only, no "
                    "compression, retention or continuous aggregate"
                )
            plan += [("timescaledb/", name, sql) for name, sql in tsdb]
        for folder, name, sql in plan:
            key = folder + name
            if key in applied:
                continue
            async with conn.transaction():
                await conn.execute(sql.replace("{retention}", retention))
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", key)
            log.info("migration applied", migration=key)
        return mode
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def _detect_mode(conn: Conn) -> StorageMode:
    """Which storage mode this server supports, without ever losing ``conn``.

    TimescaleDB must be in ``shared_preload_libraries``: when its files are installed but
    not preloaded, ``CREATE EXTENSION`` ends the session with a FATAL error, so it is only
    tried when the library is preloaded.
    """
    available = await conn.fetchval(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if not available:
        return StorageMode.POSTGRESQL
    preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    if not _preloads_timescaledb(preload or ""):
        log.warning(
            "timescaledb is installed but not in shared_preload_libraries; running on plain "
            "PostgreSQL. To use it, add 'timescaledb' to shared_preload_libraries and restart "
            "the server; otherwise nothing needs doing"
        )
        return StorageMode.POSTGRESQL
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as exc:  # e.g. no privilege to create it
        log.warning(
            "timescaledb is preloaded but cannot be created; plain PostgreSQL",
            sqlstate=exc.sqlstate,
            reason=str(exc),
        )
        return StorageMode.POSTGRESQL
    licence = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return StorageMode.TIMESCALEDB_APACHE if licence == "apache" else StorageMode.TIMESCALEDB


def _preloads_timescaledb(setting: str) -> bool:
    """Whether a ``shared_preload_libraries`` value loads TimescaleDB.

    >>> _preloads_timescaledb("pg_stat_statements, 'timescaledb'")
    True
    >>> _preloads_timescaledb("pg_stat_statements")
    False
    """
    names = (part.strip().strip("'\"") for part in setting.split(","))
    return any(name == "timescaledb" or name.startswith("timescaledb-") for name in names)
