"""One poison message never stops ingestion: text made safe, a fallback that cannot fail."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from homemonitor.contract.protocol import PayloadFormat, readings_topic
from homemonitor.contract.readings import DETAIL_LIMIT, ID_LIMIT, safe_text
from homemonitor.embedded import PrivateMosquitto
from homemonitor.ingest import pipeline
from homemonitor.ingest.validation import ClockPolicy
from homemonitor.ingest.worker import LAST_RESORT
from homemonitor.registry import RegistryCache
from homemonitor.storage import transaction
from tests.conftest import RunningService, publisher, wait_until
from tests.test_nothing_lost import WorkerProcess

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
NUL, SURROGATE = "\x00", "\ud800"
CLOCK = ClockPolicy()


def native(**fields: Any) -> dict[str, Any]:
    """A valid native blood-pressure envelope of cuff-1, with ``fields`` changed."""
    reading = {
        "device_id": "cuff-1",
        "metric": "blood_pressure",
        "measured_at": NOW.isoformat(),
        "systolic": 120,
        "diastolic": 80,
        "message_id": "m-1",
        **fields,
    }
    return {"v": 1, "reading": reading}


def fhir(code: str = "85354-9", **fields: Any) -> dict[str, Any]:
    """A valid FHIR blood-pressure Observation of cuff-1 (LOINC panel ``code``)."""

    def component(loinc: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "valueQuantity": {
                "value": value,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }

    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": NOW.isoformat(),
        "device": {"reference": "Device/cuff-1"},
        "component": [component("8480-6", 120), component("8462-4", 80)],
        **fields,
    }


def ble(**fields: Any) -> dict[str, Any]:
    """A valid raw Bluetooth blood-pressure envelope of cuff-1 (no time stamp: received_at)."""
    value = bytes.fromhex("00 7800 5000 5d00")  # flags 0 (mmHg), SFLOATs 120, 80, 93
    item = {
        "device_id": "cuff-1",
        "characteristic": "2A35",
        "hex": value.hex(),
        "received_at": NOW.isoformat(),
        "message_id": "b-1",
        **fields,
    }
    return {"v": 1, "readings": [item]}


TOPICS = {
    PayloadFormat.NATIVE: readings_topic("gw-1"),
    PayloadFormat.FHIR: readings_topic("gw-1", PayloadFormat.FHIR),
    PayloadFormat.BLE: readings_topic("gw-1", PayloadFormat.BLE),
}


def good(seq: int) -> bytes:
    """A valid reading of cuff-3 (a device no poison names), unique per ``seq``."""
    reading = {
        "device_id": "cuff-3",
        "metric": "blood_pressure",
        "measured_at": (NOW + timedelta(seconds=seq)).isoformat(),
        "systolic": 121,
        "diastolic": 81,
        "message_id": f"good-{seq}",
    }
    return json.dumps({"v": 1, "reading": reading}).encode()


def digest(topic: str, payload: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


async def assert_survives(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    topic: str,
    bad: bytes,
) -> list[asyncpg.Record]:
    """Publish ``bad`` then a good reading: the good one is stored, ``bad`` leaves a trace.

    Returns the quarantine rows of ``bad``.
    """
    async with publisher(broker) as gw:
        await gw.publish(topic, bad, qos=1)
        await gw.publish(readings_topic("gw-1"), good(1), qos=1)
    await wait_until(
        lambda: db.fetchval("SELECT count(*) FROM readings WHERE message_id = 'good-1'"),
        lambda n: n == 1 or (service.task is not None and service.task.done()),
    )
    assert service.task is not None
    assert not service.task.done(), "the worker stopped"
    return await db.fetch(
        "SELECT * FROM quarantine WHERE payload_sha256 = $1 ORDER BY item_index",
        digest(topic, bad),
    )


#: (position, format, payload as a JSON value) where a NUL or a surrogate sits in a string
#: the service copies into a quarantine row.
def poisoned(char: str) -> list[tuple[str, PayloadFormat, object]]:
    return [
        ("native device_id", PayloadFormat.NATIVE, native(device_id=f"cuff{char}1")),
        ("native metric", PayloadFormat.NATIVE, native(metric=f"blood{char}pressure")),
        ("native unknown key", PayloadFormat.NATIVE, native(**{f"no{char}te": 1})),
        ("native envelope key", PayloadFormat.NATIVE, {**native(), f"x{char}": 1}),
        ("fhir coding code", PayloadFormat.FHIR, fhir(code=f"85354{char}9")),
        ("fhir resourceType", PayloadFormat.FHIR, {**fhir(), "resourceType": f"Obs{char}"}),
        ("ble item key", PayloadFormat.BLE, ble(**{f"k{char}": 1})),
        ("ble device_id", PayloadFormat.BLE, ble(device_id=f"cuff{char}1")),
        ("ble characteristic", PayloadFormat.BLE, ble(characteristic=f"2A{char}5")),
    ]


CASES = [
    *(
        pytest.param(fmt, body, id=f"{where} {name}")
        for name, char in (("NUL", NUL), ("surrogate", SURROGATE))
        for where, fmt, body in poisoned(char)
    ),
    # pydantic refuses a str holding a surrogate: these message ids make the reading malformed
    pytest.param(PayloadFormat.NATIVE, native(message_id=f"m{SURROGATE}"), id="native message_id"),
    pytest.param(PayloadFormat.BLE, ble(message_id=f"b{SURROGATE}"), id="ble message_id"),
]


@pytest.mark.parametrize(("fmt", "body"), CASES)
async def test_nul_or_surrogate_in_a_quarantined_string_is_quarantined(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    fmt: PayloadFormat,
    body: object,
) -> None:
    """A NUL or lone surrogate copied into quarantine text is escaped; the worker keeps going."""
    bad = json.dumps(body).encode()  # ensure_ascii: the JSON escapes \u0000 and \ud800
    rows = await assert_survives(service, broker, db, TOPICS[fmt], bad)
    assert 1 == len(rows)
    assert bad == bytes(rows[0]["payload"])
    text = rows[0]["detail"] + (rows[0]["device_id"] or "")
    assert [] == [c for c in text if c in (NUL, SURROGATE)]


STORED_CASES = [
    pytest.param(PayloadFormat.NATIVE, native(message_id="m\x001"), "m\\x001", id="native NUL"),
    pytest.param(PayloadFormat.FHIR, fhir(id="obs\x001"), "obs\\x001", id="fhir NUL"),
    pytest.param(PayloadFormat.FHIR, fhir(id="obs\ud8001"), "obs\\ud8001", id="fhir surrogate"),
    pytest.param(PayloadFormat.BLE, ble(message_id="b\x001"), "b\\x001", id="ble NUL"),
]


@pytest.mark.parametrize(("fmt", "body", "expected"), STORED_CASES)
async def test_nul_or_surrogate_in_a_message_id_is_stored_escaped(
    service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    fmt: PayloadFormat,
    body: object,
    expected: str,
) -> None:
    """A reading whose message id holds a NUL or a surrogate is stored, the id escaped."""
    rows = await assert_survives(service, broker, db, TOPICS[fmt], json.dumps(body).encode())
    assert [] == [dict(r) for r in rows]
    stored = await db.fetchval("SELECT message_id FROM readings WHERE device_id = 'cuff-1'")
    assert expected == stored


async def test_a_huge_metric_name_is_cut_in_the_detail(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A 100 kB metric name is quarantined with a detail of at most DETAIL_LIMIT characters."""
    bad = json.dumps(native(metric="m" * 100_000)).encode()
    (row,) = await assert_survives(service, broker, db, TOPICS[PayloadFormat.NATIVE], bad)
    assert ("unknown_metric", DETAIL_LIMIT, "…") == (
        row["reason"],
        len(row["detail"]),
        row["detail"][-1],
    )


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("homemonitor/v1/gw/gw\x00/readings", "homemonitor/v1/gw/gw\\x00/readings"),
        ("homemonitor/v1/gw/gw\ud800/readings", "homemonitor/v1/gw/gw\\ud800/readings"),
        ("t/" + "x" * 70_000, "t/" + "x" * (ID_LIMIT - 3) + "…"),
    ],
    ids=["NUL", "surrogate", "70 kB"],
)
async def test_an_unsafe_topic_is_quarantined_escaped(
    db: asyncpg.Connection, topic: str, expected: str
) -> None:
    """A topic no text column can hold is stored escaped and cut (Mosquitto refuses to route one).

    Mosquitto drops a publisher that sends control characters in a topic, and the intake
    decodes topics with errors="replace", so this drives the batch commit directly.
    """
    message = pipeline.Inbound(topic, b"{}", datetime.now(UTC), 0.0)
    batch = pipeline.prepare([message], RegistryCache(), CLOCK, 1 << 18, datetime.now(UTC))
    await transaction.commit(db, batch, RegistryCache().plans)
    row = await db.fetchrow("SELECT topic, reason, payload FROM quarantine")
    assert (expected, "unknown_topic", b"{}") == (row["topic"], row["reason"], row["payload"])


def test_safe_text_escapes_what_text_cannot_hold_and_bounds_length() -> None:
    """NUL, surrogates, controls and format characters become escapes; long text is cut."""
    cases = {
        ("cuff-1", 64): "cuff-1",
        (
            "a\x00b\ud800c\x1b\u202e\u2028\U000e0001",
            64,
        ): "a\\x00b\\ud800c\\x1b\\u202e\\u2028\\U000e0001",
        ("Vårdcentral…", 64): "Vårdcentral…",
        ("x" * 10, 10): "x" * 10,
        ("x" * 11, 10): "x" * 9 + "…",
        ("\x00" * 4, 10): "\\x00\\x00…",  # an escape is never cut in half
    }
    assert cases == {(text, limit): safe_text(text, limit) for text, limit in cases}


async def test_quarantine_rows_the_database_refuses_become_one_fixed_row(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """When the database refuses a message's quarantine rows, it is kept whole with fixed text."""
    await db.execute(
        "ALTER TABLE quarantine ADD CONSTRAINT refuse_unknown CHECK (reason <> 'unknown_device')"
    )
    bad = json.dumps(native(device_id="nobody-1")).encode()
    (row,) = await assert_survives(service, broker, db, TOPICS[PayloadFormat.NATIVE], bad)
    assert ("storage_rejected", LAST_RESORT.detail, None, -1, bad) == (
        row["reason"],
        row["detail"],
        row["device_id"],
        row["item_index"],
        bytes(row["payload"]),
    )
    assert 1 == await service.counted(
        "homemonitor_messages_rejected_total", {"reason": "storage_rejected"}
    )


async def test_a_database_refusing_every_quarantine_row_holds_the_batch(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """If even a fixed quarantine row is refused, nothing is acknowledged or lost; it resumes."""
    await db.execute("ALTER TABLE quarantine ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    bad = b"\x00not json"
    async with publisher(broker) as gw:
        await gw.publish(TOPICS[PayloadFormat.NATIVE], bad, qos=1)
        await gw.publish(readings_topic("gw-1"), good(1), qos=1)
    await wait_until(
        lambda: service.metric_async("homemonitor_commit_retries_total"), lambda n: n >= 2
    )
    assert service.task is not None
    assert not service.task.done()
    assert 2 == service.metric("homemonitor_inflight_messages")  # held, not acknowledged
    await db.execute("ALTER TABLE quarantine DROP CONSTRAINT refuse_all")
    await wait_until(
        lambda: db.fetchval("SELECT count(*) FROM readings WHERE message_id = 'good-1'"),
        lambda n: n == 1,
    )
    row = await db.fetchrow("SELECT reason, payload FROM quarantine")
    assert ("malformed", bad) == (row["reason"], bytes(row["payload"]))


#: A reading whose INSERT hangs (a trigger sleeps): the worker holds it until it is killed.
HANG = """
CREATE FUNCTION hang() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(600); RETURN NEW; END $$;
CREATE TRIGGER hang BEFORE INSERT ON readings FOR EACH ROW
    WHEN (NEW.message_id = 'poison') EXECUTE FUNCTION hang();
"""


@pytest.mark.slow
async def test_a_message_that_kills_the_worker_is_set_aside_after_the_bound(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, tmp_path: Path
) -> None:
    """A message the worker dies on every time is quarantined as repeated_failure at the bound.

    The worker (a process of its own) is SIGKILLed each time it is stuck on the poison;
    the good readings around it are all stored, and the attempt rows are gone at the end.
    """
    await db.execute(HANG)
    limit = 3
    worker = WorkerProcess(dsn, broker, tmp_path / "worker.log")
    worker.env["HOMEMONITOR_MAX_DELIVERY_ATTEMPTS"] = str(limit)
    poison = json.dumps(native(message_id="poison")).encode()
    stuck = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
    set_aside = "SELECT count(*) FROM quarantine WHERE reason = 'repeated_failure'"
    kills = 0
    worker.start()
    try:
        await worker.ready()
        async with publisher(broker) as gw:
            for payload in (good(1), poison, good(2), good(3)):
                await gw.publish(readings_topic("gw-1"), payload, qos=1)
        while True:
            state = await wait_until(
                lambda: db.fetchrow(f"SELECT ({stuck}) AS hung, ({set_aside}) AS done"),
                lambda state: state["hung"] > 0 or state["done"] > 0,
                60,
            )
            if state["done"] or kills > limit:
                break
            worker.kill()  # it dies holding the poison
            kills += 1
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE wait_event = 'PgSleep'"
            )
            await wait_until(lambda: db.fetchval(stuck), lambda n: n == 0)
            worker.start()
        async with publisher(broker) as gw:
            await gw.publish(readings_topic("gw-1"), good(4), qos=1)
        stored = await wait_until(
            lambda: db.fetch("SELECT message_id FROM readings ORDER BY message_id"),
            lambda rows: len(rows) == 4,
            30,
        )
        row = await db.fetchrow("SELECT reason, payload, detail FROM quarantine")
        assert (limit, ["good-1", "good-2", "good-3", "good-4"]) == (
            kills,
            [r["message_id"] for r in stored],
        )
        assert ("repeated_failure", poison) == (row["reason"], bytes(row["payload"]))
        assert f"delivered {limit + 1} times" in row["detail"]
        await wait_until(
            lambda: db.fetchval("SELECT count(*) FROM delivery_attempts"), lambda n: n == 0
        )
        assert 0 == worker.terminate()
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.kill()
