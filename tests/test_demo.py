"""`homemonitor demo` end to end, short: the thing a newcomer runs first must not rot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from homemonitor.demo import DEFAULT_DAYS, run_demo, unarmed_rules
from homemonitor.embedded import free_port
from homemonitor.metrics import Metrics
from homemonitor.rules.templates import TEMPLATES


@pytest.mark.slow
async def test_demo_stores_readings_opens_alerts_and_quarantines_garbage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 25-second demo of 20 patients stores, alerts and quarantines, and says so plainly.

    Piped (as here), its output has no carriage returns and every alert is a line of its
    own, naming a template rule and its sentence; it names the broker and the database,
    and the template rules too short a replay cannot arm; its alert counts are the
    metric's; no simulated hub is refused.
    """
    metrics = Metrics()
    summary = await run_demo(
        asyncio.Event(),
        duration=25,
        patients=20,
        seed=3,
        http_port=free_port(),
        workdir=tmp_path,
        metrics=metrics,
    )
    out = capsys.readouterr()
    lines = out.out.splitlines()
    opened_metric = {
        severity: n
        for severity in ("warning", "urgent")
        if (n := metrics.registry.get_sample_value(
            "homemonitor_alerts_opened_total", {"severity": severity}
        ))
    }  # fmt: skip
    assert summary["readings_stored"] > 100
    assert sum(summary["alerts_opened"].values()) > 0
    assert summary["quarantined"].get("malformed", 0) > 0
    assert summary["duplicates_absorbed"] > 0
    assert opened_metric == summary["alerts_opened"]
    assert 0 <= summary["alerts_escalated"]
    assert (0, "") == (out.out.count("\r"), out.err)
    assert [] == [line for line in lines if "alert " in line and not line.startswith("  alert ")]
    template_rules = {r.id for t in TEMPLATES.values() for r in t.rules}
    alert_lines = [line.split() for line in lines if line.startswith("  alert opened ")]
    assert alert_lines
    assert set() == {words[6] for words in alert_lines} - template_rules
    assert [] == [words for words in alert_lines if len(words) < 9]  # every one has a sentence
    assert set() == set(summary["alerts_by_rule"]) - template_rules
    assert sum(summary["alerts_opened"].values()) == sum(summary["alerts_by_rule"].values())
    unarmed = unarmed_rules(DEFAULT_DAYS)  # the baselines' run-in, the home BP mean's days
    assert "each patient on their condition's template" in out.out
    assert ([], True) == ([rules for rules in unarmed if rules not in out.out], bool(unarmed))
    assert [line for line in lines if line.startswith("sent ")]  # plain progress lines
    assert [True, True] == [
        any(re.match(pattern, line) for line in lines)
        for pattern in (r"  broker:   mqtt://127\.0\.0\.1:\d+ ", r"  database: postgresql://\S+$")
    ]
    # Every simulated hub speaks only for its own home's devices, each bound to a patient.
    registry_reasons = {"unknown_gateway", "unknown_device", "foreign_device", "unbound_device"}
    assert {} == {k: v for k, v in summary["quarantined"].items() if k in registry_reasons}
