"""Bad input never blocks the stream: it lands in quarantine with its reason and raw bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor.contract.protocol import TOPIC_PREFIX, readings_topic
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import RunningService, publisher, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)


def reading(**fields: object) -> bytes:
    base = {
        "device_id": "cuff-1",
        "metric": "blood_pressure",
        "measured_at": NOW.isoformat(),
        "systolic": 120,
        "diastolic": 80,
    }
    return json.dumps({"v": 1, "reading": {**base, **fields}}).encode()


BAD_INPUTS = [
    ("garbage", readings_topic("gw-1"), b"\x00\xffnot json at all", "malformed"),
    ("truncated", readings_topic("gw-1"), reading()[:40], "malformed"),
    ("oversized", readings_topic("gw-1"), b"{" + b" " * 300_000 + b"}", "oversized"),
    (
        "version",
        readings_topic("gw-1"),
        json.dumps({"v": 9, "readings": []}).encode(),
        "unsupported_version",
    ),
    ("metric", readings_topic("gw-1"), reading(metric="temperature"), "unknown_metric"),
    ("unit", readings_topic("gw-1"), reading(unit="psi"), "unknown_unit"),
    ("no zone", readings_topic("gw-1"), reading(measured_at="2026-11-22T07:00:00"), "no_timestamp"),
    (
        "spo2 120",
        readings_topic("gw-1"),
        reading(metric="spo2", value=120, systolic=None, diastolic=None),
        "malformed",
    ),
    (
        "systolic below diastolic",
        readings_topic("gw-1"),
        reading(systolic=70, diastolic=90),
        "implausible",
    ),
    ("unknown device", readings_topic("gw-1"), reading(device_id="nobody-42"), "unknown_device"),
    (
        "unbound device",
        readings_topic("gw-1"),
        reading(device_id="spare-9", metric="body_weight", value=80, systolic=None, diastolic=None),
        "malformed",
    ),
    ("bad topic", f"{TOPIC_PREFIX}/gw-1/readings/xml", reading(), "unknown_topic"),
]


def _clean(payload: bytes) -> bytes:
    """Drop null fields (the table above overrides blood-pressure fields with None)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(data, dict) and isinstance(data.get("reading"), dict):
        data["reading"] = {k: v for k, v in data["reading"].items() if v is not None}
        return json.dumps(data).encode()
    return payload


@pytest.mark.parametrize(
    ("name", "topic", "payload", "reason"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_is_quarantined_and_stream_continues(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    name: str,
    topic: str,
    payload: bytes,
    reason: str,
) -> None:
    """Bad input is quarantined with its reason and raw payload; the next good one is stored."""
    payload = _clean(payload)
    expected = {"spo2 120": "implausible", "unbound device": "unbound_device"}.get(name, reason)
    async with publisher(broker) as gw:
        await gw.publish(topic, payload, qos=1)
        await gw.publish(
            readings_topic("gw-1"),
            reading(measured_at=(NOW + timedelta(seconds=1)).isoformat()),
            qos=1,
        )
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
    row = await wait_until(lambda: db.fetchrow("SELECT * FROM quarantine"), lambda r: r is not None)
    assert (expected, payload) == (row["reason"], bytes(row["payload"]))
    assert row["detail"]
    counted = "messages" if row["item_index"] == -1 else "readings"  # -1: the whole message

    async def rejected() -> dict[str, float]:  # counted just after the batch's commit
        return {
            kind: n
            for kind in ("messages", "readings")
            if (n := service.metric(f"homemonitor_{kind}_rejected_total", {"reason": expected}))
        }

    assert {counted: 1} == await wait_until(rejected, bool, within=5)


async def test_batch_with_one_bad_reading_keeps_the_good_ones(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """In a batch payload, a bad reading is quarantined by index and the others are stored."""
    items = [
        {
            "device_id": "scale-1",
            "metric": "body_weight",
            "unit": "lb",
            "value": 176.4,
            "measured_at": (NOW - timedelta(minutes=i)).isoformat(),
        }
        for i in range(3)
    ]
    items[1]["value"] = 0
    async with publisher(broker) as gw:
        await gw.publish(
            readings_topic("gw-1"), json.dumps({"v": 1, "readings": items}).encode(), qos=1
        )
    rows = await wait_until(
        lambda: db.fetch("SELECT body_weight FROM readings"), lambda r: len(r) == 2
    )
    assert [80.01, 80.01] == [round(r["body_weight"], 2) for r in rows]
    q = await wait_until(lambda: db.fetchrow("SELECT * FROM quarantine"), lambda r: r is not None)
    assert ("implausible", 1, "scale-1") == (q["reason"], q["item_index"], q["device_id"])


async def test_reading_the_database_refuses_is_quarantined_and_the_rest_stored(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A message the database refuses (poison) is quarantined alone; its batch-mates are stored."""
    await db.execute(
        "ALTER TABLE readings ADD CONSTRAINT refuse_cuff_3 CHECK (device_id <> 'cuff-3')"
    )
    poison = reading(device_id="cuff-3")
    good = [reading(measured_at=(NOW + timedelta(seconds=s)).isoformat()) for s in (1, 2)]
    async with publisher(broker) as gw:
        for payload in (good[0], poison, good[1]):
            await gw.publish(readings_topic("gw-1"), payload, qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 2)
    q = await wait_until(lambda: db.fetchrow("SELECT * FROM quarantine"), lambda r: r is not None)
    assert ("storage_rejected", poison) == (q["reason"], bytes(q["payload"]))
    assert "CheckViolationError" in q["detail"]
    assert 1 == await service.counted(
        "homemonitor_readings_rejected_total", {"reason": "storage_rejected"}
    )


async def test_crafted_payloads_cannot_stop_the_worker(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Deeply nested JSON on every format's topic is quarantined; the worker keeps storing."""
    nested = b"[" * 100_000 + b"]" * 100_000  # under the size cap, far past recursion limits
    topics = [
        readings_topic("gw-1"),
        f"{readings_topic('gw-1')}/fhir",
        f"{readings_topic('gw-1')}/ble",
    ]
    async with publisher(broker) as gw:
        for topic in topics:
            await gw.publish(topic, nested, qos=1)
        await gw.publish(readings_topic("gw-1"), reading(), qos=1)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
    reasons = await wait_until(
        lambda: db.fetch("SELECT reason FROM quarantine"), lambda rows: len(rows) == 3
    )
    assert ["malformed"] * 3 == [r["reason"] for r in reasons]


def _observation(effective: str) -> bytes:
    """A FHIR blood-pressure Observation of Device/cuff-1, 120/80 mmHg, at ``effective``."""

    def component(code: str, value: float) -> dict[str, object]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {
                "value": value,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }

    return json.dumps(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [component("8480-6", 120), component("8462-4", 80)],
            "effectiveDateTime": effective,
            "device": {"reference": "Device/cuff-1"},
        }
    ).encode()


def _ble(received_at: object) -> bytes:
    """A Bluetooth Heart Rate Measurement (72 /min) of cuff-1, received at ``received_at``."""
    item = {"device_id": "cuff-1", "characteristic": "2A37", "hex": "0048"}
    return json.dumps({"v": 1, "readings": [item | {"received_at": received_at}]}).encode()


async def test_what_breaks_the_contract_is_quarantined_in_every_format(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Coerced types, Unix times, padded ids, 1 001 readings, year 10000 in UTC and readings
    beyond the retention are each quarantined with their reason; the good one after is stored."""
    year_10000 = "9999-12-31T23:59:59-01:00"
    beyond = (NOW - timedelta(days=6 * 365)).isoformat()
    one = json.loads(reading())["reading"]
    native, fhir, ble = (
        readings_topic("gw-1"),
        f"{readings_topic('gw-1')}/fhir",
        f"{readings_topic('gw-1')}/ble",
    )
    bad = [
        (native, reading(systolic="120"), "malformed"),
        (native, reading(systolic=True), "malformed"),
        (native, json.dumps({"v": True, "reading": one}).encode(), "unsupported_version"),
        (native, reading(measured_at=int(NOW.timestamp())), "no_timestamp"),
        (native, reading(device_id=" cuff-1"), "malformed"),
        (native, reading(device_id="cuff-1\u00a0"), "malformed"),
        (native, json.dumps({"v": 1, "readings": [one] * 1001}).encode(), "malformed"),
        (native, b'{"v": 1, "reading": null}', "malformed"),
        (native, reading(measured_at=year_10000), "no_timestamp"),
        (native, reading(measured_at=beyond), "beyond_retention"),
        (fhir, _observation(year_10000), "no_timestamp"),
        (fhir, _observation(beyond), "beyond_retention"),
        (ble, _ble(str(int(NOW.timestamp()))), "no_timestamp"),
        (ble, _ble(year_10000), "no_timestamp"),
        (ble, _ble(beyond), "beyond_retention"),
    ]
    async with publisher(broker) as gw:
        for topic, payload, _ in bad:
            await gw.publish(topic, payload, qos=1)
        await gw.publish(
            native, reading(measured_at=(NOW + timedelta(seconds=1)).isoformat()), qos=1
        )
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM readings"), lambda n: n == 1)
    rows = await wait_until(
        lambda: db.fetch("SELECT reason, payload FROM quarantine"),
        lambda r: len(r) >= len(bad),
    )
    assert sorted((reason, payload) for _, payload, reason in bad) == sorted(
        (r["reason"], bytes(r["payload"])) for r in rows
    )
    expected = {"malformed": 6, "unsupported_version": 1, "no_timestamp": 5, "beyond_retention": 3}

    async def counted() -> dict[str, float]:
        return {
            r: sum(
                service.metric(f"homemonitor_{kind}_rejected_total", {"reason": r})
                for kind in ("messages", "readings")
            )
            for r in expected
        }

    assert expected == await wait_until(counted, lambda c: c == expected)
    assert NOW + timedelta(seconds=1) == await db.fetchval("SELECT measured_at FROM readings")
