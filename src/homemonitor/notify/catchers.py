"""A webhook receiver and a mail catcher on 127.0.0.1, for ``homemonitor demo``.

Both run on the caller's event loop and report each notification that arrives as one
line through ``say``: what the channel carries (kind, severity, alert id, idempotency key;
the mail's recipients and subject), never more. The receiver does what
docs/notifications.md asks of one: it verifies each signature with the team's secret
(:func:`~homemonitor.notify.channels.verify`), refuses a bad or stale one (401), and
answers a repeated idempotency key with 2xx without reporting it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
from collections.abc import Callable, Mapping
from typing import Any

from aiosmtpd.smtp import SMTP

from homemonitor.notify.channels import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify

_PATH = "/hooks/"
_READ_TIMEOUT_S = 10.0
_REASONS = {204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


class WebhookReceiver:
    """Accepts POST ``/hooks/<care team id>``, signed with that team's secret."""

    def __init__(self, secrets: Mapping[str, bytes], say: Callable[[str], None]) -> None:
        self.secrets = dict(secrets)
        self.say = say
        self.verified = 0
        self.rejected = 0
        self._seen: set[str] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, team: str) -> str:
        return f"http://127.0.0.1:{self.port}{_PATH}{team}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP/1.1 request per connection (its answer says ``Connection: close``)."""
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.receive(path, headers, body) if method == "POST" else 404
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            status = 400
        with contextlib.suppress(ConnectionError):
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def receive(self, path: str, headers: Mapping[str, str], body: bytes) -> int:
        """The answer to one POST (``headers`` by lower-case name); reports what came."""
        team = path.removeprefix(_PATH) if path.startswith(_PATH) else None
        secret = self.secrets.get(team or "")
        if secret is None:
            return 404
        if not verify(secret, headers.get(SIGNATURE_HEADER.lower(), ""), body):
            self.rejected += 1
            self.say(f"  webhook  {team:<15} signature REJECTED (401)")
            return 401
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        if key in self._seen:
            return 204  # a repeat: done before
        self._seen.add(key)
        self.verified += 1
        self.say(_line(team or "", json.loads(body), key))
        return 204


def _line(team: str, sent: Mapping[str, Any], key: str) -> str:
    """``webhook <team> <type> <severity> alert #<id> [→ <level>] key <key> signature ok``."""
    alert, event = sent["alert"], sent["event"]
    to = event["details"].get("to") if sent["type"] == "alert.escalated" else None
    where = f"→ {to['level']} ({to['team']})  " if isinstance(to, dict) else ""
    return (
        f"  webhook  {team:<15} {sent['type']:<22} {alert['severity']:<7} "
        f"alert #{alert['id']:<4} {where}key {key}  signature ok"
    )


class MailCatcher:
    """An SMTP server (aiosmtpd) that keeps nothing: one line per message it accepts."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.caught = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="localhost", loop=loop), "127.0.0.1", 0
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.caught += 1
        self.say(f"  mail     to {', '.join(envelope.rcpt_tos)}: {message['Subject']}")
        return "250 OK"


__all__ = ["MailCatcher", "WebhookReceiver"]
