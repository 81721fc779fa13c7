"""The batch transaction: where a prepared batch becomes rows.

:func:`commit` is ONE transaction per batch: readings are inserted idempotently; only
readings that were really new are evaluation points for their patient's care plan
(:func:`homemonitor.alerts.episodes.evaluate_batch`: a redelivered reading evaluates
nothing, a clock-flagged one is history that never opens an episode); and everything
refused lands in quarantine with its reason and raw payload. The caller acknowledges the
batch's messages only after :func:`commit` returns, and with a synchronous standby that is
only once the standby has the batch, even when the batch is a retry that finds its rows
already there (:data:`_WAIT_FOR_STANDBY`). :func:`record_redelivered` and
:func:`count_delivery` keep the delivery counts of redelivered messages, each in a
transaction of its own.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from homemonitor.alerts import episodes
from homemonitor.contract.protocol import parse_topic
from homemonitor.contract.readings import ID_LIMIT, QUANTITIES, Reading, safe_text
from homemonitor.ingest.pipeline import Batch, Candidate, Inbound
from homemonitor.registry.cache import Plans
from homemonitor.rules.histories import Cached
from homemonitor.storage.database import Conn


@dataclasses.dataclass(slots=True)
class CommitResult:
    """What committing one batch (or, summed with :meth:`add`, many) did."""

    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    opened: Counter[str] = dataclasses.field(default_factory=Counter)  # by severity
    updated: int = 0
    flagged: Counter[str] = dataclasses.field(default_factory=Counter)  # by clock flag
    evaluated: int = 0  # patients whose plan the engine ran
    screened: int = 0  # patients let through unevaluated (plain screen, quiet envelope)

    def add(self, other: CommitResult) -> None:
        """Count ``other`` in as well (counters stay bounded by their few keys)."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.opened.update(other.opened)
        self.updated += other.updated
        self.flagged.update(other.flagged)
        self.evaluated += other.evaluated
        self.screened += other.screened


# The readings are inserted, then (same statement: one round trip) the episode lock of each
# patient with a care plan who got a new reading is taken, in one sorted order for every
# worker (:func:`homemonitor.alerts.episodes.lock_patients` takes the same locks); then,
# once every lock is held, each patient's count of stored readings grows by their new ones
# (``reading_counts``, migration 0020; in patient order, under the row's lock, which
# another writer's insert of the same patient waits for), and the new total comes back
# with each new reading: what the workers' history caches are checked against
# (:mod:`homemonitor.rules.histories`). This is the one statement that writes readings.
_INSERT_READINGS = f"""
WITH stored AS (
INSERT INTO readings (device_id, metric, measured_at, patient_id, received_at,
                      systolic, diastolic, mean_arterial, heart_rate, body_weight, spo2,
                      flags, source, gateway_id, message_id, quality)
SELECT r.device_id, r.metric, r.measured_at, r.patient_id, r.received_at,
       r.systolic, r.diastolic, r.mean_arterial, r.heart_rate, r.body_weight, r.spo2,
       coalesce(string_to_array(nullif(r.flags, ''), ','), '{{}}'), r.source, r.gateway_id,
       r.message_id, coalesce(string_to_array(nullif(r.quality, ''), ','), '{{}}')
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[],
            $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
            $11::float8[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[])
     AS r(device_id, metric, measured_at, patient_id, received_at,
          systolic, diastolic, mean_arterial, heart_rate, body_weight, spo2,
          flags, source, gateway_id, message_id, quality)
ON CONFLICT DO NOTHING
RETURNING device_id, metric, measured_at, patient_id
), locked AS (
    SELECT count(pg_advisory_xact_lock({episodes.LOCK_CLASS}, k)) AS n
    FROM (SELECT DISTINCT {episodes.LOCK_KEY.format("patient_id")} AS k FROM stored
          WHERE patient_id = ANY($17::text[]) ORDER BY k) AS keys
), counted AS (
INSERT INTO reading_counts AS c (patient_id, stored)
SELECT s.patient_id, count(*) FROM stored AS s, locked
GROUP BY s.patient_id ORDER BY s.patient_id
ON CONFLICT (patient_id) DO UPDATE SET stored = c.stored + excluded.stored
RETURNING c.patient_id, c.stored
)
SELECT s.device_id, s.metric, s.measured_at, s.patient_id, c.stored
FROM stored AS s JOIN counted AS c USING (patient_id)
"""

_INSERT_QUARANTINE = """
INSERT INTO quarantine (received_at, topic, gateway_id, reason, detail, item_index, device_id,
                        payload, payload_sha256)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::int[], $7::text[], $8::bytea[], $9::bytea[])
ON CONFLICT (payload_sha256, item_index) DO NOTHING
"""


_RECORD_REDELIVERED = """
INSERT INTO delivery_attempts (message_sha256, deliveries)
SELECT DISTINCT d, 2 FROM unnest($1::bytea[]) AS d
ON CONFLICT (message_sha256) DO NOTHING
RETURNING message_sha256
"""

_COUNT_DELIVERY = """
INSERT INTO delivery_attempts AS a (message_sha256, deliveries) VALUES ($1, 2)
ON CONFLICT (message_sha256) DO UPDATE
    SET deliveries = a.deliveries + 1, last_at = clock_timestamp()
RETURNING deliveries
"""

_FORGET_ATTEMPTS = "DELETE FROM delivery_attempts WHERE message_sha256 = ANY($1::bytea[])"
_EXPIRE_ATTEMPTS = "DELETE FROM delivery_attempts WHERE last_at < clock_timestamp() - $1::interval"


async def record_redelivered(
    conn: Conn, messages: Sequence[Inbound], keep: timedelta
) -> set[bytes]:
    """Count a second delivery of each of ``messages`` (DUP); return the digests seen before.

    A message recorded here for the first time is on its second delivery: the first
    failed without its worker saying why (a crash, a lost connection). One recorded
    before has failed on a redelivery too: a suspect, to be tried alone (see
    :func:`count_delivery`). Rows not touched for ``keep`` (the session expiry: the broker
    cannot redeliver after it) are deleted on the way. Commits on its own.
    """
    digests = [m.digest() for m in messages]
    async with conn.transaction():
        await conn.execute(_EXPIRE_ATTEMPTS, keep)
        fresh = {bytes(r["message_sha256"]) for r in await conn.fetch(_RECORD_REDELIVERED, digests)}
    return set(digests) - fresh


async def count_delivery(conn: Conn, message: Inbound) -> int:
    """Count one more delivery of ``message``; return how many it has had. Commits on its own."""
    deliveries: int = await conn.fetchval(_COUNT_DELIVERY, message.digest())
    return deliveries


def _key(r: Reading) -> tuple[str, str, datetime]:
    return (r.device_id, r.metric.value, r.measured_at)


async def commit(
    conn: Conn, batch: Batch, plans: Plans, now: datetime | None = None
) -> CommitResult:
    """Store ``batch`` in one transaction; see the module docstring.

    ``now`` is the clock the care plans are evaluated on (what is current); the wall clock
    when not given.
    """
    result = CommitResult()
    seen: set[tuple[str, str, datetime]] = set()
    unique: list[Candidate] = []
    for c in batch.candidates:  # a duplicate send inside one batch is stored once
        key = _key(c.reading)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    result.duplicates = len(batch.candidates) - len(unique)
    unique.sort(key=lambda c: _key(c.reading))  # one lock order for every worker
    cached: dict[str, Cached] = {}
    stored: dict[str, int] = {}
    async with conn.transaction():
        if unique:
            planned = sorted({c.patient_id for c in unique if plans.get(c.patient_id)})
            inserted, stored = await _insert_readings(conn, unique, planned)
            new = [c for c in unique if _key(c.reading) in inserted]
            result.stored = len(new)
            result.duplicates += len(unique) - len(new)
            result.flagged = Counter(f.value for c in new for f in c.reading.flags)
            if new:
                tally = await episodes.evaluate_batch(
                    conn, new, plans, now or datetime.now(UTC), stored
                )
                result.opened, result.updated = tally.opened, tally.updated
                result.evaluated, result.screened = tally.evaluated, tally.screened
                cached = tally.cached
        if batch.quarantined:
            await _quarantine(conn, batch)
            result.quarantined = len(batch.quarantined)
        redelivered = [m.digest() for m in batch.messages if m.dup]
        if redelivered:  # stored or quarantined now: its delivery count is done with
            await conn.execute(_FORGET_ATTEMPTS, redelivered)
        if not result.stored:  # perhaps nothing written: still wait for the standby
            await conn.execute(_WAIT_FOR_STANDBY)
    if cached:  # committed: the entries hold only stored rows
        plans.histories.keep(cached, stored)
    return result


#: Makes a transaction that may have written nothing wait for a synchronous standby like
#: any other. A commit cut off while it waited (the connection dropped, a cancel, the
#: primary restarted) is committed locally but maybe not on the standby; the retry then
#: finds every row there and, writing no WAL, commits at once (PostgreSQL waits for the
#: standby only after a transaction that wrote WAL; a transaction id alone writes none):
#: the batch acknowledged, its readings on the primary only, lost at the next failover.
#: A transactional logical-decoding message is the smallest WAL record any role may
#: write, and touches no table; its commit waits until the standby has everything up to
#: it, the earlier local commit included. Logical-decoding consumers see it under the
#: prefix ``homemonitor``. Only batches that stored no new reading need it.
_WAIT_FOR_STANDBY = "SELECT pg_logical_emit_message(true, 'homemonitor', 'batch')"


async def _insert_readings(
    conn: Conn, rows: Sequence[Candidate], planned: list[str]
) -> tuple[set[tuple[str, str, datetime]], dict[str, int]]:
    """Insert ``rows``; return the keys really new, and the stored-reading count of each
    patient with one (``reading_counts``). Locks ``planned`` patients' episodes."""
    readings = [c.reading for c in rows]
    columns = [[r.values.get(q) for r in readings] for q in QUANTITIES]
    returned = await conn.fetch(
        _INSERT_READINGS,
        [r.device_id for r in readings],
        [r.metric.value for r in readings],
        [r.measured_at for r in readings],
        [c.patient_id for c in rows],
        [c.received_at for c in rows],
        *columns,
        [",".join(r.flags) for r in readings],
        [r.source for r in readings],
        [c.gateway_id for c in rows],
        [r.message_id for r in readings],
        [",".join(sorted(r.quality)) if r.quality else "" for r in readings],
        planned,
    )
    return (
        {(r["device_id"], r["metric"], r["measured_at"]) for r in returned},
        {r["patient_id"]: r["stored"] for r in returned},
    )


async def _quarantine(conn: Conn, batch: Batch) -> None:
    digests = [m.digest() for m in batch.messages]
    items = batch.quarantined
    msgs = [batch.messages[q.message_index] for q in items]
    await conn.execute(
        _INSERT_QUARANTINE,
        [m.received_at for m in msgs],
        [safe_text(m.topic, ID_LIMIT) for m in msgs],  # detail and device_id: Rejection
        [_gateway(m.topic) for m in msgs],
        [q.rejection.reason.value for q in items],
        [q.rejection.detail for q in items],
        [-1 if q.rejection.index is None else q.rejection.index for q in items],
        [q.rejection.device_id for q in items],
        [m.payload for m in msgs],
        [digests[q.message_index] for q in items],
    )


def _gateway(topic: str) -> str | None:
    route = parse_topic(topic)
    return route.gateway_id if route else None
