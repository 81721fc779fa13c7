"""My patients, ``/patients``: the team's patients, the signed-in clinician's own first, each
with their latest reading per metric and the alerts to act on.

Showing a patient's latest readings is a read of their data: every patient listed is
access-logged (``list_patients``) before the page is sent, as the API's alert list logs
every patient it returns.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from homemonitor.access_actions import AccessAction
from homemonitor.api.access import log_access
from homemonitor.api.deps import Svc
from homemonitor.web import charts, i18n, overview, render
from homemonitor.web.pages import speech
from homemonitor.web.session import WebMe

router = APIRouter(include_in_schema=False)

ACTION: AccessAction = "list_patients"

i18n.add(
    {
        "sv": {
            "patients.title": "Mina patienter",
            "patients.caption": "Teamets patienter, dina först, med senaste mätning och larm",
            "patients.patient": "Patient",
            "patients.contact": "Fast vårdkontakt",
            "patients.alerts": "Larm att hantera",
            "patients.active.one": "{n} aktivt",
            "patients.active.other": "{n} aktiva",
            "patients.urgent.one": "{n} brådskande",
            "patients.urgent.other": "{n} brådskande",
            "patients.me": "du",
            "patients.none": "Teamet har inga patienter.",
        },
        "en": {
            "patients.title": "My patients",
            "patients.caption": "The team's patients, yours first, with last reading and alerts",
            "patients.patient": "Patient",
            "patients.contact": "Care contact",
            "patients.alerts": "Alerts to act on",
            "patients.active.one": "{n} active",
            "patients.active.other": "{n} active",
            "patients.urgent.one": "{n} urgent",
            "patients.urgent.other": "{n} urgent",
            "patients.me": "you",
            "patients.none": "The team has no patients.",
        },
    }
)


@router.get("/patients")
async def patients_page(request: Request, svc: Svc, who: WebMe) -> Response:
    _, lang = speech(request)
    async with svc.reads.acquire() as conn:
        found = await overview.team_patients(conn, who.care_team_id, who.id)
    async with svc.pool.acquire() as conn, conn.transaction():  # committed before we answer
        await log_access(conn, svc.metrics, who, [p.id for p in found], ACTION)

    def reading_text(r: overview.LastReading) -> str:
        values = [r.values[q] for q in overview.quantities_of(r.metric) if q in r.values]
        unit = overview.quantities_of(r.metric)[0].unit
        text = "/".join(charts.number(v, lang) for v in values)
        return f"{text}{unit}" if unit[:1] in "%/" else f"{text} {unit}"

    context = {"patients": found, "metrics": overview.METRICS, "reading_text": reading_text}
    return render(request, "pages/patients.html", context, who=who)
