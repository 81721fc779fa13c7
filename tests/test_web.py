"""The web app over HTTP: sign-in (demo), sessions, CSRF, the Inbox, and the API by cookie."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor import registry
from tests.conftest import REGISTRY, web_client

NOW = datetime.now(UTC).replace(microsecond=0)


async def _alert(
    conn: asyncpg.Connection, alert_id: int, patient: str, severity: str, *, ago_min: int = 0
) -> None:
    """An open alert row (the worker's path is tested elsewhere; the page needs the row)."""
    team = await conn.fetchval("SELECT care_team_id FROM patients WHERE id = $1", patient)
    at = NOW - timedelta(minutes=ago_min)
    sentence = f"systolic 190 mmHg above {severity} bound"
    await conn.execute(
        "INSERT INTO alerts (id, patient_id, care_team_id, rule, quantity, direction, "
        "severity, peak_severity, plan_version, threshold, opening_device_id, "
        "opening_metric, opening_measured_at, opening_value, worst_value, last_measured_at, "
        "evaluated_at, opening_explanation, latest_explanation, opened_at) "
        "VALUES ($1, $2, $3, 'systolic.high', 'systolic', 'high', $4, $4, 1, 180, 'cuff-1', "
        "'blood_pressure', $5, 190, 190, $5, $5, $6, $6, $5)",
        alert_id,
        patient,
        team,
        severity,
        at,
        json.dumps({"sentence": sentence, "facts": {}, "plan_version": 1}),
    )


@pytest.fixture
async def clinic(db: asyncpg.Connection) -> asyncpg.Connection:
    """The test registry, with cl-a2 in vc-a who is nobody's care contact."""
    described = json.loads(json.dumps(REGISTRY))
    described["care_teams"][0]["clinicians"].append({"id": "cl-a2", "name": "Nurse A2"})
    await registry.apply(db, registry.parse(described))
    return db


async def test_demo_login_then_the_inbox_in_swedish(clinic: asyncpg.Connection, dsn: str) -> None:
    """Anonymous → /login; the demo login says what it is; after it the Inbox, in Swedish."""
    await _alert(clinic, 1, "p-1", "warning")
    async with web_client(dsn, demo_login=True) as (http, _):
        first = await http.get("/inbox/rows?value=190")
        login = await http.get("/login?next=/")
        csrf = http.cookies["hm_login_csrf"]
        forged = await http.post("/login/demo", data={"clinician": "cl-a1", "csrf": "x"})
        signed = await http.post(
            "/login/demo", data={"clinician": "cl-a1", "csrf": csrf, "next": "/"}
        )
        inbox = await http.get("/")
    assert (303, "/login?next=/inbox/rows") == (first.status_code, first.headers["location"])
    assert "Endast för demo: ingen identitet kontrolleras" in login.text
    assert 'lang="sv"' in login.text and "Nurse A1" in login.text
    assert 403 == forged.status_code
    assert (303, "/") == (signed.status_code, signed.headers["location"])
    cookie = signed.headers["set-cookie"].lower()
    assert all(flag in cookie for flag in ("httponly", "secure", "samesite=lax"))
    assert 200 == inbox.status_code
    assert "Inkorg" in inbox.text and "Inloggad som Nurse A1" in inbox.text
    assert "Larm 1 för patient p-1" in inbox.text


async def test_no_demo_login_unless_asked_or_with_single_sign_on(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    async with web_client(dsn) as (http, _):
        page = await http.get("/login")
        csrf = http.cookies["hm_login_csrf"]
        post = await http.post("/login/demo", data={"clinician": "cl-a1", "csrf": csrf})
    assert "Ingen inloggning är konfigurerad" in page.text and "Nurse A1" not in page.text
    assert 404 == post.status_code
