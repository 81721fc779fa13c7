"""What each rule kind makes of a patient's history at one evaluation point. Pure.

:func:`assess` runs one rule at one point in time over the readings measured at or before
it and returns an :class:`Assessment`: the level it reached, whether its clear condition
holds, the value it judged and the facts it used. The episode state machine
(:mod:`homemonitor.rules.episodes`) turns assessments into alert changes;
:mod:`homemonitor.rules.explain` turns one into the sentence a nurse reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

from homemonitor.rules.history import History
from homemonitor.rules.plan import Plan, RuleSpec

#: A fact an assessment used: a number, a text (a quantity, a time), or None (absent).
Fact = float | int | str | None

NONE, WARNING, URGENT = 0, 1, 2
LEVEL_NAMES = ("none", "warning", "urgent")


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """One rule at one evaluation point.

    ``level``: 0 none, 1 warning, 2 urgent. ``cleared``: the rule's clear condition holds
    (level 0 and, for thresholds, back inside the bound by the clear margin for enough
    readings); level 0 with ``cleared`` false means "not enough to say" (too little data,
    not armed, inside the hysteresis band) and leaves an episode as it is.
    ``value`` is the reading (or mean) the rule judged, in the quantity's unit;
    ``measure`` the number compared with the rule's bounds, oriented so that larger is
    worse (the value for a high threshold, minus the value for a low one, the delta of a
    change, the excess of an average over its bound, a baseline's deviation, a score):
    an episode's ``worst`` and the re-alert's ``worsen_by`` are in it. ``facts`` are the
    numbers it used (window, reference, mean, delta, baseline, n, ...), JSON-ready.
    """

    rule: RuleSpec
    plan_version: int
    at: datetime
    level: int
    cleared: bool
    value: float | None
    measure: float | None
    facts: Mapping[str, Fact]

    @property
    def severity(self) -> str:
        """``none``, ``warning`` or ``urgent``."""
        return LEVEL_NAMES[self.level]

    def sentence(self) -> str:
        """One plain sentence a nurse can read (see :mod:`homemonitor.rules.explain`)."""
        from homemonitor.rules.explain import sentence  # noqa: PLC0415 -- explain imports us

        return sentence(self)


def assess(rule: RuleSpec, plan: Plan, history: History, at: datetime) -> Assessment:
    """``rule`` of ``plan`` at ``at``, over the readings of ``history`` measured at or before.

    Readings after ``at`` are never used, so one history can serve every point of a batch
    (or of a replay). Questionable readings are left out unless the rule includes them.
    """
    raise NotImplementedError
