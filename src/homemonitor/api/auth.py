"""Who is asking: one authentication mechanism, two credentials.

A machine client sends an API token (``Authorization: Bearer hm_...``); a browser sends the
web session cookie its sign-in set (:mod:`homemonitor.web.session`). Both name a
:class:`Clinician`; :func:`homemonitor.api.deps.clinician` accepts either.

Tokens and session secrets are 256-bit random strings stored only as a SHA-256 hash: with
that much entropy a fast hash is the right tool (there is no password to brute-force), and a
stolen database opens nothing. Tokens may expire (``expires_at``) and are revoked by id
(``homemonitor token list|revoke``). A web session ends at logout, after
:attr:`WebConfig.idle` without the person doing anything, or :attr:`WebConfig.max_age` after
sign-in, whichever is first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from homemonitor.storage.database import Conn

if TYPE_CHECKING:
    from homemonitor.settings import Settings

TOKEN_PREFIX = "hm_"  # noqa: S105 - a prefix that makes leaked tokens greppable, not a secret

#: The cookie that carries a web session's secret (HttpOnly, Secure, SameSite=Lax).
SESSION_COOKIE = "hm_session"


@dataclasses.dataclass(frozen=True, slots=True)
class Clinician:
    """Who a token belongs to: a clinician of a care team, in a role (``clinician``, ``ops``)."""

    id: str
    care_team_id: str
    name: str
    #: The registry's ``role``: ``ops`` may use the ops routes (the quarantine).
    role: str = "clinician"


@dataclasses.dataclass(frozen=True, slots=True)
class OidcConfig:
    """The region's OpenID provider, as this service is registered with it (docs/web.md)."""

    issuer: str
    client_id: str
    #: None: a public client (PKCE alone); else sent as client_secret_basic.
    client_secret: str | None
    #: This service's callback, exactly as registered: ``https://<host>/auth/callback``.
    redirect_url: str
    #: The ID token claim that holds the clinician's HSA id (Inera's IdP: employeeHsaId).
    hsa_claim: str = "employeeHsaId"
    scope: str = "openid"


@dataclasses.dataclass(frozen=True, slots=True)
class WebConfig:
    """How people sign in to the web app (``HOMEMONITOR_WEB_*``, ``HOMEMONITOR_OIDC_*``)."""

    oidc: OidcConfig | None = None
    #: The demo-only login (pick a clinician, no identity check); only without ``oidc``.
    demo_login: bool = False
    idle: timedelta = timedelta(minutes=30)
    max_age: timedelta = timedelta(hours=12)
    #: How often the Inbox refreshes when there is no live stream.
    poll_seconds: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebConfig:
        """The web app's sign-in as the settings say."""
        oidc = None
        if settings.oidc_issuer is not None:
            assert settings.oidc_client_id and settings.oidc_redirect_url  # the settings check
            secret = settings.oidc_client_secret
            oidc = OidcConfig(
                issuer=settings.oidc_issuer,
                client_id=settings.oidc_client_id,
                client_secret=None if secret is None else secret.get_secret_value(),
                redirect_url=settings.oidc_redirect_url,
                hsa_claim=settings.oidc_hsa_claim,
                scope=settings.oidc_scope,
            )
        return cls(
            oidc=oidc,
            demo_login=settings.web_demo_login,
            idle=timedelta(minutes=settings.web_idle_minutes),
            max_age=timedelta(hours=settings.web_session_hours),
            poll_seconds=settings.web_poll_seconds,
        )

    @property
    def demo(self) -> bool:
        """Whether the demo-only login is offered: asked for, and no identity provider."""
        return self.demo_login and self.oidc is None


@dataclasses.dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: who, the CSRF token its state changes must carry, and how."""

    clinician: Clinician
    csrf: str
    via: str
    id_token: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as ``token list`` shows it: never the token itself."""

    id: int
    clinician_id: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def digest(secret: str) -> bytes:
    """The SHA-256 a token, session secret or OIDC ``state`` is stored and found by."""
    return hashlib.sha256(secret.encode()).digest()


async def issue_token(
    conn: Conn, clinician_id: str, label: str = "", *, expires_in: timedelta | None = None
) -> str:
    """Create a token for ``clinician_id`` and return it (the only time it is visible).

    ``expires_in``: it stops working that long from now (none: until revoked).
    """
    exists = await conn.fetchval("SELECT 1 FROM clinicians WHERE id = $1", clinician_id)
    if not exists:
        msg = f"no clinician {clinician_id!r}; apply a registry that describes them first"
        raise LookupError(msg)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, clinician_id, label, expires_at) "
        "VALUES ($1, $2, $3, now() + $4::interval)",
        digest(token),
        clinician_id,
        label,
        expires_in,
    )
    return token


async def list_tokens(conn: Conn, clinician_id: str | None = None) -> list[TokenInfo]:
    """Every token (of one clinician, if given), oldest first, revoked and expired too."""
    rows = await conn.fetch(
        "SELECT id, clinician_id, label, created_at, expires_at, revoked_at FROM api_tokens "
        "WHERE $1::text IS NULL OR clinician_id = $1 ORDER BY id",
        clinician_id,
    )
    return [TokenInfo(**dict(r)) for r in rows]


async def revoke_token(conn: Conn, token_id: int) -> bool:
    """Revoke the token with this id; False if there is none or it was revoked already."""
    done = await conn.fetchval(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL "
        "RETURNING id",
        token_id,
    )
    return done is not None


async def authenticate(conn: Conn, token: str) -> Clinician | None:
    """The clinician a token belongs to, or None for an unknown, revoked or expired token."""
    row = await conn.fetchrow(
        "SELECT c.id, c.care_team_id, c.name, c.role FROM api_tokens t "
        "JOIN clinicians c ON c.id = t.clinician_id "
        "WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > now())",
        digest(token),
    )
    return Clinician(row["id"], row["care_team_id"], row["name"], row["role"]) if row else None


async def clinician_by_hsa_id(conn: Conn, hsa_id: str) -> str | None:
    """The id of the clinician the registry gives this HSA id, if any."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        "SELECT id FROM clinicians WHERE hsa_id = $1", hsa_id
    )


async def open_session(
    conn: Conn, clinician_id: str, via: str, *, id_token: str | None = None
) -> tuple[str, str]:
    """Start a web session for the clinician; return its cookie secret and CSRF token.

    Also forgets sessions that ended or went idle more than a day ago (they open nothing).
    """
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute(
        "DELETE FROM web_sessions WHERE last_seen_at < now() - interval '1 day' "
        "OR ended_at < now() - interval '1 day'"
    )
    await conn.execute(
        "INSERT INTO web_sessions (secret_sha256, clinician_id, csrf, via, id_token) "
        "VALUES ($1, $2, $3, $4, $5)",
        digest(secret),
        clinician_id,
        csrf,
        via,
        id_token,
    )
    return secret, csrf


async def session(
    conn: Conn, secret: str, config: WebConfig, *, touch: bool = True
) -> WebSession | None:
    """The live session the cookie secret opens, or None (unknown, ended, idle, too old).

    ``touch`` counts the request as the person's activity (the idle clock starts again);
    the inbox's background refreshes do not, or an open tab would never go idle.
    """
    row = await conn.fetchrow(
        "UPDATE web_sessions s SET last_seen_at = CASE WHEN $4 THEN now() ELSE last_seen_at END "
        "FROM clinicians c WHERE s.secret_sha256 = $1 AND c.id = s.clinician_id "
        "AND s.ended_at IS NULL AND s.last_seen_at > now() - $2::interval "
        "AND s.created_at > now() - $3::interval "
        "RETURNING c.id, c.care_team_id, c.name, c.role, s.csrf, s.via, s.id_token",
        digest(secret),
        config.idle,
        config.max_age,
        touch,
    )
    if row is None:
        return None
    who = Clinician(row["id"], row["care_team_id"], row["name"], row["role"])
    return WebSession(who, row["csrf"], row["via"], row["id_token"])


async def end_session(conn: Conn, secret: str) -> str | None:
    """End the session (logout); return its ID token (for the provider's logout), if any."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        "UPDATE web_sessions SET ended_at = now() WHERE secret_sha256 = $1 "
        "AND ended_at IS NULL RETURNING coalesce(id_token, '')",
        digest(secret),
    )
