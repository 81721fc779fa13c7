"""What a route is given: the service's pools, metrics and health, and the clinician asking.

:func:`homemonitor.api.build_app` puts one :class:`Services` on ``app.state``; routes take
it, and the clinician, as FastAPI dependencies (``Svc``, ``Me``, or ``Ops`` for the routes
only the ``ops`` role may use), so nothing here exists before an app is built.
"""

import dataclasses
import hmac
from typing import TYPE_CHECKING, Annotated, Literal, cast

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from homemonitor.api import auth
from homemonitor.api.auth import Clinician, WebConfig, authenticate
from homemonitor.fhir_out import DEFAULT_PATIENT_SYSTEM
from homemonitor.ingest.validation import ClockPolicy
from homemonitor.metrics import Metrics
from homemonitor.notify.feed import AlertFeed
from homemonitor.runtime import Health
from homemonitor.settings import DEFAULT_MAX_PAYLOAD_BYTES
from homemonitor.storage.database import Conn

if TYPE_CHECKING:  # the export code uses the access log, which uses this module
    from homemonitor.api.fhir_export import ExportJobs

_bearer = HTTPBearer(
    auto_error=False, description="A clinician API token (homemonitor token issue)."
)
#: The web app's session cookie, declared in the OpenAPI document beside the bearer scheme:
#: every route that takes :data:`Me` accepts either.
_session_cookie = APIKeyCookie(
    name=auth.SESSION_COOKIE,
    scheme_name="webSession",
    auto_error=False,
    description=(
        "The web app's session: the cookie a clinician's browser gets at sign-in to the web "
        "app (HttpOnly, Secure, SameSite=Lax; it ends at sign-out or when idle). A request "
        "with it that changes anything (any method but GET, HEAD and OPTIONS) must also "
        "carry the session's CSRF token in the header X-CSRF-Token, or it is refused (403). "
        "Machine clients use a bearer token instead."
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Services:
    """What the routes share; the caller of ``build_app`` owns the pools' lifetime.

    ``pool`` is the primary: authentication, the access log, every write. ``read_pool``,
    when given, is a replica for the data a read returns (:attr:`reads`).
    """

    pool: asyncpg.Pool
    metrics: Metrics
    health: Health
    #: This process's Bulk Data export jobs.
    fhir_exports: "ExportJobs"
    #: The identifier system of ``Observation.subject`` and ``Flag.subject`` (FHIR out).
    fhir_patient_system: str = DEFAULT_PATIENT_SYSTEM
    read_pool: asyncpg.Pool | None = None
    #: What a quarantine replay validates with: the worker's clock policy and payload limit
    #: (``HOMEMONITOR_CLOCK_*``, ``HOMEMONITOR_RETENTION``, ``HOMEMONITOR_MAX_PAYLOAD_BYTES``).
    clock: ClockPolicy = dataclasses.field(default_factory=ClockPolicy)
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    #: How people sign in to the web app (single sign-on, the demo login, session times).
    web: WebConfig = dataclasses.field(default_factory=WebConfig)
    #: What wakes the live alert streams (``GET /api/v1/alerts/stream``), and their heartbeat.
    alert_feed: AlertFeed | None = None
    stream_heartbeat_s: float = 15.0

    @property
    def feed(self) -> AlertFeed:
        """The process's alert feed (``build_app`` always sets one)."""
        assert self.alert_feed is not None
        return self.alert_feed

    @property
    def reads(self) -> asyncpg.Pool:
        """Where patient data and alert lists are read: the replica if there is one.

        It may lag the primary: what it returns is what it has replayed. Never use it for
        what decides access (tokens, care teams) or for anything written.
        """
        return self.read_pool if self.read_pool is not None else self.pool


def services(request: Request) -> Services:
    """The app's :class:`Services` (set by ``build_app``)."""
    return cast(Services, request.app.state.services)


Svc = Annotated[Services, Depends(services)]


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    """What a request was authenticated with: an API token or a web session's secret."""

    kind: Literal["token", "session"]
    secret: str

    async def who(self, conn: Conn, web: WebConfig) -> Clinician | None:
        """Who it names now; None once revoked, expired, signed out or idle.

        Never the person's activity (a session's idle clock goes on): a long-lived
        response (the live stream) asks this to end when its credential has.
        """
        if self.kind == "token":
            return await authenticate(conn, self.secret)
        found = await auth.session(conn, self.secret, web, touch=False)
        return None if found is None else found.clinician


def credential(request: Request) -> Credential:
    """The credential :func:`clinician` authenticated the request with (it ran first)."""
    return cast(Credential, request.state.credential)


#: Methods that change nothing: a browser's session cookie needs no CSRF token for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The header the web app's background refreshes carry: not the person's activity, so
#: they do not hold an idle session open (:func:`homemonitor.api.auth.session`).
BACKGROUND_HEADER = "X-HM-Background"


async def clinician(
    request: Request,
    svc: Svc,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    secret: Annotated[str | None, Depends(_session_cookie)],
) -> Clinician:
    """The clinician the bearer token or the web session cookie belongs to, or 401.

    A request authenticated by the cookie that changes anything must carry the session's
    CSRF token in ``X-CSRF-Token`` (403 otherwise): another site can make a browser send
    the cookie, not read the token. Refusals are counted, not access-logged.
    """
    if creds is not None:
        async with svc.pool.acquire() as conn:
            who = await authenticate(conn, creds.credentials)
        if who is None:
            raise _unauthenticated(svc, "unknown, expired or revoked token")
        request.state.credential = Credential("token", creds.credentials)
        return who
    if secret is None:
        raise _unauthenticated(svc, "send 'Authorization: Bearer <token>'")
    touch = BACKGROUND_HEADER.lower() not in request.headers
    async with svc.pool.acquire() as conn:
        found = await auth.session(conn, secret, svc.web, touch=touch)
    if found is None:
        raise _unauthenticated(svc, "the web session has ended; sign in again")
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        request.headers.get("X-CSRF-Token", ""), found.csrf
    ):
        svc.metrics.api_denied.labels("csrf").inc()
        raise HTTPException(403, "a request with the session cookie needs its X-CSRF-Token")
    request.state.web_session = found
    request.state.credential = Credential("session", secret)
    return found.clinician


def _unauthenticated(svc: Services, detail: str) -> HTTPException:
    svc.metrics.api_denied.labels("unauthenticated").inc()
    return HTTPException(401, detail, {"WWW-Authenticate": "Bearer"})


Me = Annotated[Clinician, Depends(clinician)]


#: The registry role that may use the ops routes.
OPS_ROLE = "ops"


async def ops(svc: Svc, who: Me) -> Clinician:
    """The clinician asking if their role is ``ops``; anyone else 403 (counted as ``role``).

    Ops routes show no patient data, so a refusal is not access-logged (as a 401 is not).
    """
    if who.role != OPS_ROLE:
        svc.metrics.api_denied.labels("role").inc()
        raise HTTPException(403, "this route is for the ops role")
    return who


Ops = Annotated[Clinician, Depends(ops)]
