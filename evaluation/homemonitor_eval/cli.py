"""The command line: ``python -m homemonitor_eval`` (``make evaluate``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from homemonitor_devices.cohort import generate_cohort
from homemonitor_devices.simulate import ProgressLine
from homemonitor_eval.report import as_json, render
from homemonitor_eval.rulesets import RULE_SETS
from homemonitor_eval.runner import evaluate

DESCRIPTION = """\
How good homemonitor's alerts are: a seeded, simulated cohort with ground truth is
replayed through care plans with the rules engine's replay, and the alerts are scored
against the events, per condition and overall.

The cohort (devices/homemonitor_devices/cohort.py; sources in docs/evaluation.md):
about a third each heart failure, hypertension and COPD, with day-to-day variation
and measurement noise from the literature, artefacts (a misfit cuff, a cold finger)
mostly followed by a normal retake minutes later and some flagged by the device,
days and weeks without readings, device swaps (a new scale with its own offset), and
events with published prodromes: heart-failure decompensation (admission), COPD
exacerbation (start of treatment), uncontrolled blood pressure (end of a rise). The
others never deteriorate. A simulated clinician resolves every open episode 24 h after
it opened.

rule sets (rows):
  templates        each patient on their condition's template, personalised
  thresholds only  absolute bounds, the plans before the templates (the older form)
  2 kg in 3 days   the heart-failure weight rule of thumb (heart failure only)
  MACD weight      MACD of daily weight (heart failure only)

metrics (columns), for an event at time E:
  events         ground-truth events of the row's patients
  detect >=24h   share of events with an alert of the patient opened between
                 E - 14 days and E - 24 hours
  chance         the same, after shifting each patient's alerts by a random offset,
                 circularly within the patient's observed period (first to last
                 reading); the mean over --shuffles shifts, seeded: what alerts with
                 no relation to the events would score
  lift           detect - chance, in percentage points
  spec/day       specificity per patient-day: of the quiet days (local days on which
                 the patient measured or an alert opened, touching no prodrome window
                 [E - 14 d, E) and no aftermath [E, E + 14 d)), the share on which no
                 alert opened
  non-act/pt-wk  non-actionable alerts per patient-week: alerts opened on quiet days,
                 per 7 quiet days
  PPV            alerts opened inside a prodrome window / all alerts (an alert in an
                 aftermath counts as not positive)
  re-open 48h    share of episodes that opened at most 48 h after an episode of the
                 same rule for the same patient was resolved
  targets        how many of the issue's aims the row meets: specificity >= 95 %,
                 lift >= 25 points, <= 0.3 non-actionable alerts per patient-week,
                 re-opens within 48 h <= 5 %

The figures are of synthetic data; judge a rule set on a seed nobody tuned it on."""

EPILOG = """\
The table goes to standard output (--json: the whole report as JSON instead), a
progress line to standard error. Exit status 0, 1 when no rule set could run (the
engine is missing), 2 for bad arguments.

examples:
  make evaluate
  make evaluate ARGS="--seed 20261202"
  make evaluate ARGS="--patients 30 --days 60 --json\""""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m homemonitor_eval",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", default="1", help="the cohort's seed (default: 1)")
    parser.add_argument(
        "--patients", type=int, default=150, help="patients in the cohort (default: 150)"
    )
    parser.add_argument(
        "--days", type=float, default=120.0, help="length of the run in days (default: 120)"
    )
    parser.add_argument(
        "--shuffles", type=int, default=20, help="random shifts for chance (default: 20)"
    )
    parser.add_argument(
        "--rule-sets",
        nargs="+",
        choices=[r.name for r in RULE_SETS],
        metavar="NAME",
        help="only these rule sets (quote names with spaces)",
    )
    parser.add_argument(
        "--by-rule",
        action="store_true",
        help="also list each rule's alerts: in a prodrome window, on quiet days, re-opened",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; the exit status says whether anything could be measured."""
    args = _parser().parse_args(argv)
    if args.patients < 1 or args.shuffles < 1 or args.days < 28:
        print("need --patients >= 1, --shuffles >= 1 and --days >= 28", file=sys.stderr)
        return 2
    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    chosen = [r for r in RULE_SETS if not args.rule_sets or r.name in args.rule_sets]
    progress = ProgressLine(sys.stderr, every=5.0)
    cohort = generate_cohort(args.patients, days=args.days, seed=seed)
    report = evaluate(cohort, chosen, shuffles=args.shuffles, progress=progress.status)
    progress.status(f"done in {report.elapsed_seconds:.1f} s", final=True)
    progress.finish()
    print(as_json(report) if args.json else render(report, rules=args.by_rule))
    return 0 if report.rows else 1
