"""A patient's stored readings as the rules engine reads them: per-quantity numpy series.

:class:`StoredReading` is one stored reading, whether it comes from a database row, from
the batch being stored or from a simulator. :class:`History` holds a patient's readings in
measured order, deduplicated on the storage's natural key (device, metric, measured time),
and builds a :class:`Series` per quantity only when a rule asks for one: a plan of plain
thresholds never pays for it. Pure: no I/O.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
>>> r = StoredReading(t, "scale-1", Metric.BODY_WEIGHT, {Quantity.BODY_WEIGHT: 84.6})
>>> h = History([r, r])
>>> len(h), h.series(Quantity.BODY_WEIGHT).value.tolist()
(1, [84.6])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from homemonitor.contract.readings import Metric, Quantity
from homemonitor.rules.plan import HISTORY_CAP

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredReading:
    """One stored reading of a patient, as the engine sees it.

    ``quality`` holds the device's questionable-measurement flags (``body_movement``,
    ``cuff_loose``, ``irregular_pulse``, ...; ``Reading.quality`` in the contract), plain
    strings here. ``flags`` holds the clock flags (``clock_future``, ``clock_stale``): a
    reading with any of them is never current, so it never opens an episode.
    """

    measured_at: datetime  # aware, UTC
    device_id: str
    metric: Metric
    values: Mapping[Quantity, float]
    quality: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()

    @property
    def key(self) -> tuple[str, str, datetime]:
        """The storage's natural key: a redelivered reading has the same one."""
        return (self.device_id, self.metric.value, self.measured_at)


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    """One quantity's readings in measured order, as parallel arrays.

    ``t`` is measured_at in POSIX seconds (ascending; ties ordered by device and metric),
    ``value`` the value in the quantity's canonical unit, ``device`` an index into
    ``devices``, ``questionable`` whether the reading had quality flags, ``clock`` whether
    it had clock flags.
    """

    t: FloatArray
    value: FloatArray
    device: IntArray
    questionable: BoolArray
    clock: BoolArray
    devices: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.t)

    def end(self, at: float) -> int:
        """How many readings were measured at or before ``at`` (POSIX seconds)."""
        return int(np.searchsorted(self.t, at, side="right"))

    def start(self, at: float) -> int:
        """The index of the first reading measured at or after ``at``."""
        return int(np.searchsorted(self.t, at, side="left"))

    def until(self, end: int) -> Series:
        """The first ``end`` readings (views, no copy)."""
        return Series(
            self.t[:end],
            self.value[:end],
            self.device[:end],
            self.questionable[:end],
            self.clock[:end],
            self.devices,
        )


def _empty_series() -> Series:
    return Series(
        np.empty(0, np.float64),
        np.empty(0, np.float64),
        np.empty(0, np.int32),
        np.empty(0, np.bool_),
        np.empty(0, np.bool_),
        (),
    )


def _order(r: StoredReading) -> tuple[datetime, str, str]:
    return (r.measured_at, r.device_id, r.metric.value)


class History:
    """A patient's stored readings, in measured order, one per natural key.

    Built from whatever the caller has: the rows of the worker's windowed query together
    with the batch's new readings (duplicates collapse), or a simulator's readings. At
    most ``cap`` readings per quantity are kept (the newest). Series are built lazily and
    cached: ``series(q)`` without questionable readings, ``series(q, questionable=True)``
    with them.
    """

    __slots__ = ("_cache", "_cap", "_keys", "readings")

    def __init__(self, readings: Iterable[StoredReading] = (), *, cap: int = HISTORY_CAP) -> None:
        unique = {r.key: r for r in readings}
        self.readings: tuple[StoredReading, ...] = tuple(sorted(unique.values(), key=_order))
        self._cap = cap
        self._keys: Mapping[tuple[str, str, datetime], object] | None = unique
        self._cache: dict[tuple[Quantity, bool], Series] = {}

    @classmethod
    def _from_sorted(cls, readings: tuple[StoredReading, ...], cap: int) -> History:
        h = cls.__new__(cls)
        h.readings, h._cap, h._keys, h._cache = readings, cap, None, {}
        return h

    def __len__(self) -> int:
        return len(self.readings)

    def __contains__(self, reading: object) -> bool:
        """Whether a reading with ``reading``'s natural key is in this history."""
        if not isinstance(reading, StoredReading):
            return False
        if self._keys is None:
            self._keys = {r.key: r for r in self.readings}
        return reading.key in self._keys

    def with_readings(self, new: Iterable[StoredReading]) -> History:
        """This history with ``new`` readings added (duplicates of stored ones collapse)."""
        return History((*self.readings, *new), cap=self._cap)

    def until(self, at: datetime) -> History:
        """The readings measured at or before ``at``: what was stored by then in a replay."""
        end = len(self.readings)
        while end and self.readings[end - 1].measured_at > at:
            end -= 1
        view = History._from_sorted(self.readings[:end], self._cap)
        for (q, questionable), s in self._cache.items():
            view._cache[(q, questionable)] = s.until(s.end(at.timestamp()))
        return view

    def series(self, quantity: Quantity, *, questionable: bool = False) -> Series:
        """``quantity``'s readings in measured order.

        Readings with quality flags are left out unless ``questionable`` is true (a rule
        with ``questionable: include``).
        """
        key = (quantity, questionable)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._build(quantity, questionable=questionable)
        return cached

    def _build(self, quantity: Quantity, *, questionable: bool) -> Series:
        chosen = [
            r for r in self.readings if quantity in r.values and (questionable or not r.quality)
        ]
        if not chosen:
            return _empty_series()
        chosen = chosen[-self._cap :]
        devices: dict[str, int] = {}
        n = len(chosen)
        t = np.fromiter((r.measured_at.timestamp() for r in chosen), np.float64, n)
        value = np.fromiter((r.values[quantity] for r in chosen), np.float64, n)
        device = np.fromiter(
            (devices.setdefault(r.device_id, len(devices)) for r in chosen), np.int32, n
        )
        quality = np.fromiter((bool(r.quality) for r in chosen), np.bool_, n)
        clock = np.fromiter((bool(r.flags) for r in chosen), np.bool_, n)
        return Series(t, value, device, quality, clock, tuple(devices))


def as_history(readings: Sequence[StoredReading] | History) -> History:
    """``readings`` as a :class:`History` (a history is returned as it is)."""
    return readings if isinstance(readings, History) else History(readings)
