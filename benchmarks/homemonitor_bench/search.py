"""One step (publish at a rate, see whether the consumer keeps up) and the step search."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from homemonitor.embedded import PrivateBroker
from homemonitor_bench.consumers import Consumer, Db, Verification
from homemonitor_bench.meter import CpuMeter, peak_rss_mb, reset_peak_memory
from homemonitor_bench.publisher import LoadGenerator, Published


@dataclasses.dataclass(slots=True)
class Step:
    """One step of a search, or a latency or profile run."""

    consumer: str
    rate: float
    seconds: float
    achieved: float  # publish rate the load generator held
    consumer_rate: float  # stored per second over the last three quarters of publishing
    lag_end: int  # PUBACKed by the broker but not yet stored when publishing ended
    drain_s: float  # from the end of publishing until everything was stored
    verification: Verification
    ok: bool
    why: str
    cpu_us: dict[str, float]  # CPU microseconds per reading, by process
    consumer_cpu_share: float  # consumer CPU / wall time while publishing and draining
    peak_rss_mb: float  # consumer's peak resident memory during the step
    alerts_opened: int | None = None  # episodes the step opened (workers only)


@dataclasses.dataclass(slots=True)
class Search:
    consumer: str
    steps: list[Step]
    best: Step | None
    limit: str  # what stopped the search


class Bench:
    """The phases, against one broker, database and load generator."""

    def __init__(
        self,
        *,
        db: Db,
        broker: PrivateBroker,
        load: LoadGenerator,
        meter: CpuMeter,
        base_ms: int,
        devices: int,
        workdir: Path,
        postgres_log: Path | None = None,
        quiet: bool = False,
    ) -> None:
        self.db = db
        self.broker = broker
        self.load = load
        self.meter = meter
        self.base_ms = base_ms
        self.devices = devices  # the clinic's: reading seq comes from device seq % devices
        self.workdir = workdir
        self.postgres_log = postgres_log
        self.quiet = quiet
        self.next_seq = 0
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def take(self, count: int) -> int:
        first = self.next_seq
        self.next_seq += count
        return first

    async def until_consuming(self, consumer: Consumer, within: float = 60) -> None:
        """Publish a few readings until the consumer stores some; then start clean."""
        await consumer.reset()
        deadline = time.monotonic() + within
        while True:
            await self.load.publish(200, 20, self.take(20), record=False)
            for _ in range(20):
                if await consumer.processed() > 0:
                    await asyncio.sleep(0.3)
                    warm, _ = await self.step(consumer, 500, 1.0, quiet=True)  # then clean
                    if warm.verification.lost or warm.verification.duplicated:
                        msg = f"{consumer.label} lost readings while warming up: {warm.why}"
                        raise RuntimeError(msg)
                    return
                await asyncio.sleep(0.1)
            if time.monotonic() > deadline:
                msg = f"{consumer.label} stored nothing within {within:g} s"
                raise RuntimeError(msg)

    async def wait_drained(self, consumer: Consumer, target: int, within: float) -> float | None:
        """Seconds until ``consumer`` has processed ``target``; None if not ``within``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if await consumer.processed() >= target:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        return None

    async def step(
        self,
        consumer: Consumer,
        rate: float,
        seconds: float,
        *,
        record: bool = False,
        quiet: bool = False,
    ) -> tuple[Step, Published]:
        """Publish ``rate`` readings/s for ``seconds`` and judge whether the consumer kept up."""
        count = max(2, round(rate * seconds))
        first = self.take(count)
        await consumer.reset()
        pids = consumer.pids()
        for pid in pids:
            reset_peak_memory(pid)
        cpu0, wall0 = self.meter.snapshot(pids), time.monotonic()
        publishing = asyncio.create_task(self.load.publish(rate, count, first, record=record))
        t0 = time.monotonic()
        await asyncio.sleep(seconds / 4)
        q_done, q_t = await consumer.processed(), time.monotonic()
        while not publishing.done() and self.load.sent < count:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)
        end_done, end_acked, end_t = await consumer.processed(), self.load.acked, time.monotonic()
        published = await publishing
        consumer_rate = (end_done - q_done) / max(end_t - q_t, 1e-3)
        lag = max(0, end_acked - end_done)
        timeout = min(180.0, 20 + 3 * lag / max(consumer_rate, 100.0))
        drain = await self.wait_drained(consumer, published.acked, timeout)
        cpu1, wall1 = self.meter.snapshot(pids), time.monotonic()
        verification = await consumer.verify(first, published.acked)
        n = max(1, verification.stored)
        cpu_us = {k: (cpu1[k] - cpu0[k]) / n * 1e6 for k in cpu0}
        peak = sum(peak_rss_mb(pid) for pid in pids)
        opened = getattr(consumer, "alerts_opened", None)
        alerts = await opened() if opened is not None else None
        problems = []
        if published.achieved < 0.95 * rate:
            problems.append(f"publisher held only {published.achieved:.0f}/s")
        if consumer_rate < 0.95 * rate or lag > rate:
            problems.append(f"consumer behind ({consumer_rate:.0f}/s, lag {lag})")
        if drain is None:
            problems.append(f"not drained within {timeout:.0f} s")
        if verification.lost or verification.duplicated or verification.unexpected:
            problems.append(
                f"LOST {verification.lost} DUPLICATED {verification.duplicated} "
                f"UNEXPECTED {verification.unexpected}"
            )
        result = Step(
            consumer=consumer.label,
            rate=rate,
            seconds=seconds,
            achieved=published.achieved,
            consumer_rate=consumer_rate,
            lag_end=lag,
            drain_s=drain if drain is not None else float("nan"),
            verification=verification,
            ok=not problems,
            why="; ".join(problems) or "kept up",
            cpu_us=cpu_us,
            consumer_cpu_share=(cpu1["consumer"] - cpu0["consumer"]) / (wall1 - wall0),
            peak_rss_mb=peak,
            alerts_opened=alerts,
        )
        if not quiet:
            self.say(
                f"  {consumer.label:<34} {rate:>7.0f}/s x {seconds:g}s: "
                f"{'ok  ' if result.ok else 'FAIL'} stored {consumer_rate:7.0f}/s, "
                f"lag {lag:>6}, drained in {result.drain_s:5.2f}s, "
                f"{cpu_us['consumer']:5.0f} us/reading, lost {verification.lost}, "
                f"dup {verification.duplicated}"
                + ("" if alerts is None else f", {alerts} alerts")
                + ("" if result.ok else f"  [{result.why}]")
            )
        _ = t0
        return result, published

    async def search(
        self, consumer: Consumer, start: float, seconds: float, max_steps: int
    ) -> Search:
        """Double the rate until a step fails, then narrow down to within about 5 %."""
        self.say(f"step search: {consumer.label}")
        steps: list[Step] = []
        best: Step | None = None
        fail: Step | None = None
        rate, estimated, limit = start, False, "step budget"
        for _ in range(max_steps):
            step, _published = await self.step(consumer, rate, seconds)
            steps.append(step)
            if step.ok:
                best = step if best is None or step.rate > best.rate else best
            else:
                fail = step if fail is None or step.rate < fail.rate else fail
                if step.verification.lost or step.verification.duplicated:
                    limit = "readings lost or duplicated"
                    break
            if fail is None:
                rate *= 2
                continue
            publisher_limited = "publisher" in fail.why and "consumer" not in fail.why
            limit = "load generator" if publisher_limited else "consumer"
            low = best.rate if best else 0.0
            if best is not None and fail.rate <= best.rate * 1.05:
                break
            candidate = 0.97 * min(fail.consumer_rate, fail.achieved)
            if not estimated and low * 1.05 < candidate < fail.rate * 0.95:
                estimated, rate = True, candidate
            else:
                rate = (low + fail.rate) / 2 if best else fail.rate / 2
            rate = float(round(rate / 50) * 50)
            if rate < 50:
                break
        return Search(consumer.label, steps, best, limit)
