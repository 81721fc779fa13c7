"""The web pages' queries against real PostgreSQL: overview, devices, follow-up, access review."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import asyncpg

from homemonitor.contract.readings import Metric, Quantity
from homemonitor.registry import plans
from homemonitor.web import followup, overview, review
from homemonitor.web.charts import LOCAL_ZONE

NOW = datetime.now(UTC).replace(microsecond=0)


async def reading(
    db: asyncpg.Connection,
    device: str,
    patient: str,
    metric: str,
    at: datetime,
    *,
    gateway: str | None = "gw-1",
    quality: list[str] | None = None,
    **values: float,
) -> None:
    """One stored reading, as the worker would have written it."""
    columns = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(7, 7 + len(values)))
    await db.execute(
        "INSERT INTO readings (device_id, patient_id, metric, measured_at, received_at, source, "
        f"gateway_id, quality, {columns}) VALUES ($1, $2, $3, $4, $4, 'native', $5, $6, {marks})",
        device,
        patient,
        metric,
        at,
        gateway,
        quality or [],
        *values.values(),
    )


async def alert(
    db: asyncpg.Connection,
    patient: str,
    team: str,
    rule: str,
    raised: datetime,
    *,
    severity: str = "warning",
    status: str = "open",
    seen_after: timedelta | None = None,
    actionable: bool | None = None,
) -> int:
    """An alert with its events: raised at ``raised``, seen by a clinician ``seen_after``."""
    explanation = json.dumps({"sentence": "x", "facts": {}, "plan_version": 1})
    alert_id: int = await db.fetchval(
        "INSERT INTO alerts (patient_id, care_team_id, rule, quantity, direction, severity, "
        "peak_severity, status, plan_version, threshold, opened_at, opening_device_id, "
        "opening_metric, opening_measured_at, opening_value, worst_value, last_measured_at, "
        "evaluated_at, opening_explanation, latest_explanation, resolved_at, actionable) "
        "VALUES ($1, $2, $3, 'systolic', 'high', $4, $4, $5, 1, 160, $6, 'cuff-1', "
        "'blood_pressure', $6, 170, 170, $6, $6, $7::jsonb, $7::jsonb, $8, $9) RETURNING id",
        patient,
        team,
        rule,
        severity,
        status,
        raised,
        explanation,
        raised + timedelta(hours=5) if status == "resolved" else None,
        actionable,
    )
    await db.execute(
        "INSERT INTO alert_events (alert_id, at, kind, actor) VALUES ($1, $2, 'opened', 'rule')",
        alert_id,
        raised,
    )
    if seen_after is not None:
        clinician = "cl-a1" if team == "vc-a" else "cl-b1"
        await db.execute(
            "INSERT INTO alert_events (alert_id, at, kind, actor, clinician_id) "
            "VALUES ($1, $2, 'acknowledged', 'clinician', $3)",
            alert_id,
            raised + seen_after,
            clinician,
        )
    return alert_id


async def test_team_patients_mine_first_with_last_reading_per_metric_and_alerts(
    db: asyncpg.Connection,
) -> None:
    """My patients: the team's only, with the latest reading of each metric and open alerts."""
    await reading(
        db, "cuff-1", "p-1", "blood_pressure", NOW - timedelta(days=2), systolic=150, diastolic=90
    )
    await reading(
        db, "cuff-1", "p-1", "blood_pressure", NOW - timedelta(days=1), systolic=142, diastolic=88
    )
    await reading(db, "scale-1", "p-1", "body_weight", NOW - timedelta(days=3), body_weight=80.5)
    await reading(db, "oxi-2", "p-2", "spo2", NOW, gateway="gw-2", spo2=95)
    await alert(db, "p-3", "vc-a", "systolic.high", NOW - timedelta(hours=3), severity="urgent")
    await alert(db, "p-3", "vc-a", "weight.gain_3d", NOW - timedelta(days=20), status="resolved")
    await db.execute("UPDATE patients SET care_contact_id = NULL WHERE id = 'p-3'")

    found = await overview.team_patients(db, "vc-a", "cl-a1")

    assert ["p-1", "p-3"] == [p.id for p in found]  # p-1 is cl-a1's; p-2 another team's
    p1, p3 = found
    assert ("Nurse A1", 0, 0) == (p1.care_contact_name, p1.active_alerts, p1.urgent_alerts)
    assert {Metric.BLOOD_PRESSURE, Metric.BODY_WEIGHT} == set(p1.last)
    bp = p1.last[Metric.BLOOD_PRESSURE]
    assert (NOW - timedelta(days=1), 142.0, 88.0) == (
        bp.measured_at,
        bp.values[Quantity.SYSTOLIC],
        bp.values[Quantity.DIASTOLIC],
    )
    assert (None, 1, 1, {}) == (p3.care_contact_name, p3.active_alerts, p3.urgent_alerts, p3.last)


async def test_devices_with_gateway_last_contact_and_days_measured(db: asyncpg.Connection) -> None:
    """Each bound device with its gateway, its last reading, and the days of 14 it measured."""
    noon = datetime.combine(NOW.astimezone(LOCAL_ZONE).date(), datetime.min.time(), LOCAL_ZONE)
    noon += timedelta(hours=12)
    for days_ago, minutes in ((0, 0), (1, 0), (1, 30), (5, 0)):
        at = noon - timedelta(days=days_ago) + timedelta(minutes=minutes)
        await reading(db, "scale-1", "p-1", "body_weight", at, body_weight=80)
    await reading(
        db,
        "cuff-3",
        "p-3",
        "blood_pressure",
        noon + timedelta(minutes=1),
        systolic=120,
        diastolic=80,
    )

    lines = {d.device_id: d for d in await overview.devices(db, "p-1", noon + timedelta(minutes=5))}

    assert {"cuff-1", "scale-1"} == set(lines)
    scale, cuff = lines["scale-1"], lines["cuff-1"]
    assert ("scale", "gw-1", noon, noon, 3, 14) == (
        scale.kind,
        scale.gateway_id,
        scale.last_measured_at,
        scale.gateway_last_received_at,  # p-3's later reading through gw-1 is not p-1's
        scale.days_with_readings,
        scale.days,
    )
    assert (None, 0) == (cuff.last_measured_at, cuff.days_with_readings)


async def test_series_bounds_and_window_from_the_plan(db: asyncpg.Connection) -> None:
    """Points per quantity (flagged ones questionable) and the plan's bounds to draw."""
    await reading(
        db, "cuff-1", "p-1", "blood_pressure", NOW - timedelta(days=1), systolic=150, diastolic=90
    )
    await reading(
        db,
        "cuff-1",
        "p-1",
        "blood_pressure",
        NOW - timedelta(hours=1),
        quality=["body_movement"],
        systolic=170,
        diastolic=95,
        heart_rate=80,
    )
    points = await overview.series(db, "p-1", NOW - timedelta(days=14), NOW)
    assert [(150.0, False), (170.0, True)] == [
        (p.value, p.questionable) for p in points[Quantity.SYSTOLIC]
    ]
    assert [80.0] == [p.value for p in points[Quantity.HEART_RATE]]

    version = await plans.current(db, "p-1")
    assert version is not None
    plan = plans.resolved(version.spec, version.version)
    assert [
        (95.0, "warning", "low"),
        (160.0, "warning", "high"),
        (180.0, "urgent", "high"),
    ] == sorted((b.value, b.level, b.direction) for b in overview.bounds(plan, Quantity.SYSTOLIC))
    assert [] == overview.bounds(plan, Quantity.SPO2)
    at = NOW - timedelta(hours=1)
    assert (at, at) == (
        overview.window(plan, "systolic.high", at).start,
        overview.window(plan, "systolic.high", at).end,
    )


async def test_follow_up_figures_per_week(db: asyncpg.Connection) -> None:
    """Alerts per patient-week, time to acknowledge, share actionable and adherence."""
    monday = followup.first_week(NOW, 1)
    week_start = datetime.combine(monday, datetime.min.time(), LOCAL_ZONE)
    t0 = week_start + timedelta(hours=1)
    # This week: three alerts for vc-a (two patients bound), seen after 10 and 30 min, one not.
    await alert(db, "p-1", "vc-a", "systolic.high", t0, seen_after=timedelta(minutes=10))
    await alert(db, "p-3", "vc-a", "systolic.high", t0, seen_after=timedelta(minutes=30))
    await alert(db, "p-1", "vc-a", "body_weight.high", t0)
    await alert(db, "p-2", "vc-b", "spo2.low", t0, seen_after=timedelta(minutes=1))  # other team
    # Resolved with answers.
    await alert(db, "p-1", "vc-a", "systolic.low", t0, status="resolved", actionable=True)
    await alert(db, "p-3", "vc-a", "systolic.low", t0, status="resolved", actionable=False)
    await alert(db, "p-3", "vc-a", "body_weight.high", t0 - timedelta(hours=0), status="resolved")
    # p-1 measured on the week's first day only.
    await reading(db, "scale-1", "p-1", "body_weight", t0, body_weight=80)

    figures = await followup.figures(db, "vc-a", NOW, weeks=2)

    previous, this = figures.weeks
    assert (monday - timedelta(weeks=1), 0, None) == (
        previous.start,
        previous.alerts,
        previous.ack_median_minutes,
    )
    assert (monday, 6, 2, 3.0) == (this.start, this.alerts, this.patients, this.per_patient)
    assert (2, 4) == (this.acknowledged, this.unacknowledged)
    assert (20.0, 28.0) == (
        round(this.ack_median_minutes or 0, 6),
        round(this.ack_p90_minutes or 0, 6),
    )
    days_so_far = (NOW.astimezone(LOCAL_ZONE).date() - monday).days + 1
    assert (2 * days_so_far, 1) == (this.expected_days, this.measured_days)
    assert [("body_weight.high", 0, 0, 1), ("systolic.low", 2, 1, 0)] == [
        (s.label, s.answered, s.actionable, s.unanswered) for s in figures.by_rule
    ]
    assert [(followup.NO_TEMPLATE, 2, 1, 1)] == [
        (s.label, s.answered, s.actionable, s.unanswered) for s in figures.by_template
    ]


async def test_access_review_views_checks_and_csv(db: asyncpg.Connection) -> None:
    """Per patient (reads and attempts), per clinician, denied, a sample check, and CSV."""
    rows = [
        ("cl-a1", "p-1", "view_alert", "allowed", "7"),
        ("cl-b1", "p-1", "view_readings", "denied", "p-1"),
        ("cl-b1", None, "view_readings", "denied", "p-1"),  # hypothetically unknown then
        ("cl-a1", "p-3", "view_readings", "allowed", "p-3"),
        ("=cmd", "p-3", "list_alerts", "allowed", None),
    ]
    for who, patient, action, outcome, requested in rows:
        await db.execute(
            "INSERT INTO access_log (clinician_id, patient_id, action, outcome, requested_id) "
            "VALUES ($1, $2, $3, $4, $5)",
            who,
            patient,
            action,
            outcome,
            requested,
        )
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=1)

    of_p1 = await review.for_patient(db, "p-1", start, end)
    assert [("cl-b1", "denied"), ("cl-b1", "denied"), ("cl-a1", "allowed")] == [
        (e.clinician_id, e.outcome) for e in of_p1
    ]
    of_a1 = await review.for_clinician(db, "cl-a1", start, end)
    assert [("p-3", "Nurse A1"), ("p-1", "Nurse A1")] == [
        (e.patient_id, e.clinician_name) for e in of_a1
    ]
    assert 2 == len(await review.denied(db, start, end))
    assert ["p-3", "p-1"] == review.patients_of(of_a1)

    sample = await review.open_check(
        db, "cl-a1", "sample", None, start=start, end=end, sample_size=2
    )
    whole = await review.open_check(db, "cl-a1", "patient", "p-1", start=start, end=end)
    drawn = await review.check(db, sample)
    assert drawn is not None
    assert 2 == len(drawn.items)
    assert {"allowed"} == {e.outcome for e in drawn.items}
    full = await review.check(db, whole)
    assert full is not None
    assert ["allowed", "denied", "denied"] == [e.outcome for e in full.items]  # oldest first
    await review.close_check(db, whole, "care relation in the journal", "follow_up", "asked B1")
    try:
        await review.close_check(db, whole, "again", "no_remarks", "")
    except review.CheckClosedError:
        pass
    else:
        raise AssertionError("a check closes once")
    closed = await review.check(db, whole)
    assert closed is not None
    assert ("done", "follow_up", "care relation in the journal") == (
        closed.status,
        closed.outcome,
        closed.checked,
    )
    assert [whole, sample] == [c.id for c in await review.checks(db)]

    text = review.to_csv(await review.for_patient(db, "p-3", start, end))
    parsed = list(csv.reader(io.StringIO(text)))
    assert list(review.CSV_COLUMNS) == parsed[0]
    assert ["'=cmd", "", "p-3", "list_alerts", "allowed", ""] == parsed[1][1:]
    assert ["cl-a1", "Nurse A1", "p-3", "view_readings", "allowed", "p-3"] == parsed[2][1:]
    assert (
        datetime.fromisoformat(parsed[1][0]).utcoffset() == NOW.astimezone(LOCAL_ZONE).utcoffset()
    )
