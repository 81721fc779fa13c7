"""What the registry's notifications say, and what each channel is told of an alert."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from homemonitor import registry
from homemonitor.errors import RegistryError
from homemonitor.notify import message
from homemonitor.notify.message import Notification

AT = datetime(2026, 12, 1, 7, 31, 5, tzinfo=UTC)


def _team(notifications: Any) -> dict[str, Any]:
    return {"care_teams": [{"id": "vc-a", "name": "A", "notifications": notifications}]}


def test_a_teams_notifications_become_its_channels() -> None:
    """Webhook, email and MQTT keep their settings; a disabled email is no channel."""
    reg = registry.parse(
        _team(
            {
                "webhook": {"url": "https://clinic.example/hook", "secret_file": "/run/s"},
                "email": {"enabled": False},
                "mqtt": {"alerts": True, "include_values": True},
                "feedback": {"sv": "Mätningen har tagits emot."},
            }
        )
    )
    notifications = reg.care_teams[0].notifications
    assert notifications is not None
    assert {
        "webhook": {
            "url": "https://clinic.example/hook",
            "secret_file": "/run/s",
            "include_values": False,
        },
        "mqtt": {"include_values": True},
        "feedback": {"texts": {"sv": "Mätningen har tagits emot."}},
    } == notifications.channels()


@pytest.mark.parametrize(
    "notifications",
    [
        {"webhook": {"url": "not a url", "secret_file": "/run/s"}},
        {"webhook": {"url": "https://x.example", "secret": "inline secrets are refused"}},
        {"feedback": {"sv": "x" * 281}},
        {"feedback": {"svenska": "fel språkkod"}},
        {"feedback": {}},
        {"sms": {"enabled": True}},
    ],
)
def test_notifications_the_registry_refuses(notifications: dict[str, Any]) -> None:
    """A bad URL, an inline secret, a long or unlabelled text, an unknown channel: refused."""
    with pytest.raises(RegistryError):
        registry.parse(_team(notifications))


def _notification(include_values: bool, **details: Any) -> Notification:
    return Notification(
        outbox_id=1,
        event_id=4711,
        channel="webhook",
        team="vc-a",
        attempt=1,
        config={"include_values": include_values},
        kind="opened",
        at=AT,
        actor="rule",
        clinician_id=None,
        details={"severity": "urgent", "value": 191.0, "sentence": "systolic 191", **details},
        alert={
            "id": 42,
            "patient_id": "p-1",
            "care_team_id": "vc-a",
            "rule": "systolic.high",
            "kind": "threshold",
            "severity": "urgent",
            "status": "open",
            "opening_value": 191.0,
            "worst_value": 191.0,
            "threshold": 180.0,
            "sentence": "systolic 191 at or above the urgent bound 180",
        },
        recipients=("anna@vc-a.example",),
    )


def test_the_webhook_body_carries_ids_and_a_link_and_values_only_when_asked() -> None:
    """Without include_values no measured value anywhere; with it, the alert's values."""
    to = {"level": "team", "clinicians": ["anna"], "team": "vc-a"}
    plain = message.encode(message.body(_notification(False, to=to), "https://hm.example/"))
    assert b"191" not in plain and b"180" not in plain
    body = message.body(_notification(False, to=to), "https://hm.example/")
    assert (
        "4711.webhook",
        "https://hm.example/api/v1/alerts/42",
        {"severity": "urgent", "to": to},
    ) == (
        body["id"],
        body["alert"]["link"],
        body["event"]["details"],
    )
    full = message.body(_notification(True), "https://hm.example")
    assert (191.0, 180.0) == (
        full["alert"]["values"]["opening_value"],
        full["alert"]["values"]["threshold"],
    )
    assert 191.0 == full["event"]["details"]["value"]


def test_an_email_subject_names_no_value_and_no_patient() -> None:
    """The subject: severity, change, alert id; the body: ids and the link."""
    mail = message.email(_notification(False), "https://hm.example", "hm@vc-a.example")
    assert "[homemonitor] Urgent alert opened (alert 42)" == mail["Subject"]
    text = mail.get_content()
    assert "https://hm.example/api/v1/alerts/42" in text
    assert "191" not in text
    assert "191" in message.email(_notification(True), "https://hm.example", "x@y").get_content()


# --- the demo's webhook receiver (notify/catchers.py) -------------------------------------
def test_the_demo_receiver_verifies_each_webhook_and_reports_it_once() -> None:
    """A signed POST is one line of ids; a forged, stale or foreign one is refused (401/404);
    a repeat of a key is answered 2xx and not reported again; no value is ever printed."""
    from homemonitor.notify.catchers import WebhookReceiver  # noqa: PLC0415
    from homemonitor.notify.channels import sign  # noqa: PLC0415

    lines: list[str] = []
    receiver = WebhookReceiver({"vc-a": b"s3cret"}, lines.append)
    to = {"level": "team", "clinicians": ["anna"], "team": "vc-a"}
    n = dataclasses.replace(_notification(False, to=to), kind="escalated")
    body = message.encode(message.body(n, "https://hm.example/"))
    now = int(time.time())

    def post(secret: bytes, at: int, sent: bytes = body, path: str = "/hooks/vc-a") -> int:
        """``sent``, under the signature of ``body``."""
        headers = {"homemonitor-signature": sign(secret, at, body), "idempotency-key": n.key}
        return receiver.receive(path, headers, sent)

    assert [204, 204] == [post(b"s3cret", now), post(b"s3cret", now + 5)]  # the 2nd: a repeat
    assert 401 == post(b"s3cret", now, body.replace(b"urgent", b"warning"))
    assert 401 == post(b"s3cret", now - 301)  # a replay, captured six minutes ago
    assert 401 == post(b"another team's secret", now)
    assert 404 == post(b"s3cret", now, path="/hooks/vc-b")
    assert (1, 3) == (receiver.verified, receiver.rejected)
    assert lines[0].split() == [
        *("webhook", "vc-a", "alert.escalated", "urgent", "alert", "#42", "→", "team"),
        *("(vc-a)", "key", "4711.webhook", "signature", "ok"),
    ]
    assert 4 == len(lines)  # one report, three refusals
    assert [] == [line for line in lines if "191" in line or "p-1" in line]


async def _kept(answer: bytes) -> tuple[bool, bytes]:
    """Whether the webhook keeps the connection after ``answer``, and what of the stream
    (``answer``, then the next answer's b"NEXT") it left unread."""
    from homemonitor.notify.channels import _rest  # noqa: PLC0415 - the parser alone

    status_line, _, rest = answer.partition(b"\r\n")
    reader = asyncio.StreamReader()
    reader.feed_data(rest + b"NEXT")
    reader.feed_eof()
    keep = await _rest(reader, int(status_line[9:12]), status_line[:8])
    return keep, await reader.read()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", (True, b"NEXT")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfine.", (True, b"NEXT")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n"
            b"0\r\nTrailer: t\r\n\r\n",
            (True, b"NEXT"),
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", (False, b"NEXT")),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", (False, b"NEXT")),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", (False, b"until the endNEXT")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n", (False, b"NEXT")),
        (b"HTTP/1.1 100 Continue\r\n\r\n", (False, b"NEXT")),
    ],
)
async def test_a_webhook_keeps_a_connection_only_past_the_whole_answer(
    answer: bytes, expected: tuple[bool, bytes]
) -> None:
    """Kept only when the answer said where it ends, was read to there, and allows it."""
    assert expected == await _kept(answer)
