"""The signed-in clinician of a page, and the CSRF check of every page that changes anything.

A page route takes ``who: WebMe``: the clinician of the browser's web session (the
``hm_session`` cookie, looked up in PostgreSQL by :func:`homemonitor.api.auth.session`),
else the browser is sent to ``/login?next=<path>`` (the path only: a query string could
carry what a page was asked, and has no place in a sign-in's round trip). A route that
changes anything also takes ``_: Csrf``: the session's CSRF token must come back in the
form field ``csrf`` or the ``X-CSRF-Token`` header (403 otherwise).

Before sign-in there is no session, so the login forms carry a token that must match a
cookie of their own (``hm_login_csrf``, a double-submit token): another site cannot make a
browser sign in as somebody else (login CSRF).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, cast
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request, Response

from homemonitor.api import auth
from homemonitor.api.auth import Clinician, WebSession
from homemonitor.api.deps import BACKGROUND_HEADER, SAFE_METHODS, Svc

#: The double-submit cookie of the forms shown before sign-in.
LOGIN_CSRF_COOKIE = "hm_login_csrf"


_UNKNOWN = object()


class LoginRequiredError(Exception):
    """No live session: the page answers with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


def login_url(next_path: str) -> str:
    """``/login?next=<path>``, the path kept only if it is one of ours (no open redirect)."""
    return f"/login?next={quote(safe_next(next_path), safe='/')}"


def safe_next(path: str | None) -> str:
    """A path on this site to return to after sign-in: ``/`` unless ``path`` is one.

    >>> safe_next("/patients/p-1"), safe_next("//evil.example/x"), safe_next("https://x")
    ('/patients/p-1', '/', '/')
    >>> safe_next("/alerts/3?value=180")
    '/alerts/3'
    """
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path.split("?", 1)[0].split("#", 1)[0]


async def current_session(request: Request, svc: Svc) -> WebSession | None:
    """The browser's live web session, or None; kept on ``request.state`` for ``render``."""
    known = getattr(request.state, "web_session", _UNKNOWN)
    if known is not _UNKNOWN:
        return cast(WebSession | None, known)
    secret = request.cookies.get(auth.SESSION_COOKIE)
    found = None
    if secret is not None:
        touch = BACKGROUND_HEADER.lower() not in request.headers
        async with svc.pool.acquire() as conn:
            found = await auth.session(conn, secret, svc.web, touch=touch)
    request.state.web_session = found
    return found


async def web_clinician(request: Request, svc: Svc) -> Clinician:
    """The signed-in clinician, else :class:`LoginRequiredError` (a 303 to ``/login``).

    A form posted after the session ended returns, once signed in, to the page it was on
    (the Referer's path, ours only): the path it posted to answers only POST.
    """
    found = await current_session(request, svc)
    if found is None:
        path = request.url.path
        if request.method not in SAFE_METHODS:
            referer = urlsplit(request.headers.get("referer", ""))
            path = referer.path if referer.netloc == request.url.netloc else "/"
        raise LoginRequiredError(path)
    return found.clinician


WebMe = Annotated[Clinician, Depends(web_clinician)]


async def check_csrf(request: Request, svc: Svc, _: WebMe) -> None:
    """403 unless the request carries the session's CSRF token (form field or header)."""
    found = request.state.web_session
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        field = (await request.form()).get("csrf")
        sent = field if isinstance(field, str) else None
    if not hmac.compare_digest(sent or "", found.csrf):
        svc.metrics.api_denied.labels("csrf").inc()
        raise HTTPException(403, "the form's CSRF token is missing or wrong")


Csrf = Depends(check_csrf)


def login_csrf(request: Request) -> str:
    """The pre-sign-in CSRF token of this browser (the cookie's, or a new one)."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token:
        token = getattr(request.state, "new_login_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_login_csrf = token
    return token


def check_login_csrf(request: Request, sent: str) -> None:
    """403 unless a login form's token matches its cookie."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(sent, cookie):
        raise HTTPException(403, "the form's CSRF token is missing or wrong")


def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    """A cookie as all of ours are: HttpOnly, Secure, SameSite=Lax, for the whole site.

    Secure always: browsers take Secure cookies from ``http://localhost`` (a secure
    context), so the demo on this machine works, and nothing else should be plain http.
    """
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax"
    )
