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


class Webhook:
    """POST the event's body, signed, with its idempotency key; any 2xx is delivered.

    One HTTP/1.1 request per delivery on a connection of its own (``Connection: close``),
    on the event loop; only the status line of the answer is read. The worker shares the
    loop, and a general HTTP client costs it several times the CPU per request (httpx:
    about 2 ms; the bench's outbox phase), a thread per request the GIL.
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

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The status of the answer to one POST (the URL is the registry's, checked there)."""
        parts = urlsplit(url)
        tls = self.tls if parts.scheme == "https" else None
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None
        )
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            authority = parts.netloc.rpartition("@")[2]
            lines = [
                f"POST {target} HTTP/1.1",
                f"Host: {authority}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *(f"{name}: {value}" for name, value in headers.items()),
            ]
            writer.write("\r\n".join([*lines, "", ""]).encode("ascii") + body)
            await writer.drain()
            status_line = await reader.readline()  # b"HTTP/1.1 204 No Content\r\n"
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1."):
                msg = "not an HTTP/1.x answer"
                raise ValueError(msg)
            return int(rest[:3])
        finally:
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
