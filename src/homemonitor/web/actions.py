"""What a clinician does with an alert through a form, with or without JavaScript:
``POST /alerts/{id}/acknowledge``, ``…/assign``, ``…/snooze``, ``…/comment``, ``…/resolve``.

The Inbox's and the Alert page's forms post here (the form field ``csrf``, checked by
:data:`~homemonitor.web.session.Csrf` before anything else). Each route is the API's own
route function (:mod:`homemonitor.api.alerts`: the same lock, checks, transition, event
and access-log row), called with the signed-in clinician; nothing of the lifecycle is
here. The answer is a 303 back to the page the form was on (the field ``back``: the
Inbox or the Alert page), so a reload does not post again, with what happened in the
query string: ``?alert=<id>&action=<action>&outcome=<outcome>``, closed vocabularies
that :func:`notice` turns into a sentence in the page's language. An outcome is ``done``,
a refusal of the API's 409 (:data:`homemonitor.alerts.transitions.Refusal`: "already
resolved", "an urgent alert cannot be snoozed", …) or ``invalid`` (a field the API would
refuse, e.g. an empty note; nothing was asked of the database). Another team's alert is
the not-found page, logged as denied, as on every page.

With JavaScript the Inbox posts the same form as JSON to the API instead (inbox.js) and
refreshes its list without a reload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError

from homemonitor.alerts.transitions import Refusal
from homemonitor.api import alerts
from homemonitor.api.auth import Clinician
from homemonitor.api.deps import Svc
from homemonitor.api.models import AlertId, AssignIn, CommentIn, ResolveIn, SnoozeIn
from homemonitor.web import i18n
from homemonitor.web.session import Csrf, WebMe

router = APIRouter(include_in_schema=False)

Action = Literal["acknowledge", "assign", "snooze", "comment", "resolve"]
Outcome = Literal["done", "invalid", Refusal]
#: The page a form came from, and goes back to.
Back = Literal["inbox", "alert"]

ACTIONS: frozenset[str] = frozenset(get_args(Action))
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

BackField = Annotated[Back, Form()]
#: A form's text field, as it came: the API's body model judges it.
FormText = Annotated[str, Form()]
Body = TypeVar("Body", bound=BaseModel)


def back_to(back: Back, alert_id: int, action: Action, outcome: Outcome) -> str:
    """Where a form's post answers to: its page, told what happened.

    >>> back_to("inbox", 12, "resolve", "resolved")
    '/?alert=12&action=resolve&outcome=resolved'
    >>> back_to("alert", 12, "acknowledge", "done")
    '/alerts/12?alert=12&action=acknowledge&outcome=done'
    """
    path = "/" if back == "inbox" else f"/alerts/{alert_id}"
    return f"{path}?{urlencode({'alert': alert_id, 'action': action, 'outcome': outcome})}"


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """What a page says about the action it was sent back from."""

    text: str
    ok: bool


def notice(request: Request, t: Callable[..., str]) -> Notice | None:
    """The notice the query string of :func:`back_to` asks for; None for anything else
    (the page says only what the vocabularies allow, never what a link wrote)."""
    q = request.query_params
    action, outcome, alert = q.get("action"), q.get("outcome"), q.get("alert", "")
    if action not in ACTIONS or outcome not in OUTCOMES or not alert.isdigit():
        return None
    if outcome == "done":
        return Notice(t(f"notice.done.{action}", id=int(alert)), ok=True)
    if outcome == "invalid":
        return Notice(t(f"notice.invalid.{action}", id=int(alert)), ok=False)
    return Notice(t(f"notice.refused.{outcome}", id=int(alert)), ok=False)


async def form_context(request: Request, svc: Svc, who: Clinician) -> dict[str, Any]:
    """What the action forms (templates/_alert_actions.html) need: ``actions``, those the
    app has API routes for (:func:`homemonitor.web.base.mount`), and ``team``, whom an
    alert can be assigned to (the clinician's team, by name)."""
    offered: frozenset[str] = getattr(request.app.state, "alert_actions", frozenset())
    team: list[Any] = []
    if "assign" in offered:
        async with svc.pool.acquire() as conn:
            team = await conn.fetch(
                "SELECT id, name FROM clinicians WHERE care_team_id = $1 ORDER BY name, id",
                who.care_team_id,
            )
    return {"actions": offered, "team": team}


async def _act(
    back: Back, alert_id: int, action: Action, run: Callable[[], Awaitable[object]]
) -> Response:
    """Run the API's route function; 303 back with what came of it."""
    try:
        await run()
    except alerts.ActionRefusedError as exc:
        return RedirectResponse(back_to(back, alert_id, action, exc.reason), status_code=303)
    return RedirectResponse(back_to(back, alert_id, action, "done"), status_code=303)


async def _with_body(
    back: Back,
    alert_id: int,
    action: Action,
    *,
    fields: dict[str, object],
    model: type[Body],
    route: Callable[[Body], Awaitable[object]],
) -> Response:
    """The form's fields as the API's body (``invalid`` if it would refuse them), then
    :func:`_act` with the API's route function given that body."""
    try:
        body = model.model_validate(fields)
    except ValidationError:
        return RedirectResponse(back_to(back, alert_id, action, "invalid"), status_code=303)
    return await _act(back, alert_id, action, lambda: route(body))


@router.post("/alerts/{alert_id}/acknowledge", dependencies=[Csrf])
async def acknowledge(
    svc: Svc, who: WebMe, alert_id: AlertId, back: BackField = "alert"
) -> Response:
    """The API's acknowledge."""
    return await _act(back, alert_id, "acknowledge", lambda: alerts.acknowledge(svc, who, alert_id))


@router.post("/alerts/{alert_id}/resolve", dependencies=[Csrf])
async def resolve(
    svc: Svc,
    *,
    who: WebMe,
    alert_id: AlertId,
    back: BackField = "alert",
    note: FormText = "",
    actionable: FormText = "",
) -> Response:
    """The API's resolve, with a note and the answer to "was it actionable?" (both asked:
    the API's body takes no answer, the form does not)."""
    answer = {"yes": True, "no": False}.get(actionable, actionable)  # else refused as not bool
    return await _with_body(
        back,
        alert_id,
        "resolve",
        fields={"note": note.strip(), "actionable": answer},
        model=ResolveIn,
        route=lambda body: alerts.resolve(svc, who, alert_id, body),
    )


@router.post("/alerts/{alert_id}/assign", dependencies=[Csrf])
async def assign(
    svc: Svc,
    *,
    who: WebMe,
    alert_id: AlertId,
    back: BackField = "alert",
    clinician_id: FormText = "",
) -> Response:
    """The API's assign, to a clinician of the alert's team (chosen by name)."""
    return await _with_body(
        back,
        alert_id,
        "assign",
        fields={"clinician_id": clinician_id},
        model=AssignIn,
        route=lambda body: alerts.assign(svc, who, alert_id, body),
    )


@router.post("/alerts/{alert_id}/snooze", dependencies=[Csrf])
async def snooze(
    svc: Svc,
    *,
    who: WebMe,
    alert_id: AlertId,
    back: BackField = "alert",
    minutes: FormText = "",
    reason: FormText = "",
) -> Response:
    """The API's snooze, for some minutes with a reason."""
    return await _with_body(
        back,
        alert_id,
        "snooze",
        fields={"minutes": minutes, "reason": reason.strip()},
        model=SnoozeIn,
        route=lambda body: alerts.snooze(svc, who, alert_id, body),
    )


@router.post("/alerts/{alert_id}/comment", dependencies=[Csrf])
async def comment(
    svc: Svc, *, who: WebMe, alert_id: AlertId, back: BackField = "alert", text: FormText = ""
) -> Response:
    """The API's comment: a note for the team in the alert's history."""
    return await _with_body(
        back,
        alert_id,
        "comment",
        fields={"text": text.strip()},
        model=CommentIn,
        route=lambda body: alerts.comment(svc, who, alert_id, body),
    )


i18n.add(
    {
        "sv": {
            "notice.done.acknowledge": "Larm {id} är kvitterat.",
            "notice.done.assign": "Larm {id} är tilldelat.",
            "notice.done.snooze": "Larm {id} är snoozat.",
            "notice.done.comment": "Kommentaren är sparad i larm {id}.",
            "notice.done.resolve": "Larm {id} är avslutat.",
            "notice.invalid.acknowledge": "Larm {id} kunde inte kvitteras.",
            "notice.invalid.assign": "Välj vem larm {id} ska tilldelas.",
            "notice.invalid.snooze": "Ange 1–1440 minuter och en orsak för att snooza larm {id}.",
            "notice.invalid.comment": "Skriv en kommentar till larm {id}.",
            "notice.invalid.resolve": (
                "Larm {id} är inte avslutat: svara på om det var åtgärdbart, och skriv vad "
                "som gjordes."
            ),
            "notice.refused.resolved": "Larm {id} är redan avslutat.",
            "notice.refused.ended": "Larm {id} har redan upphört.",
            "notice.refused.urgent": (
                "Larm {id} är brådskande och kan inte snoozas: kvittera det i stället."
            ),
            "notice.refused.status": "Larm {id} kan inte snoozas nu.",
            "notice.refused.length": "En snooze varar 1–1440 minuter (larm {id}).",
            "notice.refused.team": "Den du valde hör inte till vårdteamet för larm {id}.",
        },
        "en": {
            "notice.done.acknowledge": "Alert {id} is acknowledged.",
            "notice.done.assign": "Alert {id} is assigned.",
            "notice.done.snooze": "Alert {id} is snoozed.",
            "notice.done.comment": "The comment is saved in alert {id}.",
            "notice.done.resolve": "Alert {id} is resolved.",
            "notice.invalid.acknowledge": "Alert {id} could not be acknowledged.",
            "notice.invalid.assign": "Choose whom alert {id} is assigned to.",
            "notice.invalid.snooze": "Give 1–1440 minutes and a reason to snooze alert {id}.",
            "notice.invalid.comment": "Write a comment for alert {id}.",
            "notice.invalid.resolve": (
                "Alert {id} is not resolved: say whether it was actionable, and what was done."
            ),
            "notice.refused.resolved": "Alert {id} is already resolved.",
            "notice.refused.ended": "Alert {id} has already ended.",
            "notice.refused.urgent": (
                "Alert {id} is urgent and cannot be snoozed: acknowledge it instead."
            ),
            "notice.refused.status": "Alert {id} cannot be snoozed now.",
            "notice.refused.length": "A snooze lasts 1–1440 minutes (alert {id}).",
            "notice.refused.team": "Whom you chose is not of alert {id}'s care team.",
        },
    }
)
