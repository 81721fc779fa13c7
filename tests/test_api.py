"""The clinician API: authenticated, care-team scoped, and every patient read access-logged."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from homemonitor.auth import issue_token
from homemonitor.embedded import PrivateMosquitto
from homemonitor.protocol import readings_topic
from tests.conftest import RunningService, publisher, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)


async def _alert_for_p1(broker: PrivateMosquitto, db: asyncpg.Connection) -> int:
    payload = {
        "v": 1,
        "reading": {
            "device_id": "cuff-1",
            "metric": "blood_pressure",
            "measured_at": NOW.isoformat(),
            "systolic": 190,
            "diastolic": 100,
        },
    }
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), json.dumps(payload).encode(), qos=1)
    return int(
        await wait_until(lambda: db.fetchval("SELECT id FROM alerts"), lambda i: i is not None)
    )


async def test_clinician_of_another_team_gets_403_and_reads_are_logged(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A clinician sees their own team's alert (access-logged); another team's gets 403."""
    alert_id = await _alert_for_p1(broker, db)
    own = await issue_token(db, "cl-a1")
    other = await issue_token(db, "cl-b1")
    async with httpx.AsyncClient(base_url=service.url) as http:
        listed = await http.get("/api/v1/alerts", headers={"Authorization": f"Bearer {own}"})
        detail = await http.get(
            f"/api/v1/alerts/{alert_id}", headers={"Authorization": f"Bearer {own}"}
        )
        denied = await http.get(
            f"/api/v1/alerts/{alert_id}", headers={"Authorization": f"Bearer {other}"}
        )
        denied_patient = await http.get(
            "/api/v1/patients/p-1/readings", headers={"Authorization": f"Bearer {other}"}
        )
        anonymous = await http.get("/api/v1/alerts")
    assert (200, 200, 403, 403, 401) == (
        listed.status_code,
        detail.status_code,
        denied.status_code,
        denied_patient.status_code,
        anonymous.status_code,
    )
    assert [alert_id] == [a["id"] for a in listed.json()]
    assert [190.0] == [r["systolic"] for r in detail.json()["recent_readings"]]
    log = await db.fetch("SELECT clinician_id, patient_id, action FROM access_log ORDER BY id")
    assert [("cl-a1", "p-1", "list_alerts"), ("cl-a1", "p-1", "view_alert")] == [
        tuple(r) for r in log
    ]


async def test_acknowledge_and_resolve(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Open → acknowledged → resolved with who and a note; twice is 409; changes count as writes."""
    alert_id = await _alert_for_p1(broker, db)
    headers = {"Authorization": f"Bearer {await issue_token(db, 'cl-a1')}"}
    async with httpx.AsyncClient(base_url=service.url, headers=headers) as http:
        acked = await http.post(f"/api/v1/alerts/{alert_id}/acknowledge")
        resolved = await http.post(
            f"/api/v1/alerts/{alert_id}/resolve",
            json={"note": "Called patient; medication adjusted."},
        )
        again = await http.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "again"})
        active = await http.get("/api/v1/alerts")
    assert ("acknowledged", "cl-a1") == (acked.json()["status"], acked.json()["acknowledged_by"])
    assert ("resolved", "Called patient; medication adjusted.") == (
        resolved.json()["status"],
        resolved.json()["resolution_note"],
    )
    assert (409, []) == (again.status_code, active.json())
    counted = {
        (kind, action): n
        for kind in ("reads", "writes")
        for action in ("list_alerts", "acknowledge_alert", "resolve_alert")
        if (n := service.metric(f"homemonitor_api_patient_{kind}_total", {"action": action}))
    }
    assert {
        ("reads", "list_alerts"): 1,
        ("writes", "acknowledge_alert"): 1,
        ("writes", "resolve_alert"): 1,
    } == counted


async def test_trend_and_ops_endpoints(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """Hourly trend works on plain PostgreSQL; /ready names the mode; /metrics names no patient."""
    await _alert_for_p1(broker, db)
    headers = {"Authorization": f"Bearer {await issue_token(db, 'cl-a1')}"}
    async with httpx.AsyncClient(base_url=service.url) as http:
        trend = await http.get("/api/v1/patients/p-1/trend", headers=headers)
        ready = await http.get("/ready")
        metrics = await http.get("/metrics")
        docs = await http.get("/docs")
    assert [("blood_pressure", 1, 190.0)] == [
        (t["metric"], t["n"], t["systolic"]) for t in trend.json()
    ]
    assert (200, "postgresql", True) == (
        ready.status_code,
        ready.json()["storage_mode"],
        ready.json()["ready"],
    )
    assert "homemonitor_readings_stored_total 1.0" in metrics.text
    for private in ("p-1", "cuff-1"):
        assert private not in metrics.text
    labels = {  # a reading's value may only leak through a label (sample values are ours)
        value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert not [v for v in labels if "190" in v or "p-1" in v or "cuff-1" in v]
    assert 200 == docs.status_code


_CONTENT_TYPES = {
    ".css": {"text/css"},
    ".js": {"text/javascript", "application/javascript"},
    ".png": {"image/png"},
    ".json": {"application/json"},
}


async def test_api_docs_work_without_internet(service: RunningService) -> None:
    """/docs and /redoc load only same-origin assets, and each answers 200 with its type."""
    async with httpx.AsyncClient(base_url=service.url) as http:
        pages = {path: (await http.get(path)) for path in ("/docs", "/redoc")}
        text = "".join(page.text for page in pages.values())
        referenced = sorted(
            {
                a or b
                for a, b in re.findall(r'(?:src|href|spec-url)="([^"]*)"|\burl: \'([^\']*)\'', text)
            }
        )
        assert [] == re.findall(r"\b[a-z]+://\S*", text)  # nothing from another origin
        answers = {url: await http.get(url) for url in referenced}
    assert {"/docs": 200, "/redoc": 200} == {p: r.status_code for p, r in pages.items()}
    assert {".css", ".js", ".png", ".json"} == {Path(url).suffix for url in referenced}
    assert dict.fromkeys(referenced, (200, True)) == {
        url: (
            r.status_code,
            r.headers["content-type"].split(";")[0] in _CONTENT_TYPES[Path(url).suffix],
        )
        for url, r in answers.items()
    }
