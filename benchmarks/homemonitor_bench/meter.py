"""CPU and memory of the bench's processes (from /proc), and the machine the figures came from."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its children it has waited for)."""
    try:
        f = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(f[11]) + int(f[12])
    if reaped_children:
        ticks += int(f[13]) + int(f[14])
    return ticks / _HZ


def memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in kB; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def reset_peak_memory(pid: int) -> None:
    """Reset VmHWM to the current RSS (``clear_refs`` 5), so a phase has its own peak."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _children(ppid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(int(entry.name))[1]) == ppid:
                    found.append(int(entry.name))
    return found


def pid_with_argument(argument: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if argument.encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def _machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _HZ


@dataclasses.dataclass(slots=True)
class CpuMeter:
    """CPU seconds of each part of the bench, read from /proc."""

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
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
