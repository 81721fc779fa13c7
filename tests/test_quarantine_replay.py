"""Quarantine you can work with: list, inspect, and replay once the cause is fixed."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import asyncpg

from homemonitor import registry
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import REGISTRY, RunningService, publisher, wait_until, weight
from tests.test_cli import run

MEASURED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _weight(device: str, kg: float, minutes: int) -> bytes:
    return weight(device, kg, MEASURED + timedelta(minutes=minutes))


async def test_a_reading_quarantined_before_its_binding_is_stored_once_by_replay(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection, dsn: str
) -> None:
    """spare-9 measured before it was bound: replayed after the binding, stored once, recorded."""
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), _weight("spare-9", 79.5, 0), qos=1)
        await gw.publish(readings_topic("gw-1"), _weight("scale-1", 790.0, 1), qos=1)
    rows = await wait_until(
        lambda: db.fetch("SELECT id, reason FROM quarantine ORDER BY id"), lambda r: len(r) == 2
    )
    assert ["unbound_device", "implausible"] == [r["reason"] for r in rows]
    unbound, implausible = rows[0]["id"], rows[1]["id"]
    env = {"HOMEMONITOR_DATABASE_URL": dsn}

    listed = run("quarantine", "list", "--reason", "unbound_device", "--json", env=env)
    assert 0 == listed.returncode, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (unbound, "gw-1", "spare-9", None) == (
        row["id"],
        row["gateway_id"],
        row["device_id"],
        row["replay_outcome"],
    )
    assert "payload" not in row and "79.5" not in listed.stdout  # no values in a listing

    fixed = copy.deepcopy(REGISTRY)  # the fix: spare-9 is p-3's scale since 2020
    fixed["patients"][2]["devices"].append({"device": "spare-9", "from": "2020-01-01T00:00:00Z"})
    await registry.apply(db, registry.parse(fixed))

    first = run("quarantine", "replay", "--reason", "unbound_device", env=env)
    assert 0 == first.returncode, first.stderr
    assert first.stdout.startswith(
        "replayed 1 messages (1 quarantine rows): 1 readings stored, 0 already stored, "
        "0 rows still refused"
    )
    again = run("quarantine", "replay", str(unbound), env=env)
    assert "0 readings stored, 1 already stored" in again.stdout
    stored = await db.fetch(
        "SELECT patient_id, body_weight FROM readings WHERE device_id = 'spare-9'"
    )
    assert [("p-3", 79.5)] == [tuple(r) for r in stored]
    record = await db.fetchrow(
        "SELECT reason, replay_outcome, replay_count, replayed_by LIKE 'cli:%' AS by_cli, "
        "replayed_at IS NOT NULL AS replayed FROM quarantine WHERE id = $1",
        unbound,
    )
    assert ("unbound_device", "stored", 2, True, True) == tuple(record)

    still = run("quarantine", "replay", str(implausible), env=env)
    assert "0 readings stored, 0 already stored, 1 rows still refused (implausible 1)" in (
        still.stdout
    )
    pending = run("quarantine", "list", "--pending", "--json", env=env)
    assert [(implausible, "implausible")] == [
        (r["id"], r["replay_outcome"]) for r in json.loads(pending.stdout)
    ]


async def test_show_prints_the_payload_only_when_asked(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection, dsn: str
) -> None:
    """`show` gives a row's facts; its raw bytes (measured values) only with --payload."""
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), _weight("scale-1", 790.0, 2), qos=1)
    row_id = await wait_until(lambda: db.fetchval("SELECT max(id) FROM quarantine"), bool)
    env = {"HOMEMONITOR_DATABASE_URL": dsn}
    plain = run("quarantine", "show", str(row_id), env=env)
    full = run("quarantine", "show", str(row_id), "--payload", env=env)
    missing = run("quarantine", "show", "999999", env=env)
    assert (0, 0) == (plain.returncode, full.returncode)
    # every field but the digest and the times (hex and clock digits may spell "790")
    shown = {
        key.strip(): value
        for key, _, value in (line.partition(":") for line in plain.stdout.splitlines())
        if key.strip() not in ("sha256", "received_at", "replayed_at")
    }
    assert "implausible" == shown["reason"].strip()
    assert not [v for v in shown.values() if "790" in v]
    assert '"value": 790.0' in full.stdout
    assert (2, "homemonitor: no quarantine row 999999\n") == (missing.returncode, missing.stderr)


def test_replay_without_a_filter_is_refused(dsn: str) -> None:
    """Replaying everything by accident is a mistake the command refuses, saying what to give."""
    done = run("quarantine", "replay", env={"HOMEMONITOR_DATABASE_URL": dsn})
    assert (
        2,
        "homemonitor: say what to replay: ids, or --reason, --gateway, --since or --until\n",
    ) == (done.returncode, done.stderr)
