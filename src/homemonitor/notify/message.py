"""What each channel is told of an alert event, and no more than it needs.

A webhook and the MQTT alert topic get ids, the event's kind, the alert's rule, kind,
severity and status, and a link to the alert in the API: never a measured value, unless
the care team's channel sets ``include_values``. An email's subject names the severity,
the change and the alert id, never a value or a patient; its body has the ids and the
link (and the values only with ``include_values``). The patient's gateway gets the
team's feedback texts and nothing about the alert at all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

#: The version of the webhook and MQTT alert body (docs/notifications.md).
BODY_VERSION = 1
#: What the event's ``details`` may pass on without ``include_values``: who it addresses,
#: and severities (the alert's level is no measured value). The rest can hold values.
_SAFE_DETAILS = ("to", "severity", "previous", "from", "step", "level", "until")
#: With ``include_values``, these too.
_VALUE_DETAILS = ("value", "sentence", "facts", "reason", "measured_at")

_WHAT = {
    "opened": "opened",
    "reopened": "opened again",
    "severity_changed": "changed severity",
    "cleared": "cleared",
    "auto_resolved": "resolved by itself",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
    "assigned": "assigned",
    "escalated": "escalated",
    "snoozed": "snoozed",
    "snooze_ended": "is no longer snoozed",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """One outbox row as the notifier claimed it: the event, its alert, where it goes."""

    outbox_id: int
    event_id: int
    channel: str
    team: str  # whose channel: the alert's care team, or the team the event addresses
    attempt: int  # this delivery's number, 1 for the first
    config: Mapping[str, Any] | None  # None: the team no longer has this channel
    kind: str
    at: datetime
    actor: str
    clinician_id: str | None
    details: Mapping[str, Any]
    alert: Mapping[str, Any]
    gateway_id: str | None = None  # the opening reading's gateway (feedback)
    recipients: tuple[str, ...] = ()  # email addresses (email)

    @property
    def key(self) -> str:
        """The idempotency key: the same for every delivery of this event on this channel.

        ``<event id>.<channel>`` on the alert's own team's channel, ``<event id>.<channel>.<team>``
        on the channel of another team the event addresses (docs/notifications.md).
        """
        if self.team == self.alert["care_team_id"]:
            return f"{self.event_id}.{self.channel}"
        return f"{self.event_id}.{self.channel}.{self.team}"

    @property
    def include_values(self) -> bool:
        return bool(self.config and self.config.get("include_values"))


def link(public_url: str, alert_id: int) -> str:
    """The alert in the API, where a clinician's token shows it (and the access log notes it)."""
    return f"{public_url.rstrip('/')}/api/v1/alerts/{alert_id}"


def body(n: Notification, public_url: str) -> dict[str, Any]:
    """The webhook's and the MQTT alert topic's JSON body."""
    a = n.alert
    details = {k: n.details[k] for k in _SAFE_DETAILS if k in n.details}
    out: dict[str, Any] = {
        "v": BODY_VERSION,
        "id": n.key,
        "type": f"alert.{n.kind}",
        "event": {
            "id": n.event_id,
            "kind": n.kind,
            "at": n.at.astimezone(UTC).isoformat(),
            "actor": n.actor,
            "clinician_id": n.clinician_id,
            "details": details,
        },
        "alert": {
            "id": a["id"],
            "patient_id": a["patient_id"],
            "care_team_id": a["care_team_id"],
            "rule": a["rule"],
            "kind": a["kind"],
            "severity": a["severity"],
            "status": a["status"],
            "link": link(public_url, a["id"]),
        },
    }
    if n.include_values:
        out["event"]["details"] |= {k: n.details[k] for k in _VALUE_DETAILS if k in n.details}
        out["alert"]["values"] = {
            "opening_value": a["opening_value"],
            "worst_value": a["worst_value"],
            "threshold": a["threshold"],
            "explanation": a["sentence"],
        }
    return out


def encode(payload: Mapping[str, Any]) -> bytes:
    """The bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def email(n: Notification, public_url: str, sender: str) -> EmailMessage:
    """The email of an event: no value and no patient id in the subject."""
    a = n.alert
    what = _WHAT.get(n.kind, n.kind)
    msg = EmailMessage()
    msg["Subject"] = f"[homemonitor] {a['severity'].capitalize()} alert {what} (alert {a['id']})"
    msg["From"] = sender
    msg["To"] = ", ".join(n.recipients)
    msg["Message-ID"] = f"<{n.key}@homemonitor>"  # the same on every delivery: dedupe by it
    msg["Idempotency-Key"] = n.key
    lines = [
        f"A {a['severity']} alert of care team {a['care_team_id']} {what}.",
        "",
        f"Alert:    {a['id']} ({a['rule']}, {a['kind']}), now {a['status']}",
        f"Patient:  {a['patient_id']}",
        f"When:     {n.at.astimezone(UTC).isoformat(timespec='seconds')}",
        f"Open it:  {link(public_url, a['id'])}",
    ]
    if n.include_values and a["sentence"]:
        lines += ["", f"Why:      {a['sentence']}"]
    lines += ["", "This message was sent by homemonitor. Do not reply to it."]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def feedback(n: Notification, sent_at: datetime) -> dict[str, Any]:
    """The patient feedback message for the home's gateway: the team's texts, no alert data."""
    texts = dict((n.config or {}).get("texts", {}))
    return {
        "v": BODY_VERSION,
        "type": "feedback",
        "id": n.key,
        "sent_at": sent_at.astimezone(UTC).isoformat(timespec="seconds"),
        "texts": texts,
    }
