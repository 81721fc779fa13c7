"""Explanation sentences in Swedish beside English (``homemonitor.rules.explain``,
``homemonitor.rules.adherence``): one function per rule kind, a phrase table per language."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from homemonitor.contract.readings import Metric
from homemonitor.rules import adherence, explain
from homemonitor.rules.kinds import Assessment
from homemonitor.rules.plan import BaselineRule, Expected
from homemonitor.web import i18n
from homemonitor.web.pages import alert  # noqa: F401 - adds the event labels
from tests.unit.rulekit import W, at, bp, oximeter, weight
from tests.unit.test_rules_kinds import (
    BASELINE,
    DRY,
    FOR_TWO_HOURS,
    GAIN,
    GAIN_WARNING_ONLY,
    HOME_BP,
    NEWS2,
    RUN_IN,
    SPO2_LOW,
    SYSTOLIC_HIGH,
    TWO_OF_THREE,
    _bp_week,
    _sys,
    judge,
)

MIGRATIONS = Path(explain.__file__).parents[1] / "storage" / "migrations"
_PLAN_V3_BP = "plan v3: varning vid 160 mmHg eller mer, brådskande vid 180 mmHg eller mer"
_PLAN_V3_HOME_BP = (
    "plan v3: varning vid ett medelvärde systoliskt 135 mmHg eller diastoliskt 85 mmHg eller "
    "mer, brådskande vid ett medelvärde systoliskt 160 mmHg eller diastoliskt 100 mmHg eller "
    "mer, under högst 7 dagar"
)
_PLAN_V3_EWMA = "plan v3: varning vid 3 SD för EWMA över den personliga baslinjen, minst 1 kg"
_PLAN_V3_NEWS2 = (
    "plan v3: varning vid 5 eller mer, brådskande vid 7 eller mer, en enskild parameter med "
    "3 poäng: varning; inga andningsfrekvens, medvetandegrad eller temperatur"
)
_STABLE = [weight(at(d), kg) for d, kg in enumerate([*RUN_IN, 80.1, 79.9])]
_MACD = BaselineRule(
    id="weight.macd", quantity=W, direction="high", method="macd", run_in_days=7, warning=0.5
)
_FLAT = [weight(at(d), 80.0) for d in range(14)]


def _cases() -> list[tuple[str, Assessment, str]]:
    return [
        (
            "change",
            judge(
                GAIN_WARNING_ONLY,
                [weight(at(d), kg) for d, kg in enumerate([82.2, 83.0, 83.5, 84.6])],
            ),
            "vikt 84,6 kg, 2,4 kg över den lägsta de föregående 3 dagarna (82,2 kg); "
            "plan v3: 2 kg eller mer på 3 dagar",
        ),
        (
            "change-fall-from-the-highest",
            judge(
                GAIN.model_copy(update={"direction": "fall", "reference": "max"}),
                [weight(at(d), kg) for d, kg in enumerate([80, 84, 81.5])],
            ),
            "vikt 81,5 kg, 2,5 kg under den högsta de föregående 3 dagarna (84 kg); plan v3: "
            "en minskning med varning vid 2 kg eller mer, brådskande vid 3 kg eller mer på "
            "3 dagar",
        ),
        (
            "change-insufficient",
            judge(GAIN, [weight(at(0), 80.0), weight(at(3, hours=1), 84.0)]),
            "vikt 84 kg, för få mätningar under de föregående 3 dagarna att jämföra med; "
            "plan v3: varning vid 2 kg eller mer, brådskande vid 3 kg eller mer på 3 dagar",
        ),
        (
            "threshold-urgent",
            judge(SYSTOLIC_HIGH, _sys([185])),
            f"systoliskt 185 mmHg, på eller över gränsen 180 mmHg för brådskande; {_PLAN_V3_BP}",
        ),
        (
            "threshold-inside",
            judge(SYSTOLIC_HIGH, _sys([150])),
            f"systoliskt 150 mmHg, under gränsen 160 mmHg för varning; {_PLAN_V3_BP}",
        ),
        (
            "threshold-low",
            judge(SPO2_LOW, [oximeter(at(), 90)]),
            "SpO2 90%, på eller under gränsen 92% för varning; plan v3: varning vid 92% eller "
            "mindre, brådskande vid 88% eller mindre",
        ),
        (
            "threshold-k-of-n",
            judge(TWO_OF_THREE, _sys([165, 140, 170])),
            "systoliskt 170 mmHg, på eller över gränsen 160 mmHg för varning i 2 av de senaste "
            f"3 mätningarna; {_PLAN_V3_BP}, i 2 av 3 mätningar",
        ),
        (
            "threshold-for-hours",
            judge(FOR_TWO_HOURS, _sys([165, 170, 168])),
            "systoliskt 168 mmHg, på eller över gränsen 160 mmHg för varning under 2 h; "
            f"{_PLAN_V3_BP}, under 2 h",
        ),
        (
            "threshold-relative-to",
            judge(DRY, [weight(at(), 86.3)], personal={"dry_weight": 84.3}),
            "vikt 86,3 kg, 2 kg över torrvikten (84,3 kg), på eller över gränsen 86,3 kg för "
            "varning; plan v3: varning vid 2 kg över torrvikten, brådskande vid 3,5 kg över "
            "torrvikten",
        ),
        (
            "average",
            judge(HOME_BP, _bp_week((170, 105), (138, 86))),
            "hemmedelvärde systoliskt 138 mmHg, diastoliskt 86 mmHg (6 dagar, 12 mättillfällen, "
            f"24 mätningar; första dagen borträknad); {_PLAN_V3_HOME_BP}",
        ),
        (
            "average-insufficient",
            judge(HOME_BP, _bp_week((140, 90), (140, 90), days=4)),
            "hemmedelvärde: ännu för få dagar eller mätningar (3 dagar, 6 mättillfällen, "
            f"12 mätningar; första dagen borträknad); {_PLAN_V3_HOME_BP}",
        ),
        (
            "baseline-ewma",
            judge(
                BASELINE,
                [*_STABLE, weight(at(9), 81.5), weight(at(10), 82.2), weight(at(11), 82.8)],
            ),
            "vikt 82,8 kg, EWMA 81,5 kg är 1,5 kg över den personliga baslinjen 80 kg "
            f"(SD 0,2 kg, 7 inkörningsmätningar); {_PLAN_V3_EWMA}",
        ),
        (
            "baseline-insufficient",
            judge(BASELINE, [weight(at(d), kg) for d, kg in enumerate(RUN_IN[:5])]),
            "vikt 79,9 kg: personlig baslinje ännu inte klar (5 av 5 inkörningsmätningar); "
            f"{_PLAN_V3_EWMA}",
        ),
        (
            "baseline-new-device",
            judge(
                BASELINE,
                [*_STABLE, *(weight(at(9 + d), 82.0, device="scale-2") for d in range(3))],
            ),
            "vikt 82 kg: personlig baslinje ännu inte klar (3 av 5 inkörningsmätningar, ny "
            f"mätare); {_PLAN_V3_EWMA}",
        ),
        (
            "baseline-macd",
            judge(_MACD, [*_FLAT, *(weight(at(14 + d), 80.5 + 0.5 * d) for d in range(4))]),
            "vikt 82 kg, 3-dagarstrenden 0,8 kg över 10-dagarstrenden (MACD); plan v3: varning "
            "vid 0,5 kg eller mer över (3- mot 10-dagarstrend)",
        ),
        (
            "score",
            judge(NEWS2, [bp(at(minutes=-10), 105, 70, pulse=115), oximeter(at(), 92)]),
            "NEWS2 hemdelmängd 5 (SpO2 92%: 2, puls 115/min: 2, systoliskt 105 mmHg: 1; "
            f"SpO2-skala 1); {_PLAN_V3_NEWS2}",
        ),
        (
            "score-on-oxygen-not-measured",
            judge(
                NEWS2.model_copy(update={"spo2_scale": 2, "on_oxygen": True}),
                [bp(at(hours=-2), 85, 60, pulse=120), oximeter(at(), 97, pulse=95)],
            ),
            "NEWS2 hemdelmängd 6 (SpO2 97%: 3, puls 95/min: 1, systoliskt inte mätt; "
            "SpO2-skala 2, med syrgas: 2), en enskild parameter med 3 poäng; "
            f"{_PLAN_V3_NEWS2}",
        ),
        (
            "score-insufficient",
            judge(NEWS2, [weight(at(), 80.0)]),
            f"NEWS2 hemdelmängd: ingen mätning av SpO2, puls eller systoliskt; {_PLAN_V3_NEWS2}",
        ),
    ]


CASES = _cases()


@pytest.mark.parametrize(("case", "a", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_kind_explains_itself_in_swedish(case: str, a: Assessment, expected: str) -> None:
    """The Swedish sentence of each rule kind and case, word for word, decimal comma."""
    assert expected == explain.sentence(a, "sv")


@pytest.mark.parametrize(("case", "a", "expected"), CASES, ids=[c[0] for c in CASES])
def test_sentences_are_both_languages_and_english_is_the_sentence(
    case: str, a: Assessment, expected: str
) -> None:
    """``Assessment.sentences()`` is sv and en; its en is ``sentence()``, as the API had it."""
    assert {"sv": expected, "en": a.sentence()} == a.sentences()


def test_every_phrase_exists_in_both_languages() -> None:
    """The explanation and missing-data phrase tables have the same keys in sv and en."""
    assert (set(explain.PHRASES["en"]), set(adherence.PHRASES["en"])) == (
        set(explain.PHRASES["sv"]),
        set(adherence.PHRASES["sv"]),
    )
    assert set(explain.LANGUAGES) == set(explain.PHRASES) == set(adherence.PHRASES)
    assert set(explain.LANGUAGES) == set(i18n.LANGUAGES)


SILENT_FROM = datetime(2026, 6, 1, 7, tzinfo=UTC)  # 09:00 in Stockholm (CEST)
SPO2_DAILY = Expected(metric=Metric.SPO2, every_hours=24, tolerate_hours=72)


def test_missing_data_sentence_in_swedish_time_beside_the_english_one() -> None:
    """A silence after a pause: Swedish with a decimal comma in Stockholm time, English in UTC."""
    now = SILENT_FROM + timedelta(hours=72.5)
    assert {
        "sv": "Ingen mätning av SpO2 på 72,5 h sedan ett uppehåll slutade (2026-06-01 09:00), "
        "från en patient som mätt regelbundet (13 under de 14 dagarna före); plan v2 förväntar "
        "en mätning per 24 h och tolererar 72 h.",
        "en": "No SpO2 reading for 72.5 h since the end of a pause (2026-06-01 07:00 UTC), from "
        "a patient who measured it regularly (13 in the 14 days before); plan v2 expects one "
        "every 24 h and tolerates 72 h.",
    } == adherence.sentences(SPO2_DAILY, SILENT_FROM, now, 13, 2, paused=True)


def test_gateway_silent_sentence_in_swedish() -> None:
    """The gateway's silence in Swedish names its metrics in Swedish, sorted."""
    metrics = [Metric.SPO2, Metric.BODY_WEIGHT]
    now = SILENT_FROM + timedelta(hours=30)
    assert (
        "Inget har kommit från patientens hubb gw-2 på 30 h (senaste kontakt 2026-06-01 09:00): "
        "hubben kan vara avstängd eller utan uppkoppling, eller så har ingen mätt; SpO2, vikt "
        "förväntas; plan v1 tolererar 24 h."
    ) == adherence.gateway_sentence("gw-2", SILENT_FROM, now, metrics, 1, 24, "sv")


def test_ended_silences_in_swedish() -> None:
    """Each way a silence ends has its Swedish sentence."""
    assert [
        "Tystnaden är slut: hubben har kontakt igen, men inte patientens mätningar.",
        "Tystnaden är slut: mätningar från tystnaden kom fram sent (en eftersläpning): den är "
        "förklarad.",
        "Tystnaden är slut: mätningar kommer igen.",
    ] == [adherence.ended_sentence(why, "sv") for why in ("gateway_back", "backlog", "resumed")]


def _event_kinds() -> set[str]:
    """The kinds alert_events allows: its CHECK constraint as the newest migration sets it."""
    found: set[str] = set()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"alert_events_kind_check CHECK \(kind IN \((.*?)\)\)", text, re.S):
            found = set(re.findall(r"'(\w+)'", m.group(1)))
    return found


def test_every_event_kind_has_a_label_in_both_languages() -> None:
    """Each alert_events kind is labelled in sv and en on the Alert page (none shows its key)."""
    kinds = _event_kinds()
    assert "snooze_ended" in kinds  # the constraint was found, as migration 0013 widened it
    missing = {
        lang: sorted(k for k in kinds if i18n.translator(lang)(f"event.{k}") == f"event.{k}")
        for lang in i18n.LANGUAGES
    }
    assert {"sv": [], "en": []} == missing
    sv, en = i18n.translator("sv"), i18n.translator("en")
    assert [] == sorted(k for k in kinds if sv(f"event.{k}") == en(f"event.{k}"))
