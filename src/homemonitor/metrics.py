"""Prometheus metrics of the pipeline, in one container that takes its registry.

Names follow ``homemonitor_<noun>_<unit>``; labels are bounded (reasons, severities,
formats) and never name a patient, a device or a value: readings live in the database.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric homemonitor exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.rejected = Counter(
            "homemonitor_rejected_total",
            "Messages or readings quarantined, by reason.",
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
            "homemonitor_alerts_opened_total", "Alert episodes opened.", ["severity"], registry=r
        )
        self.alerts_open = Gauge(
            "homemonitor_alerts_open", "Alert episodes not resolved.", ["severity"], registry=r
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
        self.api_reads = Counter(
            "homemonitor_api_patient_reads_total",
            "API reads of patient data (each also access-logged).",
            ["endpoint"],
            registry=r,
        )
        self.api_denied = Counter(
            "homemonitor_api_denied_total",
            "API requests refused: 'unauthenticated' (401, not access-logged) or "
            "'not_visible' (an id outside the clinician's care team or none; access-logged).",
            ["reason"],
            registry=r,
        )
