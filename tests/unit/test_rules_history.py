"""A patient's history (``homemonitor.rules.history``): built from the worker's columns it
holds exactly what it holds built from readings, and its views cut without copying."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from homemonitor.contract.readings import QUANTITIES, Metric
from homemonitor.rules.histories import Cached, HistoryCache
from homemonitor.rules.history import METRICS, History, StoredReading, micros, packed
from homemonitor.rules.plan import Plan
from homemonitor.rules.quiet import Quiet
from tests.unit.rulekit import HR, O2, S, W, at, bp, oximeter, series_columns, weight

#: An envelope to keep with pending readings (its contents do not matter to the cache).
_QUIET = Quiet(Plan(1, (), {}), 0.0, 0.0, ())


def _from_columns(readings: list[StoredReading], *, cap: int, matrix: bool = False) -> History:
    """``readings`` as the worker's history query returns them (any order; values by
    quantity, or as one matrix)."""
    devices = sorted({r.device_id for r in readings}, reverse=True)  # any order
    return History.from_columns(
        [micros(r.measured_at) for r in readings],
        [devices.index(r.device_id) for r in readings],
        devices,
        [METRICS.index(r.metric) for r in readings],
        np.array([[r.values.get(q, math.nan) for q in QUANTITIES] for r in readings])
        if matrix
        else {q: [r.values.get(q, math.nan) for r in readings] for q in QUANTITIES},
        [bool(r.quality) for r in readings],
        [bool(r.flags) for r in readings],
        [",".join(sorted(r.quality)) for r in readings if r.quality],
        [",".join(sorted(r.flags)) for r in readings if r.flags],
        cap=cap,
    )


_reading = st.tuples(
    st.integers(min_value=0, max_value=3),  # minutes after the previous one (0: a tie)
    st.sampled_from(["bp", "weight", "oximeter"]),
    st.sampled_from(["a", "b", "c"]),  # the device
    st.booleans(),  # questionable
    st.booleans(),  # clock flag
    st.floats(min_value=0, max_value=1),
)


def _readings(raw: list[tuple[int, str, str, bool, bool, float]]) -> list[StoredReading]:
    readings, minutes = [], 0
    for gap, kind, device, questionable, clock, x in raw:
        minutes += gap
        when = at(minutes=minutes)
        quality = ["cuff_loose", "body_movement"] if questionable else []
        flags = ["clock_stale"] if clock else []
        if kind == "bp":
            r = bp(when, 120 + 60 * x, pulse=60 + x, device=f"cuff-{device}", quality=quality)
            readings.append(
                StoredReading(
                    r.measured_at, r.device_id, r.metric, r.values, r.quality, frozenset(flags)
                )
            )
        elif kind == "weight":
            readings.append(weight(when, 80 + x, device=f"scale-{device}", quality=quality))
        else:
            r = oximeter(when, 90 + x, pulse=70 + x)
            readings.append(
                StoredReading(
                    r.measured_at,
                    f"oxi-{device}",
                    r.metric,
                    r.values,
                    frozenset(quality),
                    frozenset(flags),
                )
            )
    return readings


@settings(max_examples=80, deadline=None)
@given(st.lists(_reading, max_size=25), st.integers(min_value=1, max_value=6), st.randoms())
def test_a_history_from_columns_holds_what_one_from_readings_holds(
    raw: list[tuple[int, str, str, bool, bool, float]], cap: int, rng: random.Random
) -> None:
    """Any order, redelivered duplicates, ties and the cap: the same readings and series."""
    readings = list({r.key: r for r in _readings(raw)}.values())  # one reading per key
    shuffled = readings + rng.sample(readings, len(readings) // 3)  # some redelivered
    rng.shuffle(shuffled)
    expected = History(readings, cap=cap)
    actual = _from_columns(shuffled, cap=cap, matrix=cap % 2 == 0)
    assert (len(expected), expected.readings) == (len(actual), actual.readings)
    for q in QUANTITIES:
        for questionable in (False, True):
            assert series_columns(expected.series(q, questionable=questionable)) == series_columns(
                actual.series(q, questionable=questionable)
            )
    for r in readings:
        assert r in actual
        assert expected.until(r.measured_at).readings == actual.until(r.measured_at).readings
        at_r = tuple(x for x in expected.readings if x.measured_at == r.measured_at)
        assert at_r == expected.measured(r.measured_at) == actual.measured(r.measured_at)
        assert at_r == _from_columns(shuffled, cap=cap).until(r.measured_at).measured(r.measured_at)


def test_a_view_cuts_every_series_at_its_time_and_sees_nothing_newer() -> None:
    """until(t): series, readings, membership and the newest reading as of t."""
    readings = [weight(at(d), 80 + d) for d in range(5)] + [
        bp(at(d, hours=1), 120 + d, pulse=60) for d in range(5)
    ]
    for h in (History(readings), _from_columns(readings, cap=100)):
        view = h.until(at(2))
        assert [80.0, 81.0, 82.0] == view.series(W).value.tolist()
        assert [120.0, 121.0] == view.series(S).value.tolist()
        assert 5 == len(view)
        assert weight(at(3), 83) not in view
        assert weight(at(2), 82) in view
        assert at(1, hours=1).timestamp() == view.newest((S, HR), questionable=False)
        assert at(2).timestamp() == view.newest((W,), questionable=False)
        assert -math.inf == view.newest((O2,), questionable=True)


def test_the_newest_reading_skips_the_points_and_questionable_readings() -> None:
    """newest(): besides the given readings; flagged ones only when questionable counts."""
    flagged = weight(at(2), 90, quality=["body_movement"])
    point = weight(at(3), 84)
    readings = [weight(at(1), 82), flagged, point]
    for h in (History(readings), _from_columns(readings, cap=100)):
        assert at(1).timestamp() == h.newest((W,), questionable=False, besides=[point])
        assert at(2).timestamp() == h.newest((W,), questionable=True, besides=[point])
        assert at(3).timestamp() == h.newest((W,), questionable=False)


def test_micros_is_the_timestamp_in_microseconds() -> None:
    """micros(t) / 1e6 is t.timestamp() exactly, before and after the epoch."""
    for t in (at(), at(minutes=0.5) + timedelta(microseconds=7), at(days=-20000, minutes=1)):
        assert t.timestamp() == micros(t) / 1e6
    assert Metric.BLOOD_PRESSURE == METRICS[0]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_reading, max_size=25),
    st.integers(min_value=0, max_value=25),
    st.integers(min_value=0, max_value=80),
    st.randoms(),
)
def test_a_cache_entry_fed_reading_by_reading_holds_what_the_database_would_return(
    raw: list[tuple[int, str, str, bool, bool, float]], split: int, start: int, rng: random.Random
) -> None:
    """Loaded, then one batch after another (in order, late, new devices; in the columns or
    pending, as an envelope keeps them), then cut: the same."""
    readings = list({r.key: r for r in _readings(raw)}.values())
    loaded, later = readings[:split], readings[split:]
    rng.shuffle(loaded)
    entry = Cached.empty(0)
    if loaded:
        devices = sorted({r.device_id for r in loaded})
        entry = Cached.of(
            0,
            [micros(r.measured_at) for r in loaded],
            [devices.index(r.device_id) for r in loaded],
            devices,
            [METRICS.index(r.metric) for r in loaded],
            np.array([[r.values.get(q, math.nan) for q in QUANTITIES] for r in loaded]),
            [bool(r.quality) for r in loaded],
            [bool(r.flags) for r in loaded],
            [",".join(sorted(r.quality)) for r in loaded if r.quality],
            [",".join(sorted(r.flags)) for r in loaded if r.flags],
        )
    if rng.random() < 0.5:
        rng.shuffle(later)  # late readings too
    while later:  # batches of one or two readings, in the columns or pending
        k = rng.randint(1, 2)
        batch, later = later[:k], later[k:]
        if rng.random() < 0.5:
            entry = entry.later([packed(r) for r in batch], _QUIET)
        else:
            entry = entry.merged(batch)
    since = micros(at(minutes=start))
    entry = entry.after(since)
    expected = History([r for r in readings if micros(r.measured_at) >= since])
    actual = entry.history()
    assert (len(expected), expected.readings) == (len(entry), actual.readings)
    for q in QUANTITIES:
        for questionable in (False, True):
            assert series_columns(expected.series(q, questionable=questionable)) == series_columns(
                actual.series(q, questionable=questionable)
            )


def test_a_cache_entry_is_given_only_while_the_stored_count_is_its_own_and_the_batchs() -> None:
    """Kept at count 7: a batch that stored 2 of the patient's readings and brings the count
    to 9 gets it; at 10 somebody else stored one too, and the entry is not given."""
    cache = HistoryCache()
    entry = Cached.empty(0).merged([weight(at(), 80.0)])
    cache.keep({"p-1": entry}, {"p-1": 7})
    assert entry is cache.current("p-1", 9, 2)
    assert cache.current("p-1", 10, 2) is None
    assert cache.current("p-1", 8, 2) is None  # fewer: not the database it was made from
    assert cache.current("p-2", 2, 2) is None
    cache.keep({"p-1": entry}, {"p-1": 10})
    assert entry is cache.current("p-1", 11, 1)
    cache.forget(["p-1"])
    assert cache.current("p-1", 11, 1) is None
