"""The command line: ``python -m homemonitor_bench`` (``make bench``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from homemonitor_bench.clinic import PLAN_MODES
from homemonitor_bench.history import DEFAULT_DAYS
from homemonitor_bench.report import json_default, nothing_lost, render
from homemonitor_bench.run import CRASH_READINGS, PHASES, run_phases

DESCRIPTION = """\
What the real worker sustains, how fast its alerts open and where its CPU goes, measured
on this machine against baselines in the same run.

Everything runs here: a private Mosquitto (persistence on, saved every 10 s as in
deploy/) and PostgreSQL (fsync on), a registry of
10 000 patients with devices and care plans, and a load generator in a process of its
own that publishes numbered QoS 1 readings (native JSON; cuffs, scales, oximeters and
heart-rate monitors; about 1 % breach the patient's care plan, half as single outliers,
half as two consecutive readings of a device) at a controlled rate. Care plans are
absolute bounds (thresholds) unless --plans templates: each patient's condition template,
personalised, reading a history seeded before the run (--history-days days per device:
blood pressure, SpO2 and the heart-rate monitor morning and evening, weight each
morning, values around the patient's baseline, about 1 % breaching).
The worker is the service itself, 'homemonitor run --no-http', unchanged, configured
only through HOMEMONITOR_* variables and acknowledging after commit.

phases (in this order; --phases picks some; all but nats and crash by default):
  bare      step search: (a) the bare client, stock aiomqtt with a manual PUBACK per
            message through paho, no work
  intake    step search: (a') the worker's own MQTT intake, batched PUBACKs, no work;
            the ceiling the worker can approach
  naive     step search: (b) aiomqtt acknowledging on receipt, one INSERT per message
  worker    step search: one worker
  latency   one worker at 1 000/s and at 5 000/s for 60 s each: publish -> stored and
            publish -> alert opened (p50, p95, p99, max)
  profile   one worker at 80 % of its sustained rate (1 000/s if the worker phase did
            not run) for 8 s: CPU per reading, split by stage with py-spy samples
  plans     step search: one worker with thresholds plans, then one with the condition
            templates (issue 10), same run, load and seeded history
  outbox    step search: one worker with no notification channels, then with every
            care team notifying (webhook to a local receiver, MQTT alert topic, patient
            feedback; issue 11): the outbox trigger and the notifier's cost
  scale     step search: two workers on an MQTT 5 shared subscription
  outage    PostgreSQL stopped for 60 s under 1 000/s: worker and broker memory,
            time to the first commit and drain rate after the restart, nothing lost
  nats      the worker and latency phases again on a private nats-server (JetStream;
            ack_wait, max_ack_pending and sync_interval as deploy/nats/nats-server.conf),
            right after them on Mosquitto (added if not chosen): both, and the ratio
  crash     each broker SIGKILLed mid-stream once it has acknowledged --crash-readings
            QoS 1 readings, then restarted: acknowledged readings never stored, with the
            worker away (its session holding a backlog) and with it running
nats and crash on NATS are skipped, saying so, when nats-server is not installed. NATS
before 2.10 does not know sync_interval: it then runs without (the report says so).

A step publishes at one rate for 7 s. It passes when the publisher held the rate, the
consumer stored at least 95 % of it over the last three quarters of the step, at most
one second's worth was still unstored at the end, and after the drain every reading the
broker acknowledged is stored exactly once (checked by sequence number). A search
doubles the rate until a step fails, then narrows down to within about 5 %. For each
sustained rate it reports CPU microseconds per reading of the consumer, PostgreSQL,
Mosquitto, the load generator and the whole machine, and the consumer's peak memory.

targets (issue 4):
  one worker sustains at least 90 % of the bare client (a)
  one worker sustains at least 3x the naive consumer (b)
  publish -> alert opened p99 at most 50 ms at 1 000/s and 200 ms at 5 000/s
  two workers sustain at least 1.3x one
  one worker with templates plans sustains at least 85 % of thresholds plans (issue 10)
  one worker with every team notifying sustains at least 90 % of none (issue 11)
  outage: nothing lost or duplicated, worker memory flat, backlog drained"""

EPILOG = """\
The table goes to standard output, the whole result to bench-results/bench-<time>.json.
Exit status 0 when every reading was stored exactly once, 1 otherwise, 2 for bad
arguments. A full run takes about 9 minutes; --quick runs every phase briefly (under
a minute) to try the harness, not for figures.

examples:
  make bench
  make bench ARGS=--quick
  make bench ARGS="--quick --phases intake"
  make bench ARGS="--phases plans"
  make bench ARGS="--phases outbox"
  make bench ARGS="--phases nats,crash"
  make bench ARGS="--phases profile --plans templates"
  make bench ARGS="--phases worker --worker-env HOMEMONITOR_BATCH_MAX=1000"
  make bench ARGS="--phases worker --worker-pythonpath ../other-checkout/src\""""


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="homemonitor-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs and data kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m homemonitor_bench``."""
    parser.add_argument("--quick", action="store_true", help="every phase briefly (< 1 min)")
    parser.add_argument(
        "--patients", type=int, default=None, help="registry size (10 000; --quick: 2 000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="clinic seed (7)")
    parser.add_argument(
        "--plans",
        choices=PLAN_MODES,
        default="thresholds",
        help="care plans of every worker phase but 'plans': absolute bounds (thresholds) or "
        "the condition templates, with a seeded history (default thresholds)",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=DEFAULT_DAYS,
        metavar="D",
        help=f"days of seeded history per device for templates plans ({DEFAULT_DAYS})",
    )
    parser.add_argument(
        "--phases",
        default="",
        help=f"comma-separated subset of {','.join(PHASES)} (default: all but nats,crash)",
    )
    parser.add_argument(
        "--output", default="bench-results", help="directory for the JSON result (bench-results)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="HOMEMONITOR_X=VALUE",
        help="extra environment for the workers, e.g. HOMEMONITOR_BATCH_MAX=1000 (repeatable)",
    )
    parser.add_argument(
        "--worker-pythonpath",
        default=None,
        help="run the workers from another source tree (PYTHONPATH), to compare a change",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="PostgreSQL without fsync (not the default)"
    )
    parser.add_argument(
        "--broker-autosave",
        type=int,
        default=10,
        metavar="S",
        help="Mosquitto autosave_interval (10, as deploy/; each save blocks the broker)",
    )
    parser.add_argument(
        "--broker-config",
        action="append",
        default=[],
        metavar="LINE",
        help="a line added to the Mosquitto configuration, e.g. 'set_tcp_nodelay true' "
        "(repeatable)",
    )
    parser.add_argument(
        "--profile-rate",
        type=float,
        default=None,
        help="profile at this rate (default: 80 %% of the sustained rate found)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=None, help="length of each latency run"
    )
    parser.add_argument(
        "--outage-seconds", type=float, default=None, help="how long PostgreSQL is down (60)"
    )
    parser.add_argument(
        "--crash-readings",
        type=int,
        default=CRASH_READINGS,
        metavar="N",
        help=f"crash: kill the broker once it has acknowledged N readings ({CRASH_READINGS})",
    )
    parser.add_argument(
        "--crash-rate", type=float, default=1000.0, help="crash: publish rate (1000/s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and data directories")


def run(args: argparse.Namespace) -> int:
    """Run the bench; 0 when every reading was stored exactly once, 1 otherwise."""
    if args.phases:
        unknown = set(args.phases.split(",")) - set(PHASES)
        if unknown:
            print(f"homemonitor_bench: unknown phases {sorted(unknown)}", file=sys.stderr)
            return 2
    with _workdir(args.keep) as workdir:
        result = asyncio.run(run_phases(args, workdir))
    print(render(result))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=json_default))
    print(f"results: {path}")
    return 0 if nothing_lost(result) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m homemonitor_bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
