"""How good a rule set's alerts are, against ground truth: pure functions of times.

Definitions (``docs/evaluation.md`` gives them in words, with their reasons):

* *prodrome window* of an event at E: [E - 14 d, E); *aftermath*: [E, E + 14 d);
* *detection*: the share of events with an alert of the patient opened in
  [E - 14 d, E - 24 h] (at least 24 hours ahead);
* *chance*: the same detection after shifting each patient's alert openings by one random
  offset, circularly within the patient's observed period (first to last reading), averaged
  over ``shuffles`` shifts; the offsets depend only on the seed and the patient, so every
  rule set gets the same ones;
* *quiet day*: a local calendar day (Europe/Stockholm) of the observed period that does not
  touch any prodrome window or aftermath, on which the patient measured or an alert
  opened; *specificity*: the share of quiet days on which no alert opened;
* *non-actionable alerts per patient-week*: alerts opened on quiet days / (quiet days / 7);
* *PPV*: alerts opened inside a prodrome window / all alerts (alerts in an aftermath count
  as not positive);
* *re-opens within 48 h*: the share of episodes that opened at most 48 hours after an
  episode of the same rule for the same patient was resolved.

>>> from datetime import UTC, datetime
>>> day = timedelta(days=1)
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> patient = PatientOutcome(
...     "p-1", "copd", (t0 + 40 * day,), (t0, t0 + 80 * day),
...     frozenset(local_days(t0, t0 + 80 * day)), (Alert("spo2.low", t0 + 38 * day, None),)
... )
>>> s = score([patient], shuffles=20, seed=1)
>>> s.detection, s.ppv, s.specificity
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import bisect
import dataclasses
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Protocol

from homemonitor_devices.measurement import HOME_TZ

__all__ = [
    "AFTERMATH",
    "LEAD_MAX",
    "LEAD_MIN",
    "REOPEN_WITHIN",
    "TARGETS",
    "Alert",
    "Episode",
    "PatientOutcome",
    "RuleCounts",
    "Scores",
    "by_rule",
    "local_days",
    "meets",
    "score",
]

LEAD_MIN = timedelta(hours=24)
LEAD_MAX = timedelta(days=14)
AFTERMATH = timedelta(days=14)
REOPEN_WITHIN = timedelta(hours=48)
_DAY = timedelta(days=1)


class Episode(Protocol):
    """What scoring needs of an alert episode (the engine's ``Raised`` has it)."""

    @property
    def rule(self) -> str: ...
    @property
    def opened_at(self) -> datetime: ...
    @property
    def resolved_at(self) -> datetime | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """A minimal episode: a rule, when it opened, when it was resolved (None: never)."""

    rule: str
    opened_at: datetime
    resolved_at: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PatientOutcome:
    """One patient's ground truth and the alerts a rule set raised for them.

    ``events`` are the ground-truth event times; ``observed`` the first and last reading;
    ``measured_days`` the local days with at least one reading.
    """

    patient_id: str
    condition: str
    events: tuple[datetime, ...]
    observed: tuple[datetime, datetime]
    measured_days: frozenset[date]
    alerts: tuple[Episode, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Scores:
    """The metrics of a group of patients (None where the denominator is zero)."""

    patients: int
    events: int
    detection: float | None
    chance: float | None
    specificity: float | None
    quiet_days: int
    non_actionable_per_week: float | None
    ppv: float | None
    alerts: int
    reopen_48h: float | None

    @property
    def lift(self) -> float | None:
        """Detection minus chance."""
        if self.detection is None or self.chance is None:
            return None
        return self.detection - self.chance


#: The issue's aims: at >= 95 % specificity, detection >= 25 points above chance, <= 0.3
#: non-actionable alerts per patient-week, <= 5 % re-opens within 48 h.
TARGETS = {
    "specificity": 0.95,
    "lift": 0.25,
    "non_actionable_per_week": 0.3,
    "reopen_48h": 0.05,
}


def meets(scores: Scores) -> dict[str, bool | None]:
    """Which of :data:`TARGETS` ``scores`` meets (None: not measurable here)."""

    def at_least(value: float | None, target: float) -> bool | None:
        return None if value is None else value >= target

    def at_most(value: float | None, target: float) -> bool | None:
        return None if value is None else value <= target

    return {
        "specificity": at_least(scores.specificity, TARGETS["specificity"]),
        "lift": at_least(scores.lift, TARGETS["lift"]),
        "non_actionable_per_week": at_most(
            scores.non_actionable_per_week, TARGETS["non_actionable_per_week"]
        ),
        "reopen_48h": at_most(scores.reopen_48h, TARGETS["reopen_48h"]),
    }


def local_days(first: datetime, last: datetime) -> Iterator[date]:
    """Every local (Europe/Stockholm) calendar day from ``first``'s to ``last``'s."""
    day = first.astimezone(HOME_TZ).date()
    end = last.astimezone(HOME_TZ).date()
    while day <= end:
        yield day
        day += _DAY


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=HOME_TZ)
    following = day + _DAY
    return start, datetime(following.year, following.month, following.day, tzinfo=HOME_TZ)


def _detected(events: Iterable[datetime], opened: Sequence[datetime]) -> int:
    """How many ``events`` have an opening in [E - 14 d, E - 24 h] (``opened`` sorted)."""
    count = 0
    for at in events:
        i = bisect.bisect_left(opened, at - LEAD_MAX)
        if i < len(opened) and opened[i] <= at - LEAD_MIN:
            count += 1
    return count


def _shifted(
    opened: Sequence[datetime], observed: tuple[datetime, datetime], offset: float
) -> list[datetime]:
    """``opened`` moved ``offset`` seconds later, wrapping within ``observed``."""
    first, last = observed
    span = (last - first).total_seconds()
    if span <= 0:
        return list(opened)
    return sorted(
        first + timedelta(seconds=((t - first).total_seconds() + offset) % span) for t in opened
    )


def _chance(
    patient: PatientOutcome, opened: Sequence[datetime], shuffles: int, seed: int | str
) -> float:
    """Events of ``patient`` detected by shifted alerts, summed over shifts / shuffles."""
    if not patient.events or not opened:
        return 0.0
    rng = random.Random(f"{seed}/{patient.patient_id}/chance")
    span = (patient.observed[1] - patient.observed[0]).total_seconds()
    total = 0
    for _ in range(shuffles):
        offset = rng.uniform(0.0, span) if span > 0 else 0.0
        total += _detected(patient.events, _shifted(opened, patient.observed, offset))
    return total / shuffles


def _in_any(at: datetime, windows: Iterable[tuple[datetime, datetime]]) -> bool:
    return any(start <= at < end for start, end in windows)


def _reopened(alerts: Sequence[Episode]) -> list[Episode]:
    """Episodes opened within 48 h after a resolved episode of the same rule."""
    per_rule: dict[str, list[Episode]] = defaultdict(list)
    for alert in alerts:
        per_rule[alert.rule].append(alert)
    found = []
    for episodes in per_rule.values():
        resolved = sorted(e.resolved_at for e in episodes if e.resolved_at is not None)
        for episode in episodes:
            i = bisect.bisect_right(resolved, episode.opened_at) - 1
            if i >= 0 and episode.opened_at - resolved[i] <= REOPEN_WITHIN:
                found.append(episode)
    return found


def _quiet(patient: PatientOutcome, day: date, opened_days: Iterable[date]) -> bool:
    """Whether ``day`` is one of ``patient``'s quiet days (see the module)."""
    if day not in patient.measured_days and day not in opened_days:
        return False
    start, end = _day_bounds(day)
    return not any(e - LEAD_MAX < end and start < e + AFTERMATH for e in patient.events)


@dataclasses.dataclass(slots=True)
class RuleCounts:
    """One rule's alerts in a group: all, inside a prodrome window, on quiet days, re-opens."""

    alerts: int = 0
    in_prodrome: int = 0
    on_quiet_days: int = 0
    reopened_48h: int = 0


def by_rule(outcomes: Sequence[PatientOutcome]) -> dict[str, RuleCounts]:
    """Where each rule's alerts fell: which rules make the noise and the re-opens."""
    counts: dict[str, RuleCounts] = defaultdict(RuleCounts)
    for patient in outcomes:
        prodromes = [(e - LEAD_MAX, e) for e in patient.events]
        days = {a.opened_at.astimezone(HOME_TZ).date() for a in patient.alerts}
        for alert in patient.alerts:
            row = counts[alert.rule]
            row.alerts += 1
            row.in_prodrome += _in_any(alert.opened_at, prodromes)
            row.on_quiet_days += _quiet(patient, alert.opened_at.astimezone(HOME_TZ).date(), days)
        for alert in _reopened(patient.alerts):
            counts[alert.rule].reopened_48h += 1
    return dict(sorted(counts.items()))


def score(outcomes: Sequence[PatientOutcome], *, shuffles: int = 20, seed: int | str = 1) -> Scores:
    """The metrics over ``outcomes`` (see the module for their definitions)."""
    events = detected = quiet = quiet_alerted = non_actionable = 0
    chance = 0.0
    alerts = in_prodrome = reopened = 0
    for patient in outcomes:
        opened = sorted(a.opened_at for a in patient.alerts)
        events += len(patient.events)
        detected += _detected(patient.events, opened)
        chance += _chance(patient, opened, shuffles, seed)
        prodromes = [(e - LEAD_MAX, e) for e in patient.events]
        alerts += len(opened)
        in_prodrome += sum(_in_any(t, prodromes) for t in opened)
        reopened += len(_reopened(patient.alerts))
        opened_days: dict[date, int] = defaultdict(int)
        for t in opened:
            opened_days[t.astimezone(HOME_TZ).date()] += 1
        for day in local_days(*patient.observed):
            if not _quiet(patient, day, opened_days):
                continue
            quiet += 1
            if opened_days.get(day):
                quiet_alerted += 1
                non_actionable += opened_days[day]
    return Scores(
        patients=len(outcomes),
        events=events,
        detection=detected / events if events else None,
        chance=chance / events if events else None,
        specificity=1 - quiet_alerted / quiet if quiet else None,
        quiet_days=quiet,
        non_actionable_per_week=non_actionable / (quiet / 7) if quiet else None,
        ppv=in_prodrome / alerts if alerts else None,
        alerts=alerts,
        reopen_48h=reopened / alerts if alerts else None,
    )
