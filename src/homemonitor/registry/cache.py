"""The worker's registry cache: who may speak for a device, whose reading it is, which plan.

:class:`RegistryCache` is the worker's read-only copy of gateways, device pairings and
bindings, and each patient's current care plan (:class:`Plans`: resolved into the engine's
rules, with the patient's care team and plan version), for resolving a reading's patient
and evaluating its plan per batch. It is only a cache: reloaded on ``NOTIFY
homemonitor_registry`` (``registry apply``, a plan changed through the API), periodically,
and when a reading names a gateway or device it cannot resolve.

Two time-bounded relations decide whose reading it is. A *pairing* says which gateway
(home hub) may speak for a device; a *binding* says which patient the device measures.
Both are looked up at the reading's ``measured_at``; see :meth:`RegistryCache.resolve`.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import gc
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from homemonitor import logs
from homemonitor.contract.readings import Quantity, Reason
from homemonitor.errors import PlanError
from homemonitor.registry import plans as stored_plans
from homemonitor.registry.description import RegistryIn
from homemonitor.rules.careplan import Bounds, Levels, PlanRow, PlanTable
from homemonitor.rules.histories import HistoryCache
from homemonitor.rules.plan import Plan, ThresholdRule, resolve
from homemonitor.storage.database import Conn

if TYPE_CHECKING:  # routing reads the registry's team models, which import this package
    from homemonitor.alerts.routing import Routing

log = logs.get_logger(__name__)

#: How the cache borrows a connection when it has to ask the database (``pool.acquire``).
Connect: TypeAlias = Callable[[], AbstractAsyncContextManager[Conn]]


class _Row(Protocol):
    """A database record, or a dict standing in for one (:meth:`RegistryCache.from_description`)."""

    def __getitem__(self, key: str, /) -> Any: ...


_Rows: TypeAlias = Sequence[_Row]


@dataclasses.dataclass(frozen=True, slots=True)
class _Span:
    start: datetime
    end: datetime | None
    holder: str  # the patient (a binding) or the gateway (a pairing)


class _Timeline:
    """Who holds each device when: its spans in start order, found by bisect (O(log n))."""

    __slots__ = ("_only", "_spans", "_starts")

    def __init__(self, rows: _Rows, holder: str) -> None:
        spans: dict[str, list[_Span]] = {}
        for r in rows:
            spans.setdefault(r["device_id"], []).append(_Span(r["start"], r["end"], r[holder]))
        for items in spans.values():
            items.sort(key=lambda span: span.start)  # already sorted when loaded: O(n)
        #: Devices with one span (nearly all): looked up without a bisect, once per reading.
        self._only = {device: items[0] for device, items in spans.items() if len(items) == 1}
        self._spans = {device: items for device, items in spans.items() if len(items) > 1}
        self._starts = {
            device: [span.start for span in items] for device, items in self._spans.items()
        }

    def holder(self, device_id: str, at: datetime) -> str | None:
        """Who held ``device_id`` at ``at``, or None when nobody did."""
        span = self._only.get(device_id)
        if span is None:
            spans = self._spans.get(device_id)
            if spans is None:
                return None
            i = bisect.bisect_right(self._starts[device_id], at) - 1
            if i < 0:
                return None
            span = spans[i]
        elif at < span.start:
            return None
        return span.holder if span.end is None or at < span.end else None


_CURRENT_PLANS = """
SELECT DISTINCT ON (cp.patient_id) cp.patient_id, p.care_team_id, cp.version,
       cp.plan::text AS plan
FROM care_plans cp JOIN patients p ON p.id = cp.patient_id
ORDER BY cp.patient_id, cp.version DESC
"""
_OLDER_PLANS = """
SELECT cp.patient_id, p.care_team_id, cp.version, cp.plan::text AS plan
FROM care_plans cp JOIN patients p ON p.id = cp.patient_id
WHERE cp.patient_id = ANY($1::text[]) ORDER BY cp.patient_id, cp.version DESC
"""


@dataclasses.dataclass(frozen=True, slots=True)
class PatientPlan:
    """A patient's current care plan as the worker evaluates it."""

    patient_id: str
    care_team_id: str
    version: int
    plan: Plan
    #: Every rule is a plain threshold on one reading (1 of 1, no retake, one clear reading):
    #: the engine needs no stored history, and a batch in which none of this patient's
    #: readings reaches a bound, for a patient with no episode, needs no evaluation at all
    #: (:attr:`Plans.screen` finds those readings with numpy).
    plain: bool


def _plain_threshold(rule: object) -> ThresholdRule | None:
    """``rule`` when it is a threshold that judges each reading alone, else None."""
    if isinstance(rule, ThresholdRule) and rule.simple and rule.retake_minutes is None:
        return rule
    return None


#: How much looser than its rules the screen is, so that the engine's own tolerance
#: (:data:`homemonitor.rules.kinds.EPS`) and float noise never make it miss a breach.
_SCREEN_SLACK = 1e-6


def _screen_bounds(plan: Plan) -> dict[Quantity, Bounds]:
    """The bounds at which any plain threshold of ``plan`` may start to breach, per quantity.

    Per quantity and direction the least extreme level over every rule, a little looser
    still: a reading inside all of them breaches none (the screen may say "maybe", never
    miss a breach). A bound relative to a personal value is made absolute, as the engine
    does (personal value + offset).
    """
    found: dict[tuple[Quantity, str], float] = {}
    for rule in plan.rules:
        t = _plain_threshold(rule)
        if t is None:
            continue
        base = plan.personal[t.relative_to] if t.relative_to is not None else 0.0
        levels = [base + v for v in (t.warning, t.urgent) if v is not None]
        high = t.direction == "high"
        first = min(levels) - _SCREEN_SLACK if high else max(levels) + _SCREEN_SLACK
        key = (t.quantity, t.direction)
        known = found.get(key)
        if known is None or (first < known if high else first > known):
            found[key] = first
    bounds: dict[Quantity, Bounds] = {}
    for (quantity, direction), value in found.items():
        bounds[quantity] = bounds.get(quantity, Bounds()).model_copy(
            update={direction: Levels(warning=value)}
        )
    return bounds


class Plans:
    """Every patient's current plan, resolved, and the numpy screen of the plain ones.

    ``unresolved`` names patients whose newest version no longer resolves (a template
    changed under it); :meth:`with_older` puts their newest version that does in force
    and names those patients in ``older``.
    """

    def __init__(
        self,
        patients: dict[str, PatientPlan],
        unresolved: frozenset[str],
        older: frozenset[str] = frozenset(),
    ) -> None:
        self.patients = patients
        self.unresolved = unresolved
        self.older = older
        #: The care teams' routing and every patient's team and care contact, as loaded
        #: with the plans (:meth:`RegistryCache.load`): a batch that opens alerts routes
        #: them without a query. None: not loaded (the routing hook queries).
        self.routing: Routing | None = None
        #: The worker's cache of these patients' stored readings; new with each registry
        #: load (a changed plan reads other windows).
        self.histories = HistoryCache()
        plain = [p for p in patients.values() if p.plain]
        #: Plain plans' bounds, for :func:`homemonitor.rules.careplan.evaluate` over a batch.
        self.screen = PlanTable(
            [
                PlanRow(p.patient_id, p.care_team_id, p.version, _screen_bounds(p.plan))
                for p in plain
            ]
        )

    def get(self, patient_id: str) -> PatientPlan | None:
        """The patient's plan, or None when they have none (their readings are only stored)."""
        return self.patients.get(patient_id)

    def __len__(self) -> int:
        return len(self.patients)

    @classmethod
    def build(cls, rows: _Rows) -> Plans:
        """Resolve each row's plan (rows: patient_id, care_team_id, version, plan JSON)."""
        patients, unresolved = _resolve_rows(rows, {})
        return cls(patients, frozenset(unresolved))

    def with_older(self, rows: _Rows) -> Plans:
        """These plans, with each unresolved patient's newest version that resolves.

        ``rows``: every version of the unresolved patients, newest first per patient.
        """
        patients = dict(self.patients)
        for patient_id in self.unresolved:
            candidates = [r for r in rows if r["patient_id"] == patient_id]
            for row in candidates:
                found, _ = _resolve_rows([row], {})
                if found:
                    patients.update(found)
                    log.error(
                        "care plan does not resolve; an older version is in force",
                        newest=candidates[0]["version"],
                        in_force=row["version"],
                    )
                    break
            else:
                log.error("no version of a care plan resolves; its readings are only stored")
        return Plans(
            patients,
            frozenset(self.unresolved - patients.keys()),
            frozenset(self.unresolved & patients.keys()),
        )


def _resolve_rows(
    rows: _Rows, memo: dict[tuple[str, int], Plan]
) -> tuple[dict[str, PatientPlan], list[str]]:
    """Resolved plans by patient, and the patients whose plan does not resolve."""
    templates = stored_plans.templates()
    found: dict[str, PatientPlan] = {}
    failed: list[str] = []
    for r in rows:
        key = (r["plan"], r["version"])  # many patients share one plan text: resolve once
        plan = memo.get(key)
        if plan is None:
            try:
                plan = resolve(stored_plans.spec_of(r["plan"]), r["version"], templates)
            except (PlanError, ValueError):
                failed.append(r["patient_id"])
                continue
            memo[key] = plan
        plain = all(_plain_threshold(rule) is not None for rule in plan.rules)
        found[r["patient_id"]] = PatientPlan(
            r["patient_id"], r["care_team_id"], r["version"], plan, plain
        )
    return found, failed


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    gateways: frozenset[str]
    devices: frozenset[str]
    pairings: _Timeline  # device -> gateway
    bindings: _Timeline  # device -> patient
    plans: Plans


def _build(
    gateways: _Rows, devices: _Rows, pairings: _Rows, bindings: _Rows, plans: _Rows
) -> _Snapshot:
    """The cache's lookup structures from raw rows (CPU-bound: run off the event loop)."""
    return _Snapshot(
        frozenset(r["id"] for r in gateways),
        frozenset(r["id"] for r in devices),
        _Timeline(pairings, "gateway_id"),
        _Timeline(bindings, "patient_id"),
        Plans.build(plans),
    )


def _rows_of(reg: RegistryIn) -> tuple[_Rows, _Rows, _Rows, _Rows, _Rows]:
    """A description as the rows :meth:`RegistryCache.load` would read once it is applied."""
    plans = [
        {
            "patient_id": p.id,
            "care_team_id": p.care_team,
            "version": p.care_plan.version,
            "plan": stored_plans.spec_json(p.care_plan.spec()),
        }
        for p in reg.patients
        if p.care_plan is not None
    ]
    return (
        [{"id": g.id} for g in reg.gateways],
        [{"id": d.id} for d in reg.devices],
        [
            {"device_id": s.device, "gateway_id": g.id, "start": s.valid_from, "end": s.until}
            for g in reg.gateways
            for s in g.devices
        ],
        [
            {"device_id": s.device, "patient_id": p.id, "start": s.valid_from, "end": s.until}
            for p in reg.patients
            for s in p.devices
        ],
        plans,
    )


class RegistryCache:
    """The worker's copy of gateways, pairings, bindings and current plans; see the module.

    It is reloaded only when ``registry_revision`` changed (see :meth:`refresh`); the new
    copy is built off the event loop and swapped in whole, so ingestion never stalls on
    it and never sees half of one. The copy is known to be old from the moment a NOTIFY
    is heard (:attr:`stale`) until a check that began after it has ended; in between, a
    reading of a device the copy does not resolve waits for that check instead of being
    quarantined by the old copy (:meth:`check_for_unknown`).
    """

    def __init__(self, *, unknown_check_interval: float = 1.0) -> None:
        self.unknown_check_interval = unknown_check_interval
        self.revision: int | None = None
        empty = _Timeline((), "")
        self._snapshot = _Snapshot(frozenset(), frozenset(), empty, empty, Plans.build(()))
        self.checked_at = float("-inf")  # when the last check asked the database
        #: Set when the registry changed (or may have) since the last check began.
        self.stale = asyncio.Event()
        self._checking: asyncio.Event | None = None  # set when the check under way ends

    @classmethod
    def from_description(cls, reg: RegistryIn) -> RegistryCache:
        """A cache of ``reg`` as if it were applied (``payload check`` judges offline)."""
        cache = cls()
        cache._snapshot = _build(*_rows_of(reg))
        return cache

    @property
    def plans(self) -> Plans:
        return self._snapshot.plans

    @property
    def devices(self) -> frozenset[str]:
        return self._snapshot.devices

    def mark_stale(self) -> None:
        """The registry changed (a NOTIFY), or may have (the listener was cut)."""
        self.stale.set()

    async def refresh(self, connect: Connect) -> bool:
        """Ask the registry's revision now and reload if it moved; True when the copy changed.

        One check at a time, so two loads never race and an older copy never replaces a
        newer one. A check already under way is waited for, then this one runs: the one
        under way may have asked before the change the caller heard of (a NOTIFY).
        """
        before = self._snapshot
        while self._checking is not None:
            await self._checking.wait()
        self._checking = done = asyncio.Event()
        try:
            self.stale.clear()  # a NOTIFY from now on needs another check
            self.checked_at = time.monotonic()
            async with connect() as conn:
                revision = await conn.fetchval("SELECT revision FROM registry_revision")
                if revision != self.revision:
                    await self.load(conn, revision)
        finally:
            self._checking = None
            done.set()
        return self._snapshot is not before

    async def check_for_unknown(self, connect: Connect) -> bool:
        """Look again for devices the copy does not know or has unbound; True when it changed.

        A check under way is waited for, and a stale copy is checked at once: until then
        the copy in use is the old one, and a reading it resolves would be quarantined
        although its device is bound. Otherwise the database is asked at most once per
        ``unknown_check_interval``, so a stream of unknown devices cannot flood it.
        """
        before = self._snapshot
        while self._checking is not None:
            await self._checking.wait()
        if self.stale.is_set() or time.monotonic() - self.checked_at > self.unknown_check_interval:
            await self.refresh(connect)
        return self._snapshot is not before

    async def load(self, conn: Conn, revision: int | None = None) -> None:
        """Load everything now (at start, or when :meth:`refresh` saw a change)."""
        if revision is None:
            revision = await conn.fetchval("SELECT revision FROM registry_revision")
        gateways = await conn.fetch("SELECT id FROM gateways")
        devices = await conn.fetch("SELECT id FROM devices")
        pairings = await conn.fetch(
            "SELECT device_id, gateway_id, lower(valid) AS start, upper(valid) AS end "
            "FROM device_pairings ORDER BY device_id, lower(valid)"
        )
        rows = await conn.fetch(
            "SELECT device_id, patient_id, lower(valid) AS start, upper(valid) AS end "
            "FROM device_bindings ORDER BY device_id, lower(valid)"
        )
        plans = await conn.fetch(_CURRENT_PLANS)
        gc.disable()  # ~250k new objects would trigger several full collections, ~100 ms each
        try:
            snapshot = await asyncio.to_thread(_build, gateways, devices, pairings, rows, plans)
            if snapshot.plans.unresolved:  # rare: a template changed under a stored plan
                older = await conn.fetch(_OLDER_PLANS, sorted(snapshot.plans.unresolved))
                snapshot = dataclasses.replace(snapshot, plans=snapshot.plans.with_older(older))
            from homemonitor.alerts import routing  # noqa: PLC0415 - see TYPE_CHECKING

            snapshot.plans.routing = await routing.load(conn)
            self._snapshot = snapshot
        finally:
            gc.freeze()  # long-lived until the next load: out of every later full collection
            gc.enable()
        self.revision = revision
        self.checked_at = time.monotonic()
        log.info(
            "registry loaded",
            revision=revision,
            gateways=len(gateways),
            devices=len(devices),
            pairings=len(pairings),
            bindings=len(rows),
            plans=len(plans),
            plans_unresolved=len(self._snapshot.plans.unresolved),
        )

    def resolve(self, gateway_id: str, device_id: str, at: datetime) -> str | Reason:
        """The patient a reading belongs to, or why it belongs to nobody.

        The reading came from ``device_id``, measured at ``at``, published by
        ``gateway_id``. The checks run in this order, and the first that fails names the
        reason: the gateway is registered (``unknown_gateway``); the device is registered
        (``unknown_device``); the device was paired with *this* gateway at ``at``
        (``foreign_device``); the device was bound to a patient at ``at``
        (``unbound_device``). Pairing comes before binding: who may speak for a device is
        settled before whose record it is, so a gateway can never reach a patient's record
        through a device that is not in its home, and learns nothing about its binding.
        """
        snapshot = self._snapshot
        if gateway_id not in snapshot.gateways:
            return Reason.UNKNOWN_GATEWAY
        if device_id not in snapshot.devices:
            return Reason.UNKNOWN_DEVICE
        if snapshot.pairings.holder(device_id, at) != gateway_id:
            return Reason.FOREIGN_DEVICE
        return snapshot.bindings.holder(device_id, at) or Reason.UNBOUND_DEVICE

    def patient_for(self, device_id: str, at: datetime) -> str | Reason:
        """The patient ``device_id`` was bound to at ``at``, whoever published it, or why none.

        For tools and tests; the worker asks :meth:`resolve`, which checks the gateway too.
        """
        snapshot = self._snapshot
        if device_id not in snapshot.devices:
            return Reason.UNKNOWN_DEVICE
        return snapshot.bindings.holder(device_id, at) or Reason.UNBOUND_DEVICE
