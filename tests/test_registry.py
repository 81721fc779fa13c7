"""The registry file: idempotent, checked, and care plans kept as history."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.contract.protocol import readings_topic
from homemonitor.contract.readings import Reason
from homemonitor.embedded import PrivateMosquitto
from homemonitor.errors import RegistryError
from homemonitor.registry.cache import PatientPlan
from homemonitor.rules.plan import ThresholdRule
from tests.conftest import REGISTRY, WEIGHT_GAIN_3D, RunningService, publisher, wait_until


async def _pairings(db: asyncpg.Connection) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT device_id, gateway_id, valid::text FROM device_pairings ORDER BY 1, 3"
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def test_applying_twice_changes_nothing(db: asyncpg.Connection) -> None:
    """The test registry applied a second time adds no plan version and keeps every row."""
    before = await db.fetchval("SELECT count(*) FROM device_bindings")
    pairings = await _pairings(db)
    summary = await registry.apply(db, registry.parse(REGISTRY))
    assert (0, before, 2, 5) == (
        summary.plans_added,
        await db.fetchval("SELECT count(*) FROM device_bindings"),
        summary.gateways,
        summary.pairings,
    )
    assert 5 == len(pairings)
    assert pairings == await _pairings(db)


async def test_a_gateways_device_list_is_the_whole_truth(db: asyncpg.Connection) -> None:
    """A device left out of its gateway's list is no longer paired with it; others stay."""
    reg = copy.deepcopy(REGISTRY)
    reg["gateways"][0]["devices"] = [
        p for p in reg["gateways"][0]["devices"] if p["device"] != "spare-9"
    ]
    await registry.apply(db, registry.parse(reg))
    assert ["cuff-1", "cuff-3", "oxi-2", "scale-1"] == [p[0] for p in await _pairings(db)]


def test_pairing_problems_are_refused() -> None:
    """Unknown devices, inverted or overlapping pairings and a twice-described gateway are named."""
    bad = copy.deepcopy(REGISTRY)
    gw1, gw2 = bad["gateways"]
    gw1["devices"].append({"device": "ghost-7", "from": "2020-01-01T00:00:00Z"})
    gw2["devices"].append(
        {"device": "scale-1", "from": "2021-01-01T00:00:00Z", "until": "2022-01-01T00:00:00Z"}
    )
    gw2["devices"].append(
        {"device": "oxi-2", "from": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}
    )
    bad["gateways"].append({"id": "gw-1"})
    with pytest.raises(RegistryError) as caught:
        registry.parse(bad)
    assert (
        [
            "gateway gw-1: device 'ghost-7' is not described",
            "gateway gw-2: pairing of oxi-2 ends before it starts",
            "gateway gw-1: described twice",
            "device scale-1: paired with gw-1 and gw-2 at the same time",
            "device oxi-2: paired with gw-2 and gw-2 at the same time",  # the open one, from 2020
        ]
        == [line.strip() for line in str(caught.value).splitlines()[1:]]
    )


async def test_resolve_checks_gateway_device_pairing_then_binding(db: asyncpg.Connection) -> None:
    """Each reason comes from the first check that fails; a described registry resolves alike."""
    handed_over = copy.deepcopy(REGISTRY)
    handed_over["gateways"][1]["devices"] = [
        {"device": "oxi-2", "from": "2020-01-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"}
    ]
    handed_over["gateways"].append(
        {"id": "gw-3", "devices": [{"device": "oxi-2", "from": "2026-06-01T00:00:00Z"}]}
    )
    reg = registry.parse(handed_over)
    await registry.apply(db, reg)
    loaded = registry.RegistryCache()
    await loaded.load(db)
    may, july = datetime(2026, 5, 31, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    questions = [
        ("gw-9", "ghost", may),  # neither known: the gateway is asked about first
        ("gw-1", "ghost", may),
        ("gw-1", "oxi-2", may),  # another home's device
        ("gw-2", "spare-9", may),  # not paired here, and bound to nobody: foreign first
        ("gw-1", "spare-9", may),
        ("gw-2", "oxi-2", may),
        ("gw-2", "oxi-2", july),  # after the handover, the old hub speaks for it no more
        ("gw-3", "oxi-2", may),  # and the new hub not before it
        ("gw-3", "oxi-2", july),
    ]
    expected = [
        Reason.UNKNOWN_GATEWAY,
        Reason.UNKNOWN_DEVICE,
        Reason.FOREIGN_DEVICE,
        Reason.FOREIGN_DEVICE,
        Reason.UNBOUND_DEVICE,
        "p-2",
        Reason.FOREIGN_DEVICE,
        Reason.FOREIGN_DEVICE,
        "p-2",
    ]
    described = registry.RegistryCache.from_description(reg)
    assert expected == [loaded.resolve(*q) for q in questions]
    assert expected == [described.resolve(*q) for q in questions]


async def _cached_plan(db: asyncpg.Connection, patient_id: str) -> PatientPlan:
    """The patient's current plan as a freshly loaded worker cache holds it."""
    cache = registry.RegistryCache()
    await cache.load(db)
    current = cache.plans.get(patient_id)
    assert current is not None
    return current


async def test_changed_plan_needs_a_new_version(db: asyncpg.Connection) -> None:
    """Changing thresholds under an existing version is refused; a new version is added."""
    changed = copy.deepcopy(REGISTRY)
    plan = changed["patients"][0]["care_plan"]
    plan["thresholds"]["systolic"]["high"]["warning"] = 150
    with pytest.raises(RegistryError, match="give the change a new version"):
        await registry.apply(db, registry.parse(changed))
    plan["version"] = 2
    assert 1 == (await registry.apply(db, registry.parse(changed))).plans_added
    current = await _cached_plan(db, "p-1")
    rule = current.plan.rule("systolic.high")
    assert isinstance(rule, ThresholdRule)
    assert (2, 150, True) == (current.version, rule.warning, current.plain)


async def test_a_plan_moved_to_its_template_is_a_new_version(db: asyncpg.Connection) -> None:
    """A thresholds plan moved to its template is version 2; a new dry weight needs a 3."""
    moved = copy.deepcopy(REGISTRY)
    plan = {
        "version": 2,
        "changed_by": "cl-a1",
        "reason": "heart failure template",
        "template": "heart_failure",
        "personal": {"dry_weight": 80.0},
    }
    moved["patients"][0]["care_plan"] = plan
    added = [(await registry.apply(db, registry.parse(moved))).plans_added for _ in range(2)]
    plan["personal"] = {"dry_weight": 78.5}
    with pytest.raises(RegistryError, match="give the change a new version"):
        await registry.apply(db, registry.parse(moved))
    plan["version"] = 3
    added.append((await registry.apply(db, registry.parse(moved))).plans_added)
    current = await _cached_plan(db, "p-1")
    rule = current.plan.rule("weight.above_dry")
    assert isinstance(rule, ThresholdRule)
    versions = await db.fetch(
        "SELECT version, plan ->> 'template' AS template FROM care_plans "
        "WHERE patient_id = 'p-1' ORDER BY version"
    )
    assert [1, 0, 1] == added
    assert [(1, None), (2, "heart_failure"), (3, "heart_failure")] == [tuple(v) for v in versions]
    assert (3, "heart_failure", {"dry_weight": 78.5}, False) == (
        current.version,
        current.plan.template,
        dict(current.plan.personal),
        current.plain,
    )
    assert ("dry_weight", 2.0) == (rule.relative_to, rule.warning)


#: A plan in the whole form: personal values, its own rules of two kinds, legacy bounds.
_SPEC: dict[str, object] = {
    "version": 1,
    "changed_by": "cl-a1",
    "reason": "dry weight set after discharge",
    "personal": {"dry_weight": 80.0},
    "rules": [
        WEIGHT_GAIN_3D,
        {
            "id": "weight.above_dry",
            "kind": "threshold",
            "quantity": "body_weight",
            "direction": "high",
            "relative_to": "dry_weight",
            "warning": 3.0,
        },
    ],
    "thresholds": {"systolic": {"high": {"urgent": 180}}},
}


async def test_a_whole_plan_is_stored_resolved_and_cached(db: asyncpg.Connection) -> None:
    """A full CarePlanSpec is stored as written, applied idempotently and cached resolved."""
    described = copy.deepcopy(REGISTRY)
    described["patients"][2]["care_plan"] = _SPEC
    first = await registry.apply(db, registry.parse(described))
    second = await registry.apply(db, registry.parse(described))
    stored = await db.fetchrow(
        "SELECT plan, thresholds, changed_by, reason FROM care_plans WHERE patient_id = 'p-3'"
    )
    cache = registry.RegistryCache()
    await cache.load(db)
    p3 = cache.plans.get("p-3")
    assert p3 is not None
    assert (1, 0) == (first.plans_added, second.plans_added)
    assert {  # as written: defaults are the code's, like a template's rules
        k: v for k, v in _SPEC.items() if k not in ("version", "changed_by", "reason")
    } == json.loads(stored["plan"])
    assert {"systolic": {"high": {"urgent": 180.0}}} == json.loads(stored["thresholds"])
    assert ("cl-a1", "dry weight set after discharge") == (stored["changed_by"], stored["reason"])
    assert (["weight.gain_3d", "weight.above_dry", "systolic.high"], False, "vc-a") == (
        [r.id for r in p3.plan.rules],
        p3.plain,
        p3.care_team_id,
    )
    other = copy.deepcopy(described)
    other["patients"][2]["care_plan"]["rules"][0]["warning"] = 1.5
    with pytest.raises(RegistryError, match="patient p-3: care plan version 1 already exists"):
        await registry.apply(db, registry.parse(other))


def test_a_plan_that_does_not_resolve_is_refused_naming_the_patient() -> None:
    """Unknown template, missing personal value: a RegistryError naming the patient and why."""
    described = copy.deepcopy(REGISTRY)
    described["patients"][2]["care_plan"] = {**_SPEC, "personal": {}}
    described["patients"][1]["care_plan"] = {"version": 1, "template": "no_such_condition"}
    with pytest.raises(RegistryError) as caught:
        registry.parse(described)
    assert "patient p-2: unknown template 'no_such_condition'" in str(caught.value)
    assert (
        "patient p-3: care plan is invalid: rule 'weight.above_dry' is relative to personal "
        "'dry_weight', which is not set"
    ) in str(caught.value)


def test_inconsistent_descriptions_are_refused() -> None:
    """Overlapping bindings, unknown teams and inverted levels are named in the error."""
    bad = copy.deepcopy(REGISTRY)
    bad["patients"][1]["devices"].append({"device": "cuff-1", "from": "2021-01-01T00:00:00Z"})
    bad["patients"][2]["care_team"] = "vc-nowhere"
    with pytest.raises(RegistryError) as caught:
        registry.parse(bad)
    assert "device cuff-1: bound to p-1 and p-2 at the same time" in str(caught.value)
    assert "care team 'vc-nowhere' is not described" in str(caught.value)
    inverted = copy.deepcopy(REGISTRY)
    inverted["patients"][0]["care_plan"]["thresholds"]["systolic"]["high"] = {
        "warning": 180,
        "urgent": 160,
    }
    with pytest.raises(RegistryError, match=r"high.urgent must be at or above high.warning"):
        registry.parse(inverted)


def test_ids_and_text_the_database_cannot_store_are_refused() -> None:
    """A NUL in a name, or a patient id an API path could not carry, is named in the error."""
    bad = copy.deepcopy(REGISTRY)
    bad["care_teams"][0]["name"] = "Vårdcentral\x00A"
    bad["patients"][2]["id"] = "p 3/x"
    with pytest.raises(RegistryError) as caught:
        registry.parse(bad)
    problems = str(caught.value).splitlines()[1:]
    assert ["care_teams.0.name", "patients.2.id"] == [p.split(":")[0].strip() for p in problems]


async def test_moved_device_resolves_by_time(db: asyncpg.Connection) -> None:
    """A device moved to another patient resolves to whoever had it when it measured."""
    moved = copy.deepcopy(REGISTRY)
    moved["patients"][0]["devices"][0]["until"] = "2026-06-01T00:00:00Z"
    moved["patients"][2]["devices"].append({"device": "cuff-1", "from": "2026-06-01T00:00:00Z"})
    await registry.apply(db, registry.parse(moved))
    cache = registry.RegistryCache()
    await cache.load(db)
    assert ["p-1", "p-3", Reason.UNBOUND_DEVICE, Reason.UNKNOWN_DEVICE] == [
        cache.patient_for("cuff-1", datetime(2026, 5, 31, tzinfo=UTC)),
        cache.patient_for("cuff-1", datetime(2026, 6, 1, tzinfo=UTC)),
        cache.patient_for("spare-9", datetime(2026, 6, 1, tzinfo=UTC)),
        cache.patient_for("ghost", datetime(2026, 6, 1, tzinfo=UTC)),
    ]


async def test_registry_change_reaches_a_running_worker(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection
) -> None:
    """A device bound while the service runs is accepted at once; before, it was quarantined."""
    payload = json.dumps(
        {
            "v": 1,
            "reading": {
                "device_id": "spare-9",
                "metric": "body_weight",
                "value": 70.0,
                "measured_at": datetime.now(UTC).isoformat(),
            },
        }
    ).encode()
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), payload, qos=1)
        await wait_until(lambda: db.fetchval("SELECT count(*) FROM quarantine"), lambda n: n == 1)
        bound = copy.deepcopy(REGISTRY)
        bound["patients"][2]["devices"].append(
            {"device": "spare-9", "from": "2020-01-01T00:00:00Z"}
        )
        await registry.apply(db, registry.parse(bound))
        second = payload.replace(b'"value": 70.0', b'"value": 70.5')
        await gw.publish(readings_topic("gw-1"), second, qos=1)
    row = await wait_until(
        lambda: db.fetchrow("SELECT patient_id, body_weight FROM readings"), lambda r: r is not None
    )
    assert ("p-3", 70.5) == (row["patient_id"], row["body_weight"])


async def test_reading_waits_for_the_registry_check_under_way(
    service: RunningService, broker: PrivateMosquitto, db: asyncpg.Connection, dsn: str
) -> None:
    """A reading that arrives while a registry reload is under way is resolved by the new copy."""
    bound = copy.deepcopy(REGISTRY)
    for patient in bound["patients"]:
        patient.pop("care_plan", None)  # apply leaves care_plans alone, so it can be locked
    bound["patients"][2]["devices"].append({"device": "spare-9", "from": "2020-01-01T00:00:00Z"})
    reading = {"device_id": "spare-9", "metric": "body_weight", "value": 70.5}
    reading["measured_at"] = datetime.now(UTC).isoformat()
    blocker = await asyncpg.connect(dsn)
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE care_plans IN ACCESS EXCLUSIVE MODE")
        await registry.apply(db, registry.parse(bound))
        # The worker's reload after the NOTIFY has read devices and bindings and waits here.
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) FROM pg_locks "
                "WHERE relation = 'care_plans'::regclass AND NOT granted"
            ),
            lambda n: n == 1,
        )
        async with publisher(broker) as gw:
            payload = json.dumps({"v": 1, "reading": reading}).encode()
            await gw.publish(readings_topic("gw-1"), payload, qos=1)
        await wait_until(
            lambda: service.metric_async("homemonitor_messages_received_total", {"format": "json"}),
            lambda n: n == 1,
        )
        await lock.commit()  # the reload ends while the reading's batch waits for it
    finally:
        await blocker.close()
    stored_and_quarantined = await wait_until(
        lambda: db.fetchrow(
            "SELECT (SELECT count(*) FROM readings WHERE patient_id = 'p-3') AS stored, "
            "(SELECT count(*) FROM quarantine) AS quarantined"
        ),
        lambda r: r is not None and sum(r) > 0,
    )
    assert (1, 0) == tuple(stored_and_quarantined)


async def test_a_change_heard_of_is_looked_up_for_an_unbound_device_at_once(
    db: asyncpg.Connection,
) -> None:
    """After a NOTIFY, an unbound device makes the cache ask the database despite the rate limit."""
    cache = registry.RegistryCache(unknown_check_interval=3600)
    connect = functools.partial(contextlib.nullcontext, db)
    await cache.refresh(connect)
    bound = copy.deepcopy(REGISTRY)
    bound["patients"][2]["devices"].append({"device": "spare-9", "from": "2020-01-01T00:00:00Z"})
    await registry.apply(db, registry.parse(bound))
    unheard = await cache.check_for_unknown(connect)  # within the interval: not asked
    cache.mark_stale()  # what the worker does on NOTIFY homemonitor_registry
    heard = await cache.check_for_unknown(connect)
    at = datetime(2026, 6, 1, tzinfo=UTC)
    assert (False, True, "p-3") == (unheard, heard, cache.patient_for("spare-9", at))
