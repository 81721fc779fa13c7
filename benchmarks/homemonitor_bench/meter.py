"""CPU and memory of the bench's processes (psutil), and the machine the figures came from."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its children it has waited for)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    seconds = times.user + times.system
    if reaped_children:
        seconds += times.children_user + times.children_system
    return seconds


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB; 0 when it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of ``pid`` (VmHWM) in MiB since :func:`reset_peak_memory`.

    psutil 7 has no peak RSS on Linux (8.0 brings ``memory_extras().peak_rss``), so this
    one field is read from ``/proc/<pid>/status``.
    """
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_memory(pid: int) -> None:
    """Reset VmHWM to the current RSS (``clear_refs`` 5), so a phase has its own peak.

    A kernel interface psutil does not wrap.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _children(ppid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(ppid).children()]
    except psutil.NoSuchProcess:
        return []


def pid_with_argument(argument: str) -> int | None:
    """A process whose command line contains ``argument``."""
    for proc in psutil.process_iter(["cmdline"]):
        if argument in "\0".join(proc.info["cmdline"] or ()):
            return proc.pid
    return None


def _machine_busy_seconds() -> float:
    t = psutil.cpu_times()  # all CPUs: everything but idle and iowait
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


@dataclasses.dataclass(slots=True)
class CpuMeter:
    """CPU seconds of each part of the bench."""

    loadgen: int
    mosquitto: int | None
    postmaster: int | None

    def snapshot(self, consumer: Sequence[int]) -> dict[str, float]:
        pg = 0.0
        if self.postmaster is not None:
            pg = cpu_seconds(self.postmaster, reaped_children=True) + sum(
                cpu_seconds(p) for p in _children(self.postmaster)
            )
        return {
            "consumer": sum(cpu_seconds(p) for p in consumer),
            "postgres": pg,
            "mosquitto": cpu_seconds(self.mosquitto) if self.mosquitto else 0.0,
            "loadgen": cpu_seconds(self.loadgen),
            "machine": _machine_busy_seconds(),
        }


def machine() -> dict[str, Any]:
    """What the figures came from."""
    model = "unknown"
    with contextlib.suppress(OSError):  # psutil does not name the CPU
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
