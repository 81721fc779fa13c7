"""The backtest's reads: patients' stored readings, current plans and alerts. SQL.

:func:`run` backtests patients in chunks of :data:`CHUNK`; per chunk, in one transaction:
``before_read`` (the caller writes the access log: no row, no data), ONE query for the
chunk's current plans, ONE for their readings of the period and its warm-up, ONE for the
alerts the alerts table holds from the period; then the pure comparison
(:mod:`homemonitor.rules.backtest`) per patient. Nothing is written but what
``before_read`` writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from homemonitor import logs
from homemonitor.contract.readings import QUANTITIES, Metric
from homemonitor.errors import HomemonitorError, PlanError
from homemonitor.registry import plans
from homemonitor.rules import backtest
from homemonitor.rules.explain import Lang
from homemonitor.rules.history import StoredReading
from homemonitor.rules.plan import Plan
from homemonitor.rules.replay import ResolvePolicy
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)

#: Patients per chunk: one transaction and three queries each.
CHUNK = 50

_VALUES = ", ".join(f"r.{q.value}" for q in QUANTITIES)
_READINGS = f"""
SELECT r.patient_id, r.device_id, r.metric, r.measured_at, {_VALUES}, r.flags, r.quality
FROM unnest($1::text[], $2::timestamptz[]) AS p(patient_id, since)
JOIN readings r ON r.patient_id = p.patient_id AND r.measured_at >= p.since
WHERE r.measured_at <= $3
ORDER BY r.patient_id, r.measured_at
"""
_PLANS = """
SELECT DISTINCT ON (patient_id) patient_id, version, plan::text AS plan FROM care_plans
WHERE patient_id = ANY($1::text[]) ORDER BY patient_id, version DESC
"""
# An alert's time is the measured time of the reading that opened it, as in a replay;
# pending and withdrawn episodes never reached anyone.
_ALERTS = """
SELECT patient_id, peak_severity FROM alerts
WHERE patient_id = ANY($1::text[]) AND opening_measured_at BETWEEN $2 AND $3
  AND status NOT IN ('pending', 'withdrawn')
"""


class _Row(Protocol):
    """A result row (an asyncpg Record, or a mapping in a test)."""

    def __getitem__(self, key: str, /) -> Any: ...


class UnknownError(HomemonitorError):
    """A patient or care team the command named does not exist."""


def stored_reading(row: _Row) -> StoredReading:
    """A ``readings`` row (device_id, metric, measured_at, the quantities, flags, quality)."""
    return StoredReading(
        row["measured_at"],
        row["device_id"],
        Metric(row["metric"]),
        {q: row[q.value] for q in QUANTITIES if row[q.value] is not None},
        frozenset(row["quality"]),
        frozenset(row["flags"]),
    )


async def team_patients(conn: Conn, team_id: str) -> list[str]:
    """The patients of a care team, by id; UnknownError for a team that does not exist."""
    if await conn.fetchval("SELECT 1 FROM care_teams WHERE id = $1", team_id) is None:
        raise UnknownError(f"no care team {team_id!r}")
    rows = await conn.fetch("SELECT id FROM patients WHERE care_team_id = $1 ORDER BY id", team_id)
    return [r["id"] for r in rows]


async def patient_teams(conn: Conn, patient_ids: Sequence[str]) -> dict[str, str]:
    """Each patient's care team; UnknownError naming the first id that is no patient."""
    rows = await conn.fetch(
        "SELECT id, care_team_id FROM patients WHERE id = ANY($1::text[])", list(patient_ids)
    )
    found = {r["id"]: r["care_team_id"] for r in rows}
    missing = [p for p in patient_ids if p not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UnknownError(f"no patient {missing[0]!r}{more}")
    return found


def _plans(row: _Row | None, proposal: backtest.Proposal) -> tuple[Plan | None, Plan]:
    """The patient's current plan (None: none) and the proposed one, resolved (or PlanError)."""
    if row is None:
        return None, plans.resolved(proposal.for_patient(None, plans.templates()), 1)
    spec = plans.spec_of(row["plan"])
    try:
        current = plans.resolved(spec, row["version"])
    except PlanError as exc:
        msg = f"the current plan v{row['version']} does not resolve: {exc}"
        raise PlanError(msg) from exc
    return current, plans.resolved(
        proposal.for_patient(spec, plans.templates()), row["version"] + 1
    )


async def _chunk(
    conn: Conn,
    ids: Sequence[str],
    proposal: backtest.Proposal,
    *,
    since: datetime,
    until: datetime,
    policy: ResolvePolicy,
    strict: bool,
) -> list[backtest.PatientOut]:
    rows = {r["patient_id"]: r for r in await conn.fetch(_PLANS, list(ids))}
    resolved: dict[str, tuple[Plan | None, Plan]] = {}
    out: dict[str, backtest.PatientOut] = {}
    for p in ids:
        try:
            resolved[p] = _plans(rows.get(p), proposal)
        except PlanError as exc:
            if strict:
                raise PlanError(f"patient {p}: {exc}") from exc
            out[p] = backtest.skipped(p, str(exc))
    chosen = list(resolved)
    starts = [since - backtest.warmup(*resolved[p]) for p in chosen]
    readings: dict[str, list[StoredReading]] = defaultdict(list)
    for r in await conn.fetch(_READINGS, chosen, starts, until):
        readings[r["patient_id"]].append(stored_reading(r))
    stored: dict[str, list[str]] = defaultdict(list)
    for r in await conn.fetch(_ALERTS, chosen, since, until):
        stored[r["patient_id"]].append(r["peak_severity"])
    for p in chosen:
        current, proposed = resolved[p]
        out[p] = backtest.patient(
            p,
            readings[p],
            current,
            proposed,
            since=since,
            until=until,
            stored=stored[p],
            policy=policy,
        )
    return [out[p] for p in ids]


async def run(
    conn: Conn,
    patient_ids: Sequence[str],
    proposal: backtest.Proposal,
    *,
    days: int,
    until: datetime,
    before_read: Callable[[Sequence[str]], Awaitable[None]],
    policy: ResolvePolicy = backtest.SIMULATED_CLINICIAN,
    strict: bool = True,
    progress: Callable[[int, int], None] | None = None,
    lang: Lang = "en",
) -> backtest.ReportOut:
    """Backtest ``proposal`` for the patients over the ``days`` up to ``until``.

    ``lang``: the language of the report's own words (the alerts carry both languages).

    ``strict``: a patient whose proposed (or current) plan does not resolve is a
    PlanError; otherwise that patient is reported as skipped, with why.
    """
    since = until - timedelta(days=days)
    found: list[backtest.PatientOut] = []
    for start in range(0, len(patient_ids), CHUNK):
        ids = patient_ids[start : start + CHUNK]
        async with conn.transaction():
            await before_read(ids)
            found += await _chunk(
                conn, ids, proposal, since=since, until=until, policy=policy, strict=strict
            )
        if progress is not None:
            progress(len(found), len(patient_ids))
    done = backtest.report(
        found,
        since=since,
        until=until,
        days=days,
        proposal=proposal.describe(lang),
        policy=policy,
        lang=lang,
    )
    # Counts only: the report names patients, the log never does.
    log.info(
        "backtest_done",
        patients=done.total.patients,
        skipped=len(found) - done.total.patients,
        readings=done.total.readings,
        days=days,
        current_alerts=done.total.current.total,
        proposed_alerts=done.total.proposed.total,
    )
    return done
