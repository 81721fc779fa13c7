"""FHIR R4 out over HTTP: search Bundles and Bulk Data export, care-team scoped and logged."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from homemonitor.api.auth import issue_token
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import RunningService, settings_for, wait_until
from tests.unit.fhir_check import r4_problems, vital_signs_problems

SYSTEM = "urn:oid:1.2.752.999.7.1"  # as a region would configure it
AT = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
FHIR_JSON = "application/fhir+json"


@pytest.fixture
async def fhir_service(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> AsyncIterator[RunningService]:
    """The whole service with a region's patient identifier system configured."""
    svc = RunningService(settings_for(dsn, broker, fhir_patient_system=SYSTEM))
    await svc.start()
    yield svc
    if svc.task is not None and not svc.task.done():
        with contextlib.suppress(Exception):
            await svc.stop()


async def _readings(db: asyncpg.Connection) -> None:
    """p-1: two blood pressures (one flagged by its cuff), a weight; p-3 one; p-2 (vc-b) one."""
    rows = [
        ("cuff-1", "blood_pressure", AT, "p-1", {"systolic": 150, "diastolic": 95}, []),
        (
            "cuff-1",
            "blood_pressure",
            AT + timedelta(hours=1),
            "p-1",
            {"systolic": 191, "diastolic": 101, "heart_rate": 77},
            ["body_movement"],
        ),
        ("scale-1", "body_weight", AT + timedelta(hours=2), "p-1", {"body_weight": 82.4}, []),
        ("cuff-3", "blood_pressure", AT, "p-3", {"systolic": 128, "diastolic": 84}, []),
        ("oxi-2", "spo2", AT, "p-2", {"spo2": 91, "heart_rate": 90}, []),
    ]
    for device, metric, at, patient, values, quality in rows:
        columns = ", ".join(values)
        places = ", ".join(f"${i + 6}" for i in range(len(values)))
        await db.execute(
            f"INSERT INTO readings (device_id, metric, measured_at, patient_id, received_at, "
            f"source, quality, {columns}) VALUES ($1, $2, $3, $4, $3, 'native', $5, {places})",
            device,
            metric,
            at,
            patient,
            quality,
            *values.values(),
        )


async def _alert(db: asyncpg.Connection) -> int:
    """An urgent systolic alert of p-1, opened by its second blood pressure."""
    opened = AT + timedelta(hours=1)
    return int(
        await db.fetchval(
            "INSERT INTO alerts (patient_id, care_team_id, rule, quantity, direction, severity, "
            "peak_severity, plan_version, threshold, opening_device_id, opening_metric, "
            "opening_measured_at, opening_value, worst_value, last_measured_at, evaluated_at, "
            "opening_explanation, latest_explanation) VALUES ('p-1', 'vc-a', "
            "'systolic.high', 'systolic', 'high', 'urgent', 'urgent', 1, 180, 'cuff-1', "
            "'blood_pressure', $1, 191, 191, $1, $1, $2::jsonb, $2::jsonb) RETURNING id",
            opened,
            '{"sentence": "systolic 191 mmHg, at or above the urgent bound 180 mmHg; plan v1"}',
        )
    )


async def _client(db: asyncpg.Connection, service: RunningService, who: str) -> httpx.AsyncClient:
    token = await issue_token(db, who)
    return httpx.AsyncClient(
        base_url=service.url,
        headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON},
    )


async def _log(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT clinician_id, patient_id, requested_id, action, outcome FROM access_log ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_observation_search_is_a_valid_bundle_logged_per_request(
    fhir_service: RunningService, db: asyncpg.Connection
) -> None:
    """A patient's readings: a valid searchset of vital-signs Observations, newest first."""
    await _readings(db)
    async with await _client(db, fhir_service, "cl-a1") as http:
        everything = await http.get("/fhir/r4/Observation", params={"patient": "p-1"})
        window = await http.get(
            "/fhir/r4/Observation",
            params=[
                ("patient", "Patient/p-1"),
                ("date", f"gt{AT.isoformat()}"),
                ("date", f"lt{(AT + timedelta(hours=2)).isoformat()}"),
            ],
        )
        first = await http.get("/fhir/r4/Observation", params={"patient": "p-1", "_count": 2})
        second = await http.get(
            next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
        )
    body = everything.json()
    resources = [e["resource"] for e in body["entry"]]

    assert (200, FHIR_JSON, 3) == (
        everything.status_code,
        everything.headers["content-type"],
        body["total"],
    )
    assert [] == r4_problems(body)
    assert [[], [], []] == [vital_signs_problems(r) for r in resources]
    assert ["29463-7", "85354-9", "85354-9"] == [r["code"]["coding"][0]["code"] for r in resources]
    assert {SYSTEM} == {r["subject"]["identifier"]["system"] for r in resources}
    assert ["Measurement quality reported by the device: body_movement"] == [
        n["text"] for n in resources[1]["note"]
    ]
    assert [191.0] == [
        r["component"][0]["valueQuantity"]["value"]
        for e in window.json()["entry"]
        for r in [e["resource"]]
    ]
    assert ([2, 1], 3, 3) == (
        [len(first.json()["entry"]), len(second.json()["entry"])],
        first.json()["total"],
        len({e["resource"]["id"] for e in first.json()["entry"] + second.json()["entry"]}),
    )
    assert [("cl-a1", "p-1", "p-1", "fhir_observations", "allowed")] * 4 == await _log(db)
    assert 4.0 == fhir_service.metric(
        "homemonitor_api_patient_reads_total", {"action": "fhir_observations"}
    )


async def test_flag_search_gives_the_alert_with_its_reading(
    fhir_service: RunningService, db: asyncpg.Connection
) -> None:
    """A patient's alerts: valid Flags whose detail is the id of the reading that opened it."""
    await _readings(db)
    alert_id = await _alert(db)
    async with await _client(db, fhir_service, "cl-a1") as http:
        flags = await http.get("/fhir/r4/Flag", params={"patient": "p-1"})
        inactive = await http.get("/fhir/r4/Flag", params={"patient": "p-1", "status": "inactive"})
        readings = await http.get("/fhir/r4/Observation", params={"patient": "p-1"})
    [entry] = flags.json()["entry"]
    details = [
        e["valueReference"]["reference"]
        for e in entry["resource"]["extension"]
        if e["url"].endswith("flag-detail")
    ]
    opening = readings.json()["entry"][1]["resource"]

    assert (200, FHIR_JSON, []) == (
        flags.status_code,
        flags.headers["content-type"],
        r4_problems(flags.json()),
    )
    assert (str(alert_id), "active", [f"Observation/{opening['id']}"], 0) == (
        entry["resource"]["id"],
        entry["resource"]["status"],
        details,
        inactive.json()["total"],
    )
    assert 191.0 == opening["component"][0]["valueQuantity"]["value"]


async def test_another_teams_patient_group_or_export_is_404_and_logged_denied(
    fhir_service: RunningService, db: asyncpg.Connection
) -> None:
    """Another team's patient, group or export answers like an unknown one, logged as denied."""
    await _readings(db)
    async with await _client(db, fhir_service, "cl-a1") as own:
        started = await own.get("/fhir/r4/Group/vc-a/$export", headers={"Prefer": "respond-async"})
    async with await _client(db, fhir_service, "cl-b1") as other:
        answers = [
            await other.get("/fhir/r4/Observation", params={"patient": "p-1"}),
            await other.get("/fhir/r4/Observation", params={"patient": "p-404"}),
            await other.get("/fhir/r4/Flag", params={"patient": "p-1"}),
            await other.get("/fhir/r4/Group/vc-a/$export", headers={"Prefer": "respond-async"}),
            await other.get(started.headers["content-location"]),
        ]
    job_id = started.headers["content-location"].rsplit("/", 1)[1]

    assert [(404, FHIR_JSON, "not-found", [])] * 5 == [
        (
            r.status_code,
            r.headers["content-type"],
            r.json()["issue"][0]["code"],
            r4_problems(r.json()),
        )
        for r in answers
    ]
    denied = [row for row in await _log(db) if row[4] == "denied"]
    assert [
        ("cl-b1", "p-1", "p-1", "fhir_observations", "denied"),
        ("cl-b1", None, "p-404", "fhir_observations", "denied"),
        ("cl-b1", "p-1", "p-1", "fhir_flags", "denied"),
        ("cl-b1", None, "vc-a", "fhir_export", "denied"),
        ("cl-b1", None, job_id, "fhir_export", "denied"),
    ] == denied
    assert 5.0 == fhir_service.metric("homemonitor_api_denied_total", {"reason": "not_visible"})


async def _finished(http: httpx.AsyncClient, status_url: str) -> httpx.Response:
    return await wait_until(lambda: http.get(status_url), lambda r: r.status_code != 202)


async def test_bulk_export_of_a_care_team_end_to_end(
    fhir_service: RunningService, db: asyncpg.Connection
) -> None:
    """Kick-off, poll, manifest, NDJSON files that validate; one access-log row per patient."""
    await _readings(db)
    await _alert(db)
    async with await _client(db, fhir_service, "cl-a1") as http:
        kick_off = await http.get(
            "/fhir/r4/Group/vc-a/$export",
            headers={"Prefer": "respond-async"},
            params={"_type": "Observation,Flag", "_outputFormat": "application/fhir+ndjson"},
        )
        status_url = kick_off.headers["content-location"]
        done = await _finished(http, status_url)
        manifest = done.json()
        files = {o["type"]: await http.get(o["url"]) for o in manifest["output"]}
        deleted = await http.delete(status_url)
        gone = await http.get(status_url)
    lines = {kind: r.text.splitlines() for kind, r in files.items()}
    resources = {kind: [json.loads(line) for line in text] for kind, text in lines.items()}

    assert (202, 200, "application/json") == (
        kick_off.status_code,
        done.status_code,
        done.headers["content-type"],
    )
    assert (True, [], str(kick_off.url)) == (
        manifest["requiresAccessToken"],
        manifest["error"],
        manifest["request"],
    )
    assert {"Observation": 4, "Flag": 1} == {o["type"]: o["count"] for o in manifest["output"]}
    assert {"Observation": 4, "Flag": 1} == {kind: len(text) for kind, text in lines.items()}
    assert {"application/fhir+ndjson"} == {r.headers["content-type"] for r in files.values()}
    everything = [r for batch in resources.values() for r in batch]
    assert [] == [p for r in everything for p in r4_problems(r)]
    assert [] == [p for r in resources["Observation"] for p in vital_signs_problems(r)]
    assert {"p-1", "p-3"} == {r["subject"]["identifier"]["value"] for r in everything}
    job_id = status_url.rsplit("/", 1)[1]
    assert [
        ("cl-a1", "p-1", "vc-a", "fhir_export", "allowed"),
        ("cl-a1", "p-3", "vc-a", "fhir_export", "allowed"),
        ("cl-a1", None, job_id, "fhir_export", "denied"),  # polled after it was deleted
    ] == await _log(db)
    assert (202, 404) == (deleted.status_code, gone.status_code)


async def test_export_since_and_type_narrow_it(
    fhir_service: RunningService, db: asyncpg.Connection
) -> None:
    """_since keeps what was stored after it, _type one type; no data, no file and no row."""
    await _readings(db)
    since = await db.fetchval("SELECT clock_timestamp()")
    await db.execute(
        "INSERT INTO readings (device_id, metric, measured_at, patient_id, received_at, source, "
        "body_weight) VALUES ('scale-1', 'body_weight', $1, 'p-1', $1, 'native', 82.9)",
        AT - timedelta(days=3),  # measured long ago, stored just now: a late reading
    )
    async with await _client(db, fhir_service, "cl-a1") as http:
        headers = {"Prefer": "respond-async"}
        late = await http.get(
            "/fhir/r4/Group/vc-a/$export",
            headers=headers,
            params={"_since": since.isoformat(), "_type": "Observation"},
        )
        late_done = await _finished(http, late.headers["content-location"])
        [output] = late_done.json()["output"]
        late_file = await http.get(output["url"])
        nothing = await http.get(
            "/fhir/r4/Group/vc-a/$export", headers=headers, params={"_type": "Flag"}
        )
        nothing_done = await _finished(http, nothing.headers["content-location"])
        refused = [
            await http.get("/fhir/r4/Group/vc-a/$export"),
            await http.get(
                "/fhir/r4/Group/vc-a/$export", headers=headers, params={"_type": "Patient"}
            ),
            await http.get(
                "/fhir/r4/Group/vc-a/$export", headers=headers, params={"_since": "2026"}
            ),
        ]
    [weight] = [json.loads(line) for line in late_file.text.splitlines()]

    assert (82.9, []) == (weight["valueQuantity"]["value"], nothing_done.json()["output"])
    assert [422, 422, 422] == [r.status_code for r in refused]
    assert [("cl-a1", "p-1", "vc-a", "fhir_export", "allowed")] == [
        row for row in await _log(db) if row[3] == "fhir_export"
    ]


async def test_export_without_its_access_log_rows_fails_and_gives_no_file(
    fhir_service: RunningService, db: asyncpg.Connection
) -> None:
    """When the access-log write fails, the export fails (500 OperationOutcome): no files."""
    await _readings(db)
    await db.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'access log unavailable'; END $$;"
        "CREATE TRIGGER refuse BEFORE INSERT ON access_log EXECUTE FUNCTION refuse()"
    )
    async with await _client(db, fhir_service, "cl-a1") as http:
        kick_off = await http.get(
            "/fhir/r4/Group/vc-a/$export", headers={"Prefer": "respond-async"}
        )
        job_id = kick_off.headers["content-location"].rsplit("/", 1)[1]
        failed = await _finished(http, kick_off.headers["content-location"])
        file = await http.get(f"/fhir/r4/$export-files/{job_id}/Observation.ndjson")

    assert (500, FHIR_JSON, "exception", 404) == (
        failed.status_code,
        failed.headers["content-type"],
        failed.json()["issue"][0]["code"],
        file.status_code,
    )
