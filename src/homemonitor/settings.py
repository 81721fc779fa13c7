"""All settings in one place, from ``HOMEMONITOR_*`` environment variables (or a .env file).

Every secret (a :class:`~pydantic.SecretStr` field) can instead be read from a file named by
``HOMEMONITOR_<NAME>_FILE`` -- how Docker and Kubernetes secrets are mounted -- so that it
never sits in the environment of a process or in a compose file. Setting both the variable
and its ``_FILE`` is an error, as is a file that cannot be read. The database password can
be given apart from the URL (``HOMEMONITOR_DATABASE_PASSWORD`` or its ``_FILE``): it is put
into the URL percent-encoded, so it may hold any character.

A database URL may name several hosts, as libpq reads them
(``postgresql://u@db1:5432,db2:5432/homemonitor``): the pools try them in order and keep
the first that fits their ``target_session_attrs`` (:class:`PostgresURL`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from homemonitor.errors import ConfigurationError
from homemonitor.fhir_out import DEFAULT_PATIENT_SYSTEM
from homemonitor.logs import LogLevel

DEFAULT_RETENTION = "5 years"
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
DEFAULT_QUARANTINE_RETENTION = "90 days"
DEFAULT_OUTBOX_RETENTION = "30 days"
#: The access log is kept at least this long: HSLF-FS 2016:40 4 kap. 9 § 7 ("loggarna
#: sparas minst fem år").
ACCESS_LOG_FLOOR = "5 years"
_RETENTION = re.compile(r"(?P<count>[0-9]{1,7}) (?P<unit>day|week|month|year)s?")
_LONGEST_RETENTION_YEARS = 1000
_GREGORIAN_CYCLE_MONTHS = 400 * 12  # the calendar repeats every 400 years


@functools.cache  # settings are read once; the clock policy asks again
def parse_retention(text: str) -> timedelta:
    """The shortest time PostgreSQL's ``INTERVAL '<text>'`` can span, back from any moment.

    PostgreSQL steps back months and years on the calendar: 5 years before a day is 1 825
    to 1 827 days before it. Counting them at their shortest here means that a reading the
    clock policy accepts is never one the retention job drops as older than ``text``.

    >>> parse_retention("5 years"), parse_retention("1 month"), parse_retention("2 weeks")
    (datetime.timedelta(days=1825), datetime.timedelta(days=28), datetime.timedelta(days=14))
    """
    match = _RETENTION.fullmatch(text)
    if match is None:
        msg = (
            f"retention {text!r} is not a count and a unit such as '5 years' or '90 days'"
            " (units: days, weeks, months, years)"
        )
        raise ValueError(msg)
    count, unit = int(match["count"]), match["unit"]
    if count == 0:
        msg = "retention must be longer than 0: a retention of nothing would refuse every reading"
        raise ValueError(msg)
    months = {"month": count, "year": 12 * count}.get(unit, 0)
    if months > 12 * _LONGEST_RETENTION_YEARS or count > 366 * _LONGEST_RETENTION_YEARS:
        msg = f"retention {text!r} is longer than {_LONGEST_RETENTION_YEARS} years"
        raise ValueError(msg)
    if months:
        return _shortest_months(months)
    return timedelta(days=count * (7 if unit == "week" else 1))


def _shortest_months(months: int) -> timedelta:
    """The fewest days ``months`` consecutive calendar months hold."""

    def first_day(month: int) -> int:
        return date(2000 + month // 12, month % 12 + 1, 1).toordinal()

    return timedelta(
        days=min(
            first_day(start + months) - first_day(start) for start in range(_GREGORIAN_CYCLE_MONTHS)
        )
    )


#: libpq's (PostgreSQL 14+) ``target_session_attrs``, which asyncpg implements too.
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
#: Those that only ever choose a server that is not in recovery: what a writer needs.
WRITABLE_SESSION_ATTRS = ("read-write", "primary")
_MAX_PORT = 65535


@dataclasses.dataclass(frozen=True, slots=True)
class PostgresURL:
    """A ``postgresql://`` URL taken apart as libpq and asyncpg read it: one host or several.

    ``urlsplit(...).port`` cannot read ``h1:5432,h2:5433``; this can, and checks each port.

    >>> url = PostgresURL.parse("postgresql://hm:pw@db1:5432,[::1]:5433/homemonitor?x=1")
    >>> url.hosts, url.where
    ((('db1', 5432), ('[::1]', 5433)), 'db1:5432,[::1]:5433/homemonitor')
    >>> PostgresURL.parse("postgresql://hm@db1:5432,db2:x/hm")
    Traceback (most recent call last):
    ...
    ValueError: port 'x' of host 'db2' is not a number from 1 to 65535
    """

    userinfo: str | None
    hosts: tuple[tuple[str, int | None], ...]
    path: str
    query: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> PostgresURL:
        """Take ``text`` apart, or raise :class:`ValueError` saying what is wrong."""
        url = urlsplit(text)  # ValueError for a bracket left open
        if url.scheme not in ("postgresql", "postgres"):
            msg = "must be a URL like postgresql://user:password@host:5432/database"
            raise ValueError(msg)
        userinfo, at, hostlist = url.netloc.rpartition("@")
        entries = hostlist.split(",")
        hosts = tuple(_host_port(entry, several=len(entries) > 1) for entry in entries)
        query = tuple(parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query)))
        for name, value in query:
            if name == "port":  # asyncpg and libpq also take the ports here
                for port in value.split(","):
                    _port(port, "the 'port' parameter")
            if name == "target_session_attrs" and value not in SESSION_ATTRS:
                msg = f"target_session_attrs={value!r} is not one of {', '.join(SESSION_ATTRS)}"
                raise ValueError(msg)
        return cls(userinfo if at else None, hosts, url.path, query)

    @property
    def where(self) -> str:
        """Hosts, ports and database, never the user or password: for messages and logs."""
        named = ",".join(host if port is None else f"{host}:{port}" for host, port in self.hosts)
        return f"{named or 'localhost'}{self.path}"

    @property
    def target_session_attrs(self) -> str | None:
        """The URL's own ``target_session_attrs``, if it names one (the last one wins)."""
        named = [value for name, value in self.query if name == "target_session_attrs"]
        return named[-1] if named else None


def _host_port(entry: str, *, several: bool) -> tuple[str, int | None]:
    if entry.startswith("["):  # an IPv6 address: [::1] or [::1]:5432
        host, _, rest = entry.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            msg = f"host {entry!r}: only ':port' may follow an IPv6 address in brackets"
            raise ValueError(msg)
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = entry.partition(":")
        port = port_text if colon else None
        if ":" in port_text:
            msg = f"host {entry!r}: an IPv6 address must be written in brackets, [::1]:5432"
            raise ValueError(msg)
    if several and not host:
        msg = f"an empty host in a list of several ({entry!r}): name every host"
        raise ValueError(msg)
    return host, None if port is None else _port(port, f"host {host!r}")


def _port(text: str, of: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= _MAX_PORT):
        msg = f"port {text!r} of {of} is not a number from 1 to {_MAX_PORT}"
        raise ValueError(msg)
    return int(text)


_PREFIX = "HOMEMONITOR_"


class _SecretFiles(PydanticBaseSettingsSource):
    """Secrets read from the files ``HOMEMONITOR_<NAME>_FILE`` names (see the module)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every secret at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if SecretStr not in getattr(field.annotation, "__args__", (field.annotation,)):
                continue
            variable = f"{_PREFIX}{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            if os.environ.get(variable):
                msg = f"{variable} and {variable}_FILE are both set: set one of them"
                raise ConfigurationError(msg)
            try:
                # a trailing line break is the editor's, not the secret's
                values[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                msg = f"{variable}_FILE={path}: cannot read it ({exc})"
                raise ConfigurationError(msg) from exc
        return values


class Settings(BaseSettings):
    """homemonitor's configuration. Every field is ``HOMEMONITOR_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the environment, ``_FILE`` secrets, the .env file."""
        return init_settings, env_settings, _SecretFiles(settings_cls), dotenv_settings

    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "PostgreSQL DSN, e.g. postgresql://homemonitor:...@db:5432/homemonitor, or with "
            "several hosts (db1:5432,db2:5432): every connection goes to the one that takes "
            "writes (target_session_attrs=read-write unless the URL says primary)."
        ),
    )
    database_read_url: SecretStr | None = Field(
        default=None,
        description=(
            "Optional DSN of a replica (or several hosts) for the API's patient reads and "
            "alert lists; target_session_attrs=prefer-standby unless the URL names one. "
            "Access-log rows and every write still go to HOMEMONITOR_DATABASE_URL. A replica "
            "shows what it has replayed: a reading or acknowledgement only just committed "
            "may be missing from a read for as long as the replica lags."
        ),
    )
    database_password: SecretStr | None = Field(
        default=None,
        description=(
            "The database password, when the URLs have none: put into them percent-encoded, "
            "so any character works (best from a file: HOMEMONITOR_DATABASE_PASSWORD_FILE)."
        ),
    )
    mqtt_broker: Literal["mosquitto", "nats"] = Field(
        default="mosquitto",
        description=(
            "Which broker: 'mosquitto' (or another MQTT 5 broker) or 'nats' (NATS Server's "
            "MQTT 3.1.1 gateway on JetStream: MQTT 3.1.1, no shared subscriptions; split the "
            "load with HOMEMONITOR_MQTT_PARTITIONS instead)."
        ),
    )
    mqtt_host: str | None = Field(
        default=None,
        description=(
            "MQTT broker host, or several as host[:port],host[:port] (a NATS cluster's "
            "nodes): the worker connects to the first that answers and moves on to the next "
            "when one is down. A host without a port uses HOMEMONITOR_MQTT_PORT."
        ),
    )
    mqtt_port: int = Field(default=1883, ge=1, le=_MAX_PORT)
    mqtt_connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description=(
            "Longest wait for one broker to answer a connect (and a subscribe) before the "
            "worker tries the next address."
        ),
    )
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
    mqtt_partition_count: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "How many partitions the broker splits the readings into (NATS: the "
            "{{partition(N,1)}} mappings of deploy/nats/nats-server.conf). Set with "
            "HOMEMONITOR_MQTT_PARTITIONS."
        ),
    )
    mqtt_partitions: str | None = Field(
        default=None,
        description=(
            "The partitions this worker owns, e.g. '0-5' or '0,2,4' (of "
            "HOMEMONITOR_MQTT_PARTITION_COUNT): how workers on NATS split the load. Every "
            "partition needs an owner; see deploy/README.md, 'Choosing a broker'."
        ),
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
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, description="Larger payloads are refused."
    )
    max_delivery_attempts: int = Field(
        default=5,
        ge=2,
        le=1000,
        description=(
            "Deliveries of one message before it is quarantined as repeated_failure without "
            "being decoded again: a message that kills the worker cannot do so forever. "
            "Counted only for messages the broker redelivers (DUP), so at least 2."
        ),
    )
    clock_future_tolerance_s: float = 300.0
    clock_stale_after_s: float = 7 * 24 * 3600.0
    retention: str = Field(
        default=DEFAULT_RETENTION,
        description=(
            "How long raw readings are kept, e.g. '5 years' or '90 days' (days, weeks, months,"
            " years): TimescaleDB's retention policy drops older ones, and readings measured"
            " longer ago are refused (beyond_retention) in every storage mode."
        ),
    )
    quarantine_retention: str = Field(
        default=DEFAULT_QUARANTINE_RETENTION,
        description=(
            "How long quarantined messages (raw payloads: patient data) are kept, e.g. "
            "'90 days'; the scheduler's retention job deletes older ones in both storage modes."
        ),
    )
    access_log_retention: str = Field(
        default=ACCESS_LOG_FLOOR,
        description=(
            "How long access-log rows are kept; at least 5 years (HSLF-FS 2016:40 4 kap. 9 §); "
            "the scheduler's retention job deletes older ones."
        ),
    )
    outbox_retention: str = Field(
        default=DEFAULT_OUTBOX_RETENTION,
        description=(
            "How long delivered (and skipped) outbox rows are kept, e.g. '30 days'; their "
            "'notified' events stay in the alert's history; dead letters stay until replayed "
            "(docs/notifications.md)."
        ),
    )
    fhir_patient_system: str = Field(
        default=DEFAULT_PATIENT_SYSTEM,
        description=(
            "The identifier system of the patient in FHIR out (Observation.subject, "
            "Flag.subject): a URI your journal system knows the registry's patient ids by. "
            "The default says they are homemonitor's own ids, not personnummer; see "
            "docs/fhir.md before you set a national system."
        ),
    )
    web_demo_login: bool = Field(
        default=False,
        description=(
            "Offer the demo-only login on /login (choose any clinician, no identity check). "
            "'homemonitor demo' sets it; ignored when HOMEMONITOR_OIDC_ISSUER is set."
        ),
    )
    web_idle_minutes: float = Field(
        default=30.0, gt=0, description="A web session ends after this long without use."
    )
    web_session_hours: float = Field(
        default=12.0, gt=0, description="A web session ends this long after sign-in, used or not."
    )
    web_poll_seconds: float = Field(
        default=15.0,
        ge=0.5,
        description="How often the Inbox refreshes when the live alert stream is not there.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description=(
            "The region's OpenID provider (its issuer URL; /.well-known/openid-configuration "
            "is read from it). Turns single sign-on on; see docs/web.md."
        ),
    )
    oidc_client_id: str | None = Field(default=None, description="This service's client id there.")
    oidc_client_secret: SecretStr | None = Field(
        default=None,
        description="Its client secret (best from a file: HOMEMONITOR_OIDC_CLIENT_SECRET_FILE).",
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        description="The callback registered with the provider: https://<this host>/auth/callback.",
    )
    oidc_hsa_claim: str = Field(
        default="employeeHsaId",
        description="The ID token claim holding the HSA id that names the clinician.",
    )
    oidc_scope: str = Field(default="openid", description="The scopes asked for at sign-in.")
    # Notifications (docs/notifications.md): delivery of the outbox, SMTP, links.
    public_url: str | None = Field(
        default=None,
        description=(
            "The API's address as clinicians' systems reach it, for the link in every "
            "notification (e.g. https://homemonitor.region.se); default http://HOST:PORT."
        ),
    )
    notify_max_attempts: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Deliveries of one notification before it is a dead letter.",
    )
    notify_retry_first_s: float = Field(
        default=10.0, gt=0, description="Wait after a failed delivery, doubled per failure."
    )
    notify_retry_cap_s: float = Field(
        default=3600.0, gt=0, description="The longest wait between two deliveries."
    )
    notify_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one delivery (HTTP, SMTP, MQTT) may take."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server; email needs it.")
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(
        default="homemonitor@localhost", description="The From: address of notifications."
    )
    smtp_starttls: bool = Field(
        default=True, description="Upgrade with STARTTLS (required unless set false)."
    )
    smtp_tls_ca: str | None = Field(
        default=None, description="CA file to verify the SMTP server by (default: the system's)."
    )
    stream_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Seconds between heartbeats of the live alert stream."
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    shutdown_grace_s: float = Field(default=10.0, description="Drain time after SIGTERM.")
    log_format: Literal["text", "json"] = "text"
    log_level: LogLevel = "INFO"

    @field_validator("mqtt_partitions")
    @classmethod
    def _partition_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_partitions(value)
        return value

    @field_validator("database_url", "database_read_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        """``postgresql://`` URLs (what asyncpg takes); checked here, not at first connect."""
        if value is not None:
            PostgresURL.parse(value.get_secret_value())
        return value

    @field_validator("database_url")
    @classmethod
    def _writable(cls, value: SecretStr | None) -> SecretStr | None:
        """The worker writes through this URL: it must not choose a standby."""
        named = None if value is None else PostgresURL.parse(value.get_secret_value())
        attrs = None if named is None else named.target_session_attrs
        if attrs not in (None, *WRITABLE_SESSION_ATTRS):
            msg = (
                f"target_session_attrs={attrs} could choose a server that "
                "takes no writes; leave it out (read-write is used) or use read-write or "
                "primary (a replica for reads is HOMEMONITOR_DATABASE_READ_URL)"
            )
            raise ValueError(msg)
        return value

    @field_validator("fhir_patient_system")
    @classmethod
    def _absolute_uri(cls, value: str) -> str:
        """A FHIR ``Identifier.system`` is an absolute URI (urn:oid:..., https://...)."""
        scheme = urlsplit(value).scheme
        if not scheme or not value.isascii() or any(c.isspace() for c in value):
            msg = "must be an absolute URI such as urn:oid:1.2.752.... or https://..."
            raise ValueError(msg)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("retention", "quarantine_retention", "outbox_retention")
    @classmethod
    def _check_retention(cls, value: str) -> str:
        parse_retention(value)  # a clear error at load, naming the field, not at first use
        return value

    @field_validator("access_log_retention")
    @classmethod
    def _access_log_kept_five_years(cls, value: str) -> str:
        """Never shorter than the law's floor, however the period is written."""
        if parse_retention(value) < parse_retention(ACCESS_LOG_FLOOR):
            msg = (
                f"access_log_retention {value!r} is shorter than 5 years: HSLF-FS 2016:40 "
                "4 kap. 9 § requires access logs to be kept at least five years"
            )
            raise ValueError(msg)
        return value

    @property
    def retention_period(self) -> timedelta:
        """``retention`` at its shortest (:func:`parse_retention`)."""
        return parse_retention(self.retention)

    @model_validator(mode="after")
    def _password_into_url(self) -> Self:
        if self.database_password is None:
            return self
        if self.database_url is None:
            msg = "HOMEMONITOR_DATABASE_PASSWORD is set but HOMEMONITOR_DATABASE_URL is not"
            raise ValueError(msg)
        password = self.database_password.get_secret_value()
        self.database_url = _with_password(self.database_url, password, "DATABASE_URL")
        if self.database_read_url is not None:
            read = _with_password(self.database_read_url, password, "DATABASE_READ_URL")
            self.database_read_url = read
        self.database_password = None  # it lives in the URLs now, and only there
        return self

    @field_validator("mqtt_host")
    @classmethod
    def _broker_addresses(cls, value: str | None) -> str | None:
        if value is not None:
            broker_addresses(value, 1883)  # a clear error at load, not at first connect
        return value

    @property
    def mqtt_addresses(self) -> list[tuple[str, int]]:
        """Every broker address of ``mqtt_host``, in the order the worker tries them."""
        return [] if self.mqtt_host is None else broker_addresses(self.mqtt_host, self.mqtt_port)

    @property
    def owned_partitions(self) -> tuple[int, ...]:
        """The partitions of ``mqtt_partitions``, sorted; empty when the load is not split so."""
        return () if self.mqtt_partitions is None else parse_partitions(self.mqtt_partitions)

    @model_validator(mode="after")
    def _fits_the_broker(self) -> Self:
        """Settings the broker cannot honour are refused at start, saying what to set."""
        if self.mqtt_broker == "nats":
            self._fits_nats()
        self._partitions_fit()
        return self

    def _fits_nats(self) -> None:
        if self.mqtt_shared_group:
            msg = (
                "HOMEMONITOR_MQTT_SHARED_GROUP cannot be used with HOMEMONITOR_MQTT_BROKER=nats: "
                "NATS's MQTT gateway speaks MQTT 3.1.1 only and has no shared subscriptions; it "
                "grants a '$share/...' subscription and then delivers nothing to it while the "
                "gateways get their PUBACKs. Unset HOMEMONITOR_MQTT_SHARED_GROUP; to split the "
                "load between workers give each its own HOMEMONITOR_MQTT_PARTITIONS of "
                "HOMEMONITOR_MQTT_PARTITION_COUNT (deploy/README.md, 'Choosing a broker')"
            )
            raise ValueError(msg)
        if "mqtt_protocol" not in self.model_fields_set:
            self.mqtt_protocol = "3.1.1"  # all NATS speaks
        elif self.mqtt_protocol != "3.1.1":
            msg = (
                "HOMEMONITOR_MQTT_PROTOCOL=5 with HOMEMONITOR_MQTT_BROKER=nats: NATS's MQTT "
                "gateway speaks MQTT 3.1.1 only; set HOMEMONITOR_MQTT_PROTOCOL=3.1.1 or leave "
                "it out"
            )
            raise ValueError(msg)

    def _partitions_fit(self) -> None:
        count, owned = self.mqtt_partition_count, self.mqtt_partitions
        if (count is None) != (owned is None):
            msg = (
                "HOMEMONITOR_MQTT_PARTITIONS and HOMEMONITOR_MQTT_PARTITION_COUNT go together: "
                "set both (the partitions this worker owns, and how many the broker makes) or "
                "neither"
            )
            raise ValueError(msg)
        if count is None:
            return
        if self.mqtt_broker != "nats":
            msg = (
                "HOMEMONITOR_MQTT_PARTITIONS needs HOMEMONITOR_MQTT_BROKER=nats: only NATS's "
                "subject mappings put readings into partition topics; on Mosquitto workers "
                "split the load with HOMEMONITOR_MQTT_SHARED_GROUP"
            )
            raise ValueError(msg)
        outside = [p for p in self.owned_partitions if p >= count]
        if outside:
            msg = (
                f"HOMEMONITOR_MQTT_PARTITIONS names partition {outside[0]}, but there are "
                f"{count} (0 to {count - 1}, HOMEMONITOR_MQTT_PARTITION_COUNT)"
            )
            raise ValueError(msg)

    @model_validator(mode="after")
    def _oidc_complete(self) -> Self:
        if self.oidc_issuer is None:
            return self
        missing = [
            f"HOMEMONITOR_{name.upper()}"
            for name in ("oidc_client_id", "oidc_redirect_url")
            if not getattr(self, name)
        ]
        if missing:
            msg = f"HOMEMONITOR_OIDC_ISSUER is set but {' and '.join(missing)} not"
            raise ValueError(msg)
        return self

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


def _with_password(dsn: SecretStr, password: str, name: str) -> SecretStr:
    """``dsn`` with ``password`` percent-encoded into it (every host of it shares one)."""
    url = urlsplit(dsn.get_secret_value())
    if url.password is not None:
        msg = (
            f"HOMEMONITOR_{name} has a password and HOMEMONITOR_DATABASE_PASSWORD "
            "is set too: keep it in one place"
        )
        raise ValueError(msg)
    user = url.username or ""
    hosts = url.netloc.rpartition("@")[2]  # one host or several: urlsplit keeps them whole
    netloc = f"{user}:{quote(password, safe='')}@{hosts}"
    return SecretStr(urlunsplit(url._replace(netloc=netloc)))


def broker_addresses(text: str, default_port: int) -> list[tuple[str, int]]:
    """``host[:port],host[:port]...`` taken apart; a host without a port gets ``default_port``.

    >>> broker_addresses("nats-1,nats-2:1884, [::1]:1885", 1883)
    [('nats-1', 1883), ('nats-2', 1884), ('::1', 1885)]
    >>> broker_addresses("a,,b", 1883)
    Traceback (most recent call last):
    ...
    ValueError: an empty broker address in 'a,,b': name every host
    """
    addresses = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            msg = f"an empty broker address in {text!r}: name every host"
            raise ValueError(msg)
        host, port = _host_port(entry, several=True)
        addresses.append((host.strip("[]"), default_port if port is None else port))
    return addresses


def parse_partitions(text: str) -> tuple[int, ...]:
    """``'0-2,5'`` as ``(0, 1, 2, 5)``: the partitions a worker owns.

    >>> parse_partitions("4,0-2"), parse_partitions(" 3 ")
    ((0, 1, 2, 4), (3,))
    >>> parse_partitions("2-1")
    Traceback (most recent call last):
    ...
    ValueError: partitions '2-1': '2-1' is not a number or a range such as 0-3
    """
    owned: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        first, dash, last = part.partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())) or (
            dash and int(last) < int(first)
        ):
            msg = f"partitions {text!r}: {part!r} is not a number or a range such as 0-3"
            raise ValueError(msg)
        owned.update(range(int(first), int(last if dash else first) + 1))
    return tuple(sorted(owned))
