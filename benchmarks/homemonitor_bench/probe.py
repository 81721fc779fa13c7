"""The worker as the bench runs it: ``homemonitor run``, with a probe of its pauses beside it.

``python -m homemonitor_bench.probe FILE run --no-http`` runs ``homemonitor.cli`` unchanged
(whichever ``homemonitor`` is on the path: ``--worker-pythonpath`` works as before) and
appends to ``FILE``, as JSON lines, what stops the worker's event loop:

- every garbage collection of generation 1 or 2, and any of generation 0 that takes a
  millisecond or more (``gc.callbacks``): ``{"gc": generation, "t": wall start,
  "s": seconds, "collected": n}``;
- event-loop lag: a callback due every :data:`TICK_S` that runs late by :data:`LAG_S` or
  more, ``{"lag": seconds, "t": wall time it was due}``: the loop was busy (a batch
  prepared or encoded, a collection) or the process was not scheduled.

The probe only observes: a timer callback every few milliseconds and a clock read per
collection; the lines are written from the loop at most every :data:`FLUSH_S`.
Nothing here imports ``homemonitor``, so the tree under test is the one the worker loads.
"""

from __future__ import annotations

import asyncio
import gc
import json
import runpy
import sys
import time
from typing import Any

#: How often the lag probe expects to run, and how late counts as a pause.
TICK_S = 0.005
LAG_S = 0.010
#: Collections of generation 0 shorter than this are not recorded (there are hundreds a second).
GC0_MIN_S = 0.001
FLUSH_S = 0.5


class Probe:
    """Collects pause records in memory and appends them to ``path`` now and then."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._gc_started = 0.0
        self._gc_wall = 0.0
        self._last_flush = time.monotonic()

    # -- garbage collections -----------------------------------------------------------

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started, self._gc_wall = time.perf_counter(), time.time()
            return
        seconds = time.perf_counter() - self._gc_started
        generation = info["generation"]
        if generation or seconds >= GC0_MIN_S:
            self.records.append(
                {
                    "gc": generation,
                    "t": self._gc_wall,
                    "s": seconds,
                    "collected": info.get("collected", 0),
                }
            )

    # -- event-loop lag ----------------------------------------------------------------

    def start_ticking(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + TICK_S
        loop.call_at(due, self._tick, loop, due)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        late = now - due
        if late >= LAG_S:
            self.records.append({"lag": late, "t": time.time() - late})
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()
        following = max(due + TICK_S, now + TICK_S / 2)
        loop.call_at(following, self._tick, loop, following)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self.records:
            return
        records, self.records = self.records, []
        with open(self.path, "a", encoding="utf-8") as out:  # noqa: PTH123 - a few lines
            out.writelines(json.dumps(r) + "\n" for r in records)


class _ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    """Every new event loop (``asyncio.run`` makes the worker's) starts the lag probe."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.probe = probe

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_soon(self.probe.start_ticking, loop)
        return loop


def main() -> None:
    """``probe.py FILE ARGS...``: run ``homemonitor ARGS...`` with the probe writing to FILE."""
    path, args = sys.argv[1], sys.argv[2:]
    probe = Probe(path)
    gc.callbacks.append(probe.on_gc)
    asyncio.set_event_loop_policy(_ProbedPolicy(probe))
    sys.argv = ["homemonitor", *args]
    try:
        runpy.run_module("homemonitor.cli", run_name="__main__", alter_sys=True)
    finally:
        probe.flush()


if __name__ == "__main__":
    main()
