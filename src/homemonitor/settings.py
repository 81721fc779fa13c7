"""All settings in one place, from ``HOMEMONITOR_*`` environment variables (or a .env file)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """homemonitor's configuration. Every field is ``HOMEMONITOR_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HOMEMONITOR_", env_file=".env", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN, e.g. postgresql://homemonitor:...@db:5432/homemonitor.",
    )
    mqtt_host: str | None = Field(default=None, description="MQTT broker host.")
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls_ca: str | None = Field(default=None, description="CA file; turns TLS on.")
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_client_id: str = Field(
        default="homemonitor-worker-1",
        description="Fixed client id: the broker keeps this worker's session while it is away.",
    )
    mqtt_shared_group: str | None = Field(
        default=None,
        description="MQTT 5 shared-subscription group; workers in one group split the load.",
    )
    mqtt_session_expiry: int = Field(
        default=7 * 24 * 3600, description="Seconds the broker keeps the session (MQTT 5)."
    )
    batch_max: int = Field(default=500, ge=1, le=10_000, description="Readings per batch.")
    batch_wait_ms: float = Field(default=5.0, ge=0, description="Longest a batch stays open.")
    max_inflight: int = Field(
        default=5000,
        ge=1,
        le=65535,
        description=(
            "Messages received but not yet acknowledged (MQTT 5 Receive Maximum). A worker "
            "carries at most this many per receive-to-commit time: 5000 in 0.3 s is 16 000/s."
        ),
    )
    max_payload_bytes: int = Field(default=256 * 1024, description="Larger payloads are refused.")
    clock_future_tolerance_s: float = 300.0
    clock_stale_after_s: float = 7 * 24 * 3600.0
    retention: str = Field(
        default="5 years",
        pattern=r"^\d+ (days|weeks|months|years)$",
        description="TimescaleDB retention of raw readings.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    shutdown_grace_s: float = Field(default=10.0, description="Drain time after SIGTERM.")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _shared_group_needs_mqtt5(self) -> Self:
        if self.mqtt_shared_group and self.mqtt_protocol != "5":
            msg = (
                "HOMEMONITOR_MQTT_SHARED_GROUP needs HOMEMONITOR_MQTT_PROTOCOL=5: MQTT 3.1.1 "
                "has no shared subscriptions (a broker may take '$share/...' for a plain "
                "topic and deliver nothing); use MQTT 5 or unset the group"
            )
            raise ValueError(msg)
        return self
