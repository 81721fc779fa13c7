"""The stored past a templates plan reads: days of readings per device, seeded by COPY.

A patient under a condition template has weeks of readings the moment a new one arrives:
the change, average and baseline rules read them (the worker's one windowed query per
batch), and what that costs depends on how many there are. Before a run with templates
plans the bench stores that past directly (it is the database's state, not load): for
every device of the clinic ``days`` days before the run's base time, at the times of day
of :data:`SESSIONS` (jittered by up to 45 minutes), values drawn around the patient's
baseline (one of the device's normal values, plus a little day-to-day noise) and about
1 % of them breaching singly. The bench's live readings are measured from the base time
on, so they continue each patient's timeline.

Seeded rows have no ``message_id`` and are measured before the base time: the bench's
checks count only the numbered readings measured from it on.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from homemonitor_bench.clinic import DeviceLoad

#: Hours of the day (UTC) at which each kind of device measures: blood pressure and SpO2
#: morning and evening (the ESH home protocol's two sessions, without its duplicate
#: reading), weight each morning (the heart-failure self-care advice), the heart-rate
#: monitor twice a day.
SESSIONS: dict[str, tuple[float, ...]] = {
    "blood_pressure_cuff": (6.5, 18.5),
    "scale": (6.25,),
    "pulse_oximeter": (7.0, 19.0),
    "heart_rate_monitor": (7.5, 19.5),
}
#: The templates' longest lookback: a baseline rule's run-in (14 days) and monitoring (7).
DEFAULT_DAYS = 21
#: Day-to-day noise added to a drawn normal value, by column.
_NOISE = {
    "systolic": 3.0,
    "diastolic": 2.0,
    "heart_rate": 2.0,
    "body_weight": 0.15,
    "spo2": 0.0,
}
_JITTER_H = 0.75
_BREACH = 0.01
#: The readings-table columns the seeded rows fill, in COPY order.
COLUMNS = (
    "device_id",
    "metric",
    "measured_at",
    "patient_id",
    "received_at",
    "systolic",
    "diastolic",
    "heart_rate",
    "body_weight",
    "spo2",
    "source",
    "gateway_id",
)
_VALUE_COLUMNS = ("systolic", "diastolic", "heart_rate", "body_weight", "spo2")


def per_day(devices: Sequence[DeviceLoad]) -> int:
    """Readings a day the clinic's devices take."""
    return sum(len(SESSIONS[d.kind]) for d in devices)


def _value(column: str, x: float, rng: random.Random) -> float:
    noisy = x + rng.gauss(0.0, _NOISE[column]) if _NOISE[column] else x
    return round(noisy, 1) if column == "body_weight" else float(round(noisy))


def history_rows(
    devices: Sequence[DeviceLoad], base_ms: int, *, days: int, seed: int = 7
) -> Iterator[tuple[Any, ...]]:
    """Every seeded reading of ``devices`` in the ``days`` days before ``base_ms``."""
    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not cryptography
    base = datetime.fromtimestamp(base_ms / 1000, UTC)
    start = base - timedelta(days=days)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for device in devices:
        gateway = device.topic.split("/")[-2]
        for day in range(days + 2):
            for hour in SESSIONS[device.kind]:
                jitter = rng.uniform(-_JITTER_H, _JITTER_H)
                at = midnight + timedelta(days=day, hours=hour + jitter)
                if rng.random() < _BREACH:
                    values = rng.choice(device.breach_values)
                    noise = False
                else:
                    values = rng.choice(device.normal_values)
                    noise = True
                if not start <= at < base:
                    continue
                row = {c: (_value(c, x, rng) if noise else float(x)) for c, x in values.items()}
                yield (
                    device.device_id,
                    device.metric,
                    at,
                    device.patient_id,
                    at + timedelta(seconds=rng.uniform(1, 30)),
                    *(row.get(c) for c in _VALUE_COLUMNS),
                    "json",
                    gateway,
                )


@dataclasses.dataclass(frozen=True, slots=True)
class Seeded:
    """What :func:`seed` stored."""

    rows: int
    days: int
    devices: int
    readings_per_device_day: float
    seconds: float


async def seed(conn: Any, devices: Sequence[DeviceLoad], base_ms: int, days: int) -> Seeded:
    """COPY the history of ``devices`` into ``readings`` and ANALYZE it."""
    t0 = time.perf_counter()
    rows = list(history_rows(devices, base_ms, days=days))
    await conn.copy_records_to_table("readings", records=rows, columns=COLUMNS)
    await conn.execute("ANALYZE readings")
    return Seeded(
        rows=len(rows),
        days=days,
        devices=len(devices),
        readings_per_device_day=per_day(devices) / max(1, len(devices)),
        seconds=time.perf_counter() - t0,
    )
