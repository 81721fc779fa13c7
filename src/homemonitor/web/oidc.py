"""Single sign-on: this service as an OpenID Connect relying party (authorization code + PKCE).

The flow (OpenID Connect Core 1.0 §3.1, RFC 7636):

1. ``/login/sso`` makes a random ``state`` (the key of this sign-in, stored hashed in
   ``web_logins`` with the PKCE ``code_verifier``, a ``nonce`` and the path to return to)
   and sends the browser to the provider's ``authorization_endpoint`` with
   ``code_challenge = BASE64URL(SHA256(code_verifier))`` (S256 only).
2. The provider signs the person in (SITHS eID at Inera's IdP) and sends the browser to
   ``/auth/callback?code=...&state=...``. The state is looked up and deleted (it works
   once, for ten minutes); an unknown one is refused.
3. The code is exchanged at the ``token_endpoint`` with the verifier (client_secret_basic,
   or PKCE alone for a public client). The ID token is checked: its signature by a key of
   the provider's JWKS (RS256/PS256/ES256; never ``none`` or HMAC), ``iss`` exactly the
   configured issuer, ``aud`` our client id (``azp`` too when there are several
   audiences), ``exp`` in the future, ``iat`` not in it, and ``nonce`` the one of step 1.
4. The HSA id claim (``HOMEMONITOR_OIDC_HSA_CLAIM``) names the clinician
   (``clinicians.hsa_id`` from the registry); a session starts.

Discovery (``/.well-known/openid-configuration``) is read once and its ``issuer`` must be
the configured one; the JWKS is read once and again when an ID token names a key it does
not have (the provider rotated its keys), at most once a minute. The cryptography is
joserfc's; docs/web.md says why this library.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from homemonitor.api.auth import OidcConfig, digest
from homemonitor.errors import HomemonitorError
from homemonitor.storage.database import Conn

#: Asymmetric signatures only: an HMAC "signature" with the client secret, or none, proves
#: nothing about the provider.
ALGORITHMS = ("RS256", "PS256", "ES256")
#: How long a sign-in may take at the provider.
LOGIN_TTL_S = 600
#: Clock skew allowed on exp/iat (seconds).
LEEWAY_S = 60
_JWKS_MIN_INTERVAL_S = 60.0


class SignInError(HomemonitorError):
    """Single sign-on failed; the message says why (for the log: no token, no claims)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Started:
    """A sign-in on its way to the provider."""

    url: str


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Whom the provider signed in: the HSA id, and the ID token (for logout)."""

    hsa_id: str
    subject: str
    id_token: str


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2).

    >>> s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")  # the RFC's Appendix B
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
    """
    sha = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(sha).rstrip(b"=").decode("ascii")


class OidcClient:
    """The relying party of one provider; one per app (``app.state.oidc``)."""

    def __init__(self, config: OidcConfig, *, keys: KeySet | None = None) -> None:
        """``keys``: trust these instead of the provider's JWKS (tests of the checks)."""
        self.config = config
        self._metadata: dict[str, Any] | None = None
        self._pinned = keys
        self._keys: KeySet | None = keys
        self._keys_at = 0.0

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached); its issuer must be ours exactly."""
        if self._metadata is None:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            found = await self._get_json(url)
            if found.get("issuer") != self.config.issuer:
                msg = "the discovery document names another issuer"
                raise SignInError(msg)
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(found.get(key), str):
                    msg = f"the discovery document has no {key}"
                    raise SignInError(msg)
            self._metadata = found
        return self._metadata

    async def start(self, conn: Conn, next_path: str) -> Started:
        """Record a new sign-in and return the provider URL to send the browser to."""
        meta = await self.metadata()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 asks 43 to 128
        await conn.execute(
            "DELETE FROM web_logins WHERE created_at < now() - make_interval(secs => $1)",
            LOGIN_TTL_S,
        )
        await conn.execute(
            "INSERT INTO web_logins (state_sha256, code_verifier, nonce, next_path) "
            "VALUES ($1, $2, $3, $4)",
            digest(state),
            verifier,
            nonce,
            next_path,
        )
        hsa = self.config.hsa_claim
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_url,
            "scope": self.config.scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            # OpenID Connect Core §5.5: ask for the HSA id in the ID token itself.
            "claims": f'{{"id_token":{{"{hsa}":{{"essential":true}}}}}}',
        }
        sep = "&" if "?" in meta["authorization_endpoint"] else "?"
        return Started(meta["authorization_endpoint"] + sep + urlencode(query))

    async def finish(self, conn: Conn, code: str, state: str) -> tuple[Identity, str]:
        """Complete the sign-in the provider returned: the identity and the path to go to."""
        row = await conn.fetchrow(
            "DELETE FROM web_logins WHERE state_sha256 = $1 "
            "AND created_at > now() - make_interval(secs => $2) "
            "RETURNING code_verifier, nonce, next_path",
            digest(state),
            LOGIN_TTL_S,
        )
        if row is None:
            msg = "unknown or expired state (a sign-in works once, within ten minutes)"
            raise SignInError(msg)
        tokens = await self._exchange(code, row["code_verifier"])
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            msg = "the token response has no ID token"
            raise SignInError(msg)
        claims = await self.validate(id_token, row["nonce"])
        hsa_id = claims.get(self.config.hsa_claim)
        if not isinstance(hsa_id, str) or not hsa_id:
            msg = f"the ID token has no {self.config.hsa_claim} claim"
            raise SignInError(msg)
        return Identity(hsa_id, str(claims["sub"]), id_token), row["next_path"]

    async def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, if its signature, issuer, audience, times and nonce hold."""
        keys = await self._key_set(refresh=False)
        try:
            try:
                token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            except InvalidKeyIdError:  # rotated keys: read the JWKS again, once
                keys = await self._key_set(refresh=True)
                token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            JWTClaimsRegistry(
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.config.issuer},
                aud={"essential": True, "value": self.config.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            msg = f"the ID token was refused ({type(exc).__name__})"
            raise SignInError(msg) from exc
        claims = token.claims
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.config.client_id:
            msg = "the ID token is for several audiences and not authorised for us (azp)"
            raise SignInError(msg)
        return claims

    async def logout_url(self, id_token: str | None, after: str) -> str | None:
        """The provider's logout (RP-initiated logout 1.0), if it has one; back to ``after``."""
        try:
            meta = await self.metadata()
        except (SignInError, httpx.HTTPError):
            return None
        end = meta.get("end_session_endpoint")
        if not isinstance(end, str):
            return None
        query = {"client_id": self.config.client_id, "post_logout_redirect_uri": after}
        if id_token:
            query["id_token_hint"] = id_token
        return end + ("&" if "?" in end else "?") + urlencode(query)

    async def _exchange(self, code: str, verifier: str) -> dict[str, Any]:
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "code_verifier": verifier,
        }
        auth: httpx.BasicAuth | None = None
        if self.config.client_secret is None:
            form["client_id"] = self.config.client_id  # a public client: PKCE alone
        else:  # RFC 6749 §2.3.1: both form-urlencoded, then Basic
            auth = httpx.BasicAuth(
                quote_plus(self.config.client_id), quote_plus(self.config.client_secret)
            )
        try:
            async with _client() as http:
                response = await http.post(
                    meta["token_endpoint"], data=form, auth=auth or httpx.USE_CLIENT_DEFAULT
                )
        except httpx.HTTPError as exc:
            msg = f"the token endpoint did not answer ({type(exc).__name__})"
            raise SignInError(msg) from exc
        if response.status_code != 200:
            error = _json_or_empty(response).get("error", "")
            msg = f"the token endpoint refused the code ({response.status_code} {error})"
            raise SignInError(msg)
        return _json_or_empty(response)

    async def _key_set(self, *, refresh: bool) -> KeySet:
        now = time.monotonic()
        stale = refresh and now - self._keys_at > _JWKS_MIN_INTERVAL_S
        if self._keys is None or (stale and self._pinned is None):
            meta = await self.metadata()
            found = await self._get_json(meta["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(found)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                msg = "the provider's JWKS is not a key set"
                raise SignInError(msg) from exc
            self._keys_at = now
        return self._keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with _client() as http:
                response = await http.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            msg = f"the provider did not answer at {url} ({type(exc).__name__})"
            raise SignInError(msg) from exc
        found = _json_or_empty(response)
        if not found:
            msg = f"the provider's {url} is not a JSON object"
            raise SignInError(msg)
        return found


def _client() -> httpx.AsyncClient:
    """A client for one exchange with the provider: no redirects, 10 s at most."""
    return httpx.AsyncClient(timeout=10.0, follow_redirects=False)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
