"""The latency, outage and broker-crash phases."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from homemonitor.embedded import PrivatePostgres
from homemonitor_bench.clinic import breaches
from homemonitor_bench.consumers import ServiceWorkers
from homemonitor_bench.meter import rss_mb
from homemonitor_bench.publisher import LoadGenerator
from homemonitor_bench.search import Bench
from homemonitor_bench.stalls import (
    analyse,
    mosquitto_saves,
    postgres_events,
    probe_records,
)
from homemonitor_bench.stalls import render as render_stalls


def or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _percentiles(values: npt.NDArray[np.float64]) -> dict[str, float]:
    if not len(values):
        return {"n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": len(values),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
    }


async def latency(
    bench: Bench, workers: ServiceWorkers, rate: float, seconds: float
) -> dict[str, Any]:
    """Publish → stored and publish → alert opened, in milliseconds, at ``rate``."""
    bench.say(f"latency at {rate:.0f}/s for {seconds:g} s")
    step, published = await bench.step(workers, rate, seconds, record=True)
    assert published.sent_at is not None
    rows = await bench.db.fetch(
        "SELECT message_id::bigint AS seq, extract(epoch FROM stored_at)::float8 AS t, "
        "extract(epoch FROM received_at)::float8 AS r, xmin::text::bigint AS tx FROM readings "
        "WHERE message_id IS NOT NULL"  # not a seeded history
    )
    seq = np.fromiter((r["seq"] for r in rows), np.int64, len(rows))
    stored = np.fromiter((r["t"] for r in rows), np.float64, len(rows))
    received = np.fromiter((r["r"] for r in rows), np.float64, len(rows))
    tx = np.fromiter((r["tx"] for r in rows), np.int64, len(rows))
    sent = published.sent_at[seq - published.first]
    base = datetime.fromtimestamp(bench.base_ms / 1000, UTC)
    alerts = await bench.db.fetch(
        "SELECT (extract(epoch FROM opening_measured_at - $1::timestamptz) * 1000)::bigint "
        "AS seq, extract(epoch FROM opened_at)::float8 AS t FROM alerts",
        base,
    )
    a_seq = np.fromiter((r["seq"] for r in alerts), np.int64, len(alerts))
    a_t = np.fromiter((r["t"] for r in alerts), np.float64, len(alerts))
    inside = (a_seq >= published.first) & (a_seq < published.first + published.count)
    a_sent = published.sent_at[a_seq[inside] - published.first]
    to_stored = _percentiles((stored - sent) * 1000)
    second = (sent - published.sent_at[0]).astype(np.int64) if len(sent) else sent.astype(np.int64)
    worst = np.zeros(int(second.max()) + 1 if len(second) else 0)
    np.maximum.at(worst, second, (stored - sent) * 1000)
    to_alert = _percentiles((a_t[inside] - a_sent) * 1000)
    n = bench.devices
    breaching = sum(
        breaches(s, n) for s in range(published.first, published.first + published.count)
    )

    def summary(p: dict[str, float]) -> str:
        return " ".join(f"{k} {p.get(k, float('nan')):6.1f}" for k in ("p50", "p95", "p99"))

    bench.say(
        f"  publish -> stored {summary(to_stored)} ms; publish -> alert opened "
        f"{summary(to_alert)} ms ({to_alert['n']} alerts from {breaching} breaches)"
    )
    stalls = None
    if len(seq):
        since, until = float(published.sent_at[0]) - 1, float(stored.max()) + 1
        stalls = analyse(
            seq=seq,
            sent=sent,
            acked=None if published.acked_at is None else published.acked_at[seq - published.first],
            received=received,
            stored=stored,
            tx=tx,
            probe=probe_records(workers.probe_path(0), since, until),
            postgres=(
                postgres_events(bench.postgres_log, since, until) if bench.postgres_log else []
            ),
            saves=mosquitto_saves(bench.broker.log_path, since, until),
        )
        for line in render_stalls(rate, stalls):
            bench.say(line)
    return {
        "rate": rate,
        "seconds": seconds,
        "kept_up": step.ok,
        "step": dataclasses.asdict(step),
        "publish_to_stored_ms": to_stored,
        "publish_to_alert_opened_ms": to_alert,
        "worst_stored_ms_by_second": [round(float(w), 1) for w in worst],
        "breaching_readings": breaching,
        "stalls": stalls,
    }


async def outage(
    bench: Bench,
    workers: ServiceWorkers,
    pg: PrivatePostgres,
    *,
    rate: float,
    before: float,
    down: float,
    after: float,
) -> dict[str, Any]:
    """PostgreSQL stopped for ``down`` seconds while readings arrive at ``rate``.

    Sampled every 0.25 s: published, stored, the worker's and the broker's RSS. The
    restart runs in the background, so the first commit is timed from the restart
    request (PostgreSQL's own start-up included), not from when ``pg_ctl`` returned.
    """
    bench.say(f"outage: PostgreSQL stopped for {down:g} s at {rate:.0f}/s")
    count = round(rate * (before + down + after))
    first = bench.take(count)
    await workers.reset()
    pid, broker = workers.pids()[0], bench.meter.mosquitto
    samples: list[dict[str, float]] = []
    stored = 0
    publishing = asyncio.create_task(bench.load.publish(rate, count, first, record=False))
    t0 = time.monotonic()
    t_down: float | None = None
    t_restart: float | None = None
    restarting: asyncio.Task[None] | None = None
    t_ready = t_first_commit = t_caught_up = None
    stored_before = backlog = 0
    while True:
        now = time.monotonic() - t0
        if t_down is None and now >= before:
            await bench.db.close()
            stored_before = stored
            await asyncio.to_thread(pg.stop)
            t_down = time.monotonic() - t0
            bench.say(f"  database stopped; {bench.load.acked} published, {stored} stored")
        elif t_down is not None and restarting is None and now >= t_down + down:
            restarting = asyncio.create_task(asyncio.to_thread(pg.start))
            t_restart, backlog = now, bench.load.acked - stored_before
            bench.say(f"  database restarting; backlog {backlog} readings")
        if restarting is not None and t_ready is None and restarting.done():
            restarting.result()
            t_ready = time.monotonic() - t0
        now = time.monotonic() - t0
        if t_down is None or t_ready is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                stored = await workers.processed()
        acked = bench.load.acked
        samples.append(
            {
                "t": now,
                "published": acked,
                "stored": stored,
                "worker_rss_mb": rss_mb(pid),
                "broker_rss_mb": rss_mb(broker) if broker else 0.0,
            }
        )
        if t_ready is not None:
            if t_first_commit is None and stored > stored_before:
                t_first_commit = now
            if t_caught_up is None and acked - stored <= rate * 0.5:
                t_caught_up = now
        if (publishing.done() and t_caught_up is not None) or now > before + down + after + 180:
            break
        await asyncio.sleep(0.25)
    published = await publishing
    drained = await bench.wait_drained(workers, published.acked, 120)
    verification = await workers.verify(first, published.acked)
    rss_before = max((s["worker_rss_mb"] for s in samples if s["t"] < before), default=0.0)
    broker_before = max((s["broker_rss_mb"] for s in samples if s["t"] < before), default=0.0)
    in_outage = [s for s in samples if t_down is not None and s["t"] >= t_down]
    drain_rate = None
    if t_first_commit is not None and t_caught_up is not None:
        caught = next(s["stored"] for s in samples if s["t"] == t_caught_up)
        drain_rate = (caught - stored_before) / max(t_caught_up - t_first_commit, 0.25)

    def since(t: float | None) -> float | None:
        return None if t is None or t_restart is None else t - t_restart

    result: dict[str, Any] = {
        "rate": rate,
        "down_s": down,
        "backlog_at_restart": backlog,
        "postgres_start_s": since(t_ready),
        "first_commit_after_restart_s": since(t_first_commit),
        "caught_up_after_restart_s": since(t_caught_up),
        "drain_rate_per_s": drain_rate,
        "worker_rss_mb": {
            "before": rss_before,
            "max_down": max(
                (s["worker_rss_mb"] for s in in_outage if t_restart and s["t"] <= t_restart),
                default=0.0,
            ),
            "max_after": max((s["worker_rss_mb"] for s in in_outage), default=0.0),
        },
        "broker_rss_mb": {
            "before": broker_before,
            "max": max((s["broker_rss_mb"] for s in in_outage), default=0.0),
        },
        "drained": drained is not None,
        "verification": dataclasses.asdict(verification),
        "samples": samples[::4],
    }
    rss = result["worker_rss_mb"]
    bench.say(
        f"  worker RSS {rss['before']:.0f} MB before, {rss['max_down']:.0f} MB at most while "
        f"down; first commit {or_nan(since(t_first_commit)):.1f} s after the restart request, "
        f"caught up after {or_nan(since(t_caught_up)):.1f} s, drain {or_nan(drain_rate):.0f}/s; "
        f"lost {verification.lost}, duplicated {verification.duplicated}"
    )
    return result


async def crash(
    bench: Bench,
    workers: ServiceWorkers,
    connect: Callable[[], Awaitable[LoadGenerator]],
    *,
    acknowledged: int,
    rate: float,
    worker_running: bool,
    settle_s: float,
) -> dict[str, Any]:
    """The broker SIGKILLed mid-stream once it has acknowledged ``acknowledged`` readings.

    ``bench.broker`` is a broker of this phase's own. The worker's persistent session is
    made first and saved (the broker stopped gracefully and started again). Then readings
    are published at ``rate`` (a quarter more than ``acknowledged``, so the stream is still
    going), the broker is killed, started again, and the worker (still running, or away
    until then: a backlog the broker held, as while the database is down) resumes its
    session. Counted: readings the broker acknowledged that are never stored (after
    nothing new was stored for ``settle_s``, NATS's ``ack_wait`` and some). ``connect``
    starts a load generator on the broker (each broker restart ends the one before).
    """
    broker = bench.broker
    mode = "running" if worker_running else "away"
    bench.say(
        f"crash: {broker.kind}, worker {mode}: SIGKILL once {acknowledged} readings at "
        f"{rate:.0f}/s are acknowledged"
    )
    await workers.start()
    await bench.until_consuming(workers)
    if not worker_running:
        await workers.stop()
    bench.load.close()
    await asyncio.to_thread(broker.stop)  # graceful: the session is saved before the stream
    await asyncio.to_thread(broker.start)
    started = time.monotonic()
    bench.load = await connect()
    total = acknowledged + acknowledged // 4
    first = bench.take(total)
    await workers.reset()
    publishing = asyncio.create_task(bench.load.publish(rate, total, first, record=False))
    while bench.load.acked < acknowledged and not publishing.done():  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    killed = time.monotonic()
    await asyncio.to_thread(broker.kill)
    published = await publishing
    acked = published.acked  # first .. first + acked - 1, in order
    stored_at_kill = await workers.processed()
    await asyncio.to_thread(broker.start)
    restarted = time.monotonic()
    if not worker_running:
        await workers.start()
    last, last_change, deadline = -1, time.monotonic(), time.monotonic() + 180
    while True:
        verification = await workers.verify(first, acked)
        now = time.monotonic()
        if verification.stored != last:
            last, last_change = verification.stored, now
        if not verification.lost or now - last_change > settle_s or now > deadline:
            break
        await asyncio.sleep(0.25)
    await workers.stop()
    result = {
        "broker": broker.kind,
        "worker": mode,
        "rate": rate,
        "acknowledged": acked,
        "sent": bench.load.sent,
        "stored_at_kill": stored_at_kill,
        "killed_after_broker_start_s": killed - started,
        "stored_after_restart_s": last_change - restarted,
        "verification": dataclasses.asdict(verification),
    }
    bench.say(
        f"  {broker.kind}, worker {mode}: {acked} acknowledged, {stored_at_kill} stored at the "
        f"kill ({killed - started:.1f} s after the broker started); after the restart "
        f"lost {verification.lost}, duplicated {verification.duplicated}, "
        f"{verification.unexpected} stored that were sent but not acknowledged"
    )
    return result
