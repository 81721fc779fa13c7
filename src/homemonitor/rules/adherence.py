"""Missing-data rules as the engine's replay sees them: pure, no I/O.

The service raises missing-data alerts from the database on the scheduler's clock
(:mod:`homemonitor.alerts.silence`). ``rules backtest`` replays stored readings instead:
:func:`silences` finds, in one patient's readings, each silence that broke a regular habit
for longer than the plan tolerates, and when the job would have alerted (the tolerance's
end). What a replay cannot know it leaves out: pauses, and the gateway's contact (every
silence is the patient's here). :func:`sentence` is the alert's explanation, the same on
both sides; it, :func:`gateway_sentence` and :func:`ended_sentence` are written in Swedish
and English from one table of phrases (:data:`PHRASES`), as
:mod:`homemonitor.rules.explain` writes the other rules' (in Swedish with times in
Europe/Stockholm, in English in UTC).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from homemonitor.contract.readings import Metric
from homemonitor.rules.explain import Lang, every_language
from homemonitor.rules.history import StoredReading
from homemonitor.rules.kinds import LOCAL_ZONE
from homemonitor.rules.plan import Expected
from homemonitor.rules.replay import Raised

#: Why a silence ended: the gateway is back, a backlog arrived, or readings resumed.
Ended = Literal["gateway_back", "backlog", "resumed"]

#: Every phrase of the missing-data sentences, per language.
PHRASES: Mapping[Lang, Mapping[str, str]] = {
    "en": {
        "m.body_weight": "weight",
        "m.blood_pressure": "blood pressure",
        "m.spo2": "SpO2",
        "m.heart_rate": "pulse",
        "zone": " UTC",
        "since.paused": "the end of a pause",
        "since.reading": "the last reading",
        "missing": (
            "No {metric} reading for {silent} h since {since} ({at}), from a patient who "
            "measured it regularly ({readings} in the {days} days before); plan v{version} "
            "expects one every {every} h and tolerates {tolerate} h."
        ),
        "gateway": (
            "Nothing received from the patient's home gateway {gateway} for {silent} h (last "
            "contact {at}): the hub may be off or offline, or nobody measured; {metrics} "
            "expected; plan v{version} tolerates {tolerate} h."
        ),
        "ended.gateway_back": (
            "Silence ended: the gateway is in contact again, the patient's readings not."
        ),
        "ended.backlog": (
            "Silence ended: readings measured during the silence arrived late (a backlog): "
            "it is explained."
        ),
        "ended.resumed": "Silence ended: readings arrived again.",
    },
    "sv": {
        "m.body_weight": "vikt",
        "m.blood_pressure": "blodtryck",
        "m.spo2": "SpO2",
        "m.heart_rate": "puls",
        "zone": "",
        "since.paused": "ett uppehåll slutade",
        "since.reading": "den senaste mätningen",
        "missing": (
            "Ingen mätning av {metric} på {silent} h sedan {since} ({at}), från en patient "
            "som mätt regelbundet ({readings} under de {days} dagarna före); plan v{version} "
            "förväntar en mätning per {every} h och tolererar {tolerate} h."
        ),
        "gateway": (
            "Inget har kommit från patientens hubb {gateway} på {silent} h (senaste kontakt "
            "{at}): hubben kan vara avstängd eller utan uppkoppling, eller så har ingen mätt; "
            "{metrics} förväntas; plan v{version} tolererar {tolerate} h."
        ),
        "ended.gateway_back": (
            "Tystnaden är slut: hubben har kontakt igen, men inte patientens mätningar."
        ),
        "ended.backlog": (
            "Tystnaden är slut: mätningar från tystnaden kom fram sent (en eftersläpning): "
            "den är förklarad."
        ),
        "ended.resumed": "Tystnaden är slut: mätningar kommer igen.",
    },
}


def noun(metric: Metric, lang: Lang = "en") -> str:
    """The metric as a nurse says it (``weight``, ``blood pressure``; ``vikt``)."""
    return PHRASES[lang][f"m.{metric.value}"]


def _g(x: float, lang: Lang) -> str:
    text = f"{x:g}"
    return text.replace(".", ",") if lang == "sv" else text


def _at(t: datetime, lang: Lang) -> str:
    """A time as the sentence gives it: UTC in English, Swedish time in Swedish."""
    local = t.astimezone(UTC if lang == "en" else LOCAL_ZONE)
    return f"{local:%Y-%m-%d %H:%M}{PHRASES[lang]['zone']}"


def hours(span: timedelta) -> float:
    """A span in hours, to a tenth, as the explanations give it."""
    return round(span.total_seconds() / 3600, 1)


def sentence(  # noqa: PLR0917 - each argument a different fact of the sentence
    e: Expected,
    silent_from: datetime,
    now: datetime,
    readings: int,
    version: int,
    paused: bool,
    lang: Lang = "en",
) -> str:
    """The plain sentence of a ``missing.<metric>`` alert raised at ``now``.

    >>> e = Expected(metric=Metric.SPO2, every_hours=24, tolerate_hours=72)
    >>> t = datetime(2026, 6, 1, 7, tzinfo=UTC)
    >>> sentence(e, t, t + timedelta(hours=72), 13, 2, False)[:62]
    'No SpO2 reading for 72 h since the last reading (2026-06-01 07'
    """
    words = PHRASES[lang]
    return words["missing"].format(
        metric=noun(e.metric, lang),
        silent=_g(hours(now - silent_from), lang),
        since=words["since.paused" if paused else "since.reading"],
        at=_at(silent_from, lang),
        readings=readings,
        days=_g(e.run_in_days, lang),
        version=version,
        every=_g(e.every_hours, lang),
        tolerate=_g(e.tolerate_hours, lang),
    )


def sentences(  # noqa: PLR0917 - as sentence
    e: Expected, silent_from: datetime, now: datetime, readings: int, version: int, paused: bool
) -> dict[str, str]:
    """:func:`sentence` in every language, by language code."""
    return every_language(
        lambda lang: sentence(e, silent_from, now, readings, version, paused, lang)
    )


def gateway_sentence(  # noqa: PLR0917 - each argument a different fact
    gateway_id: str | None,
    contact_at: datetime,
    now: datetime,
    metrics: Sequence[Metric],
    version: int,
    tolerate_hours: float,
    lang: Lang = "en",
) -> str:
    """The plain sentence of a ``gateway.silent`` alert raised at ``now``.

    >>> t = datetime(2026, 6, 1, 7, tzinfo=UTC)
    >>> gateway_sentence("gw-1", t, t + timedelta(hours=30), [Metric.SPO2], 1, 24, "sv")[:58]
    'Inget har kommit från patientens hubb gw-1 på 30 h (senast'
    """
    return PHRASES[lang]["gateway"].format(
        gateway=gateway_id,
        silent=_g(hours(now - contact_at), lang),
        at=_at(contact_at, lang),
        metrics=", ".join(sorted(noun(m, lang) for m in metrics)),
        version=version,
        tolerate=_g(tolerate_hours, lang),
    )


def ended_sentence(why: Ended, lang: Lang = "en") -> str:
    """The sentence of a missing-data alert that ended by itself, for ``why``.

    >>> ended_sentence("resumed"), ended_sentence("resumed", "sv")
    ('Silence ended: readings arrived again.', 'Tystnaden är slut: mätningar kommer igen.')
    """
    return PHRASES[lang][f"ended.{why}"]


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
                    sentences=sentences(e, t, due, n, version, paused=False),
                )
            )
    return sorted(out, key=lambda r: (r.opened_at, r.rule))
