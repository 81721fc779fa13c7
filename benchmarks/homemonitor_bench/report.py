"""The report: targets, the table printed at the end, the JSON result."""

from __future__ import annotations

from typing import Any

import numpy as np

from homemonitor_bench.outbox import OUTBOX_SHARE
from homemonitor_bench.phases import or_nan


def _best(result: dict[str, Any], key: str) -> float | None:
    found = result.get("searches", {}).get(key)
    if not found or not found.get("best"):
        return None
    return float(found["best"]["rate"])


#: Issue 10: templates plans sustain at least this share of thresholds plans (one worker).
TEMPLATES_SHARE = 0.85


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, passed) for each target of issues 4 and 10; None when not measured."""
    out: list[tuple[str, str, bool | None]] = []
    one, bare, naive, two = (_best(result, k) for k in ("worker", "bare", "naive", "two_workers"))
    if one and bare:
        out.append(
            ("one worker >= 90 % of the bare client", f"{one / bare:.0%}", one >= 0.9 * bare)
        )
    if one and naive:
        out.append(("one worker >= 3x the naive consumer", f"{one / naive:.1f}x", one >= 3 * naive))
    for lat, limit in zip(result.get("latency", []), (50.0, 200.0), strict=False):
        p99 = lat["publish_to_alert_opened_ms"].get("p99")
        label = f"publish -> alert p99 <= {limit:g} ms at {lat['rate']:.0f}/s"
        if p99 is None:
            out.append((label, "no alerts", None))
        else:
            out.append((label, f"{p99:.0f} ms", p99 <= limit and lat["kept_up"]))
    if one and two:
        out.append(("two workers >= 1.3x one", f"{two / one:.2f}x", two >= 1.3 * one))
    plain, templated = _best(result, "worker_thresholds"), _best(result, "worker_templates")
    if "worker_thresholds" in result.get("searches", {}) and plain:
        label = f"templates plans >= {TEMPLATES_SHARE:.0%} of thresholds"
        if templated:
            share = templated / plain
            out.append((label, f"{share:.0%}", share >= TEMPLATES_SHARE))
        elif "worker_templates" in result["searches"]:
            out.append((label, "none sustained", False))
    interleaved = result.get("outbox_phase", {}).get("interleaved")
    if interleaved and interleaved["share"] is not None:
        label = f"with notification channels >= {OUTBOX_SHARE:.0%} of without (CPU/reading)"
        share = interleaved["share"]
        out.append((label, f"{share:.0%}", share >= OUTBOX_SHARE))
    o = result.get("outage")
    if o:
        v, rss = o["verification"], o["worker_rss_mb"]
        growth = rss["max_down"] - rss["before"]
        flat = growth <= max(20.0, 0.2 * rss["before"])
        out.append(
            (
                f"outage {o['down_s']:g} s: nothing lost, memory flat",
                f"lost {v['lost']}, dup {v['duplicated']}, RSS {growth:+.1f} MB while down",
                v["lost"] == 0 and v["duplicated"] == 0 and flat and o["drained"],
            )
        )
    return out


_CONSUMERS = {
    "bare": "(a) bare client: aiomqtt + manual ack",
    "intake": "(a') the worker's MQTT intake, no work",
    "naive": "(b) naive: auto ack, INSERT each",
    "worker": "one worker",
    "two_workers": "two workers, shared subscription",
    "worker_nats": "one worker, NATS JetStream broker",
    "worker_thresholds": "one worker, thresholds plans",
    "worker_templates": "one worker, templates plans",
    "worker_without_channels": "one worker, no notification channels",
    "worker_with_channels": "one worker, every team notifying",
}


def _render_header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    kind = "QUICK: for trying the harness, not for figures" if result["quick"] else "full"
    fsync = "on" if result.get("postgres_fsync") else "off"
    lines = [
        "",
        f"homemonitor bench, {result['started_at']} ({kind})",
        f"machine:  {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"software: Python {m['python']}, PostgreSQL {result.get('postgres')} (fsync {fsync}), "
        f"Mosquitto {result.get('mosquitto')}",
    ]
    nats = result.get("nats")
    if nats:
        lines.append(f"nats:     {_nats_line(nats)}")
    reg = result.get("registry")
    if reg:
        lines.append(
            f"registry: {reg['patients']} patients, {reg['devices']} devices, "
            f"{reg['care_plans']} care plans; registry.apply {reg['apply_s']:.1f} s; a worker's "
            f"cache load {reg['cache_load_s'] * 1000:.0f} ms ({reg['cache_load_cpu_s'] * 1000:.0f}"
            f" ms CPU)"
            + (f", also every {reg['cache_max_age_s']:g} s" if reg["cache_max_age_s"] else "")
        )
        lines.append(f"plans:    {result.get('plans', 'thresholds')} (every phase but 'plans')")
    h = result.get("history")
    if h:
        lines.append(
            f"history:  {h['rows']} readings seeded for templates plans: {h['days']} days, "
            f"{h['readings_per_device_day']:.2f} readings per device a day, "
            f"{h['rows'] / max(1, reg['patients'] if reg else 1):.0f} per patient"
        )
    return lines


def _nats_line(nats: dict[str, Any]) -> str:
    if "skipped" in nats:
        return f"skipped: {nats['skipped']}"
    sync = nats["sync_interval"] or "NATS's default (not set)"
    return (
        f"nats-server {nats['version']}, JetStream on, ack_wait {nats['ack_wait_s']:g} s, "
        f"max_ack_pending {nats['max_ack_pending']}, sync_interval {sync}"
        + (f" ({nats['note']})" if nats["note"] else "")
    )


def _render_throughput(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{'throughput, nothing lost or duplicated':<40} {'sustained':>9} {'peak':>7} "
        f"{'| CPU us per reading:':<21}{'consumer':>9} {'postgres':>9} {'broker':>7} "
        f"{'loadgen':>8} {'machine':>8} {'| peak RSS':>10}",
    ]
    for key, name in _CONSUMERS.items():
        found = result.get("searches", {}).get(key)
        if not found:
            continue
        best = found.get("best")
        peak = max((s["consumer_rate"] for s in found["steps"]), default=0.0)
        if not best:
            lines.append(f"{name:<40} {'none':>9} {peak:>7.0f}   (limit: {found['limit']})")
            continue
        c = best["cpu_us"]
        bound = "  (load generator's limit)" if found["limit"] == "load generator" else ""
        if best.get("alerts_opened") is not None and key.startswith("worker_"):
            bound += f"  {best['alerts_opened']} alerts"
        lines.append(
            f"{name:<40} {best['rate']:>9.0f} {peak:>7.0f} {'|':<21}{c['consumer']:>9.0f} "
            f"{c['postgres']:>9.0f} {c['mosquitto']:>7.0f} {c['loadgen']:>8.0f} "
            f"{c['machine']:>8.0f} | {best['peak_rss_mb']:>5.0f} MB{bound}"
        )
    lines.append(
        "  sustained: highest step rate kept up with; peak: most stored per second in any step"
    )
    one = _best(result, "worker")
    ratios = [
        f"{one / base:.0%} of {label}"
        for base, label in ((_best(result, "bare"), "(a)"), (_best(result, "intake"), "(a')"))
        if one and base
    ]
    if ratios:
        lines.append(f"  one worker sustains {' and '.join(ratios)}")
    plain, templated = _best(result, "worker_thresholds"), _best(result, "worker_templates")
    if plain and templated:
        lines.append(
            f"  templates plans: {templated / plain:.0%} of thresholds plans, same run "
            f"(alerts: opened in the sustained step)"
        )
    return lines


def _render_latency(result: dict[str, Any], runs: str = "latency", on: str = "") -> list[str]:
    if not result.get(runs):
        return []
    title = f"latency, one worker{on}, ms"
    lines = ["", f"{title:<40} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'n':>7}"]
    for lat in result[runs]:
        kept = "" if lat["kept_up"] else "  (did not keep up)"
        for what, key in (
            ("stored", "publish_to_stored_ms"),
            ("alert opened", "publish_to_alert_opened_ms"),
        ):
            p = lat[key]
            if p["n"]:
                label = f"  {lat['rate']:.0f}/s publish -> {what}"
                lines.append(
                    f"{label:<40} {p['p50']:>7.1f} {p['p95']:>7.1f} {p['p99']:>7.1f} "
                    f"{p['max']:>7.0f} {p['n']:>7}{kept}"
                )
    return lines


def _render_profile(result: dict[str, Any]) -> list[str]:
    prof = result.get("profile")
    if not prof:
        return []
    cpu = prof["cpu_us_per_reading"]
    lines = [
        "",
        f"CPU per reading, one worker at {prof['rate']:.0f}/s: "
        f"{prof['worker_cpu_us_per_reading']:.0f} us in the worker "
        f"(+ {cpu['postgres']:.0f} us PostgreSQL, {cpu['mosquitto']:.0f} us Mosquitto); "
        f"split by py-spy samples ({prof.get('samples', 0)}):",
    ]
    for stage, v in (prof.get("stages") or {}).items():
        lines.append(f"  {stage:<38} {v['cpu_us_per_reading']:>7.1f} us {v['share']:>5.0%}")
    if prof.get("error"):
        lines.append(f"  (no stage split: {prof['error'].strip()[:200]})")
    return lines


def _render_nats(result: dict[str, Any]) -> list[str]:
    """NATS against Mosquitto, one worker each, in this run."""
    if not result.get("latency_nats") and "worker_nats" not in result.get("searches", {}):
        return []
    lines = _render_latency(result, "latency_nats", " on NATS")
    lines += ["", "NATS JetStream / Mosquitto, one worker, this run"]
    mq, nats = _best(result, "worker"), _best(result, "worker_nats")
    if mq and nats:
        lines.append(f"  sustained {nats:.0f}/s on NATS, {mq:.0f}/s on Mosquitto: {nats / mq:.2f}x")
    for m, n in zip(result.get("latency", []), result.get("latency_nats", []), strict=False):
        pm, pn = m["publish_to_stored_ms"], n["publish_to_stored_ms"]
        if pm["n"] and pn["n"]:
            ratios = ", ".join(f"{q} {pn[q] / pm[q]:.2f}x" for q in ("p50", "p95", "p99"))
            lines.append(f"  {m['rate']:.0f}/s publish -> stored: NATS/Mosquitto {ratios}")
    return lines


def _render_crash(result: dict[str, Any]) -> list[str]:
    runs = result.get("crash")
    if not runs:
        return []
    lines = [
        "",
        "broker SIGKILLed mid-stream, restarted: acknowledged readings never stored",
        f"  {'broker, worker':<28} {'acknowledged':>12} {'lost':>7} {'dup':>5} "
        f"{'stored at kill':>15} {'kill after start':>17}",
    ]
    for c in runs:
        v = c["verification"]
        lines.append(
            f"  {c['broker'] + ', worker ' + c['worker']:<28} {c['acknowledged']:>12} "
            f"{v['lost']:>7} {v['duplicated']:>5} {c['stored_at_kill']:>15} "
            f"{c['killed_after_broker_start_s']:>15.1f} s"
        )
    lines.append(
        f"  Mosquitto saves every {result.get('broker_autosave_s')} s (autosave_interval) and "
        f"at a graceful stop; the kill came that long after its start"
    )
    return lines


def _render_outage(result: dict[str, Any]) -> list[str]:
    o = result.get("outage")
    if not o:
        return []
    rss, broker = o["worker_rss_mb"], o["broker_rss_mb"]
    return [
        "",
        f"outage: PostgreSQL down {o['down_s']:g} s at {o['rate']:.0f}/s, backlog "
        f"{o['backlog_at_restart']} readings; worker RSS {rss['before']:.0f} MB before, at most "
        f"{rss['max_down']:.0f} MB while down, {rss['max_after']:.0f} MB draining; broker "
        f"{broker['before']:.0f} -> {broker['max']:.0f} MB",
        f"  after the restart request: PostgreSQL up in {or_nan(o['postgres_start_s']):.1f} s, "
        f"first commit {or_nan(o['first_commit_after_restart_s']):.1f} s, caught up "
        f"{or_nan(o['caught_up_after_restart_s']):.1f} s; drain rate "
        f"{or_nan(o['drain_rate_per_s']):.0f} readings/s (while {o['rate']:.0f}/s kept arriving)",
    ]


def render(result: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    lines = _render_header(result)
    lines += _render_throughput(result)
    lines += _render_latency(result)
    lines += _render_profile(result)
    lines += _render_outage(result)
    lines += _render_nats(result)
    lines += _render_crash(result)
    checks = targets(result)
    if checks:
        lines += ["", "targets (issues 4 and 10)"]
        for label, measured, ok in checks:
            verdict = "n/a " if ok is None else ("PASS" if ok else "MISS")
            lines.append(f"  {verdict}  {label:<48} {measured}")
    lines.append(f"\n{result.get('duration_s', 0):.0f} s in all")
    return "\n".join(lines)


def json_default(value: object) -> object:
    if isinstance(value, np.ndarray):
        return None  # publish times are not part of the result
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def nothing_lost(result: dict[str, Any]) -> bool:
    steps = [s for found in result.get("searches", {}).values() for s in found["steps"]]
    steps += [lat["step"] for key in ("latency", "latency_nats") for lat in result.get(key, [])]
    verifications = [s["verification"] for s in steps]
    if result.get("outage"):
        verifications.append(result["outage"]["verification"])
    return all(v["lost"] == 0 and v["duplicated"] == 0 for v in verifications)
