"""FHIR R4 out: readings as vital-signs Observations, alerts as Flags, and Bulk Data export.

:mod:`~homemonitor.fhir_out.resources` maps stored rows to resources (pure, no I/O). The
routes are :mod:`homemonitor.api.fhir`, the export jobs :mod:`homemonitor.api.fhir_export`;
``docs/fhir.md`` ("Out") documents all of it.
"""

from homemonitor.fhir_out.resources import (
    DEFAULT_PATIENT_SYSTEM,
    AlertRecord,
    ReadingRecord,
    bundle,
    flag,
    instant,
    observation,
    observation_id,
    operation_outcome,
)

__all__ = [
    "DEFAULT_PATIENT_SYSTEM",
    "AlertRecord",
    "ReadingRecord",
    "bundle",
    "flag",
    "instant",
    "observation",
    "observation_id",
    "operation_outcome",
]
