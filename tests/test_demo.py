"""`homemonitor demo` end to end, short: the thing a newcomer runs first must not rot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from homemonitor.demo import DEFAULT_DAYS, run_demo, unarmed_rules
from homemonitor.embedded import free_port
from homemonitor.metrics import Metrics
from homemonitor.rules.templates import TEMPLATES


@pytest.mark.slow
async def test_demo_stores_readings_opens_alerts_notifies_and_escalates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 32-second demo of 20 patients stores, alerts, notifies, escalates and quarantines,
    and says so plainly.

    Piped (as here), its output has no carriage returns and every alert is a line of its
    own, naming a template rule and its sentence; it names the broker and the database,
    and the template rules too short a replay cannot arm; its alert counts are the
    metric's; no simulated hub is refused. Its own webhook receiver verifies every
    notification it is sent and its mail catcher prints every mail, each one line with
    no patient in it; an alert nobody acknowledges (escalation after 3 s here) escalates.
    """
    metrics = Metrics()
    summary = await run_demo(
        asyncio.Event(),
        duration=32,
        patients=20,
        seed=3,
        http_port=free_port(),
        escalate_after=0.05,
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
    own_lines = ("  alert ", "  webhook ", "  mail ")  # notifications name their alert too
    assert [] == [line for line in lines if "alert " in line and not line.startswith(own_lines)]
    template_rules = {r.id for t in TEMPLATES.values() for r in (*t.rules, *t.expected)}
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
    _assert_notifications_printed(lines, summary)
    # The patient who stops weighing halfway is alerted for once the replay is done.
    silent = re.search(r"  silent:   (p-\d{4}) stops weighing", out.out)
    assert silent is not None
    assert [silent[1]] == [w[5] for w in alert_lines if w[6] == "missing.body_weight"]


_WEBHOOK = re.compile(
    r"  webhook  (?P<team>\S+) +alert\.(?P<kind>\w+) +(?P<severity>warning|urgent) +"
    r"alert #(?P<alert>\d+) +(?:→ (?P<level>team|out_of_hours) \((?P<to>\S+)\)  )?"
    r"key (?P<key>\d+\.webhook(?:\.\S+)?)  signature ok$"  # .<team>: the addressed team's key
)
_MAIL = re.compile(
    r"  mail     to (?P<to>\S+@\S+(?:, \S+@\S+)*): \[homemonitor\] (?:Warning|Urgent) "
    r"alert [a-z ]+ \(alert \d+\)$"
)


def _assert_notifications_printed(lines: list[str], summary: dict[str, Any]) -> None:
    """Webhook and mail lines: each verified and counted, one escalation at least, no patient."""
    printed = [line for line in lines if line.startswith(("  webhook ", "  mail "))]
    webhooks = [m for line in printed if (m := _WEBHOOK.match(line))]
    mails = [m for line in printed if (m := _MAIL.match(line))]
    assert [] == [line for line in printed if not (_WEBHOOK.match(line) or _MAIL.match(line))]
    assert (len(webhooks), len(mails)) == (summary["webhooks_verified"], summary["mails_caught"])
    assert (0, True, True) == (summary["webhooks_rejected"], bool(webhooks), bool(mails))
    keys = [m["key"] for m in webhooks]
    assert len(keys) == len(set(keys))  # once per idempotency key
    assert {"opened"} <= {m["kind"] for m in webhooks}
    escalated = [m for m in webhooks if m["kind"] == "escalated"]
    assert escalated
    # one step, one event; an escalation to another team reaches its webhook too
    assert summary["escalation_steps"] >= len({m["key"].split(".")[0] for m in escalated})
    assert [] == [m for m in escalated if m["level"] is None]
    assert any("alert escalated" in m.string for m in mails)
    assert [] == [line for line in printed if re.search(r"p-\d{4}|mmHg|kg|%", line)]
