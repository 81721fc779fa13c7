"""The scheduler's side of an alert's life: escalation steps, and snoozes that end.

A chain starts when an alert opens (or an open one gets worse), in the same transaction
(:func:`homemonitor.alerts.routing.on_write`): step 1 of the care team's policy for its
severity, a one-off :data:`~homemonitor.alerts.routing.ESCALATE_JOB` keyed
``alert:<id>:chain:<c>:step:<n>``. Each step (:func:`escalate_step`), under the patient's
lock and the row's:

- does nothing if the alert was acknowledged, resolved, cleared or ended, or a newer
  chain replaced this one: acknowledgement stops the chain;
- waits while the alert is snoozed (the same job runs again when the snooze ends: every
  later step moves by as much);
- else addresses the step's level (an ``escalated`` event with "to"; notify's trigger
  turns it into notifications) if that is above the level addressed last, and schedules
  the next step, its policy's minutes after this one's due time.

All of it is written through the job's own transaction, so each step takes effect once
however many service processes run the scheduler.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from homemonitor.alerts import episodes, routing, transitions
from homemonitor.scheduler import JobContext, schedule
from homemonitor.storage.database import Conn

_ROW = (
    "SELECT id, patient_id, care_team_id, status, severity, acknowledged_at, snoozed_until, "
    "escalation_chain, escalation_level, routed_to FROM alerts WHERE id = $1 FOR UPDATE"
)


async def _locked(conn: Conn, alert_id: int) -> asyncpg.Record | None:
    """The alert's row under its patient's episode lock and its own, as the API takes them."""
    patient = await conn.fetchval("SELECT patient_id FROM alerts WHERE id = $1", alert_id)
    if patient is None:
        return None
    await episodes.lock_patients(conn, [patient])
    return await conn.fetchrow(_ROW, alert_id)


async def escalate_step(ctx: JobContext) -> datetime | None:
    """One step of an escalation chain (payload: alert_id, chain, step, severity)."""
    alert_id, chain, step = (int(ctx.payload[k]) for k in ("alert_id", "chain", "step"))
    severity = str(ctx.payload["severity"])
    row = await _locked(ctx.conn, alert_id)
    if (
        row is None
        or row["escalation_chain"] != chain
        or row["status"] != "open"
        or row["acknowledged_at"] is not None
    ):
        return None  # acknowledged, cleared, ended, or a newer chain took over
    snoozed: datetime | None = row["snoozed_until"]
    if snoozed is not None and snoozed > ctx.now:
        return snoozed  # this step again when the snooze ends
    found = await routing.load(ctx.conn, [row["patient_id"]])
    steps = found.home(row["patient_id"]).escalation.steps(severity)
    if step > len(steps):  # the policy lost steps since the chain started
        return None
    level = row["escalation_level"] or "care_contact"
    route = found.route(steps[step - 1].to, row["patient_id"], ctx.now)
    if route is not None and routing.LEVELS.index(route.level) > routing.LEVELS.index(level):
        await transitions.escalate(ctx.conn, row, route, chain=chain, step=step, now=ctx.now)
        level = route.level
    if step < len(steps) and level != "out_of_hours":
        wait = timedelta(minutes=steps[step].after_minutes - steps[step - 1].after_minutes)
        await schedule(
            ctx.conn,
            routing.ESCALATE_JOB,
            ctx.due_at + wait,
            key=routing.step_key(alert_id, chain, step + 1),
            payload={**ctx.payload, "step": step + 1},
        )
    return None


async def end_snooze(ctx: JobContext) -> datetime | None:
    """A snooze's end (payload: alert_id, until): the ``snooze_ended`` event, unless it
    was replaced by a later snooze or the alert ended."""
    row = await _locked(ctx.conn, int(ctx.payload["alert_id"]))
    if row is not None:
        until = datetime.fromisoformat(str(ctx.payload["until"]))
        await transitions.end_snooze(ctx.conn, row, until, ctx.now)
    return None
