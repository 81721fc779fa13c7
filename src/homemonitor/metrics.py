"""Prometheus metrics of the pipeline, in one container that takes its registry.

Names follow ``homemonitor_<noun>_<unit>``; labels are bounded (reasons, severities,
formats, API actions) and never name a patient, a device or a value: readings live in
the database.

Most metrics describe the replica that exports them, and adding them up over replicas
(``sum``) gives the whole service. One does not: ``homemonitor_alerts_open`` is read from
the database, which every replica shares, so every replica exports the same number.
Aggregate it with ``max`` (``deploy/prometheus/alerts.yml`` records
``severity:homemonitor_alerts_open:max``), never with ``sum``; so is
``homemonitor_scheduler_lag_seconds``. A replica that cannot read the
database exports no ``homemonitor_alerts_open`` at all rather than a stale number.

The process (``process_*``, ``python_*``) and ``homemonitor_build_info{version}`` are
exported too.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from homemonitor import __version__
from homemonitor.access_actions import ACTIONS, AccessAction, kind
from homemonitor.contract.readings import Reason, Rejection

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: The notification channels (``homemonitor_notifications_*_total{channel}``).
NOTIFY_CHANNELS = ("webhook", "email", "mqtt", "feedback")

#: The tables the retention job deletes from (``homemonitor_retention_deleted_rows_total``).
#: (Never ``alert_events``: an alert's events, ``notified`` too, are its history.)
RETENTION_TABLES = ("quarantine", "access_log", "scheduled_jobs", "outbox")


class Metrics:
    """Every metric homemonitor exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Info(
            "homemonitor_build", "The homemonitor version this process runs.", registry=r
        )
        self.build_info.info({"version": __version__})
        self.messages_received = Counter(
            "homemonitor_messages_received_total", "MQTT messages received.", ["format"], registry=r
        )
        self.readings_stored = Counter(
            "homemonitor_readings_stored_total", "Readings committed to the database.", registry=r
        )
        self.readings_duplicate = Counter(
            "homemonitor_readings_duplicate_total",
            "Readings already stored (redelivery or duplicate send), not stored again.",
            registry=r,
        )
        self.readings_flagged = Counter(
            "homemonitor_readings_flagged_total",
            "Readings stored with a clock flag, never alerted as current.",
            ["flag"],
            registry=r,
        )
        self.messages_rejected = Counter(
            "homemonitor_messages_rejected_total",
            "Whole messages quarantined (nothing in them could be read), by reason.",
            ["reason"],
            registry=r,
        )
        self.readings_rejected = Counter(
            "homemonitor_readings_rejected_total",
            "Readings quarantined from a message whose other readings went on, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "homemonitor_batch_size_messages",
            "Messages per committed batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "homemonitor_commit_duration_seconds",
            "Time to commit one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.receive_to_stored = Histogram(
            "homemonitor_receive_to_stored_seconds",
            "From the worker receiving a message to its batch committed.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_to_stored = Histogram(
            "homemonitor_publish_to_stored_seconds",
            "From the gateway's sent_at to commit (gateway clocks included).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts_opened = Counter(
            "homemonitor_alerts_opened_total",
            "Alert episodes opened by this replica, by severity at opening.",
            ["severity"],
            registry=r,
        )
        self.plan_evaluations = Counter(
            "homemonitor_care_plan_evaluations_total",
            "Patients in a batch with new readings, by how their care plan was run: "
            "'evaluated' (the rules engine, over stored history) or 'screened' (no "
            "episode to move, and plain thresholds that nothing reached or readings "
            "inside the patient's quiet envelope: no engine run).",
            ["path"],
            registry=r,
        )
        self.registry_revision = Gauge(
            "homemonitor_registry_revision",
            "The registry revision this replica's cache holds (bumped by registry apply and "
            "by a care-plan change through the API): equal on every replica once a change "
            "reached them all.",
            registry=r,
        )
        self.care_plans_not_in_force = Gauge(
            "homemonitor_care_plans_not_in_force",
            "Patients whose newest care-plan version does not resolve against the shipped "
            "templates (a template changed under it), by what runs instead: 'older' (their "
            "newest version that resolves) or 'none' (no version resolves: their readings are "
            "stored, no rule runs, no alert opens). Set at each registry load.",
            ["instead"],
            registry=r,
        )
        self.alerts_open = Gauge(
            "homemonitor_alerts_open",
            "Alert episodes not resolved, in the whole database: the same on every replica, "
            "aggregate with max(), not sum().",
            ["severity"],
            registry=r,
        )
        self.broker_connected = Gauge(
            "homemonitor_broker_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.database_up = Gauge(
            "homemonitor_database_up", "1 while the database answers.", registry=r
        )
        self.inflight = Gauge(
            "homemonitor_inflight_messages",
            "Messages received and not yet acknowledged.",
            registry=r,
        )
        self.inflight_limit = Gauge(
            "homemonitor_inflight_limit_messages",
            "The configured bound on in-flight messages (HOMEMONITOR_MAX_INFLIGHT).",
            registry=r,
        )
        self.commit_retries = Counter(
            "homemonitor_commit_retries_total",
            "Batch commits retried after a database error.",
            registry=r,
        )
        self.api_patient_reads = Counter(
            "homemonitor_api_patient_reads_total",
            "API requests that returned patient data (each also access-logged), by action.",
            ["action"],
            registry=r,
        )
        self.api_patient_writes = Counter(
            "homemonitor_api_patient_writes_total",
            "API requests that changed patient data, e.g. acknowledged an alert (each also "
            "access-logged), by action.",
            ["action"],
            registry=r,
        )
        self.api_denied = Counter(
            "homemonitor_api_denied_total",
            "API requests refused: 'unauthenticated' (401, not access-logged), "
            "'not_visible' (an id outside the clinician's care team or none; access-logged) "
            "'role' (403: an ops route asked by another role; not access-logged) or 'csrf' "
            "(403: a change sent with the web session cookie but not its CSRF token).",
            ["reason"],
            registry=r,
        )
        self.scheduler_runs = Counter(
            "homemonitor_scheduler_jobs_run_total",
            "Scheduled jobs this replica ran to the end, by job name.",
            ["job"],
            registry=r,
        )
        self.scheduler_failures = Counter(
            "homemonitor_scheduler_jobs_failed_total",
            "Scheduled job runs that raised (each retried with backoff), by job name.",
            ["job"],
            registry=r,
        )
        self.scheduler_dead = Counter(
            "homemonitor_scheduler_jobs_dead_total",
            "One-off jobs given up on after max_attempts failures in a row, by job name.",
            ["job"],
            registry=r,
        )
        self.scheduler_lag = Gauge(
            "homemonitor_scheduler_lag_seconds",
            "How long the oldest due job has waited (0 when none is due): read from the "
            "database, the same on every replica; aggregate with max().",
            registry=r,
        )
        self.retention_deleted = Counter(
            "homemonitor_retention_deleted_rows_total",
            "Rows the retention job deleted as older than their table's retention, by table.",
            ["table"],
            registry=r,
        )
        for table in RETENTION_TABLES:
            self.retention_deleted.labels(table)
        self._notification_metrics(r)
        for reason in Reason:  # every series from the start: rate() sees the first one
            self.messages_rejected.labels(reason.value)
            self.readings_rejected.labels(reason.value)
        for action in ACTIONS:
            self._api_counter(kind(action)).labels(action)

    def _notification_metrics(self, r: CollectorRegistry) -> None:
        """The notifier's (homemonitor.notify): outcomes per channel, the outbox's backlog."""

        def per_channel(name: str, doc: str) -> Counter:
            counter = Counter(
                f"homemonitor_notifications_{name}_total", doc, ["channel"], registry=r
            )
            for channel in NOTIFY_CHANNELS:
                counter.labels(channel)
            return counter

        self.notifications_sent = per_channel("sent", "Notifications delivered, by channel.")
        self.notifications_failed = per_channel(
            "failed", "Delivery attempts that failed (retried or dead-lettered), by channel."
        )
        self.notifications_retried = per_channel(
            "retried", "Failed deliveries scheduled to be tried again, by channel."
        )
        self.notifications_dead = per_channel(
            "dead", "Notifications dead-lettered after the last attempt failed, by channel."
        )
        self.notifications_skipped = per_channel(
            "skipped",
            "Notifications with nobody to send to (no address, no gateway), by channel.",
        )
        self.outbox_pending = Gauge(
            "homemonitor_outbox_undelivered",
            "Outbox rows not delivered yet, in the whole database: aggregate with max().",
            registry=r,
        )
        self.outbox_oldest = Gauge(
            "homemonitor_outbox_oldest_undelivered_seconds",
            "Age of the oldest undelivered outbox row (0 when none), in the whole database: "
            "aggregate with max().",
            registry=r,
        )
        self.outbox_dead = Gauge(
            "homemonitor_outbox_dead_letters",
            "Dead letters waiting for a replay, in the whole database: aggregate with max().",
            registry=r,
        )

    def rejected(self, rejection: Rejection) -> None:
        """Count one quarantined message or reading: the one place a rejection is counted.

        ``rejection.index`` None means the whole message was refused (malformed,
        oversized, unknown topic, ...); otherwise one reading inside it was.
        """
        counter = self.messages_rejected if rejection.index is None else self.readings_rejected
        counter.labels(rejection.reason.value).inc()

    def api_access(self, action: AccessAction) -> None:
        """Count one API request on patient data, as a read or a write.

        The actions are :data:`homemonitor.access_actions.ACTIONS` (a bounded label,
        checked by mypy); counting never fails the request it counts.
        """
        self._api_counter(kind(action)).labels(action).inc()

    def _api_counter(self, access: Literal["read", "write"]) -> Counter:
        return self.api_patient_reads if access == "read" else self.api_patient_writes
