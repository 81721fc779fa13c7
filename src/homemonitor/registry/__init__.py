"""The registry: care teams, clinicians, patients, gateways, devices, pairings, bindings, plans.

Two halves. :func:`apply` loads a YAML or JSON description idempotently (the file is
the truth for everything it names; care-plan versions are immutable history). The
:class:`RegistryCache` is the worker's read-only copy (gateways, device pairings and
bindings, current plans) for resolving a reading's patient and evaluating its plan per
batch; it is only a cache: reloaded on ``NOTIFY homemonitor_registry``, periodically,
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
import itertools
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from homemonitor import logs
from homemonitor.contract.protocol import DEVICE_ID_PATTERN, GATEWAY_ID_PATTERN
from homemonitor.contract.readings import Quantity, Reason
from homemonitor.errors import RegistryError
from homemonitor.fields import Ident, PlainText
from homemonitor.rules.careplan import Bounds, PlanRow, PlanTable
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)

NOTIFY_CHANNEL = "homemonitor_registry"
#: How the cache borrows a connection when it has to ask the database (``pool.acquire``).
Connect: TypeAlias = Callable[[], AbstractAsyncContextManager[Conn]]
_Id = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ClinicianIn(BaseModel):
    model_config = _Id
    id: Ident
    name: PlainText = Field(min_length=1)
    role: PlainText = "clinician"


class CareTeamIn(BaseModel):
    model_config = _Id
    id: Ident
    name: PlainText = Field(min_length=1)
    clinicians: list[ClinicianIn] = []


class DeviceIn(BaseModel):
    model_config = _Id
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    kind: Literal["blood_pressure_cuff", "scale", "pulse_oximeter", "heart_rate_monitor"]
    model: PlainText = ""


class BindingIn(BaseModel):
    """A device with a patient from ``from`` until ``until`` (open when absent)."""

    model_config = _Id
    device: str = Field(pattern=DEVICE_ID_PATTERN)
    valid_from: AwareDatetime = Field(alias="from")
    until: AwareDatetime | None = None


class PairingIn(BindingIn):
    """A device paired with a gateway from ``from`` until ``until`` (open when absent)."""


class GatewayIn(BaseModel):
    model_config = _Id
    id: str = Field(pattern=GATEWAY_ID_PATTERN)
    #: The devices this gateway may publish readings for, and when: the whole truth for
    #: this gateway (a device left out is no longer paired with it).
    devices: list[PairingIn] = []


class CarePlanIn(BaseModel):
    model_config = _Id
    version: int = Field(ge=1)
    changed_by: str | None = None
    reason: PlainText = ""
    thresholds: dict[Quantity, Bounds]


class PatientIn(BaseModel):
    model_config = _Id
    id: Ident
    care_team: str
    care_contact: str | None = None
    condition: PlainText = ""
    devices: list[BindingIn] = []
    care_plan: CarePlanIn | None = None


class RegistryIn(BaseModel):
    """A whole registry description, as ``homemonitor registry apply`` reads it."""

    model_config = _Id
    care_teams: list[CareTeamIn] = []
    devices: list[DeviceIn] = []
    gateways: list[GatewayIn] = []
    patients: list[PatientIn] = []


def load_file(path: Path) -> RegistryIn:
    """Read and check a registry description (YAML or JSON, by content)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from exc
    return parse(data)


def parse(data: Any) -> RegistryIn:
    """Validate a registry description and its cross-references."""
    try:
        registry = RegistryIn.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise RegistryError("registry description is invalid:\n" + "\n".join(lines)) from exc
    _check_references(registry)
    return registry


#: Per device, (from, until, owner) of each binding or pairing in a description.
_Spans: TypeAlias = dict[str, list[tuple[datetime, datetime | None, str]]]


def _check_references(reg: RegistryIn) -> None:
    problems: list[str] = []
    teams = {t.id: {c.id for c in t.clinicians} for t in reg.care_teams}
    devices = {d.id for d in reg.devices}
    bound: _Spans = {}
    paired: _Spans = {}

    def span(owner: tuple[str, str], what: str, s: BindingIn, into: _Spans) -> None:
        if s.device not in devices:
            problems.append(f"{' '.join(owner)}: device {s.device!r} is not described")
        if s.until is not None and s.until <= s.valid_from:
            problems.append(f"{' '.join(owner)}: {what} of {s.device} ends before it starts")
        into.setdefault(s.device, []).append((s.valid_from, s.until, owner[1]))

    for p in reg.patients:
        if p.care_team not in teams:
            problems.append(f"patient {p.id}: care team {p.care_team!r} is not described")
        elif p.care_contact is not None and p.care_contact not in teams[p.care_team]:
            problems.append(f"patient {p.id}: care contact is not a clinician of {p.care_team}")
        for b in p.devices:
            span(("patient", p.id), "binding", b, bound)
        if p.care_plan and p.care_plan.changed_by not in (None, *teams.get(p.care_team, ())):
            problems.append(f"patient {p.id}: care plan changed_by is not of its care team")
    described: set[str] = set()
    for g in reg.gateways:
        if g.id in described:
            problems.append(f"gateway {g.id}: described twice")
        described.add(g.id)
        for pairing in g.devices:
            span(("gateway", g.id), "pairing", pairing, paired)
    problems += _overlaps(bound, "bound to")
    problems += _overlaps(paired, "paired with")
    if problems:
        raise RegistryError("registry description is inconsistent:\n  " + "\n  ".join(problems))


def _overlaps(spans: _Spans, verb: str) -> list[str]:
    """A problem for each device held by two owners at the same time."""
    problems = []
    for device, items in spans.items():
        items.sort(key=lambda s: s[0])
        for (_, end, first), (start, _, second) in itertools.pairwise(items):
            if end is None or end > start:
                problems.append(f"device {device}: {verb} {first} and {second} at the same time")
    return problems


def unpaired_devices(reg: RegistryIn) -> list[str]:
    """Devices bound to a patient but paired with no gateway: all their readings are refused."""
    paired = {p.device for g in reg.gateways for p in g.devices}
    return sorted({b.device for p in reg.patients for b in p.devices} - paired)


@dataclasses.dataclass(frozen=True, slots=True)
class ApplySummary:
    care_teams: int
    clinicians: int
    patients: int
    devices: int
    bindings: int
    plans_added: int
    gateways: int
    pairings: int


async def apply(conn: Conn, reg: RegistryIn) -> ApplySummary:
    """Write ``reg`` in one transaction; applying the same file twice changes nothing."""
    clinicians = [(c.id, t.id, c.name, c.role) for t in reg.care_teams for c in t.clinicians]
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO care_teams (id, name) VALUES ($1, $2) "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
            [(t.id, t.name) for t in reg.care_teams],
        )
        await conn.executemany(
            "INSERT INTO clinicians (id, care_team_id, name, role) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO UPDATE SET care_team_id = EXCLUDED.care_team_id, "
            "name = EXCLUDED.name, role = EXCLUDED.role",
            clinicians,
        )
        await conn.executemany(
            "INSERT INTO devices (id, kind, model) VALUES ($1, $2, $3) "
            "ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, model = EXCLUDED.model",
            [(d.id, d.kind, d.model) for d in reg.devices],
        )
        await conn.executemany(
            "INSERT INTO gateways (id) VALUES ($1) ON CONFLICT DO NOTHING",
            [(g.id,) for g in reg.gateways],
        )
        await conn.executemany(
            "INSERT INTO patients (id, care_team_id, care_contact_id, condition) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET "
            "care_team_id = EXCLUDED.care_team_id, care_contact_id = EXCLUDED.care_contact_id, "
            "condition = EXCLUDED.condition",
            [(p.id, p.care_team, p.care_contact, p.condition) for p in reg.patients],
        )
        bindings = [
            (b.device, p.id, b.valid_from, b.until) for p in reg.patients for b in p.devices
        ]
        await conn.execute(
            "DELETE FROM device_bindings WHERE device_id = ANY($1::text[])",
            sorted({b[0] for b in bindings}),
        )
        await conn.executemany(
            "INSERT INTO device_bindings (device_id, patient_id, valid) "
            "VALUES ($1, $2, tstzrange($3, $4, '[)'))",
            bindings,
        )
        pairings = [
            (p.device, g.id, p.valid_from, p.until) for g in reg.gateways for p in g.devices
        ]
        await conn.execute(  # a gateway's list, and a device's pairings, are the whole truth
            "DELETE FROM device_pairings WHERE device_id = ANY($1::text[]) "
            "OR gateway_id = ANY($2::text[])",
            sorted({p[0] for p in pairings}),
            [g.id for g in reg.gateways],
        )
        await conn.executemany(
            "INSERT INTO device_pairings (device_id, gateway_id, valid) "
            "VALUES ($1, $2, tstzrange($3, $4, '[)'))",
            pairings,
        )
        added = 0
        for p in reg.patients:
            if p.care_plan is not None:
                added += await _add_plan(conn, p.id, p.care_plan)
        await conn.execute("UPDATE registry_revision SET revision = revision + 1")
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return ApplySummary(
        len(reg.care_teams),
        len(clinicians),
        len(reg.patients),
        len(reg.devices),
        len(bindings),
        added,
        len(reg.gateways),
        len(pairings),
    )


def _thresholds_json(plan: CarePlanIn) -> str:
    return json.dumps(
        {q.value: b.model_dump(exclude_none=True) for q, b in sorted(plan.thresholds.items())},
        sort_keys=True,
    )


async def _add_plan(conn: Conn, patient_id: str, plan: CarePlanIn) -> int:
    wanted = _thresholds_json(plan)
    existing = await conn.fetchval(
        "SELECT thresholds::text FROM care_plans WHERE patient_id = $1 AND version = $2",
        patient_id,
        plan.version,
    )
    if existing is not None:
        if json.loads(existing) != json.loads(wanted):
            msg = (
                f"patient {patient_id}: care plan version {plan.version} already exists with "
                "other thresholds; plans are history, so give the change a new version"
            )
            raise RegistryError(msg)
        return 0
    await conn.execute(
        "INSERT INTO care_plans (patient_id, version, thresholds, changed_by, reason) "
        "VALUES ($1, $2, $3::jsonb, $4, $5)",
        patient_id,
        plan.version,
        wanted,
        plan.changed_by,
        plan.reason,
    )
    return 1


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

    __slots__ = ("_spans", "_starts")

    def __init__(self, rows: _Rows, holder: str) -> None:
        spans: dict[str, list[_Span]] = {}
        for r in rows:
            spans.setdefault(r["device_id"], []).append(_Span(r["start"], r["end"], r[holder]))
        for items in spans.values():
            items.sort(key=lambda span: span.start)  # already sorted when loaded: O(n)
        self._spans = spans
        self._starts = {device: [span.start for span in items] for device, items in spans.items()}

    def holder(self, device_id: str, at: datetime) -> str | None:
        """Who held ``device_id`` at ``at``, or None when nobody did."""
        spans = self._spans.get(device_id)
        if spans is None:
            return None
        i = bisect.bisect_right(self._starts[device_id], at) - 1
        if i < 0:
            return None
        span = spans[i]
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
            "thresholds": _thresholds_json(p.care_plan),
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
