"""The device and gateway side of homemonitor: simulators, encoders, a reference gateway.

* :mod:`.physiology` and :mod:`.scenarios`: seedable vital-sign models, clinical scenarios
  and device faults, producing deterministic payload sequences;
* :mod:`.encoders`: a measurement as native JSON, FHIR R4 or a Bluetooth envelope;
* :mod:`.gateway`: a store-and-forward gateway (SQLite outbox, QoS 1, in order);
* :mod:`.simulate`: a demo clinic's registry and a multi-gateway simulation run.
"""

from homemonitor_devices.clock import SimClock
from homemonitor_devices.encoders import (
    EncodingError,
    encode,
    encode_ble,
    encode_fhir,
    encode_native,
)
from homemonitor_devices.gateway import Gateway, GatewayError, GatewayStats, TlsConfig
from homemonitor_devices.measurement import DeviceKind, Measurement
from homemonitor_devices.physiology import Baseline, Physiology
from homemonitor_devices.scenarios import (
    SCENARIOS,
    Binding,
    Course,
    Fault,
    PatientPlan,
    Publication,
    run_patient,
)
from homemonitor_devices.simulate import Assignments, SimulationSummary, demo_clinic, run_simulation

__all__ = [
    "SCENARIOS",
    "Assignments",
    "Baseline",
    "Binding",
    "Course",
    "DeviceKind",
    "EncodingError",
    "Fault",
    "Gateway",
    "GatewayError",
    "GatewayStats",
    "Measurement",
    "PatientPlan",
    "Physiology",
    "Publication",
    "SimClock",
    "SimulationSummary",
    "TlsConfig",
    "demo_clinic",
    "encode",
    "encode_ble",
    "encode_fhir",
    "encode_native",
    "run_patient",
    "run_simulation",
]
