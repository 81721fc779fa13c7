"""The evaluation's table (text) and its JSON."""

from __future__ import annotations

import json

from homemonitor_eval.metrics import TARGETS, meets
from homemonitor_eval.runner import Report, Row

__all__ = ["COLUMNS", "as_json", "render", "rules_table"]

#: The table's columns, in order (``--help`` explains each).
COLUMNS = (
    "rule set",
    "condition",
    "events",
    "detect >=24h",
    "chance",
    "lift",
    "spec/day",
    "non-act/pt-wk",
    "PPV",
    "re-open 48h",
    "targets",
)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cells(row: Row) -> tuple[str, ...]:
    s = row.scores
    met = [v for v in meets(s).values() if v is not None]
    return (
        row.rule_set,
        row.condition,
        str(s.events),
        _share(s.detection),
        _share(s.chance),
        _points(s.lift),
        _share(s.specificity),
        _rate(s.non_actionable_per_week),
        _share(s.ppv),
        _share(s.reopen_48h),
        f"{sum(met)}/{len(met)}" if met else "-",
    )


def rules_table(report: Report) -> str:
    """Per rule set and rule: alerts, inside a prodrome window, on quiet days, re-opens."""
    lines = ["alerts by rule: all / in a prodrome window / on quiet days / re-opened within 48 h"]
    for name, counts in report.rules.items():
        lines.append(f"  {name}")
        width = max((len(rule) for rule in counts), default=0)
        lines += [
            f"    {rule.ljust(width)}  {c.alerts:6d} {c.in_prodrome:6d} {c.on_quiet_days:6d}"
            f" {c.reopened_48h:6d}"
            for rule, c in counts.items()
        ]
    return "\n".join(lines)


def render(report: Report, *, rules: bool = False) -> str:
    """The table, with the cohort above it and what was skipped below (and, with ``rules``,
    where each rule's alerts fell)."""
    cohort = report.cohort
    lines = [
        f"homemonitor alert evaluation: {report.patients} patients over {report.days:g} days, "
        f"seed {report.seed}, chance over {report.shuffles} shifts",
        "cohort: "
        + "; ".join(
            f"{condition} {c.get('patients', 0)} patients, {c.get('events', 0)} events, "
            f"{c.get('readings', 0)} readings ({c.get('artefacts', 0)} artefacts)"
            for condition, c in cohort.items()
        ),
        "",
    ]
    table = [COLUMNS, *(_cells(row) for row in report.rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for number, cells in enumerate(table):
        left = cells[:2]
        right = cells[2:]
        text = "  ".join(c.ljust(w) for c, w in zip(left, widths[:2], strict=True))
        text += "  " + "  ".join(c.rjust(w) for c, w in zip(right, widths[2:], strict=True))
        lines.append(text.rstrip())
        if number == 0:
            lines.append("-" * len(text))
    lines += [
        "",
        f"targets: specificity >= {100 * TARGETS['specificity']:.0f}%, lift >= "
        f"{100 * TARGETS['lift']:.0f} points, <= {TARGETS['non_actionable_per_week']} "
        f"non-actionable alerts per patient-week, <= {100 * TARGETS['reopen_48h']:.0f}% "
        "re-opens within 48 h (python -m homemonitor_eval --help defines each)",
    ]
    lines += [f"skipped {name}: {reason}" for name, reason in report.skipped.items()]
    if rules:
        lines += ["", rules_table(report)]
    lines.append(f"took {report.elapsed_seconds:.1f} s")
    return "\n".join(lines)


def as_json(report: Report) -> str:
    """The report as JSON (every figure, the cohort, the targets met)."""
    return json.dumps(report.as_dict(), indent=2, default=str)
