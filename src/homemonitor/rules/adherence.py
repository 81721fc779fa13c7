"""Missing-data rules as the engine's replay sees them: pure, no I/O.

The service raises missing-data alerts from the database on the scheduler's clock
(:mod:`homemonitor.alerts.silence`). ``rules backtest`` replays stored readings instead:
:func:`silences` finds, in one patient's readings, each silence that broke a regular habit
for longer than the plan tolerates, and when the job would have alerted (the tolerance's
end). What a replay cannot know it leaves out: pauses, and the gateway's contact (every
silence is the patient's here). :func:`sentence` is the alert's explanation, the same on
both sides.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from homemonitor.contract.readings import Metric
from homemonitor.rules.history import StoredReading
from homemonitor.rules.plan import Expected
from homemonitor.rules.replay import Raised

NOUN = {
    Metric.BODY_WEIGHT: "weight",
    Metric.BLOOD_PRESSURE: "blood pressure",
    Metric.SPO2: "SpO2",
    Metric.HEART_RATE: "pulse",
}


def hours(span: timedelta) -> float:
    """A span in hours, to a tenth, as the explanations give it."""
    return round(span.total_seconds() / 3600, 1)


def sentence(  # noqa: PLR0917 - each argument a different fact of the sentence
    e: Expected, silent_from: datetime, now: datetime, readings: int, version: int, paused: bool
) -> str:
    """The plain sentence of a ``missing.<metric>`` alert raised at ``now``.

    >>> from datetime import UTC
    >>> e = Expected(metric=Metric.SPO2, every_hours=24, tolerate_hours=72)
    >>> t = datetime(2026, 6, 1, 7, tzinfo=UTC)
    >>> sentence(e, t, t + timedelta(hours=72), 13, 2, False)[:62]
    'No SpO2 reading for 72 h since the last reading (2026-06-01 07'
    """
    since = "the end of a pause" if paused else "the last reading"
    return (
        f"No {NOUN[e.metric]} reading for {hours(now - silent_from):g} h since {since} "
        f"({silent_from:%Y-%m-%d %H:%M} UTC), from a patient who measured it regularly "
        f"({readings} in the {e.run_in_days:g} days before); plan v{version} "
        f"expects one every {e.every_hours:g} h and tolerates {e.tolerate_hours:g} h."
    )


def silences(
    expected: Sequence[Expected],
    readings: Sequence[StoredReading],
    until: datetime,
    version: int,
) -> list[Raised]:
    """The missing-data alerts over ``readings`` up to ``until``, in the order they opened.

    One per silence: a reading followed by none for longer than the tolerance, by a patient
    who measured regularly in the run-in up to it. ``opened_at`` is when the tolerance ran
    out; the next reading of the metric resolves it (``rule``), or it is open at the end.

    >>> from datetime import UTC
    >>> e = Expected(metric=Metric.SPO2, every_hours=24, tolerate_hours=48, run_in_days=2)
    >>> t = datetime(2026, 6, 1, tzinfo=UTC)
    >>> daily = [StoredReading(t + timedelta(days=d), "o", Metric.SPO2, {}) for d in (0, 1, 2, 6)]
    >>> found = silences([e], daily, t + timedelta(days=7), 1)
    >>> [(r.rule, r.opened_at.day, r.resolved_at and r.resolved_at.day) for r in found]
    [('missing.spo2', 5, 7)]
    """
    times: dict[Metric, list[datetime]] = defaultdict(list)
    for r in readings:
        if r.measured_at <= until:
            times[r.metric].append(r.measured_at)
    out = []
    for e in expected:
        ts = sorted(set(times[e.metric]))
        tolerance = timedelta(hours=e.tolerate_hours)
        run_in = timedelta(days=e.run_in_days)
        for i, t in enumerate(ts):
            after = ts[i + 1] if i + 1 < len(ts) else None
            due = t + tolerance
            if due > until or (after is not None and after <= due):
                continue
            n = i + 1 - bisect.bisect_right(ts, t - run_in)
            if n < e.min_readings():
                continue
            out.append(
                Raised(
                    rule=e.id,
                    kind="missing",
                    severity=e.severity,
                    opened_at=due,
                    cleared_at=None,
                    resolved_at=after,
                    resolved_by="rule" if after is not None else None,
                    sentence=sentence(e, t, due, n, version, paused=False),
                )
            )
    return sorted(out, key=lambda r: (r.opened_at, r.rule))
