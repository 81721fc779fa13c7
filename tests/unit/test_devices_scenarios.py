"""Physiology, clinical scenarios, device faults and the demo clinic's registry."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from homemonitor.contract.protocol import DEVICE_ID_PATTERN, GATEWAY_ID_PATTERN, PayloadFormat
from homemonitor.contract.readings import Metric, Quantity
from homemonitor.registry import parse
from homemonitor.registry.plans import resolved
from homemonitor.rules import episodes
from homemonitor.rules.evaluate import evaluate
from homemonitor.rules.history import History, StoredReading, instants
from homemonitor.rules.templates import TEMPLATES
from homemonitor_devices.clock import SimClock
from homemonitor_devices.measurement import DeviceKind
from homemonitor_devices.physiology import Baseline, Physiology
from homemonitor_devices.scenarios import (
    Binding,
    Course,
    Fault,
    PatientPlan,
    Publication,
    copd_exacerbation,
    heart_failure_decompensation,
    hypertensive_crisis,
    run_patient,
    stable,
)
from homemonitor_devices.simulate import Assignments, demo_clinic

START = datetime(2026, 3, 2, tzinfo=UTC)
END = START + timedelta(days=10)
ONSET = START + timedelta(days=2)
ALL_KINDS = tuple(DeviceKind)


def _plan(
    course: Course,
    *,
    faults: frozenset[Fault] = frozenset(),
    fmt: PayloadFormat = PayloadFormat.NATIVE,
    baseline: Baseline | None = None,
) -> PatientPlan:
    bindings = tuple(
        Binding(f"{kind.id_prefix}-0001", kind, START - timedelta(days=30)) for kind in ALL_KINDS
    )
    return PatientPlan(
        "p-0001", "gw-0001", "heart_failure", course, baseline or Baseline(), bindings, fmt, faults
    )


def _series(publications: list[Publication], quantity: Quantity) -> list[tuple[datetime, float]]:
    return [
        (p.measurement.received_at, p.measurement.values[quantity])
        for p in publications
        if p.measurement is not None and quantity in p.measurement.values
    ]


def _mean_between(series: list[tuple[datetime, float]], first: float, last: float) -> float:
    """Mean of the values measured between day ``first`` and day ``last`` of the run."""
    low, high = START + timedelta(days=first), START + timedelta(days=last)
    return statistics.fmean(v for at, v in series if low <= at < high)


def _wire(publications: list[Publication]) -> list[tuple[str, bytes]]:
    return [(p.topic, p.payload) for p in publications]


def test_same_seed_gives_byte_identical_payloads() -> None:
    """A scenario run is deterministic for its seed, and another seed changes it."""
    faults = frozenset({Fault.DUPLICATE_SENDS, Fault.GARBAGE, Fault.CLOCK_SKEW})
    for fmt in PayloadFormat:
        plan = _plan(heart_failure_decompensation(ONSET), faults=faults, fmt=fmt)
        first = run_patient(plan, start=START, end=END, seed=42)
        again = run_patient(plan, start=START, end=END, seed=42)
        other = run_patient(plan, start=START, end=END, seed=43)
        assert _wire(first) == _wire(again)
        assert _wire(first) != _wire(other)


def test_demo_clinic_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same registry and the same merged payload sequence."""
    registry, assignments = demo_clinic(12, seed=5, start=START, days=2)
    registry_again, assignments_again = demo_clinic(12, seed=5, start=START, days=2)
    assert json.dumps(registry) == json.dumps(registry_again)
    assert _wire(list(assignments.publications())) == _wire(list(assignments_again.publications()))


@pytest.mark.parametrize(
    ("course", "quantity", "change"),
    [
        (heart_failure_decompensation(ONSET, weight_per_day=0.4), Quantity.BODY_WEIGHT, 2.0),
        (heart_failure_decompensation(ONSET), Quantity.SPO2, -4.0),
        (hypertensive_crisis(ONSET), Quantity.SYSTOLIC, 40.0),
        (hypertensive_crisis(ONSET), Quantity.DIASTOLIC, 20.0),
        (copd_exacerbation(ONSET), Quantity.SPO2, -5.0),
        (copd_exacerbation(ONSET), Quantity.HEART_RATE, 12.0),
    ],
    ids=lambda v: v.scenario if isinstance(v, Course) else str(v),
)
def test_scenario_moves_the_vital_sign(course: Course, quantity: Quantity, change: float) -> None:
    """Over the run each deterioration moves its vital sign at least this far, this way."""
    series = _series(run_patient(_plan(course), start=START, end=END, seed=3), quantity)
    moved = _mean_between(series, 8, 10) - _mean_between(series, 0, 2)
    assert (change > 0) == (moved > 0)
    assert abs(moved) >= abs(change)


def test_scenarios_cross_their_thresholds() -> None:
    """Hypertensive crisis passes systolic 180; a COPD exacerbation takes SpO2 below 90."""
    crisis = _series(
        run_patient(_plan(hypertensive_crisis(ONSET)), start=START, end=END, seed=1),
        Quantity.SYSTOLIC,
    )
    copd = _series(
        run_patient(_plan(copd_exacerbation(ONSET)), start=START, end=END, seed=1), Quantity.SPO2
    )
    assert max(v for _, v in crisis) > 180
    assert min(v for _, v in copd) < 90


@pytest.mark.parametrize("quantity", [Quantity.BODY_WEIGHT, Quantity.SYSTOLIC, Quantity.SPO2])
def test_stable_patient_stays_near_baseline(quantity: Quantity) -> None:
    """A stable patient's vital signs do not trend."""
    series = _series(run_patient(_plan(stable()), start=START, end=END, seed=9), quantity)
    tolerance = {Quantity.BODY_WEIGHT: 0.8, Quantity.SYSTOLIC: 8.0, Quantity.SPO2: 1.5}[quantity]
    assert abs(_mean_between(series, 8, 10) - _mean_between(series, 0, 2)) < tolerance


def test_physiology_has_a_circadian_rhythm() -> None:
    """Without noise, blood pressure is higher mid-morning than in the small hours."""
    body = Physiology(Baseline(systolic=130), random.Random(1))
    morning = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    high = body.true_value(Quantity.SYSTOLIC, morning)
    low = body.true_value(Quantity.SYSTOLIC, morning + timedelta(hours=12))
    assert high - low > 8


def test_clock_skew_puts_one_device_hours_ahead() -> None:
    """With clock_skew one device reports times hours after the gateway received them."""
    plan = _plan(stable(), faults=frozenset({Fault.CLOCK_SKEW}))
    skews = {
        (p.measurement.device_id, p.measurement.measured_at - p.measurement.received_at)
        for p in run_patient(plan, start=START, end=END, seed=2)
        if p.measurement is not None
    }
    ahead = {device for device, skew in skews if skew >= timedelta(hours=2)}
    assert 1 == len(ahead)
    assert {timedelta(0)} == {skew for device, skew in skews if device not in ahead}


def test_duplicate_sends_repeat_the_same_bytes() -> None:
    """Each duplicate is an exact copy of a message sent just before it."""
    plan = _plan(stable(), faults=frozenset({Fault.DUPLICATE_SENDS}))
    publications = run_patient(plan, start=START, end=END, seed=2)
    originals = {p.payload for p in publications if not p.duplicate}
    duplicates = [p.payload for p in publications if p.duplicate]
    assert duplicates
    assert set(duplicates) <= originals


def test_offline_backlog_holds_readings_then_sends_them_in_order() -> None:
    """An offline gateway sends hours of readings at once when it is back, oldest first."""
    plan = _plan(stable(), faults=frozenset({Fault.OFFLINE_BACKLOG}))
    sent = [
        (p.publish_at, p.measurement.received_at)
        for p in run_patient(plan, start=START, end=END, seed=2)
        if p.measurement is not None
    ]
    late = [
        (publish_at, measured)
        for publish_at, measured in sent
        if publish_at - measured > timedelta(hours=1)
    ]
    assert len(late) >= 3
    assert 1 == len({publish_at for publish_at, _ in late})
    assert sorted(late) == late


def test_garbage_is_not_decodable_json() -> None:
    """Garbage messages are random bytes or truncated JSON, with no measurement."""
    plan = _plan(stable(), faults=frozenset({Fault.GARBAGE}))
    junk = [p for p in run_patient(plan, start=START, end=END, seed=2) if p.measurement is None]
    assert len(junk) >= 5
    for publication in junk:
        with pytest.raises(ValueError):
            json.loads(publication.payload)


def test_moved_device_reports_for_its_new_patient_from_the_move_on() -> None:
    """After device_moved, the device's readings come from the new patient's gateway only."""
    _, assignments = demo_clinic(20, seed=4, start=START, days=4)
    moved = [p for p in assignments.patients if Fault.DEVICE_MOVED in p.faults]
    giver = next(p for p in moved if any(b.until for b in p.devices))
    taker = next(p for p in moved if p is not giver)
    binding = next(b for b in giver.devices if b.until is not None)
    moved_at = binding.until
    assert moved_at is not None
    senders = {
        (p.gateway_id, p.measurement.received_at >= moved_at)
        for p in assignments.publications()
        if p.measurement is not None and p.measurement.device_id == binding.device_id
    }
    assert {(giver.gateway_id, False), (taker.gateway_id, True)} == senders


def test_demo_clinic_registry_format() -> None:
    """The registry has teams, devices, gateways and patients with valid ids and plans."""
    registry, assignments = demo_clinic(50, seed=7, start=START)
    devices = {d["id"]: d["kind"] for d in registry["devices"]}
    gateways = {g["id"] for g in registry["gateways"]}
    clinicians = {c["id"] for t in registry["care_teams"] for c in t["clinicians"]}
    assert ["care_teams", "devices", "gateways", "patients"] == list(registry)
    assert 4 == len(registry["care_teams"])  # three vårdcentraler and the on-call team
    assert 50 == len(registry["patients"]) == len(gateways) == len(assignments.patients)
    assert all(re.fullmatch(DEVICE_ID_PATTERN, d) for d in devices)
    assert all(re.fullmatch(GATEWAY_ID_PATTERN, g) for g in gateways)
    assert {kind.value for kind in DeviceKind} >= set(devices.values())
    for patient in registry["patients"]:
        plan = patient["care_plan"]
        assert patient["care_contact"] in clinicians
        assert plan["changed_by"] in clinicians
        assert {"version", "changed_by", "reason", "template"} <= set(plan)
        allowed = {"version", "changed_by", "reason", "template", "personal", "disabled"}
        assert set(plan) <= allowed | {"overrides"}
        assert (patient["condition"], f"{patient['condition']} template") == (
            plan["template"],
            plan["reason"].split(";")[0],
        )
        assert 1 <= len(patient["devices"]) <= 4
        assert {b["device"] for b in patient["devices"]} <= set(devices)
        assert patient["condition"] in {"heart_failure", "hypertension", "copd"}
    conditions = {p["condition"] for p in registry["patients"]}
    assert {"heart_failure", "hypertension", "copd"} == conditions
    assert {
        "stable",
        "heart_failure_decompensation",
        "hypertensive_crisis",
        "copd_exacerbation",
    } == set(assignments.scenarios().values())


def test_service_accepts_the_demo_registry(tmp_path: Path) -> None:
    """The service's registry loader accepts the demo clinic, written out as YAML."""
    if importlib.util.find_spec("homemonitor.registry") is None:
        pytest.skip("homemonitor.registry is not written yet")
    from homemonitor import registry as service_registry  # noqa: PLC0415 - optional module

    description, _ = demo_clinic(50, seed=7, start=START)
    path = tmp_path / "clinic.yaml"
    path.write_text(yaml.safe_dump(description, allow_unicode=True), encoding="utf-8")
    loaded = service_registry.load_file(path)
    assert 50 == len(loaded.patients)
    assert len(description["devices"]) == len(loaded.devices)


def test_each_home_gateway_speaks_for_its_own_devices_only() -> None:
    """Every demo reading resolves, through the gateway that sent it, to its own patient."""
    # The registry pairs each home's gateway with the home's devices while they are there,
    # so the moved device changes gateway when it changes patient. Readings from a skewed
    # device clock are left out: the service judges those at the time they claim.
    from homemonitor.registry import RegistryCache, parse  # noqa: PLC0415 - service side

    description, assignments = demo_clinic(20, seed=4, start=START, days=4)
    cache = RegistryCache.from_description(parse(description))
    patient_of = {p.gateway_id: p.patient_id for p in assignments.patients}
    resolved = [
        (cache.resolve(p.gateway_id, m.device_id, m.measured_at), patient_of[p.gateway_id])
        for p in assignments.publications()
        if (m := p.measurement) is not None and m.measured_at == m.received_at
    ]
    assert len(resolved) > 200
    assert [] == [(got, want) for got, want in resolved if got != want]
    moved = [p for p in assignments.patients if Fault.DEVICE_MOVED in p.faults]
    paired = {g["id"]: g["devices"] for g in description["gateways"]}
    assert 2 == len(moved)
    assert all(paired[p.gateway_id] for p in moved)
    assert any(s["until"] for p in moved for s in paired[p.gateway_id])


def test_demo_clinic_plans_are_the_condition_templates_personalised() -> None:
    """HF plans set the dry weight (no oximeter: spo2.low off); COPD the usual SpO2 - 2 %."""
    registry, assignments = demo_clinic(30, seed=7, start=START)
    plans = {p.patient_id: p for p in assignments.patients}
    expected, actual = [], []
    for patient in registry["patients"]:
        plan = {k: v for k, v in patient["care_plan"].items() if k not in ("changed_by", "reason")}
        simulated = plans[patient["id"]]
        kinds = {binding.kind for binding in simulated.devices}
        baseline = simulated.baseline
        if patient["condition"] == "heart_failure":
            want = {"template": "heart_failure", "personal": {"dry_weight": baseline.body_weight}}
            if DeviceKind.PULSE_OXIMETER not in kinds:
                want["disabled"] = ["spo2.low"]
            if Fault.STOPS_MEASURING in simulated.faults:  # the one who stops weighing
                want["overrides"] = {
                    "missing.body_weight": {"tolerate_hours": 24, "run_in_days": 2}
                }
        elif patient["condition"] == "copd":
            want = {"template": "copd", "personal": {"target_spo2_low": round(baseline.spo2) - 2}}
        else:
            want = {"template": "hypertension"}
        expected.append({"version": 1, **want})
        actual.append(plan)
    assert expected == actual
    assert {"heart_failure", "hypertension", "copd"} == {p["template"] for p in actual}
    assert any("disabled" in p for p in actual)


def _alerts_as_the_demo_shows_them(
    description: dict[str, Any], assignments: Assignments
) -> dict[str, set[str]]:
    """Per patient, the rules whose episodes open when the demo replays ``assignments``.

    The demo's clinic ends now, so its worker judges every reading at about the run's end:
    only those of the last 24 hours (``current_hours``) open an episode, the older ones are
    history. The same engine the worker runs, each instant in measured order; pending
    retakes are decided after the end.
    """
    plans = {
        p.id: resolved(p.care_plan.spec(), p.care_plan.version)
        for p in parse(description).patients
        if p.care_plan is not None
    }
    patient_of = {p.gateway_id: p.patient_id for p in assignments.patients}
    stored: dict[str, dict[object, StoredReading]] = {pid: {} for pid in plans}
    for publication in assignments.publications():
        if (m := publication.measurement) is not None:
            reading = StoredReading(
                m.measured_at.astimezone(UTC), m.device_id, m.metric, dict(m.values), m.quality
            )
            stored[patient_of[publication.gateway_id]][reading.key] = reading
    opened: dict[str, set[str]] = {}
    for patient_id, plan in plans.items():
        history = History(sorted(stored[patient_id].values(), key=lambda r: r.measured_at))
        states: dict[str, episodes.EpisodeState] = {}
        changes = []
        for at, group in instants(history.readings):
            outcome = evaluate(plan, history.until(at), group, states, assignments.end)
            states.update(outcome.states)
            changes += outcome.changes
        after = assignments.end + timedelta(hours=1)
        for rule_id, state in states.items():
            rule = plan.rule(rule_id)
            if state.status == "pending" and rule is not None:
                changes += episodes.due(rule, state, after)[1]
        opened[patient_id] = {c.rule for c in changes if c.kind in ("opened", "reopened")}
    return opened


def test_deteriorating_patients_alert_on_their_template_and_stable_ones_mostly_do_not() -> None:
    """In a 6-day demo every deterioration opens its template's alert; few stable ones do."""
    registry, assignments = demo_clinic(50, seed=11, start=START, days=6)
    opened = _alerts_as_the_demo_shows_them(registry, assignments)
    alerted = {patient_id for patient_id, rules in opened.items() if rules}
    by_scenario: dict[str, set[str]] = {}
    for plan in assignments.patients:
        by_scenario.setdefault(plan.scenario, set()).update(opened[plan.patient_id])
    deteriorating = {p.patient_id for p in assignments.patients if p.scenario != "stable"}
    calm = {p.patient_id for p in assignments.patients} - deteriorating
    assert deteriorating <= alerted
    assert len(calm & alerted) <= len(calm) // 10
    assert "weight.above_dry" in by_scenario["heart_failure_decompensation"]
    assert "systolic.severe" in by_scenario["hypertensive_crisis"]
    assert "spo2.below_target" in by_scenario["copd_exacerbation"]
    assert by_scenario["heart_failure_decompensation"] <= {
        r.id for r in TEMPLATES["heart_failure"].rules
    }


def test_sim_clock_maps_real_seconds_to_simulated_time() -> None:
    """At a speed-up of 1440 one real minute is one simulated day."""
    now = [100.0]
    clock = SimClock(START, 1440.0, monotonic=lambda: now[0])
    now[0] += 60.0
    assert START + timedelta(days=1) == clock.now()
    assert 60.0 == clock.real_delay(START + timedelta(days=2))
    assert 0.0 == clock.real_delay(START)
    assert Metric.SPO2 == DeviceKind.PULSE_OXIMETER.metric


def test_one_demo_patient_stops_weighing_halfway_and_their_cuff_goes_on() -> None:
    """One stable heart-failure patient: no weight after the window's middle, blood
    pressure to its end; their plan alerts a day's silence after a 2-day run-in."""
    registry, assignments = demo_clinic(20, seed=3, start=START, days=4)
    silent = [p for p in assignments.patients if Fault.STOPS_MEASURING in p.faults]
    assert [("heart_failure", "stable")] == [(p.condition, p.scenario) for p in silent]
    plan = next(p for p in registry["patients"] if p["id"] == silent[0].patient_id)["care_plan"]
    assert {"missing.body_weight": {"tolerate_hours": 24, "run_in_days": 2}} == plan["overrides"]
    middle = START + timedelta(days=2)
    sent = run_patient(silent[0], start=START, end=START + timedelta(days=4), seed=3)
    last: dict[DeviceKind, datetime] = {}
    for p in sent:
        if p.measurement is not None:
            last[p.measurement.kind] = max(last.get(p.measurement.kind, START), p.publish_at)
    assert START + timedelta(days=1) < last[DeviceKind.SCALE] < middle
    assert last[DeviceKind.BLOOD_PRESSURE_CUFF] > START + timedelta(days=3, hours=12)
