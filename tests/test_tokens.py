"""API tokens for machine clients: issued with an expiry, listed, revoked, from the CLI."""

from __future__ import annotations

import asyncio

import asyncpg

from homemonitor import registry
from tests.conftest import REGISTRY, web_client
from tests.test_cli import run


async def test_tokens_expire_are_listed_and_revoked(db: asyncpg.Connection, dsn: str) -> None:
    await registry.apply(db, registry.parse(REGISTRY))

    async def cli(*argv: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(run, "token", *argv, "--database-url", dsn)
        return done.returncode, done.stdout.strip(), done.stderr.strip()

    _, short, _ = await cli("issue", "cl-a1", "--label", "lab system", "--expires-in", "30m")
    _, lasting, _ = await cli("issue", "cl-b1", "--label", "nightly export")
    bad = await cli("issue", "cl-a1", "--expires-in", "soon")
    async with web_client(dsn) as (http, _):

        async def status(token: str) -> int:
            answer = await http.get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"})
            return answer.status_code

        before = (await status(short), await status(lasting))
        await db.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 s' WHERE label = 'lab system'"
        )
        lasting_id = await db.fetchval("SELECT id FROM api_tokens WHERE label = 'nightly export'")
        revoked = await cli("revoke", str(lasting_id))
        again = await cli("revoke", str(lasting_id))
        after = (await status(short), await status(lasting))
    _, listed, _ = await cli("list")
    _, only_a1, _ = await cli("list", "--clinician", "cl-a1")

    assert short.startswith("hm_") and lasting.startswith("hm_")
    assert 2 == bad[0] and "not a duration such as 30m" in bad[2]
    assert (200, 200) == before
    assert (0, f"revoked token {lasting_id}") == revoked[:2]
    assert 0 != again[0] and "no active token" in again[2]
    assert (401, 401) == after
    rows = [line.split("\t") for line in listed.splitlines()]
    assert ["id", "clinician", "state", "created", "expires", "label"] == rows[0]
    assert [("cl-a1", "expired", "lab system"), ("cl-b1", "revoked", "nightly export")] == [
        (r[1], r[2], r[5]) for r in rows[1:]
    ]
    assert rows[2][4] == "never"
    assert short not in listed and lasting not in listed  # a token is shown once, at issue
    assert ["cl-a1"] == [line.split("\t")[1] for line in only_a1.splitlines()[1:]]
