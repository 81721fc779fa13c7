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
