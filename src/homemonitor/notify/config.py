"""A care team's ``notifications:`` in the registry, and where they are stored.

.. code-block:: yaml

    notifications:
      webhook: {url: "https://clinic.example/hooks/homemonitor",
                secret_file: /run/secrets/vc-norr-webhook, include_values: false}
      email: {enabled: true}
      mqtt: {alerts: true}
      feedback: {sv: "Din mätning har tagits emot. Ditt vårdteam har informerats.",
                 en: "Your reading was received. Your care team has been told."}

The registry's :class:`~homemonitor.registry.description.CareTeamIn` holds one of these;
``registry apply`` calls :func:`store`, which makes ``notification_channels`` what the file
says for every team it describes (a team without ``notifications:`` has no channels).
A webhook's secret stays in its file: the database holds the path, never the secret.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from homemonitor.fields import PlainText
from homemonitor.storage.database import Conn

_Strict = ConfigDict(extra="forbid", frozen=True)

#: A feedback text's language: ISO 639-1, lower case.
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]
#: The longest feedback text: a gateway shows it on a small screen or reads it aloud.
FEEDBACK_MAX_CHARS = 280


class WebhookIn(BaseModel):
    """POSTs signed with the secret in ``secret_file`` (HMAC-SHA256; docs/notifications.md)."""

    model_config = _Strict
    url: HttpUrl
    secret_file: Path
    #: Also send the values the alert used (opening, worst, threshold, its explanation).
    include_values: bool = False


class EmailIn(BaseModel):
    """Email to the clinicians an event addresses (``details.to``), else the care contact."""

    model_config = _Strict
    enabled: bool = True
    include_values: bool = False


class MqttIn(BaseModel):
    """Alert changes on ``homemonitor/v1/alerts/<care team>``, for the clinic's systems."""

    model_config = _Strict
    alerts: bool = True
    include_values: bool = False


class NotificationsIn(BaseModel):
    """The channels of one care team; an absent key is a channel it does not use."""

    model_config = _Strict
    webhook: WebhookIn | None = None
    email: EmailIn | None = None
    mqtt: MqttIn | None = None
    #: The patient feedback message, per language, sent to the home's gateway when a
    #: reading of theirs raised an alert. Receipt and that the team was told: never advice.
    feedback: dict[Language, Annotated[PlainText, Field(min_length=1, max_length=280)]] | None = (
        Field(default=None, min_length=1)
    )

    def channels(self) -> dict[str, dict[str, Any]]:
        """The ``notification_channels`` rows of this team: channel → config."""
        found: dict[str, dict[str, Any]] = {}
        if self.webhook is not None:
            found["webhook"] = self.webhook.model_dump(mode="json")
        if self.email is not None and self.email.enabled:
            found["email"] = {"include_values": self.email.include_values}
        if self.mqtt is not None and self.mqtt.alerts:
            found["mqtt"] = {"include_values": self.mqtt.include_values}
        if self.feedback:
            found["feedback"] = {"texts": dict(self.feedback)}
        return found


async def store(conn: Conn, teams: Sequence[tuple[str, NotificationsIn | None]]) -> int:
    """Make the channels of each (team id, notifications) what it says; how many there are.

    Runs in the caller's transaction (``registry apply``'s). Outbox rows of a channel a
    team drops are skipped by the notifier, not deleted: they are history.
    """
    rows = [
        (team, channel, json.dumps(config))
        for team, notifications in teams
        if notifications is not None
        for channel, config in notifications.channels().items()
    ]
    await conn.execute(
        "DELETE FROM notification_channels WHERE care_team_id = ANY($1::text[])",
        [team for team, _ in teams],
    )
    await conn.executemany(
        "INSERT INTO notification_channels (care_team_id, channel, config) "
        "VALUES ($1, $2, $3::jsonb)",
        rows,
    )
    return len(rows)
