"""The clinicians' web app: server-rendered pages over the same data and rules as the API.

Pages are Jinja2 templates (``web/templates``) rendered by FastAPI routes, with a little
plain JavaScript (``web/static/app.js``: actions through the JSON API without a reload,
live updates from the alert stream); every form also works without it. Every asset is in
the package: no CDN, no build step; it works on a closed hospital network. docs/web.md
argues the choice.

- :data:`templates` and :func:`render`: a page with ``t`` (the request's language),
  ``lang``, ``csrf_token`` and ``who`` in its context; filters ``local`` and ``localdate``
  (Europe/Stockholm).
- :data:`PAGES`: the page routers :func:`mount` includes (a page module appends its own).
- :mod:`~homemonitor.web.session`: ``WebMe`` (the signed-in clinician) and ``Csrf``.
- :mod:`~homemonitor.web.login`: sign-in (single sign-on, or the demo-only login),
  logout, language.
- :mod:`~homemonitor.web.inbox`: the Inbox, ``/``.
- :mod:`~homemonitor.web.actions`: the alert actions' forms (the API's route functions).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from homemonitor.web.actions import router as alert_actions
from homemonitor.web.base import TZ, local, localdate, render, templates
from homemonitor.web.base import mount as _mount
from homemonitor.web.inbox import router as inbox
from homemonitor.web.login import router as login
from homemonitor.web.pages.alert import router as alert_page
from homemonitor.web.pages.follow_up import router as follow_up_page
from homemonitor.web.pages.patient import router as patient_page
from homemonitor.web.pages.patients import router as patients_page
from homemonitor.web.pages.review import router as access_review_page

__all__ = ["PAGES", "TZ", "local", "localdate", "mount", "render", "templates"]

#: The page routers :func:`mount` includes: one import and one entry per page module.
PAGES: list[APIRouter] = [
    login,
    inbox,
    alert_actions,
    alert_page,
    patients_page,
    patient_page,
    access_review_page,
    follow_up_page,
]


def mount(app: FastAPI) -> None:
    """Include :data:`PAGES` and ``/static`` in ``app`` (see :func:`homemonitor.web.base.mount`)."""
    _mount(app, PAGES)
