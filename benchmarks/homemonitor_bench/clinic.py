"""The load: a deterministic clinic and its numbered readings, the same in every process.

Reading ``seq`` comes from device ``seq % n`` (the clinic's devices in a shuffled order) and
is measured ``seq`` milliseconds after the run's base time. About 1 % breach the patient's
care plan, in two ways of equal share: a single outlier whose next reading is normal again
(an artefact: the templates' persistence and retake rules let it pass) and a pair, two
consecutive readings of the same device beyond the bound (a deterioration that a retake
confirms: every plan alerts). Every other value lies around the patient's own baseline,
inside both care-plan forms (``thresholds`` and ``templates``), so only breaches alert.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

from homemonitor.contract.protocol import readings_topic

#: The care-plan forms of the bench clinic: absolute bounds, or the condition templates.
PlanMode = Literal["thresholds", "templates"]
PLAN_MODES: tuple[PlanMode, ...] = ("thresholds", "templates")

#: Share of readings that breach the patient's care plan, in percent: half single
#: outliers, half in pairs (two consecutive readings of one device).
BREACH_PERCENT = 1
_PER = 200 // BREACH_PERCENT  # one in _PER readings is an outlier, one in _PER pairs breaches
_PAYLOAD = '{"v":1,"sent_at":"%s","reading":{%s"measured_at":"%s",%s,"message_id":"%d"}}'
_HASH = 2654435761  # Knuth's multiplicative hash: which sequence numbers breach
_METRIC = {
    "blood_pressure_cuff": "blood_pressure",
    "scale": "body_weight",
    "pulse_oximeter": "spo2",
    "heart_rate_monitor": "heart_rate",
}


#: Stored values of one reading: readings-table column (canonical unit) to value.
Values = dict[str, float]


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceLoad:
    """How one device's readings look: topic, fixed fields, normal and breaching values.

    ``normal`` and ``breach`` are the payload fragments; ``normal_values`` and
    ``breach_values`` the same readings as stored (canonical units), for the seeded history.
    """

    topic: str
    head: str
    normal: tuple[str, ...]
    breach: tuple[str, ...]
    device_id: str = ""
    kind: str = ""
    metric: str = ""
    patient_id: str = ""
    normal_values: tuple[Values, ...] = ()
    breach_values: tuple[Values, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Clinic:
    """A registry description (for :func:`homemonitor.registry.apply`) and its devices."""

    registry: dict[str, Any]
    devices: tuple[DeviceLoad, ...]


def _bp(systolic: int, diastolic: int, pulse: int) -> tuple[str, Values]:
    text = f'"systolic":{systolic},"diastolic":{diastolic},"pulse":{pulse}'
    return text, {"systolic": systolic, "diastolic": diastolic, "heart_rate": pulse}


def _cuff(i: int, topic: str, rng: random.Random, pulse: int) -> DeviceLoad:
    # Treated, controlled pressure: the home mean of every patient stays below 135/85, so
    # the hypertension template's average rule judges it normal (same draws as before).
    systolic = 110 + (rng.randint(112, 140) - 112) * 18 // 28  # 110..128
    diastolic = 64 + (rng.randint(66, 84) - 66) * 14 // 18  # 64..78
    normal = [_bp(systolic + d, diastolic + d // 2, pulse + d) for d in (-4, 0, 3, 6)]
    breach = [
        _bp(166, diastolic + 4, pulse),
        _bp(171, diastolic + 6, pulse + 4),
        _bp(186, 104, pulse + 9),
    ]
    return DeviceLoad(
        topic,
        f'"device_id":"cuff-{i:05d}","metric":"blood_pressure","unit":"mmHg",',
        tuple(t for t, _ in normal),
        tuple(t for t, _ in breach),
        normal_values=tuple(v for _, v in normal),
        breach_values=tuple(v for _, v in breach),
    )


def _scale(i: int, topic: str, weight: float, pounds: bool) -> DeviceLoad:
    unit, factor = ("lb", 2.20462) if pounds else ("kg", 1.0)
    normal, breach = (-0.4, -0.1, 0.2, 0.5), (2.6, 4.2)
    return DeviceLoad(
        topic,
        f'"device_id":"scale-{i:05d}","metric":"body_weight","unit":"{unit}",',
        tuple(f'"value":{round((weight + d) * factor, 1)}' for d in normal),
        tuple(f'"value":{round((weight + d) * factor, 1)}' for d in breach),
        normal_values=tuple({"body_weight": round(weight + d, 1)} for d in normal),
        breach_values=tuple({"body_weight": round(weight + d, 1)} for d in breach),
    )


def _oximeter(i: int, topic: str, pulse: int) -> DeviceLoad:
    normal = [(v, pulse + v - 95) for v in (94, 95, 96, 98)]
    breach = [(90, pulse + 8), (86, pulse + 14)]
    return DeviceLoad(
        topic,
        f'"device_id":"oxi-{i:05d}","metric":"spo2","unit":"%",',
        tuple(f'"value":{v},"pulse":{p}' for v, p in normal),
        tuple(f'"value":{v},"pulse":{p}' for v, p in breach),
        normal_values=tuple({"spo2": v, "heart_rate": p} for v, p in normal),
        breach_values=tuple({"spo2": v, "heart_rate": p} for v, p in breach),
    )


def _monitor(i: int, topic: str, pulse: int) -> DeviceLoad:
    normal, breach = [pulse + d for d in (-3, 0, 4, 9)], [128, 146]
    return DeviceLoad(
        topic,
        f'"device_id":"hr-{i:05d}","metric":"heart_rate","unit":"/min",',
        tuple(f'"value":{v}' for v in normal),
        tuple(f'"value":{v}' for v in breach),
        normal_values=tuple({"heart_rate": v} for v in normal),
        breach_values=tuple({"heart_rate": v} for v in breach),
    )


#: The SpO2 target of the bench's COPD patients (breathing air; their SpO2 is 94-98 %).
COPD_TARGET_SPO2_LOW = 92


def _template_plan(condition: str, weight: float | None) -> dict[str, Any]:
    """The care plan's template form: the condition's template, personalised."""
    if condition == "heart_failure":
        assert weight is not None
        return {"template": "heart_failure", "personal": {"dry_weight": weight}}
    if condition == "copd":
        return {"template": "copd", "personal": {"target_spo2_low": COPD_TARGET_SPO2_LOW}}
    return {"template": "hypertension"}


def build_clinic(
    patients: int, seed: int = 7, plans: PlanMode = "thresholds", version: int = 1
) -> Clinic:
    """A deterministic clinic: every patient has a cuff, and a scale, oximeter or monitor.

    Care teams of 500 patients; heart failure (scale, a tenth in pounds), COPD
    (oximeter), hypertension; a quarter also wear a heart-rate monitor. With ``plans``
    ``thresholds`` each plan bounds systolic and diastolic pressure and every other
    quantity the patient's devices measure; with ``templates`` it references the
    patient's condition template (heart failure with the dry weight, COPD with the SpO2
    target). Devices and readings are the same in both; ``version`` is the plans' version
    (a registry switching form needs a new one).
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
        weight: float | None = None
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
        loads += [
            dataclasses.replace(
                load, device_id=d, kind=kind, metric=_METRIC[kind], patient_id=f"p-{i:05d}"
            )
            for d, kind, load in own
        ]
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
                    "version": version,
                    "changed_by": team["clinicians"][0]["id"],
                    "reason": "initial" if version == 1 else f"bench: {plans}",
                    **(
                        {"thresholds": thresholds}
                        if plans == "thresholds"
                        else _template_plan(condition, weight)
                    ),
                },
            }
        )
    order = list(range(len(loads)))
    rng.shuffle(order)  # consecutive readings come from unrelated patients
    return Clinic(
        {"care_teams": teams, "devices": devices, "gateways": gateways, "patients": people},
        tuple(loads[k] for k in order),
    )


def breach(seq: int, devices: int) -> int | None:
    """Which breaching value reading ``seq`` carries (an index), or None (about 99 in 100).

    One reading in 200 is a single outlier; one pair in 200 (a device's readings number
    ``2j`` and ``2j + 1``, ``devices`` readings apart) breaches with the same value twice.
    """
    h = (seq * _HASH) & 0xFFFFFFFF
    if h % _PER == 0:
        return h // _PER
    first = seq - devices * ((seq // devices) % 2)
    g = (first * _HASH) & 0xFFFFFFFF
    if g % _PER == _PER // 2:
        return g // _PER
    return None


def breaches(seq: int, devices: int) -> bool:
    """Whether reading ``seq`` breaches its patient's plan (about 1 in 100)."""
    return breach(seq, devices) is not None


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
        which = breach(seq, n)
        if which is not None:
            values = device.breach[which % len(device.breach)]
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
