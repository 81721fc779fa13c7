"""End to end: a gateway publishes, the worker stores, the care plan opens alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from homemonitor.api.auth import issue_token
from homemonitor.contract.protocol import PayloadFormat, readings_topic
from homemonitor.contract.readings import Quality, Quantity
from homemonitor.embedded import PrivateMosquitto
from homemonitor_devices.encoders import encode_ble, encode_native
from homemonitor_devices.measurement import HOME_TZ, DeviceKind, Measurement
from tests.conftest import RunningService, bp, publisher, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)


async def count(db: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await db.fetchval(sql, *args))


async def test_reading_becomes_one_row(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A reading published by a gateway becomes exactly one stored row, in canonical units."""
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), bp("cuff-1", 16.0, 10.0, NOW, unit="kPa"), qos=1)
    row = await wait_until(
        lambda: db.fetchrow("SELECT * FROM readings WHERE device_id = 'cuff-1'"),
        lambda r: r is not None,
    )
    assert ("p-1", "blood_pressure", 120.0, 75.0) == (
        row["patient_id"],
        row["metric"],
        round(row["systolic"], 1),
        round(row["diastolic"], 1),
    )
    assert 1 == await count(db, "SELECT count(*) FROM readings")


async def test_breach_opens_one_alert_then_updates_it(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A breach opens one alert for the patient's care team; a second breach updates it."""
    async with publisher(broker) as gw:
        await gw.publish(
            readings_topic("gw-1"), bp("cuff-1", 165, 90, NOW - timedelta(minutes=2)), qos=1
        )
        alert = await wait_until(
            lambda: db.fetchrow("SELECT * FROM alerts"), lambda r: r is not None
        )
        assert ("p-1", "vc-a", "systolic.high", "warning", 160.0, 1, 1) == (
            alert["patient_id"],
            alert["care_team_id"],
            alert["rule"],
            alert["severity"],
            alert["threshold"],
            alert["plan_version"],
            alert["breach_count"],
        )
        await gw.publish(
            readings_topic("gw-1"), bp("cuff-1", 185, 100, NOW - timedelta(minutes=1)), qos=1
        )
        alert = await wait_until(
            lambda: db.fetchrow("SELECT * FROM alerts"), lambda r: r["breach_count"] == 2
        )
    assert ("urgent", 185.0, 165.0, 180.0) == (
        alert["severity"],
        alert["worst_value"],
        alert["opening_value"],
        alert["threshold"],
    )
    assert 1 == await count(db, "SELECT count(*) FROM alerts")
    assert 1 == await service.counted("homemonitor_alerts_opened_total", {"severity": "warning"})


async def test_same_message_twice_is_stored_once(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A duplicate send of the same reading is stored once and counts once towards an alert."""
    payload = bp("cuff-1", 170, 95, NOW)
    async with publisher(broker) as gw:
        for _ in range(3):
            await gw.publish(readings_topic("gw-1"), payload, qos=1)
        await gw.publish(
            readings_topic("gw-1"), bp("cuff-1", 120, 80, NOW + timedelta(seconds=1)), qos=1
        )
    await wait_until(lambda: count(db, "SELECT count(*) FROM readings"), lambda n: n == 2)
    await wait_until(
        lambda: service.metric_async("homemonitor_readings_duplicate_total"), lambda n: n == 2
    )
    assert 1 == await count(db, "SELECT breach_count FROM alerts")


async def test_clock_skewed_reading_is_stored_flagged_and_not_alerted(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A reading from hours in the future is stored with a flag and opens no alert."""
    async with publisher(broker) as gw:
        await gw.publish(
            readings_topic("gw-1"), bp("cuff-1", 200, 110, NOW + timedelta(hours=3)), qos=1
        )
        await gw.publish(
            readings_topic("gw-1"), bp("cuff-1", 200, 110, NOW - timedelta(days=30)), qos=1
        )
    rows = await wait_until(
        lambda: db.fetch("SELECT flags FROM readings ORDER BY measured_at"), lambda r: len(r) == 2
    )
    assert [["clock_stale"], ["clock_future"]] == [r["flags"] for r in rows]
    assert 0 == await count(db, "SELECT count(*) FROM alerts")


async def test_readings_the_device_flagged_are_stored_and_returned_with_their_quality(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Cuff status bits (Bluetooth) and an oximeter's native quality list reach row and API."""
    at = NOW.astimezone(HOME_TZ) - timedelta(minutes=3)
    cuff = Measurement(
        "cuff-1",
        DeviceKind.BLOOD_PRESSURE_CUFF,
        at,
        at,
        {Quantity.SYSTOLIC: 128, Quantity.DIASTOLIC: 82, Quantity.HEART_RATE: 71},
        "gw-1-000001",
        quality=frozenset({Quality.BODY_MOVEMENT, Quality.CUFF_LOOSE}),
    )
    oximeter = Measurement(
        "oxi-2",
        DeviceKind.PULSE_OXIMETER,
        at,
        at,
        {Quantity.SPO2: 95},
        "gw-2-000001",
        quality=frozenset({Quality.LOW_PERFUSION}),
    )
    plain = Measurement(
        "cuff-1",
        DeviceKind.BLOOD_PRESSURE_CUFF,
        at + timedelta(minutes=1),
        at + timedelta(minutes=1),
        {Quantity.SYSTOLIC: 126, Quantity.DIASTOLIC: 80},
        "gw-1-000002",
    )
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1", PayloadFormat.BLE), encode_ble(cuff)[1], qos=1)
        await gw.publish(readings_topic("gw-1"), encode_native(plain)[1], qos=1)
    async with publisher(broker, client_id="gw-2") as gw:
        await gw.publish(readings_topic("gw-2"), encode_native(oximeter)[1], qos=1)
    rows = await wait_until(
        lambda: db.fetch(
            "SELECT source, quality, flags FROM readings ORDER BY device_id, measured_at"
        ),
        lambda r: len(r) == 3,
    )
    assert [
        ("ble", ["body_movement", "cuff_loose"], []),
        ("json", [], []),
        ("json", ["low_perfusion"], []),
    ] == [(r["source"], r["quality"], r["flags"]) for r in rows]
    async with httpx.AsyncClient(base_url=service.url) as http:
        team_a = {"Authorization": f"Bearer {await issue_token(db, 'cl-a1')}"}
        team_b = {"Authorization": f"Bearer {await issue_token(db, 'cl-b1')}"}
        p1 = await http.get("/api/v1/patients/p-1/readings", headers=team_a)
        p2 = await http.get("/api/v1/patients/p-2/readings", headers=team_b)
    assert [[], ["body_movement", "cuff_loose"]] == [r["quality"] for r in p1.json()]
    assert [["low_perfusion"]] == [r["quality"] for r in p2.json()]
