"""Single sign-on against a real, certified OpenID provider (panva's oidc-provider on Node),
and what a session may do: CSRF, idle timeout, logout, the API by cookie."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from homemonitor import registry
from homemonitor.api.auth import OidcConfig
from homemonitor.embedded import free_port
from homemonitor.errors import RegistryError
from homemonitor.web.oidc import OidcClient, SignInError
from tests.conftest import (
    REGISTRY,
    OidcProvider,
    provider_sign_in,
    sign_in,
    web_client,
)
from tests.test_web import _alert


@pytest.fixture
async def clinic(db: asyncpg.Connection) -> asyncpg.Connection:
    """The test registry with Nurse A1 (cl-a1) known by the HSA id the provider gives anna."""
    described = json.loads(json.dumps(REGISTRY))
    described["care_teams"][0]["clinicians"][0]["hsa_id"] = "SE2321000016-1001"
    await registry.apply(db, registry.parse(described))
    return db


async def test_sign_in_through_the_provider(
    clinic: asyncpg.Connection, dsn: str, oidc_provider: OidcProvider
) -> None:
    """Code + PKCE through the provider's own pages → a session of the clinician of that
    HSA id, and back to the page asked for; the callback cannot be replayed."""
    await _alert(clinic, 1, "p-1", "urgent")
    async with web_client(dsn, oidc=oidc_provider.config(), demo_login=True) as (http, _):
        login = await http.get("/login")
        start = await http.get("/login/sso", params={"next": "/inbox/rows"})
        query = parse_qs(urlsplit(start.headers["location"]).query)
        back = await provider_sign_in(http, oidc_provider, "anna", "/inbox/rows")
        rows = await http.get("/inbox/rows")
        replay = await http.get(back.request.url.raw_path.decode())
    assert "Logga in med e-tjänstekort (SITHS)" in login.text
    assert "Demoinloggning" not in login.text  # never with an identity provider
    assert (["S256"], ["code"]) == (query["code_challenge_method"], query["response_type"])
    assert {"state", "nonce", "code_challenge"} <= query.keys()
    assert (303, "/inbox/rows") == (back.status_code, back.headers["location"])
    assert "Larm 1 för patient p-1" in rows.text
    session = await clinic.fetchrow("SELECT clinician_id, via, id_token FROM web_sessions")
    assert ("cl-a1", "oidc") == (session["clinician_id"], session["via"])
    assert session["id_token"].count(".") == 2
    assert (303, "/login?error=failed") == (replay.status_code, replay.headers["location"])


async def test_a_person_the_registry_does_not_know_gets_no_session(
    clinic: asyncpg.Connection, dsn: str, oidc_provider: OidcProvider
) -> None:
    async with web_client(dsn, oidc=oidc_provider.config()) as (http, _):
        stranger = await provider_sign_in(http, oidc_provider, "stranger")
        nohsa = await provider_sign_in(http, oidc_provider, "nohsa")
        page = await http.get(stranger.headers["location"])
        inbox = await http.get("/")
    assert "/login?error=unknown_person" == stranger.headers["location"]
    assert "/login?error=failed" == nohsa.headers["location"]
    assert "ditt HSA-id finns inte" in page.text
    assert (303, 0) == (
        inbox.status_code,
        await clinic.fetchval("SELECT count(*) FROM web_sessions"),
    )


async def test_a_forged_state_is_refused(
    clinic: asyncpg.Connection, dsn: str, oidc_provider: OidcProvider
) -> None:
    async with web_client(dsn, oidc=oidc_provider.config()) as (http, _):
        await http.get("/login/sso")
        forged = await http.get("/auth/callback", params={"code": "x", "state": "forged"})
    assert (303, "/login?error=failed") == (forged.status_code, forged.headers["location"])


async def test_logout_ends_the_session_here_and_at_the_provider(
    clinic: asyncpg.Connection, dsn: str, oidc_provider: OidcProvider
) -> None:
    async with web_client(dsn, oidc=oidc_provider.config()) as (http, _):
        await provider_sign_in(http, oidc_provider, "anna")
        page = await http.get("/")
        csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        refused = await http.post("/logout", data={"csrf": "wrong"})
        out = await http.post("/logout", data={"csrf": csrf})
        after = await http.get("/")
    assert 403 == refused.status_code
    to = urlsplit(out.headers["location"])
    assert f"{to.scheme}://{to.netloc}{to.path}" == oidc_provider.issuer + "/session/end"
    assert parse_qs(to.query)["post_logout_redirect_uri"] == [
        "https://testserver/login?error=ended"
    ]
    assert "id_token_hint" in parse_qs(to.query)
    assert 303 == after.status_code
    assert await clinic.fetchval("SELECT ended_at IS NOT NULL FROM web_sessions")


def _token(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": "https://idp.example", "aud": "hm", "sub": "s", "iat": now, "exp": now + 60}
    base |= {"nonce": "n-1"}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, base | claims, key)


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"nonce": "another"}, "nonce of another sign-in"),
        ({"aud": "another-client"}, "for another client"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": ["hm", "other"]}, "several audiences, no azp"),
    ],
)
async def test_id_token_checks(claims: dict[str, Any], why: str) -> None:
    key = RSAKey.generate_key(2048, {"kid": "k1"}, private=True)
    client = OidcClient(
        OidcConfig("https://idp.example", "hm", None, "https://hm/auth/callback"),
        keys=KeySet([key]),
    )
    assert (await client.validate(_token(key), "n-1"))["sub"] == "s"
    with pytest.raises(SignInError):
        await client.validate(_token(key, **claims), "n-1")


async def test_id_token_signed_by_another_key_or_none_is_refused() -> None:
    trusted = RSAKey.generate_key(2048, {"kid": "k1"}, private=True)
    other = RSAKey.generate_key(2048, {"kid": "k1"}, private=True)
    client = OidcClient(
        OidcConfig("https://idp.example", "hm", None, "https://hm/auth/callback"),
        keys=KeySet([trusted]),
    )
    header, body, _ = _token(trusted).split(".")
    none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    unsigned = f"{none}.{body}."
    for token in (_token(other), f"{header}.{body}.", unsigned):
        with pytest.raises(SignInError):
            await client.validate(token, "n-1")


async def test_the_api_takes_the_session_cookie_with_its_csrf_token(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """One mechanism, two credentials: a cookie reads; a change also needs X-CSRF-Token."""
    await _alert(clinic, 1, "p-1", "urgent")
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-a1")
        listed = await http.get("/api/v1/alerts")
        forged = await http.post("/api/v1/alerts/1/acknowledge")
        wrong = await http.post("/api/v1/alerts/1/acknowledge", headers={"X-CSRF-Token": "x"})
        acked = await http.post("/api/v1/alerts/1/acknowledge", headers={"X-CSRF-Token": csrf})
    assert 200 == listed.status_code, listed.text
    assert [1] == [a["id"] for a in listed.json()]
    assert (403, 403) == (forged.status_code, wrong.status_code)
    assert ("acknowledged", "cl-a1") == (acked.json()["status"], acked.json()["acknowledged_by"])
    logged = await clinic.fetch("SELECT action FROM access_log ORDER BY id")
    assert ["list_alerts", "acknowledge_alert"] == [r["action"] for r in logged]


async def test_an_idle_session_ends_and_background_refreshes_do_not_keep_it(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        await clinic.execute("UPDATE web_sessions SET last_seen_at = now() - interval '20 min'")
        background = await http.get("/inbox/rows", headers={"X-HM-Background": "1"})
        await clinic.execute(
            "UPDATE web_sessions SET last_seen_at = last_seen_at - interval '11 min'"
        )
        page = await http.get("/")
        api = await http.get("/api/v1/alerts")
    assert 200 == background.status_code
    assert (303, "/login?next=/") == (page.status_code, page.headers["location"])
    assert 401 == api.status_code


async def test_a_session_ends_at_its_age_however_busy(clinic: asyncpg.Connection, dsn: str) -> None:
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        await clinic.execute("UPDATE web_sessions SET created_at = now() - interval '13 hours'")
        page = await http.get("/")
    assert 303 == page.status_code


async def test_hsa_ids_come_from_the_registry_once_each(db: asyncpg.Connection) -> None:
    described = json.loads(json.dumps(REGISTRY))
    a1, b1 = (
        described["care_teams"][0]["clinicians"][0],
        described["care_teams"][1]["clinicians"][0],
    )
    a1["hsa_id"] = "SE2321000016-1001"
    await registry.apply(db, registry.parse(described))
    a1["hsa_id"], b1["hsa_id"] = None, "SE2321000016-1001"  # the id moves to another clinician
    await registry.apply(db, registry.parse(described))
    moved = dict(await db.fetch("SELECT id, hsa_id FROM clinicians WHERE hsa_id IS NOT NULL"))
    a1["hsa_id"] = "SE2321000016-1001"
    with pytest.raises(RegistryError, match="more than one clinician"):
        await registry.apply(db, registry.parse(described))
    a1["hsa_id"] = "anna@region"
    with pytest.raises(RegistryError, match="hsa_id"):
        registry.parse(described)
    assert {"cl-b1": "SE2321000016-1001"} == moved


async def test_a_provider_that_does_not_answer_is_a_message_not_an_error(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    down = OidcConfig(f"http://127.0.0.1:{free_port()}", "hm", None, "https://testserver/cb")
    async with web_client(dsn, oidc=down) as (http, _):
        start = await http.get("/login/sso")
        page = await http.get(start.headers["location"])
    assert (303, "/login?error=failed") == (start.status_code, start.headers["location"])
    assert "Inloggningen misslyckades. Försök igen." in page.text
