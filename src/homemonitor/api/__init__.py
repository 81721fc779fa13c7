"""The HTTP API: clinicians' alerts and trends, and the ops endpoints.

Clinicians authenticate with a bearer token (machine clients) or the web app's session
cookie (with its CSRF token for a change; :mod:`homemonitor.web`, docs/web.md) and see only
their own care team's patients. Every response that carries patient data first writes an
``access_log`` row per patient (who, which patient, what, when, ``allowed``); if that write
fails, the data is not returned. An alert or patient of another care team answers exactly
as an unknown id does (404, same body), so the answer does not tell which ids exist
elsewhere, and the attempt is logged as ``denied`` with the id that was asked for.

With a replica (``HOMEMONITOR_DATABASE_READ_URL``) the data of patient reads and alert
lists comes from it, after the access-log row is committed on the primary; tokens,
care-team checks, the access log and every write stay on the primary.

Unauthenticated requests (401) are not access-logged: there is no "who" to follow up,
the answer comes before any lookup (it says nothing about any id), and anyone who can
reach the port could fill the log. They are counted in
``homemonitor_api_denied_total{reason="unauthenticated"}``.

Every status a route can answer is in the OpenAPI document (``/openapi.json``), with its body;
docs at ``/docs`` and ``/redoc``, served offline.

Where things are: :mod:`~homemonitor.api.alerts`, :mod:`~homemonitor.api.patients`,
:mod:`~homemonitor.api.plans` and :mod:`~homemonitor.api.backtest` (the clinicians' routes),
:mod:`~homemonitor.api.fhir` (FHIR R4 out: search and Bulk Data export, whose jobs run in
:mod:`~homemonitor.api.fhir_export`), :mod:`~homemonitor.api.ops` (``/health``, ``/ready``,
``/metrics``), :mod:`~homemonitor.api.quarantine` (the quarantine for the ``ops`` role: list,
show, replay; 403 for every other role),
:mod:`~homemonitor.api.deps` (the pool, metrics, health and the clinician a route is given),
:mod:`~homemonitor.api.access` (care-team visibility and the access log),
:mod:`~homemonitor.api.models` (bodies and documented errors), :mod:`~homemonitor.api.auth`
(tokens). :func:`build_app` puts them together.
"""

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.routing import Match, Mount
from starlette.types import Scope

from homemonitor import __version__
from homemonitor.api import (
    alerts,
    backtest,
    fhir,
    ops,
    patients,
    pauses,
    plans,
    quarantine,
    stream,
)
from homemonitor.api.access import NotVisibleError, not_visible
from homemonitor.api.auth import WebConfig
from homemonitor.api.deps import Services
from homemonitor.api.fhir_export import ExportJobs
from homemonitor.fhir_out import DEFAULT_PATIENT_SYSTEM
from homemonitor.ingest.validation import ClockPolicy
from homemonitor.metrics import Metrics
from homemonitor.notify.feed import AlertFeed
from homemonitor.runtime import Health
from homemonitor.settings import DEFAULT_MAX_PAYLOAD_BYTES

__all__ = ["build_app"]


def build_app(
    pool: asyncpg.Pool,
    metrics: Metrics,
    health: Health,
    *,
    fhir_patient_system: str = DEFAULT_PATIENT_SYSTEM,
    read_pool: asyncpg.Pool | None = None,
    clock: ClockPolicy | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    web: WebConfig | None = None,
    feed: AlertFeed | None = None,
    stream_heartbeat_s: float = 15.0,
) -> FastAPI:
    """The ASGI app over open pools (``read_pool``: a replica); the caller owns their lifetime.

    ``fhir_patient_system`` is the identifier system FHIR out names patients in
    (``HOMEMONITOR_FHIR_PATIENT_SYSTEM``); ``clock`` and ``max_payload_bytes`` are what a
    quarantine replay validates with, as the worker does (defaults: the settings' defaults).
    ``web``: how people sign in to the web app (default: nobody can; the API still works).
    ``feed`` wakes the live alert streams (the service's, which it runs; without one they
    look every ``stream_heartbeat_s``).
    """
    from homemonitor import web as web_app  # noqa: PLC0415 - its pages import this package

    # Swagger UI (/docs) and ReDoc (/redoc) from the package's own copies, not a CDN: the
    # docs of a first look (or of a clinic's network) work without internet.
    app = FastAPIOffline(
        title="homemonitor",
        version=__version__,
        description="Home-monitoring alerts for primary-care teams, and the ops endpoints.",
        exception_handlers={
            NotVisibleError: not_visible,
            RequestValidationError: invalid_request,
            fhir.BadRequestError: fhir.bad_request,
            405: method_not_allowed,
        },
    )
    app.state.services = Services(
        pool,
        metrics,
        health,
        ExportJobs(),
        fhir_patient_system=fhir_patient_system,
        read_pool=read_pool,
        clock=clock if clock is not None else ClockPolicy(),
        max_payload_bytes=max_payload_bytes,
        web=web if web is not None else WebConfig(),
        alert_feed=feed if feed is not None else AlertFeed(pool),
        stream_heartbeat_s=stream_heartbeat_s,
    )
    for router in (
        ops.router,
        stream.router,  # before alerts': /alerts/stream is not an alert id
        alerts.router,
        patients.router,
        plans.router,
        backtest.router,
        fhir.router,
        quarantine.router,
        pauses.router,
    ):
        app.include_router(router)
    web_app.mount(app)  # last: it looks at which alert routes the app has
    return app


#: The methods a 405's ``Allow`` may name (each asked of the app's routes).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: What a path's routing needs to match it again under another method: the request's
#: connection and path, none of what routing this request added (route, path params).
_ROUTING_KEYS = ("type", "scheme", "server", "root_path", "path", "raw_path", "headers")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route of ``app`` serves at the path of ``scope``.

    Asks every route of the app, those its routers include too (FastAPI keeps an included
    router as one route that matches for its own routes), whether it would take the path
    under each method; a mounted static directory serves GET and HEAD.
    """
    bare = {k: scope[k] for k in _ROUTING_KEYS if k in scope}
    bare["root_path"] = scope.get("app_root_path", scope.get("root_path", ""))  # a mount's
    allowed = set()
    for route in app.router.routes:
        if isinstance(route, Mount):
            if isinstance(route.app, StaticFiles) and route.matches(bare)[0] is Match.FULL:
                allowed |= {"GET", "HEAD"}
            continue
        for method in HTTP_METHODS:
            if route.matches({**bare, "method": method})[0] is Match.FULL:
                allowed.add(method)
    return [m for m in HTTP_METHODS if m in allowed]


async def method_not_allowed(request: Request, _: Exception) -> JSONResponse:
    """405 whose ``Allow`` names every method of the path (:func:`allowed_methods`).

    Not only the first matching route's: a path served by two routes (a care plan's GET
    and POST, the FHIR export status's GET and DELETE) answers with both.
    """
    headers = {"Allow": ", ".join(allowed_methods(request.app, request.scope))}
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 without the input: FastAPI's own handler echoes it, which may be unencodable (a
    lone surrogate in a note: a 500 while rendering the 422) and is patient text."""
    errors = [{k: e[k] for k in ("type", "loc", "msg")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)
