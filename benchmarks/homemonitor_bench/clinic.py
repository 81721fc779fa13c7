"""The load: a deterministic clinic and its numbered readings, the same in every process."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from typing import Any

from homemonitor.contract.protocol import readings_topic

#: Share of readings that breach the patient's care plan, in percent.
BREACH_PERCENT = 1
_PAYLOAD = '{"v":1,"sent_at":"%s","reading":{%s"measured_at":"%s",%s,"message_id":"%d"}}'
_HASH = 2654435761  # Knuth's multiplicative hash: which sequence numbers breach


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceLoad:
    """How one device's readings look: topic, fixed fields, normal and breaching values."""

    topic: str
    head: str
    normal: tuple[str, ...]
    breach: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Clinic:
    """A registry description (for :func:`homemonitor.registry.apply`) and its devices."""

    registry: dict[str, Any]
    devices: tuple[DeviceLoad, ...]


def _cuff(i: int, topic: str, rng: random.Random, pulse: int) -> DeviceLoad:
    systolic, diastolic = rng.randint(112, 140), rng.randint(66, 84)
    return DeviceLoad(
        topic,
        f'"device_id":"cuff-{i:05d}","metric":"blood_pressure","unit":"mmHg",',
        tuple(
            f'"systolic":{systolic + d},"diastolic":{diastolic + d // 2},"pulse":{pulse + d}'
            for d in (-4, 0, 3, 6)
        ),
        (
            f'"systolic":166,"diastolic":{diastolic + 4},"pulse":{pulse}',
            f'"systolic":171,"diastolic":{diastolic + 6},"pulse":{pulse + 4}',
            f'"systolic":186,"diastolic":104,"pulse":{pulse + 9}',
        ),
    )


def _scale(i: int, topic: str, weight: float, pounds: bool) -> DeviceLoad:
    unit, factor = ("lb", 2.20462) if pounds else ("kg", 1.0)
    return DeviceLoad(
        topic,
        f'"device_id":"scale-{i:05d}","metric":"body_weight","unit":"{unit}",',
        tuple(f'"value":{round((weight + d) * factor, 1)}' for d in (-0.4, -0.1, 0.2, 0.5)),
        (
            f'"value":{round((weight + 2.6) * factor, 1)}',
            f'"value":{round((weight + 4.2) * factor, 1)}',
        ),
    )


def _oximeter(i: int, topic: str, pulse: int) -> DeviceLoad:
    return DeviceLoad(
        topic,
        f'"device_id":"oxi-{i:05d}","metric":"spo2","unit":"%",',
        tuple(f'"value":{v},"pulse":{pulse + v - 95}' for v in (94, 95, 96, 98)),
        (f'"value":90,"pulse":{pulse + 8}', f'"value":86,"pulse":{pulse + 14}'),
    )


def _monitor(i: int, topic: str, pulse: int) -> DeviceLoad:
    return DeviceLoad(
        topic,
        f'"device_id":"hr-{i:05d}","metric":"heart_rate","unit":"/min",',
        tuple(f'"value":{pulse + d}' for d in (-3, 0, 4, 9)),
        ('"value":128', '"value":146'),
    )


def build_clinic(patients: int, seed: int = 7) -> Clinic:
    """A deterministic clinic: every patient has a cuff, and a scale, oximeter or monitor.

    Care teams of 500 patients; heart failure (scale, a tenth in pounds), COPD
    (oximeter), hypertension; a quarter also wear a heart-rate monitor. Each plan bounds
    systolic and diastolic pressure and every other quantity the patient's devices measure.
    """
    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not cryptography
    n_teams = max(1, patients // 500)
    teams: list[dict[str, Any]] = [
        {
            "id": f"vc-{t:03d}",
            "name": f"Vårdcentral {t}",
            "clinicians": [{"id": f"cl-{t:03d}-{c}", "name": f"Nurse {t}.{c}"} for c in range(3)],
        }
        for t in range(n_teams)
    ]
    devices: list[dict[str, str]] = []
    gateways: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    loads: list[DeviceLoad] = []
    for i in range(patients):
        team = teams[i % n_teams]
        topic = readings_topic(f"gw-{i:05d}")
        condition = rng.choices(("heart_failure", "hypertension", "copd"), (2, 1, 1))[0]
        pulse = rng.randint(58, 84)
        thresholds: dict[str, Any] = {
            "systolic": {"high": {"warning": 160, "urgent": 180}, "low": {"warning": 95}},
            "diastolic": {"high": {"warning": 100, "urgent": 110}},
        }
        own = [(f"cuff-{i:05d}", "blood_pressure_cuff", _cuff(i, topic, rng, pulse))]
        if condition == "heart_failure":
            weight = round(rng.uniform(58, 112), 1)
            thresholds["body_weight"] = {
                "high": {"warning": round(weight + 2, 1), "urgent": round(weight + 3.5, 1)}
            }
            own.append((f"scale-{i:05d}", "scale", _scale(i, topic, weight, rng.random() < 0.1)))
        if condition == "copd":
            thresholds["spo2"] = {"low": {"warning": 92, "urgent": 88}}
            own.append((f"oxi-{i:05d}", "pulse_oximeter", _oximeter(i, topic, pulse)))
        if rng.random() < 0.25:
            thresholds["heart_rate"] = {
                "high": {"warning": 120, "urgent": 140},
                "low": {"warning": 45},
            }
            own.append((f"hr-{i:05d}", "heart_rate_monitor", _monitor(i, topic, pulse)))
        devices += [{"id": d, "kind": kind} for d, kind, _ in own]
        loads += [load for _, _, load in own]
        since = [{"device": d, "from": "2020-01-01T00:00:00Z"} for d, _, _ in own]
        gateways.append({"id": f"gw-{i:05d}", "devices": list(since)})  # the home's hub
        people.append(
            {
                "id": f"p-{i:05d}",
                "care_team": team["id"],
                "care_contact": team["clinicians"][i % 3]["id"],
                "condition": condition,
                "devices": since,
                "care_plan": {
                    "version": 1,
                    "changed_by": team["clinicians"][0]["id"],
                    "reason": "initial",
                    "thresholds": thresholds,
                },
            }
        )
    order = list(range(len(loads)))
    rng.shuffle(order)  # consecutive readings come from unrelated patients
    return Clinic(
        {"care_teams": teams, "devices": devices, "gateways": gateways, "patients": people},
        tuple(loads[k] for k in order),
    )


def breaches(seq: int) -> bool:
    """Whether reading ``seq`` breaches its patient's plan (about 1 in 100)."""
    return ((seq * _HASH) & 0xFFFFFFFF) % 100 < BREACH_PERCENT


class Payloads:
    """Reading number ``seq`` as an MQTT PUBLISH, the same in every process."""

    def __init__(self, devices: Sequence[DeviceLoad], base_ms: int) -> None:
        self.devices = devices
        self.base_ms = base_ms
        self._topics = [len(d.topic).to_bytes(2, "big") + d.topic.encode() for d in devices]
        self._second = -1
        self._prefix = ""

    def payload(self, seq: int, sent_at: str) -> bytes:
        """The native JSON payload of reading ``seq`` (``sent_at`` already formatted)."""
        n = len(self.devices)
        device = self.devices[seq % n]
        h = (seq * _HASH) & 0xFFFFFFFF
        if h % 100 < BREACH_PERCENT:
            values = device.breach[(h // 100) % len(device.breach)]
        else:
            values = device.normal[(seq // n) % len(device.normal)]
        second, millis = divmod(self.base_ms + seq, 1000)
        if second != self._second:  # strftime once per second of readings
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        measured_at = f"{self._prefix}.{millis:03d}+00:00"
        return (_PAYLOAD % (sent_at, device.head, measured_at, values, seq)).encode()

    def publish_packet(self, seq: int, sent_at: str, packet_id: int) -> bytes:
        """An MQTT 3.1.1 PUBLISH of reading ``seq`` at QoS 1 with ``packet_id``."""
        topic = self._topics[seq % len(self.devices)]
        body = self.payload(seq, sent_at)
        length = len(topic) + 2 + len(body)
        if length < 128:
            header = bytes((0x32, length))
        else:
            header = bytes((0x32, (length & 0x7F) | 0x80, length >> 7))  # < 16 KiB
        return header + topic + packet_id.to_bytes(2, "big") + body
