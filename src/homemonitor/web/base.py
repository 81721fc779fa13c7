"""The web app's machinery: templates, :func:`render`, the time filters, :func:`mount`.

Import it as :mod:`homemonitor.web` (which re-exports all of it and holds ``PAGES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.routing import Route

from homemonitor.api.access import NotVisibleError, not_visible, record_denied
from homemonitor.api.auth import Clinician
from homemonitor.web import i18n
from homemonitor.web.oidc import OidcClient
from homemonitor.web.session import (
    LOGIN_CSRF_COOKIE,
    LoginRequiredError,
    login_csrf,
    login_url,
    set_cookie,
)

#: Clinicians read times in Swedish time, whatever the server's zone.
TZ = ZoneInfo("Europe/Stockholm")
_HERE = Path(__file__).parent


def local(value: datetime | None) -> str:
    """A time as a clinician reads it: ``2026-12-02 14:05`` in Europe/Stockholm.

    >>> from datetime import UTC
    >>> local(datetime(2026, 12, 2, 13, 5, tzinfo=UTC)), local(datetime(2026, 7, 1, 12, tzinfo=UTC))
    ('2026-12-02 14:05', '2026-07-01 14:00')
    """
    return "" if value is None else value.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


def localdate(value: datetime | None) -> str:
    """The date in Europe/Stockholm: ``2026-12-02``."""
    return "" if value is None else value.astimezone(TZ).strftime("%Y-%m-%d")


def iso(value: datetime | None) -> str:
    """For ``<time datetime="...">``: the instant, with its offset."""
    return "" if value is None else value.astimezone(TZ).isoformat(timespec="seconds")


def said(explanation: Mapping[str, Any] | BaseModel | None, lang: str) -> str:
    """An alert explanation's sentence in ``lang`` (``sentences``); one stored before
    sentences had languages has its English ``sentence`` only.

    >>> said({"sentence": "weight 84.6 kg", "sentences": {"sv": "vikt 84,6 kg"}}, "sv")
    'vikt 84,6 kg'
    >>> said({"sentence": "weight 84.6 kg"}, "sv")
    'weight 84.6 kg'
    """
    if isinstance(explanation, BaseModel):
        explanation = explanation.model_dump()
    if not explanation:
        return ""
    sentences = explanation.get("sentences") or {}
    return str(sentences.get(lang) or explanation.get("sentence") or "")


templates = Jinja2Templates(directory=_HERE / "templates")
templates.env.filters.update(local=local, localdate=localdate, iso=iso, said=said)


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    who: Clinician | None,
    status_code: int = 200,
) -> Response:
    """The template ``name`` with ``t``, ``lang``, ``csrf_token`` and ``who`` added.

    ``csrf_token`` is the session's; before sign-in, the login forms' own (its cookie is
    set on this response if the browser has none).
    """
    lang = i18n.language(request)
    session = getattr(request.state, "web_session", None)
    csrf = session.csrf if session is not None else login_csrf(request)
    extra = {"t": i18n.translator(lang), "lang": lang, "csrf_token": csrf, "who": who}
    response = templates.TemplateResponse(request, name, context | extra, status_code=status_code)
    response.headers.update(_headers(request))
    new = getattr(request.state, "new_login_csrf", None)
    if session is None and new is not None:
        set_cookie(response, LOGIN_CSRF_COOKIE, new)
    return response


def _headers(request: Request) -> dict[str, str]:
    """What every page is sent with: no caching (patient data), no framing, no inline
    script, forms only to us and the identity provider (logout redirects there), and no
    Referer with our paths to anyone else."""
    forms = "'self'"
    oidc = getattr(request.app.state, "oidc", None)
    if oidc is not None:
        issuer = urlsplit(oidc.config.issuer)
        forms += f" {issuer.scheme}://{issuer.netloc}"
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action {forms}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


i18n.add(
    {
        "sv": {
            "missing.title": "Hittades inte",
            "missing.alert": "Det finns inget larm {id} som du kan se.",
            "missing.patient": "Det finns ingen patient {id} som du kan se.",
            "missing.other": "Det finns inget sådant som du kan se.",
            "missing.back": "Till inkorgen",
        },
        "en": {
            "missing.title": "Not found",
            "missing.alert": "There is no alert {id} that you can see.",
            "missing.patient": "There is no patient {id} that you can see.",
            "missing.other": "There is nothing of that kind that you can see.",
            "missing.back": "To the Inbox",
        },
    }
)


async def _not_visible(request: Request, exc: Exception) -> Response:
    """Another team's (or no) alert or patient: a page route answers with a page in the
    user's language, the API with its JSON; either way the attempt is logged as denied."""
    assert isinstance(exc, NotVisibleError)
    route = request.scope.get("route")
    if getattr(route, "path", None) not in request.app.state.page_paths:
        return await not_visible(request, exc)
    await record_denied(request, exc)
    context = {"kind": exc.kind, "requested_id": exc.requested_id}
    return render(request, "not_found.html", context, who=exc.who, status_code=404)


async def _to_login(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequiredError)
    return RedirectResponse(login_url(exc.next_path), status_code=303)


def mount(app: FastAPI, pages: list[APIRouter]) -> None:
    """Include ``pages`` and ``/static``, and note which alert actions exist.

    Another team's id on a page answers with the HTML "not found" page
    (:func:`_not_visible`), still logged as a denied attempt.

    The Inbox offers assign, snooze and comment only if the app has their API routes
    (``app.state.alert_actions``), checked once here, after every API router is in.
    """
    for router in pages:
        app.include_router(router)
    app.state.page_paths = frozenset(
        r.path for router in pages for r in router.routes if isinstance(r, Route)
    )
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    app.add_exception_handler(LoginRequiredError, _to_login)
    app.add_exception_handler(NotVisibleError, _not_visible)  # replaces the API's: it calls it
    config = app.state.services.web.oidc
    app.state.oidc = None if config is None else OidcClient(config)
    # The OpenAPI document's paths: FastAPI keeps included routers as routers, not routes.
    paths = app.openapi()["paths"]
    app.state.alert_actions = frozenset(
        action
        for action in ("acknowledge", "resolve", "assign", "snooze", "comment")
        if f"/api/v1/alerts/{{alert_id}}/{action}" in paths
    )
