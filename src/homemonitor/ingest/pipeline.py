"""The pure step of a batch: decode, validate and resolve its messages. No I/O.

:func:`prepare` turns a list of :class:`Inbound` MQTT messages into a :class:`Batch`:
:class:`Candidate` readings resolved to the patient their device was bound to when it
measured, and everything refused as :class:`Quarantined` with its reason. The batch's
transaction (:func:`homemonitor.storage.transaction.commit`) stores it; the worker
acknowledges its messages only after that.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from datetime import datetime

from homemonitor import logs
from homemonitor.contract.protocol import parse_topic
from homemonitor.contract.readings import Reading, Reason, Rejection
from homemonitor.decoding import decode
from homemonitor.ingest.validation import ClockPolicy, validate
from homemonitor.registry import RegistryCache

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
    message_index: int  # of its message in the batch


@dataclasses.dataclass(slots=True)
class Quarantined:
    """Something refused, with where it came from."""

    rejection: Rejection
    message_index: int  # of its message in the batch


@dataclasses.dataclass(slots=True)
class Batch:
    """Messages in arrival order and what :func:`prepare` made of them."""

    messages: list[Inbound]
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    quarantined: list[Quarantined] = dataclasses.field(default_factory=list)
    sent_at: list[datetime] = dataclasses.field(default_factory=list)
    formats: list[str] = dataclasses.field(default_factory=list)

    def part_of(self, message_index: int) -> Batch:
        """The part of this batch that came from one message, as a batch of that message alone.

        For the one-by-one fallback: its candidates and quarantined items point at
        message 0 of the new batch.
        """
        return Batch(
            [self.messages[message_index]],
            [
                dataclasses.replace(c, message_index=0)
                for c in self.candidates
                if c.message_index == message_index
            ],
            [
                dataclasses.replace(q, message_index=0)
                for q in self.quarantined
                if q.message_index == message_index
            ],
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
                route = parse_topic(self.messages[q.message_index].topic)
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
    for message_index, msg in enumerate(messages):
        route = parse_topic(msg.topic)
        if route is None:
            batch.quarantined.append(
                Quarantined(
                    Rejection(Reason.UNKNOWN_TOPIC, "topic outside the documented layout"),
                    message_index,
                )
            )
            batch.formats.append("unknown")
            continue
        batch.formats.append(route.format.value)
        if len(msg.payload) > max_payload_bytes:
            detail = f"payload of {len(msg.payload)} bytes exceeds {max_payload_bytes}"
            batch.quarantined.append(
                Quarantined(Rejection(Reason.OVERSIZED, detail), message_index)
            )
            continue
        try:
            decoded = decode(route.format, msg.payload)
        except Exception as exc:  # a decoder bug must not stop the stream (logged, quarantined)
            log.exception("decoder failed; message quarantined", format=route.format.value)
            detail = f"the {route.format.value} decoder failed ({type(exc).__name__}); report it"
            batch.quarantined.append(
                Quarantined(Rejection(Reason.MALFORMED, detail), message_index)
            )
            continue
        if decoded.sent_at is not None:
            batch.sent_at.append(decoded.sent_at)
        batch.quarantined.extend(Quarantined(r, message_index) for r in decoded.rejections)
        accepted, implausible = validate(decoded.readings, now, clock)
        batch.quarantined.extend(Quarantined(r, message_index) for r in implausible)
        for reading in accepted:
            patient = cache.resolve(route.gateway_id, reading.device_id, reading.measured_at)
            if isinstance(patient, Reason):
                detail = _UNRESOLVED[patient]
                rejection = Rejection(patient, detail, reading.index, reading.device_id)
                batch.quarantined.append(Quarantined(rejection, message_index))
                continue
            batch.candidates.append(
                Candidate(reading, patient, route.gateway_id, msg.received_at, message_index)
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
