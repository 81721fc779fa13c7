"""Follow-up, ``/follow-up``: the team's alerts per patient-week, time to acknowledge, share
of alerts marked actionable per rule and per template, and adherence, as charts.

Aggregates of the team only (:mod:`homemonitor.web.followup`): no patient's data is shown,
so nothing is access-logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from homemonitor.api.deps import Svc
from homemonitor.web import followup, i18n, render
from homemonitor.web.charts import Bar, bars
from homemonitor.web.pages import speech
from homemonitor.web.session import WebMe

router = APIRouter(include_in_schema=False)

i18n.add(
    {
        "sv": {
            "follow.title": "Uppföljning",
            "follow.intro.one": "Teamets larm och mätningar den senaste veckan.",
            "follow.intro.other": (
                "Teamets larm och mätningar de senaste {n} veckorna, per vecka."
            ),
            "follow.week": "v. {week}",
            "follow.per_patient": "Larm per patientvecka",
            "follow.alerts": "Larm",
            "follow.ack": "Tid till kvittering (minuter)",
            "follow.median": "Median",
            "follow.p90": "90:e percentilen",
            "follow.actionable_rule": "Andel åtgärdbara larm per regel",
            "follow.actionable_template": "Andel åtgärdbara larm per mall",
            "follow.share": "Åtgärdbara",
            "follow.no_template": "(ingen mall)",
            "follow.answered.one": "{label} ({n} besvarat)",
            "follow.answered.other": "{label} ({n} besvarade)",
            "follow.adherence": "Följsamhet: andel dagar med mätning",
            "follow.method": (
                "Larm räknas när de öppnas; tid till kvittering mäts till första kvittering "
                "eller avslut av vårdpersonal. Följsamhet: dagar med minst en mätning av dagar "
                "då patienten hade en mätare kopplad."
            ),
        },
        "en": {
            "follow.title": "Follow-up",
            "follow.intro.one": "The team's alerts and readings over the last week.",
            "follow.intro.other": (
                "The team's alerts and readings over the last {n} weeks, by week."
            ),
            "follow.week": "w. {week}",
            "follow.per_patient": "Alerts per patient-week",
            "follow.alerts": "Alerts",
            "follow.ack": "Time to acknowledge (minutes)",
            "follow.median": "Median",
            "follow.p90": "90th percentile",
            "follow.actionable_rule": "Share of alerts marked actionable, per rule",
            "follow.actionable_template": "Share of alerts marked actionable, per template",
            "follow.share": "Actionable",
            "follow.no_template": "(no template)",
            "follow.answered.one": "{label} ({n} answered)",
            "follow.answered.other": "{label} ({n} answered)",
            "follow.adherence": "Adherence: share of days with a reading",
            "follow.method": (
                "Alerts count when raised; time to acknowledge runs to the first clinician who "
                "acknowledged or resolved it. Adherence: days with at least one reading of the "
                "days the patient had a device bound."
            ),
        },
    }
)


@router.get("/follow-up")
async def follow_up_page(
    request: Request,
    svc: Svc,
    who: WebMe,
    weeks: Annotated[int, Query(ge=1, le=52)] = 12,
) -> Response:
    t, lang = speech(request)
    async with svc.reads.acquire() as conn:
        figures = await followup.figures(conn, who.care_team_id, datetime.now(UTC), weeks)

    def week(w: followup.Week) -> str:
        return t("follow.week", week=f"{w.start.isocalendar().week} ({w.start.isoformat()})")

    def share_rows(shares: list[followup.Share], *, template: bool) -> list[Bar]:
        return [
            Bar(
                t(
                    "follow.answered",
                    label=(s.label or t("follow.no_template")) if template else s.label,
                    n=s.answered,
                ),
                (s.share,),
            )
            for s in shares
        ]

    charts = [
        bars(
            [Bar(week(w), (w.per_patient,)) for w in figures.weeks],
            series=[t("follow.alerts")],
            title=t("follow.per_patient"),
            chart_id="per-patient",
            t=t,
            lang=lang,
        ),
        bars(
            [Bar(week(w), (w.ack_median_minutes, w.ack_p90_minutes)) for w in figures.weeks],
            series=[t("follow.median"), t("follow.p90")],
            title=t("follow.ack"),
            chart_id="ack",
            unit="min",
            t=t,
            lang=lang,
        ),
        bars(
            share_rows(figures.by_rule, template=False),
            series=[t("follow.share")],
            title=t("follow.actionable_rule"),
            chart_id="actionable-rule",
            percent=True,
            t=t,
            lang=lang,
        ),
        bars(
            share_rows(figures.by_template, template=True),
            series=[t("follow.share")],
            title=t("follow.actionable_template"),
            chart_id="actionable-template",
            percent=True,
            t=t,
            lang=lang,
        ),
        bars(
            [Bar(week(w), (w.adherence,)) for w in figures.weeks],
            series=[t("follow.share")],
            title=t("follow.adherence"),
            chart_id="adherence",
            percent=True,
            t=t,
            lang=lang,
        ),
    ]
    return render(request, "pages/follow_up.html", {"figures": charts, "weeks": weeks}, who=who)
