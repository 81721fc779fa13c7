"""The project's exceptions: one base class, subclasses that carry the facts."""

from __future__ import annotations


class HomemonitorError(Exception):
    """Base class of every error homemonitor raises on purpose."""


class ConfigurationError(HomemonitorError):
    """A setting or input file is wrong; the message says what to change."""


class RegistryError(HomemonitorError):
    """A registry description (care teams, patients, devices, plans) is invalid."""


class PlanError(HomemonitorError):
    """A care plan cannot be resolved into rules (unknown template, bad override, ...)."""


class ServiceStartError(HomemonitorError):
    """A private broker or database could not be started."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"could not start {what}: {detail}")
        self.what = what
        self.detail = detail


class StorageRefusedError(HomemonitorError):
    """The database refused even a quarantine row made only of fixed text and raw bytes.

    Nothing in such a row comes from the message but its bytes (``bytea``) and its topic
    made safe, so the refusal is the database's state (a full disk, revoked rights, a
    hand-made constraint), not the message's fault: the worker holds the batch
    unacknowledged and retries, as during an outage. (A read-only server, such as a
    demoted primary, never gets this far: its 25006 is a transient error.)
    """

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"the database refused a last-resort quarantine row (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


class SubscriptionRefusedError(HomemonitorError):
    """The broker refused the worker's subscription, or granted less than QoS 1.

    ``code`` is the SUBACK's reason code: 0x80 or above is a refusal (MQTT 5 says why:
    0x87 not authorised, 0x9E shared subscriptions not supported, ...); 0 is a
    subscription granted at QoS 0, under which the broker would neither keep nor
    redeliver what the worker has not acknowledged.
    """

    def __init__(self, topic: str, code: int, reason: str) -> None:
        if code >= 0x80:
            detail = (
                f"the broker refused the subscription to {topic!r} (reason code "
                f"0x{code:02X}, {reason}); check that its ACL lets the worker's user read it"
            )
        else:
            detail = (
                f"the broker granted the subscription to {topic!r} at QoS {code}, not 1: "
                "it would drop what the worker has not acknowledged; check its max_qos"
            )
        super().__init__(detail)
        self.topic = topic
        self.code = code
        self.reason = reason
