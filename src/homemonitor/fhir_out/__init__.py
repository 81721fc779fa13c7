"""FHIR R4 out: readings as vital-signs Observations, alerts as Flags, and Bulk Data export.

:mod:`~homemonitor.fhir_out.resources` maps stored rows to resources (pure);
:mod:`~homemonitor.fhir_out.export` runs ``$export`` jobs that write NDJSON files. The
routes are in :mod:`homemonitor.api.fhir`; ``docs/fhir.md`` ("Out") documents all of it.
"""

from homemonitor.fhir_out.resources import (
    DEFAULT_PATIENT_SYSTEM,
    AlertRecord,
    ReadingRecord,
    bundle,
    flag,
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
    "observation",
    "observation_id",
    "operation_outcome",
]
