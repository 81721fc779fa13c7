"""The bench harness end to end, briefly, so it cannot rot: it checks, it does not time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from homemonitor import registry
from homemonitor.contract.protocol import PayloadFormat
from homemonitor.decoding import decode
from homemonitor.embedded import PrivateBroker, PrivateMosquitto
from homemonitor.registry import plans as stored_plans
from homemonitor.rules import careplan
from homemonitor.rules.careplan import PlanRow, PlanTable
from homemonitor_bench import history
from homemonitor_bench.clinic import Payloads, breaches, build_clinic
from homemonitor_bench.run import nats_settings, smoke
from tests.conftest import BOTH_BROKERS, private_nats

SENT_AT = "2026-01-01T00:00:00.000000+00:00"


@BOTH_BROKERS
async def test_bench_harness_stores_every_reading_once(
    dsn: str, broker: PrivateBroker, tmp_path: Path
) -> None:
    """The bench's load generator and worker process: every published reading stored once.

    On NATS too, as the bench's ``nats`` phase runs it (the worker told it is NATS).
    """
    verification = (await smoke(dsn, broker, tmp_path, patients=20, readings=1500)).verification
    assert (1500, 0, 0, 0) == (
        verification.published,
        verification.lost,
        verification.duplicated,
        verification.unexpected,
    )


def test_load_breaches_the_plan_exactly_where_it_says_about_one_percent() -> None:
    """Bench payloads decode cleanly, and the readings meant to breach (about 1 %) do."""
    clinic = build_clinic(200)
    reg = registry.parse(clinic.registry)
    plans = PlanTable(
        [PlanRow(p.id, p.care_team, 1, p.care_plan.thresholds) for p in reg.patients if p.care_plan]
    )
    owner = {b.device: p.id for p in reg.patients for b in p.devices}
    payloads = Payloads(clinic.devices, base_ms=1_700_000_000_000)
    decoded = [decode(PayloadFormat.NATIVE, payloads.payload(s, SENT_AT)) for s in range(20_000)]
    readings = [d.readings[0] for d in decoded]
    levels = careplan.evaluate(
        plans,
        np.array([plans.row(owner[r.device_id]) for r in readings], dtype=np.intp),
        careplan.values_matrix([r.values for r in readings]),
    )
    meant = [breaches(s, len(clinic.devices)) for s in range(20_000)]
    assert ([], [str(s) for s in range(20_000)], meant, True) == (
        [r for d in decoded for r in d.rejections],
        [r.message_id for r in readings],
        (levels.max(axis=1) > 0).tolist(),
        160 <= sum(meant) <= 240,
    )


async def test_bench_with_templates_stores_every_reading_once_and_opens_alerts(
    dsn: str, broker: PrivateMosquitto, tmp_path: Path
) -> None:
    """Templates plans over a seeded history: nothing lost or duplicated, breaches alert."""
    run = await smoke(
        dsn, broker, tmp_path, patients=20, readings=2000, rate=1000.0, plans="templates"
    )
    v = run.verification
    assert (2000, 0, 0, 0, True, True) == (
        v.published,
        v.lost,
        v.duplicated,
        v.unexpected,
        run.alerts_opened > 0,
        run.history_rows > 20 * 21,
    )


def test_templates_clinic_resolves_and_its_history_lies_before_the_load() -> None:
    """Every templates plan resolves; the seeded history is older than the first reading."""
    clinic = build_clinic(60, plans="templates")
    reg = registry.parse(clinic.registry)
    resolved = [stored_plans.resolved(p.care_plan.spec(), 1) for p in reg.patients if p.care_plan]
    base_ms = 1_767_225_600_000
    rows = list(history.history_rows(clinic.devices, base_ms, days=21))
    base = datetime.fromtimestamp(base_ms / 1000, UTC)
    assert ({"heart_failure", "hypertension", "copd"}, 60, True, True) == (
        {plan.template for plan in resolved},
        len(resolved),
        all(base > r[2] >= base - timedelta(days=21) for r in rows),
        abs(len(rows) - 21 * history.per_day(clinic.devices)) <= len(clinic.devices),
    )


def test_bench_nats_runs_with_the_settings_deploy_ships(tmp_path: Path) -> None:
    """The nats and crash phases' nats-server: deploy/nats/'s ack_wait, max_ack_pending and
    sync_interval, the last left out (and said so) where the installed NATS predates it."""
    private_nats(tmp_path)  # skipped without nats-server, as the bench skips those phases
    nats = nats_settings()
    too_old = tuple(map(int, nats.version.split(".")[:2])) < (2, 10)
    assert (30.0, 2500, None if too_old else "always", too_old) == (
        nats.ack_wait_s,
        nats.max_ack_pending,
        nats.sync_interval,
        "does not know it" in nats.note,
    )
