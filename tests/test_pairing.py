"""A gateway speaks only for the devices paired with it: anything else is quarantined."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import REGISTRY, RunningService, publisher, settings_for, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)


def bp(device: str, systolic: float, at: datetime) -> bytes:
    reading = {
        "device_id": device,
        "metric": "blood_pressure",
        "measured_at": at.isoformat(),
        "systolic": systolic,
        "diastolic": 80,
    }
    return json.dumps({"v": 1, "reading": reading}).encode()


def spo2(value: float, at: datetime) -> bytes:
    reading = {
        "device_id": "oxi-2",
        "metric": "spo2",
        "measured_at": at.isoformat(),
        "value": value,
    }
    return json.dumps({"v": 1, "reading": reading}).encode()


def repaired(device: str, *spans: tuple[str, str, str | None]) -> dict[str, Any]:
    """The test registry with ``device`` paired only as ``spans`` say: (gateway, from, until)."""
    reg = copy.deepcopy(REGISTRY)
    for gateway in reg["gateways"]:
        gateway["devices"] = [p for p in gateway["devices"] if p["device"] != device]
    for gateway_id, start, until in spans:
        gateway = next((g for g in reg["gateways"] if g["id"] == gateway_id), None)
        if gateway is None:
            gateway = {"id": gateway_id, "devices": []}
            reg["gateways"].append(gateway)
        gateway["devices"].append({"device": device, "from": start, "until": until})
    return reg


#: The fields, beside the gateway and its counts by reason, of the worker's warning to ops.
REFUSED = {
    "event": "gateway sent readings it may not (misconfigured or compromised hub?)",
    "level": "warning",
    "logger": "homemonitor.ingest.worker",
}


def _refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The worker's warnings about gateways, as their fields (the timestamp left out)."""
    return [
        {key: value for key, value in r.msg.items() if key != "timestamp"}
        for r in caplog.records
        if r.name == "homemonitor.ingest.worker" and isinstance(r.msg, dict) and "gateway" in r.msg
    ]


async def _quarantine(db: asyncpg.Connection, n: int) -> list[asyncpg.Record]:
    return await wait_until(
        lambda: db.fetch(
            "SELECT reason, gateway_id, device_id, detail FROM quarantine ORDER BY received_at"
        ),
        lambda rows: len(rows) == n,
    )


async def test_another_homes_device_through_a_valid_gateway_is_quarantined(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """gw-2 posting as p-1's cuff stores nothing for p-1, opens no alert, and tells ops."""
    caplog.set_level(logging.WARNING, logger="homemonitor.ingest.worker")
    async with publisher(broker, "gw-2") as gw:
        await gw.publish(readings_topic("gw-2"), bp("cuff-1", 195, NOW), qos=1)  # urgent
        await gw.publish(readings_topic("gw-2"), spo2(96, NOW), qos=1)  # its own: stored
    rows = await wait_until(
        lambda: db.fetch("SELECT patient_id, device_id FROM readings"), lambda r: len(r) == 1
    )
    quarantined = await _quarantine(db, 1)
    assert [("p-2", "oxi-2")] == [(r["patient_id"], r["device_id"]) for r in rows]
    assert [("foreign_device", "gw-2", "cuff-1")] == [
        (q["reason"], q["gateway_id"], q["device_id"]) for q in quarantined
    ]
    assert "not paired with the publishing gateway" in quarantined[0]["detail"]
    assert 0 == await db.fetchval("SELECT count(*) FROM alerts")
    assert 1 == await service.counted(
        "homemonitor_readings_rejected_total", {"reason": "foreign_device"}
    )
    assert [{"gateway": "gw-2", "foreign_device": 1} | REFUSED] == _refusals(caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert all("cuff-1" not in w and "p-1" not in w for w in warnings)


async def test_a_gateway_not_in_the_registry_is_quarantined(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gateway id the registry does not know stores nothing, even for a real device."""
    caplog.set_level(logging.WARNING, logger="homemonitor.ingest.worker")
    async with publisher(broker, "gw-9") as gw:
        await gw.publish(readings_topic("gw-9"), bp("cuff-1", 120, NOW), qos=1)
    quarantined = await _quarantine(db, 1)
    assert [("unknown_gateway", "gw-9", "cuff-1")] == [
        (q["reason"], q["gateway_id"], q["device_id"]) for q in quarantined
    ]
    assert 0 == await db.fetchval("SELECT count(*) FROM readings")
    assert 1 == await service.counted(
        "homemonitor_readings_rejected_total", {"reason": "unknown_gateway"}
    )
    assert [{"gateway": "gw-9", "unknown_gateway": 1} | REFUSED] == _refusals(caplog)


async def test_a_new_hub_takes_over_a_homes_device_by_measured_time(
    dsn: str, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """After a handover each hub speaks for the device only for its own period of pairing."""
    handover = NOW - timedelta(days=1)
    await registry.apply(
        db,
        registry.parse(
            repaired(
                "cuff-1",
                ("gw-1", "2020-01-01T00:00:00Z", handover.isoformat()),
                ("gw-3", handover.isoformat(), None),
            )
        ),
    )
    svc = RunningService(settings_for(dsn, broker))
    await svc.start()
    try:
        async with publisher(broker, "gw-1") as old, publisher(broker, "gw-3") as new:
            hour = timedelta(hours=1)
            await old.publish(readings_topic("gw-1"), bp("cuff-1", 121, handover - hour), qos=1)
            await old.publish(readings_topic("gw-1"), bp("cuff-1", 122, handover + hour), qos=1)
            await new.publish(readings_topic("gw-3"), bp("cuff-1", 123, handover + 2 * hour), qos=1)
            await new.publish(readings_topic("gw-3"), bp("cuff-1", 124, handover - 2 * hour), qos=1)
        stored = await wait_until(
            lambda: db.fetch(
                "SELECT patient_id, gateway_id, systolic FROM readings ORDER BY systolic"
            ),
            lambda rows: len(rows) == 2,
        )
        quarantined = await _quarantine(db, 2)
    finally:
        await svc.stop()
    assert [("p-1", "gw-1", 121.0), ("p-1", "gw-3", 123.0)] == [
        (r["patient_id"], r["gateway_id"], r["systolic"]) for r in stored
    ]
    assert {("foreign_device", "gw-1"), ("foreign_device", "gw-3")} == {
        (q["reason"], q["gateway_id"]) for q in quarantined
    }


@pytest.mark.parametrize(
    ("gateway", "first_reason"),
    [("gw-3", "unknown_gateway"), ("gw-2", "foreign_device")],
    ids=["new hub registered", "device moved to another hub"],
)
async def test_a_pairing_applied_while_running_is_picked_up(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    gateway: str,
    first_reason: str,
) -> None:
    """A reading refused for its pairing is accepted once the pairing is applied, no restart."""
    async with publisher(broker, gateway) as gw:
        await gw.publish(readings_topic(gateway), bp("cuff-3", 131, NOW), qos=1)
        quarantined = await _quarantine(db, 1)
        moved = repaired("cuff-3", (gateway, "2020-01-01T00:00:00Z", None))
        await registry.apply(db, registry.parse(moved))
        await gw.publish(readings_topic(gateway), bp("cuff-3", 132, NOW), qos=1)
    row = await wait_until(
        lambda: db.fetchrow("SELECT patient_id, gateway_id, systolic FROM readings"),
        lambda r: r is not None,
    )
    assert [first_reason] == [q["reason"] for q in quarantined]
    assert ("p-3", gateway, 132.0) == (row["patient_id"], row["gateway_id"], row["systolic"])
