"""The jobs the service schedules (:mod:`homemonitor.scheduler` runs them).

- ``alerts.due`` (every :data:`DUE_EVERY`, and at the earliest deadline it knows of): the
  rules engine's time-driven work, :func:`homemonitor.alerts.episodes.run_due` on the
  scheduler's clock, in the job's own transaction, so each change is written once.
- ``alerts.silence`` (every :data:`SILENCE_EVERY`, and at the earliest deadline it knows
  of): missing-data alerts, :func:`homemonitor.alerts.silence.check` on the scheduler's
  clock, in the job's own transaction.
- ``retention`` (every :data:`RETENTION_EVERY`): quarantine, access log, finished
  one-off jobs, and delivered notifications (their ``notified`` events stay), past their
  retention (:func:`homemonitor.storage.retention.purge`).

One-off jobs (``scheduler.schedule`` in the transaction of the alert change that starts
them) run by :func:`service_handlers`:

- ``alerts.escalate``: one step of an alert's escalation chain
  (:func:`homemonitor.alerts.escalation.escalate_step`);
- ``alerts.snooze_end``: a clinician's snooze ends at its time
  (:func:`homemonitor.alerts.escalation.end_snooze`).

Delivery retries are no job of the scheduler's: a failed notification waits in its
outbox row (``next_attempt_at``, the scheduler's :class:`~homemonitor.scheduler.Retry`
backoff) for the notifier (:mod:`homemonitor.notify.notifier`), which sleeps until the
earliest of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from homemonitor import logs
from homemonitor.alerts import episodes, escalation, routing, silence, transitions
from homemonitor.metrics import Metrics
from homemonitor.registry.cache import Plans
from homemonitor.scheduler import Handler, JobContext, Recurring
from homemonitor.settings import Settings
from homemonitor.storage import retention
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)

#: How often the due job looks at least (a pending breach made since its last run waits
#: at most this long past its due time); it also runs at the earliest deadline it saw.
DUE_EVERY = timedelta(seconds=10)
RETENTION_EVERY = timedelta(hours=1)
#: How often the silence job looks at least; it also runs at the next deadline it saw.
SILENCE_EVERY = timedelta(minutes=15)
SILENCE_JOB = "alerts.silence"
#: While the registry is not loaded yet, the due job looks again this soon.
_NOT_READY_AGAIN = timedelta(seconds=1)


#: A time-driven step of the alerts: its changes by the clock's ``now``, in ``conn``'s
#: transaction (:func:`homemonitor.alerts.episodes.run_due`, :func:`~.silence.check`).
_Step = Callable[[Conn, Plans, datetime], Awaitable[episodes.Due]]


def _alerts_job(
    name: str,
    every: timedelta,
    step: _Step,
    plans: Callable[[], Plans | None],
    metrics: Metrics,
) -> Recurring:
    """A job running ``step`` with the worker's current plans (``plans``; None: not yet)."""

    async def run(ctx: JobContext) -> datetime | None:
        current = plans()
        if current is None:  # the worker has not loaded the registry yet
            return ctx.now + _NOT_READY_AGAIN
        done = await step(ctx.conn, current, ctx.now)
        for severity, n in done.tally.opened.items():
            metrics.alerts_opened.labels(severity).inc(n)
        if done.tally.opened or done.tally.updated:
            log.info(
                "time-driven alert changes",
                job=name,
                opened=done.tally.opened.total(),
                updated=done.tally.updated,
            )
        return ctx.now if done.more else done.next_at

    return Recurring(name, every, run)


def due_alerts(plans: Callable[[], Plans | None], metrics: Metrics) -> Recurring:
    """The ``alerts.due`` job; ``plans`` gives the worker's current care plans (None: not yet)."""
    return _alerts_job("alerts.due", DUE_EVERY, episodes.run_due, plans, metrics)


def silence_job(plans: Callable[[], Plans | None], metrics: Metrics) -> Recurring:
    """The ``alerts.silence`` job: missing-data alerts due on the scheduler's clock."""
    return _alerts_job(SILENCE_JOB, SILENCE_EVERY, silence.check, plans, metrics)


def retention_job(settings: Settings, metrics: Metrics) -> Recurring:
    """The ``retention`` job, with the settings' retention of each table."""
    periods = {
        "quarantine": settings.quarantine_retention,
        "access_log": settings.access_log_retention,
        "outbox": settings.outbox_retention,
    }

    async def run(ctx: JobContext) -> datetime | None:
        purged = await retention.purge(ctx.pool, ctx.now, periods)
        for table, n in purged.deleted.items():
            metrics.retention_deleted.labels(table).inc(n)
        if any(purged.deleted.values()):
            log.info("retention deleted old rows", **purged.deleted)
        return ctx.now if purged.more else None

    return Recurring("retention", RETENTION_EVERY, run)


def service_jobs(
    settings: Settings, metrics: Metrics, plans: Callable[[], Plans | None]
) -> list[Recurring]:
    """Every recurring job of the service."""
    return [
        due_alerts(plans, metrics),
        silence_job(plans, metrics),
        retention_job(settings, metrics),
    ]


def service_handlers() -> dict[str, Handler]:
    """Every one-off job of the service, by name."""
    return {
        routing.ESCALATE_JOB: escalation.escalate_step,
        transitions.SNOOZE_END_JOB: escalation.end_snooze,
    }
