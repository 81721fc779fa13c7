"""The channels: signed webhooks, email over SMTP, the MQTT alert and feedback topics.

Each channel's :meth:`send` delivers one :class:`~homemonitor.notify.message.Notification`
or raises :class:`DeliveryError` (retried) or :class:`NothingToSend` (skipped: an email
nobody it is for has an address for, feedback for an alert no gateway's reading opened).
The error's ``reason`` is recorded and logged: a short fixed word or an HTTP status,
never a message from the other side, which could quote what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import smtplib
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiomqtt

from homemonitor.contract.protocol import alerts_topic, feedback_topic
from homemonitor.errors import HomemonitorError
from homemonitor.notify import message
from homemonitor.notify.message import Notification
from homemonitor.settings import Settings

#: The webhook's signature header: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.
SIGNATURE_HEADER = "Homemonitor-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class DeliveryError(HomemonitorError):
    """A delivery failed; it is tried again later. ``reason`` is safe to record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NothingToSend(HomemonitorError):  # noqa: N818 - an outcome, not a failure
    """There is nobody to deliver this notification to; it is skipped, not retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Channel(Protocol):
    async def send(self, n: Notification) -> None:
        """Deliver ``n`` once, or raise :class:`DeliveryError` or :class:`NothingToSend`."""
        ...


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over ``b"<timestamp>." + body``.

    >>> sign(b"s3cret", 1767225600, b'{"v":1}')
    't=1767225600,v1=99111b1719dd8230adeb390cca71605e6c17c1ba8df4cef0f813a08a6bc27356'
    """
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


#: How far from the receiver's clock a signature's timestamp may be: older is a replay.
TOLERANCE_S = 300


def verify(secret: bytes, header: str, body: bytes, now: float | None = None) -> bool:
    """Whether ``header`` (:data:`SIGNATURE_HEADER`) signs ``body`` with ``secret``, recently.

    What a receiver checks (docs/notifications.md): the HMAC over the raw body, compared
    in constant time, and a timestamp within :data:`TOLERANCE_S` of ``now``.

    >>> header = sign(b"s3cret", 1767225600, b'{"v":1}')
    >>> verify(b"s3cret", header, b'{"v":1}', now=1767225630)
    True
    >>> verify(b"s3cret", header, b'{"v":2}', now=1767225630), verify(b"s3cret", header,
    ...     b'{"v":1}', now=1767225600 + TOLERANCE_S + 1)
    (False, False)
    """
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        signature = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_S:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected, f"t={timestamp},v1={signature}")


def read_secret(path: Path) -> bytes:
    """A webhook secret from its file (a trailing line break is the editor's)."""
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise DeliveryError("secret_unreadable") from exc


#: How long a webhook secret read from its file is used before the file is read again: a
#: rotated secret is in use within this time, without a restart.
SECRET_TTL_S = 30.0


#: Idle connections a webhook keeps open per receiver (scheme, host, port) between
#: deliveries; more deliveries at once open more, and those beyond this are closed after.
IDLE_PER_RECEIVER = 4
#: The largest answer body read to keep its connection; a larger one closes it instead.
MAX_ANSWER_BODY = 64 * 1024
#: Header lines of an answer read at most (each bounded by the stream's 64 KiB limit).
MAX_ANSWER_HEADERS = 100
#: How long the rest of an answer may take once its status line came: longer, and its
#: connection is closed instead of kept (the delivery counts by its status either way).
ANSWER_REST_S = 1.0

_Origin = tuple[str, str, int]
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _StaleError(Exception):
    """A kept connection the receiver had closed: nothing of an answer came back."""


class Webhook:
    """POST the event's body, signed, with its idempotency key; any 2xx is delivered.

    One HTTP/1.1 request per delivery, on the event loop: the worker shares the loop,
    and a general HTTP client costs it several times the CPU per request (httpx: about
    2 ms; the bench's outbox phase), a thread per request the GIL. Connections are kept
    alive per receiver for the notifier's run (:data:`IDLE_PER_RECEIVER` idle at most,
    closed by :meth:`close`), so a burst of deliveries to one receiver costs one TCP and
    TLS handshake, not one each. A kept connection the receiver has closed meanwhile is
    replaced once by a new one, so it never fails a delivery; TLS is verified on each
    new connection, and each delivery has its timeout.
    """

    def __init__(
        self,
        public_url: str,
        timeout_s: float,
        now: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.public_url = public_url
        self.timeout_s = timeout_s
        self.now = now
        #: How receivers are verified: the system's CAs unless given.
        self.tls = tls or ssl.create_default_context()
        self._secrets: dict[str, tuple[float, bytes]] = {}
        self._idle: dict[_Origin, list[_Conn]] = {}

    def _secret(self, path: str) -> bytes:
        now = time.monotonic()
        read = self._secrets.get(path)
        if read is None or now - read[0] > SECRET_TTL_S:
            read = (now, read_secret(Path(path)))
            self._secrets[path] = read
        return read[1]

    async def send(self, n: Notification) -> None:
        assert n.config is not None
        secret = self._secret(n.config["secret_file"])
        if not secret:
            raise DeliveryError("secret_empty")
        body = message.encode(message.body(n, self.public_url))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, int(self.now()), body),
            IDEMPOTENCY_HEADER: n.key,
            "User-Agent": "homemonitor-notifier",
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await self._post(n.config["url"], body, headers)
        except TimeoutError as exc:
            raise DeliveryError("timeout") from exc
        except (OSError, ValueError) as exc:
            raise DeliveryError(type(exc).__name__) from exc
        if not 200 <= status < 300:
            raise DeliveryError(f"http_{status}")

    async def close(self) -> None:
        """Close the connections kept for the next deliveries."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await _close(conn)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The status of the answer to one POST (the URL is the registry's, checked there)."""
        parts = urlsplit(url)
        tls = self.tls if parts.scheme == "https" else None
        host = parts.hostname or ""
        origin = (parts.scheme, host, parts.port or (443 if tls else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        request = "\r\n".join([*lines, "", ""]).encode("ascii") + body
        kept = self._take(origin)
        if kept is not None:
            try:
                return await self._exchange(origin, kept, request)
            except (_StaleError, ConnectionError):
                pass  # the receiver closed it while it was idle: a new one
        conn = await asyncio.open_connection(
            host, origin[2], ssl=tls, server_hostname=host if tls else None
        )
        try:
            return await self._exchange(origin, conn, request)
        except _StaleError as exc:
            msg = "not an HTTP/1.x answer"
            raise ValueError(msg) from exc

    def _take(self, origin: _Origin) -> _Conn | None:
        """A kept connection to ``origin`` the receiver has not closed, if any."""
        conns = self._idle.get(origin, [])
        while conns:
            reader, writer = conns.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _exchange(self, origin: _Origin, conn: _Conn, request: bytes) -> int:
        """Send ``request`` on ``conn``, read the whole answer, keep ``conn`` if it may be."""
        reader, writer = conn
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()  # b"HTTP/1.1 204 No Content\r\n"
            if not status_line:
                raise _StaleError
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1."):
                msg = "not an HTTP/1.x answer"
                raise ValueError(msg)
            status = int(rest[:3])
            keep = False
            with contextlib.suppress(
                TimeoutError, ValueError, OSError, asyncio.IncompleteReadError
            ):
                async with asyncio.timeout(ANSWER_REST_S):
                    keep = await _rest(reader, status, version)
        except BaseException:
            await _close(conn)  # in an unknown state: half an answer, a timeout, a bug
            raise
        conns = self._idle.setdefault(origin, [])
        if keep and len(conns) < IDLE_PER_RECEIVER:
            conns.append(conn)
        else:
            await _close(conn)
        return status


async def _rest(reader: asyncio.StreamReader, status: int, version: bytes) -> bool:
    """Read the rest of an answer (its body discarded) if it says where it ends; whether
    its connection may carry the next request."""
    fields: dict[bytes, bytes] = {}
    for _ in range(MAX_ANSWER_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            return False  # the receiver closed it
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    else:
        return False
    keep = version == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"")
    if status < 200:
        return False  # an interim answer (never asked for): the final one would follow
    if status in (204, 304):
        return keep
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        return keep and await _chunks(reader)
    length = fields.get(b"content-length")
    if length is None or not length.isdigit() or int(length) > MAX_ANSWER_BODY:
        return False  # ends when the receiver closes it, or too long to read
    await reader.readexactly(int(length))
    return keep


async def _chunks(reader: asyncio.StreamReader) -> bool:
    """Read a chunked body to its end; False if too long to (the connection is closed)."""
    total = 0
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"x", 16)
        total += size
        if total > MAX_ANSWER_BODY:
            return False
        if size == 0:
            break
        await reader.readexactly(size + 2)  # the chunk and its CRLF
    for _ in range(MAX_ANSWER_HEADERS):  # trailers, to the blank line
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            return True
    return False


async def _close(conn: _Conn) -> None:
    writer = conn[1]
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class Email:
    """SMTP with STARTTLS and the settings' credentials, to the notification's recipients."""

    def __init__(self, settings: Settings, public_url: str) -> None:
        self.settings = settings
        self.public_url = public_url

    async def send(self, n: Notification) -> None:
        if not n.recipients:
            raise NothingToSend("no_address")
        if self.settings.smtp_host is None:
            raise DeliveryError("smtp_not_configured")
        msg = message.email(n, self.public_url, self.settings.smtp_from)
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        s = self.settings
        assert s.smtp_host is not None
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.notify_timeout_s) as smtp:
                smtp.ehlo()
                if s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=s.smtp_tls_ca))
                    smtp.ehlo()
                if s.smtp_username is not None:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    smtp.login(s.smtp_username, password)
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"smtp_{exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(type(exc).__name__) from exc


class Mqtt:
    """Publishes at QoS 1 on one connection of its own (opened when first needed).

    ``alerts`` is the alert topic of the team whose channel it is (the alert's care team,
    or the team the event addresses), ``feedback`` the topic of the
    gateway that sent the reading that opened the alert (``readings.gateway_id``).
    """

    def __init__(self, settings: Settings, public_url: str) -> None:
        self.settings = settings
        self.public_url = public_url
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    async def send(self, n: Notification) -> None:
        if n.channel == "feedback":
            if n.gateway_id is None:
                raise NothingToSend("no_gateway")
            topic = feedback_topic(n.gateway_id)
            payload = message.encode(message.feedback(n, datetime.now(UTC)))
        else:
            topic = alerts_topic(n.team)
            payload = message.encode(message.body(n, self.public_url))
        try:
            client = await self._connected()
            await client.publish(topic, payload, qos=1)
        except (aiomqtt.MqttError, OSError) as exc:
            await self.close()  # a new connection for the next try
            raise DeliveryError(type(exc).__name__) from exc

    async def _connected(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is None:
                s = self.settings
                assert s.mqtt_host is not None
                tls = None
                if s.mqtt_tls_ca:
                    tls = aiomqtt.TLSParameters(ca_certs=s.mqtt_tls_ca, cert_reqs=ssl.CERT_REQUIRED)
                client = aiomqtt.Client(
                    s.mqtt_host,
                    s.mqtt_port,
                    identifier=f"{s.mqtt_client_id}-notifier",
                    username=s.mqtt_username,
                    password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
                    protocol=aiomqtt.ProtocolVersion.V5
                    if s.mqtt_protocol == "5"
                    else aiomqtt.ProtocolVersion.V311,
                    keepalive=30,
                    tls_params=tls,
                    timeout=s.notify_timeout_s,
                )
                stack = contextlib.AsyncExitStack()
                await stack.enter_async_context(client)
                self._stack, self._client = stack, client
            return self._client

    async def close(self) -> None:
        """Disconnect, if connected."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await stack.aclose()
