"""Care plans as the database keeps them: versioned specs, resolved when they are written.

``care_plans.plan`` holds a patient's whole :class:`~homemonitor.rules.plan.CarePlanSpec`
per version, as its author wrote it (:func:`spec_json`); versions are immutable history
with who changed it and why. Both writers, ``homemonitor registry apply``
(:mod:`~homemonitor.registry.description`) and the API's ``POST .../care-plan``
(:mod:`homemonitor.api.plans`), go through :func:`add`, which resolves the spec first, so
a plan the engine cannot run is never stored. The worker's cache
(:mod:`~homemonitor.registry.cache`) resolves each patient's current version again when it
loads (templates may have been updated since).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from homemonitor.errors import PlanError
from homemonitor.rules.plan import CarePlanSpec, Plan, Template, resolve
from homemonitor.storage.database import Conn


def templates() -> Mapping[str, Template]:
    """The condition templates the package ships (none until ``rules.templates`` exists)."""
    try:
        from homemonitor.rules import (  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415
            templates as shipped,  # optional until the templates branch lands
        )
    except ImportError:
        return {}
    found: Mapping[str, Template] = shipped.load()
    return found


def spec_json(spec: CarePlanSpec) -> str:
    """A spec as ``care_plans.plan`` stores it: what its author set, keys sorted.

    Defaults are left to the code, like the templates a spec names: a version is resolved
    again whenever it is loaded (and two versions compare equal exactly when they resolve
    alike), so re-applying an unchanged registry file after an upgrade changes nothing.
    """
    return json.dumps(spec.model_dump(mode="json", exclude_unset=True), sort_keys=True)


def spec_of(stored: str | Mapping[str, Any]) -> CarePlanSpec:
    """The spec of a stored ``care_plans.plan`` (JSON text or already decoded)."""
    data = json.loads(stored) if isinstance(stored, str) else stored
    return CarePlanSpec.model_validate(data)


def resolved(spec: CarePlanSpec, version: int) -> Plan:
    """``spec`` as the rules the engine runs, against the shipped templates (or PlanError)."""
    return resolve(spec, version, templates())


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a patient's care plan."""

    version: int
    spec: CarePlanSpec
    changed_by: str | None
    reason: str
    created_at: Any  # datetime, as the database returns it


class VersionConflictError(PlanError):
    """Version ``version`` of the patient's plan exists with other content."""

    def __init__(self, patient_id: str, version: int) -> None:
        super().__init__(
            f"care plan version {version} already exists with other content; plans are "
            "history, so give the change a new version"
        )
        self.patient_id = patient_id
        self.version = version


async def add(
    conn: Conn,
    patient_id: str,
    version: int,
    spec: CarePlanSpec,
    *,
    changed_by: str | None,
    reason: str,
) -> bool:
    """Store ``version`` of a patient's plan; False when it is already there, identical.

    Resolves ``spec`` first (:class:`PlanError` when it cannot be run); the same version
    with other content raises :class:`VersionConflictError`. The caller's transaction.
    """
    resolved(spec, version)
    existing = await conn.fetchval(
        "SELECT plan::text FROM care_plans WHERE patient_id = $1 AND version = $2",
        patient_id,
        version,
    )
    if existing is not None:
        if spec_of(existing) != spec:
            raise VersionConflictError(patient_id, version)
        return False
    await conn.execute(
        "INSERT INTO care_plans (patient_id, version, plan, changed_by, reason) "
        "VALUES ($1, $2, $3::jsonb, $4, $5)",
        patient_id,
        version,
        spec_json(spec),
        changed_by,
        reason,
    )
    return True


async def current(conn: Conn, patient_id: str) -> Version | None:
    """The patient's newest plan version, or None when they have none."""
    row = await conn.fetchrow(
        "SELECT version, plan::text AS plan, changed_by, reason, created_at FROM care_plans "
        "WHERE patient_id = $1 ORDER BY version DESC LIMIT 1",
        patient_id,
    )
    if row is None:
        return None
    return Version(
        row["version"], spec_of(row["plan"]), row["changed_by"], row["reason"], row["created_at"]
    )


async def history(conn: Conn, patient_id: str) -> list[Version]:
    """Every version of the patient's plan, newest first."""
    rows = await conn.fetch(
        "SELECT version, plan::text AS plan, changed_by, reason, created_at FROM care_plans "
        "WHERE patient_id = $1 ORDER BY version DESC",
        patient_id,
    )
    return [
        Version(r["version"], spec_of(r["plan"]), r["changed_by"], r["reason"], r["created_at"])
        for r in rows
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class NotInForce:
    """A patient whose newest care-plan version does not resolve, and what runs instead."""

    patient_id: str
    version: int
    problem: str
    in_force: int | None  # the newest version that resolves; None: no rule runs


async def not_in_force(conn: Conn) -> list[NotInForce]:
    """Every patient whose newest plan version does not resolve against the shipped
    templates (a template changed under it), by patient id: what the worker would run."""
    rows = await conn.fetch(
        "SELECT patient_id, version, plan::text AS plan FROM care_plans "
        "ORDER BY patient_id, version DESC"
    )
    found: list[NotInForce] = []
    newest: dict[str, tuple[int, str]] = {}
    settled: set[str] = set()
    for r in rows:
        patient_id = r["patient_id"]
        if patient_id in settled:
            continue
        try:
            resolved(spec_of(r["plan"]), r["version"])
        except (PlanError, ValueError) as exc:
            newest.setdefault(patient_id, (r["version"], str(exc)))
            continue
        settled.add(patient_id)
        if patient_id in newest:
            version, problem = newest.pop(patient_id)
            found.append(NotInForce(patient_id, version, problem, r["version"]))
    found += [NotInForce(p, v, problem, None) for p, (v, problem) in newest.items()]
    return sorted(found, key=lambda n: n.patient_id)
