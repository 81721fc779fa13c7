"""Pauses: a patient's planned absences and admissions, when no missing data is expected.

A pause is a time span (``from`` to ``until``; open-ended while an admission lasts) and a
reason (``absence``, ``admission``, ``other``: no free text, it would be patient data in
yet another place). During a pause the silence job (:mod:`homemonitor.alerts.silence`)
raises no missing-data alert for the patient, and afterwards it counts the silence from
the pause's end, not from the last reading before it.

Two writers: the registry file (``patients[].pauses``, :func:`store_registry`, called by
:func:`homemonitor.registry.description.apply`: the file is the whole truth for the
registry pauses of the patients it describes) and the API (``POST/GET/DELETE
/api/v1/patients/{id}/pauses``, :mod:`homemonitor.api.pauses`), whose pauses a registry
apply leaves alone (``source``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from homemonitor.storage.database import Conn

Reason = Literal["absence", "admission", "other"]


def _text_or_time(value: object) -> object:
    """A time as text (or as YAML's own timestamp): never a number read as seconds."""
    if not isinstance(value, str | datetime):
        msg = "a time is written as ISO 8601 text with a UTC offset"
        raise ValueError(msg)  # pydantic reports a ValueError as a validation error
    return value


#: An aware time from text, as the contract writes times.
Time = Annotated[AwareDatetime, BeforeValidator(_text_or_time)]


class PauseIn(BaseModel):
    """A pause as the registry file and the API take it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    starts: Time = Field(alias="from")
    until: Time | None = None
    reason: Reason

    @model_validator(mode="after")
    def _ordered(self) -> PauseIn:
        if self.until is not None and self.until <= self.starts:
            raise ValueError("a pause must end after it starts")
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class Pause:
    """A stored pause."""

    id: int
    starts: datetime
    until: datetime | None
    reason: str
    source: str
    created_by: str | None
    created_at: datetime


_COLUMNS = (
    "id, lower(during) AS starts, upper(during) AS until, reason, source, created_by, created_at"
)


async def store_registry(conn: Conn, patients: Sequence[tuple[str, Sequence[PauseIn]]]) -> int:
    """Make each described patient's registry pauses the file's; the number (re)written.

    ``patients``: (patient id, its pauses) for every patient the file describes. A patient
    whose registry pauses are already the file's is left alone (applying the same file
    twice changes nothing); API pauses always stay. The caller's transaction.
    """
    wanted = {pid: {(p.starts, p.until, p.reason) for p in pauses} for pid, pauses in patients}
    stored: dict[str, set[tuple[datetime, datetime | None, str]]] = {pid: set() for pid in wanted}
    for r in await conn.fetch(
        "SELECT patient_id, lower(during) AS starts, upper(during) AS until, reason "
        "FROM patient_pauses WHERE source = 'registry' AND patient_id = ANY($1::text[])",
        list(wanted),
    ):
        stored[r["patient_id"]].add((r["starts"], r["until"], r["reason"]))
    changed = [pid for pid, spans in wanted.items() if spans != stored[pid]]
    await conn.execute(
        "DELETE FROM patient_pauses WHERE source = 'registry' AND patient_id = ANY($1::text[])",
        changed,
    )
    rows = [(pid, *span) for pid in changed for span in sorted(wanted[pid], key=str)]
    await conn.executemany(
        "INSERT INTO patient_pauses (patient_id, during, reason, source) "
        "VALUES ($1, tstzrange($2, $3, '[)'), $4, 'registry')",
        rows,
    )
    return len(rows)


async def add(conn: Conn, patient_id: str, pause: PauseIn, created_by: str) -> Pause:
    """Record a pause a clinician made through the API; the caller's transaction."""
    row = await conn.fetchrow(
        "INSERT INTO patient_pauses (patient_id, during, reason, source, created_by) "
        f"VALUES ($1, tstzrange($2, $3, '[)'), $4, 'api', $5) RETURNING {_COLUMNS}",
        patient_id,
        pause.starts,
        pause.until,
        pause.reason,
        created_by,
    )
    assert row is not None  # INSERT ... RETURNING returns the row
    return Pause(**dict(row))


async def of_patient(conn: Conn, patient_id: str) -> list[Pause]:
    """The patient's pauses, newest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM patient_pauses WHERE patient_id = $1 "
        "ORDER BY lower(during) DESC, id DESC",
        patient_id,
    )
    return [Pause(**dict(r)) for r in rows]


async def delete(conn: Conn, patient_id: str, pause_id: int) -> Pause | None:
    """Delete one API pause of the patient; None when there is none (registry ones stay)."""
    row = await conn.fetchrow(
        "DELETE FROM patient_pauses WHERE id = $1 AND patient_id = $2 AND source = 'api' "
        f"RETURNING {_COLUMNS}",
        pause_id,
        patient_id,
    )
    return None if row is None else Pause(**dict(row))
