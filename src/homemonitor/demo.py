"""``homemonitor demo``: the whole product on embedded defaults.

A private Mosquitto and PostgreSQL in a temporary directory, a simulated clinic (care
teams, ~50 patients with heart failure, hypertension or COPD, their devices and care
plans: each patient on their condition's template), the service itself, and simulated
gateways replaying a few days of home readings at a speed-up. New alerts are printed as
they open, with the template rule and its sentence; the API URL, a clinician token, the
broker's address and the database's DSN are printed at the start so a person can try the
API, publish a reading of their own, apply a registry or issue a token. A few days are
too short for some template rules to arm (the personal baselines learn from a 14-day
run-in, the home blood-pressure mean needs 4 days after a discarded first one): the
banner names them (:func:`unarmed_rules`). On a terminal the progress is one line
rewritten in place; piped, it is a plain line every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import shutil
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from homemonitor import registry
from homemonitor.api import auth
from homemonitor.app import serve
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto, PrivatePostgres, free_port
from homemonitor.jobs import SILENCE_JOB
from homemonitor.metrics import Metrics
from homemonitor.notify.catchers import MailCatcher, WebhookReceiver
from homemonitor.rules.plan import AverageRule, BaselineRule
from homemonitor.rules.templates import TEMPLATES
from homemonitor.runtime import Health
from homemonitor.scheduler import bring_forward
from homemonitor.settings import Settings
from homemonitor.storage import database

if TYPE_CHECKING:
    from homemonitor_devices.simulate import ProgressLine

DEFAULT_DAYS = 4.0
#: How long an unacknowledged alert waits before the demo escalates it (to the team; to
#: the on-call team after twice as long): minutes, short enough to see in a demo's run.
DEFAULT_ESCALATE_AFTER = 1.0


def _port_or_free(port: int) -> int:
    """``port`` if it is free, else (or for 0) a free one: the banner names the real port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
        return int(sock.getsockname()[1])


def unarmed_rules(days: float) -> list[str]:
    """The template rules a replay of ``days`` days is too short to arm, with what they need.

    A baseline rule learns the patient's usual values from its run-in first; an average
    rule needs ``min_days`` days with readings after its discarded first day.
    """
    needs: dict[str, list[str]] = {}
    for template in TEMPLATES.values():
        for rule in template.rules:
            if isinstance(rule, BaselineRule) and days <= rule.run_in_days:
                need = f"a {rule.run_in_days:g}-day run-in"
            elif isinstance(rule, AverageRule) and days < rule.min_days + rule.discard_first_day:
                first = ", the first discarded" if rule.discard_first_day else ""
                need = f"readings on {rule.min_days + rule.discard_first_day} days{first}"
            else:
                continue
            ids = needs.setdefault(need, [])
            if rule.id not in ids:
                ids.append(rule.id)
    return [f"{', '.join(ids)} ({need})" for need, ids in needs.items()]


def _notify_setup(
    reg: dict[str, Any], receiver: WebhookReceiver, secrets_dir: Path, minutes: float
) -> dict[str, bytes]:
    """Point every care team's channels at the demo's catchers, with demo-short escalation.

    Each team gets a webhook (its own secret, in a file as in production) and email.
    The vårdcentraler are staffed around the clock here (no ``working_hours``): out of
    hours every alert goes straight to the on-call team, the top of the chain, and a demo
    started in the evening would show no escalation. The secrets, by team, are returned.
    """
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    found: dict[str, bytes] = {}
    for team in reg["care_teams"]:
        secret = secrets.token_hex(24).encode()
        path = secrets_dir / f"{team['id']}-webhook"
        path.write_bytes(secret + b"\n")
        path.chmod(0o600)
        found[team["id"]] = secret
        team["notifications"] = {
            "webhook": {"url": receiver.url(team["id"]), "secret_file": str(path)},
            "email": {"enabled": True},
        }
        if "escalation" in team:
            team.pop("working_hours", None)
            team["escalation"] = {
                "urgent": [
                    {"after_minutes": minutes, "to": "team"},
                    {"after_minutes": 2 * minutes, "to": "out_of_hours"},
                ],
                "warning": [{"after_minutes": 2 * minutes, "to": "team"}],
            }
    return found


def _say(console: ProgressLine | None, text: str) -> None:
    """A line of its own, never glued to the progress line (nothing when quiet)."""
    for line in text.split("\n"):
        if console is not None:
            console.line(line)


async def _watch_alerts(
    pool: asyncpg.Pool, console: ProgressLine | None, stop: asyncio.Event
) -> None:
    """Print each alert episode when it opens and when its severity changes, with its reason."""
    seen: dict[int, str] = {}
    while not stop.is_set():
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows = await pool.fetch(
                "SELECT id, care_team_id, patient_id, rule, severity, "
                "latest_explanation ->> 'sentence' AS sentence FROM alerts "
                "WHERE status <> 'pending' AND status <> 'withdrawn' ORDER BY id"
            )
            for r in rows:
                if seen.get(r["id"]) == r["severity"]:
                    continue
                verb = "opened   " if r["id"] not in seen else "changed  "
                seen[r["id"]] = r["severity"]
                mark = "URGENT " if r["severity"] == "urgent" else "warning"
                _say(
                    console,
                    f"  alert {verb} {mark} #{r['id']:<4} {r['care_team_id']:<11} "
                    f"{r['patient_id']}  {r['rule']:<17} {r['sentence']}",
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def _summary(pool: asyncpg.Pool, worker_totals: Any, sim: Any) -> dict[str, Any]:
    stored = await pool.fetchval("SELECT count(*) FROM readings")
    flagged = await pool.fetchval("SELECT count(*) FROM readings WHERE flags <> '{}'")
    urgent_now = await pool.fetchval("SELECT count(*) FROM alerts WHERE severity = 'urgent'")
    steps = await pool.fetchval("SELECT count(*) FROM alert_events WHERE kind = 'escalated'")
    quarantined = await pool.fetch(
        "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY reason"
    )
    by_rule = await pool.fetch(
        "SELECT rule, count(*) AS n FROM alerts WHERE status <> 'pending' "
        "AND status <> 'withdrawn' GROUP BY rule ORDER BY n DESC, rule"
    )
    # By severity at opening, as homemonitor_alerts_opened_total counts them: the worker's
    # and the scheduler's (missing data, retakes), so from the events; an alert that
    # opened as a warning and escalated since is a warning here.
    opened = {
        r["severity"]: r["n"]
        for r in await pool.fetch(
            "SELECT coalesce(e.details ->> 'severity', a.severity) AS severity, count(*) AS n "
            "FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
            "WHERE e.kind IN ('opened', 'reopened') GROUP BY 1"
        )
    }
    return {
        "readings_stored": stored,
        "readings_flagged": flagged,
        "duplicates_absorbed": getattr(worker_totals, "duplicates", 0),
        "alerts_opened": opened,
        "alerts_escalated": urgent_now - opened.get("urgent", 0),
        "escalation_steps": steps,
        "alerts_by_rule": {r["rule"]: r["n"] for r in by_rule},
        "quarantined": {r["reason"]: r["n"] for r in quarantined},
        "messages_published": getattr(sim, "published", 0),
        "scenarios": getattr(sim, "by_scenario", {}),
    }


async def run_demo(
    stop: asyncio.Event,
    *,
    duration: float | None = None,
    patients: int = 50,
    seed: int = 7,
    speed: float | None = None,
    days: float = DEFAULT_DAYS,
    http_port: int = 8080,
    escalate_after: float = DEFAULT_ESCALATE_AFTER,
    quiet: bool = False,
    workdir: Path | None = None,
    metrics: Metrics | None = None,
) -> dict[str, Any]:
    """Run the demo until ``stop`` (Ctrl-C) or ``duration`` seconds; return the summary.

    Everything but ``quiet`` output goes to stdout. ``metrics`` is the service's (a fresh
    one by default). ``escalate_after``: the minutes an unacknowledged alert waits before
    it goes to the whole team (on call after twice as long).
    """
    from homemonitor_devices.scenarios import Fault  # noqa: PLC0415 - the device side, on demand
    from homemonitor_devices.simulate import (  # noqa: PLC0415
        ProgressLine,
        demo_clinic,
        run_simulation,
    )

    console = None if quiet else ProgressLine(sys.stdout, every=5.0)

    own_dir = workdir is None
    base = workdir or Path(tempfile.mkdtemp(prefix="homemonitor-demo-"))
    if duration is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(duration, stop.set)
    if speed is None:
        replay = (duration or 100.0) * 0.7
        speed = days * 86400 / replay
    _say(console, f"homemonitor demo: starting a private broker and database in {base}")
    try:
        async with contextlib.AsyncExitStack() as stack:
            pg = stack.enter_context(PrivatePostgres(base / "postgres"))
            mq = stack.enter_context(PrivateMosquitto(base / "mosquitto"))
            reg, assignments = demo_clinic(patients, seed, days=days)
            receiver = WebhookReceiver({}, lambda line: _say(console, line))
            mail = MailCatcher(lambda line: _say(console, line))
            await receiver.start()
            await mail.start()
            stack.push_async_callback(receiver.stop)
            stack.push_async_callback(mail.stop)
            receiver.secrets.update(_notify_setup(reg, receiver, base / "secrets", escalate_after))
            on_call = next(t["out_of_hours"] for t in reg["care_teams"] if "out_of_hours" in t)
            conn = await asyncpg.connect(pg.dsn)
            try:
                await database.migrate(conn)
                await registry.apply(conn, registry.parse(reg))
                clinician = reg["care_teams"][0]["clinicians"][0]["id"]
                token = await auth.issue_token(conn, clinician, "demo")
            finally:
                await conn.close()
            port = _port_or_free(http_port)
            settings = Settings.model_validate(  # these values win over HOMEMONITOR_*
                {
                    "database_url": pg.dsn,
                    "mqtt_host": mq.host,
                    "mqtt_port": mq.port,
                    "http_port": port,
                    "public_url": f"http://127.0.0.1:{port}",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": mail.port,
                    "smtp_starttls": False,  # the catcher is on this machine, and keeps nothing
                    "smtp_from": "homemonitor-demo@localhost",
                    "web_demo_login": True,  # no identity provider here: say so, and let anyone in
                }
            )
            scenarios: dict[str, int] = {}
            for name in assignments.scenarios().values():
                scenarios[name] = scenarios.get(name, 0) + 1
            _say(
                console,
                f"  clinic:   {len(reg['patients'])} patients in "
                f"{len(reg['care_teams'])} care teams; scenarios: "
                + ", ".join(f"{k} {v}" for k, v in sorted(scenarios.items())),
            )
            _say(
                console,
                f"  replaying {days:g} days of home readings at {speed:.0f}x "
                f"(~{days * 86400 / speed:.0f} s)",
            )
            _say(
                console,
                "  plans:    each patient on their condition's template (heart_failure, "
                "hypertension, copd;\n            docs/care-plans.md); only readings of "
                "the last 24 hours open alerts",
            )
            unarmed = unarmed_rules(days)
            if unarmed:
                _say(
                    console,
                    "            too short a replay to arm, so silent here:\n"
                    + "\n".join(f"              {rules}" for rules in unarmed),
                )
            _say(
                console,
                f"  web app:  http://localhost:{port}/   (demo-only login: pick a clinician)",
            )
            _say(console, f"  API:      http://127.0.0.1:{port}/docs   (metrics: /metrics, /ready)")
            _say(
                console,
                f"  token:    {token}   (clinician {clinician}, {reg['care_teams'][0]['id']})",
            )
            _say(
                console,
                f"  try:      curl -H 'Authorization: Bearer {token}' "
                f"http://127.0.0.1:{port}/api/v1/alerts",
            )
            home = assignments.patients[0]
            _say(
                console,
                f"  broker:   mqtt://{mq.host}:{mq.port} (no password); gateway {home.gateway_id} "
                f"publishes QoS 1 to {readings_topic(home.gateway_id)}\n"
                f"            for its devices "
                + ", ".join(binding.device_id for binding in home.devices)
                + " (payloads: docs/protocol.md)",
            )
            _say(
                console,
                f"  database: {pg.dsn}\n"
                f"            HOMEMONITOR_DATABASE_URL={pg.dsn} homemonitor registry apply "
                "FILE | token issue CLINICIAN",
            )
            _say(
                console,
                f"  notified: webhooks to http://127.0.0.1:{receiver.port}/hooks/<team> (each "
                f"signature verified), mail to\n            smtp://127.0.0.1:{mail.port}: "
                "both print a line here as they arrive",
            )
            _say(
                console,
                f"  escalate: urgent alerts nobody acknowledges go to the whole team after "
                f"{escalate_after:g} min,\n            to on call ({on_call}) after "
                f"{2 * escalate_after:g} min; warnings to the team after "
                f"{2 * escalate_after:g} min\n            (demo minutes, teams staffed "
                "around the clock): acknowledge in the web app to stop it",
            )
            silent = [p for p in assignments.patients if Fault.STOPS_MEASURING in p.faults]
            if silent:
                _say(
                    console,
                    f"  silent:   {silent[0].patient_id} stops weighing halfway through the "
                    "replay (the cuff goes on); the\n            missing-data check looks "
                    "once the replay is done: missing.body_weight",
                )
            _say(console, "  Ctrl-C ends the demo with a summary.\n")
            metrics, health = metrics or Metrics(), Health()
            service_stop = asyncio.Event()
            service = asyncio.create_task(
                serve(settings, service_stop, metrics=metrics, health=health)
            )
            while not health.ready:
                if service.done():
                    service.result()
                await asyncio.sleep(0.05)
            pool = await database.create_pool(pg.dsn, max_size=2)
            sim_result: Any = None
            try:
                watcher = asyncio.create_task(_watch_alerts(pool, console, stop))
                sim_result = await run_simulation(
                    assignments,
                    queue_dir=base / "gateways",
                    host=mq.host,
                    port=mq.port,
                    speedup=speed if math.isfinite(speed) else math.inf,
                    stop=stop,
                    progress=console,
                )
                if not stop.is_set():
                    # Days of readings came in a minute: the silence check (every 15
                    # minutes, and at each deadline it knows of) looks at them now.
                    async with pool.acquire() as jobs_conn:
                        await bring_forward(jobs_conn, SILENCE_JOB, datetime.now(UTC))
                    _say(
                        console,
                        "\n  simulation finished; the service keeps running for "
                        "the API. Ctrl-C ends the demo.",
                    )
                await stop.wait()
                await watcher
                service_stop.set()
                worker = await service
                summary = await _summary(pool, worker.totals if worker else None, sim_result)
                summary["webhooks_verified"] = receiver.verified
                summary["webhooks_rejected"] = receiver.rejected
                summary["mails_caught"] = mail.caught
            finally:
                service_stop.set()
                await pool.close()
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    if not quiet:
        print("\nsummary")
        print(
            f"  readings stored      {summary['readings_stored']}"
            f" ({summary['readings_flagged']} flagged for clock)"
        )
        print(f"  duplicates absorbed  {summary['duplicates_absorbed']}")
        alerts = summary["alerts_opened"]
        print(
            f"  alerts opened        {sum(alerts.values())} "
            f"({alerts.get('urgent', 0)} urgent, {alerts.get('warning', 0)} warning at "
            f"opening; {summary['alerts_escalated']} escalated to urgent since)"
        )
        print(
            f"  nobody acknowledged  {summary['escalation_steps']} escalation steps (to the "
            "team, to on call)"
        )
        print(
            f"  notifications        {summary['webhooks_verified']} webhooks verified "
            f"({summary['webhooks_rejected']} rejected), {summary['mails_caught']} mails caught"
        )
        by_rule = summary["alerts_by_rule"]
        if by_rule:
            print("  alerts by rule       " + ", ".join(f"{k} {v}" for k, v in by_rule.items()))
        q = summary["quarantined"]
        print(
            f"  quarantined          {sum(q.values())}"
            + (" (" + ", ".join(f"{k} {v}" for k, v in q.items()) + ")" if q else "")
        )
    return summary


__all__ = ["run_demo", "unarmed_rules"]
