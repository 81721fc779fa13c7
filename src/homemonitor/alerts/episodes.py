"""Alert episodes of one batch: the engine's states loaded, its changes written. SQL.

:func:`evaluate_batch` runs inside the batch's transaction
(:func:`homemonitor.storage.transaction.commit`), for the patients that got new readings:

1. The statement that inserted the readings took ``pg_advisory_xact_lock`` per patient,
   in one sorted order for every worker, so two workers holding readings of the same
   patient evaluate one after the other, each seeing what the other committed: exactly
   what one worker would do (:func:`lock_patients` takes the same locks, for the
   scheduler's due runs and the API before a clinician changes an alert). It also
   returned each patient's count of stored readings, which says whether the worker's
   history cache entry of the patient is still exactly what the database holds
   (:mod:`homemonitor.rules.histories`).
2. ONE query for those patients' episode states: the active episode per rule and the last
   one a clinician resolved (:func:`load_states`).
   Missing-data episodes among them (:mod:`homemonitor.alerts.silence`) are taken out:
   a new reading that ends a silence auto-resolves its episode here, at no extra query.
3. The fast path: a patient whose plan is plain thresholds, none of whose new readings
   reaches a bound (a numpy screen over the batch) and who has no episode state to move
   needs no evaluation, so no history. Nor does a patient of any other plan with no
   episode state whose cache entry is exact and whose new readings are inside the quiet
   envelope the entry got at their last evaluation (:mod:`homemonitor.rules.quiet`).
   Everybody else:
4. their history: from an exact cache entry and the batch's readings, with no query;
   for the others, ONE query for all of them (a LATERAL per patient, returned as one row
   of arrays: no Python object per reading) of every reading from their oldest new one
   minus the plan's lookback (:func:`_cached_history`; entries are kept once the batch
   has committed),
5. the engine's pure :func:`~homemonitor.rules.evaluate.evaluate` per patient,
6. and its changes written in bulk: updated episodes (``unnest``), new ones (ids drawn
   first, one ``unnest`` insert), and an ``alert_events`` row per transition.

:func:`run_due` is the time-driven half, run by the scheduler's ``alerts.due`` job
(:mod:`homemonitor.jobs`): the engine's :func:`~homemonitor.rules.episodes.due` for
pending breaches past their retake window and cleared episodes past their off-delay,
under the same locks, through the same write path (:func:`_write`), actor ``scheduler``.

The partial unique index ``alerts_one_active_per_rule`` (pending, open, acknowledged,
cleared) keeps one active episode per patient and rule whatever a worker does.
:mod:`homemonitor.alerts.rows` maps between table rows and the engine's states.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from homemonitor import logs
from homemonitor.alerts import routing, rows, silence
from homemonitor.alerts.rows import Draft, Stored
from homemonitor.contract.readings import OPTIONAL, QUANTITIES, REQUIRED, Metric, Quantity
from homemonitor.ingest.pipeline import Candidate
from homemonitor.registry.cache import PatientPlan, Plans
from homemonitor.rules import careplan
from homemonitor.rules import episodes as engine
from homemonitor.rules.evaluate import Outcome, evaluate
from homemonitor.rules.histories import Cached, HistoryCache
from homemonitor.rules.history import METRICS, History, StoredReading, micros, packed
from homemonitor.rules.plan import HISTORY_CAP, Plan, triggers
from homemonitor.rules.quiet import quiet
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)

#: The advisory-lock class of a patient's episodes (two-key locks: never the migration's).
LOCK_CLASS = 0x686D6570  # "hmep"
#: Resolved episodes older than this never hold a rule back (realert.after_hours <= 90 d).
RESOLVED_HORIZON = timedelta(days=90)

#: The newest readings per patient the history query returns at most (every quantity).
HISTORY_ROWS = HISTORY_CAP * len(Metric)
#: A patient's lock key (SQL, ``{}`` the patient id): 32 bits of the server's own hash.
LOCK_KEY = "hashtext({})"
_LOCK = f"""
SELECT count(pg_advisory_xact_lock({LOCK_CLASS}, k))
FROM (SELECT DISTINCT {LOCK_KEY.format("p")} AS k FROM unnest($1::text[]) AS p ORDER BY k) AS keys
"""

_STATES = f"""
(SELECT true AS active, {rows.STATE_COLUMNS} FROM alerts
 WHERE patient_id = ANY($1::text[]) AND status IN ('pending', 'open', 'acknowledged', 'cleared'))
UNION ALL
(SELECT DISTINCT ON (patient_id, rule) false AS active, {rows.STATE_COLUMNS} FROM alerts
 WHERE patient_id = ANY($1::text[]) AND status = 'resolved' AND resolved_at > $2
 ORDER BY patient_id, rule, resolved_at DESC)
"""

_METRIC_NAMES = [m.value for m in Metric]
_VALUES = " || ".join(f"float8send(coalesce(r.{q.value}, 'NaN'))" for q in QUANTITIES)
_SINCE = ", ".join(f"${i}::timestamptz[]" for i in range(2, 2 + len(Metric)))
_METRIC_SINCE = " ".join(f"WHEN '{m}' THEN p.{m}" for m in _METRIC_NAMES)
_CAP, _CODES = 2 + len(Metric), 3 + len(Metric)
#: Per patient, with a since per metric (NULL: not needed): each metric's readings
#: measured at or after its since (the newest HISTORY_ROWS in all), as ONE row of columns.
#: Numbers come as the binary of their type, concatenated (``int8send``...: no Python
#: object per value): measured_at in microseconds since the epoch (int8), the device as
#: an index into the row's distinct device ids (int2), the metric as its index in
#: :data:`homemonitor.rules.history.METRICS` (int2), its values as float8 in the order of
#: QUANTITIES (row after row; NaN where a reading has no such value), whether it has
#: quality and clock flags (bool); and those flags' names, only of the readings with them.
_AGGREGATE = f"""
    SELECT string_agg(int8send((extract(epoch FROM r.measured_at) * 1000000)::int8), ''),
        string_agg(int2send(r.device_code::int2), ''),
        array_agg(DISTINCT r.device_id COLLATE "C" ORDER BY r.device_id COLLATE "C"),
        string_agg(int2send((array_position(${{codes}}::text[], r.metric) - 1)::int2), ''),
        string_agg({_VALUES}, ''),
        string_agg(boolsend(r.quality <> '{{{{}}}}'), ''),
        string_agg(boolsend(r.flags <> '{{{{}}}}'), ''),
        array_agg(array_to_string(r.quality, ',')) FILTER (WHERE r.quality <> '{{{{}}}}'),
        array_agg(array_to_string(r.flags, ',')) FILTER (WHERE r.flags <> '{{{{}}}}')
    FROM (
        SELECT r.*, dense_rank() OVER (ORDER BY r.device_id COLLATE "C") - 1 AS device_code
        FROM (
            SELECT * FROM readings r
            WHERE r.patient_id = p.patient_id AND {{where}}
            ORDER BY r.measured_at DESC
            LIMIT ${{cap}}
        ) AS r
    ) AS r
"""
_HISTORY = f"""
SELECT p.patient_id, h.*
FROM unnest($1::text[], {_SINCE}) AS p(patient_id, {", ".join(_METRIC_NAMES)})
CROSS JOIN LATERAL ({
    _AGGREGATE.format(
        codes=_CODES,
        cap=_CAP,
        where=f"r.measured_at >= LEAST({', '.join(f'p.{m}' for m in _METRIC_NAMES)})"
        f" AND r.measured_at >= CASE r.metric {_METRIC_SINCE} END",
    )
}) AS h
"""
#: Per patient, every reading measured at or after ``since`` (the newest $3), as
#: :data:`_HISTORY` returns them: what a new cache entry is made of.
_ENTRIES = f"""
SELECT p.patient_id, h.*
FROM unnest($1::text[], $2::timestamptz[]) AS p(patient_id, since)
CROSS JOIN LATERAL ({_AGGREGATE.format(codes=4, cap=3, where="r.measured_at >= p.since")}) AS h
"""
_MICROSECOND = timedelta(microseconds=1)
_NONE: frozenset[str] = frozenset()
#: The metrics whose readings carry each quantity.
_CARRIERS: dict[Quantity, tuple[Metric, ...]] = {
    q: tuple(m for m in Metric if q in REQUIRED[m] or q in OPTIONAL[m]) for q in Quantity
}


@dataclasses.dataclass(slots=True)
class Tally:
    """What the episodes of one batch did (the batch's :class:`CommitResult` counts it)."""

    opened: Counter[str] = dataclasses.field(default_factory=Counter)  # by severity
    updated: int = 0  # episodes moved by other transitions
    evaluated: int = 0  # patients the engine ran for
    screened: int = 0  # patients the fast path let through without evaluation
    #: History cache entries to keep once the batch has committed (:class:`HistoryCache`).
    cached: dict[str, Cached] = dataclasses.field(default_factory=dict)


async def lock_patients(conn: Conn, patient_ids: Iterable[str]) -> None:
    """Hold each patient's episode lock to the end of the transaction, in sorted key order."""
    ids = sorted(set(patient_ids))
    if ids:
        await conn.execute(_LOCK, ids)


async def load_states(
    conn: Conn, patient_ids: Sequence[str], now: datetime
) -> dict[str, dict[str, Stored]]:
    """Each patient's stored episode state per rule (active episode + last resolved one)."""
    found: dict[str, dict[str, Stored]] = defaultdict(dict)
    for r in await conn.fetch(_STATES, list(patient_ids), now - RESOLVED_HORIZON):
        per_rule = found[r["patient_id"]]
        stored = per_rule.get(r["rule"]) or Stored()
        per_rule[r["rule"]] = rows.with_row(stored, dict(r), active=r["active"])
    return found


def _stored_reading(c: Candidate) -> StoredReading:
    r = c.reading
    return StoredReading(
        r.measured_at,
        r.device_id,
        r.metric,
        dict(r.values),
        frozenset(map(str, r.quality)) if r.quality else _NONE,
        frozenset(map(str, r.flags)) if r.flags else _NONE,
    )


def _screen(rows_: Sequence[Candidate], plans: Plans) -> set[str]:
    """Patients with a plain plan and a new reading that reaches one of its bounds."""
    plain = [c for c in rows_ if (p := plans.get(c.patient_id)) is not None and p.plain]
    if not plain:
        return set()
    table = plans.screen
    index = np.fromiter((table.row(c.patient_id) for c in plain), np.intp, len(plain))
    levels = careplan.evaluate(
        table, index, careplan.values_matrix([c.reading.values for c in plain])
    )
    hits = levels.max(axis=1) > 0
    return {c.patient_id for c, hit in zip(plain, hits.tolist(), strict=True) if hit}


async def evaluate_batch(
    conn: Conn,
    new: Sequence[Candidate],
    plans: Plans,
    now: datetime,
    stored: Mapping[str, int],
) -> Tally:
    """Evaluate and write the episodes of ``new`` (readings just stored); see the module.

    Called right after the statement that inserted ``new`` took the patients' locks and
    returned ``stored``: each patient's count of stored readings after it
    (:mod:`homemonitor.rules.histories`).
    """
    tally = Tally()
    arrived: dict[str, list[Candidate]] = defaultdict(list)
    for c in new:
        arrived[c.patient_id].append(c)
    patients = sorted(p for p in arrived if plans.get(p) is not None)
    if not patients:
        return tally
    states = await load_states(conn, patients, now)
    silent = silence.split(states)  # missing-data episodes: a new reading ends a silence
    if silent:
        closing = silence.closing(silent, _points(arrived, silent), now)
        await _write(conn, closing, [], tally, now=now)
    breached = _screen(new, plans)
    chosen: list[PatientPlan] = []
    for patient_id in patients:
        plan = plans.get(patient_id)
        assert plan is not None
        if plan.plain:
            if patient_id not in breached and not rows.needs_evaluation(states.get(patient_id)):
                tally.screened += 1
                continue
        elif not states.get(patient_id):
            entry = _screened(plans.histories, plan, arrived[patient_id], stored[patient_id])
            if entry is not None:
                tally.cached[patient_id] = entry
                tally.screened += 1
                continue
        chosen.append(plan)
    if not chosen:
        return tally
    points = _points(arrived, [p.patient_id for p in chosen])
    history, kept = await _cached_history(conn, chosen, points, plans.histories, stored)
    tally.cached.update(kept)
    await _run(
        conn, chosen, history, points, states, now, tally, actor="rule", routes=plans.routing
    )
    return tally


def _points(
    arrived: Mapping[str, Sequence[Candidate]], patient_ids: Iterable[str]
) -> dict[str, list[StoredReading]]:
    """These patients' new readings as the engine reads them."""
    return {p: [_stored_reading(c) for c in arrived[p]] for p in patient_ids}


def _screened(
    cache: HistoryCache, plan: PatientPlan, mine: Sequence[Candidate], stored: int
) -> Cached | None:
    """The patient's cache entry after ``mine`` when ``mine`` need no evaluation, else None.

    They need none when the entry is exactly what the database holds
    (:meth:`HistoryCache.current`; ``stored``: the patient's count of stored readings
    after this batch), starts a lookback before them, and has an envelope of this plan
    that takes them (:mod:`homemonitor.rules.quiet`). Plain values only, no engine
    objects: most readings of a templates patient end here.
    """
    entry = cache.current(plan.patient_id, stored, len(mine))
    if entry is None or entry.quiet is None or entry.quiet.plan is not plan.plan:
        return None
    readings = sorted([packed(c.reading) for c in mine])
    after = entry.quiet.accepts(readings)
    if after is None or entry.since > readings[0][0] - _lookback(plan.plan):
        return None
    return _trimmed(entry, plan.plan, readings[0][0]).later(readings, after)


def _current(
    cache: HistoryCache,
    plan: PatientPlan,
    mine: Sequence[StoredReading],
    stored: Mapping[str, int],
) -> Cached | None:
    """The patient's cache entry when it is exactly what the database holds
    (:meth:`HistoryCache.current`) and starts early enough for the windows ``mine`` need."""
    entry = cache.current(plan.patient_id, stored[plan.patient_id], len(mine))
    if entry is None or entry.since > micros(min(_windows(plan.plan, mine).values())):
        return None
    return entry


async def _run(  # noqa: PLR0917 - the one step both entry points share
    conn: Conn,
    chosen: Sequence[PatientPlan],
    history: dict[str, History],
    points: dict[str, list[StoredReading]],
    states: dict[str, dict[str, Stored]],
    now: datetime,
    tally: Tally,
    *,
    actor: str,
    routes: routing.Routing | None = None,
) -> None:
    """Evaluate each chosen patient and write what changed, in bulk."""
    drafts: list[Draft] = []
    resolved_updates: list[tuple[int, str]] = []
    for plan in chosen:
        stored = states.get(plan.patient_id, {})
        h = history.get(plan.patient_id) or History()
        outcome = evaluate(
            plan.plan,
            h,
            points.get(plan.patient_id, ()),
            {rule: s.state for rule, s in stored.items()},
            now,
        )
        tally.evaluated += 1
        kept = tally.cached.get(plan.patient_id)
        if kept is not None and not stored and not outcome.states and not plan.plain:
            # every rule idle before and after: the entry gets the envelope of its readings
            tally.cached[plan.patient_id] = dataclasses.replace(kept, quiet=quiet(plan.plan, h))
        made, resolved = rows.drafts(plan, h, stored, outcome, now)
        drafts += made
        resolved_updates += resolved
    await _write(conn, drafts, resolved_updates, tally, now=now, actor=actor, routes=routes)


def _reads(plan: Plan, carried: frozenset[Quantity]) -> dict[Metric, timedelta]:
    """How far before a point carrying ``carried`` each metric's readings are needed.

    A point is assessed by the rules it triggers (:func:`~homemonitor.rules.plan.triggers`);
    each of those reads every metric that carries one of its quantities, its lookback
    back. Per plan and set of quantities, computed once.
    """
    cache: dict[frozenset[Quantity], dict[Metric, timedelta]]
    cache = plan.derived.setdefault("history_windows", {})
    found = cache.get(carried)
    if found is None:
        found = {}
        for rule in plan.rules:
            if carried.isdisjoint(triggers(rule)):
                continue
            lookback = timedelta(hours=rule.lookback_hours())
            for q in rule.quantities:
                for m in _CARRIERS[q]:
                    found[m] = max(found.get(m, lookback), lookback)
        cache[carried] = found
    return found


def _windows(plan: Plan, points: Sequence[StoredReading]) -> dict[Metric, datetime]:
    """From when the worker needs each metric's readings to evaluate ``points``.

    What the rules assessed at the points read (:func:`_reads`), and the points' own
    metrics from the oldest point on, so the points (stored in this transaction) are in
    the history. Everything newer is fetched too: the engine needs to see what is newer
    than an out-of-order point.
    """
    since: dict[Metric, datetime] = {}
    for p in points:
        for m, lookback in _reads(plan, frozenset(p.values)).items():
            t = p.measured_at - lookback
            if m not in since or t < since[m]:
                since[m] = t
        if p.metric not in since or p.measured_at < since[p.metric]:
            since[p.metric] = p.measured_at
    return since


def _columns(fields: Sequence[Any]) -> tuple[Any, ...] | None:
    """The history query's columns of one patient as :meth:`History.from_columns` takes them.

    None: no readings in the windows.
    """
    us, device, devices, metrics, values, flagged, clocked, quality, flags = fields
    if us is None:
        return None
    return (
        np.frombuffer(us, ">i8"),
        np.frombuffer(device, ">i2"),
        devices,
        np.frombuffer(metrics, ">i2"),
        np.frombuffer(values, ">f8").reshape(-1, len(QUANTITIES)),
        np.frombuffer(flagged, np.bool_),
        np.frombuffer(clocked, np.bool_),
        quality or (),
        flags or (),
    )


async def _history(
    conn: Conn, chosen: Sequence[PatientPlan], points: dict[str, list[StoredReading]]
) -> dict[str, History]:
    """The stored readings each chosen patient's plan needs, by patient (ONE query).

    Per patient and metric only as far back as the rules its points run read
    (:func:`_windows`): a weight reading does not fetch a week of blood pressure.
    """
    found: dict[str, History] = {}
    if not chosen:
        return found
    ids = [p.patient_id for p in chosen]
    windows = [_windows(p.plan, points[p.patient_id]) for p in chosen]
    since = [[w.get(m) for w in windows] for m in Metric]
    codes = [m.value for m in METRICS]
    for r in await conn.fetch(_HISTORY, ids, *since, HISTORY_ROWS, codes):
        columns = _columns(r[1:])
        if columns is not None:
            found[r[0]] = History.from_columns(*columns, cap=HISTORY_CAP)
    return found


async def _cached_history(
    conn: Conn,
    chosen: Sequence[PatientPlan],
    points: dict[str, list[StoredReading]],
    cache: HistoryCache,
    stored: Mapping[str, int],
) -> tuple[dict[str, History], dict[str, Cached]]:
    """:func:`_history` through the worker's cache; and the entries to keep after commit.

    A patient whose entry is exact (:func:`_current`) is evaluated on the entry and the
    points: no query. Everybody else gets every reading from ``lookback`` before their
    oldest point on (ONE query for them all), kept as a new entry unless there are so
    many that a series would be cut at the cap; those (rare) are asked again as
    :func:`_history` asks.
    """
    found: dict[str, History] = {}
    keep: dict[str, Cached] = {}
    loads: list[PatientPlan] = []
    starts: list[datetime] = []
    for p in chosen:
        mine = points[p.patient_id]
        entry = _current(cache, p, mine, stored)
        if entry is None:
            loads.append(p)
            starts.append(min(r.measured_at for r in mine) - p.plan.lookback())
            continue
        updated = entry.merged(mine)
        found[p.patient_id] = updated.history()
        keep[p.patient_id] = _trimmed(updated, p.plan, _first(mine))
    if not loads:
        return found, keep
    codes = [m.value for m in METRICS]
    ids = [p.patient_id for p in loads]
    answers = {r[0]: r for r in await conn.fetch(_ENTRIES, ids, starts, HISTORY_CAP, codes)}
    uncut: list[PatientPlan] = []
    for p, start in zip(loads, starts, strict=True):
        columns = _columns(answers[p.patient_id][1:])
        if columns is not None and len(columns[0]) >= HISTORY_CAP:
            uncut.append(p)
            continue
        updated = Cached.empty(micros(start))
        if columns is not None:
            updated = Cached.of(micros(start), *columns)
        found[p.patient_id] = updated.history()
        keep[p.patient_id] = _trimmed(updated, p.plan, _first(points[p.patient_id]))
    if uncut:
        cache.forget([p.patient_id for p in uncut])
        found.update(await _history(conn, uncut, points))
    return found, keep


def _lookback(plan: Plan) -> int:
    """:meth:`Plan.lookback` in microseconds."""
    return plan.lookback() // _MICROSECOND


def _first(points: Sequence[StoredReading]) -> int:
    """When the oldest of ``points`` was measured (µs)."""
    return micros(min(r.measured_at for r in points))


def _trimmed(entry: Cached, plan: Plan, first: int) -> Cached:
    """``entry`` without what a miss would not load now (``first``: the oldest new reading,
    µs), once that is a lookback's worth."""
    lookback = _lookback(plan)
    start = first - lookback
    if entry.since < start - lookback:
        return entry.after(start)
    return entry


_UPDATE = f"""
UPDATE alerts AS a SET {", ".join(f"{c} = u.{c}" for c in rows.MUTABLE)},
    resolved_at = CASE WHEN u.status IN ('auto_resolved', 'withdrawn') THEN clock_timestamp()
                       ELSE a.resolved_at END,
    updated_at = clock_timestamp()
FROM unnest($1::bigint[], {rows.arrays(rows.MUTABLE_TYPES, first=2)})
     AS u(id, {", ".join(rows.MUTABLE)})
WHERE a.id = u.id
"""
_INSERT = f"""
INSERT INTO alerts ({", ".join(rows.COLUMNS)}, resolved_at)
SELECT u.*, CASE WHEN u.status IN ('auto_resolved', 'withdrawn') THEN clock_timestamp() END
FROM unnest({rows.arrays(rows.COLUMN_TYPES, first=1)})
     AS u({", ".join(rows.COLUMNS)})
"""
_EVENTS = """
INSERT INTO alert_events (alert_id, kind, actor, details)
SELECT e.alert_id, e.kind, $4, e.details::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS e(alert_id, kind, details)
"""
_RESOLVED_STATE = """
UPDATE alerts AS a SET state = a.state || u.state::jsonb
FROM unnest($1::bigint[], $2::text[]) AS u(id, state) WHERE a.id = u.id
"""


async def _write(
    conn: Conn,
    drafts: list[Draft],
    resolved: list[tuple[int, str]],
    tally: Tally,
    *,
    now: datetime,
    actor: str = "rule",
    routes: routing.Routing | None = None,
) -> None:
    """Updates first (an ended episode leaves the unique index), then inserts, then events.

    Before the events, new alerts are routed and their escalation started
    (:func:`homemonitor.alerts.routing.on_write`: nothing when none opened; ``routes``:
    the registry cache's routing, so no query for it).
    """
    updates = [d for d in drafts if d.id is not None and d.dirty]
    inserts = [d for d in drafts if d.id is None]
    if updates:
        columns = [[getattr(d, c) for d in updates] for c in rows.MUTABLE]
        await conn.execute(_UPDATE, [d.id for d in updates], *rows.encode(columns, rows.MUTABLE))
    if inserts:
        ids = await conn.fetch(
            "SELECT nextval('alerts_id_seq') AS id FROM generate_series(1, $1)", len(inserts)
        )
        for d, r in zip(inserts, ids, strict=True):
            d.id = r["id"]
        columns = [[getattr(d, c) for d in inserts] for c in rows.COLUMNS]
        await conn.execute(_INSERT, *rows.encode(columns, rows.COLUMNS))
    if resolved:
        await conn.execute(_RESOLVED_STATE, [i for i, _ in resolved], [s for _, s in resolved])
    await routing.on_write(conn, drafts, now, routes)
    events = [(d.id, kind, details) for d in drafts for kind, details in d.events]
    if events:
        await conn.execute(
            _EVENTS,
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2] for e in events],
            actor,
        )
    for d in drafts:
        for kind, _ in d.events:
            if kind in ("opened", "reopened"):
                tally.opened[d.opened_severity or d.severity] += 1
            elif kind != "pending":
                tally.updated += 1


async def write(
    conn: Conn, drafts: list[Draft], tally: Tally, *, actor: str, now: datetime
) -> None:
    """Write episodes moved outside the engine (missing data) as a batch writes its own:
    a new one is routed and its escalation started as any other."""
    await _write(conn, drafts, [], tally, now=now, actor=actor)


#: Patients with time-driven work due: a pending breach past ``due_at``, or a cleared
#: non-latching episode past ``resolve_due_at`` (both partial indexes).
_DUE = """
SELECT patient_id FROM (
    SELECT patient_id FROM alerts WHERE status = 'pending' AND due_at <= $1
    UNION
    SELECT patient_id FROM alerts WHERE status = 'cleared' AND resolve_due_at <= $1
) AS due ORDER BY patient_id LIMIT $2
"""
_NEXT_DUE = """
SELECT least(
    (SELECT min(due_at) FROM alerts WHERE status = 'pending' AND due_at > $1),
    (SELECT min(resolve_due_at) FROM alerts WHERE status = 'cleared' AND resolve_due_at > $1))
"""
_RESOLVE_DUE = """
UPDATE alerts AS a SET resolve_due_at = u.at
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at) WHERE a.id = u.id
"""
#: Patients one :func:`run_due` takes at most (the rest: the next run, at once).
DUE_LIMIT = 500
#: An active episode whose rule its patient's plan no longer has (a new plan version, or
#: a template that dropped the rule) waits on a deadline nothing can decide. A pending
#: breach is withdrawn (no alert was ever shown); a cleared episode keeps its status for a
#: clinician to resolve but leaves the due queue, so it cannot fill the queue's batches and
#: starve other patients' deadlines.
_WITHDRAW_ORPHANS = """
WITH w AS (
    UPDATE alerts SET status = 'withdrawn', resolved_at = clock_timestamp()
    WHERE id = ANY($1::bigint[]) AND status = 'pending' RETURNING id
)
INSERT INTO alert_events (alert_id, kind, actor, details)
SELECT id, 'withdrawn', 'scheduler', '{"reason": "rule_not_in_plan"}'::jsonb FROM w
"""
_UNQUEUE_ORPHANS = """
UPDATE alerts SET resolve_due_at = NULL WHERE id = ANY($1::bigint[]) AND status = 'cleared'
"""


async def _off_the_queue(conn: Conn, alert_ids: list[int]) -> None:
    """Take episodes of rules no longer in their plan off the due queue (see above)."""
    await conn.execute(_WITHDRAW_ORPHANS, alert_ids)
    await conn.execute(_UNQUEUE_ORPHANS, alert_ids)
    log.info(
        "episodes of rules no longer in their plan left the due queue", episodes=len(alert_ids)
    )


@dataclasses.dataclass(slots=True)
class Due:
    """What one :func:`run_due` did, and when there is more."""

    tally: Tally
    more: bool  # it took DUE_LIMIT patients and moved something: run again at once
    next_at: datetime | None  # the earliest deadline after ``now`` (None: nothing waits)


async def run_due(conn: Conn, plans: Plans, now: datetime, *, limit: int = DUE_LIMIT) -> Due:
    """The engine's time-driven work due by ``now``, written as a batch writes; one transaction.

    For every patient with a pending breach past its retake window or a cleared,
    non-latching episode past its off-delay, the engine's
    :func:`~homemonitor.rules.episodes.due` runs per active episode, under the patient's
    lock (the one the batch takes: a batch of the same patient and this never both move
    it), and the changes go through the batch's own write path with actor ``scheduler``.
    Without it such a breach would open, and such an episode resolve, only with the
    patient's next reading. A stored deadline the plan has since moved (a new
    ``resolve_after_hours`` or latching) is rewritten. Cheap when nothing is due.
    """
    tally = Tally()
    async with conn.transaction():
        due = [r["patient_id"] for r in await conn.fetch(_DUE, now, limit)]
        chosen = [p for p in map(plans.get, due) if p is not None]
        if chosen:
            await lock_patients(conn, [p.patient_id for p in chosen])
            states = await load_states(conn, [p.patient_id for p in chosen], now)
            drafts: list[Draft] = []
            resolved: list[tuple[int, str]] = []
            moved: list[tuple[int, datetime | None]] = []
            orphans: list[int] = []
            empty = History(())
            for plan in chosen:
                stored = states.get(plan.patient_id, {})
                outcome = Outcome()
                for rule_id, s in stored.items():
                    if s.active is None:
                        continue
                    rule = plan.plan.rule(rule_id)
                    if rule is None:  # the plan no longer has it: nothing can decide it
                        orphans.append(s.active["id"])
                        continue
                    new, changes = engine.due(rule, s.state, now)
                    if changes or new != s.state:
                        outcome.changes += changes
                        outcome.states[rule_id] = new
                    elif (deadline := rows.resolve_due_at(rule, s.state)) != s.active[
                        "resolve_due_at"
                    ]:
                        moved.append((s.active["id"], deadline))
                tally.evaluated += 1
                made, ended = rows.drafts(plan, empty, stored, outcome, now)
                drafts += made
                resolved += ended
            await _write(
                conn, drafts, resolved, tally, now=now, actor="scheduler", routes=plans.routing
            )
            if moved:
                await conn.execute(_RESOLVE_DUE, [i for i, _ in moved], [t for _, t in moved])
            if orphans:
                await _off_the_queue(conn, orphans)
        next_at: datetime | None = await conn.fetchval(_NEXT_DUE, now)
    changed = bool(tally.opened or tally.updated)
    return Due(tally, more=len(due) >= limit and changed, next_at=next_at)
