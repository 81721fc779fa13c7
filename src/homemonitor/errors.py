"""The project's exceptions: one base class, subclasses that carry the facts."""

from __future__ import annotations


class HomemonitorError(Exception):
    """Base class of every error homemonitor raises on purpose."""


class ConfigurationError(HomemonitorError):
    """A setting or input file is wrong; the message says what to change."""


class RegistryError(HomemonitorError):
    """A registry description (care teams, patients, devices, plans) is invalid."""


class ServiceStartError(HomemonitorError):
    """A private broker or database could not be started."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"could not start {what}: {detail}")
        self.what = what
        self.detail = detail


class StorageRefusedError(HomemonitorError):
    """The database refused even a quarantine row made only of fixed text and raw bytes.

    Nothing in such a row comes from the message but its bytes (``bytea``) and its topic
    made safe, so the refusal is the database's state (read-only after a failover, a
    full disk, revoked rights, a hand-made constraint), not the message's fault: the
    worker holds the batch unacknowledged and retries, as during an outage.
    """

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"the database refused a last-resort quarantine row (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate
