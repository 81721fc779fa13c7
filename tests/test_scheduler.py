"""The durable scheduler against real PostgreSQL: once per due time, restarts, retries, clock."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pydantic
import pytest

from homemonitor import jobs, registry
from homemonitor.contract.readings import Metric, Quantity, Reading
from homemonitor.embedded import PrivateMosquitto
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.metrics import Metrics
from homemonitor.scheduler import JobContext, ManualClock, Recurring, Retry, Scheduler, schedule
from homemonitor.settings import Settings
from homemonitor.storage import retention
from homemonitor.storage.transaction import commit
from tests.conftest import REGISTRY, RunningService, settings_for, wait_until

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class Runs:
    """A job that records each run in ``job_runs``, in the job's own transaction."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0

    async def __call__(self, ctx: JobContext) -> datetime | None:
        self.calls += 1
        await ctx.conn.execute("SELECT pg_sleep(0.02)")  # long enough for the other to try
        if self.calls <= self.fail_first:
            msg = "patient p-1 spo2 85"  # must never reach the row: it could be data
            raise RuntimeError(msg)
        await ctx.conn.execute(
            "INSERT INTO job_runs (name, key, due_at) VALUES ($1, $2, $3)",
            ctx.name,
            ctx.key,
            ctx.due_at,
        )
        return None


async def _job_runs_table(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE job_runs (name text, key text, due_at timestamptz)")


async def _runs(db: asyncpg.Connection) -> list[tuple[str, str, datetime]]:
    rows = await db.fetch("SELECT name, key, due_at FROM job_runs ORDER BY due_at, name")
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_two_schedulers_run_each_due_time_of_a_job_exactly_once(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Two schedulers on two pools: a recurring and a one-off job each run once per due time."""
    await _job_runs_table(db)
    clock = ManualClock(T0)
    handler = Runs()
    every = [Recurring("tick", timedelta(minutes=1), handler)]
    schedulers = [
        Scheduler(pool, Metrics(), recurring=every, handlers={"once": handler}, clock=clock)
        for pool in pools
    ]
    await schedule(db, "once", T0 + timedelta(seconds=90), key="alert-1/step-1")
    assert not await schedule(db, "once", T0, key="alert-1/step-1")  # idempotent
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    expected = [("tick", "", T0)]
    await wait_until(lambda: _runs(db), lambda r: r == expected)
    for minute in range(1, 5):
        clock.set(T0 + timedelta(minutes=minute))
        expected.append(("tick", "", T0 + timedelta(minutes=minute)))
        if minute == 2:
            expected.insert(-1, ("once", "alert-1/step-1", T0 + timedelta(seconds=90)))
        await wait_until(lambda: _runs(db), lambda r: r == expected)
    stop.set()
    await asyncio.gather(*tasks)
    assert [0, 0] == [await s.run_due() for s in schedulers]  # nothing left to claim
    assert expected == await _runs(db)
    assert len(expected) == handler.calls


async def _ticking(pool: asyncpg.Pool, every: timedelta, clock: ManualClock) -> Scheduler:
    """A process with a recurring job "tick" (recorded in job_runs), registered."""
    scheduler = Scheduler(
        pool, Metrics(), recurring=[Recurring("tick", every, Runs())], clock=clock
    )
    async with pool.acquire() as conn:
        await scheduler.register(conn)
    return scheduler


async def test_a_process_starting_late_does_not_run_a_due_time_again(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """A registration that read 08:00 lands after 08:01 ran: 08:01 does not run twice."""
    await _job_runs_table(db)
    clock = ManualClock(T0)
    first = await _ticking(pools[0], MINUTE, clock)
    for minute in (0, 1):
        clock.set(T0 + minute * MINUTE)
        assert 1 == await first.run_due()
    # the second process read its clock at 08:00 (slow to start, or a clock a little behind)
    await _ticking(pools[1], MINUTE, ManualClock(T0))
    assert 0 == await first.run_due()
    clock.set(T0 + 2 * MINUTE)
    assert 1 == await first.run_due()
    assert [("tick", "", T0 + m * MINUTE) for m in range(3)] == await _runs(db)


async def test_a_shorter_interval_counts_from_the_last_run_not_a_stale_start(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Hourly job ran at 08:10; a process that read 08:00 makes it every minute: next 08:11."""
    await _job_runs_table(db)
    clock = ManualClock(T0)
    hourly = await _ticking(pools[0], 60 * MINUTE, clock)
    clock.set(T0 + 10 * MINUTE)
    assert 1 == await hourly.run_due()
    await _ticking(pools[1], MINUTE, ManualClock(T0))
    row = await db.fetchrow("SELECT every, due_at FROM scheduled_jobs WHERE name = 'tick'")
    assert (MINUTE, T0 + 11 * MINUTE) == (row["every"], row["due_at"])


async def test_a_job_due_while_the_service_was_down_runs_when_it_starts(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> None:
    """The service's retention job, due during a 3 h outage, runs once at the next start."""
    clock = ManualClock(T0)
    svc = RunningService(settings_for(dsn, broker), http=False, clock=clock)
    await svc.start()
    first = await wait_until(
        lambda: db.fetchrow("SELECT runs, due_at FROM scheduled_jobs WHERE name = 'retention'"),
        lambda r: r is not None and r["runs"] == 1,
    )
    await svc.stop()
    await _quarantine(db, [T0 - timedelta(days=100)])
    clock.set(T0 + timedelta(hours=3))
    svc = RunningService(settings_for(dsn, broker), http=False, clock=clock)
    await svc.start()
    after = await wait_until(
        lambda: db.fetchrow("SELECT runs, due_at FROM scheduled_jobs WHERE name = 'retention'"),
        lambda r: r["runs"] == 2,
    )
    await svc.stop()
    assert (1, T0 + timedelta(hours=1)) == tuple(first)
    assert (2, T0 + timedelta(hours=4)) == tuple(after)  # one run for three missed, same cadence
    assert 0 == await db.fetchval("SELECT count(*) FROM quarantine")
    assert 1.0 == svc.metric("homemonitor_retention_deleted_rows_total", {"table": "quarantine"})


async def test_a_failing_job_is_retried_with_backoff_and_its_error_recorded(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Fails twice (retried after 10 s, then 20 s), then runs; the row names only the class."""
    await _job_runs_table(db)
    clock = ManualClock(T0)
    metrics = Metrics()
    flaky, hopeless = Runs(fail_first=2), Runs(fail_first=99)
    scheduler = Scheduler(
        pools[0],
        metrics,
        handlers={"flaky": flaky, "hopeless": hopeless},
        clock=clock,
        retry=Retry(first=timedelta(seconds=10)),
    )
    await schedule(db, "flaky", T0, key="k")
    await schedule(db, "hopeless", T0, key="k", max_attempts=2)
    query = "SELECT status, due_at, failures, last_error FROM scheduled_jobs WHERE name = $1"
    seen = []
    for at in (
        T0,
        T0 + timedelta(seconds=9),
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=30),
    ):
        clock.set(at)
        await scheduler.run_due()
        seen.append(tuple(await db.fetchrow(query, "flaky")))
    error = "builtins.RuntimeError"
    assert [
        ("scheduled", T0 + timedelta(seconds=10), 1, error),
        ("scheduled", T0 + timedelta(seconds=10), 1, error),
        ("scheduled", T0 + timedelta(seconds=30), 2, error),
        ("done", T0 + timedelta(seconds=30), 0, error),
    ] == seen
    dead = await db.fetchrow(query, "hopeless")
    assert ("dead", 2, error) == (dead["status"], dead["failures"], dead["last_error"])
    assert [("flaky", "k", T0 + timedelta(seconds=30))] == await _runs(db)
    labels = {"job": "flaky"}
    assert (2.0, 1.0) == (
        metrics.registry.get_sample_value("homemonitor_scheduler_jobs_failed_total", labels),
        metrics.registry.get_sample_value("homemonitor_scheduler_jobs_run_total", labels),
    )
    assert 1.0 == metrics.registry.get_sample_value(
        "homemonitor_scheduler_jobs_dead_total", {"job": "hopeless"}
    )


def _spo2(measured: datetime, value: float, now: datetime) -> Batch:
    reading = Reading("oxi-2", Metric.SPO2, measured, {Quantity.SPO2: value})
    message = Inbound("homemonitor/v1/gw/gw-2/readings", b"{}", now, 0.0)
    return Batch([message], [Candidate(reading, "p-2", "gw-2", now, 0)])


async def test_the_clock_opens_a_pending_breach_and_resolves_a_cleared_warning_on_time(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """On a driven clock: pending opens at due_at, a cleared warning resolves 1 h after."""
    described = copy.deepcopy(REGISTRY)
    described["patients"][1]["care_plan"] = {
        "version": 2,
        "rules": [
            {
                "id": "spo2.low",
                "kind": "threshold",
                "quantity": "spo2",
                "direction": "low",
                "warning": 90,
                "retake_minutes": 5,
                "resolve_after_hours": 1,
            }
        ],
    }
    await registry.apply(db, registry.parse(described))
    cache = registry.RegistryCache()
    await cache.load(db)
    clock = ManualClock(T0)
    scheduler = Scheduler(
        pools[0],
        Metrics(),
        recurring=[jobs.due_alerts(lambda: cache.plans, Metrics())],
        clock=clock,
    )
    async with pools[0].acquire() as conn:
        await scheduler.register(conn)
    await commit(db, _spo2(T0 - timedelta(minutes=3), 85, T0), cache.plans, T0)
    opens, cleared = T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)
    statuses = []
    for at in (T0, opens - timedelta(seconds=1), opens):
        clock.set(at)
        await scheduler.run_due()
        statuses.append(await db.fetchval("SELECT status FROM alerts"))
    clock.set(cleared)
    await commit(db, _spo2(cleared, 96, cleared), cache.plans, cleared)
    resolve_due = await db.fetchval("SELECT resolve_due_at FROM alerts")
    for at in (cleared + timedelta(minutes=59), cleared + timedelta(hours=1)):
        clock.set(at)
        await scheduler.run_due()
        statuses.append(await db.fetchval("SELECT status FROM alerts"))
    events = await db.fetch("SELECT kind, actor, details::text AS d FROM alert_events ORDER BY id")
    assert ["pending", "pending", "open", "cleared", "auto_resolved"] == statuses
    assert cleared + timedelta(hours=1) == resolve_due
    assert [
        ("pending", "rule", None),
        ("opened", "scheduler", opens.isoformat()),
        ("cleared", "rule", None),
        ("auto_resolved", "scheduler", (cleared + timedelta(hours=1)).isoformat()),
    ] == [(e["kind"], e["actor"], json.loads(e["d"]).get("decided_at")) for e in events]


async def _quarantine(db: asyncpg.Connection, received: list[datetime]) -> None:
    await db.execute(
        "INSERT INTO quarantine (received_at, topic, reason, detail, payload, payload_sha256) "
        "SELECT r, 't', 'malformed', 'x', '\\x00'::bytea, sha256(i::text::bytea) "
        "FROM unnest($1::timestamptz[]) WITH ORDINALITY AS q(r, i)",
        received,
    )


async def test_retention_deletes_only_rows_older_than_the_setting_in_chunks(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """90-day quarantine, 5-year access log: older rows go, 5 per DELETE, newer ones stay."""
    old = [T0 - timedelta(days=91, minutes=i) for i in range(12)]
    await _quarantine(db, [*old, T0 - timedelta(days=89)])
    await db.execute(
        "INSERT INTO access_log (at, clinician_id, patient_id, action) "
        "SELECT a, 'cl-a1', 'p-1', 'view_alert' FROM unnest($1::timestamptz[]) AS a",
        [datetime(2021, 5, 31, 23, tzinfo=UTC), datetime(2021, 6, 1, 12, tzinfo=UTC)],
    )
    periods = {"quarantine": "90 days", "access_log": "1825 days"}
    first = await retention.purge(pools[0], T0, periods, chunk=5, max_chunks=2)
    second = await retention.purge(pools[0], T0, periods, chunk=5, max_chunks=2)
    left = await db.fetch("SELECT received_at FROM quarantine")
    kept_log = await db.fetch("SELECT at FROM access_log")
    assert ({"quarantine": 10, "access_log": 1, "scheduled_jobs": 0}, True) == (
        first.deleted,
        first.more,
    )
    assert ({"quarantine": 2, "access_log": 0, "scheduled_jobs": 0}, False) == (
        second.deleted,
        second.more,
    )
    assert [T0 - timedelta(days=89)] == [r["received_at"] for r in left]
    # 1825 days back is 2021-06-02 08:00 (a leap day between): the 12:00 row is younger than
    # five calendar years, and the access log never loses such a row, whatever the setting
    assert [datetime(2021, 6, 1, 12, tzinfo=UTC)] == [r["at"] for r in kept_log]


async def test_the_retention_job_counts_what_it_deleted(
    db: asyncpg.Connection, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """The scheduled retention job, with the settings' periods, counts deleted rows by table."""
    await _quarantine(db, [T0 - timedelta(days=31), T0 - timedelta(days=29)])
    metrics = Metrics()
    settings = Settings(_env_file=None, quarantine_retention="30 days")
    scheduler = Scheduler(
        pools[0], metrics, recurring=[jobs.retention_job(settings, metrics)], clock=ManualClock(T0)
    )
    async with pools[0].acquire() as conn:
        await scheduler.register(conn)
    assert 1 == await scheduler.run_due()
    assert 1 == await db.fetchval("SELECT count(*) FROM quarantine")
    assert 1.0 == metrics.registry.get_sample_value(
        "homemonitor_retention_deleted_rows_total", {"table": "quarantine"}
    )


@pytest.mark.parametrize("period", ["4 years", "59 months", "260 weeks", "1824 days"])
def test_an_access_log_retention_under_five_years_is_refused(period: str) -> None:
    """Less than 5 years of access log is a configuration error that cites the regulation."""
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(_env_file=None, access_log_retention=period)
    assert "HSLF-FS 2016:40 4 kap. 9 §" in str(refused.value)
