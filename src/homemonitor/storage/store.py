"""Where a batch of messages becomes rows: readings, alert episodes and quarantine.

:func:`prepare` is pure CPU (decode, validate, resolve the patient, evaluate the plan);
:func:`commit` is ONE transaction per batch: readings are inserted idempotently, only
readings that were really new and are current can open or update alert episodes, and
everything refused lands in quarantine with its reason and raw payload. The caller
acknowledges the batch's messages only after :func:`commit` returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from homemonitor import logs
from homemonitor.contract.protocol import parse_topic
from homemonitor.contract.readings import (
    ID_LIMIT,
    QUANTITIES,
    Reading,
    Reason,
    Rejection,
    safe_text,
)
from homemonitor.decoding import decode
from homemonitor.ingest.validation import ClockPolicy, validate
from homemonitor.registry import RegistryCache
from homemonitor.rules import careplan
from homemonitor.rules.careplan import RULES, PlanTable
from homemonitor.storage.database import Conn

log = logs.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class Inbound:
    """One MQTT message as the worker received it."""

    topic: str
    payload: bytes
    received_at: datetime
    received_mono: float
    mid: int = 0
    qos: int = 1
    #: The broker's DUP flag: it delivered this message before, and was not acknowledged.
    dup: bool = False
    generation: int = 0

    def digest(self) -> bytes:
        """sha256 of topic, NUL, payload: the message's key in quarantine and attempts."""
        return hashlib.sha256(
            self.topic.encode(errors="surrogatepass") + b"\0" + self.payload
        ).digest()


@dataclasses.dataclass(slots=True)
class Candidate:
    """A valid reading with the patient its device was bound to when it measured."""

    reading: Reading
    patient_id: str
    gateway_id: str
    received_at: datetime
    message: int  # index of its message in the batch


@dataclasses.dataclass(slots=True)
class Quarantined:
    """Something refused, with where it came from."""

    rejection: Rejection
    message: int


@dataclasses.dataclass(slots=True)
class Batch:
    """Messages in arrival order and what :func:`prepare` made of them."""

    messages: list[Inbound]
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    quarantined: list[Quarantined] = dataclasses.field(default_factory=list)
    sent_at: list[datetime] = dataclasses.field(default_factory=list)
    formats: list[str] = dataclasses.field(default_factory=list)

    def only(self, message: int) -> Batch:
        """The part of this batch that came from one message (for the one-by-one fallback)."""
        return Batch(
            [self.messages[message]],
            [dataclasses.replace(c, message=0) for c in self.candidates if c.message == message],
            [dataclasses.replace(q, message=0) for q in self.quarantined if q.message == message],
        )

    def needs_registry_reload(self) -> bool:
        """Whether a reading was refused for what the registry says (it may have just changed).

        Any of the four registry reasons: a gateway, a device, a pairing or a binding
        registered a moment ago is picked up as soon as the worker reloads.
        """
        return any(q.rejection.reason in _UNRESOLVED for q in self.quarantined)

    def refused_gateways(self) -> dict[str, Counter[str]]:
        """Gateways that sent readings they may not send, with how many by reason.

        ``unknown_gateway`` and ``foreign_device`` point at a misconfigured or compromised
        hub: ops want to hear which one (gateway ids are not patient data).
        """
        refused: dict[str, Counter[str]] = {}
        for q in self.quarantined:
            if q.rejection.reason in _NOT_ITS_OWN:
                route = parse_topic(self.messages[q.message].topic)
                if route is not None:
                    refused.setdefault(route.gateway_id, Counter())[q.rejection.reason] += 1
        return refused


#: Why the registry resolves a reading to nobody, as a person reading the quarantine is told.
_UNRESOLVED = {
    Reason.UNKNOWN_GATEWAY: "the publishing gateway is not in the registry",
    Reason.UNKNOWN_DEVICE: "device is not in the registry",
    Reason.FOREIGN_DEVICE: "device is not paired with the publishing gateway at measured_at",
    Reason.UNBOUND_DEVICE: "device is bound to no patient at measured_at",
}
#: Readings a gateway had no business sending.
_NOT_ITS_OWN = frozenset({Reason.UNKNOWN_GATEWAY, Reason.FOREIGN_DEVICE})


def prepare(
    messages: list[Inbound],
    cache: RegistryCache,
    clock: ClockPolicy,
    max_payload_bytes: int,
    now: datetime,
) -> Batch:
    """Decode, validate and resolve every message of a batch. No I/O.

    Each message: its topic (``unknown_topic``), its size (``oversized``), then decoding
    and validation per reading, and last the registry per valid reading, in the order
    :meth:`RegistryCache.resolve` documents (gateway, device, pairing, binding).
    """
    batch = Batch(messages)
    for m, msg in enumerate(messages):
        route = parse_topic(msg.topic)
        if route is None:
            batch.quarantined.append(
                Quarantined(
                    Rejection(Reason.UNKNOWN_TOPIC, "topic outside the documented layout"), m
                )
            )
            batch.formats.append("unknown")
            continue
        batch.formats.append(route.format.value)
        if len(msg.payload) > max_payload_bytes:
            detail = f"payload of {len(msg.payload)} bytes exceeds {max_payload_bytes}"
            batch.quarantined.append(Quarantined(Rejection(Reason.OVERSIZED, detail), m))
            continue
        try:
            decoded = decode(route.format, msg.payload)
        except Exception as exc:  # a decoder bug must not stop the stream (logged, quarantined)
            log.exception("decoder failed; message quarantined", format=route.format.value)
            detail = f"the {route.format.value} decoder failed ({type(exc).__name__}); report it"
            batch.quarantined.append(Quarantined(Rejection(Reason.MALFORMED, detail), m))
            continue
        if decoded.sent_at is not None:
            batch.sent_at.append(decoded.sent_at)
        batch.quarantined.extend(Quarantined(r, m) for r in decoded.rejections)
        accepted, implausible = validate(decoded.readings, now, clock)
        batch.quarantined.extend(Quarantined(r, m) for r in implausible)
        for reading in accepted:
            patient = cache.resolve(route.gateway_id, reading.device_id, reading.measured_at)
            if isinstance(patient, Reason):
                detail = _UNRESOLVED[patient]
                rejection = Rejection(patient, detail, reading.index, reading.device_id)
                batch.quarantined.append(Quarantined(rejection, m))
                continue
            batch.candidates.append(
                Candidate(reading, patient, route.gateway_id, msg.received_at, m)
            )
    return batch


def set_aside(message: Inbound, rejection: Rejection) -> Batch:
    """A batch that quarantines ``message`` whole for ``rejection``, without decoding it.

    For a message that must not be decoded again (delivered too often) and for the last
    resort of the one-by-one fallback. No I/O.
    """
    route = parse_topic(message.topic)
    fmt = route.format.value if route else "unknown"
    return Batch([message], quarantined=[Quarantined(rejection, 0)], formats=[fmt])


@dataclasses.dataclass(slots=True)
class CommitResult:
    """What committing one batch (or, summed with :meth:`add`, many) did."""

    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    opened: Counter[str] = dataclasses.field(default_factory=Counter)  # by severity
    updated: int = 0
    flagged: Counter[str] = dataclasses.field(default_factory=Counter)  # by clock flag

    def add(self, other: CommitResult) -> None:
        """Count ``other`` in as well (counters stay bounded by their few keys)."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.opened.update(other.opened)
        self.updated += other.updated
        self.flagged.update(other.flagged)


_INSERT_READINGS = """
INSERT INTO readings (device_id, metric, measured_at, patient_id, received_at,
                      systolic, diastolic, mean_arterial, heart_rate, body_weight, spo2,
                      flags, source, gateway_id, message_id)
SELECT r.device_id, r.metric, r.measured_at, r.patient_id, r.received_at,
       r.systolic, r.diastolic, r.mean_arterial, r.heart_rate, r.body_weight, r.spo2,
       coalesce(string_to_array(nullif(r.flags, ''), ','), '{}'), r.source, r.gateway_id,
       r.message_id
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[],
            $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
            $11::float8[], $12::text[], $13::text[], $14::text[], $15::text[])
     AS r(device_id, metric, measured_at, patient_id, received_at,
          systolic, diastolic, mean_arterial, heart_rate, body_weight, spo2,
          flags, source, gateway_id, message_id)
ON CONFLICT DO NOTHING
RETURNING device_id, metric, measured_at
"""

_UPSERT_ALERTS = """
INSERT INTO alerts AS a (patient_id, care_team_id, rule, quantity, direction, severity,
                         plan_version, threshold, opening_device_id, opening_metric,
                         opening_measured_at, opening_value, worst_value, last_measured_at,
                         breach_count)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::int[], $8::float8[], $9::text[], $10::text[], $11::timestamptz[],
                     $12::float8[], $13::float8[], $14::timestamptz[], $15::int[])
ON CONFLICT (patient_id, rule) WHERE status <> 'resolved' DO UPDATE SET
    breach_count = a.breach_count + EXCLUDED.breach_count,
    worst_value = CASE WHEN a.direction = 'high' THEN greatest(a.worst_value, EXCLUDED.worst_value)
                       ELSE least(a.worst_value, EXCLUDED.worst_value) END,
    last_measured_at = greatest(a.last_measured_at, EXCLUDED.last_measured_at),
    severity = CASE WHEN EXCLUDED.severity = 'urgent' THEN 'urgent' ELSE a.severity END,
    threshold = CASE WHEN EXCLUDED.severity = 'urgent' AND a.severity <> 'urgent'
                     THEN EXCLUDED.threshold ELSE a.threshold END,
    updated_at = clock_timestamp()
RETURNING (xmax = 0) AS opened, severity
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


async def commit(conn: Conn, batch: Batch, plans: PlanTable) -> CommitResult:
    """Store ``batch`` in one transaction; see the module docstring."""
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
    async with conn.transaction():
        if unique:
            inserted = await _insert_readings(conn, unique)
            new = [c for c in unique if _key(c.reading) in inserted]
            result.stored = len(new)
            result.duplicates += len(unique) - len(new)
            result.flagged = Counter(f.value for c in new for f in c.reading.flags)
            current = [c for c in new if not c.reading.flags]
            if current:
                opened, updated = await _alerts(conn, current, plans)
                result.opened, result.updated = Counter(opened), updated
        if batch.quarantined:
            await _quarantine(conn, batch)
            result.quarantined = len(batch.quarantined)
        redelivered = [m.digest() for m in batch.messages if m.dup]
        if redelivered:  # stored or quarantined now: its delivery count is done with
            await conn.execute(_FORGET_ATTEMPTS, redelivered)
    return result


async def _insert_readings(conn: Conn, rows: Sequence[Candidate]) -> set[tuple[str, str, datetime]]:
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
    )
    return {(r["device_id"], r["metric"], r["measured_at"]) for r in returned}


@dataclasses.dataclass(slots=True)
class _Episode:
    first: int
    rule: int
    level: int
    count: int
    worst: float
    last_measured_at: datetime


async def _alerts(conn: Conn, rows: list[Candidate], plans: PlanTable) -> tuple[list[str], int]:
    """Open or update one episode per (patient, rule) breached in this batch."""
    patient_rows = np.fromiter((plans.row(c.patient_id) for c in rows), np.intp, len(rows))
    values = careplan.values_matrix([c.reading.values for c in rows])
    levels = careplan.evaluate(plans, patient_rows, values)
    hits = np.argwhere(levels > 0)  # row-major: in arrival order
    if not len(hits):
        return [], 0
    episodes: dict[tuple[str, int], _Episode] = {}
    for i, j in hits.tolist():
        c, rule = rows[i], RULES[j]
        value = float(values.item(i, QUANTITIES.index(rule.quantity)))
        level = int(levels[i, j])
        ep = episodes.get((c.patient_id, j))
        if ep is None:
            episodes[(c.patient_id, j)] = _Episode(i, j, level, 1, value, c.reading.measured_at)
            continue
        ep.count += 1
        ep.level = max(ep.level, level)
        ep.worst = careplan.worse(rule.direction, ep.worst, value)
        ep.last_measured_at = max(ep.last_measured_at, c.reading.measured_at)
    ordered = sorted(episodes.items(), key=lambda kv: (kv[0][0], RULES[kv[0][1]].name))
    cols: list[list[object]] = [[] for _ in range(15)]
    for (patient_id, j), ep in ordered:
        rule, opening, prow = RULES[j], rows[ep.first], patient_rows[ep.first]
        plan = plans.plans[prow]
        first_value = float(values.item(ep.first, QUANTITIES.index(rule.quantity)))
        for col, value in zip(
            cols,
            (
                patient_id,
                plan.care_team_id,
                rule.name,
                rule.quantity.value,
                rule.direction,
                careplan.SEVERITIES[ep.level - 1],
                plan.version,
                plans.threshold(prow, j, ep.level),
                opening.reading.device_id,
                opening.reading.metric.value,
                opening.reading.measured_at,
                first_value,
                ep.worst,
                ep.last_measured_at,
                ep.count,
            ),
            strict=True,
        ):
            col.append(value)
    returned = await conn.fetch(_UPSERT_ALERTS, *cols)
    opened = [r["severity"] for r in returned if r["opened"]]
    return opened, len(returned) - len(opened)


async def _quarantine(conn: Conn, batch: Batch) -> None:
    digests = [m.digest() for m in batch.messages]
    items = batch.quarantined
    msgs = [batch.messages[q.message] for q in items]
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
        [digests[q.message] for q in items],
    )


def _gateway(topic: str) -> str | None:
    route = parse_topic(topic)
    return route.gateway_id if route else None
