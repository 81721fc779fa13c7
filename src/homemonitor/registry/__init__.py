"""The registry: care teams, clinicians, patients, gateways, devices, pairings, bindings, plans.

Two halves. The description (:mod:`~homemonitor.registry.description`): :func:`apply`
loads a YAML or JSON description idempotently (the file is the truth for everything it
names; care-plan versions are immutable history). The cache
(:mod:`~homemonitor.registry.cache`): :class:`RegistryCache` is the worker's read-only
copy (gateways, device pairings and bindings, current plans resolved) for resolving a
reading's patient and evaluating its plan per batch, reloaded when the registry changes.
Care-plan versions are stored by :mod:`~homemonitor.registry.plans`, for the registry
file and the API alike.
"""

from __future__ import annotations

from homemonitor.registry.cache import Connect, RegistryCache
from homemonitor.registry.description import (
    NOTIFY_CHANNEL,
    ApplySummary,
    RegistryIn,
    apply,
    load_file,
    parse,
    unpaired_devices,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "ApplySummary",
    "Connect",
    "RegistryCache",
    "RegistryIn",
    "apply",
    "load_file",
    "parse",
    "unpaired_devices",
]
