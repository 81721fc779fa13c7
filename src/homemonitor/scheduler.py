"""The durable scheduler: time-driven work in PostgreSQL, run once across every process.

Jobs are rows of ``scheduled_jobs`` (migration 0012; docs/scheduler.md):

- **recurring** jobs (:class:`Recurring`) are registered by every process at start, under
  their name (idempotent); each runs every ``every``, on a fixed cadence from its first
  due time. Missed runs (the service was down) are one run at start, not a burst.
- **one-off** jobs (:func:`schedule`) have a due time, a payload and a key: the same
  (name, key) is scheduled once however often it is asked for, in the caller's
  transaction (an alert change and the escalation it starts commit together).

A process claims one due row at a time with ``FOR UPDATE SKIP LOCKED`` and keeps the row
lock while the job runs, in one transaction on one connection that the job may write
through (:attr:`JobContext.conn`); the same transaction then moves ``due_at`` on. So a
second process skips a row that is running, a job's writes and its rescheduling commit
together (a job that writes only through ``ctx.conn`` takes effect exactly once per due
time), and a process that dies mid-job lets go of the row when its connection ends:
PostgreSQL releases the lock, the transaction rolls back, another process runs it. No
leader election, no lease to renew, no clock shared between processes but the rows.

A job that raises is retried with capped exponential backoff (:class:`Retry`); its error's
class (and SQLSTATE) is recorded in the row, never its message (it could hold a value).
A one-off job that fails ``max_attempts`` times in a row is ``dead``: kept, with the error.

Time comes from a :class:`Clock`: :class:`SystemClock` in the service, :class:`ManualClock`
in tests and backtests, which move it by hand and see each due job run at its simulated
time. Due times are compared with the clock's ``now()``, never the database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from homemonitor import logs
from homemonitor.metrics import Metrics
from homemonitor.runtime import TRANSIENT_DB_ERRORS, Backoff, sleep_unless
from homemonitor.storage.database import Conn

__all__ = [
    "Clock",
    "Handler",
    "JobContext",
    "ManualClock",
    "Recurring",
    "Retry",
    "Scheduler",
    "SystemClock",
    "bring_forward",
    "schedule",
    "schedule_many",
]

log = logs.get_logger(__name__)


class Clock(Protocol):
    """Where the scheduler's time comes from."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now()`` has reached ``when`` (at once if it has)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - self.now()).total_seconds()))


class ManualClock:
    """A clock that moves only when told to: tests and backtests drive the scheduler with it.

    >>> clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> clock.advance(timedelta(minutes=5)).isoformat()
    '2026-01-01T00:05:00+00:00'
    """

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> datetime:
        """Move to ``when`` (never back) and wake every sleeper whose time has come."""
        self._now = max(self._now, when)
        self._notify()
        return self._now

    def advance(self, by: timedelta) -> datetime:
        """Move on by ``by``."""
        return self.set(self._now + by)

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._moved:
                self._moved.notify_all()

        with contextlib.suppress(RuntimeError):  # no running loop: nobody sleeps
            asyncio.get_running_loop().create_task(notify())

    async def sleep_until(self, when: datetime) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= when)


@dataclasses.dataclass(frozen=True, slots=True)
class JobContext:
    """What a job's handler gets.

    ``conn`` is the claiming transaction's connection: what the handler writes through it
    commits together with the job's rescheduling, or not at all. ``now`` is the clock's
    time when the job was claimed, ``due_at`` when it was due; ``attempt`` is 1 unless
    earlier runs failed. ``stop`` is set when the service stops: a long job ends early and
    returns a time to go on from.
    """

    name: str
    key: str
    payload: Mapping[str, Any]
    due_at: datetime
    now: datetime
    attempt: int
    conn: Conn
    pool: asyncpg.Pool
    stop: asyncio.Event


#: A job: returns None, or the time it wants to run again by (sooner than its schedule:
#: work left over, or an earlier deadline it knows of).
Handler = Callable[[JobContext], Awaitable[datetime | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Recurring:
    """A job every process registers at start; runs every ``every`` (first at registration)."""

    name: str
    every: timedelta
    handler: Handler


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """Backoff after a failed run: ``first`` doubled per failure in a row, at most ``cap``.

    A recurring job retries no later than its next regular run.

    >>> [Retry().after(n).total_seconds() for n in (1, 2, 3, 20)]
    [10.0, 20.0, 40.0, 3600.0]
    """

    first: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)

    def after(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th failure in a row (1 for the first)."""
        return min(self.cap, self.first * float(2 ** min(failures - 1, 32)))


# Registration inserts a missing job (due at once) and takes a changed interval; it never
# moves the due time of an unchanged job. The ``now`` it is given may be behind the time
# another process already ran the job at (read before that run committed, or a clock a
# little behind): a due time derived from it alone could be one that already ran, and
# would run again. So a changed interval counts from the later of ``now`` and the last run,
# and a job whose interval is unchanged is not touched (nor locked: starting does not wait
# for a job that is running elsewhere).
_REGISTER = """
WITH j AS (SELECT * FROM unnest($1::text[], $2::interval[]) AS j(name, every)),
new AS (
    INSERT INTO scheduled_jobs (name, every, due_at)
    SELECT name, every, $3 FROM j
    ON CONFLICT (name, key) DO NOTHING
)
UPDATE scheduled_jobs AS s
SET every = j.every,
    due_at = least(s.due_at, greatest($3, s.last_run_at) + j.every)
FROM j
WHERE s.name = j.name AND s.key = '' AND s.every IS DISTINCT FROM j.every
"""
_SCHEDULE = """
INSERT INTO scheduled_jobs (name, key, due_at, payload, max_attempts)
SELECT $1, j.key, j.due_at, j.payload::jsonb, $5
FROM unnest($2::text[], $3::timestamptz[], $4::text[]) AS j(key, due_at, payload)
ON CONFLICT (name, key) DO NOTHING
"""
_CLAIM = """
SELECT id, name, key, every, due_at, payload::text AS payload, failures, max_attempts
FROM scheduled_jobs
WHERE status = 'scheduled' AND due_at <= $1 AND name = ANY($2::text[])
ORDER BY due_at
LIMIT 1
FOR UPDATE SKIP LOCKED
"""
_DONE = """
UPDATE scheduled_jobs
SET due_at = $2, status = $3, failures = 0, runs = runs + 1, last_run_at = $4
WHERE id = $1
"""
_FAILED = """
UPDATE scheduled_jobs
SET due_at = $2, status = $3, failures = failures + 1, runs = runs + 1, last_run_at = $4,
    last_error = $5, last_error_at = $4
WHERE id = $1
"""
_OLDEST = """
SELECT min(due_at) FROM scheduled_jobs WHERE status = 'scheduled' AND name = ANY($1::text[])
"""
_NEXT = """
SELECT min(due_at) FROM scheduled_jobs
WHERE status = 'scheduled' AND name = ANY($1::text[]) AND due_at > $2
"""


async def schedule(
    conn: Conn,
    name: str,
    due_at: datetime,
    *,
    key: str,
    payload: Mapping[str, Any] | None = None,
    max_attempts: int = 10,
) -> bool:
    """Schedule one-off job ``name`` at ``due_at`` unless (name, key) exists; True if new.

    Runs in the caller's transaction, if any. ``key`` makes it idempotent (an alert id
    and a step, say); an empty key is a recurring job's. The payload holds ids, not data.
    """
    made = await schedule_many(
        conn, name, [(key, due_at, payload or {})], max_attempts=max_attempts
    )
    return made == 1


async def schedule_many(
    conn: Conn,
    name: str,
    jobs: Sequence[tuple[str, datetime, Mapping[str, Any]]],
    *,
    max_attempts: int = 10,
) -> int:
    """:func:`schedule` for many (key, due_at, payload) at once: one statement; how many new.

    For a write path that must not add a round trip per job (the worker's batch).
    """
    if any(not key for key, _, _ in jobs):
        msg = "a one-off job needs a key (the empty key is a recurring job's)"
        raise ValueError(msg)
    if not jobs:
        return 0
    status = await conn.execute(
        _SCHEDULE,
        name,
        [k for k, _, _ in jobs],
        [d for _, d, _ in jobs],
        [json.dumps(dict(p)) for _, _, p in jobs],
        max_attempts,
    )
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <n>"


async def bring_forward(conn: Conn, name: str, when: datetime) -> bool:
    """Run recurring job ``name`` at ``when`` if it is due later; True if it was moved.

    For who cannot wait for its cadence (the demo, once its replay has stored days of
    readings in a minute); the cadence goes on from ``when``. A running scheduler finds
    it within its ``max_idle``.
    """
    status = await conn.execute(
        "UPDATE scheduled_jobs SET due_at = $2 WHERE name = $1 AND key = '' "
        "AND status = 'scheduled' AND due_at > $2",
        name,
        when,
    )
    return status == "UPDATE 1"


def describe(exc: BaseException) -> str:
    """What is recorded of a failure: the class, and the SQLSTATE of a database error.

    Never the message: an exception's text can quote a value or an id.
    """
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{name} (SQLSTATE {sqlstate})" if isinstance(sqlstate, str) else name


def _next_run(due_at: datetime, every: timedelta, now: datetime) -> datetime:
    """The first time on ``due_at``'s cadence after ``now``."""
    if due_at > now:
        return due_at + every
    missed = (now - due_at) // every
    return due_at + (missed + 1) * every


class Scheduler:
    """Runs due jobs of the handlers it knows until stopped; see the module docstring.

    ``handlers`` are the one-off jobs this process can run, by name; ``recurring`` jobs
    are registered at start and are handlers too. A process claims only jobs it has a
    handler for, so a job written by a newer version waits for a process that knows it.
    ``max_idle`` bounds how long it sleeps without looking (jobs another process
    scheduled); ``grace`` how long a running job may go on after ``stop``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        *,
        recurring: Sequence[Recurring] = (),
        handlers: Mapping[str, Handler] | None = None,
        clock: Clock | None = None,
        retry: Retry = Retry(),
        max_idle: timedelta = timedelta(seconds=5),
        grace: float = 10.0,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self.retry = retry
        self.max_idle = max_idle
        self.grace = grace
        self.recurring = tuple(recurring)
        self.handlers: dict[str, Handler] = {r.name: r.handler for r in self.recurring}
        self.handlers.update(handlers or {})
        self._names = sorted(self.handlers)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def wake(self) -> None:
        """Look for due jobs now (after scheduling one in this process, or moving a clock)."""
        self._wake.set()

    async def register(self, conn: Conn) -> None:
        """Insert the recurring jobs that are not there yet; a changed interval is taken.

        An existing job's due time is left alone unless its interval changed, and then it
        is never put at or before its last run: a registration that read the clock before
        another process ran the job does not make it run twice.
        """
        if self.recurring:
            await conn.execute(
                _REGISTER,
                [r.name for r in self.recurring],
                [r.every for r in self.recurring],
                self.clock.now(),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Register, then run due jobs until ``stop``; a running job gets ``grace`` seconds."""
        self._stop = stop
        loop = asyncio.create_task(self._loop(stop), name="scheduler-loop")
        stopped = asyncio.create_task(stop.wait(), name="scheduler-stop")
        try:
            await asyncio.wait({loop, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not loop.done():
                self.wake()
                done, _ = await asyncio.wait({loop}, timeout=self.grace)
                if not done:
                    log.warning("scheduler job cut off at shutdown; it runs again later")
                    loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        finally:
            for task in (loop, stopped):
                task.cancel()
        log.info("scheduler stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.5, 15)
        registered = False
        while not stop.is_set():
            try:
                if not registered:
                    async with self.pool.acquire(timeout=10) as conn:
                        await self.register(conn)
                    registered = True
                    log.info("scheduler started", jobs=len(self._names))
                await self.run_due(stop)
                wake_at = await self._idle_until()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("scheduler cannot reach the database", error=type(exc).__name__)
                await sleep_unless(stop, backoff.next())
                continue
            backoff.reset()
            await self._sleep(stop, wake_at)

    async def run_due(self, stop: asyncio.Event | None = None) -> int:
        """Run every job due by the clock's now, one at a time; return how many ran."""
        ran = 0
        while stop is None or not stop.is_set():
            if not await self._run_one(stop or self._stop):
                return ran
            ran += 1
        return ran

    async def _run_one(self, stop: asyncio.Event) -> bool:
        """Claim one due job and run it; False when none is due (or all are running)."""
        async with self.pool.acquire(timeout=10) as conn, conn.transaction():
            now = self.clock.now()
            row = await conn.fetchrow(_CLAIM, now, self._names)
            if row is None:
                return False
            ctx = JobContext(
                name=row["name"],
                key=row["key"],
                payload=json.loads(row["payload"]),
                due_at=row["due_at"],
                now=now,
                attempt=row["failures"] + 1,
                conn=conn,
                pool=self.pool,
                stop=stop,
            )
            bound = log.bind(job=ctx.name, attempt=ctx.attempt)
            try:
                async with conn.transaction():  # a savepoint: a failure undoes only the job
                    again = await self.handlers[ctx.name](ctx)
            except Exception as exc:  # noqa: BLE001 - any failure of a job is retried
                await self._failed(conn, row, ctx, exc, bound)
                return True
            every: timedelta | None = row["every"]
            if every is not None:
                due, status = _next_run(ctx.due_at, every, now), "scheduled"
                if again is not None:
                    due = min(due, again)
            elif again is not None:
                due, status = again, "scheduled"
            else:
                due, status = ctx.due_at, "done"
            await conn.execute(_DONE, row["id"], due, status, now)
        self.metrics.scheduler_runs.labels(ctx.name).inc()
        bound.debug("scheduled job ran", next_due=due.isoformat() if status != "done" else None)
        return True

    async def _failed(
        self,
        conn: Conn,
        row: asyncpg.Record,
        ctx: JobContext,
        exc: Exception,
        bound: Any,
    ) -> None:
        failures = row["failures"] + 1
        due = ctx.now + self.retry.after(failures)
        every: timedelta | None = row["every"]
        status = "scheduled"
        if every is not None:
            due = min(due, _next_run(ctx.due_at, every, ctx.now))
        elif failures >= row["max_attempts"]:
            status = "dead"
        error = describe(exc)
        await conn.execute(_FAILED, row["id"], due, status, ctx.now, error)
        self.metrics.scheduler_failures.labels(ctx.name).inc()
        if status == "dead":
            self.metrics.scheduler_dead.labels(ctx.name).inc()
        bound.warning(
            "scheduled job failed",
            error=error,
            failures=failures,
            retry_at=due.isoformat() if status != "dead" else None,
            dead=status == "dead",
        )

    async def _idle_until(self) -> datetime:
        """Update the lag gauge; the time of the next due job, at most ``max_idle`` away."""
        now = self.clock.now()
        async with self.pool.acquire(timeout=10) as conn:
            oldest = await conn.fetchval(_OLDEST, self._names)
            upcoming = await conn.fetchval(_NEXT, self._names, now)
        lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        self.metrics.scheduler_lag.set(lag)
        wake_at = now + self.max_idle
        return wake_at if upcoming is None else min(wake_at, upcoming)

    async def _sleep(self, stop: asyncio.Event, until: datetime) -> None:
        try:
            await first_of(self.clock.sleep_until(until), self._wake.wait(), stop.wait())
        finally:
            self._wake.clear()


async def first_of(*waits: Awaitable[object]) -> None:
    """Wait until the first of ``waits`` is done; cancel the others (a loop's idle sleep)."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures:
            f.cancel()
