"""Whatever a gateway sends, the worker keeps going and every message leaves a trace.

Hypothesis mutates valid payloads of each format (keys, strings with NUL, surrogates and
control characters, numbers, nesting, sizes, raw bytes) and the real worker takes each
one from a real Mosquitto into a real PostgreSQL, followed by a good reading. Examples
run one after another against one service per test, so the service carries state across
examples (that is the point: nothing may wedge it), hence the suppressed function-scoped
fixture health check. For the same reason there is no shrinking: after a failure every
later example runs on a broken service, so the first failing example, the one reported,
is the culprit. Derandomised, no example database: CI sees the same corpus.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from homemonitor.contract.protocol import PayloadFormat, readings_topic
from homemonitor.embedded import PrivateMosquitto
from tests.conftest import RunningService, publisher, wait_until
from tests.test_poison import TOPICS, ble, fhir, good, native

_SEQ = itertools.count(1000)
EXAMPLES = 120  # per format; about 10 s each on a small machine

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: see the module docstring
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

#: Valid payloads of each format, as JSON values, to mutate.
BASES: dict[PayloadFormat, list[Any]] = {
    PayloadFormat.NATIVE: [
        native(),
        {"v": 1, "readings": [native()["reading"], {**native()["reading"], "metric": "spo2"}]},
    ],
    PayloadFormat.FHIR: [
        fhir(),
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": "urn:uuid:d1", "resource": {"resourceType": "Device", "id": "cuff-1"}},
                {"resource": fhir(device={"reference": "urn:uuid:d1"})},
            ],
        },
    ],
    PayloadFormat.BLE: [
        ble(),
        {
            "v": 1,
            "timezone": "Europe/Stockholm",
            "readings": [ble()["readings"][0], {**ble()["readings"][0], "hex": "00a01f"}],
        },
    ],
}

NASTY = ["\x00", "\ud800", "\udfff", "\x1b", "\x7f", "\u202e", "\u2028", "\ufeff", "\U0010ffff"]
chars = st.one_of(st.sampled_from([*NASTY, "\\", '"', "é", "/"]), st.characters())
texts = st.one_of(
    st.text(chars, max_size=12),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["m", "\x00", "é", "\ud800"]), st.integers(1, 1 << 17)
    ),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included: json.dumps writes NaN, Infinity
    st.sampled_from([0, -0.0, 1e308, 5e-324, 2**53 + 1, 120, 80]),
)
values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
#: Byte strings spliced into a serialised payload: NUL, a UTF-8-encoded surrogate, bytes
#: that are never UTF-8, nesting past any recursion limit, a number past the digit limit.
SPLICES = [b"\x00", b"\xed\xa0\x80", b"\xff\xfe", b"[" * 50_000, b"1" * 5_000, b"{", b"\\u"]


def _paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``node``, deepest first (Hypothesis tries the first ones first)."""
    found = [here]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*here, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*here, index))
    return sorted(found, key=len, reverse=True)


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


#: Ways to change a place in the tree; those that keep the payload parseable come first.
OPERATIONS = ["char", "rekey", "add", "number", "replace", "delete", "nest", "repeat"]


@st.composite
def mutated_tree(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with one to three mutations anywhere in its tree."""
    root = {"": copy.deepcopy(base)}  # a parent for the real root
    for _ in range(draw(st.integers(1, 3))):
        path = ("", *draw(st.sampled_from(_paths(root[""]))))
        parent, key = _at(root, path[:-1]), path[-1]
        inner = len(path) > 1  # not the root: it may be renamed or deleted
        node = parent[key]
        op = draw(st.sampled_from(OPERATIONS))
        if op == "replace":
            parent[key] = draw(values)
        elif op == "rekey" and isinstance(parent, dict) and inner:
            parent[draw(texts)] = parent.pop(key)
        elif op == "add" and isinstance(node, dict):
            node[draw(texts)] = draw(values)
        elif op == "add" and isinstance(node, list):
            node.append(draw(values))
        elif op == "delete" and inner:
            del parent[key]
        elif op == "nest":
            for _ in range(draw(st.integers(1, 40))):
                node = [node] if draw(st.booleans()) else {draw(texts): node}
            parent[key] = node
        elif op == "char" and isinstance(node, str):
            at = draw(st.integers(0, len(node)))
            parent[key] = node[:at] + draw(st.sampled_from(NASTY)) + node[at:]
        elif op == "char" and isinstance(parent, dict) and inner:  # into the key instead
            at = draw(st.integers(0, len(key)))
            parent[key[:at] + draw(st.sampled_from(NASTY)) + key[at:]] = parent.pop(key)
        elif op == "repeat" and isinstance(node, list) and node:
            parent[key] = node * draw(st.integers(2, 1200))  # past MAX_READINGS_PER_MESSAGE
        elif op == "number" and isinstance(node, int | float) and not isinstance(node, bool):
            parent[key] = draw(numbers)
    return root[""]


@st.composite
def payloads(draw: st.DrawFn, fmt: PayloadFormat) -> bytes:
    """A mutated payload of format ``fmt``, serialised one way or another, maybe spliced."""
    tree = draw(mutated_tree(draw(st.sampled_from(BASES[fmt]))))
    if draw(st.booleans()):
        body = json.dumps(tree).encode()  # surrogates and NUL as \ud800, \u0000
    else:
        body = json.dumps(tree, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # mostly still JSON
        at = draw(st.integers(0, len(body)))
        cut = draw(st.sampled_from([0, 0, 1, 5]))
        body = body[:at] + draw(st.sampled_from([*SPLICES, b""])) + body[at + cut :]
    return body


def _total(service: RunningService, name: str) -> float:
    """A counter summed over all its labels."""
    return sum(
        sample.value
        for family in service.metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


def _outcomes(service: RunningService) -> tuple[float, float, float]:
    return (
        _total(service, "homemonitor_readings_stored_total"),
        _total(service, "homemonitor_readings_duplicate_total"),
        _total(service, "homemonitor_messages_rejected_total")
        + _total(service, "homemonitor_readings_rejected_total"),
    )


@pytest.fixture
async def gateway(broker: PrivateMosquitto) -> AsyncIterator[aiomqtt.Client]:
    """One gateway connection for all examples of a test."""
    async with publisher(broker) as gw:
        yield gw


async def check_one(
    service: RunningService,
    db: asyncpg.Connection,
    gateway: aiomqtt.Client,
    fmt: PayloadFormat,
    payload: bytes,
) -> None:
    """Publish ``payload`` and then a good reading; both must be accounted for."""
    seq = next(_SEQ)
    topic = TOPICS[fmt]
    stored0, duplicates0, rejected0 = _outcomes(service)
    await gateway.publish(topic, payload, qos=1)
    await gateway.publish(readings_topic("gw-1"), good(seq), qos=1)
    assert service.task is not None

    async def settled() -> bool:
        if service.task is not None and service.task.done():
            return True
        found = await db.fetchval(
            "SELECT count(*) FROM readings WHERE message_id = $1", f"good-{seq}"
        )
        return found == 1 and service.metric("homemonitor_inflight_messages") == 0

    await wait_until(settled, bool)
    assert not service.task.done(), "the worker stopped"
    stored1, duplicates1, rejected1 = _outcomes(service)
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).digest()
    rows = await db.fetchval("SELECT count(*) FROM quarantine WHERE payload_sha256 = $1", digest)
    stored, duplicates, rejected = (
        stored1 - stored0 - 1,
        duplicates1 - duplicates0,
        rejected1 - rejected0,
    )
    assert stored + duplicates + rejected >= 1, "the message left no trace"
    assert (rejected > 0) == (rows > 0), f"{rejected} rejections, {rows} quarantine rows"


@PROPERTY
@given(payload=payloads(PayloadFormat.NATIVE))
async def test_any_native_payload_leaves_a_trace_and_the_stream_goes_on(
    service: RunningService, db: asyncpg.Connection, gateway: aiomqtt.Client, payload: bytes
) -> None:
    """A mutated native payload ends stored or quarantined; the next good reading is stored."""
    await check_one(service, db, gateway, PayloadFormat.NATIVE, payload)


@PROPERTY
@given(payload=payloads(PayloadFormat.FHIR))
async def test_any_fhir_payload_leaves_a_trace_and_the_stream_goes_on(
    service: RunningService, db: asyncpg.Connection, gateway: aiomqtt.Client, payload: bytes
) -> None:
    """A mutated FHIR payload ends stored or quarantined; the next good reading is stored."""
    await check_one(service, db, gateway, PayloadFormat.FHIR, payload)


@PROPERTY
@given(payload=payloads(PayloadFormat.BLE))
async def test_any_ble_payload_leaves_a_trace_and_the_stream_goes_on(
    service: RunningService, db: asyncpg.Connection, gateway: aiomqtt.Client, payload: bytes
) -> None:
    """A mutated Bluetooth payload ends stored or quarantined; the next good reading is stored."""
    await check_one(service, db, gateway, PayloadFormat.BLE, payload)
