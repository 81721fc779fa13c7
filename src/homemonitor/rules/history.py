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
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from homemonitor.contract.readings import QUANTITIES, Metric, Quantity
from homemonitor.rules.plan import HISTORY_CAP

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]
IntpArray = npt.NDArray[np.intp]
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
    ``devices`` (the history's devices: equal codes, one device), ``questionable``
    whether the reading had quality flags, ``clock`` whether it had clock flags.
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
        return int(self.t.searchsorted(at, side="right"))

    def start(self, at: float) -> int:
        """The index of the first reading measured at or after ``at``."""
        return int(self.t.searchsorted(at, side="left"))

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


#: Metrics in the order of their names (the tie-break of the measured order): a metric's
#: index here is its code in :meth:`History.from_columns`.
METRICS: tuple[Metric, ...] = tuple(sorted(Metric))
_METRICS = METRICS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NONE: frozenset[str] = frozenset()


def micros(at: datetime) -> int:
    """``at`` in microseconds since the epoch; ``micros(at) / 1e6 == at.timestamp()``."""
    d = at - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


#: A reading as plain values: measured_at (µs), device, metric, (quantity, value) pairs,
#: quality flags and clock flags (each sorted and joined by commas, "" for none). Nothing
#: in it is an enum member, so the garbage collector does not track it; what a worker
#: holds per reading outside columns (:mod:`homemonitor.rules.histories`) is in this form,
#: and the quiet envelope (:mod:`homemonitor.rules.quiet`) reads it.
Packed = tuple[int, str, str, tuple[tuple[str, float], ...], str, str]


class Measured(Protocol):
    """A reading as :func:`packed` reads it: a :class:`StoredReading` or the contract's."""

    @property
    def measured_at(self) -> datetime: ...
    @property
    def device_id(self) -> str: ...
    @property
    def metric(self) -> Metric: ...
    @property
    def values(self) -> Mapping[Quantity, float]: ...
    @property
    def quality(self) -> Collection[str]: ...
    @property
    def flags(self) -> Collection[str]: ...


_QUANTITY_NAME: Mapping[Quantity, str] = {q: q.value for q in Quantity}
_METRIC_NAME: Mapping[Metric, str] = {m: m.value for m in Metric}


def packed(r: Measured) -> Packed:
    """``r`` as plain values (:data:`Packed`).

    >>> t = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    >>> packed(StoredReading(t, "scale-1", Metric.BODY_WEIGHT, {Quantity.BODY_WEIGHT: 84.6}))
    (1772348400000000, 'scale-1', 'body_weight', (('body_weight', 84.6),), '', '')
    """
    return (
        micros(r.measured_at),
        r.device_id,
        _METRIC_NAME[r.metric],
        tuple([(_QUANTITY_NAME[q], x) for q, x in r.values.items()]),
        ",".join(sorted(r.quality)) if r.quality else "",
        ",".join(sorted(r.flags)) if r.flags else "",
    )


def unpacked(p: Packed) -> StoredReading:
    """The stored reading ``p`` holds (:func:`packed` undone)."""
    us, device, metric, values, quality, flags = p
    return StoredReading(
        _EPOCH + timedelta(microseconds=us),
        device,
        Metric(metric),
        {Quantity(q): x for q, x in values},
        frozenset(quality.split(",")) if quality else _NONE,
        frozenset(flags.split(",")) if flags else _NONE,
    )


def _order(r: StoredReading) -> tuple[datetime, str, str]:
    return (r.measured_at, r.device_id, r.metric)


def measured_order(
    us: npt.ArrayLike, device: npt.ArrayLike, devices: Sequence[str], metric: npt.ArrayLike
) -> tuple[IntpArray, Int64Array, IntArray, list[str], Int8Array]:
    """Readings' keys in measured order, one per natural key (of equal keys the last counts).

    ``device`` indexes ``devices`` (distinct, any order). Returns the input row of each
    kept row, its measured time (µs), its device as an index into the devices sorted (the
    measured order's tie-break), those sorted devices and its metric code.
    """
    t_us = np.asarray(us, np.int64)
    codes = np.asarray(device, np.int32)
    names = sorted(devices)
    if names != list(devices):
        rank = np.array([names.index(name) for name in devices], np.int32)
        codes = rank[codes]
    metrics = np.asarray(metric, np.int8)
    order = np.lexsort((metrics, codes, t_us))  # stable: of equal keys, the last counts
    t_us, codes, metrics = t_us[order], codes[order], metrics[order]
    same = t_us[1:] == t_us[:-1]
    if same.any():
        same &= (codes[1:] == codes[:-1]) & (metrics[1:] == metrics[:-1])
        keep = np.append(~same, True)
        order, t_us, codes, metrics = order[keep], t_us[keep], codes[keep], metrics[keep]
    return order, t_us, codes, names, metrics


@dataclasses.dataclass(frozen=True, slots=True)
class _Source:
    """The input of :meth:`History.from_columns` the readings' flags are made from."""

    order: IntpArray  # input row of each row
    questionable: BoolArray  # per input row
    quality: Sequence[str]  # per questionable input row
    clock: BoolArray
    flags: Sequence[str]

    def names(self, rows: list[int]) -> tuple[list[frozenset[str]], list[frozenset[str]]]:
        """The quality and clock flags of ``rows`` (input rows)."""
        out = []
        for mask, text in ((self.questionable, self.quality), (self.clock, self.flags)):
            by_row = dict(zip(np.flatnonzero(mask).tolist(), text, strict=True))
            out.append([frozenset(by_row[r].split(",")) if r in by_row else _NONE for r in rows])
        return out[0], out[1]


@dataclasses.dataclass(frozen=True, slots=True)
class _Columns:
    """Every reading of a history as parallel arrays, in measured order, one per key.

    ``values[q]`` is NaN where a reading does not carry ``q``.
    """

    us: Int64Array
    t: FloatArray
    device: IntArray  # into devices
    devices: tuple[str, ...]
    metric: Int8Array  # into _METRICS
    values: dict[Quantity, FloatArray]
    questionable: BoolArray
    clock: BoolArray
    #: Of a history built from columns: what :attr:`History.readings` are made from.
    source: _Source | None = None

    @classmethod
    def of(cls, readings: Sequence[StoredReading]) -> _Columns:
        """``readings`` (sorted, distinct) as columns."""
        n = len(readings)
        codes: dict[str, int] = {}
        device = np.fromiter(
            (codes.setdefault(r.device_id, len(codes)) for r in readings), np.int32, n
        )
        metric_code = {m: i for i, m in enumerate(_METRICS)}
        columns: dict[Quantity, FloatArray] = {}
        for i, r in enumerate(readings):
            for q, x in r.values.items():
                col = columns.get(q)
                if col is None:
                    col = columns[q] = np.full(n, np.nan)
                col[i] = x
        us = np.fromiter((micros(r.measured_at) for r in readings), np.int64, n)
        return cls(
            us,
            us / 1e6,
            device,
            tuple(codes),
            np.fromiter((metric_code[r.metric] for r in readings), np.int8, n),
            columns,
            np.fromiter((bool(r.quality) for r in readings), np.bool_, n),
            np.fromiter((bool(r.flags) for r in readings), np.bool_, n),
        )

    def readings(self, end: int, start: int = 0) -> tuple[StoredReading, ...]:
        """Rows ``start`` to ``end`` as readings (a history built from columns, on demand)."""
        assert self.source is not None  # built from readings, a history has them
        quality, flags = self.source.names(self.source.order[start:end].tolist())
        values = [(q, v[start:end].tolist()) for q, v in self.values.items()]
        return tuple(
            StoredReading(
                _EPOCH + timedelta(microseconds=us),
                self.devices[device],
                METRICS[metric],
                {q: x[i] for q, x in values if x[i] == x[i]},  # NaN: not carried
                quality[i],
                flags[i],
            )
            for i, (us, device, metric) in enumerate(
                zip(
                    self.us[start:end].tolist(),
                    self.device[start:end].tolist(),
                    self.metric[start:end].tolist(),
                    strict=True,
                )
            )
        )


def _quantities(
    values: Mapping[Quantity, npt.ArrayLike] | npt.NDArray[np.float64], order: IntpArray | None
) -> dict[Quantity, FloatArray]:
    """Each quantity's values in the rows' ``order`` (None: as they are; a matrix: views)."""
    if isinstance(values, np.ndarray):
        rows = np.asarray(values, np.float64)
        if order is not None:
            rows = rows[order]
        return {q: rows[:, k] for k, q in enumerate(QUANTITIES)}
    if order is None:
        return {q: np.asarray(v, np.float64) for q, v in values.items()}
    return {q: np.asarray(v, np.float64)[order] for q, v in values.items()}


class History:
    """A patient's stored readings, in measured order, one per natural key.

    Built from whatever the caller has: readings (the batch's new ones, a simulator's, a
    backtest's), duplicates collapsing (the last one counts), or the columns of the
    worker's windowed query (:meth:`from_columns`, no object per reading). At most
    ``cap`` readings per quantity are kept (the newest). Series are built lazily per
    quantity and cached: ``series(q)`` without questionable readings,
    ``series(q, questionable=True)`` with them. :meth:`until` is a view: no copy.
    """

    __slots__ = ("_at", "_base", "_cache", "_cap", "_cols", "_keys", "_n", "_readings")

    def __init__(self, readings: Iterable[StoredReading] = (), *, cap: int = HISTORY_CAP) -> None:
        unique = {r.key: r for r in readings}
        self._readings: tuple[StoredReading, ...] | None = tuple(
            sorted(unique.values(), key=_order)
        )
        self._n = len(self._readings)
        self._cap = cap
        self._keys: Mapping[tuple[str, str, datetime], object] | None = unique
        self._cols: _Columns | None = None
        self._base: History | None = None
        self._at = math.inf
        self._cache: dict[tuple[Quantity, bool], Series] = {}

    @classmethod
    def from_columns(  # noqa: PLR0917 -- one column each, as the query returns them
        cls,
        us: npt.ArrayLike,
        device: npt.ArrayLike,
        devices: Sequence[str],
        metric: npt.ArrayLike,
        values: Mapping[Quantity, npt.ArrayLike] | npt.NDArray[np.float64],
        questionable: npt.ArrayLike,
        clock: npt.ArrayLike,
        quality: Sequence[str] = (),
        flags: Sequence[str] = (),
        *,
        cap: int = HISTORY_CAP,
        ordered: bool = False,
    ) -> History:
        """A history from parallel columns, one entry per stored reading, in any order.

        ``us``: measured_at in microseconds since the epoch (:func:`micros`); ``device``:
        an index into ``devices`` (distinct, any order); ``metric``: an index into
        :data:`METRICS`; ``values[q]``: NaN where a reading does not carry ``q`` (or a
        matrix, a row per reading and a column per quantity of ``QUANTITIES``);
        ``questionable``/``clock``: whether it has quality/clock flags, and
        ``quality``/``flags`` those flags' names joined by commas, one per reading that
        has them, in order. Readings with one natural key collapse (the last one counts),
        as in the constructor. No object per reading is made unless :attr:`readings` is
        asked. ``ordered``: the columns are in measured order already, one per key, with
        ``devices`` sorted (a :class:`~homemonitor.rules.histories.Cached` entry's).
        """
        h = cls.__new__(cls)
        h._readings, h._keys, h._cap, h._base, h._at, h._cache = None, None, cap, None, math.inf, {}
        t_us = np.asarray(us, np.int64)
        if not len(t_us):
            h._cols, h._n = _Columns.of(()), 0
            h._readings = ()
            return h
        if ordered:
            order = np.arange(len(t_us))
            codes, names = np.asarray(device, np.int32), list(devices)
            metrics = np.asarray(metric, np.int8)
        else:
            order, t_us, codes, names, metrics = measured_order(t_us, device, devices, metric)
        flagged = np.asarray(questionable, np.bool_)
        clocked = np.asarray(clock, np.bool_)
        h._cols = _Columns(
            t_us,
            t_us / 1e6,
            codes,
            tuple(names),
            metrics,
            _quantities(values, None if ordered else order),
            flagged if ordered else flagged[order],
            clocked if ordered else clocked[order],
            _Source(order, flagged, quality, clocked, flags),
        )
        h._n = len(t_us)
        return h

    def _columns(self) -> _Columns:
        if self._cols is None:
            assert self._readings is not None  # a history is built from one or the other
            self._cols = _Columns.of(self._readings)
        return self._cols

    @property
    def readings(self) -> tuple[StoredReading, ...]:
        """The readings in measured order (of a history built from columns: made now)."""
        if self._readings is None:
            root = self._base or self
            if root._readings is None:
                root._readings = root._columns().readings(root._n)
            self._readings = root._readings[: self._n]
        return self._readings

    def __len__(self) -> int:
        return self._n

    def measured(self, at: datetime) -> tuple[StoredReading, ...]:
        """The readings measured at ``at``, in measured order (only those are made)."""
        if self._readings is not None:
            lo = bisect.bisect_left(self._readings, at, key=lambda r: r.measured_at)
            hi = bisect.bisect_right(self._readings, at, key=lambda r: r.measured_at)
            return self._readings[lo:hi]
        cols = self._columns()
        t = micros(at)
        us = cols.us[: self._n]
        lo = int(np.searchsorted(us, t, side="left"))
        hi = int(np.searchsorted(us, t, side="right"))
        return cols.readings(hi, lo) if hi > lo else ()

    @property
    def cap(self) -> int:
        """The most readings a series of this history holds (the newest)."""
        return self._cap

    def _rows(self, reading: StoredReading) -> Iterator[int]:
        """The rows with ``reading``'s natural key (one at most)."""
        cols = self._columns()
        at = micros(reading.measured_at)
        lo = int(np.searchsorted(cols.us[: self._n], at, side="left"))
        for i in range(lo, self._n):
            if cols.us[i] != at:
                break
            if cols.devices[cols.device[i]] == reading.device_id and (
                _METRICS[cols.metric[i]] == reading.metric
            ):
                yield i

    def __contains__(self, reading: object) -> bool:
        """Whether a reading with ``reading``'s natural key is in this history."""
        if not isinstance(reading, StoredReading):
            return False
        if self._keys is not None:
            return reading.key in self._keys
        return next(self._rows(reading), None) is not None

    def newest_time(self) -> float:
        """The measured time (POSIX s) of the newest reading, whatever it carries; -inf: none."""
        if not self._n:
            return -math.inf
        if self._cols is None and self._readings is not None:  # no columns to build for it
            return self._readings[self._n - 1].measured_at.timestamp()
        return float(self._columns().t[self._n - 1])

    def newest(
        self,
        quantities: Iterable[Quantity],
        *,
        questionable: bool,
        besides: Iterable[StoredReading] = (),
    ) -> float:
        """The newest measured time (POSIX s) of a reading carrying one of ``quantities``.

        Readings with quality flags count only when ``questionable`` is true; readings
        with the natural key of one of ``besides`` never do. -inf when none is left.
        """
        cols = self._columns()
        carries: BoolArray | None = None
        for q in quantities:
            v = cols.values.get(q)
            if v is not None:
                has = ~np.isnan(v[: self._n])
                carries = has if carries is None else carries | has
        if carries is None:
            return -math.inf
        if not questionable:
            carries &= ~cols.questionable[: self._n]
        skip = {i for r in besides for i in self._rows(r)}
        for i in np.flatnonzero(carries)[::-1].tolist():
            if i not in skip:
                return float(cols.t[i])
        return -math.inf

    def with_readings(self, new: Iterable[StoredReading]) -> History:
        """This history with ``new`` readings added (duplicates of stored ones collapse)."""
        return History((*self.readings, *new), cap=self._cap)

    def until(self, at: datetime) -> History:
        """The readings measured at or before ``at``: what was stored by then in a replay.

        A view (no copy): its series are this history's, cut at ``at``.
        """
        cols = self._columns()
        view = History.__new__(History)
        view._cols, view._cap, view._keys, view._cache = cols, self._cap, None, {}
        view._n = int(np.searchsorted(cols.us[: self._n], micros(at), side="right"))
        view._readings = None
        view._base, view._at = self._base or self, min(at.timestamp(), self._at)
        return view

    def series(self, quantity: Quantity, *, questionable: bool = False) -> Series:
        """``quantity``'s readings in measured order.

        Readings with quality flags are left out unless ``questionable`` is true (a rule
        with ``questionable: include``).
        """
        key = (quantity, questionable)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._series(quantity, questionable=questionable)
        return found

    def _series(self, quantity: Quantity, *, questionable: bool) -> Series:
        if self._base is not None:
            s = self._base.series(quantity, questionable=questionable)
            return s.until(s.end(self._at))
        cols = self._columns()
        v = cols.values.get(quantity)
        if v is None:
            return _EMPTY
        rows = np.flatnonzero(~np.isnan(v[: self._n]))[-self._cap :]
        if not len(rows):
            return _EMPTY
        codes = cols.device[rows]
        flagged = cols.questionable[rows]
        if not questionable and flagged.any():  # the newest cap readings, less the flagged
            keep = ~flagged
            rows, codes, flagged = rows[keep], codes[keep], flagged[keep]
        return Series(cols.t[rows], v[rows], codes, flagged, cols.clock[rows], cols.devices)


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
