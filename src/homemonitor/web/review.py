"""The access-log review: who read a patient's data and when, what a clinician read, the
denied attempts, and the reviewer's recorded checks (migration 0016).

Only the registry role :data:`REVIEWER_ROLE` may use it. It covers every care team of the
database (one care provider): the attempts worth following up are exactly those at other
teams' patients, which a team-scoped review would never show. Reading the log is itself a
read of the patients it names: the page logs it (``review_access_log``,
``export_access_log``) like any other read, so a reviewer's own look is in the log too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import asyncpg

from homemonitor.storage.database import Conn
from homemonitor.web.charts import LOCAL_ZONE

#: The registry role that may review the access log.
REVIEWER_ROLE = "reviewer"
#: The most entries one view or export shows (a narrower period shows the rest).
MAX_ENTRIES = 5000
Outcome = Literal["no_remarks", "follow_up", "unauthorised"]
OUTCOMES: tuple[Outcome, ...] = ("no_remarks", "follow_up", "unauthorised")
Scope = Literal["sample", "patient", "clinician"]


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One access-log row, with the clinician's name when the registry knows them."""

    id: int
    at: datetime
    clinician_id: str
    clinician_name: str | None
    patient_id: str | None
    action: str
    outcome: str
    requested_id: str | None


_ENTRY = (
    "SELECT l.id, l.at, l.clinician_id, c.name AS clinician_name, l.patient_id, l.action, "
    "l.outcome, l.requested_id FROM access_log l LEFT JOIN clinicians c ON c.id = l.clinician_id "
)


#: The rows about a patient: their reads and the attempts at them, by patient or asked-for id.
_OF_PATIENT = "(l.patient_id = {id} OR (l.patient_id IS NULL AND l.requested_id = {id}))"
_OF_CLINICIAN = "l.clinician_id = {id}"


def _entries(rows: Iterable[asyncpg.Record]) -> list[Entry]:
    return [Entry(*r) for r in rows]


def _check(row: asyncpg.Record, items: list[Entry]) -> Check:
    values: dict[str, Any] = dict(row)
    return Check(**values, items=items)


async def for_patient(conn: Conn, patient_id: str, start: datetime, end: datetime) -> list[Entry]:
    """Who read the patient's data, and who tried, in ``[start, end)``, newest first.

    A denied attempt at an id that names no patient has no ``patient_id``; it is found by
    the id that was asked for.
    """
    return _entries(
        await conn.fetch(
            _ENTRY + f"WHERE {_OF_PATIENT.format(id='$1')} "
            "AND l.at >= $2 AND l.at < $3 ORDER BY l.at DESC, l.id DESC LIMIT $4",
            patient_id,
            start,
            end,
            MAX_ENTRIES,
        )
    )


async def for_clinician(
    conn: Conn, clinician_id: str, start: datetime, end: datetime
) -> list[Entry]:
    """What the clinician read, and tried to, in ``[start, end)``, newest first."""
    return _entries(
        await conn.fetch(
            _ENTRY + f"WHERE {_OF_CLINICIAN.format(id='$1')} AND l.at >= $2 AND l.at < $3 "
            "ORDER BY l.at DESC, l.id DESC LIMIT $4",
            clinician_id,
            start,
            end,
            MAX_ENTRIES,
        )
    )


async def denied(conn: Conn, start: datetime, end: datetime) -> list[Entry]:
    """Every denied attempt of ``[start, end)``, newest first."""
    return _entries(
        await conn.fetch(
            _ENTRY + "WHERE l.outcome = 'denied' AND l.at >= $1 AND l.at < $2 "
            "ORDER BY l.at DESC, l.id DESC LIMIT $3",
            start,
            end,
            MAX_ENTRIES,
        )
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """A recorded check of the access log and the entries it covered."""

    id: int
    created_at: datetime
    reviewer_id: str
    scope: Scope
    subject_id: str | None
    start: datetime
    end: datetime
    status: Literal["open", "done"]
    checked: str
    outcome: Outcome | None
    note: str
    closed_at: datetime | None
    items: list[Entry]


async def open_check(
    conn: Conn,
    reviewer_id: str,
    scope: Scope,
    subject_id: str | None,
    *,
    start: datetime,
    end: datetime,
    sample_size: int = 20,
) -> int:
    """A new check of ``[start, end)``; its entries copied in: a random ``sample_size`` of
    the period's allowed reads (``sample``), or every entry of the patient or clinician.

    Returns its id. The caller's transaction.
    """
    check_id: int = await conn.fetchval(
        "INSERT INTO access_checks (reviewer_id, scope, subject_id, period) "
        "VALUES ($1, $2, $3, tstzrange($4, $5)) RETURNING id",
        reviewer_id,
        scope,
        subject_id,
        start,
        end,
    )
    if scope == "sample":
        chosen = (
            "SELECT * FROM access_log l WHERE l.outcome = 'allowed' AND l.at >= $2 "
            "AND l.at < $3 ORDER BY random() LIMIT $4"
        )
        args: tuple[object, ...] = (start, end, sample_size)
    else:
        of = (_OF_PATIENT if scope == "patient" else _OF_CLINICIAN).format(id="$4")
        chosen = (
            f"SELECT * FROM access_log l WHERE {of} AND l.at >= $2 AND l.at < $3 "
            "ORDER BY l.at LIMIT $5"
        )
        args = (start, end, subject_id, MAX_ENTRIES)
    await conn.execute(
        f"INSERT INTO access_check_items (check_id, access_log_id, at, clinician_id, "
        "patient_id, action, outcome, requested_id) "
        f"SELECT $1, id, at, clinician_id, patient_id, action, outcome, requested_id "
        f"FROM ({chosen}) AS chosen",
        check_id,
        *args,
    )
    return check_id


class CheckClosedError(LookupError):
    """The check does not exist or its outcome is already recorded."""


async def close_check(conn: Conn, check_id: int, checked: str, outcome: Outcome, note: str) -> None:
    """Record what was checked and the outcome; a check is closed once."""
    done = await conn.fetchval(
        "UPDATE access_checks SET status = 'done', checked = $2, outcome = $3, note = $4, "
        "closed_at = clock_timestamp() WHERE id = $1 AND status = 'open' RETURNING id",
        check_id,
        checked,
        outcome,
        note,
    )
    if done is None:
        raise CheckClosedError(check_id)


_CHECK = (
    "SELECT id, created_at, reviewer_id, scope, subject_id, lower(period) AS start, "
    'upper(period) AS "end", status, checked, outcome, note, closed_at FROM access_checks '
)


async def checks(conn: Conn, limit: int = 50) -> list[Check]:
    """The latest checks, newest first, without their entries."""
    rows = await conn.fetch(_CHECK + "ORDER BY created_at DESC, id DESC LIMIT $1", limit)
    return [_check(r, []) for r in rows]


async def check(conn: Conn, check_id: int) -> Check | None:
    """One check with the entries it covered, oldest first."""
    row = await conn.fetchrow(_CHECK + "WHERE id = $1", check_id)
    if row is None:
        return None
    items = await conn.fetch(
        "SELECT i.access_log_id, i.at, i.clinician_id, c.name, i.patient_id, i.action, "
        "i.outcome, i.requested_id FROM access_check_items i "
        "LEFT JOIN clinicians c ON c.id = i.clinician_id WHERE i.check_id = $1 "
        "ORDER BY i.at, i.access_log_id",
        check_id,
    )
    return _check(row, _entries(items))


def patients_of(entries: Iterable[Entry]) -> list[str]:
    """The patients ``entries`` name, once each, in order: who a view of them reads about."""
    return list(dict.fromkeys(e.patient_id for e in entries if e.patient_id is not None))


CSV_COLUMNS = (
    "at",
    "clinician_id",
    "clinician_name",
    "patient_id",
    "action",
    "outcome",
    "requested_id",
)


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``= + - @`` (a formula) is quoted.

    >>> _cell("=HYPERLINK(1)"), _cell("anna"), _cell(None)
    ("'=HYPERLINK(1)", 'anna', '')
    """
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(entries: Iterable[Entry]) -> str:
    """The entries as CSV (a header row, times in Europe/Stockholm with their offset)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow(
            [
                e.at.astimezone(LOCAL_ZONE).isoformat(timespec="seconds"),
                *(
                    _cell(v)
                    for v in (
                        e.clinician_id,
                        e.clinician_name,
                        e.patient_id,
                        e.action,
                        e.outcome,
                        e.requested_id,
                    )
                ),
            ]
        )
    return out.getvalue()
