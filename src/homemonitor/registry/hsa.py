"""Clinicians' HSA ids from the registry (``clinicians[].hsa_id``): whom single sign-on names."""

from __future__ import annotations

from collections import Counter

from homemonitor.errors import RegistryError
from homemonitor.storage.database import Conn


async def store(conn: Conn, ids: list[tuple[str, str | None]]) -> None:
    """Set the described clinicians' HSA ids (None clears one), in the caller's transaction.

    Cleared first, so an id moving from one clinician to another in one apply does not trip
    the unique constraint on the way. An id given to two clinicians is refused.
    """
    twice = sorted(h for h, n in Counter(h for _, h in ids if h is not None).items() if n > 1)
    if twice:
        msg = f"HSA id given to more than one clinician: {', '.join(twice)}"
        raise RegistryError(msg)
    await conn.execute(
        "UPDATE clinicians SET hsa_id = NULL WHERE id = ANY($1::text[])", [c for c, _ in ids]
    )
    await conn.executemany(
        "UPDATE clinicians SET hsa_id = $2 WHERE id = $1", [i for i in ids if i[1] is not None]
    )
