"""Notifications against real parts: the outbox trigger, the notifier, webhooks, SMTP, MQTT, SSE.

The webhook receiver is a real HTTP server, the mail server aiosmtpd with STARTTLS and
AUTH, the broker Mosquitto, the database PostgreSQL; the notifier runs in the service (in
this test's loop, or as a process of its own where it is killed).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import httpx
import pytest

from homemonitor import jobs, registry
from homemonitor.api.auth import (
    SESSION_COOKIE,
    digest,
    end_session,
    issue_token,
    open_session,
    revoke_token,
)
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto
from homemonitor.metrics import Metrics
from homemonitor.notify import outbox
from homemonitor.notify.channels import DeliveryError, Webhook
from homemonitor.notify.message import Notification
from homemonitor.notify.outbox import Outcome
from homemonitor.scheduler import ManualClock, Scheduler
from homemonitor.settings import Settings
from tests.conftest import (
    REGISTRY,
    RunningService,
    SmtpServer,
    WebhookReceiver,
    WorkerProcess,
    bp,
    publisher,
    server_tls,
    settings_for,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"whsec-vc-a-0123456789"
TEXTS = {
    "sv": "Din mätning har tagits emot. Ditt vårdteam har informerats.",
    "en": "Your reading was received. Your care team has been told.",
}


async def _channels(db: asyncpg.Connection, tmp_path: Path, **notifications: Any) -> None:
    """Apply the test registry with ``notifications`` on care team vc-a (its secret on disk)."""
    described = copy.deepcopy(REGISTRY)
    if "webhook" in notifications:
        secret_file = tmp_path / "vc-a-webhook"
        secret_file.write_bytes(SECRET + b"\n")
        notifications["webhook"] = {
            "url": notifications["webhook"],
            "secret_file": str(secret_file),
        }
    described["care_teams"][0]["notifications"] = notifications
    await registry.apply(db, registry.parse(described))


async def _alert(db: asyncpg.Connection, status: str = "open") -> int:
    """An alert of p-1 (vc-a), written as the worker would have, without an event."""
    now = datetime.now(UTC)
    explanation = json.dumps(
        {"sentence": "systolic 191", "facts": {"value": 191}, "plan_version": 1}
    )
    alert_id: int = await db.fetchval(
        "INSERT INTO alerts (patient_id, care_team_id, rule, quantity, direction, severity, "
        "peak_severity, status, plan_version, threshold, opening_device_id, opening_metric, "
        "opening_measured_at, opening_value, worst_value, last_measured_at, evaluated_at, "
        "opening_explanation, latest_explanation) VALUES ('p-1', 'vc-a', 'systolic.high', "
        "'systolic', 'high', 'urgent', 'urgent', $1, 1, 180, 'cuff-1', 'blood_pressure', $2, "
        "191, 191, $2, $2, $3, $3) RETURNING id",
        status,
        now,
        explanation,
    )
    return alert_id


async def _event(
    db: asyncpg.Connection, alert_id: int, kind: str, details: dict[str, Any] | None = None
) -> int:
    """An event of ``alert_id`` as the scheduler writes one; its id."""
    event_id: int = await db.fetchval(
        "INSERT INTO alert_events (alert_id, kind, actor, details) "
        "VALUES ($1, $2, 'scheduler', $3::jsonb) RETURNING id",
        alert_id,
        kind,
        json.dumps(details or {}),
    )
    return event_id


async def _outbox(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch("SELECT event_id, channel, status, attempts FROM outbox ORDER BY id")
    return [tuple(r) for r in rows]


async def _notified(db: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT details ->> 'channel' AS channel, details ->> 'outcome' AS outcome "
        "FROM alert_events WHERE kind = 'notified' ORDER BY id"
    )
    return [(r["channel"], r["outcome"]) for r in rows]


def _documented_verify() -> Any:
    """The ``verify`` function of docs/notifications.md, run as a receiver would copy it."""
    text = (ROOT / "docs" / "notifications.md").read_text(encoding="utf-8")
    section = text[text.index("## Verifying a webhook") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/notifications.md", "exec"), namespace)  # noqa: S102
    return namespace["verify"]


async def _on_clock(
    dsn: str, broker: PrivateMosquitto, running: list[RunningService], **settings: Any
) -> tuple[RunningService, ManualClock]:
    """A service (no HTTP) whose notifier runs on a clock the test moves."""
    clock = ManualClock(datetime.now(UTC))
    svc = RunningService(settings_for(dsn, broker, **settings), http=False, clock=clock)
    running.append(svc)
    await svc.start()
    return svc, clock


@pytest.fixture
async def running(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> AsyncIterator[list[RunningService]]:
    """Services a test starts (append them); each is stopped at the end."""
    started: list[RunningService] = []
    yield started
    for svc in started:
        if svc.task is not None and not svc.task.done():
            await svc.stop()


async def test_an_opened_alert_reaches_the_webhook_signed_and_the_mqtt_topics(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    running: list[RunningService],
) -> None:
    """A breaching reading: signed webhook, MQTT alert (ids only), feedback to its gateway."""
    await _channels(
        db, tmp_path, webhook=webhook_receiver.url, mqtt={"alerts": True}, feedback=TEXTS
    )
    svc = RunningService(settings_for(dsn, broker, public_url="https://hm.example"))
    running.append(svc)
    await svc.start()
    measured = datetime.now(UTC) - timedelta(minutes=1)
    got: dict[str, Any] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="other-system") as sub:
        await sub.subscribe("homemonitor/v1/alerts/#", qos=1)
        await sub.subscribe("homemonitor/v1/gw/+/feedback", qos=1)
        async with publisher(broker) as gw:
            await gw.publish(readings_topic("gw-1"), bp("cuff-1", 191, 95, measured), qos=1)
        async with asyncio.timeout(20):
            async for m in sub.messages:
                got[str(m.topic)] = json.loads(m.payload)
                if len(got) == 2:
                    break
    opened = await db.fetchrow("SELECT id, alert_id FROM alert_events WHERE kind = 'opened'")
    await wait_until(lambda: _notified(db), lambda n: len(n) == 3)
    assert [("feedback", "delivered"), ("mqtt", "delivered"), ("webhook", "delivered")] == sorted(
        await _notified(db)
    )
    assert [f"{opened['id']}.webhook"] == webhook_receiver.keys()
    headers, body = webhook_receiver.received[0]
    verify = _documented_verify()
    signature = headers["Homemonitor-Signature"]
    assert verify(SECRET, signature, body)
    assert not verify(SECRET, signature, body.replace(b"urgent", b"warning"))
    assert not verify(SECRET, signature, body, now=time.time() + 301)  # a replay, later
    assert not verify(b"another team's secret", signature, body)
    sent = json.loads(body)
    expected_alert = {
        "id": opened["alert_id"],
        "patient_id": "p-1",
        "care_team_id": "vc-a",
        "rule": "systolic.high",
        "kind": "threshold",
        "severity": "urgent",
        "status": "open",
        "link": f"https://hm.example/api/v1/alerts/{opened['alert_id']}",
    }
    assert ("alert.opened", expected_alert) == (sent["type"], sent["alert"])
    assert [] == _mentions(json.loads(body), 191)  # no measured value without include_values
    alert_topic = got["homemonitor/v1/alerts/vc-a"]
    assert (f"{opened['id']}.mqtt", expected_alert) == (alert_topic["id"], alert_topic["alert"])
    feedback = got["homemonitor/v1/gw/gw-1/feedback"]
    assert {"v", "type", "id", "sent_at", "texts"} == set(feedback)
    assert (TEXTS, f"{opened['id']}.feedback") == (feedback["texts"], feedback["id"])
    # counted just after the delivery's commit, which comes after the receiver had it
    sent_total = ("homemonitor_notifications_sent_total", {"channel": "webhook"})
    await wait_until(lambda: svc.metric_async(*sent_total), lambda n: n == 1)


def _mentions(document: Any, value: float) -> list[Any]:
    """Where a JSON document holds ``value``, as a number or in a text's words (not inside
    a timestamp's fraction of a second, which may well read 191)."""
    if isinstance(document, dict):
        return [m for v in document.values() for m in _mentions(v, value)]
    if isinstance(document, list):
        return [m for v in document for m in _mentions(v, value)]
    if isinstance(document, str):
        return [document] if re.search(rf"(?<![\d.:]){value:g}(?![\d])", document) else []
    return [document] if document == value and not isinstance(document, bool) else []


def _webhook_notification(event_id: int, url: str, secret: Path) -> Notification:
    """The webhook notification of an alert's opening (event ``event_id``), to ``url``."""
    return Notification(
        outbox_id=event_id,
        event_id=event_id,
        channel="webhook",
        team="x",
        attempt=1,
        config={"url": url, "secret_file": str(secret)},
        kind="opened",
        at=datetime.now(UTC),
        actor="rule",
        clinician_id=None,
        details={},
        alert=dict.fromkeys(
            ("id", "patient_id", "care_team_id", "rule", "kind", "severity", "status"), "x"
        ),
    )


async def test_a_webhook_goes_over_verified_https_and_a_refusal_is_a_status(
    tmp_path: Path,
) -> None:
    """The notifier's own HTTP/1.1 client: TLS verified against the CA, 2xx ok, 503 retried."""
    cert = tmp_path / "hook-cert.pem"
    receiver = WebhookReceiver(tls=server_tls(tmp_path, cert))
    receiver.start()
    try:
        secret = tmp_path / "secret"
        secret.write_bytes(SECRET)
        webhook = Webhook("https://hm.example", timeout_s=5)
        notification = _webhook_notification(7, receiver.url, secret)
        with pytest.raises(DeliveryError) as untrusted:
            await webhook.send(notification)  # the system's CAs do not know this server
        assert "SSLCertVerificationError" == untrusted.value.reason
        webhook.tls.load_verify_locations(cert)  # as a clinic's CA would be installed
        await webhook.send(notification)
        receiver.answer = 503
        with pytest.raises(DeliveryError) as refused:
            await webhook.send(notification)
        assert "http_503" == refused.value.reason
        assert ["7.webhook"] * 2 == receiver.keys()
        assert 1 == len(set(receiver.peers))  # one verified connection for both
        assert _documented_verify()(SECRET, receiver.received[0][0]["Homemonitor-Signature"],
                                    receiver.received[0][1])  # fmt: skip
    finally:
        await webhook.close()
        receiver.stop()


async def test_deliveries_to_one_receiver_share_a_connection_it_may_close(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    """Three deliveries in a row use one connection; one the receiver dropped is replaced."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    webhook = Webhook("http://hm.example", timeout_s=5)
    try:
        for event_id in (1, 2, 3):
            await webhook.send(_webhook_notification(event_id, webhook_receiver.url, secret))
        kept = list(webhook_receiver.peers)
        webhook_receiver.stop()  # a restart drops the kept connection
        webhook_receiver.start()
        await webhook.send(_webhook_notification(4, webhook_receiver.url, secret))
    finally:
        await webhook.close()
    assert ["1.webhook", "2.webhook", "3.webhook", "4.webhook"] == webhook_receiver.keys()
    assert (1, 3) == (len(set(kept)), len(kept))
    assert kept[0] != webhook_receiver.peers[3]  # a new connection after the restart


async def test_the_outbox_commits_with_the_alert_change_and_never_follows_its_own_events(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Rolled back: no outbox row; opened: one per channel; pending and notified: none."""
    await _channels(db, tmp_path, webhook="http://127.0.0.1:9/hook", mqtt={"alerts": True})
    alert_id = await _alert(db)
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await _event(db, alert_id, "opened")
            raise RuntimeError  # the change fails after its event was written
    assert [] == await _outbox(db)
    await _event(db, alert_id, "pending")
    opened = await _event(db, alert_id, "opened")
    await _event(db, alert_id, "notified", {"channel": "webhook", "outcome": "delivered"})
    await _event(db, alert_id, "updated")
    assert [(opened, "mqtt", "pending", 0), (opened, "webhook", "pending", 0)] == await _outbox(db)


async def test_a_receiver_down_for_minutes_gets_the_notification_when_it_is_back(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    running: list[RunningService],
) -> None:
    """Refused twice while down (backoff on the scheduler's clock), delivered once back."""
    await _channels(db, tmp_path, webhook=webhook_receiver.url)
    webhook_receiver.stop()
    svc, clock = await _on_clock(
        dsn, broker, running, notify_retry_first_s=60, notify_retry_cap_s=600
    )
    event_id = await _event(db, await _alert(db), "opened")
    await wait_until(lambda: _outbox(db), lambda o: o == [(event_id, "webhook", "pending", 1)])
    retry_at = await db.fetchval("SELECT next_attempt_at FROM outbox")
    assert timedelta(seconds=60) == retry_at - clock.now()
    clock.advance(timedelta(seconds=61))
    await wait_until(lambda: _outbox(db), lambda o: o == [(event_id, "webhook", "pending", 2)])
    assert timedelta(seconds=120) == await db.fetchval("SELECT next_attempt_at FROM outbox") - (
        clock.now()
    )
    webhook_receiver.start()  # back, minutes later on the notifier's clock
    clock.advance(timedelta(seconds=121))
    await wait_until(lambda: _outbox(db), lambda o: o == [(event_id, "webhook", "delivered", 3)])
    assert [f"{event_id}.webhook"] == webhook_receiver.keys()
    expected = [("webhook", "failed"), ("webhook", "failed"), ("webhook", "delivered")]
    assert expected == await _notified(db)

    async def counted() -> tuple[float, float]:  # just after the commits they count
        return (
            await svc.metric_async(
                "homemonitor_notifications_retried_total", {"channel": "webhook"}
            ),
            await svc.metric_async("homemonitor_notifications_sent_total", {"channel": "webhook"}),
        )

    await wait_until(counted, lambda n: n == (2.0, 1.0))


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["notifications", "dead-letters", *args, "--database-url", dsn]
    return subprocess.run(
        [sys.executable, "-m", "homemonitor.cli", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


async def test_a_notification_is_dead_lettered_after_the_bound_and_a_replay_delivers_it(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    running: list[RunningService],
) -> None:
    """Two 500s with max attempts 2: a dead letter the CLI lists; its replay delivers it."""
    await _channels(db, tmp_path, webhook=webhook_receiver.url)
    webhook_receiver.answer = 500
    svc, clock = await _on_clock(
        dsn, broker, running, notify_max_attempts=2, notify_retry_first_s=60
    )
    event_id = await _event(db, await _alert(db), "opened")
    await wait_until(lambda: _outbox(db), lambda o: o[0][3] == 1 if o else False)
    clock.advance(timedelta(seconds=61))
    await wait_until(lambda: _outbox(db), lambda o: o == [(event_id, "webhook", "dead", 2)])
    listed = json.loads(_cli(dsn, "list", "--json").stdout)
    assert [("webhook", "vc-a", "opened", 2, "http_500")] == [
        (r["channel"], r["care_team_id"], r["kind"], r["attempts"], r["last_error"]) for r in listed
    ]
    # counted just after the commit that makes the dead letter visible
    dead = {"channel": "webhook"}
    await wait_until(
        lambda: svc.metric_async("homemonitor_notifications_dead_total", dead), lambda n: n == 1
    )
    webhook_receiver.answer = 200  # the clinic fixed its receiver
    assert "1 dead letters queued again" in _cli(dsn, "replay", str(listed[0]["id"])).stdout
    await wait_until(lambda: _outbox(db), lambda o: o == [(event_id, "webhook", "delivered", 1)])
    assert [f"{event_id}.webhook"] * 3 == webhook_receiver.keys()  # one key, every delivery
    assert "no dead letters match" in _cli(dsn, "list").stdout


async def test_email_goes_over_starttls_to_the_clinicians_the_event_addresses(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    tmp_path: Path,
    smtp_server: SmtpServer,
    running: list[RunningService],
) -> None:
    """details.to names cl-a2: mail to cl-a2; no "to": the care contact; no values in subject."""
    await _channels(db, tmp_path, email={"enabled": True})
    await db.execute(
        "INSERT INTO clinicians (id, care_team_id, name, email) "
        "VALUES ('cl-a2', 'vc-a', 'Doctor A2', 'a2@vc-a.example')"
    )
    await db.execute("UPDATE clinicians SET email = 'a1@vc-a.example' WHERE id = 'cl-a1'")
    svc = RunningService(settings_for(dsn, broker, **smtp_server.settings()), http=False)
    running.append(svc)
    await svc.start()
    alert_id = await _alert(db)
    opened = await _event(db, alert_id, "opened")
    to = {"level": "team", "clinicians": ["cl-a2"], "team": "vc-a"}
    escalated = await _event(db, alert_id, "escalated", {"to": to, "value": 191})
    await wait_until(lambda: asyncio.sleep(0, smtp_server.messages), lambda m: len(m) == 2)
    by_key = {msg["Idempotency-Key"]: (env, msg) for env, msg in smtp_server.messages}
    assert {f"{opened}.email", f"{escalated}.email"} == set(by_key)
    assert ["a1@vc-a.example"] == by_key[f"{opened}.email"][0].rcpt_tos  # the care contact
    envelope, mail = by_key[f"{escalated}.email"]
    assert (["a2@vc-a.example"], "alerts@vc-a.example") == (envelope.rcpt_tos, envelope.mail_from)
    assert f"[homemonitor] Urgent alert escalated (alert {alert_id})" == mail["Subject"]
    text = mail.get_payload(decode=True).decode()
    assert f"/api/v1/alerts/{alert_id}" in text
    assert [] == _mentions(f"{text} {mail['Subject']}", 191)  # no values unless included
    await wait_until(lambda: _notified(db), lambda n: n == [("email", "delivered")] * 2)


async def _streaming(
    dsn: str, broker: PrivateMosquitto, running: list[RunningService]
) -> RunningService:
    """A service whose live streams beat every 0.3 s (and check their sign-in)."""
    svc = RunningService(settings_for(dsn, broker, stream_heartbeat_s=0.3))
    running.append(svc)
    await svc.start()
    return svc


async def _bearer(db: asyncpg.Connection, clinician: str) -> dict[str, str]:
    """The headers of a request with a new API token of ``clinician``."""
    return {"Authorization": f"Bearer {await issue_token(db, clinician)}"}


async def _read_sse(lines: AsyncIterator[str], into: list[str], until: str) -> None:
    """Collect the stream's lines until one contains ``until``."""
    async for line in lines:
        into.append(line)
        if until in line:
            return


async def test_the_live_stream_carries_the_teams_alert_changes_and_resumes(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, running: list[RunningService]
) -> None:
    """An acknowledgement reaches vc-a's stream, not vc-b's; Last-Event-ID resumes; logged."""
    svc = await _streaming(dsn, broker, running)
    alert_id = await _alert(db)
    mine, other = await _bearer(db, "cl-a1"), await _bearer(db, "cl-b1")
    path = "/api/v1/alerts/stream"
    async with httpx.AsyncClient(base_url=svc.url, timeout=20) as http:
        assert 401 == (await http.get(path)).status_code
        async with (
            http.stream("GET", path, headers=mine) as a,
            http.stream("GET", path, headers=other) as b,
        ):
            assert ("text/event-stream", 200) == (
                a.headers["content-type"].split(";")[0],
                a.status_code,
            )
            lines_a: list[str] = []
            lines_b: list[str] = []
            read_a, read_b = a.aiter_lines(), b.aiter_lines()
            await _read_sse(read_a, lines_a, ": heartbeat")  # the stream is open and waiting
            await _read_sse(read_b, lines_b, ": heartbeat")
            acked = await http.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=mine)
            assert 200 == acked.status_code
            async with asyncio.timeout(10):
                await _read_sse(read_a, lines_a, "data: ")
                for _ in range(2):  # two more heartbeats: it read the database after the ack
                    await _read_sse(read_b, lines_b, ": heartbeat")
        event_id = await db.fetchval("SELECT id FROM alert_events WHERE kind = 'acknowledged'")
        data = json.loads(lines_a[-1].removeprefix("data: "))
        assert (f"id: {event_id}", "event: alert") == (lines_a[-3], lines_a[-2])
        assert ("acknowledged", "cl-a1", alert_id, "acknowledged") == (
            data["kind"],
            data["clinician_id"],
            data["alert"]["id"],
            data["alert"]["status"],
        )
        assert not [line for line in lines_b if line.startswith("data: ")]
        resumed: list[str] = []
        headers = mine | {"Last-Event-ID": str(event_id - 1)}
        async with http.stream("GET", path, headers=headers) as again, asyncio.timeout(10):
            await _read_sse(again.aiter_lines(), resumed, "data: ")
        assert event_id == json.loads(resumed[-1].removeprefix("data: "))["event_id"]
    logged = await db.fetch(
        "SELECT clinician_id, requested_id FROM access_log WHERE action = 'alert_stream' "
        "ORDER BY id"
    )
    assert [("cl-a1", "vc-a"), ("cl-b1", "vc-b"), ("cl-a1", "vc-a")] == [tuple(r) for r in logged]


@pytest.mark.slow
async def test_a_notifier_killed_mid_delivery_redelivers_each_key(
    db: asyncpg.Connection,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    worker_process: WorkerProcess,
) -> None:
    """SIGKILL while the receiver holds three requests: after a restart, the same three keys."""
    await _channels(db, tmp_path, webhook=webhook_receiver.url)
    webhook_receiver.hold = True
    alert_id = await _alert(db)
    events = [await _event(db, alert_id, kind) for kind in ("opened", "escalated", "assigned")]
    expected = {f"{e}.webhook" for e in events}
    worker_process.start()
    await wait_until(lambda: asyncio.sleep(0, len(webhook_receiver.received)), lambda n: n == 3, 30)
    worker_process.kill()  # mid-delivery: the receiver has not answered
    assert [("webhook", "pending")] * 3 == [
        (r["channel"], r["status"]) for r in await db.fetch("SELECT * FROM outbox")
    ]
    webhook_receiver.hold = False
    webhook_receiver.release.set()
    worker_process.start()
    await wait_until(
        lambda: db.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'"),
        lambda n: n == 3,
        30,
    )
    keys = webhook_receiver.keys()
    assert expected == set(keys)  # the receiver's unique keys: each notification once
    assert 6 == len(keys)  # each delivered again after the kill, with the key it had
    assert [("webhook", "delivered")] * 3 == await _notified(db)


async def test_the_out_of_hours_team_sees_in_its_stream_the_alerts_routed_to_it(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, running: list[RunningService]
) -> None:
    """An alert of vc-a escalated to its out-of-hours team reaches that team's stream."""
    described = copy.deepcopy(REGISTRY)
    described["care_teams"][0]["out_of_hours"] = "jour-ost"
    described["care_teams"].append(
        {"id": "jour-ost", "name": "Jour Öst", "clinicians": [{"id": "cl-j1", "name": "J"}]}
    )
    await registry.apply(db, registry.parse(described))
    svc = await _streaming(dsn, broker, running)
    alert_id = await _alert(db)
    on_call, other = await _bearer(db, "cl-j1"), await _bearer(db, "cl-b1")
    path = "/api/v1/alerts/stream"
    async with (
        httpx.AsyncClient(base_url=svc.url, timeout=20) as http,
        http.stream("GET", path, headers=on_call) as j,
        http.stream("GET", path, headers=other) as b,
    ):
        lines_j: list[str] = []
        lines_b: list[str] = []
        read_j, read_b = j.aiter_lines(), b.aiter_lines()
        await _read_sse(read_j, lines_j, ": heartbeat")
        await _read_sse(read_b, lines_b, ": heartbeat")
        async with db.transaction():  # as an escalation step to out_of_hours writes it
            await db.execute("UPDATE alerts SET routed_to = 'jour-ost' WHERE id = $1", alert_id)
            escalated = await _event(db, alert_id, "escalated", {"to": {"level": "out_of_hours"}})
        async with asyncio.timeout(10):
            await _read_sse(read_j, lines_j, "data: ")
            for _ in range(2):
                await _read_sse(read_b, lines_b, ": heartbeat")
    data = json.loads(lines_j[-1].removeprefix("data: "))
    assert (escalated, "escalated", alert_id) == (
        data["event_id"],
        data["kind"],
        data["alert"]["id"],
    )
    assert not [line for line in lines_b if line.startswith("data: ")]


async def _ends(lines: AsyncIterator[str], seen: list[str]) -> None:
    """Read the stream to its end (a heartbeat's check ended it)."""
    async with asyncio.timeout(10):
        async for line in lines:
            seen.append(line)


async def test_a_stream_ends_when_its_session_or_token_does(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, running: list[RunningService]
) -> None:
    """Logout, an idle session and a revoked token each end a running stream; heartbeats are
    not activity (an open tab does not keep its session alive); reopening is a 401."""
    svc = await _streaming(dsn, broker, running)
    path = "/api/v1/alerts/stream"
    signed_out, _ = await open_session(db, "cl-a1", "demo")
    idle, _ = await open_session(db, "cl-a1", "demo")
    token = await issue_token(db, "cl-a1")
    token_id = await db.fetchval("SELECT max(id) FROM api_tokens")
    ways = {
        "logout": {"Cookie": f"{SESSION_COOKIE}={signed_out}"},
        "idle": {"Cookie": f"{SESSION_COOKIE}={idle}"},
        "revoked": {"Authorization": f"Bearer {token}"},
    }
    idle_seen = "SELECT last_seen_at FROM web_sessions WHERE secret_sha256 = $1"
    async with httpx.AsyncClient(base_url=svc.url, timeout=20) as http:
        for way, headers in ways.items():
            async with http.stream("GET", path, headers=headers) as s:
                assert 200 == s.status_code, way
                lines = s.aiter_lines()
                seen: list[str] = []
                await _read_sse(lines, seen, ": heartbeat")
                if way == "logout":
                    await end_session(db, signed_out)
                elif way == "idle":
                    before = await db.fetchval(idle_seen, digest(idle))
                    await _read_sse(lines, seen, ": heartbeat")
                    assert before == await db.fetchval(idle_seen, digest(idle))
                    await db.execute(
                        "UPDATE web_sessions SET last_seen_at = now() - interval '31 minutes' "
                        "WHERE secret_sha256 = $1",
                        digest(idle),
                    )
                else:
                    assert await revoke_token(db, token_id)
                await _ends(lines, seen)  # the stream ended: no timeout
            assert 401 == (await http.get(path, headers=headers)).status_code, way


async def test_retention_deletes_delivered_notifications_and_keeps_their_history(
    db: asyncpg.Connection, tmp_path: Path, pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    """Delivered and skipped rows older than 30 days go; their `notified` events (the
    alert's history), a dead letter, a pending row and a recent delivery stay."""
    await _channels(db, tmp_path, mqtt={"alerts": True})
    alert_id = await _alert(db)
    kinds = ("opened", "severity_changed", "escalated", "assigned", "acknowledged")
    events = [await _event(db, alert_id, kind) for kind in kinds]
    now = datetime.now(UTC)
    async with db.transaction():
        claimed = {n.event_id: n for n in await outbox.claim(db, now, 10)}
        await outbox.record(db, [Outcome(claimed[events[0]], "failed", "http_503", now)])
    async with db.transaction():
        claimed = {n.event_id: n for n in await outbox.claim(db, now, 10)}
        outcomes = ("delivered", "delivered", "dead", "skipped", "failed")
        await outbox.record(
            db,
            [
                Outcome(claimed[e], o, None if o == "delivered" else "x", now + timedelta(hours=1))
                for e, o in zip(events, outcomes, strict=True)
            ],
        )
    month = timedelta(days=31)
    await db.execute(
        "UPDATE outbox SET created_at = created_at - $2::interval, "
        "delivered_at = delivered_at - $2::interval, last_error_at = last_error_at - $2::interval "
        "WHERE event_id <> $1",
        events[1],
        month,
    )
    metrics = Metrics()
    settings = Settings(_env_file=None)
    scheduler = Scheduler(
        pools[0], metrics, recurring=[jobs.retention_job(settings, metrics)], clock=ManualClock(now)
    )
    async with pools[0].acquire() as conn:
        await scheduler.register(conn)
    assert 1 == await scheduler.run_due()
    left = await db.fetch("SELECT event_id, status FROM outbox ORDER BY event_id")
    assert [(events[1], "delivered"), (events[2], "dead"), (events[4], "pending")] == [
        tuple(r) for r in left
    ]
    notified = await db.fetch(
        "SELECT (details ->> 'event_id')::bigint AS e, details ->> 'outcome' AS o "
        "FROM alert_events WHERE kind = 'notified' ORDER BY id"
    )
    assert [
        (events[0], "failed"),
        (events[0], "delivered"),
        (events[1], "delivered"),
        (events[2], "dead"),
        (events[3], "skipped"),
        (events[4], "failed"),
    ] == [tuple(r) for r in notified]  # every attempt, of deleted rows too
    assert list(kinds) == [
        r["kind"]
        for r in await db.fetch(
            "SELECT kind FROM alert_events WHERE kind <> 'notified' ORDER BY id"
        )
    ]
    deleted = "homemonitor_retention_deleted_rows_total"
    assert (2.0, None) == (  # no alert_events label: nothing is deleted from there
        metrics.registry.get_sample_value(deleted, {"table": "outbox"}),
        metrics.registry.get_sample_value(deleted, {"table": "alert_events"}),
    )


async def _out_of_hours(db: asyncpg.Connection, tmp_path: Path, own: str, on_call: str) -> None:
    """vc-a (webhook ``own``, email) routes out of hours to jour-ost (webhook ``on_call``,
    email, MQTT), each with its own secret; vc-b has no channels."""
    described = copy.deepcopy(REGISTRY)
    for team in ("vc-a", "jour-ost"):
        (tmp_path / team).write_bytes(SECRET + team.encode())
    a = described["care_teams"][0]
    a["out_of_hours"] = "jour-ost"
    a["clinicians"] = [{"id": "cl-a1", "name": "Nurse A1", "email": "a1@vc-a.example"}]
    a["notifications"] = {
        "webhook": {"url": own, "secret_file": str(tmp_path / "vc-a")},
        "email": {"enabled": True},
    }
    described["care_teams"].append(
        {
            "id": "jour-ost",
            "name": "Jour Öst",
            "clinicians": [{"id": "cl-j1", "name": "J", "email": "j1@jour-ost.example"}],
            "notifications": {
                "webhook": {"url": on_call, "secret_file": str(tmp_path / "jour-ost")},
                "email": {"enabled": True},
                "mqtt": {"alerts": True},
            },
        }
    )
    await registry.apply(db, registry.parse(described))


@pytest.fixture
async def on_call(
    db: asyncpg.Connection, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> AsyncIterator[WebhookReceiver]:
    """jour-ost's webhook receiver, with vc-a routing to jour-ost (:func:`_out_of_hours`;
    vc-a's webhook is ``webhook_receiver``)."""
    receiver = WebhookReceiver()
    receiver.start()
    try:
        await _out_of_hours(db, tmp_path, webhook_receiver.url, receiver.url)
        yield receiver
    finally:
        receiver.stop()


async def test_an_out_of_hours_alert_and_its_escalation_reach_the_on_call_teams_channels(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    webhook_receiver: WebhookReceiver,
    on_call: WebhookReceiver,
    smtp_server: SmtpServer,
    running: list[RunningService],
) -> None:
    """Routed and escalated to jour-ost: its webhook (its secret), its MQTT topic and its
    clinician's email get each step; vc-a's webhook follows its alert; nobody at vc-a is
    emailed; snooze_ended reaches the webhook; addressing vc-b (no channels) sends nothing."""
    svc = RunningService(settings_for(dsn, broker, **smtp_server.settings()), http=False)
    running.append(svc)
    to = {"level": "out_of_hours", "clinicians": ["cl-j1"], "team": "jour-ost"}
    alert_id = await _alert(db)
    async with aiomqtt.Client(broker.host, broker.port, identifier="jour-system") as sub:
        await sub.subscribe("homemonitor/v1/alerts/#", qos=1)
        await svc.start()
        opened = await _event(db, alert_id, "opened", {"to": to})
        escalated = await _event(db, alert_id, "escalated", {"to": to})
        snoozed = await _event(db, alert_id, "snoozed", {"until": "2030-01-01T00:00:00Z"})
        ended = await _event(db, alert_id, "snooze_ended", {"reason": "expired"})
        to_b = {"level": "team", "clinicians": ["cl-b1"], "team": "vc-b"}
        assigned = await _event(db, alert_id, "assigned", {"to": to_b})
        topics: list[tuple[str, str]] = []
        async with asyncio.timeout(20):
            async for m in sub.messages:
                topics.append((str(m.topic), json.loads(m.payload)["id"]))
                if len(topics) == 2:
                    break
    await wait_until(lambda: _notified(db), lambda n: len(n) == 11)
    assert {"delivered"} == {outcome for _, outcome in await _notified(db)}
    assert [
        f"{opened}.webhook.jour-ost",
        f"{escalated}.webhook.jour-ost",
    ] == sorted(on_call.keys())
    verify = _documented_verify()
    for headers, body in on_call.received:
        assert verify(SECRET + b"jour-ost", headers["Homemonitor-Signature"], body)
    assert sorted(f"{e}.webhook" for e in (opened, escalated, snoozed, ended, assigned)) == sorted(
        webhook_receiver.keys()
    )
    for headers, body in webhook_receiver.received:
        assert verify(SECRET + b"vc-a", headers["Homemonitor-Signature"], body)
    assert "alert.snooze_ended" in {json.loads(b)["type"] for _, b in webhook_receiver.received}
    assert [
        ("homemonitor/v1/alerts/jour-ost", f"{opened}.mqtt.jour-ost"),
        ("homemonitor/v1/alerts/jour-ost", f"{escalated}.mqtt.jour-ost"),
    ] == sorted(topics)
    mails = {msg["Idempotency-Key"]: env.rcpt_tos for env, msg in smtp_server.messages}
    assert {
        f"{opened}.email.jour-ost": ["j1@jour-ost.example"],
        f"{escalated}.email.jour-ost": ["j1@jour-ost.example"],
    } == mails
    vc_b = await db.fetchval("SELECT count(*) FROM outbox WHERE care_team_id = 'vc-b'")
    assert 0 == vc_b


async def test_the_on_call_team_an_alert_was_routed_to_hears_it_acknowledged_and_resolved(
    db: asyncpg.Connection,
    dsn: str,
    broker: PrivateMosquitto,
    webhook_receiver: WebhookReceiver,
    on_call: WebhookReceiver,
    smtp_server: SmtpServer,
    running: list[RunningService],
) -> None:
    """Routed to jour-ost, then acknowledged and resolved: both teams' webhooks hear each once."""
    svc = RunningService(settings_for(dsn, broker, **smtp_server.settings()))
    running.append(svc)
    to = {"level": "out_of_hours", "clinicians": ["cl-j1"], "team": "jour-ost"}
    alert_id = await _alert(db)
    async with db.transaction():  # as routing writes an alert opened out of hours
        await db.execute("UPDATE alerts SET routed_to = 'jour-ost' WHERE id = $1", alert_id)
        opened = await _event(db, alert_id, "opened", {"to": to})
    nurse = await _bearer(db, "cl-j1")
    async with aiomqtt.Client(broker.host, broker.port, identifier="jour-system") as sub:
        await sub.subscribe("homemonitor/v1/alerts/#", qos=1)
        await svc.start()
        async with httpx.AsyncClient(base_url=svc.url, timeout=20) as http:
            base = f"/api/v1/alerts/{alert_id}"
            acked = await http.post(f"{base}/acknowledge", headers=nurse)
            resolved = await http.post(
                f"{base}/resolve", json={"note": "Ringt, mår bra."}, headers=nurse
            )
        topics: list[tuple[str, str]] = []
        async with asyncio.timeout(20):
            async for m in sub.messages:
                topics.append((str(m.topic), json.loads(m.payload)["type"]))
                if len(topics) == 3:
                    break
    assert [200, 200] == [acked.status_code, resolved.status_code]
    await wait_until(lambda: _notified(db), lambda n: len(n) == 10)
    assert {"delivered"} == {outcome for _, outcome in await _notified(db)}
    events = dict(
        await db.fetch(
            "SELECT kind, id FROM alert_events WHERE alert_id = $1 "
            "AND kind IN ('acknowledged', 'resolved')",
            alert_id,
        )
    )
    ack, res = events["acknowledged"], events["resolved"]
    assert sorted(
        [f"{opened}.webhook.jour-ost", f"{ack}.webhook.jour-ost", f"{res}.webhook.jour-ost"]
    ) == sorted(on_call.keys())
    assert sorted(f"{e}.webhook" for e in (opened, ack, res)) == sorted(webhook_receiver.keys())
    kinds = ["alert.acknowledged", "alert.opened", "alert.resolved"]
    assert kinds == sorted(json.loads(b)["type"] for _, b in on_call.received)
    assert kinds == sorted(json.loads(b)["type"] for _, b in webhook_receiver.received)
    verify = _documented_verify()
    for headers, body in on_call.received:
        assert verify(SECRET + b"jour-ost", headers["Homemonitor-Signature"], body)
    assert [("homemonitor/v1/alerts/jour-ost", k) for k in kinds] == sorted(topics)
    mails = {msg["Idempotency-Key"]: env.rcpt_tos for env, msg in smtp_server.messages}
    assert {f"{opened}.email.jour-ost": ["j1@jour-ost.example"]} == mails
