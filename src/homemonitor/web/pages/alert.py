"""The Alert page, ``/alerts/{id}``: why it fired (the explanation sentence), a chart of each
quantity its rule reads with the plan's bounds and the rule's window, the event history,
acknowledge / resolve, where resolving asks "was this alert actionable?", and assign,
snooze and comment (the Inbox's forms, templates/_alert_actions.html).

The read is ``view_alert`` through :func:`homemonitor.api.access.team_alert`, as the API's
``GET /api/v1/alerts/{id}``; the forms post to :mod:`homemonitor.web.actions` (the API's
own route functions; resolve stores the answer in ``alerts.actionable``, migration 0013),
which answers back here with what happened (:func:`~homemonitor.web.actions.notice`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response

from homemonitor.alerts import transitions
from homemonitor.api.access import team_alert
from homemonitor.api.deps import Svc
from homemonitor.api.models import AlertId
from homemonitor.contract.readings import Quantity
from homemonitor.errors import PlanError
from homemonitor.registry import plans
from homemonitor.rules.plan import Plan
from homemonitor.web import actions, i18n, overview, render
from homemonitor.web.base import said
from homemonitor.web.charts import time_series
from homemonitor.web.pages import speech
from homemonitor.web.session import WebMe

router = APIRouter(include_in_schema=False)

#: How much of the time before an alert its chart shows, at the least.
BEFORE = timedelta(days=7)

i18n.add(
    {
        "sv": {
            "alert.title": "Larm {id}",
            "alert.patient": "Patient",
            "alert.status": "Status",
            "alert.severity": "Allvarlighetsgrad",
            "alert.rule": "Regel",
            "alert.plan": "Vårdplan version",
            "alert.why": "Varför",
            "alert.now": "Nu",
            "alert.events": "Händelser",
            "alert.at": "Tid",
            "alert.kind": "Händelse",
            "alert.actor": "Av",
            "alert.acknowledge": "Kvittera",
            "alert.more": "Tilldela, snooza, kommentera",
            "alert.resolve": "Avsluta larmet",
            "alert.note": "Vad gjordes?",
            "alert.actionable": "Var larmet åtgärdbart?",
            "alert.yes": "Ja, det ledde till en åtgärd",
            "alert.no": "Nej, ingen åtgärd behövdes",
            "alert.ended": "Larmet är avslutat.",
            "status.pending": "väntar på ommätning",
            "status.open": "öppet",
            "status.acknowledged": "kvitterat",
            "status.cleared": "normaliserat",
            "status.resolved": "avslutat",
            "status.auto_resolved": "avslutat av sig självt",
            "status.withdrawn": "återkallat",
            "actor.rule": "regel",
            "actor.scheduler": "schemaläggare",
            "event.pending": "väntar på ommätning",
            "event.withdrawn": "återkallat (artefakt)",
            "event.opened": "öppnat",
            "event.severity_changed": "ändrad allvarlighetsgrad",
            "event.updated": "uppdaterat",
            "event.cleared": "normaliserat",
            "event.reopened": "öppnat igen",
            "event.auto_resolved": "avslutat av sig självt",
            "event.acknowledged": "kvitterat",
            "event.resolved": "avslutat",
            "event.assigned": "tilldelat",
            "event.notified": "avisering skickad",
            "event.commented": "kommenterat",
            "event.escalated": "eskalerat",
            "event.snoozed": "snoozat",
            "event.snooze_ended": "snoozning slut",
        },
        "en": {
            "alert.title": "Alert {id}",
            "alert.patient": "Patient",
            "alert.status": "Status",
            "alert.severity": "Severity",
            "alert.rule": "Rule",
            "alert.plan": "Care plan version",
            "alert.why": "Why",
            "alert.now": "Now",
            "alert.events": "Events",
            "alert.at": "Time",
            "alert.kind": "Event",
            "alert.actor": "By",
            "alert.acknowledge": "Acknowledge",
            "alert.more": "Assign, snooze, comment",
            "alert.resolve": "Resolve the alert",
            "alert.note": "What was done?",
            "alert.actionable": "Was this alert actionable?",
            "alert.yes": "Yes, it led to an action",
            "alert.no": "No, nothing needed doing",
            "alert.ended": "The alert has ended.",
            "status.pending": "waiting for a retake",
            "status.open": "open",
            "status.acknowledged": "acknowledged",
            "status.cleared": "cleared",
            "status.resolved": "resolved",
            "status.auto_resolved": "resolved by itself",
            "status.withdrawn": "withdrawn",
            "actor.rule": "rule",
            "actor.scheduler": "scheduler",
            "event.pending": "waiting for a retake",
            "event.withdrawn": "withdrawn (an artefact)",
            "event.opened": "opened",
            "event.severity_changed": "severity changed",
            "event.updated": "updated",
            "event.cleared": "cleared",
            "event.reopened": "reopened",
            "event.auto_resolved": "resolved by itself",
            "event.acknowledged": "acknowledged",
            "event.resolved": "resolved",
            "event.assigned": "assigned",
            "event.notified": "notification sent",
            "event.commented": "commented",
            "event.escalated": "escalated",
            "event.snoozed": "snoozed",
            "event.snooze_ended": "snooze ended",
        },
    }
)


@router.get("/alerts/{alert_id}")
async def alert_page(request: Request, svc: Svc, who: WebMe, alert_id: AlertId) -> Response:
    t, lang = speech(request)
    async with svc.pool.acquire() as conn, conn.transaction():  # checked and logged first
        alert = await team_alert(conn, svc.metrics, who, alert_id, "view_alert")
    async with svc.reads.acquire() as conn:
        full = await conn.fetchrow(
            "SELECT opening_explanation::text AS opening, "
            "latest_explanation::text AS latest FROM alerts WHERE id = $1",
            alert_id,
        )
        events = await conn.fetch(
            "SELECT e.at, e.kind, e.actor, e.clinician_id, c.name FROM alert_events e "
            "LEFT JOIN clinicians c ON c.id = e.clinician_id WHERE e.alert_id = $1 "
            "ORDER BY e.id",
            alert_id,
        )
        versions = await plans.history(conn, alert["patient_id"])
        plan = _plan(versions, alert["plan_version"])
        rule = None if plan is None else plan.rule(alert["rule"])
        quantities = (
            rule.quantities
            if rule is not None
            else ((Quantity(alert["quantity"]),) if alert["quantity"] else ())
        )
        at = alert["opening_measured_at"]
        window = overview.window(plan, alert["rule"], at)
        start = min(window.start, at - BEFORE)
        end = datetime.now(UTC)
        if alert["resolved_at"] is not None:
            end = min(end, max(alert["resolved_at"], alert["last_measured_at"]) + timedelta(days=1))
        points = await overview.series(conn, alert["patient_id"], start, end)
    figures = [
        time_series(
            points.get(q, []),
            start=start,
            end=end,
            title=t(f"q.{q.value}"),
            unit=q.unit,
            chart_id=f"chart-{q.value}",
            t=t,
            lang=lang,
            bounds=overview.bounds(plan, q),
            windows=[window],
        )
        for q in quantities
    ]
    context = {
        "alert": alert,
        "opening": said(json.loads(full["opening"]), lang) if full else "",
        "latest": said(json.loads(full["latest"]), lang) if full else "",
        "events": events,
        "figures": figures,
        "active": alert["status"] in transitions.ACTIONABLE,
        "notice": actions.notice(request, t),
    } | await actions.form_context(request, svc, who)
    return render(request, "pages/alert.html", context, who=who)


def _plan(versions: list[plans.Version], version: int) -> Plan | None:
    """The plan version an alert was raised under, as the engine ran it (None: unknown)."""
    for v in versions:
        if v.version == version:
            try:
                return plans.resolved(v.spec, v.version)
            except PlanError:
                return None
    return None
