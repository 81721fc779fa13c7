"""The web app over HTTP: sign-in (demo), sessions, CSRF, the Inbox, and the API by cookie."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor import registry
from tests.conftest import REGISTRY, sign_in, web_client

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
        "VALUES ($1, $2, $3, $7, 'systolic', 'high', $4, $4, 1, 180, 'cuff-1', "
        "'blood_pressure', $5, 190, 190, $5, $5, $6, $6, $5)",
        alert_id,
        patient,
        team,
        severity,
        at,
        json.dumps({"sentence": sentence, "facts": {}, "plan_version": 1}),
        f"systolic.high.{alert_id}",  # one active alert per rule and patient
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


async def test_inbox_mine_first_then_urgent_and_every_view_access_logged(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """p-1 and p-3 have cl-a1 as care contact; for cl-a2 they are the team's, not theirs."""
    await clinic.execute("UPDATE patients SET care_contact_id = 'cl-a2' WHERE id = 'p-3'")
    await _alert(clinic, 1, "p-1", "warning", ago_min=5)
    await _alert(clinic, 2, "p-3", "warning", ago_min=1)
    await _alert(clinic, 3, "p-1", "urgent", ago_min=30)
    await _alert(clinic, 4, "p-3", "urgent", ago_min=10)
    await _alert(clinic, 5, "p-2", "urgent")  # another team's: never shown
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        page = await http.get("/")
        rows = await http.get("/inbox/rows", headers={"X-HM-Background": "1"})
    order = [int(i) for i in re.findall(r'data-alert-id="(\d+)"', page.text)]
    assert [3, 1, 4, 2] == order  # mine (urgent, warning), then the team's (urgent, warning)
    mine, team = page.text.split('id="h-team"')
    assert "Mina (2)" in mine and "Teamets övriga (2)" in team
    assert order == [int(i) for i in re.findall(r'data-alert-id="(\d+)"', rows.text)]
    assert "<html" not in rows.text  # the fragment alone
    assert "no-store" == page.headers["Cache-Control"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    logged = await clinic.fetch(
        "SELECT clinician_id, patient_id, action FROM access_log ORDER BY id"
    )
    # two views (the page, its refresh), each logging both patients shown and no other
    assert sorted([("cl-a1", p, "list_alerts") for p in ("p-1", "p-3")] * 2) == sorted(
        tuple(r) for r in logged
    )


async def test_inbox_in_english_offers_the_actions_the_api_has(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    await _alert(clinic, 1, "p-1", "urgent")
    async with web_client(dsn) as (http, app):
        await sign_in(http, clinic, "cl-a1")
        switched = await http.get("/lang/en", params={"next": "/?value=1"})
        page = await http.get("/")
        paths = app.openapi()["paths"]
    assert (303, "/") == (switched.status_code, switched.headers["location"])
    assert 'lang="en"' in page.text and "Inbox" in page.text and "Urgent" in page.text
    assert '<time datetime="' in page.text
    assert 'data-action="acknowledge"' in page.text and 'data-action="resolve"' in page.text
    for action in ("assign", "comment"):  # lifecycle's routes: rendered when they exist
        present = f"/api/v1/alerts/{{alert_id}}/{action}" in paths
        assert present == (f'data-action="{action}"' in page.text)
    assert 'data-action="snooze"' not in page.text  # never for an urgent alert
    if "/api/v1/alerts/{alert_id}/assign" in paths:  # to one of my team, by name
        options = re.findall(r'<option value="([^"]+)"', page.text.split('id="assign-1-to"')[1])
        assert ["cl-a1", "cl-a2"] == options[:2] and "cl-b1" not in options


async def test_times_are_swedish_time(clinic: asyncpg.Connection, dsn: str) -> None:
    await _alert(clinic, 1, "p-1", "warning")
    await clinic.execute("UPDATE alerts SET opened_at = '2026-07-01T12:00:00Z'")
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        page = await http.get("/")
    assert '<time datetime="2026-07-01T14:00:00+02:00">2026-07-01 14:00</time>' in page.text
