"""The worker's CPU per evaluated patient, no database: ``python -m homemonitor_bench.engine``.

A realistic batch: ``--patients`` patients (500) of one condition, each with one new
reading and the stored history the worker's windowed query returns for it, from the
simulated cohort (:mod:`homemonitor_devices.cohort`: day-to-day variation, artefacts,
duplicate sessions, adherence gaps, device swaps), at least 30 days into the run. Per
condition, the patients' plan is the condition template (personalised as the clinical
evaluation does) or the thresholds-only plan of the same patients. Timed: what the
worker does for the chosen patients of a batch between its SQL round trips
(:func:`homemonitor.alerts.episodes._history` from the query's rows, then
:func:`~homemonitor.alerts.episodes._run`: ``evaluate`` per patient and the rows it
writes) against a connection that answers from memory, and ``evaluate`` alone.
Prints microseconds per evaluated patient (one reading each), the median of
``--repeat`` runs of CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from homemonitor.alerts import episodes as alert_episodes
from homemonitor.alerts.routing import Routing, Team
from homemonitor.contract.readings import QUANTITIES, Metric
from homemonitor.registry.cache import PatientPlan
from homemonitor.rules.evaluate import evaluate
from homemonitor.rules.histories import Cached, HistoryCache
from homemonitor.rules.history import METRICS, History, StoredReading, micros
from homemonitor.rules.plan import CarePlanSpec, Plan, resolve
from homemonitor.rules.templates import TEMPLATES
from homemonitor_devices.cohort import CohortPatient, CohortReading, generate_cohort
from homemonitor_devices.simulate import COPD, HEART_FAILURE, HYPERTENSION, thresholds_for

CONDITIONS = (HEART_FAILURE, HYPERTENSION, COPD)
#: A point is at least this far into the simulated run: a month of history behind it.
HISTORY_DAYS = 30


def _personal(patient: CohortPatient) -> dict[str, float]:
    """The personal values of the clinical evaluation (``homemonitor_eval.rulesets``)."""
    if patient.condition == HEART_FAILURE:
        return {"dry_weight": patient.baseline.body_weight}
    if patient.condition == COPD:
        return {"target_spo2_low": patient.baseline.spo2 - 2.0}
    return {}


def _plan(patient: CohortPatient, mode: str) -> Plan:
    if mode == "templates":
        spec = CarePlanSpec(template=patient.condition, personal=_personal(patient))
    else:
        bounds = thresholds_for(patient.condition, patient.baseline, patient.kinds)
        spec = CarePlanSpec.model_validate({"thresholds": bounds})
    return resolve(spec, 1, TEMPLATES)


class _Case:
    """One evaluated patient of the batch: plan, stored readings up to the point, point."""

    def __init__(self, patient_id: str, plan: Plan, stored: Sequence[CohortReading]) -> None:
        self.patient = PatientPlan(patient_id, "team-1", 1, plan, plain=False)
        self.stored = [
            StoredReading(r.measured_at, r.device_id, r.metric, dict(r.values), r.quality)
            for r in stored
        ]
        self.point = self.stored[-1]


def _cases(condition: str, mode: str, n: int, seed: int) -> list[_Case]:
    """``n`` patients of ``condition``, each at one reading at least a month into the run."""
    cohort = generate_cohort(max(12, n // 8) * 3, days=HISTORY_DAYS + 30, seed=seed)
    patients = [p for p in cohort.patients if p.condition == condition]
    rng = random.Random(seed)  # noqa: S311 -- a benchmark's sample, not a secret
    start = cohort.start + timedelta(days=HISTORY_DAYS)
    cases: list[_Case] = []
    while len(cases) < n:
        for patient in patients:
            readings = cohort.readings(patient)
            later = [i for i, r in enumerate(readings) if r.measured_at >= start]
            if not later:
                continue
            i = rng.choice(later)
            plan = _plan(patient, mode)
            cases.append(_Case(f"{patient.patient_id}-{len(cases)}", plan, readings[: i + 1]))
            if len(cases) == n:
                break
    return cases


def _packed(values: Sequence[float], dtype: str) -> bytes:
    return np.array(values).astype(dtype).tobytes()


def _row(patient_id: str, readings: Sequence[StoredReading]) -> tuple[Any, ...]:
    """The history query's row of one patient (None when there is no reading)."""
    if not readings:
        return (patient_id, *[None] * 10)
    nan = float("nan")
    devices = sorted({r.device_id for r in readings})
    return (
        patient_id,
        _packed([micros(r.measured_at) for r in readings], ">i8"),
        _packed([devices.index(r.device_id) for r in readings], ">i2"),
        devices,
        _packed([METRICS.index(r.metric) for r in readings], ">i2"),
        _packed([r.values.get(q, nan) for r in readings for q in QUANTITIES], ">f8"),
        _packed([bool(r.quality) for r in readings], "?"),
        _packed([bool(r.flags) for r in readings], "?"),
        [",".join(sorted(r.quality)) for r in readings if r.quality] or None,
        [",".join(sorted(r.flags)) for r in readings if r.flags] or None,
    )


class _Memory:
    """A connection that answers the episode queries of one batch from memory.

    The history query is answered once and the answer kept, so timed runs after the
    first measure only the worker's side.
    """

    def __init__(self, cases: Sequence[_Case]) -> None:
        self._by_patient = {c.patient.patient_id: c for c in cases}
        self._history: list[Any] | None = None
        self._next_id = 0

    def _answer_history(self, ids: list[str], *args: Any) -> list[Any]:
        *since, limit, _ = args
        rows: list[Any] = []
        for i, patient_id in enumerate(ids):
            windows = {m: t[i] for m, t in zip(Metric, since, strict=True) if t[i] is not None}
            stored = self._by_patient[patient_id].stored
            window = [
                r
                for r in reversed(stored)
                if r.metric in windows and r.measured_at >= windows[r.metric]
            ]
            rows.append(_row(patient_id, window[:limit]))
        return rows

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """What PostgreSQL would return for ``query`` (the history query; ids)."""
        if query == alert_episodes._HISTORY:
            if self._history is None:
                self._history = self._answer_history(*args)
            return self._history
        if query.lstrip().startswith("SELECT nextval"):
            first = self._next_id
            self._next_id += args[0]
            return [{"id": i} for i in range(first, first + args[0])]
        return []

    async def execute(self, query: str, *args: Any) -> str:
        """Writes go nowhere."""
        del query, args
        return ""


async def _worker_step(
    conn: _Memory,
    cases: Sequence[_Case],
    cache: HistoryCache | None = None,
    *,
    back: int = 0,
) -> dict[str, Cached]:
    """What the worker does for the chosen patients between its SQL round trips.

    With ``cache``: every patient's history is in the worker's cache (a hit); returns the
    entries the worker keeps. ``back``: at each patient's reading that many before the point.
    """
    chosen = [c.patient for c in cases]
    points = {c.patient.patient_id: [c.stored[-1 - back]] for c in cases}
    kept: dict[str, Cached] = {}
    if cache is None:
        history = await alert_episodes._history(conn, chosen, points)  # type: ignore[arg-type]
    else:
        # every entry is exact: kept at count 0, and the batch stores one reading each
        stored = dict.fromkeys(points, 1)
        history, kept = await alert_episodes._cached_history(conn, chosen, points, cache, stored)  # type: ignore[arg-type]
    tally = alert_episodes.Tally()
    routes = Routing({"team-1": Team("team-1")}, {p.patient_id: ("team-1", None) for p in chosen})
    await alert_episodes._run(
        conn,  # type: ignore[arg-type]
        chosen,
        history,
        points,
        {},
        cases[-1].point.measured_at,
        tally,
        actor="rule",
        routes=routes,
    )
    return kept


def _engine_only(cases: Sequence[_Case], histories: Sequence[History]) -> None:
    for c, h in zip(cases, histories, strict=True):
        evaluate(c.patient.plan, h, [c.point], {}, c.point.measured_at)


def _cpu(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times)


def measure(
    condition: str, mode: str, n: int, repeat: int, seed: int
) -> tuple[float, float, float]:
    """(worker step, the same from the cache, evaluate alone) in µs of CPU per patient."""
    cases = _cases(condition, mode, n, seed)
    conn = _Memory(cases)
    gc.collect()
    gc.freeze()  # the benchmark's own cohort is not the worker's garbage to walk
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_worker_step(conn, cases))  # answers the query once
        worker = _cpu(lambda: loop.run_until_complete(_worker_step(conn, cases)), repeat)
    finally:
        loop.close()
    loop = asyncio.new_event_loop()
    try:
        found = loop.run_until_complete(
            alert_episodes._history(
                conn,  # type: ignore[arg-type]
                [c.patient for c in cases],
                {c.patient.patient_id: [c.point] for c in cases},
            )
        )
    finally:
        loop.close()
    histories = [found[c.patient.patient_id] for c in cases]
    # The worker's steady state: each entry kept by the batch before (series built). Each
    # timed run is the next batch, at each patient's next reading, kept in turn.
    first = repeat + 1  # readings before the point: the warm-up batch's, then one per run
    cache = HistoryCache()
    ids = [c.patient.patient_id for c in cases]
    cache.keep(
        {
            c.patient.patient_id: Cached.of(
                0,
                *alert_episodes._columns(_row(c.patient.patient_id, c.stored[: -first - 1])[1:])
                or (),
            ).after(micros(c.stored[-first - 1].measured_at - c.patient.plan.lookback()))
            for c in cases
        },
        dict.fromkeys(ids, 0),
    )
    loop = asyncio.new_event_loop()
    steps = iter(range(first, -1, -1))

    def step() -> None:
        kept = loop.run_until_complete(_worker_step(conn, cases, cache, back=next(steps)))
        cache.keep(kept, dict.fromkeys(ids, 0))

    try:
        step()
        cached = _cpu(step, repeat)
    finally:
        loop.close()
    for c, h in zip(cases, histories, strict=True):
        for q in c.patient.plan.quantities():  # evaluate alone: series already built
            h.series(q)
            h.series(q, questionable=True)
    engine = _cpu(lambda: _engine_only(cases, histories), repeat)
    return worker / n * 1e6, cached / n * 1e6, engine / n * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """Print µs of CPU per evaluated patient per condition, templates and thresholds."""
    parser = argparse.ArgumentParser(prog="python -m homemonitor_bench.engine")
    parser.add_argument("--patients", type=int, default=500, help="patients per batch")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the median counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--condition", choices=CONDITIONS, action="append")
    args = parser.parse_args(argv)
    print(f"µs of CPU per evaluated patient (one new reading each), {args.patients} per batch")
    print(f"{'condition':<15}{'plan':<12}{'worker step':>12}{'cached':>8}{'evaluate':>10}")
    for condition in args.condition or CONDITIONS:
        for mode in ("thresholds", "templates"):
            worker, cached, engine = measure(condition, mode, args.patients, args.repeat, args.seed)
            print(f"{condition:<15}{mode:<12}{worker:>12.1f}{cached:>8.1f}{engine:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
