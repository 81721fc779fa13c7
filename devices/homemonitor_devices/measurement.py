"""What a home device measured: the value object every encoder turns into a payload."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from homemonitor.contract.readings import NO_QUALITY, Metric, Quality, Quantity

#: The time zone the simulated homes are in; Bluetooth time stamps are local time.
HOME_TIMEZONE = "Europe/Stockholm"
HOME_TZ = ZoneInfo(HOME_TIMEZONE)


class DeviceKind(enum.StrEnum):
    """The kinds of device the registry knows (``devices[].kind``)."""

    BLOOD_PRESSURE_CUFF = "blood_pressure_cuff"
    SCALE = "scale"
    PULSE_OXIMETER = "pulse_oximeter"
    HEART_RATE_MONITOR = "heart_rate_monitor"

    @property
    def metric(self) -> Metric:
        """The metric this kind of device reports."""
        return _METRIC[self]

    @property
    def model(self) -> str:
        """The model name simulated devices of this kind report."""
        return _MODEL[self]

    @property
    def id_prefix(self) -> str:
        """How ids of simulated devices of this kind begin (``cuff-0001``)."""
        return _PREFIX[self]


_METRIC = {
    DeviceKind.BLOOD_PRESSURE_CUFF: Metric.BLOOD_PRESSURE,
    DeviceKind.SCALE: Metric.BODY_WEIGHT,
    DeviceKind.PULSE_OXIMETER: Metric.SPO2,
    DeviceKind.HEART_RATE_MONITOR: Metric.HEART_RATE,
}
_MODEL = {
    DeviceKind.BLOOD_PRESSURE_CUFF: "Simulated BP-1",
    DeviceKind.SCALE: "Simulated Scale-1",
    DeviceKind.PULSE_OXIMETER: "Simulated Oximeter-1",
    DeviceKind.HEART_RATE_MONITOR: "Simulated HR-1",
}
_PREFIX = {
    DeviceKind.BLOOD_PRESSURE_CUFF: "cuff",
    DeviceKind.SCALE: "scale",
    DeviceKind.PULSE_OXIMETER: "oxi",
    DeviceKind.HEART_RATE_MONITOR: "hrm",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement as a device reports it, before any payload format.

    ``measured_at`` is what the device's own clock said (it may be wrong: see the
    ``clock_skew`` fault); ``received_at`` is when the gateway got it from the device, by
    the gateway's clock. Both are aware and in the home's time zone. ``values`` are in
    canonical units (mmHg, kg, %, /min) at the device's resolution. ``quality`` is what
    the device noticed about the measurement (an artefact it detected: body movement, a
    loose cuff, low perfusion); the encoders carry it as Bluetooth status bits or the
    native ``quality`` list.
    """

    device_id: str
    kind: DeviceKind
    measured_at: datetime
    received_at: datetime
    values: Mapping[Quantity, float]
    message_id: str
    quality: frozenset[Quality] = NO_QUALITY

    @property
    def metric(self) -> Metric:
        """The metric of this measurement."""
        return self.kind.metric
