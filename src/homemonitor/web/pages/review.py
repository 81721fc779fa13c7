"""Access-log review, ``/access-review``, for the registry role ``reviewer`` only: for a patient,
who read what and when and the denied attempts; for a clinician, what they read; every
denied attempt of a period; a sample-check workflow (draw a check, record what was checked
and the outcome; migration 0016); CSV export.

Anyone else gets 403, and the attempt is itself logged as denied (``review_access_log``):
an attempt to read who read a patient is an attempt at that patient's record. Every view
that names patients logs a read of each (``review_access_log``; the export
``export_access_log``), so the reviewers' own looks are in the log they review.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse

from homemonitor.access_actions import AccessAction
from homemonitor.api.access import log_access, log_denied
from homemonitor.api.auth import Clinician
from homemonitor.api.deps import Svc
from homemonitor.fields import ID_PATTERN
from homemonitor.web import i18n, render, review
from homemonitor.web.charts import LOCAL_ZONE
from homemonitor.web.session import Csrf, WebMe

router = APIRouter(include_in_schema=False)

READ: AccessAction = "review_access_log"
EXPORT: AccessAction = "export_access_log"
#: The period a review shows unless asked: the last 30 local days.
DEFAULT_DAYS = 30

i18n.add(
    {
        "sv": {
            "review.title": "Granskning av åtkomstloggen",
            "review.intro": (
                "Vem har läst vad och när, och nekade försök. Din granskning loggas också."
            ),
            "review.patient": "Patient",
            "review.clinician": "Vårdpersonal",
            "review.from": "Från och med",
            "review.to": "Till och med",
            "review.show": "Visa",
            "review.export": "Exportera som CSV",
            "review.denied": "Nekade försök",
            "review.none": "Inga rader under perioden.",
            "review.at": "Tid",
            "review.who": "Vem",
            "review.action": "Vad",
            "review.outcome": "Utfall",
            "review.requested": "Efterfrågat id",
            "review.of_patient": "Åtkomst till patient {id}",
            "review.of_clinician": "Vad {id} har läst",
            "review.checks": "Stickprov och kontroller",
            "review.new_check": "Ny kontroll",
            "review.scope": "Omfattning",
            "review.scope.sample": "Slumpvis stickprov av läsningar",
            "review.scope.patient": "En patients logg",
            "review.scope.clinician": "En persons logg",
            "review.subject": "Patient- eller personal-id (inte för stickprov)",
            "review.sample_size": "Antal i stickprovet",
            "review.draw": "Skapa kontroll",
            "review.check": "Kontroll {id}",
            "review.status.open": "pågår",
            "review.status.done": "klar",
            "review.checked": "Vad kontrollerades?",
            "review.result": "Resultat",
            "review.outcome.no_remarks": "Utan anmärkning",
            "review.outcome.follow_up": "Följs upp",
            "review.outcome.unauthorised": "Obehörig åtkomst",
            "review.note": "Anteckning",
            "review.record": "Registrera resultatet",
            "review.items": "Rader i kontrollen",
            "review.bad_check": "Ange id för en patient eller person, eller välj stickprov.",
            "review.outcome_allowed": "tillåten",
            "review.outcome_denied": "nekad",
        },
        "en": {
            "review.title": "Access-log review",
            "review.intro": (
                "Who read what and when, and the denied attempts. Your review is logged too."
            ),
            "review.patient": "Patient",
            "review.clinician": "Clinician",
            "review.from": "From",
            "review.to": "To (inclusive)",
            "review.show": "Show",
            "review.export": "Export as CSV",
            "review.denied": "Denied attempts",
            "review.none": "No entries in the period.",
            "review.at": "Time",
            "review.who": "Who",
            "review.action": "What",
            "review.outcome": "Outcome",
            "review.requested": "Requested id",
            "review.of_patient": "Access to patient {id}",
            "review.of_clinician": "What {id} read",
            "review.checks": "Sample checks",
            "review.new_check": "New check",
            "review.scope": "Scope",
            "review.scope.sample": "A random sample of reads",
            "review.scope.patient": "One patient's log",
            "review.scope.clinician": "One clinician's log",
            "review.subject": "Patient or clinician id (not for a sample)",
            "review.sample_size": "Sample size",
            "review.draw": "Create the check",
            "review.check": "Check {id}",
            "review.status.open": "open",
            "review.status.done": "done",
            "review.checked": "What was checked?",
            "review.result": "Outcome",
            "review.outcome.no_remarks": "No remarks",
            "review.outcome.follow_up": "To follow up",
            "review.outcome.unauthorised": "Unauthorised access",
            "review.note": "Note",
            "review.record": "Record the outcome",
            "review.items": "Entries in the check",
            "review.bad_check": "Give a patient's or clinician's id, or choose a sample.",
            "review.outcome_allowed": "allowed",
            "review.outcome_denied": "denied",
        },
    }
)

Id = Annotated[str, Query(pattern=ID_PATTERN, max_length=128)]


async def reviewer(request: Request, svc: Svc, who: WebMe) -> Clinician:
    """The signed-in clinician if their role is ``reviewer``; anyone else 403, logged."""
    if who.role == review.REVIEWER_ROLE:
        return who
    asked = request.query_params.get("id") or request.url.path
    async with svc.pool.acquire() as conn:
        await log_denied(conn, who, None, READ, asked[:128])
    svc.metrics.api_denied.labels("role").inc()
    raise HTTPException(403, "the access-log review is for the reviewer role")


Reviewer = Annotated[Clinician, Depends(reviewer)]


def period(start: date | None, end: date | None) -> tuple[datetime, datetime, date, date]:
    """``[start 00:00, end + 1 day 00:00)`` in Stockholm; by default the last 30 days."""
    today = datetime.now(LOCAL_ZONE).date()
    last = end or today
    first = start or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise HTTPException(422, "the period ends before it starts")
    begin = datetime.combine(first, time(), LOCAL_ZONE)
    return begin, datetime.combine(last + timedelta(days=1), time(), LOCAL_ZONE), first, last


async def _logged(
    svc: Svc, who: Clinician, entries: list[review.Entry], action: AccessAction, asked: str | None
) -> None:
    async with svc.pool.acquire() as conn, conn.transaction():
        await log_access(
            conn, svc.metrics, who, review.patients_of(entries), action, requested_id=asked
        )


@router.get("/access-review")
async def review_page(
    request: Request,
    svc: Svc,
    *,
    who: Reviewer,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    begin, until, first, last = period(start, end)
    async with svc.pool.acquire() as conn:
        denied = await review.denied(conn, begin, until)
        checks = await review.checks(conn)
    await _logged(svc, who, denied, READ, None)
    context = {
        "entries": denied,
        "heading": "review.denied",
        "checks": checks,
        "first": first,
        "last": last,
        "subject": None,
        "kind": None,
        "outcomes": review.OUTCOMES,
    }
    return render(request, "pages/access_review.html", context, who=who)


@router.get("/access-review/{kind}")
async def review_subject(
    request: Request,
    svc: Svc,
    *,
    who: Reviewer,
    kind: Literal["patient", "clinician"],
    id: Id,  # noqa: A002 - the form field's name
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    begin, until, first, last = period(start, end)
    entries = await _entries(svc, kind, id, begin, until)
    await _logged(svc, who, entries, READ, id)
    context = {
        "entries": entries,
        "heading": f"review.of_{kind}",
        "checks": [],
        "first": first,
        "last": last,
        "subject": id,
        "kind": kind,
        "outcomes": review.OUTCOMES,
    }
    return render(request, "pages/access_review.html", context, who=who)


async def _entries(
    svc: Svc, kind: Literal["patient", "clinician"], subject: str, begin: datetime, until: datetime
) -> list[review.Entry]:
    """The access-log entries of a patient, or of a clinician, in the period."""
    read = review.for_patient if kind == "patient" else review.for_clinician
    async with svc.pool.acquire() as conn:
        return await read(conn, subject, begin, until)


@router.get("/access-review/{kind}/export.csv")
async def export(
    svc: Svc,
    who: Reviewer,
    *,
    kind: Literal["patient", "clinician"],
    id: Id,  # noqa: A002
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    """The same entries as the page, as CSV (``export_access_log``)."""
    begin, until, first, last = period(start, end)
    entries = await _entries(svc, kind, id, begin, until)
    await _logged(svc, who, entries, EXPORT, id)
    name = f"access-log-{kind}-{id}-{first.isoformat()}-{last.isoformat()}.csv"
    return Response(
        review.to_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/access-review/checks", dependencies=[Csrf])
async def new_check(
    svc: Svc,
    who: Reviewer,
    *,
    scope: Annotated[review.Scope, Form()],
    subject_id: Annotated[str, Form(max_length=128)] = "",
    start: Annotated[date | None, Form(alias="from")] = None,
    end: Annotated[date | None, Form(alias="to")] = None,
    sample_size: Annotated[int, Form(ge=1, le=500)] = 20,
) -> Response:
    """Draw a check (a sample of the period's reads, or one patient's or clinician's log)."""
    begin, until, _, _ = period(start, end)
    subject = subject_id.strip() or None
    if (scope == "sample") != (subject is None):
        raise HTTPException(422, "a sample names no one; a patient or clinician check names one")
    async with svc.pool.acquire() as conn, conn.transaction():
        check_id = await review.open_check(
            conn, who.id, scope, subject, start=begin, end=until, sample_size=sample_size
        )
    return RedirectResponse(f"/access-review/checks/{check_id}", status_code=303)


@router.get("/access-review/checks/{check_id}")
async def check_page(request: Request, svc: Svc, who: Reviewer, check_id: int) -> Response:
    async with svc.pool.acquire() as conn:
        found = await review.check(conn, check_id)
    if found is None:
        raise HTTPException(404, "no such check")
    await _logged(svc, who, found.items, READ, f"check:{check_id}")
    context = {"check": found, "outcomes": review.OUTCOMES}
    return render(request, "pages/access_check.html", context, who=who)


@router.post("/access-review/checks/{check_id}", dependencies=[Csrf])
async def close_check(
    svc: Svc,
    who: Reviewer,
    *,
    check_id: int,
    checked: Annotated[str, Form(min_length=1, max_length=2000)],
    outcome: Annotated[review.Outcome, Form()],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Record what was checked and the outcome; a check is closed once (409 after)."""
    async with svc.pool.acquire() as conn, conn.transaction():
        try:
            await review.close_check(conn, check_id, checked.strip(), outcome, note.strip())
        except review.CheckClosedError as exc:
            raise HTTPException(409, "the check is closed or does not exist") from exc
    return RedirectResponse(f"/access-review/checks/{check_id}", status_code=303)
