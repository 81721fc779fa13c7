"""The worker's registry cache: who may speak for a device, whose reading it is, which plan.

:class:`RegistryCache` is the worker's read-only copy of gateways, device pairings and
bindings, and current care plans, for resolving a reading's patient and evaluating its plan
per batch. It is only a cache: reloaded on ``NOTIFY homemonitor_registry``, periodically,
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
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from homemonitor import logs
from homemonitor.contract.readings import Quantity, Reason
from homemonitor.registry.description import RegistryIn, thresholds_json
from homemonitor.rules.careplan import Bounds, PlanRow, PlanTable
from homemonitor.storage.database import Conn

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


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    gateways: frozenset[str]
    devices: frozenset[str]
    pairings: _Timeline  # device -> gateway
    bindings: _Timeline  # device -> patient
    plans: PlanTable


def _build(
    gateways: _Rows, devices: _Rows, pairings: _Rows, bindings: _Rows, plans: _Rows
) -> _Snapshot:
    """The cache's lookup structures from raw rows (CPU-bound: run off the event loop)."""
    table = PlanTable(
        [
            PlanRow(
                r["patient_id"],
                r["care_team_id"],
                r["version"],
                {
                    Quantity(q): Bounds.model_validate(b)
                    for q, b in json.loads(r["thresholds"]).items()
                },
            )
            for r in plans
        ]
    )
    return _Snapshot(
        frozenset(r["id"] for r in gateways),
        frozenset(r["id"] for r in devices),
        _Timeline(pairings, "gateway_id"),
        _Timeline(bindings, "patient_id"),
        table,
    )


def _rows_of(reg: RegistryIn) -> tuple[_Rows, _Rows, _Rows, _Rows, _Rows]:
    """A description as the rows :meth:`RegistryCache.load` would read once it is applied."""
    plans = [
        {
            "patient_id": p.id,
            "care_team_id": p.care_team,
            "version": p.care_plan.version,
            "thresholds": thresholds_json(p.care_plan),
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
        self._snapshot = _Snapshot(frozenset(), frozenset(), empty, empty, PlanTable([]))
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
    def plans(self) -> PlanTable:
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
        plans = await conn.fetch(
            "SELECT DISTINCT ON (cp.patient_id) cp.patient_id, p.care_team_id, cp.version, "
            "cp.thresholds::text AS thresholds FROM care_plans cp "
            "JOIN patients p ON p.id = cp.patient_id ORDER BY cp.patient_id, cp.version DESC"
        )
        gc.disable()  # ~250k new objects would trigger several full collections, ~100 ms each
        try:
            self._snapshot = await asyncio.to_thread(
                _build, gateways, devices, pairings, rows, plans
            )
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
