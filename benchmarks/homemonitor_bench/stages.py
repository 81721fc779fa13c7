"""Where the worker's CPU goes: py-spy samples classified by pipeline stage."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from homemonitor_bench.consumers import ServiceWorkers
from homemonitor_bench.search import Bench

#: Stages of the worker, by the frames py-spy samples. For each frame, innermost first,
#: the first pattern that matches decides. asyncpg's protocol is Cython: its work shows as
#: the asyncio transport frame that calls it (only asyncpg uses transports in a worker
#: run with ``--no-http``).
#: A stack with a registry (re)load anywhere in it is that, whatever it calls.
_RELOAD = re.compile(
    r"^(?:RegistryCache\.(?:load|refresh)|Worker\._(?:reload|refresh)_registry) \(|"
    r"^_build \((?:homemonitor/)?registry/cache\.py"
)
#: The rules engine's history query is a fetch (asyncpg: database) and the Python that turns
#: its rows into the engine's readings (``_history`` itself: its own stage).
_STAGE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("decode + validate", r"^(?:Worker\._prepare(?:_now)?|prepare|RegistryCache\.resolve) \("),
    ("history rows -> readings", r"^_history(?:\.<locals>\.\S+)? \((?:homemonitor/)?alerts/"),
    (
        "rule evaluation",
        r"^open_or_update \(|careplan\.py|numpy/|(?:homemonitor/)?rules/|"
        r"(?:homemonitor/)?alerts/(?:episodes|rows)\.py",
    ),
    (
        "database write",
        r"asyncpg/|transaction\.py|_read_ready__data_received|_SelectorSocketTransport\.write|"
        r"^Worker\._commit",
    ),
    ("decode + validate", r"decoding/|validation\.py|units\.py|protocol\.py|pydantic/"),
    (
        "MQTT client + intake",
        r"paho/|aiomqtt/|transport\.py|"
        r"^Worker\.(?:_inbound|_next|_collect|_acknowledge|_consume) \(",
    ),
    ("metrics, logging", r"prometheus_client/|logging/|structlog/|^Worker\._record \("),
)
_STAGES = tuple((stage, re.compile(pattern)) for stage, pattern in _STAGE_PATTERNS)
STAGE_ORDER = (
    "MQTT client + intake",
    "decode + validate",
    "history rows -> readings",
    "rule evaluation",
    "database write",
    "metrics, logging",
    "registry reload",
    "asyncio event loop, other",
)


def classify(frames: Sequence[str]) -> str:
    """The stage a sampled stack (outermost frame first) was in."""
    if any(_RELOAD.search(frame) for frame in frames):
        return "registry reload"
    for frame in reversed(frames):
        for stage, pattern in _STAGES:
            if pattern.search(frame):
                return stage
    return "asyncio event loop, other"


def parse_raw_profile(text: str) -> dict[str, int]:
    """Samples per stage from py-spy's ``--format raw`` (collapsed stacks)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        stage = classify(stack.split(";"))
        counts[stage] = counts.get(stage, 0) + int(n)
    return counts


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile(
    bench: Bench, workers: ServiceWorkers, rate: float, seconds: float
) -> dict[str, Any]:
    """CPU per reading of the worker, split by stage with py-spy samples."""
    spy = _py_spy()
    bench.say(
        f"profile: worker at {rate:.0f}/s for {seconds:g} s" + ("" if spy else " (no py-spy)")
    )
    out = bench.workdir / "worker-profile.txt"
    sampler = None
    if spy:
        sampler = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(workers.pids()[0]), "--rate", "250", "--nonblocking",
            "--format", "raw", "--duration", str(max(1, int(seconds - 0.5))), "--output",
            str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    step, _ = await bench.step(workers, rate, seconds)
    result: dict[str, Any] = {
        "rate": rate,
        "worker_cpu_us_per_reading": step.cpu_us["consumer"],
        "cpu_us_per_reading": step.cpu_us,
        "step": dataclasses.asdict(step),
        "stages": None,
    }
    if sampler is not None:
        _, err = await sampler.communicate()
        if sampler.returncode == 0 and out.exists():
            counts = parse_raw_profile(out.read_text())
            total = sum(counts.values()) or 1
            result["samples"] = total
            result["stages"] = {
                stage: {
                    "share": n / total,
                    "cpu_us_per_reading": n / total * step.cpu_us["consumer"],
                }
                for stage in STAGE_ORDER
                if (n := counts.get(stage, 0))
            }
            bench.say(
                "  worker CPU per reading: "
                + ", ".join(
                    f"{s} {v['cpu_us_per_reading']:.0f} us" for s, v in result["stages"].items()
                )
            )
        else:
            result["error"] = err.decode(errors="replace")[-500:]
            bench.say(f"  py-spy failed: {result['error'].strip()}")
    return result
