"""The Inbox, ``/``: my team's active alerts, mine first, urgent first, live.

"Mine" is an alert whose patient has me as fixed care contact, or that is assigned to me.
The list is the API's (:func:`homemonitor.api.alerts.list_alerts`: the same visibility and
the same access-log rows, action ``list_alerts``), ordered here. The page refreshes its
rows (``/inbox/rows``, the same list as an HTML fragment) when the alert stream
(``GET /api/v1/alerts/stream``) says something changed, or every 15 s when there is no
stream; each refresh is access-logged like any list. Each action is a form that posts
without JavaScript (:mod:`homemonitor.web.actions`, back here with a notice); with it,
inbox.js sends the form to the JSON API with the session cookie and its CSRF token
(``hm.post`` in app.js) and refreshes the list without a reload.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from homemonitor.api import alerts
from homemonitor.api.auth import Clinician
from homemonitor.api.deps import Svc
from homemonitor.api.models import AlertOut
from homemonitor.web import actions, i18n
from homemonitor.web.base import render
from homemonitor.web.session import WebMe

router = APIRouter(include_in_schema=False)

#: The most alerts the Inbox shows (the API's own ceiling).
LIMIT = 500


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One row of the Inbox."""

    alert: AlertOut
    #: The patient has me as fixed care contact, or the alert is assigned to me.
    mine: bool

    @property
    def urgent(self) -> bool:
        return self.alert.severity == "urgent"


async def items(svc: Svc, who: Clinician) -> list[Item]:
    """The team's active alerts (access-logged as the API's list is), mine first, then
    urgent first, then newest first."""
    listed = await alerts.list_alerts(svc, who, status="active", limit=LIMIT)
    async with svc.pool.acquire() as conn:
        contacts = {
            r["id"]: r["care_contact_id"]
            for r in await conn.fetch(
                "SELECT id, care_contact_id FROM patients WHERE id = ANY($1::text[])",
                list({a.patient_id for a in listed}),
            )
        }
    rows = [
        Item(
            a,
            contacts.get(a.patient_id) == who.id or getattr(a, "assigned_to", None) == who.id,
        )
        for a in listed
    ]
    rows.sort(key=lambda i: (not i.mine, not i.urgent, -i.alert.opened_at.timestamp()))
    return rows


async def _context(request: Request, svc: Svc, who: Clinician) -> dict[str, Any]:
    return {
        "items": await items(svc, who),
        "poll_seconds": svc.web.poll_seconds,
    } | await actions.form_context(request, svc, who)


@router.get("/")
async def inbox(request: Request, svc: Svc, who: WebMe) -> Response:
    context = await _context(request, svc, who)
    context["notice"] = actions.notice(request, i18n.translator(i18n.language(request)))
    return render(request, "inbox.html", context, who=who)


@router.get("/inbox/rows")
async def inbox_rows(request: Request, svc: Svc, who: WebMe) -> Response:
    """The Inbox's list alone, for the page's live refresh."""
    return render(request, "inbox_rows.html", await _context(request, svc, who), who=who)


i18n.add(
    {
        "sv": {
            "inbox.title": "Inkorg",
            "inbox.intro": "Teamets aktiva larm. Dina egna först, brådskande först.",
            "inbox.empty": "Inga aktiva larm.",
            "inbox.mine": "Mina",
            "inbox.team": "Teamets övriga",
            "inbox.patient": "Patient",
            "inbox.alert": "Larm",
            "inbox.severity": "Allvarlighet",
            "inbox.status": "Status",
            "inbox.opened": "Öppnat",
            "inbox.actions": "Åtgärder",
            "inbox.live_on": "Uppdateras direkt.",
            "inbox.live_poll.one": "Uppdateras varje sekund.",
            "inbox.live_poll.other": "Uppdateras var {n}:e sekund.",
            "inbox.new": "Nytt larm: {text}",
            "severity.urgent": "Brådskande",
            "severity.warning": "Varning",
            "action.acknowledge": "Kvittera",
            "action.resolve": "Avsluta",
            "action.resolve_note": "Anteckning",
            "action.resolve_submit": "Avsluta med anteckning",
            "action.assign": "Tilldela",
            "action.assign_to": "Tilldela till",
            "action.snooze": "Snooza",
            "action.snooze_minutes": "Minuter",
            "action.snooze_reason": "Orsak",
            "action.comment": "Kommentera",
            "action.comment_text": "Kommentar",
            "action.actionable": "Ledde larmet till en åtgärd?",
            "action.yes": "Ja",
            "action.no": "Nej",
            "inbox.assigned": "tilldelat {who}",
            "inbox.snoozed": "snoozat till {until}",
            "action.done": "Klart: {what}.",
            "action.failed": "Det gick inte: {why}",
            "alert.label": "Larm {id} för patient {patient}",
        },
        "en": {
            "inbox.title": "Inbox",
            "inbox.intro": "The team's active alerts. Yours first, urgent first.",
            "inbox.empty": "No active alerts.",
            "inbox.mine": "Mine",
            "inbox.team": "Rest of the team",
            "inbox.patient": "Patient",
            "inbox.alert": "Alert",
            "inbox.severity": "Severity",
            "inbox.status": "Status",
            "inbox.opened": "Opened",
            "inbox.actions": "Actions",
            "inbox.live_on": "Updates live.",
            "inbox.live_poll.one": "Updates every second.",
            "inbox.live_poll.other": "Updates every {n} seconds.",
            "inbox.new": "New alert: {text}",
            "severity.urgent": "Urgent",
            "severity.warning": "Warning",
            "action.acknowledge": "Acknowledge",
            "action.resolve": "Resolve",
            "action.resolve_note": "Note",
            "action.resolve_submit": "Resolve with note",
            "action.assign": "Assign",
            "action.assign_to": "Assign to",
            "action.snooze": "Snooze",
            "action.snooze_minutes": "Minutes",
            "action.snooze_reason": "Reason",
            "action.comment": "Comment",
            "action.comment_text": "Comment",
            "action.actionable": "Did this alert lead to an action?",
            "action.yes": "Yes",
            "action.no": "No",
            "inbox.assigned": "assigned to {who}",
            "inbox.snoozed": "snoozed until {until}",
            "action.done": "Done: {what}.",
            "action.failed": "That did not work: {why}",
            "alert.label": "Alert {id} for patient {patient}",
        },
    }
)
