"""The worst stalls of a latency run, and what each coincides with.

A reading's publish -> stored time is cut into legs by what the bench and the worker
already record:

- *broker ack*: publish -> the broker's PUBACK to the load generator (the broker
  acknowledges on receipt, so a late PUBACK is a broker pause: a save, a busy machine);
- *to worker*: publish -> ``received_at``, when the worker's read brought it (broker,
  socket, and a worker event loop too busy to read);
- *in worker*: ``received_at`` -> ``stored_at`` (batching, preparing, waiting for the
  commit before it, the INSERT itself).

Rows of one batch share their inserting transaction (``xmin``), which gives the batch's
size and when its INSERT ran. Beside those, for each stall: the worker's garbage
collections and event-loop lag from :mod:`homemonitor_bench.probe`, PostgreSQL's own log
(checkpoints, autovacuum, statements over :data:`SLOW_STATEMENT_MS`) and Mosquitto's
saves of its in-memory database (logged to the second).
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: PostgreSQL logs statements that take at least this long (set by the bench).
SLOW_STATEMENT_MS = 20
#: PostgreSQL's log settings for the bench's private cluster: what a stall is matched to.
POSTGRES_LOGGING = {
    "log_line_prefix": "'%m [%p] %a '",
    "log_checkpoints": "on",
    "log_autovacuum_min_duration": "0",
    "log_min_duration_statement": str(SLOW_STATEMENT_MS),
}
#: Stalls reported per run, and how far apart (publish times) two must be to count as two.
TOP = 5
APART_S = 1.0

_PG_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<tz>\w+) \[\d+\] (?P<app>\S*) ?"
    r"(?P<level>[A-Z]+):\s+(?P<text>.*)$"
)
_DURATION = re.compile(r"duration: (?P<ms>[0-9.]+) ms\s+(?:statement|execute [^:]*): (?P<sql>.*)")


def postgres_events(log: Path, since: float, until: float) -> list[dict[str, Any]]:
    """Checkpoints, autovacuum runs and slow statements PostgreSQL logged in the window."""
    events: list[dict[str, Any]] = []
    with contextlib.suppress(OSError), log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _PG_LINE.match(line.rstrip("\n"))
            if m is None:
                continue
            t = datetime.fromisoformat(f"{m['ts']}+00:00").timestamp()  # the cluster logs UTC
            if not since <= t <= until:
                continue
            text = m["text"]
            if text.startswith(("checkpoint starting", "checkpoint complete")):
                events.append({"t": t, "what": text.split(":")[0]})
            elif text.startswith("automatic "):
                events.append({"t": t, "what": text.split(":")[0].split(" system usage")[0]})
            elif (d := _DURATION.match(text)) is not None:
                sql = " ".join(d["sql"].split())[:40]
                ms = float(d["ms"])
                events.append(
                    {"t": t - ms / 1000, "s": ms / 1000, "what": f"{_who(m['app'])}: {sql}"}
                )
    return events


def _who(application: str) -> str:
    """The worker's connections name themselves; the bench's own do not."""
    return application if application not in ("", "[unknown]") else "bench"


def mosquitto_saves(log: Path, since: float, until: float) -> list[float]:
    """Seconds (epoch, whole) in which Mosquitto saved its in-memory database."""
    saves: list[float] = []
    with contextlib.suppress(OSError), log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            stamp, _, text = line.partition(": ")
            if "Saving in-memory database" in text and stamp.isdigit():
                t = float(stamp)
                if since - 1 <= t <= until:
                    saves.append(t)
    return saves


def probe_records(path: Path, since: float, until: float) -> list[dict[str, Any]]:
    """The worker's collections and loop lags (:mod:`homemonitor_bench.probe`) in the window."""
    records: list[dict[str, Any]] = []
    with contextlib.suppress(OSError), path.open(encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                r = json.loads(line)
                if since <= r["t"] <= until:
                    records.append(r)
    return records


def _overlapping(events: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [e for e in events if e["t"] <= end and e["t"] + e.get("s", 0.0) >= start]


def analyse(
    *,
    seq: npt.NDArray[np.int64],
    sent: npt.NDArray[np.float64],
    acked: npt.NDArray[np.float64] | None,
    received: npt.NDArray[np.float64],
    stored: npt.NDArray[np.float64],
    tx: npt.NDArray[np.int64],
    probe: list[dict[str, Any]],
    postgres: list[dict[str, Any]],
    saves: list[float],
) -> dict[str, Any]:
    """The worst stalls (at most :data:`TOP`, :data:`APART_S` apart) and a summary."""
    latency = (stored - sent) * 1000
    order = np.argsort(stored)
    tx_sorted = tx[order]
    starts = np.flatnonzero(np.r_[True, tx_sorted[1:] != tx_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    batch_of = np.empty(len(order), np.int64)
    batch_of[order] = np.repeat(np.arange(len(starts)), sizes)
    batch_start = stored[order][starts]  # when each batch's INSERT began storing rows
    gc_pauses = [r for r in probe if "gc" in r]
    lags = [{"t": r["t"], "s": r["lag"]} for r in probe if "lag" in r]
    picked: list[int] = []
    for i in np.argsort(-latency):
        if len(picked) >= TOP:
            break
        if all(abs(sent[i] - sent[j]) >= APART_S for j in picked):
            picked.append(int(i))
    stalls = []
    for i in picked:
        b = int(batch_of[i])
        window = (float(sent[i]), float(stored[i]))
        collections = _overlapping(gc_pauses, *window)
        lagged = _overlapping(lags, *window)
        stalls.append(
            {
                "seq": int(seq[i]),
                "sent_at": float(sent[i]),
                "latency_ms": float(latency[i]),
                "broker_ack_ms": (
                    float((acked[i] - sent[i]) * 1000)
                    if acked is not None and acked[i] > 0
                    else None
                ),
                "to_worker_ms": float((received[i] - sent[i]) * 1000),
                "in_worker_ms": float((stored[i] - received[i]) * 1000),
                "batch_size": int(sizes[b]),
                "since_previous_batch_ms": (
                    float((batch_start[b] - batch_start[b - 1]) * 1000) if b else None
                ),
                "gc": [
                    {"generation": g["gc"], "ms": g["s"] * 1000, "collected": g["collected"]}
                    for g in collections
                ],
                "gc_ms": sum(g["s"] for g in collections) * 1000,
                "max_loop_lag_ms": max((x["s"] for x in lagged), default=0.0) * 1000,
                "postgres": [
                    {
                        "at_ms": (e["t"] - sent[i]) * 1000,
                        "ms": e.get("s", 0.0) * 1000,
                        "what": e["what"],
                    }
                    for e in _overlapping(postgres, window[0] - 1.0, window[1] + 0.2)
                ],
                "broker_saved": any(int(window[0]) - 1 <= s <= window[1] for s in saves),
            }
        )
    slow = latency > 50
    gen2 = [g for g in gc_pauses if g["gc"] == 2]
    legs = {
        "to_worker": (received - sent) * 1000,
        "in_worker": (stored - received) * 1000,
    }
    if acked is not None and (acked > 0).all():
        legs["broker_ack"] = (acked - sent) * 1000
    return {
        "stalls": stalls,
        "legs_ms": {leg: _spread(v) for leg, v in legs.items()},
        "over_50ms": int(slow.sum()),
        "batches": len(starts),
        "batch_size_max": int(sizes.max()) if len(sizes) else 0,
        "batch_size_p99": float(np.percentile(sizes, 99)) if len(sizes) else 0.0,
        "gc2_count": len(gen2),
        "gc2_ms_max": max((g["s"] for g in gen2), default=0.0) * 1000,
        "gc_ms_max": max((g["s"] for g in gc_pauses), default=0.0) * 1000,
        "loop_lag_ms_max": max((x["s"] for x in lags), default=0.0) * 1000,
        "loop_lags_over_50ms": sum(1 for x in lags if x["s"] > 0.05),
        "broker_ack_ms_p99": (
            float(np.percentile((acked - sent)[acked > 0] * 1000, 99))
            if acked is not None and (acked > 0).any()
            else None
        ),
        "broker_ack_ms_max": (
            float(((acked - sent)[acked > 0] * 1000).max())
            if acked is not None and (acked > 0).any()
            else None
        ),
        "postgres_events": [e["what"] for e in postgres if "s" not in e][:20],
        "slow_statements": sum(1 for e in postgres if "s" in e),
        "broker_saves": len(saves),
    }


def _spread(values: npt.NDArray[np.float64]) -> dict[str, float]:
    p50, p99, top = np.percentile(values, [50, 99, 100])
    return {"p50": float(p50), "p99": float(p99), "max": float(top)}


def render(rate: float, found: dict[str, Any]) -> list[str]:
    """Lines for the worst stalls of one latency run."""
    lines = [
        f"  worst stalls at {rate:.0f}/s ({found['over_50ms']} readings over 50 ms; "
        f"{found['batches']} batches, largest {found['batch_size_max']}; worker gc gen2 "
        f"x{found['gc2_count']} max {found['gc2_ms_max']:.0f} ms, loop lag max "
        f"{found['loop_lag_ms_max']:.0f} ms; broker PUBACK p99 "
        f"{_ms(found['broker_ack_ms_p99'])} max {_ms(found['broker_ack_ms_max'])}; "
        f"{found['slow_statements']} statements >= {SLOW_STATEMENT_MS} ms):"
    ]
    lines.append(
        "    legs p50/p99/max: "
        + ", ".join(
            f"{leg.replace('_', ' ')} {v['p50']:.1f}/{v['p99']:.0f}/{v['max']:.0f} ms"
            for leg, v in found["legs_ms"].items()
        )
    )
    for s in found["stalls"]:
        pg = "; ".join(
            f"{e['what']} {e['ms']:.0f} ms at {e['at_ms']:+.0f}" for e in s["postgres"][:3]
        )
        gcs = ",".join(f"g{g['generation']} {g['ms']:.0f}" for g in s["gc"]) or "-"
        lines.append(
            f"    {s['latency_ms']:6.0f} ms: broker ack {_ms(s['broker_ack_ms'])}, to worker "
            f"{s['to_worker_ms']:.0f}, in worker {s['in_worker_ms']:.0f} ms; batch "
            f"{s['batch_size']}, {_ms(s['since_previous_batch_ms'])} after the previous; "
            f"gc {gcs} ms; loop lag {s['max_loop_lag_ms']:.0f} ms"
            + ("; broker saved" if s["broker_saved"] else "")
            + (f"; postgres: {pg}" if pg else "")
        )
    return lines


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"
