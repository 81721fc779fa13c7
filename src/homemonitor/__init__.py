"""homemonitor: home-monitoring telemetry ingestion and alerting for primary care.

Readings arrive from device gateways over MQTT, are decoded and validated, checked
against the patient's care plan, stored in PostgreSQL/TimescaleDB, and raise alert
episodes for the patient's care team. See ``docs/protocol.md`` for the gateway contract.
"""

from homemonitor.contract.readings import Decoded, Metric, Quantity, Reading, Reason, Rejection
from homemonitor.errors import HomemonitorError

__all__ = ["Decoded", "HomemonitorError", "Metric", "Quantity", "Reading", "Reason", "Rejection"]
__version__ = "0.1.0"
