"""Signing in and out, and the language switch.

``/login`` offers single sign-on through the region's OpenID provider when one is
configured (:mod:`homemonitor.web.oidc`), else the demo-only login when the service runs as
the demo (``HOMEMONITOR_WEB_DEMO_LOGIN``, set by ``homemonitor demo``): a list of the
registry's clinicians and a page that says no identity is checked. Never both: with a
provider configured the demo login does not exist.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response

from homemonitor import logs
from homemonitor.api import auth
from homemonitor.api.deps import Svc
from homemonitor.web.base import render
from homemonitor.web.i18n import LANG_COOKIE, LANGUAGES
from homemonitor.web.oidc import OidcClient, SignInError
from homemonitor.web.session import (
    check_login_csrf,
    current_session,
    safe_next,
    set_cookie,
)

router = APIRouter(include_in_schema=False)
log = logs.get_logger(__name__)

#: Where to go after: ``?next=<path>`` (checked by :func:`safe_next`).
Next = Annotated[str, Query(alias="next")]

#: A year: the language is a preference, not a secret.
_LANG_MAX_AGE = 365 * 24 * 3600


@router.get("/login")
async def login_page(
    request: Request, svc: Svc, next_path: Next = "/", error: str | None = None
) -> Response:
    found = await current_session(request, svc)
    if found is not None:
        return RedirectResponse(safe_next(next_path), status_code=303)
    clinicians = []
    if svc.web.demo:
        async with svc.pool.acquire() as conn:
            clinicians = await conn.fetch(
                "SELECT c.id, c.name, c.role, t.name AS team FROM clinicians c "
                "JOIN care_teams t ON t.id = c.care_team_id ORDER BY t.name, c.name"
            )
    context = {
        "next": safe_next(next_path),
        "sso": svc.web.oidc is not None,
        "demo": svc.web.demo,
        "clinicians": clinicians,
        "error": error,
    }
    return render(request, "login.html", context, who=None)


@router.get("/login/sso")
async def sso_start(request: Request, svc: Svc, next_path: Next = "/") -> Response:
    """Send the browser to the region's identity provider (state, nonce, PKCE)."""
    client = _oidc(request)
    try:
        async with svc.pool.acquire() as conn:
            started = await client.start(conn, safe_next(next_path))
    except SignInError as exc:
        log.warning("sso_unavailable", reason=str(exc))
        return RedirectResponse("/login?error=failed", status_code=303)
    return RedirectResponse(started.url, status_code=303)


@router.get("/auth/callback")
async def sso_callback(
    request: Request,
    svc: Svc,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """The provider's answer: exchange the code, check the ID token, start the session."""
    client = _oidc(request)
    if error is not None or code is None or state is None:
        log.warning("sso_refused", error=(error or "no code")[:64])
        return RedirectResponse("/login?error=failed", status_code=303)
    async with svc.pool.acquire() as conn:
        try:
            identity, next_path = await client.finish(conn, code, state)
        except SignInError as exc:
            log.warning("sso_failed", reason=str(exc))
            return RedirectResponse("/login?error=failed", status_code=303)
        clinician = await auth.clinician_by_hsa_id(conn, identity.hsa_id)
        if clinician is None:
            # Nobody of ours: counted and logged (without the HSA id, a person's identifier).
            svc.metrics.api_denied.labels("unauthenticated").inc()
            log.warning("sso_unknown_person")
            return RedirectResponse("/login?error=unknown_person", status_code=303)
        secret, _ = await auth.open_session(conn, clinician, "oidc", id_token=identity.id_token)
    log.info("sso_signed_in", clinician=clinician)
    return signed_in(next_path, secret)


def _oidc(request: Request) -> OidcClient:
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    if client is None:
        raise HTTPException(404, "Not Found")
    return client


@router.post("/login/demo")
async def demo_login(
    request: Request,
    svc: Svc,
    clinician: Annotated[str, Form()],
    csrf: Annotated[str, Form()],
    next_path: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    """Sign in as any clinician, without an identity check: the demo only."""
    if not svc.web.demo:
        raise HTTPException(404, "Not Found")
    check_login_csrf(request, csrf)
    async with svc.pool.acquire() as conn:
        try:
            secret, _ = await auth.open_session(conn, clinician, "demo")
        except Exception as exc:
            raise HTTPException(400, "no such clinician") from exc
    return signed_in(safe_next(next_path), secret)


def _site(client: OidcClient) -> str:
    """This service's origin, from the registered callback URL."""
    url = urlsplit(client.config.redirect_url)
    return f"{url.scheme}://{url.netloc}"


def signed_in(next_path: str, secret: str) -> Response:
    """The redirect after a sign-in, setting the session cookie."""
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(response, auth.SESSION_COOKIE, secret)
    return response


@router.post("/logout")
async def logout(request: Request, svc: Svc, csrf: Annotated[str, Form()]) -> Response:
    """End the session (CSRF-checked: another site must not sign a clinician out)."""
    found = await current_session(request, svc)
    secret = request.cookies.get(auth.SESSION_COOKIE)
    to = "/login?error=ended"
    if found is not None and secret is not None:
        if not hmac.compare_digest(csrf, found.csrf):
            raise HTTPException(403, "the form's CSRF token is missing or wrong")
        async with svc.pool.acquire() as conn:
            id_token = await auth.end_session(conn, secret)
        client: OidcClient | None = getattr(request.app.state, "oidc", None)
        if client is not None and found.via == "oidc":  # sign out at the provider too
            after = _site(client) + "/login?error=ended"
            to = await client.logout_url(id_token, after) or to
    response = RedirectResponse(to, status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/", secure=True, httponly=True)
    return response


@router.get("/lang/{code}")
async def choose_language(code: str, next_path: Next = "/") -> Response:
    """Remember the language and go back to the page (the path only)."""
    if code not in LANGUAGES:
        raise HTTPException(404, "Not Found")
    response = RedirectResponse(safe_next(next_path), status_code=303)
    set_cookie(response, LANG_COOKIE, code, max_age=_LANG_MAX_AGE)
    return response
