"""A worker's cache of its patients' stored readings: only a cache. Pure, no I/O.

Loading a patient's history is most of what a batch costs the database once plans read
history. The worker keeps, per patient it evaluated, EVERY stored reading of the patient
measured at or after a start (:attr:`Cached.since`), as columns, with the patient's count
of stored readings (``reading_counts``) when the entry was exact. The statement that
stores a batch's readings (:mod:`homemonitor.storage.transaction`, the one place readings
are written) adds its new ones to that count and returns it, under the row's lock: when
it is the entry's count plus the batch's new readings of the patient, nobody else stored
a reading of the patient since the entry was made (another worker on the shared
subscription, a quarantine replay), so the entry and the batch's readings are exactly what
the database holds, and no query is needed (:meth:`HistoryCache.current`). Otherwise the
entry is loaded again. Stored readings are never changed or deleted within an entry's
range (retention deletes months-old readings). An entry is only made from readings of a
committed transaction (:meth:`HistoryCache.keep` is called after the commit), so it
never holds a reading the database does not. An entry may carry the patient's quiet
envelope (:mod:`homemonitor.rules.quiet`), which holds only while the entry is exact.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
>>> r = StoredReading(t, "scale-1", Metric.BODY_WEIGHT, {Quantity.BODY_WEIGHT: 84.6})
>>> entry = Cached.empty(micros(t)).merged([r])
>>> len(entry), entry.history().series(Quantity.BODY_WEIGHT).value.tolist()
(1, [84.6])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from homemonitor.contract.readings import QUANTITIES, Metric, Quantity
from homemonitor.rules.history import (
    METRICS,
    BoolArray,
    FloatArray,
    History,
    Int8Array,
    Int64Array,
    IntArray,
    Packed,
    StoredReading,
    measured_order,
    micros,
    packed,
    unpacked,
)
from homemonitor.rules.plan import HISTORY_CAP
from homemonitor.rules.quiet import Quiet

#: Patients a worker keeps at most (the least recently used go first).
MAX_PATIENTS = 20_000
#: Readings an entry holds outside its columns at most (:meth:`Cached.later`).
MAX_PENDING = 16
_METRIC_CODE = {m: i for i, m in enumerate(METRICS)}


def _names(mask: BoolArray, text: Sequence[str], order: npt.NDArray[np.intp]) -> tuple[str, ...]:
    """The flag names of the flagged rows of ``order`` (``text``: one per flagged input row)."""
    if not len(text):
        return ()
    by_row = dict(zip(np.flatnonzero(mask).tolist(), text, strict=True))
    return tuple(by_row[i] for i in order.tolist() if i in by_row)


@dataclasses.dataclass(slots=True, eq=False)
class Cached:
    """Every stored reading of one patient measured at or after ``since`` (µs), as columns.

    Never changed once made: every method gives another entry. (Not a frozen dataclass:
    making one costs five times as much, and an entry is made for every reading the
    quiet envelope takes.)

    In measured order, one per natural key; ``device`` indexes ``devices`` (sorted);
    ``metric`` indexes :data:`~homemonitor.rules.history.METRICS`; ``values`` has a row per
    reading and a column per quantity of ``QUANTITIES`` (NaN: not carried); ``quality`` and
    ``flags`` hold the flag names (joined by commas) of the readings that have them.
    """

    since: int
    us: Int64Array
    device: IntArray
    devices: tuple[str, ...]
    metric: Int8Array
    values: FloatArray
    questionable: BoolArray
    clock: BoolArray
    quality: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    #: The patient's quiet envelope (:mod:`homemonitor.rules.quiet`) over exactly these
    #: readings, when the engine left every rule idle on them; an entry made otherwise
    #: has none.
    quiet: Quiet | None = None
    #: Readings stored after the columns' and not yet in them (:meth:`later`): the
    #: readings an envelope let through, added to the columns when the entry is next read;
    #: as plain values (:data:`~homemonitor.rules.history.Packed`), which the garbage
    #: collector skips.
    pending: tuple[Packed, ...] = ()

    def __len__(self) -> int:
        return len(self.us) + len(self.pending)

    def later(self, readings: Sequence[Packed], quiet: Quiet) -> Cached:
        """This entry with ``readings`` (stored after all of its own, in measured order) and
        the envelope after them, without building columns: what a reading the envelope
        took costs the cache.
        """
        pending = (*self.pending, *readings)
        if len(pending) > MAX_PENDING:
            return self._with(quiet=None, pending=pending).settled()._with(quiet, ())
        return self._with(quiet, pending)

    def _with(self, quiet: Quiet | None, pending: tuple[Packed, ...]) -> Cached:
        """The same columns with ``quiet`` and ``pending`` (``dataclasses.replace``, faster)."""
        return Cached(self.since, *self._columns(), quiet, pending)

    def _columns(
        self,
    ) -> tuple[
        Int64Array,
        IntArray,
        tuple[str, ...],
        Int8Array,
        FloatArray,
        BoolArray,
        BoolArray,
        tuple[str, ...],
        tuple[str, ...],
    ]:
        """The columns, in the order of the fields and of :meth:`History.from_columns`."""
        return (
            self.us,
            self.device,
            self.devices,
            self.metric,
            self.values,
            self.questionable,
            self.clock,
            self.quality,
            self.flags,
        )

    def settled(self) -> Cached:
        """The same readings, all in the columns (no envelope: it is the caller's to keep)."""
        if not self.pending:
            return self
        bare = self._with(None, ())
        return bare._appended(self.pending) or bare.merged([unpacked(p) for p in self.pending])

    @classmethod
    def empty(cls, since: int) -> Cached:
        """No reading from ``since`` on."""
        return cls(
            since,
            np.empty(0, np.int64),
            np.empty(0, np.int32),
            (),
            np.empty(0, np.int8),
            np.empty((0, len(QUANTITIES))),
            np.empty(0, np.bool_),
            np.empty(0, np.bool_),
        )

    @classmethod
    def of(  # noqa: PLR0917 -- the columns of the history query, as it returns them
        cls,
        since: int,
        us: npt.ArrayLike,
        device: npt.ArrayLike,
        devices: Sequence[str],
        metric: npt.ArrayLike,
        values: npt.NDArray[np.float64],
        questionable: npt.ArrayLike,
        clock: npt.ArrayLike,
        quality: Sequence[str] = (),
        flags: Sequence[str] = (),
    ) -> Cached:
        """An entry from columns in any order (devices distinct, in any order)."""
        order, t_us, codes, names, metrics = measured_order(us, device, devices, metric)
        flagged = np.asarray(questionable, np.bool_)
        clocked = np.asarray(clock, np.bool_)
        return cls(
            since,
            t_us,
            codes,
            tuple(names),
            metrics,
            np.asarray(values, np.float64)[order],
            flagged[order],
            clocked[order],
            _names(flagged, quality, order),
            _names(clocked, flags, order),
        )

    def merged(self, readings: Sequence[StoredReading]) -> Cached:
        """This entry with ``readings`` added (a reading with a stored one's key replaces it)."""
        if self.pending:
            return self.settled().merged(readings)
        if not readings:
            return self
        appended = self._appended([packed(r) for r in readings])
        if appended is not None:
            return appended
        n = len(readings)
        devices = list(self.devices)
        codes = {name: i for i, name in enumerate(devices)}
        new_device = [codes.setdefault(r.device_id, len(codes)) for r in readings]
        devices = list(codes)
        matrix = np.full((n, len(QUANTITIES)), math.nan)
        for i, r in enumerate(readings):
            for q, x in r.values.items():
                matrix[i, _QUANTITY_COLUMN[q]] = x
        return Cached.of(
            self.since,
            np.concatenate([self.us, [micros(r.measured_at) for r in readings]]),
            np.concatenate([self.device, np.array(new_device, np.int32)]),
            devices,
            np.concatenate([self.metric, [_METRIC_CODE[r.metric] for r in readings]]),
            np.concatenate([self.values, matrix]),
            np.concatenate([self.questionable, [bool(r.quality) for r in readings]]),
            np.concatenate([self.clock, [bool(r.flags) for r in readings]]),
            self.quality + tuple(",".join(sorted(r.quality)) for r in readings if r.quality),
            self.flags + tuple(",".join(sorted(r.flags)) for r in readings if r.flags),
        )

    def _appended(self, packed: Sequence[Packed]) -> Cached | None:
        """The entry with ``packed`` after its newest reading, in measured order and each
        of a known device, in one step (no sort); else None."""
        last = int(self.us[-1]) if len(self.us) else -(2**63)
        devices = self.devices
        for p in packed:
            if p[0] <= last or p[1] not in devices:
                return None
            last = p[0]
        n = len(packed)
        rows = np.full((n, len(QUANTITIES)), math.nan)
        for i, p in enumerate(packed):
            for q, x in p[3]:
                rows[i, _QUANTITY_COLUMN[q]] = x  # type: ignore[index]  # a StrEnum's value
        quality, flags = [p[4] for p in packed if p[4]], [p[5] for p in packed if p[5]]
        return Cached(
            self.since,
            np.concatenate((self.us, np.fromiter((p[0] for p in packed), np.int64, n))),
            np.concatenate(
                (self.device, np.fromiter((devices.index(p[1]) for p in packed), np.int32, n))
            ),
            devices,
            np.concatenate(
                (self.metric, np.fromiter((_METRIC_CODE[p[2]] for p in packed), np.int8, n))  # type: ignore[index]
            ),
            np.concatenate((self.values, rows)),
            np.concatenate((self.questionable, np.fromiter((bool(p[4]) for p in packed), bool, n))),
            np.concatenate((self.clock, np.fromiter((bool(p[5]) for p in packed), bool, n))),
            (*self.quality, *quality) if quality else self.quality,
            (*self.flags, *flags) if flags else self.flags,
        )

    def after(self, since: int) -> Cached:
        """Only the readings measured at or after ``since`` (µs; not before this start)."""
        if since <= self.since:
            return self
        if self.pending:
            return self.settled().after(since)
        k = int(np.searchsorted(self.us, since, side="left"))
        first_q = int(np.count_nonzero(self.questionable[:k]))
        first_c = int(np.count_nonzero(self.clock[:k]))
        return Cached(
            since,
            self.us[k:],
            self.device[k:],
            self.devices,
            self.metric[k:],
            self.values[k:],
            self.questionable[k:],
            self.clock[k:],
            self.quality[first_q:],
            self.flags[first_c:],
        )

    def history(self, cap: int = HISTORY_CAP) -> History:
        """The entry as the engine reads it."""
        if self.pending:
            return self.settled().history(cap)
        return History.from_columns(*self._columns(), cap=cap, ordered=True)


_QUANTITY_COLUMN: Mapping[Quantity, int] = {q: k for k, q in enumerate(QUANTITIES)}


assert len(METRICS) == len(Metric)


class HistoryCache:
    """The entries of the patients a worker evaluated lately, at most ``max_patients``.

    Each with the patient's count of stored readings it matches (see the module):
    :meth:`current` gives an entry only while it is the database's.
    """

    def __init__(self, max_patients: int = MAX_PATIENTS) -> None:
        self.max_patients = max_patients
        self._entries: dict[str, tuple[Cached, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def current(self, patient_id: str, stored: int, added: int) -> Cached | None:
        """The patient's entry, if kept and exact: ``stored``, the patient's count of
        stored readings after this batch stored ``added`` of theirs, is the entry's count
        plus ``added``. Else None (the caller loads the readings)."""
        found = self._entries.get(patient_id)
        if found is None or found[1] + added != stored:
            return None
        return found[0]

    def keep(self, entries: Mapping[str, Cached], stored: Mapping[str, int]) -> None:
        """Keep ``entries`` (made in a transaction that has committed, when each patient's
        count of stored readings was ``stored``), newest last."""
        for patient_id, entry in entries.items():
            self._entries.pop(patient_id, None)
            self._entries[patient_id] = (entry, stored[patient_id])
        while len(self._entries) > self.max_patients:
            del self._entries[next(iter(self._entries))]

    def forget(self, patient_ids: Sequence[str]) -> None:
        """Drop these patients' entries (a load that could not be kept whole)."""
        for patient_id in patient_ids:
            self._entries.pop(patient_id, None)
