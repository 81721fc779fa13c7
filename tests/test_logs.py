"""What ``homemonitor run`` writes to stderr: its data as fields, never a patient id or value."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import WorkerProcess, publisher, wait_until

#: An implausible systolic pressure (limit 300): quarantined, and not to be found in the logs.
VALUE = 371.5


async def _quarantine_one(worker: WorkerProcess, broker: PrivateMosquitto, fmt: str) -> str:
    """Run the worker with ``fmt``, quarantine one reading of p-1's cuff; its log so far."""
    worker.env["HOMEMONITOR_LOG_FORMAT"] = fmt
    worker.start()
    await worker.ready()
    reading = {
        "device_id": "cuff-1",
        "metric": "blood_pressure",
        "measured_at": datetime.now(UTC).isoformat(),
        "systolic": VALUE,
        "diastolic": 80,
    }
    async with publisher(broker, "gw-1") as gw:
        await gw.publish(readings_topic("gw-1"), json.dumps({"v": 1, "reading": reading}), qos=1)

    async def log() -> str:
        return worker.log.read_text()

    return await wait_until(log, lambda text: "quarantined" in text and text.endswith("\n"))


async def test_json_logs_carry_the_quarantine_as_fields(
    worker_process: WorkerProcess, broker: PrivateMosquitto
) -> None:
    """log_format=json: every line one object; a quarantined message one event with its fields."""
    text = await _quarantine_one(worker_process, broker, "json")
    lines = [json.loads(line) for line in text.splitlines()]
    quarantined = [line for line in lines if line["event"] == "quarantined"]
    assert [
        {
            "level": "info",
            "logger": "homemonitor.ingest.worker",
            "event": "quarantined",
            "count": 1,
            "reasons": ["implausible"],
        }
    ] == [{k: v for k, v in line.items() if k != "timestamp"} for line in quarantined]
    assert [["timestamp", "level", "logger", "event"]] * len(lines) == [
        list(line)[:4] for line in lines
    ]
    assert {"uvicorn.error", "homemonitor.registry.cache"} <= {line["logger"] for line in lines}
    assert (False, False) == ("p-1" in text, str(VALUE) in text)


async def test_text_logs_show_the_fields_as_key_value(
    worker_process: WorkerProcess, broker: PrivateMosquitto
) -> None:
    """log_format=text: a quarantined message is one line with count=1 reasons=[...]."""
    text = await _quarantine_one(worker_process, broker, "text")
    quarantined = [line for line in text.splitlines() if " quarantined " in line]
    assert 1 == len(quarantined)
    assert quarantined[0].endswith("[homemonitor.ingest.worker] count=1 reasons=['implausible']")
    assert "[info     ]" in quarantined[0]
    assert (False, False) == ("p-1" in text, str(VALUE) in text)
