"""Clinician API tokens: random, shown once, stored only as a SHA-256 hash.

Tokens are 256-bit random strings, so a fast hash is the right tool (there is no
password to brute-force); a stolen database does not yield usable tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

from homemonitor.storage.database import Conn

TOKEN_PREFIX = "hm_"  # noqa: S105 - a prefix that makes leaked tokens greppable, not a secret


@dataclasses.dataclass(frozen=True, slots=True)
class Clinician:
    """Who a token belongs to: a clinician of a care team, in a role (``clinician``, ``ops``)."""

    id: str
    care_team_id: str
    name: str
    #: The registry's ``role``: ``ops`` may use the ops routes (the quarantine).
    role: str = "clinician"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue_token(conn: Conn, clinician_id: str, label: str = "") -> str:
    """Create a token for ``clinician_id`` and return it (the only time it is visible)."""
    exists = await conn.fetchval("SELECT 1 FROM clinicians WHERE id = $1", clinician_id)
    if not exists:
        msg = f"no clinician {clinician_id!r}; apply a registry that describes them first"
        raise LookupError(msg)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, clinician_id, label) VALUES ($1, $2, $3)",
        _digest(token),
        clinician_id,
        label,
    )
    return token


async def authenticate(conn: Conn, token: str) -> Clinician | None:
    """The clinician a token belongs to, or None for an unknown or revoked token."""
    row = await conn.fetchrow(
        "SELECT c.id, c.care_team_id, c.name, c.role FROM api_tokens t "
        "JOIN clinicians c ON c.id = t.clinician_id "
        "WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL",
        _digest(token),
    )
    return Clinician(row["id"], row["care_team_id"], row["name"], row["role"]) if row else None
