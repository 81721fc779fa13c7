"""`homemonitor demo` end to end, short: the thing a newcomer runs first must not rot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from homemonitor.demo import run_demo
from homemonitor.embedded import free_port


@pytest.mark.slow
async def test_demo_stores_readings_opens_alerts_and_quarantines_garbage(tmp_path: Path) -> None:
    """A 25-s demo of 20 patients stores, alerts, quarantines garbage, and refuses no hub."""
    summary = await run_demo(
        asyncio.Event(),
        duration=25,
        patients=20,
        seed=3,
        http_port=free_port(),
        quiet=True,
        workdir=tmp_path,
    )
    assert summary["readings_stored"] > 100
    assert sum(summary["alerts_opened"].values()) > 0
    assert summary["quarantined"].get("malformed", 0) > 0
    assert summary["duplicates_absorbed"] > 0
    # Every simulated hub speaks only for its own home's devices, each bound to a patient.
    registry_reasons = {"unknown_gateway", "unknown_device", "foreign_device", "unbound_device"}
    assert {} == {k: v for k, v in summary["quarantined"].items() if k in registry_reasons}
