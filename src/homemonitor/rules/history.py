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

import bisect
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
        return (self.device_id, self.metric, self.measured_at)  # Metric is a str


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


_EMPTY = Series(
    np.empty(0, np.float64),
    np.empty(0, np.float64),
    np.empty(0, np.int32),
    np.empty(0, np.bool_),
    np.empty(0, np.bool_),
    (),
)


def _measured_at(r: StoredReading) -> datetime:
    return r.measured_at


def _order(r: StoredReading) -> tuple[datetime, str, str]:
    return (r.measured_at, r.device_id, r.metric)


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
        if self._keys is not None:
            return reading.key in self._keys
        i = bisect.bisect_left(self.readings, reading.measured_at, key=_measured_at)
        while i < len(self.readings) and self.readings[i].measured_at == reading.measured_at:
            if self.readings[i].key == reading.key:
                return True
            i += 1
        return False

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
        with ``questionable: include``). The first call builds every quantity's series in
        one pass over the readings.
        """
        found = self._cache.get((quantity, questionable))
        if found is None:
            self._build()
            found = self._cache.get((quantity, questionable), _EMPTY)
        return found

    def _build(self) -> None:
        columns: dict[Quantity, tuple[list[float], list[float], list[str], list[bool], list[bool]]]
        columns = {}
        for r in self.readings:
            ts = r.measured_at.timestamp()
            questionable, clocked = bool(r.quality), bool(r.flags)
            for q, x in r.values.items():
                col = columns.get(q)
                if col is None:
                    col = columns[q] = ([], [], [], [], [])
                col[0].append(ts)
                col[1].append(x)
                col[2].append(r.device_id)
                col[3].append(questionable)
                col[4].append(clocked)
        cap = self._cap
        for q, (times, values, devs, flagged, clock_flagged) in columns.items():
            t, v, dev = times[-cap:], values[-cap:], devs[-cap:]
            quality, clock = flagged[-cap:], clock_flagged[-cap:]
            codes: dict[str, int] = {}
            device = np.array([codes.setdefault(d, len(codes)) for d in dev], np.int32)
            everything = Series(
                np.array(t, np.float64),
                np.array(v, np.float64),
                device,
                np.array(quality, np.bool_),
                np.array(clock, np.bool_),
                tuple(codes),
            )
            self._cache[(q, True)] = everything
            if any(quality):
                keep = ~everything.questionable
                self._cache[(q, False)] = Series(
                    everything.t[keep],
                    everything.value[keep],
                    everything.device[keep],
                    everything.questionable[keep],
                    everything.clock[keep],
                    everything.devices,
                )
            else:
                self._cache[(q, False)] = everything
        for q in Quantity:
            self._cache.setdefault((q, True), _EMPTY)
            self._cache.setdefault((q, False), _EMPTY)


def instants(
    readings: Sequence[StoredReading],
) -> Iterator[tuple[datetime, Sequence[StoredReading]]]:
    """``readings`` (in measured order) grouped by measured_at: one evaluation point each."""
    start = 0
    while start < len(readings):
        at = readings[start].measured_at
        end = start + 1
        while end < len(readings) and readings[end].measured_at == at:
            end += 1
        yield at, readings[start:end]
        start = end


def as_history(readings: Sequence[StoredReading] | History) -> History:
    """``readings`` as a :class:`History` (a history is returned as it is)."""
    return readings if isinstance(readings, History) else History(readings)
