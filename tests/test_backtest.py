"""Backtesting a care-plan change on stored history: the CLI and the API, on real PostgreSQL.

p-1 (thresholds only: weight warning 82 kg, systolic urgent 180) stored a week in which
the weight rose 2.5 kg in two days while staying under 82 kg, and one systolic 190; the
readings went through the batch transaction, so the alerts table holds what the live
plan raised. The heart-failure template would also have raised weight.gain_3d.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from homemonitor import registry
from homemonitor.api.auth import issue_token
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.registry import plans
from homemonitor.storage.transaction import commit
from tests.conftest import RunningService
from tests.test_cli import run

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
#: p-1's morning weights, days before now: 78 kg for five days, then 79, then 80.5.
WEIGHTS = {7: 78.0, 6: 78.0, 5: 78.0, 4: 78.0, 3: 78.0, 2: 79.0, 1: 80.5}
GAIN_AT = NOW - timedelta(days=1)
SYSTOLIC_AT = NOW - timedelta(days=3, hours=-2)


async def _store_week(db: asyncpg.Connection) -> None:
    """p-1's week, one reading per batch in measured order, as the worker would commit it."""
    cache = registry.RegistryCache()
    await cache.load(db)
    readings = [
        Reading("scale-1", Metric.BODY_WEIGHT, NOW - timedelta(days=d), {Quantity.BODY_WEIGHT: w})
        for d, w in WEIGHTS.items()
    ]
    readings.append(
        Reading(
            "cuff-1",
            Metric.BLOOD_PRESSURE,
            SYSTOLIC_AT,
            {Quantity.SYSTOLIC: 190.0, Quantity.DIASTOLIC: 95.0},
        )
    )
    for r in sorted(readings, key=lambda r: r.measured_at):
        message = Inbound("homemonitor/v1/gw/gw-1/readings", b"{}", r.measured_at, 0.0)
        batch = Batch([message], [Candidate(r, "p-1", "gw-1", r.measured_at, 0)])
        await commit(db, batch, cache.plans, now=r.measured_at)


def _backtest(dsn: str, *argv: str) -> Any:
    return run("rules", "backtest", *argv, "--database-url", dsn)


async def test_heart_failure_template_adds_the_weight_gain_alert(
    db: asyncpg.Connection, dsn: str
) -> None:
    """The template raises weight.gain_3d with its sentence; the thresholds plan does not."""
    await _store_week(db)
    argv = ("--patient", "p-1", "--template", "heart_failure", "--personal", "dry_weight=78")
    text, as_json, swedish = await asyncio.gather(
        asyncio.to_thread(_backtest, dsn, *argv),
        asyncio.to_thread(_backtest, dsn, *argv, "--json"),
        asyncio.to_thread(_backtest, dsn, *argv, "--lang", "sv"),
    )
    assert (0, 0, 0) == (text.returncode, as_json.returncode, swedish.returncode), (
        text.stderr + as_json.stderr + swedish.stderr
    )
    report = json.loads(as_json.stdout)
    [p] = report["patients"]
    sentence = (
        "weight 80.5 kg, 2.5 kg above the lowest of the previous 3 days (78 kg); "
        "plan v2: 2 kg or more in 3 days"
    )
    systolic = [(SYSTOLIC_AT, "urgent", "urgent", "systolic.high")]
    assert [*systolic, (GAIN_AT, None, "warning", "weight.gain_3d")] == [
        (datetime.fromisoformat(r["opened_at"]), r["current"], r["proposed"], r["rule"])
        for r in p["rows"]
    ]
    assert sentence == p["rows"][1]["sentence"] == p["rows"][1]["sentences"]["en"]
    svensk = (
        "vikt 80,5 kg, 2,5 kg över den lägsta de föregående 3 dagarna (78 kg); "
        "plan v2: 2 kg eller mer på 3 dagar"
    )
    assert svensk == p["rows"][1]["sentences"]["sv"]
    assert f"weight.gain_3d     {svensk}" in swedish.stdout
    assert "svensk tid" in swedish.stdout.splitlines()[0] and sentence not in swedish.stdout
    assert {"warning": 0, "urgent": 1, "total": 1} == p["stored"]
    assert {"warning": 0, "urgent": 1, "total": 1} == p["current"]["counts"]
    assert {"warning": 1, "urgent": 1, "total": 2} == p["proposed"]["counts"]
    assert (1, len(WEIGHTS) + 1) == (p["current_version"], p["readings"])
    assert p["proposed"]["counts"] == report["total"]["proposed"]
    assert "resolves each alert 24 h after it opened" == report["clinician"]
    gain_line = f"  {GAIN_AT:%Y-%m-%d %H:%M}  -        warning   weight.gain_3d     {sentence}"
    assert gain_line in text.stdout.splitlines()
    assert "  total            1        1         2" in text.stdout.splitlines()
    log = await db.fetch(
        "SELECT clinician_id, patient_id, action, outcome FROM access_log ORDER BY id"
    )
    who = f"cli:{getpass.getuser()}"
    assert [(who, "p-1", "rules_backtest", "allowed")] * 3 == [tuple(r) for r in log]


async def test_team_backtest_skips_who_the_plan_cannot_fit_and_logs_every_read(
    db: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """--team with --as: p-1's plan keeps its dry weight, p-3 (none) is skipped; both logged."""
    await _store_week(db)
    current = await plans.current(db, "p-1")
    assert current is not None
    spec = current.spec.model_copy(update={"personal": {"dry_weight": 78.0}})
    await plans.add(db, "p-1", 2, spec, changed_by="cl-a1", reason="dry weight measured")
    done = await asyncio.to_thread(
        _backtest, dsn, "--team", "vc-a", "--template", "heart_failure", "--as", "cl-a1",
        "--json",
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    report = json.loads(done.stdout)
    assert ["p-1", "p-3"] == [p["patient_id"] for p in report["patients"]]
    assert "relative to personal 'dry_weight'" in (report["patients"][1]["skipped"] or "")
    assert (1, 2) == (report["total"]["patients"], report["patients"][0]["current_version"])
    assert ["systolic.high", "weight.gain_3d"] == [
        a["rule"] for a in report["patients"][0]["proposed"]["alerts"]
    ]
    assert "backtest: 2/2 patients" in done.stderr
    log = await db.fetch("SELECT clinician_id, patient_id, action FROM access_log ORDER BY id")
    assert [("cl-a1", "p-1", "rules_backtest"), ("cl-a1", "p-3", "rules_backtest")] == [
        tuple(r) for r in log
    ]


async def test_mistakes_are_one_line_and_exit_2(
    db: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """Unknown patient, team, template, clinician; a bad plan file; another team: exit 2."""
    bad = tmp_path / "plan.yaml"
    bad.write_text("rules:\n  - {id: x, kind: threshold, quantity: spo2}\n")
    cases = {
        "no patient 'p-404'": ("--patient", "p-404", "--template", "copd"),
        "no care team 'vc-z'": ("--team", "vc-z", "--template", "copd"),
        "unknown template 'nope'": ("--patient", "p-1", "--template", "nope"),
        "invalid care plan": ("--patient", "p-1", "--plan", str(bad)),
        "no clinician 'cl-z'": ("--patient", "p-1", "--template", "copd", "--as", "cl-z"),
        "is not in cl-b1's care team": ("--patient", "p-1", "--template", "copd", "--as", "cl-b1"),
        "dry_weight": ("--patient", "p-1", "--template", "heart_failure"),
    }
    answers = await asyncio.gather(
        *(asyncio.to_thread(_backtest, dsn, *argv) for argv in cases.values())
    )
    for expected, done in zip(cases, answers, strict=True):
        assert (2, 1, "") == (done.returncode, len(done.stderr.splitlines()), done.stdout)
        assert expected in done.stderr
    log = await db.fetch("SELECT clinician_id, patient_id, action, outcome FROM access_log")
    assert [("cl-b1", "p-1", "rules_backtest", "denied")] == [tuple(r) for r in log]


async def test_api_backtest_is_scoped_logged_and_validated(
    service: RunningService, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """200 with the report for the own team, 404 + denied row for another, 422 for a bad plan."""
    caplog.set_level(logging.INFO, logger="homemonitor.storage.backtest")
    await _store_week(db)
    own = {"Authorization": f"Bearer {await issue_token(db, 'cl-a1')}"}
    other = {"Authorization": f"Bearer {await issue_token(db, 'cl-b1')}"}
    spec = {
        "template": "heart_failure",
        "personal": {"dry_weight": 78},
        "thresholds": {"systolic": {"high": {"urgent": 180}}},
    }
    url = "/api/v1/patients/p-1/care-plan/backtest"
    async with httpx.AsyncClient(base_url=service.url) as http:
        ok = await http.post(url, json={"spec": spec, "days": 30}, headers=own)
        foreign = await http.post(url, json={"spec": spec}, headers=other)
        invalid = await http.post(url, json={"spec": {"template": "nope"}}, headers=own)
        unresolvable = await http.post(
            url, json={"spec": {"template": "heart_failure"}}, headers=own
        )
    assert (200, 404, 422, 422) == (
        ok.status_code,
        foreign.status_code,
        invalid.status_code,
        unresolvable.status_code,
    )
    [p] = ok.json()["patients"]
    assert [("systolic.high", "urgent", "urgent"), ("weight.gain_3d", None, "warning")] == [
        (r["rule"], r["current"], r["proposed"]) for r in p["rows"]
    ]
    assert 30 == ok.json()["days"]
    assert {"detail": "no such patient"} == foreign.json()
    assert "unknown template 'nope'" in invalid.json()["detail"][0]["msg"]
    log = await db.fetch(
        "SELECT clinician_id, patient_id, requested_id, action, outcome FROM access_log ORDER BY id"
    )
    assert [
        ("cl-a1", "p-1", "p-1", "rules_backtest", "allowed"),
        ("cl-b1", "p-1", "p-1", "rules_backtest", "denied"),
    ] == [tuple(r) for r in log]
    assert 1.0 == service.metric(
        "homemonitor_api_patient_reads_total", {"action": "rules_backtest"}
    )
    [done] = [r.msg for r in caplog.records if r.name == "homemonitor.storage.backtest"]
    assert isinstance(done, dict)
    assert (1, 1, 2) == (done["patients"], done["current_alerts"], done["proposed_alerts"])
    assert "p-1" not in json.dumps(done, default=str)
