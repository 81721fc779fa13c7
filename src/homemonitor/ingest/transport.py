"""The one place that reaches inside aiomqtt 2.5 and paho: the client, manual PUBACKs, intake.

**The client.** :func:`client` builds the worker's aiomqtt client from the settings: one
persistent session (fixed client id, no clean start, MQTT 5 session expiry and Receive
Maximum as paho ``Properties``), PUBACKs left to :func:`ack`.

**Manual acknowledgement.** aiomqtt 2.5 acknowledges a QoS 1 message the moment it
enters its queue, before our code has seen it, let alone committed it. It has no public
API to change that, but the paho client it wraps does (``manual_ack_set`` / ``ack``;
aiomqtt issue #345, draft PR #346).

**Intake.** paho reads one packet per socket wake-up with three or four ``recv`` calls,
builds an MQTT 5 ``Properties`` object for every PUBLISH, and aiomqtt wraps each in a
``Message`` and an ``asyncio.Queue``: about 50 us of CPU per message on a small
machine, more than the worker's own work. :class:`Intake` replaces only the socket's
read callback: it reads what the socket has in one go, takes PUBLISH packets apart
itself and hands every other packet (CONNACK, SUBACK, PINGRESP, DISCONNECT, QoS 2
flows) to paho exactly as paho would have read it. Connecting, subscribing, keep-alive,
writing and reconnecting stay with aiomqtt and paho.

Everything in the service that depends on private attributes is in this module; the
tests in ``tests/test_mqtt_intake.py`` (packet framing against a real broker, acks after
commit, reconnects) fail if an upgrade of either library breaks it.

Message ids are only meaningful on the connection that delivered them: after a
reconnect the broker redelivers unacknowledged messages with new ids, so an ack for an
old connection's message must be dropped, never sent on the new one.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from homemonitor.settings import Settings

_PUBACK = struct.Struct("!BBH")
_PUBLISH = 0x30
#: Bytes asked of the socket per ``recv``, and read per wake-up before yielding to others.
_CHUNK = 1 << 16
_PER_WAKEUP = 1 << 20

T = TypeVar("T")
#: ``make(topic, payload, received_at, received_mono, mid, qos, dup)``: a message as the caller
#: keeps it. ``dup`` is the PUBLISH's DUP flag: the broker delivered it before and was not
#: acknowledged (MQTT 3.1.1 and 5.0, section 3.3.1.1).
Make = Callable[[str, bytes, datetime, float, int, int, bool], T]


def client(
    settings: Settings, address: tuple[str, int] | None = None, *, clean: bool = False
) -> aiomqtt.Client:
    """The worker's client for a broker of ``settings``: a persistent session, manual PUBACKs.

    ``address`` is one of ``settings.mqtt_addresses`` (the first when None). Connecting and
    subscribing give up after ``mqtt_connect_timeout_s``, so that the worker can move on to
    the next address of a cluster in seconds. Connect it with ``async with``. ``clean``:
    a clean start instead, and no session kept after it (:func:`end_session`).
    """
    s = settings
    host, port = address or s.mqtt_addresses[0]
    v5 = s.mqtt_protocol == "5"
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho
        properties.SessionExpiryInterval = 0 if clean else s.mqtt_session_expiry
        properties.ReceiveMaximum = s.max_inflight
    tls = None
    if s.mqtt_tls_ca:
        tls = aiomqtt.TLSParameters(ca_certs=s.mqtt_tls_ca, cert_reqs=ssl.CERT_REQUIRED)
    built = aiomqtt.Client(
        host,
        port,
        identifier=s.mqtt_client_id,
        username=s.mqtt_username,
        password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        clean_session=None if v5 else clean,
        clean_start=clean if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,  # v3: the only value
        properties=properties,
        keepalive=30,
        tls_params=tls,
        timeout=s.mqtt_connect_timeout_s,
    )
    enable_manual_ack(built)
    fail_fast_before_connack(built)
    return built


async def end_session(settings: Settings, address: tuple[str, int]) -> None:
    """Make the broker discard the persistent session of ``settings.mqtt_client_id``.

    A connection with a clean start (MQTT 5: and no session expiry; 3.1.1: clean
    session) replaces the stored session, and nothing is kept after it disconnects.
    """
    async with client(settings, address, clean=True):
        pass


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Make ``client`` leave PUBACKs to :func:`ack`. Call before connecting."""
    _paho(client).manual_ack_set(True)


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Queue the PUBACK (QoS 1) or PUBCOMP (QoS 2) for message ``mid`` of this connection.

    paho queues it even when the connection is gone, and discards its queue when it
    reconnects: an ack never reaches another connection.
    """
    if qos:
        _paho(client).ack(mid, qos)


def ack_all(client: aiomqtt.Client, mids: list[int]) -> None:
    """Queue PUBACKs of QoS 1 messages ``mids`` (in this order) as one write; see :func:`ack`."""
    if mids:
        packets = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in mids)  # what paho's ack() sends
        _paho(client)._packet_queue(0x40, packets, 0, 1)


def disconnected(client: aiomqtt.Client) -> asyncio.Future[None]:
    """A future that completes when ``client`` loses its connection."""
    fut: asyncio.Future[None] = client._disconnected
    return fut


class MalformedPublishError(Exception):
    """The broker sent bytes that are not an MQTT packet we can read."""


class Intake(Generic[T]):
    """Messages of one aiomqtt client, read off its socket, in arrival order.

    Create it before ``async with client``; take messages with :meth:`wait` and
    :meth:`take`. ``make`` turns each PUBLISH into what the caller keeps (it runs on the
    event loop, once per message; ``received_at`` is the wall clock of the read that
    brought it). Messages paho delivers itself (before this reader is installed on a
    new connection) go the same way, so none can land in aiomqtt's unread queue.

    ``limit`` bounds the QoS 1 messages received and not yet acknowledged (the caller
    reports its acknowledgements with :meth:`settle`). MQTT 5 lets a client announce it
    (Receive Maximum); MQTT 3.1.1 has no such thing, and a broker may send more than the
    worker can hold (NATS: up to twice ``max_ack_pending`` per subscription). Past the
    limit the intake stops reading the socket: TCP's window then stops the broker, which
    keeps the rest. It resumes once acknowledgements bring the count back within the
    limit. Messages are parsed read by read, so at most one read (64 KiB) of messages
    lands beyond the limit. Paused longer than the keep-alive, the connection is dropped
    by paho (its PINGRESP is not read); the broker then redelivers what was unacknowledged.
    """

    def __init__(self, client: aiomqtt.Client, make: Make[T], limit: int | None = None) -> None:
        self._client = client
        self._paho = _paho(client)
        self._make = make
        self._limit = limit
        self._unacknowledged = 0  # QoS 1 and 2 messages of this connection not yet settled
        self._paused: Any = None  # the socket we stopped reading, while paused
        self._v5 = self._paho.protocol == MQTTProtocolVersion.MQTTv5
        self._buffer = b""  # the start of a packet not yet complete
        self._parts: list[bytes] = []  # more of it, joined once it is complete
        self._have = 0  # bytes in _buffer and _parts
        self._packet_bytes = 0  # size of the incomplete packet, once its header is read
        self._pending: collections.deque[T] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        opened = self._paho.on_socket_open

        def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
            opened(c, userdata, sock)  # aiomqtt: its reader and its keep-alive task
            self._restart_from(b"")  # a new connection starts at a packet boundary
            self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), self._readable)

        self._paho.on_socket_open = on_socket_open
        self._paho.on_message = self._from_paho

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def unacknowledged(self) -> int:
        """QoS 1 and 2 messages received on this connection and not yet settled."""
        return self._unacknowledged

    @property
    def paused(self) -> bool:
        """Whether the intake has stopped reading because ``limit`` is reached."""
        return self._paused is not None

    def settle(self, n: int) -> None:
        """``n`` QoS 1 or 2 messages of this connection were acknowledged: read on if paused."""
        self._unacknowledged -= n
        sock = self._paused
        if sock is None or (self._limit is not None and self._unacknowledged > self._limit):
            return
        self._paused = None
        if self._paho._sock is sock:  # still this connection's socket, not a closed one's
            self._loop.add_reader(sock.fileno(), self._readable)
            self._loop.call_soon(self._readable)

    def take(self, limit: int) -> list[T]:
        """Up to ``limit`` waiting messages, oldest first."""
        pending = self._pending
        n = min(limit, len(pending))
        return [pending.popleft() for _ in range(n)]

    async def wait(self, *others: asyncio.Future[Any]) -> None:
        """Return when a message waits or any of ``others`` is done."""
        if self._pending or any(f.done() for f in others):
            return
        self._waiter = self._loop.create_future()
        try:
            await asyncio.wait((self._waiter, *others), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not self._waiter.done():
                self._waiter.cancel()
            self._waiter = None

    # -- the reader ------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            self._read()
        except Exception as exc:  # noqa: BLE001 - like aiomqtt's reader: the link is gone
            gone = disconnected(self._client)
            if not gone.done():
                gone.set_exception(exc)
            self._restart_from(b"")
            self._paho._loop_rc_handle(MQTTErrorCode.MQTT_ERR_PROTOCOL)  # close the socket

    def _read(self) -> None:
        sock = self._paho._sock
        if sock is None or self._paused is not None:
            return
        got, closed = 0, False
        while got < _PER_WAKEUP:
            try:
                chunk = sock.recv(_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._paho._call_socket_register_write()
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            self._parts.append(chunk)
            got += len(chunk)
            self._have += len(chunk)
            if self._limit is not None:  # parse read by read, to stop at the limit
                self._take_whole_packets()
                if self._unacknowledged > self._limit:
                    self._pause(sock)
                    break
            if len(chunk) < _CHUNK and not getattr(sock, "pending", lambda: 0)():
                break
        else:
            self._loop.call_soon(self._readable)  # more is waiting; let others run first
        if got:
            self._paho._last_bytes_received = time.monotonic()  # for paho's keep-alive
            self._take_whole_packets()
        if closed:
            self._paho._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)

    def _take_whole_packets(self) -> None:
        if self._have >= self._packet_bytes:  # a big packet is joined once, not per read
            self._restart_from(self._packets(b"".join([self._buffer, *self._parts])))

    def _pause(self, sock: Any) -> None:
        self._paused = sock
        self._loop.remove_reader(sock.fileno())

    def _restart_from(self, rest: bytes) -> None:
        """Start collecting again from ``rest``, the incomplete packet :meth:`_packets` left."""
        self._buffer, self._parts, self._have = rest, [], len(rest)
        self._packet_bytes = _packet_size(rest) if rest else 0

    def _packets(self, data: bytes) -> bytes:
        """Handle every whole packet in ``data``; return the incomplete rest."""
        received_at, received_mono = datetime.now(UTC), time.monotonic()
        before = len(self._pending)
        view, end, i = memoryview(data), len(data), 0
        try:
            while i + 2 <= end:
                header = data[i]
                remaining = _varint(data, i + 1)
                if remaining is None:
                    return data[i:]
                length, j = remaining
                if j + length > end:
                    return data[i:]
                if header & 0xF0 == _PUBLISH and header & 0x06 != 0x04:  # QoS 0 or 1
                    self._publish(header, view[j : j + length], received_at, received_mono)
                else:
                    self._to_paho(header, data[j : j + length])
                i = j + length
            return data[i:]
        finally:
            waiter = self._waiter
            if len(self._pending) > before and waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _publish(
        self, header: int, body: memoryview, received_at: datetime, received_mono: float
    ) -> None:
        topic_len = (body[0] << 8) | body[1]
        k = 2 + topic_len
        topic = str(body[2:k], "utf-8", "replace")  # a bad one is quarantined
        qos = (header >> 1) & 0x03
        if qos == 3:
            msg = "PUBLISH with QoS 3"
            raise MalformedPublishError(msg)
        mid = 0
        if qos:
            mid = (body[k] << 8) | body[k + 1]
            k += 2
        if self._v5:  # skip the properties (topic aliases are never negotiated)
            props = _varint(body, k)
            if props is None:
                msg = f"PUBLISH ends inside its properties length (mid {mid})"
                raise MalformedPublishError(msg)
            k = props[1] + props[0]
        if not topic or k > len(body):
            msg = f"PUBLISH without a topic or shorter than its header (mid {mid})"
            raise MalformedPublishError(msg)
        dup = bool(header & 0x08)
        if qos:
            self._unacknowledged += 1
        self._pending.append(
            self._make(topic, bytes(body[k:]), received_at, received_mono, mid, qos, dup)
        )

    def _to_paho(self, header: int, body: bytes) -> None:
        """Let paho handle a packet it would have read itself."""
        p = self._paho
        p._in_packet = _in_packet(header, body)  # as paho's _packet_read leaves a whole packet
        try:
            rc = p._packet_handle()
        finally:
            p._in_packet = _in_packet()  # as paho resets it after handling one
        if rc:
            p._loop_rc_handle(rc)

    def _from_paho(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        """A message paho read itself: same way as ours."""
        if message.qos:
            self._unacknowledged += 1
        self._pending.append(
            self._make(
                message._topic.decode(errors="replace"),
                bytes(message.payload),
                datetime.now(UTC),
                time.monotonic(),
                message.mid,
                message.qos,
                bool(message.dup),
            )
        )
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _varint(data: bytes | memoryview, at: int) -> tuple[int, int] | None:
    """The MQTT variable byte integer at ``data[at]``, and the index after it.

    None when ``data`` ends before it does; more than four bytes is malformed.
    """
    value = 0
    for k in range(4):
        if at + k >= len(data):
            return None
        byte = data[at + k]
        value |= (byte & 0x7F) << (7 * k)
        if not byte & 0x80:
            return value, at + k + 1
    msg = "variable byte integer longer than four bytes"
    raise MalformedPublishError(msg)


def _packet_size(data: bytes) -> int:
    """Size of the packet ``data`` starts with; 0 while its length field is incomplete."""
    remaining = _varint(data, 1)
    return 0 if remaining is None else remaining[1] + remaining[0]


def _in_packet(command: int = 0, body: bytes = b"") -> dict[str, Any]:
    """paho's record of the packet being read: empty, or ``body`` read whole."""
    return {
        "command": command,
        "have_remaining": 1 if command else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": len(body),
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }


def _paho(client: aiomqtt.Client) -> Any:
    return client._client


class ClosedBeforeConnackError(aiomqtt.MqttError):
    """The broker closed the connection without answering CONNECT with a CONNACK."""


def fail_fast_before_connack(client: aiomqtt.Client) -> None:
    """Make ``async with client`` fail at once when the broker closes before its CONNACK.

    aiomqtt ignores a disconnect that comes before the CONNACK and waits for its timeout
    ("Operation timed out"), which hides the usual cause: a broker that does not speak
    the protocol version of the CONNECT (or a TLS port spoken to in plain). With this,
    the connect fails with :class:`ClosedBeforeConnackError`. Call before connecting.
    """
    p = _paho(client)
    inner = p.on_disconnect
    loop = asyncio.get_running_loop()

    def on_disconnect(c: Any, userdata: Any, *args: Any) -> None:
        connecting: asyncio.Future[None] = client._connected
        if not connecting.done():

            def fail() -> None:
                # aiomqtt may have given up on this attempt already and made a new future
                if client._connected is connecting and not connecting.done():
                    connecting.set_exception(
                        ClosedBeforeConnackError("the broker closed the connection before CONNACK")
                    )

            loop.call_soon_threadsafe(fail)
        inner(c, userdata, *args)

    p.on_disconnect = on_disconnect
