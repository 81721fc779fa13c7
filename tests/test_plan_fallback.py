"""A template that drops a rule leaves stored plans that override it unresolvable.

The worker then runs each such patient's newest version that still resolves (or no rule,
when none does); ``homemonitor registry check`` and the metric
``homemonitor_care_plans_not_in_force`` say so before a patient goes unwatched unnoticed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from homemonitor.cli import main
from homemonitor.contract.protocol import readings_topic
from homemonitor.registry import NOTIFY_CHANNEL, plans
from tests.conftest import PrivateBroker, RunningService, publisher, settings_for, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)
#: The COPD template as it was before version 2, with the clinician's own changes.
OVERRIDES_A_REMOVED_RULE = {
    "template": "copd",
    "personal": {"target_spo2_low": 90},
    "overrides": {"spo2.trend": {"warning": 4.0}},
}
DISABLES_A_REMOVED_RULE = {
    "template": "copd",
    "personal": {"target_spo2_low": 90},
    "disabled": ["heart_rate.trend"],
}


async def _store(conn: asyncpg.Connection, patient_id: str, version: int, plan: object) -> None:
    """A plan version as an older release stored it (the API would refuse it today)."""
    await conn.execute(
        "INSERT INTO care_plans (patient_id, version, plan, changed_by, reason) "
        "VALUES ($1, $2, $3::jsonb, 'cl-a1', 'before the upgrade')",
        patient_id,
        version,
        json.dumps(plan),
    )


@pytest.fixture
async def stale(db: asyncpg.Connection) -> asyncpg.Connection:
    """p-2's newest version overrides a removed rule (its version 1 resolves); p-3's only
    version disables one (nothing resolves)."""
    await _store(db, "p-2", 2, OVERRIDES_A_REMOVED_RULE)
    await _store(db, "p-3", 1, DISABLES_A_REMOVED_RULE)
    return db


async def test_registry_check_lists_each_plan_that_does_not_resolve(
    stale: asyncpg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    found = await plans.not_in_force(stale)
    assert [("p-2", 2, 1), ("p-3", 1, None)] == [
        (n.patient_id, n.version, n.in_force) for n in found
    ]
    assert "the template has no such rule" in found[0].problem

    assert 1 == await asyncio.to_thread(main, ["registry", "check", "--database-url", dsn])
    out, err = capsys.readouterr()
    assert "p-2: version 2 does not resolve" in out
    assert "version 1 is in force" in out
    assert "p-3: version 1 does not resolve" in out
    assert "NO version resolves" in out
    assert "2 patients' newest care plan does not resolve" in err
    logged = await stale.fetch(
        "SELECT clinician_id, patient_id FROM access_log WHERE action = 'check_care_plans' "
        "ORDER BY patient_id"
    )
    assert [("p-2",), ("p-3",)] == [(r["patient_id"],) for r in logged]
    assert all(r["clinician_id"].startswith("cli:") for r in logged)


async def test_registry_check_passes_when_every_plan_resolves(
    db: asyncpg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [] == await plans.not_in_force(db)
    assert 0 == await asyncio.to_thread(main, ["registry", "check", "--database-url", dsn])
    assert "every patient's newest care-plan version resolves" in capsys.readouterr().out


async def test_the_worker_runs_the_older_version_and_counts_who_is_not_on_the_newest(
    stale: asyncpg.Connection, dsn: str, broker: PrivateBroker
) -> None:
    svc = RunningService(settings_for(dsn, broker))
    await svc.start()
    try:
        assert 1 == svc.metric("homemonitor_care_plans_not_in_force", {"instead": "older"})
        assert 1 == svc.metric("homemonitor_care_plans_not_in_force", {"instead": "none"})
        # p-2's version 1 (SpO2 below 92 % a warning) is what runs: an alert of version 1.
        reading = {
            "device_id": "oxi-2",
            "metric": "spo2",
            "value": 90,
            "measured_at": (NOW - timedelta(minutes=1)).isoformat(),
        }
        async with publisher(broker, "gw-2") as gw:
            await gw.publish(
                readings_topic("gw-2"), json.dumps({"v": 1, "reading": reading}), qos=1
            )
        alert = await wait_until(
            lambda: stale.fetchrow("SELECT patient_id, severity, plan_version FROM alerts"),
            lambda r: r is not None,
        )
        assert ("p-2", "warning", 1) == tuple(alert)
        # A new version that resolves puts the newest plan back in force.
        await _store(stale, "p-2", 3, {"template": "copd", "personal": {"target_spo2_low": 90}})
        await stale.execute("UPDATE registry_revision SET revision = revision + 1")
        await stale.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        await wait_until(
            lambda: svc.metric_async("homemonitor_care_plans_not_in_force", {"instead": "older"}),
            lambda n: n == 0,
        )
        assert 1 == svc.metric("homemonitor_care_plans_not_in_force", {"instead": "none"})
    finally:
        await svc.stop()
