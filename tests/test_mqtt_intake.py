"""The worker's MQTT intake (:class:`homemonitor.ingest.transport.Intake`) against a real Mosquitto.

The intake replaces paho's socket reader, so these tests pin what paho used to do for
us: framing of every packet size, MQTT 5 and 3.1.1, messages a persistent session
delivers right after CONNACK, keep-alive, acknowledgements that really reach the
broker, and a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from homemonitor.embedded import PrivateMosquitto
from homemonitor.ingest import transport
from homemonitor.ingest.pipeline import Inbound
from tests.conftest import publisher

TOPIC = "homemonitor/v1/gw/gw-1/readings"
#: Sizes around every boundary of the remaining-length field and of the intake's reads.
SIZES = (0, 1, 100, 120, 127, 128, 200, 16_383, 16_384, 65_535, 65_536, 70_000, 300_000)

make = functools.partial(Inbound, generation=1)


def _client(
    broker: PrivateMosquitto, name: str, *, v5: bool = True, keepalive: int = 60
) -> aiomqtt.Client:
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 300
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        clean_session=None if v5 else False,
        clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        keepalive=keepalive,
    )
    transport.enable_manual_ack(client)
    return client


@contextlib.asynccontextmanager
async def consuming(
    broker: PrivateMosquitto, name: str, *, v5: bool = True, keepalive: int = 60
) -> AsyncIterator[tuple[aiomqtt.Client, transport.Intake[Inbound]]]:
    client = _client(broker, name, v5=v5, keepalive=keepalive)
    intake = transport.Intake(client, make)
    async with client:
        await client.subscribe(TOPIC, qos=1)
        yield client, intake


async def receive(intake: transport.Intake[Inbound], n: int, within: float = 20) -> list[Inbound]:
    got: list[Inbound] = []

    async def collect() -> None:
        while len(got) < n:
            await intake.wait()
            got.extend(intake.take(n - len(got)))

    await asyncio.wait_for(collect(), within)
    return got


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
async def test_every_packet_size_arrives_whole_and_in_order(
    broker: PrivateMosquitto, v5: bool
) -> None:
    payloads = [bytes([65 + i % 26]) * size for i, size in enumerate(SIZES)]
    async with consuming(broker, "intake-sizes", v5=v5) as (client, intake):
        async with publisher(broker) as gw:
            for i, body in enumerate(payloads):
                await gw.publish(TOPIC, body, qos=i % 2)  # QoS 0 and 1 interleaved
        got = await receive(intake, len(payloads))
        assert [m.payload for m in got] == payloads
        assert {m.topic for m in got} == {TOPIC}
        assert [m.qos for m in got] == [i % 2 for i in range(len(payloads))]
        assert all(m.mid > 0 for m in got if m.qos == 1)
        transport.ack_all(client, [m.mid for m in got if m.qos])


async def test_a_burst_is_read_and_acknowledged(broker: PrivateMosquitto) -> None:
    """5 000 messages through a 1 000-message in-flight window; none is redelivered."""
    n = 5_000
    async with consuming(broker, "intake-burst") as (client, intake):
        got: list[Inbound] = []

        async def drain() -> None:
            while len(got) < n:
                await intake.wait()
                part = intake.take(n)
                got.extend(part)
                transport.ack_all(client, [m.mid for m in part])

        draining = asyncio.create_task(drain())
        async with publisher(broker) as gw:
            for seq in range(n):
                await gw.publish(TOPIC, f"{seq:06d}".encode(), qos=1)
        await asyncio.wait_for(draining, 20)
        assert [int(m.payload) for m in got] == list(range(n))
        await asyncio.sleep(0.3)  # let the last PUBACKs leave
    async with consuming(broker, "intake-burst") as (_, intake):  # the same session again
        await asyncio.sleep(1.0)
        assert len(intake) == 0, "the broker redelivered acknowledged messages"


async def test_unacknowledged_messages_come_back_on_the_next_connection(
    broker: PrivateMosquitto,
) -> None:
    """What a persistent session delivers right after CONNACK reaches the intake too."""
    async with consuming(broker, "intake-redeliver") as (_, intake):
        async with publisher(broker) as gw:
            for seq in range(50):
                await gw.publish(TOPIC, str(seq).encode(), qos=1)
        first = await receive(intake, 50)
        _ = first  # deliberately not acknowledged
    async with consuming(broker, "intake-redeliver") as (client, intake):
        again = await receive(intake, 50)
        assert sorted(int(m.payload) for m in again) == list(range(50))
        transport.ack_all(client, [m.mid for m in again])


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
async def test_a_redelivered_message_carries_the_dup_flag(
    broker: PrivateMosquitto, v5: bool
) -> None:
    """Mosquitto marks a message it delivers again DUP, a new one not; the intake passes it on."""
    name = f"intake-dup-{v5}"
    async with consuming(broker, name, v5=v5) as (_, intake):
        async with publisher(broker) as gw:
            await gw.publish(TOPIC, b"held", qos=1)
        first = await receive(intake, 1)  # deliberately not acknowledged
    async with consuming(broker, name, v5=v5) as (client, intake):
        async with publisher(broker) as gw:
            await gw.publish(TOPIC, b"new", qos=1)
        again = await receive(intake, 2)
        transport.ack_all(client, [m.mid for m in again])
    assert [(b"held", False), (b"held", True), (b"new", False)] == [
        (m.payload, m.dup) for m in first + again
    ]


async def test_the_dup_bit_of_the_fixed_header_is_read() -> None:
    """Bit 3 of a PUBLISH's first byte is DUP (MQTT 3.3.1.1)."""
    intake = transport.Intake(_unconnected(), make)
    packet = _publish_v5("t", b"x", mid=7)
    intake._packets(packet + bytes([packet[0] | 0x08]) + packet[1:])
    assert [False, True] == [m.dup for m in intake.take(2)]


async def test_keepalive_survives_an_idle_connection(broker: PrivateMosquitto) -> None:
    """PINGRESPs go through paho: a 1 s keep-alive connection stays up while idle."""
    async with consuming(broker, "intake-idle", keepalive=1) as (client, intake):
        await asyncio.sleep(3.5)
        assert not transport.disconnected(client).done()
        async with publisher(broker) as gw:
            await gw.publish(TOPIC, b"still here", qos=1)
        (message,) = await receive(intake, 1)
        assert message.payload == b"still here"


async def test_a_broker_crash_completes_the_disconnected_future(broker: PrivateMosquitto) -> None:
    async with consuming(broker, "intake-crash") as (client, intake):
        gone = transport.disconnected(client)
        broker.kill()
        await asyncio.wait_for(intake.wait(gone), 10)
        assert gone.done()
        assert isinstance(gone.exception(), aiomqtt.MqttError)


async def test_framing_does_not_depend_on_how_bytes_arrive() -> None:
    """The same byte stream split anywhere yields the same messages (partial packets kept)."""
    intake = transport.Intake(_unconnected(), make)
    stream = b"".join(
        _publish_v5(f"t/{i}", bytes([i % 256]) * size, mid=i + 1) for i, size in enumerate(SIZES)
    )
    rng = random.Random(4)
    for split in ("bytewise", "random"):
        rest = b""
        i = 0
        while i < len(stream):
            step = 1 if split == "bytewise" and i < 3000 else rng.randint(1, 40_000)
            rest = intake._packets(rest + stream[i : i + step])
            i += step
        assert rest == b""
        got = intake.take(100)
        assert [(m.topic, m.payload, m.mid) for m in got] == [
            (f"t/{i}", bytes([i % 256]) * size, i + 1) for i, size in enumerate(SIZES)
        ]


async def test_a_remaining_length_over_four_bytes_is_refused() -> None:
    intake = transport.Intake(_unconnected(), make)
    with pytest.raises(transport.MalformedPublishError):
        intake._packets(b"\x32\xff\xff\xff\xff\x01" + b"\x00" * 10)


def _unconnected() -> aiomqtt.Client:
    """A client that never connects: its intake is fed bytes directly."""
    return aiomqtt.Client("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)


def _publish_v5(topic: str, payload: bytes, mid: int) -> bytes:
    """A QoS 1 MQTT 5 PUBLISH with one property (message expiry), to be skipped."""
    t = topic.encode()
    props = b"\x02\x00\x00\x00\x3c"
    body = len(t).to_bytes(2, "big") + t + mid.to_bytes(2, "big") + bytes([len(props)]) + props
    body += payload
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x32]) + bytes(encoded) + body


@pytest.mark.parametrize(
    "packet",
    [
        b"\x36\x05\x00\x01t\x00\x01",  # QoS 3 does not exist
        b"\x32\x03\x00\x05t",  # topic longer than the packet
        b"\x32\x02\x00\x00",  # no topic (aliases are never negotiated)
    ],
    ids=["qos3", "short", "no-topic"],
)
async def test_a_malformed_publish_is_refused_not_delivered(packet: bytes) -> None:
    intake = transport.Intake(_unconnected(), make)
    with pytest.raises((transport.MalformedPublishError, IndexError)):
        intake._packets(packet)
    assert len(intake) == 0


def test_packet_size_is_known_once_the_length_field_is() -> None:
    big = _publish_v5("t", b"x" * 300_000, mid=1)
    assert transport._packet_size(big[:1]) == 0  # length field not there yet
    assert transport._packet_size(big[:3]) == 0  # three-byte length, two bytes seen
    assert transport._packet_size(big[:4]) == len(big)


async def test_a_big_packet_read_in_small_pieces_is_joined_once(broker: PrivateMosquitto) -> None:
    """A 250 kB payload arrives over many reads and is delivered whole, once."""
    body = bytes(range(256)) * 1000
    async with consuming(broker, "intake-big") as (client, intake):
        async with publisher(broker) as gw:
            await gw.publish(TOPIC, body, qos=1)
            await gw.publish(TOPIC, b"after", qos=1)
        got = await receive(intake, 2)
        assert [m.payload for m in got] == [body, b"after"]
        assert intake._buffer == b"" and intake._parts == []
        transport.ack_all(client, [m.mid for m in got])
