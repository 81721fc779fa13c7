"""The registry description: what ``homemonitor registry apply`` reads and writes.

A YAML or JSON file names care teams, clinicians, devices, gateways (with the devices
paired with them) and patients (with the devices bound to them and their care plan).
:func:`parse` checks it and its cross-references; :func:`apply` writes it in one
transaction, idempotently: the file is the truth for everything it names, and care-plan
versions are immutable history. Each apply bumps ``registry_revision`` and sends
``NOTIFY homemonitor_registry`` so that workers reload (:mod:`homemonitor.registry.cache`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from homemonitor.contract.protocol import DEVICE_ID_PATTERN, GATEWAY_ID_PATTERN
from homemonitor.errors import PlanError, RegistryError
from homemonitor.fields import HsaId, Ident, PlainText
from homemonitor.notify import config as notify_config
from homemonitor.registry import hsa, pauses, plans
from homemonitor.registry.pauses import PauseIn
from homemonitor.rules.plan import CarePlanSpec
from homemonitor.storage.database import Conn

NOTIFY_CHANNEL = "homemonitor_registry"
_Id = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


#: An address with one @ and a dot in its domain, no spaces or controls (what is a
#: deliverable address is the mail server's to say).
_EMAIL = r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$"


class ClinicianIn(BaseModel):
    model_config = _Id
    id: Ident
    name: PlainText = Field(min_length=1)
    role: PlainText = "clinician"
    #: Where notifications addressed to this clinician are emailed (none: not emailed).
    email: str | None = Field(default=None, max_length=254, pattern=_EMAIL)
    #: The HSA id single sign-on names this clinician by (homemonitor.api.auth).
    hsa_id: HsaId | None = None


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: "HH:MM", quoted in YAML (unquoted, YAML 1.1 reads 08:00 as the number 480).
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


class WorkingHoursIn(BaseModel):
    """When a care team is staffed, in Europe/Stockholm: these days, from ``start`` to ``end``.

    Swedish public holidays (and the team's ``holidays``) are closed whatever the day.
    """

    model_config = _Id
    days: list[Weekday] = Field(min_length=1)
    start: str = Field(pattern=_CLOCK, examples=["08:00"])
    end: str = Field(pattern=_CLOCK, examples=["17:00"])

    @model_validator(mode="after")
    def _ends_after_start(self) -> WorkingHoursIn:
        if self.end <= self.start:
            msg = f"end {self.end} is not after start {self.start} (one span per day)"
            raise ValueError(msg)
        return self

    def span(self) -> tuple[time, time | None]:
        """Start and end as times of day; end None is midnight (24:00)."""
        end = None if self.end == "24:00" else time.fromisoformat(self.end)
        return time.fromisoformat(self.start), end


class EscalationStepIn(BaseModel):
    """After ``after_minutes`` without acknowledgement, address ``to``."""

    model_config = _Id
    after_minutes: int | float = Field(gt=0, le=7 * 24 * 60)  # a fraction: the demo's
    to: Literal["team", "out_of_hours"]


class EscalationIn(BaseModel):
    """Per severity, the steps of an alert nobody acknowledges, in increasing minutes."""

    model_config = _Id
    urgent: list[EscalationStepIn] = []
    warning: list[EscalationStepIn] = []

    @model_validator(mode="after")
    def _increasing(self) -> EscalationIn:
        for severity in ("urgent", "warning"):
            minutes = [s.after_minutes for s in getattr(self, severity)]
            if any(b <= a for a, b in itertools.pairwise(minutes)):
                msg = f"{severity}: after_minutes must increase from step to step"
                raise ValueError(msg)
        return self

    def steps(self, severity: str) -> list[EscalationStepIn]:
        """The steps of ``severity`` (warning or urgent)."""
        return list(self.urgent if severity == "urgent" else self.warning)


class CareTeamIn(BaseModel):
    model_config = _Id
    id: Ident
    name: PlainText = Field(min_length=1)
    clinicians: list[ClinicianIn] = []
    #: None: always staffed (alerts are never routed out of hours).
    working_hours: WorkingHoursIn | None = None
    #: Closed days besides the Swedish public holidays (bridge days, a staff day).
    holidays: list[date] = []
    #: The care team (on-call, mobile team) that takes the alerts while this one is closed.
    out_of_hours: Ident | None = None
    escalation: EscalationIn = EscalationIn()
    notifications: notify_config.NotificationsIn | None = None


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


class CarePlanIn(CarePlanSpec):
    """A care plan version: the whole spec (template, personal, overrides, disabled, rules,
    thresholds) with who changed it and why. Resolved when applied."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    version: int = Field(ge=1)
    changed_by: str | None = None
    reason: PlainText = ""

    def spec(self) -> CarePlanSpec:
        """The plan without its version, author and reason: what ``care_plans.plan`` holds."""
        return CarePlanSpec.model_validate(
            self.model_dump(exclude={"version", "changed_by", "reason"}, exclude_unset=True)
        )


class PatientIn(BaseModel):
    model_config = _Id
    id: Ident
    care_team: str
    care_contact: str | None = None
    condition: PlainText = ""
    devices: list[BindingIn] = []
    care_plan: CarePlanIn | None = None
    pauses: list[PauseIn] = []  # planned absences and admissions (registry/pauses.py)


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
    problems += _routing_problems(reg)
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
        if p.care_plan:
            try:
                plans.resolved(p.care_plan.spec(), p.care_plan.version)
            except PlanError as exc:
                problems.append(f"patient {p.id}: {exc}")
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


def _routing_problems(reg: RegistryIn) -> list[str]:
    """Out-of-hours routes that name no described team (or the team itself), and
    escalation steps to an out-of-hours route a team does not have."""
    problems = []
    described = {t.id for t in reg.care_teams}
    for t in reg.care_teams:
        if t.out_of_hours is not None and t.out_of_hours not in described:
            problems.append(f"care team {t.id}: out_of_hours {t.out_of_hours!r} is not described")
        if t.out_of_hours == t.id:
            problems.append(f"care team {t.id}: out_of_hours is the team itself")
        steps = [*t.escalation.urgent, *t.escalation.warning]
        if t.out_of_hours is None and any(s.to == "out_of_hours" for s in steps):
            problems.append(f"care team {t.id}: escalation to out_of_hours, but it has none")
    return problems


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
    clinicians = [
        (c.id, t.id, c.name, c.role, c.email) for t in reg.care_teams for c in t.clinicians
    ]
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO care_teams (id, name, working_hours, holidays, out_of_hours, escalation) "
            "VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, "
            "working_hours = EXCLUDED.working_hours, holidays = EXCLUDED.holidays, "
            "out_of_hours = EXCLUDED.out_of_hours, escalation = EXCLUDED.escalation",
            [
                (
                    t.id,
                    t.name,
                    None if t.working_hours is None else t.working_hours.model_dump_json(),
                    sorted(set(t.holidays)),
                    t.out_of_hours,
                    json.dumps(t.escalation.model_dump(exclude_defaults=True)),
                )
                for t in reg.care_teams
            ],
        )
        await conn.executemany(
            "INSERT INTO clinicians (id, care_team_id, name, role, email) "
            "VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (id) DO UPDATE SET care_team_id = EXCLUDED.care_team_id, "
            "name = EXCLUDED.name, role = EXCLUDED.role, email = EXCLUDED.email",
            clinicians,
        )
        await hsa.store(conn, [(c.id, c.hsa_id) for t in reg.care_teams for c in t.clinicians])
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
        await notify_config.store(conn, [(t.id, t.notifications) for t in reg.care_teams])
        await pauses.store_registry(conn, [(p.id, p.pauses) for p in reg.patients])
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


async def _add_plan(conn: Conn, patient_id: str, plan: CarePlanIn) -> int:
    try:
        added = await plans.add(
            conn,
            patient_id,
            plan.version,
            plan.spec(),
            changed_by=plan.changed_by,
            reason=plan.reason,
        )
    except PlanError as exc:
        raise RegistryError(f"patient {patient_id}: {exc}") from exc
    return int(added)
