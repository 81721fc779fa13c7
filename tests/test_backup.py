"""Backup and restore as deploy/README.md documents it: base backup + WAL archive, PITR."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto, PrivatePostgres
from homemonitor.storage import database
from tests.conftest import REGISTRY, RunningService, numbered, publisher, settings_for, wait_until

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


async def _publish(broker: PrivateMosquitto, numbers: range) -> None:
    """Publish numbered readings at QoS 1: each returns after the broker's PUBACK."""
    async with publisher(broker) as gw:
        for seq in numbers:
            await gw.publish(readings_topic("gw-1"), numbered(seq, "scale-1", BASE), qos=1)


async def _stored(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT message_id FROM readings")
    return sorted(int(r["message_id"]) for r in rows)


def _as_postgres(pg: PrivatePostgres, *argv: str) -> None:
    done = pg.run_as_owner(*argv)
    assert 0 == done.returncode, done.stderr.decode(errors="replace")


@pytest.mark.slow
async def test_base_backup_and_wal_archive_restore_every_committed_reading(
    own_postgres: PrivatePostgres, broker: PrivateMosquitto, tmp_path: Path
) -> None:
    """After losing the data directory, base backup + archived WAL bring back all readings."""
    pg = own_postgres
    archive, base = pg.directory / "wal-archive", pg.directory / "base-backup"
    _as_postgres(pg, "mkdir", "-p", str(archive))
    admin = await asyncpg.connect(pg.dsn)
    try:  # the settings deploy/README.md gives (archive_timeout bounds what a loss can take)
        await admin.execute("ALTER SYSTEM SET archive_mode = on")
        await admin.execute(
            f"ALTER SYSTEM SET archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'"
        )
        await admin.execute("ALTER SYSTEM SET archive_timeout = '60s'")
    finally:
        await admin.close()
    pg.stop()
    pg.start()
    conn = await asyncpg.connect(pg.dsn)
    await database.migrate(conn)
    await registry.apply(conn, registry.parse(REGISTRY))
    service = RunningService(settings_for(pg.dsn, broker))
    await service.start()
    try:
        await _publish(broker, range(1, 101))
        await wait_until(lambda: _stored(conn), lambda s: len(s) == 100)
        _as_postgres(
            pg,
            str(pg.bin_dir / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"),
            *("-D", str(base), "--wal-method=none", "--checkpoint=fast"),
        )
        await _publish(broker, range(101, 201))  # after the base backup: only in the WAL
        await wait_until(lambda: _stored(conn), lambda s: len(s) == 200)
    finally:
        await service.stop()
    last = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
    await wait_until(
        lambda: conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver"),
        lambda archived: archived is not None and archived >= last,
    )
    await conn.close()

    pg.kill()  # the disaster: the server and its data directory are gone
    shutil.rmtree(pg.data_dir)
    _as_postgres(pg, "cp", "-a", str(base), str(pg.data_dir))
    _as_postgres(
        pg,
        "sh",
        "-c",
        f"echo \"restore_command = 'cp {archive}/%f %p'\" >> {pg.data_dir}/postgresql.auto.conf"
        f" && touch {pg.data_dir}/recovery.signal",
    )
    pg.start()
    restored = await asyncpg.connect(pg.dsn)
    try:
        await wait_until(lambda: restored.fetchval("SELECT pg_is_in_recovery()"), lambda r: not r)
        assert list(range(1, 201)) == await _stored(restored)
    finally:
        await restored.close()
