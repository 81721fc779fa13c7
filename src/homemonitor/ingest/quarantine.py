"""Quarantined messages: listed, inspected, and replayed through the whole pipeline.

A message is quarantined with its raw bytes, so nothing it said is lost: once the cause
is fixed (a device registered a day late, a pairing or binding corrected) :func:`replay`
sends it through the same steps as a message from the broker -- decode, validate, resolve,
store, evaluate the care plan -- in the same batch transaction
(:func:`homemonitor.storage.transaction.commit`). Storage is idempotent, so a replayed
reading is stored once however often it is replayed. The quarantine row stays as the
record of what arrived and says when it was replayed, by whom and what became of it:
``stored``, or the reason it is still refused.

Listing shows what ops need to find the cause (reason, detail, gateway, device, time,
size); the raw payload holds measured values and is shown only on request
(``homemonitor quarantine show ID --payload``), never by the API.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from homemonitor import logs
from homemonitor.ingest.pipeline import Inbound, prepare
from homemonitor.ingest.validation import ClockPolicy
from homemonitor.registry import RegistryCache
from homemonitor.storage import transaction
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)

#: The outcome of a replayed row whose reading is now in ``readings``.
STORED = "stored"


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """Which quarantine rows: every field that is set must match."""

    ids: Sequence[int] = ()
    reason: str | None = None
    gateway_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only rows never replayed, or whose last replay did not store them.
    pending: bool = False

    def where(self) -> tuple[str, list[object]]:
        """The SQL condition and its arguments ($1...)."""
        clauses, args = [], []

        def add(sql: str, value: object) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if self.ids:
            add("id = ANY(?::bigint[])", list(self.ids))
        if self.reason is not None:
            add("reason = ?", self.reason)
        if self.gateway_id is not None:
            add("gateway_id = ?", self.gateway_id)
        if self.since is not None:
            add("received_at >= ?", self.since)
        if self.until is not None:
            add("received_at < ?", self.until)
        if self.pending:
            clauses.append(f"replay_outcome IS DISTINCT FROM '{STORED}'")
        return (" AND ".join(clauses) or "true"), args


_COLUMNS = (
    "id, received_at, topic, gateway_id, reason, detail, item_index, device_id, "
    "length(payload) AS size, encode(payload_sha256, 'hex') AS sha256, replayed_at, "
    "replayed_by, replay_outcome, replay_count"
)


async def rows(conn: Conn, which: Filter, *, limit: int = 100) -> list[dict[str, object]]:
    """Quarantine rows matching ``which``, newest first, without their payloads."""
    where, args = which.where()
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM quarantine WHERE {where} "
        f"ORDER BY received_at DESC, id DESC LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [dict(r) for r in records]


async def counts(conn: Conn, which: Filter) -> list[dict[str, object]]:
    """How many rows match ``which``, by reason, with the oldest and newest arrival."""
    where, args = which.where()
    records = await conn.fetch(
        "SELECT reason, count(*) AS rows, min(received_at) AS oldest, "
        f"max(received_at) AS newest FROM quarantine WHERE {where} "
        "GROUP BY reason ORDER BY count(*) DESC, reason",
        *args,
    )
    return [dict(r) for r in records]


async def payload(conn: Conn, row_id: int) -> tuple[str, bytes] | None:
    """The topic and raw payload of quarantine row ``row_id``, or None."""
    record = await conn.fetchrow("SELECT topic, payload FROM quarantine WHERE id = $1", row_id)
    return (record["topic"], bytes(record["payload"])) if record else None


@dataclasses.dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    messages: int = 0
    rows: int = 0
    stored: int = 0  # readings new in ``readings``
    already_stored: int = 0  # readings that were there already (stored once)
    still_refused: Counter[str] = dataclasses.field(default_factory=Counter)  # rows by reason
    opened: Counter[str] = dataclasses.field(default_factory=Counter)  # alerts by severity


_MESSAGES = """
SELECT payload_sha256, min(topic) AS topic, min(received_at) AS received_at,
       (array_agg(payload))[1] AS payload, array_agg(id ORDER BY id) AS ids,
       array_agg(item_index ORDER BY id) AS items
FROM quarantine WHERE {where}
GROUP BY payload_sha256 ORDER BY min(received_at), payload_sha256
"""

_RECORD = """
UPDATE quarantine AS q SET replayed_at = clock_timestamp(), replayed_by = $3,
       replay_outcome = o.outcome, replay_count = q.replay_count + 1
FROM unnest($1::bigint[], $2::text[]) AS o(id, outcome) WHERE q.id = o.id
"""


async def replay(
    conn: Conn,
    which: Filter,
    *,
    by: str,
    clock: ClockPolicy,
    max_payload_bytes: int,
    progress: Callable[[int, int], None] | None = None,
) -> ReplaySummary:
    """Replay every quarantined message that ``which`` matches, one transaction each.

    The registry is read once, now, so the replay sees every fix applied before it. A
    message with several quarantined readings is replayed once; each of its rows records
    its own outcome. ``by`` names who replayed (an ops user, a clinician id).
    """
    where, args = which.where()
    messages = await conn.fetch(_MESSAGES.format(where=where), *args)
    cache = RegistryCache()
    await cache.load(conn)
    summary = ReplaySummary()
    for done, m in enumerate(messages, 1):
        inbound = Inbound(m["topic"], bytes(m["payload"]), m["received_at"], 0.0)
        batch = prepare([inbound], cache, clock, max_payload_bytes, datetime.now(UTC))
        refused = {q.rejection.index: q.rejection.reason.value for q in batch.quarantined}
        indexes = {c.reading.index for c in batch.candidates}
        batch.quarantined = []  # its rows exist; they record the outcome instead
        outcomes = [
            STORED
            if (item in indexes if item >= 0 else bool(indexes))
            else refused.get(item if item >= 0 else None) or _first(refused)
            for item in m["items"]
        ]
        async with conn.transaction():
            result = await transaction.commit(conn, batch, cache.plans)
            await conn.execute(_RECORD, m["ids"], outcomes, by)
        summary.messages += 1
        summary.rows += len(outcomes)
        summary.stored += result.stored
        summary.already_stored += result.duplicates
        summary.opened.update(result.opened)
        summary.still_refused.update(o for o in outcomes if o != STORED)
        if progress is not None:
            progress(done, len(messages))
    log.info(
        "quarantine replayed",
        messages=summary.messages,
        rows=summary.rows,
        stored=summary.stored,
        already_stored=summary.already_stored,
        still_refused=dict(summary.still_refused),
    )
    return summary


def _first(refused: dict[int | None, str]) -> str:
    """The reason a message yielded nothing at all (or ``missing_value`` if it said none)."""
    return next(iter(refused.values()), "missing_value")
