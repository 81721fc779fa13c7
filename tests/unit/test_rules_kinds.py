"""Each rule kind on hand-made series with known answers (``homemonitor.rules.kinds``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.kinds import (
    Assessment,
    assess,
    assess_reading,
    may_breach,
    news2_spo2,
    quick_level,
)
from homemonitor.rules.plan import (
    AverageBound,
    AverageRule,
    BaselineRule,
    ChangeRule,
    RuleSpec,
    ScoreRule,
    ThresholdRule,
)
from tests.unit.rulekit import O2, D, S, W, at, bp, one_by_one, oximeter, plan, weight


def judge(
    rule: RuleSpec, readings: list[StoredReading], personal: dict[str, float] | None = None
) -> Assessment:
    """``rule`` at the newest of ``readings``."""
    return assess(rule, plan(rule, personal=personal), History(readings), readings[-1].measured_at)


GAIN = ChangeRule(
    id="weight.gain_3d", quantity=W, direction="rise", warning=2.0, urgent=3.0, window_hours=72
)
GAIN_WARNING_ONLY = GAIN.model_copy(update={"urgent": None})


def test_weight_gain_of_2_4_kg_over_the_lowest_of_3_days_is_a_warning_with_its_facts() -> None:
    """84.6 kg after 82.2 kg (the lowest of the previous 3 days) is a warning, explained."""
    readings = [weight(at(0), 82.2), weight(at(1), 83.0), weight(at(2), 83.5), weight(at(3), 84.6)]
    a = judge(GAIN_WARNING_ONLY, readings)
    assert (1, False) == (a.level, a.cleared)
    assert 84.6 == a.value
    assert pytest.approx(2.4) == a.measure
    expected = {"reference": 82.2, "reference_at": at(0).isoformat(), "delta": 2.4, "n": 3}
    assert expected == {k: a.facts[k] for k in expected}
    assert (
        "weight 84.6 kg, 2.4 kg above the lowest of the previous 3 days (82.2 kg); "
        "plan v3: 2 kg or more in 3 days"
    ) == a.sentence()


CHANGES = [
    ("below-the-delta", GAIN, [82.2, 83.0, 84.1], (0, True, 1.9)),
    ("urgent-at-3", GAIN, [82.0, 83.0, 85.0], (2, False, 3.0)),
    ("mean-reference", GAIN.model_copy(update={"reference": "mean"}), [82, 84, 85], (1, False, 2)),
    (
        "first-reference",
        GAIN.model_copy(update={"reference": "first"}),
        [80, 84, 82],
        (1, False, 2),
    ),
    (
        "fall-from-the-highest",
        GAIN.model_copy(update={"direction": "fall", "reference": "max"}),
        [80, 84, 81.5],
        (1, False, 2.5),
    ),
]


@pytest.mark.parametrize(("case", "rule", "kgs", "expected"), CHANGES, ids=[c[0] for c in CHANGES])
def test_change_levels_against_each_reference(
    case: str, rule: ChangeRule, kgs: list[float], expected: tuple[int, bool, float]
) -> None:
    """The delta is measured against the reference the rule names, in its direction."""
    a = judge(rule, [weight(at(day), kg) for day, kg in enumerate(kgs)])
    assert expected == (a.level, a.cleared, pytest.approx(a.measure))


def test_change_outside_the_window_or_without_enough_reference_readings_says_nothing() -> None:
    """A reference older than the window does not count; too few readings: level 0, not cleared."""
    a = judge(GAIN, [weight(at(0), 80.0), weight(at(3, hours=1), 84.0)])
    assert (0, False, 0) == (a.level, a.cleared, a.facts["n"])
    assert "too few readings in the previous 3 days" in a.sentence()


def test_change_averages_the_session_at_the_point() -> None:
    """Two weighings minutes apart are one session: their mean is the value, not the reference."""
    a = judge(GAIN, [weight(at(0), 82.0), weight(at(2), 84.6), weight(at(2, minutes=3), 83.8)])
    assert (1, pytest.approx(84.2), 1, 2) == (a.level, a.value, a.facts["n"], a.facts["session_n"])


SYSTOLIC_HIGH = ThresholdRule(
    id="systolic.high", quantity=S, direction="high", warning=160, urgent=180
)
SPO2_LOW = ThresholdRule(id="spo2.low", quantity=O2, direction="low", warning=92, urgent=88)
DRY = ThresholdRule(
    id="weight.dry", quantity=W, direction="high", warning=2.0, urgent=3.5, relative_to="dry_weight"
)
TWO_OF_THREE = SYSTOLIC_HIGH.model_copy(update={"k": 2, "n": 3})
FOR_TWO_HOURS = SYSTOLIC_HIGH.model_copy(update={"for_hours": 2.0})
MARGIN = SYSTOLIC_HIGH.model_copy(update={"clear_margin": 10.0})
TWO_CLEAR = SYSTOLIC_HIGH.model_copy(update={"clear_readings": 2})


def _sys(values: list[float]) -> list[StoredReading]:
    return [bp(at(hours=h), v) for h, v in enumerate(values)]


THRESHOLDS = [
    ("below-warning", SYSTOLIC_HIGH, _sys([159.9]), (0, True)),
    ("warning-inclusive", SYSTOLIC_HIGH, _sys([160]), (1, False)),
    ("urgent-inclusive", SYSTOLIC_HIGH, _sys([180]), (2, False)),
    ("low-direction", SPO2_LOW, [oximeter(at(), 90)], (1, False)),
    ("low-urgent", SPO2_LOW, [oximeter(at(), 88)], (2, False)),
    ("k-of-n-one-breach", TWO_OF_THREE, _sys([150, 140, 165]), (0, False)),
    ("k-of-n-two-breaches", TWO_OF_THREE, _sys([165, 140, 170]), (1, False)),
    ("k-of-n-urgent-once-is-warning", TWO_OF_THREE, _sys([165, 140, 185]), (1, False)),
    ("k-of-n-breach-now-required", TWO_OF_THREE, _sys([165, 170, 140]), (0, True)),
    ("for-hours-too-short", FOR_TWO_HOURS, _sys([150, 165, 170]), (0, False)),
    ("for-hours-long-enough", FOR_TWO_HOURS, _sys([165, 170, 168]), (1, False)),
    ("hysteresis-band-holds", MARGIN, _sys([165, 155]), (0, False)),
    ("hysteresis-margin-clears", MARGIN, _sys([165, 150]), (0, True)),
    ("two-clear-readings-one", TWO_CLEAR, _sys([165, 150]), (0, False)),
    ("two-clear-readings-two", TWO_CLEAR, _sys([165, 150, 145]), (0, True)),
]


@pytest.mark.parametrize(
    ("case", "rule", "readings", "expected"), THRESHOLDS, ids=[c[0] for c in THRESHOLDS]
)
def test_threshold_levels_persistence_and_clear(
    case: str, rule: ThresholdRule, readings: list[StoredReading], expected: tuple[int, bool]
) -> None:
    """Bounds are inclusive; persistence needs the point itself to breach; clear has hysteresis."""
    a = judge(rule, readings)
    assert expected == (a.level, a.cleared)


def test_threshold_relative_to_dry_weight_names_it() -> None:
    """``relative_to`` makes the bounds offsets from a personal value, and the sentence says so."""
    a = judge(DRY, [weight(at(), 86.3)], personal={"dry_weight": 84.3})
    assert (1, 86.3) == (a.level, a.facts["bound"])
    assert (
        "weight 86.3 kg, 2 kg above dry weight (84.3 kg), at or above the warning bound of "
        "86.3 kg; plan v3: warning at 2 kg above dry weight, urgent at 3.5 kg above dry weight"
    ) == a.sentence()


def test_questionable_readings_are_left_out_unless_the_rule_includes_them() -> None:
    """A cuff-loose 190 is not used by ``questionable: exclude``, and is by ``include``."""
    readings = [bp(at(), 150), bp(at(minutes=5), 190, quality=["cuff_loose"])]
    include = SYSTOLIC_HIGH.model_copy(update={"questionable": "include"})
    assert (0, 150) == (judge(SYSTOLIC_HIGH, readings).level, judge(SYSTOLIC_HIGH, readings).value)
    assert 2 == judge(include, readings).level


HOME_BP = AverageRule(
    id="bp.home_mean",
    bounds={S: AverageBound(warning=135, urgent=160), D: AverageBound(warning=85, urgent=100)},
)


def _bp_week(first_day: tuple[float, float], rest: tuple[float, float], days: int = 7) -> list:
    """Mornings and evenings (07:00 and 19:00 local), two readings a minute apart each."""
    readings = []
    for day in range(days):
        s, d = first_day if day == 0 else rest
        for hours in (0, 12):
            for minute, bump in ((0, 2), (1, -2)):
                readings.append(bp(at(day, hours, minute), s + bump, d + bump))
    return readings


AVERAGES = [
    ("anxious-first-day-discarded", HOME_BP, _bp_week((170, 105), (130, 80)), (0, True)),
    (
        "anxious-first-day-kept",
        HOME_BP.model_copy(update={"discard_first_day": False}),
        _bp_week((170, 105), (130, 80)),
        (1, False),
    ),
    ("hypertensive-week", HOME_BP, _bp_week((130, 80), (138, 86)), (1, False)),
    ("diastolic-alone", HOME_BP, _bp_week((120, 80), (125, 87)), (1, False)),
    ("three-days-are-too-few", HOME_BP, _bp_week((140, 90), (140, 90), days=4), (0, False)),
    (
        "just-below-the-bound-is-not-clear-with-a-margin",
        HOME_BP.model_copy(update={"clear_margin": 5.0}),
        _bp_week((130, 80), (132, 80)),
        (0, False),
    ),
    (
        "well-below-the-bound-clears-with-a-margin",
        HOME_BP.model_copy(update={"clear_margin": 5.0}),
        _bp_week((130, 80), (126, 78)),
        (0, True),
    ),
]


@pytest.mark.parametrize(
    ("case", "rule", "readings", "expected"), AVERAGES, ids=[c[0] for c in AVERAGES]
)
def test_home_blood_pressure_protocol(
    case: str, rule: AverageRule, readings: list[StoredReading], expected: tuple[int, bool]
) -> None:
    """Sessions averaged first, per local day, first day discarded, at least 4 days left."""
    a = judge(rule, readings)
    assert expected == (a.level, a.cleared)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(132, 137.9), st.floats(81, 87.9), st.integers(0, 23)),
        min_size=1,
        max_size=16,
    ),
    st.sampled_from([HOME_BP, HOME_BP.model_copy(update={"discard_first_day": False})]),
)
def test_an_average_the_screen_rules_out_never_breaches(
    values: list[tuple[float, float, int]], rule: AverageRule
) -> None:
    """Whenever may_breach says an idle average protocol cannot breach, assess says level 0."""
    readings = [
        bp(at(day, hours, minute), s, d)
        for day, (s, d, hours) in enumerate(values[:8])
        for minute in (0, 1)
    ] + [bp(at(day, hours + 0.5), s, d) for day, (s, d, hours) in enumerate(values[8:])]
    readings.sort(key=lambda r: r.measured_at)
    history, point = History(readings), readings[-1].measured_at
    level = assess(rule, plan(rule), history, point).level
    assert level == 0 or may_breach(rule, plan(rule), history, point.timestamp())


@pytest.mark.parametrize(
    ("case", "rule", "readings", "expected"), AVERAGES, ids=[c[0] for c in AVERAGES]
)
def test_the_screen_lets_every_breaching_week_through_and_stops_a_quiet_one(
    case: str, rule: AverageRule, readings: list[StoredReading], expected: tuple[int, bool]
) -> None:
    """A week with a reading at a bound may breach; a week below every bound may not."""
    point = readings[-1].measured_at
    quiet = [bp(r.measured_at, 120, 75) for r in readings]
    assert (True, False) == (
        may_breach(rule, plan(rule), History(readings), point.timestamp()) or not expected[0],
        may_breach(rule, plan(rule), History(quiet), point.timestamp()),
    )


def test_home_blood_pressure_week_facts_and_sentence() -> None:
    """A week at 138/86 after a first day at 170/105: 6 days, 12 sessions, 24 readings."""
    a = judge(HOME_BP, _bp_week((170, 105), (138, 86)))
    expected = {
        "mean_systolic": 138.0,
        "mean_diastolic": 86.0,
        "n_days": 6,
        "n_sessions": 12,
        "n_readings": 24,
        "discarded_day": "2026-03-02",
    }
    assert expected == {
        k: pytest.approx(a.facts[k]) if k.startswith("mean") else a.facts[k] for k in expected
    }
    assert (
        "home mean systolic 138 mmHg, diastolic 86 mmHg (6 days, 12 sessions, 24 readings; "
        "first day discarded); plan v3: warning at a mean systolic 135 mmHg or diastolic "
        "85 mmHg or more, urgent at a mean systolic 160 mmHg or diastolic 100 mmHg or more, "
        "over up to 7 days"
    ) == a.sentence()


def test_home_blood_pressure_days_are_local_days_in_stockholm() -> None:
    """23:30 UTC is 00:30 the next day in Stockholm: two sessions that far apart are two days."""
    rule = HOME_BP.model_copy(update={"min_days": 2, "days": 2, "discard_first_day": False})
    late = [bp(at(0, hours=16, minutes=30), 140, 90), bp(at(0, hours=17, minutes=30), 140, 90)]
    a = judge(rule, late)  # 23:30 and 00:30 local
    assert (2, 2) == (a.facts["n_days"], a.facts["n_sessions"])
    same = [bp(at(0, hours=15), 140, 90), bp(at(0, hours=16), 140, 90)]  # 22:00 and 23:00 local
    assert 1 == judge(rule, same).facts["n_days"]


BASELINE = BaselineRule(
    id="weight.baseline",
    quantity=W,
    direction="high",
    run_in_days=7,
    monitor_days=7,
    min_run_in_readings=5,
    warning=3.0,
    min_deviation=1.0,
)
RUN_IN = [80.0, 80.3, 79.8, 80.1, 79.9, 80.2, 80.0]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(79.7, 80.3), min_size=4, max_size=8),
    st.lists(st.tuples(st.floats(77, 83), st.booleans()), min_size=0, max_size=8),
    st.sampled_from(["high", "low"]),
    st.sampled_from([0.3, 1.0]),
)
def test_an_ewma_the_screen_rules_out_never_breaches(
    run_in: list[float], monitored: list[tuple[float, bool]], direction: str, lam: float
) -> None:
    """Whenever may_breach says an idle EWMA cannot breach, assess says level 0."""
    rule = BASELINE.model_copy(update={"direction": direction, "weight": lam})
    readings = [weight(at(d), kg) for d, kg in enumerate(run_in)] + [
        weight(at(8 + d), kg, "scale-2" if swapped else "scale-1")
        for d, (kg, swapped) in enumerate(monitored)
    ]
    history, point = History(readings), readings[-1].measured_at
    level = assess(rule, plan(rule), history, point).level
    assert level == 0 or may_breach(rule, plan(rule), history, point.timestamp())


def test_baseline_not_armed_during_run_in() -> None:
    """Before its run-in is complete the baseline says nothing (level 0, not cleared)."""
    a = judge(BASELINE, [weight(at(d), kg) for d, kg in enumerate(RUN_IN[:5])])
    assert (0, False) == (a.level, a.cleared)
    assert "personal baseline not armed yet" in a.sentence()


def test_baseline_ewma_warns_on_a_rise_from_the_patients_own_level() -> None:
    """A steady run-in at 80 kg, then 81.5, 82.2, 82.8: the EWMA crosses its control limit."""
    stable = [weight(at(d), kg) for d, kg in enumerate([*RUN_IN, 80.1, 79.9])]
    assert (0, True) == (judge(BASELINE, stable).level, judge(BASELINE, stable).cleared)
    rising = [*stable, weight(at(9), 81.5), weight(at(10), 82.2), weight(at(11), 82.8)]
    a = judge(BASELINE, rising)
    assert 1 == a.level
    assert pytest.approx(80.043, abs=1e-3) == a.facts["baseline"]
    assert isinstance(a.facts["deviation"], float)
    assert a.facts["deviation"] >= 1.0
    assert "above the personal baseline of 80 kg" in a.sentence()


def test_baseline_is_re_armed_after_a_device_swap() -> None:
    """A new scale reading 2 kg higher is not a gain: the run-in restarts on the new device."""
    old = [weight(at(d), kg) for d, kg in enumerate([*RUN_IN, 80.1, 79.9])]
    same_scale = [*old, *(weight(at(9 + d), 82.0) for d in range(3))]
    assert 1 == judge(BASELINE, same_scale).level  # what it would say without the swap
    swapped = [*old, *(weight(at(9 + d), 82.0, device="scale-2") for d in range(3))]
    a = judge(BASELINE, swapped)
    assert (0, False, True) == (a.level, a.cleared, a.facts["device_changed"])
    settled = [*old, *(weight(at(9 + d), 82.0 + (d % 2) * 0.2, device="scale-2") for d in range(9))]
    b = judge(BASELINE, settled)
    assert (0, True) == (b.level, b.cleared)
    assert pytest.approx(82.1, abs=0.05) == b.facts["baseline"]


def test_macd_follows_a_trend() -> None:
    """MACD (3 vs 10 days) of a flat series is 0; of a rising one, above its bound."""
    rule = BaselineRule(
        id="weight.macd", quantity=W, direction="high", method="macd", run_in_days=7, warning=0.5
    )
    flat = [weight(at(d), 80.0) for d in range(14)]
    assert (0, True) == (judge(rule, flat).level, judge(rule, flat).cleared)
    rising = [*flat, *(weight(at(14 + d), 80.0 + 0.5 * (d + 1)) for d in range(4))]
    a = judge(rule, rising)
    assert 1 == a.level
    assert "3-day trend" in a.sentence()


NEWS2 = ScoreRule(id="news2", warning=5, urgent=7, single_red="warning")

SPO2_SCORES = [
    # spo2, scale, on oxygen -> points (RCP 2017 chart 1)
    (96, 1, False, 0),
    (95, 1, False, 1),
    (94, 1, False, 1),
    (93, 1, False, 2),
    (92, 1, False, 2),
    (91, 1, False, 3),
    (91, 2, False, 0),
    (88, 2, False, 0),
    (87, 2, False, 1),
    (86, 2, False, 1),
    (85, 2, False, 2),
    (84, 2, False, 2),
    (83, 2, False, 3),
    (97, 2, False, 0),
    (92, 2, True, 0),
    (93, 2, True, 1),
    (94, 2, True, 1),
    (95, 2, True, 2),
    (96, 2, True, 2),
    (97, 2, True, 3),
    (97, 1, True, 0),
]


@pytest.mark.parametrize(("spo2", "scale", "oxygen", "points"), SPO2_SCORES)
def test_news2_spo2_bands(spo2: int, scale: int, oxygen: bool, points: int) -> None:
    """SpO2 scores as on the RCP 2017 NEWS2 chart, scale 1 and scale 2 with its oxygen rows."""
    assert points == news2_spo2(spo2, scale=scale, on_oxygen=oxygen)


def test_news2_scale_2_and_scale_1_on_the_same_spo2() -> None:
    """SpO2 89 % scores 3 (a single red: warning) on scale 1, 0 on scale 2."""
    readings = [oximeter(at(), 89, pulse=80)]
    one, two = judge(NEWS2, readings), judge(NEWS2.model_copy(update={"spo2_scale": 2}), readings)
    assert (1, 3, 3) == (one.level, one.facts["spo2_score"], one.facts["score"])
    assert (0, True, 0) == (two.level, two.cleared, two.facts["score"])


def test_news2_aggregate_of_the_latest_parameters_in_the_session() -> None:
    """SpO2 92 (2), pulse 115 (2), systolic 105 (1) = 5: a warning, each part explained."""
    readings = [bp(at(minutes=-10), 105, 70, pulse=115), oximeter(at(), 92)]
    a = judge(NEWS2, readings)
    assert (1, 5) == (a.level, a.facts["score"])
    assert (
        "NEWS2 home subset 5 (SpO2 92%: 2, pulse 115/min: 2, systolic 105 mmHg: 1; "
        "SpO2 scale 1); plan v3: warning at 5 or more, urgent at 7 or more, any single "
        "parameter scoring 3 warning; no respiratory rate, consciousness or temperature"
    ) == a.sentence()


def test_news2_on_oxygen_adds_two_and_old_parameters_are_missing() -> None:
    """Supplemental oxygen scores 2; a blood pressure older than the session is not used."""
    rule = NEWS2.model_copy(update={"spo2_scale": 2, "on_oxygen": True})
    readings = [bp(at(hours=-2), 85, 60, pulse=120), oximeter(at(), 97, pulse=95)]
    a = judge(rule, readings)
    assert (3, 1, None, 6) == (
        a.facts["spo2_score"],
        a.facts["pulse_score"],
        a.facts["systolic_score"],
        a.facts["score"],
    )
    assert 1 == a.level
    assert "systolic not measured" in a.sentence()


FAST = [
    (rule, value)
    for rule in (SYSTOLIC_HIGH, MARGIN, SPO2_LOW.model_copy(update={"clear_margin": 2.0}))
    for value in (80.0, 87.99, 88.0, 90.0, 91.0, 92.0, 93.0, 150.0, 159.99, 160.0, 179.0, 180.0)
]


@pytest.mark.parametrize(("rule", "value"), FAST)
def test_the_plain_threshold_fast_path_agrees_with_the_series_path(
    rule: ThresholdRule, value: float
) -> None:
    """``quick_level`` and ``assess_reading`` give what ``assess`` over a series gives."""
    reading = bp(at(), value) if rule.quantity is S else oximeter(at(), value)
    slow = judge(rule, [reading])
    fast = assess_reading(rule, plan(rule), value, at())
    assert (slow.level, slow.cleared, slow.measure) == (fast.level, fast.cleared, fast.measure)
    assert slow.level == quick_level(rule, plan(rule), value)


def test_two_devices_measuring_one_quantity_are_two_baselines() -> None:
    """Alternating scales (home and clinic) keep their own run-ins: a rise on one still warns."""
    home = [weight(at(d), kg) for d, kg in enumerate([*RUN_IN, 80.1, 79.9])]
    clinic = [weight(at(d, hours=6), kg + 1.5, device="scale-2") for d, kg in enumerate(RUN_IN)]
    rising = [weight(at(9 + d), kg) for d, kg in enumerate((81.5, 82.2, 82.8))]
    a = judge(BASELINE, sorted([*home, *clinic, *rising], key=lambda r: r.measured_at))
    assert 1 == a.level
    assert pytest.approx(80.043, abs=1e-3) == a.facts["baseline"]  # the home scale's own level


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # minutes after the previous reading
            st.sampled_from(["oximeter", "bp"]),
            st.floats(80, 100),
            st.floats(30, 150),
            st.floats(80, 230),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([None, "warning", "urgent"]),
    st.integers(1, 2),
    st.booleans(),
)
def test_a_score_the_screen_rules_out_never_breaches_and_one_it_lets_through_does(
    raw: list[tuple[int, str, float, float, float]],
    single_red: str | None,
    scale: int,
    on_oxygen: bool,
) -> None:
    """may_breach of a NEWS2 score is exactly whether assess reaches a level."""
    rule = NEWS2.model_copy(
        update={"single_red": single_red, "spo2_scale": scale, "on_oxygen": on_oxygen}
    )
    readings, minutes = [], 0
    for gap, kind, spo2, pulse, systolic in raw:
        minutes += gap
        if kind == "oximeter":
            readings.append(oximeter(at(minutes=minutes), spo2, pulse))
        else:
            readings.append(bp(at(minutes=minutes), systolic, pulse=pulse))
    history, point = History(readings), readings[-1].measured_at
    level = assess(rule, plan(rule), history, point).level
    assert (level > 0) == may_breach(rule, plan(rule), history, point.timestamp())


#: Hurst et al. (2010)'s composite: SpO2 falling and pulse rising, each in its own SDs.
OXIMETRY = BaselineRule(
    id="oximetry.trend",
    quantity=O2,
    direction="low",
    method="composite",
    min_sd=0.5,
    also=({"quantity": "heart_rate", "direction": "high", "min_sd": 2.5},),  # type: ignore[arg-type]
    run_in_days=7,
    min_run_in_readings=5,
    weight=0.3,
    warning=1.0,
)
#: A stable week: SpO2 94-95 % (SD 0.52), pulse 80-90/min (SD 3.9).
STABLE_O2 = [(94, 80), (95, 86), (94, 90), (95, 84), (94, 82), (95, 88), (94, 85)]


def _oximetry(days: list[tuple[float, float]]) -> list[StoredReading]:
    return [oximeter(at(d), spo2, pulse) for d, (spo2, pulse) in enumerate(days)]


def test_composite_baseline_warns_when_spo2_falls_and_pulse_rises_together() -> None:
    """A fall of 2 % with a rise of 12/min over three days: about 2 SD in both, a warning."""
    quiet = judge(OXIMETRY, _oximetry([*STABLE_O2, (95, 84), (94, 86)]))
    assert (0, True) == (quiet.level, quiet.cleared)
    a = judge(OXIMETRY, _oximetry([*STABLE_O2, (93, 92), (92, 96), (92, 99)]))
    assert 1 == a.level
    facts = a.facts
    assert pytest.approx(94.43, abs=0.01) == facts["spo2_baseline"]
    assert pytest.approx(85.0, abs=0.01) == facts["heart_rate_baseline"]
    score = (float(facts["spo2_z"]) + float(facts["heart_rate_z"])) / 2  # type: ignore[arg-type]
    assert pytest.approx(score) == facts["score"]
    assert score >= 1.0
    assert a.measure == facts["score"]
    assert "SpO2 92%, pulse 99/min: composite score" in a.sentence()
    assert "SD below the baseline of 94.4%" in a.sentence()
    assert "; 7 run-in readings); plan v3: warning at 1 SD, the mean of SpO2 below" in a.sentence()
    assert "sammanvägt värde" in a.sentences()["sv"]


def test_composite_baseline_needs_both_parts() -> None:
    """SpO2 alone falling 1 % (pulse steady) is above 1 SD, but half of it is the score."""
    a = judge(OXIMETRY, _oximetry([*STABLE_O2, (94, 85), (93, 84), (93, 85)]))
    assert 0 == a.level
    assert float(a.facts["spo2_z"]) > 1.0  # type: ignore[arg-type]
    assert float(a.facts["score"]) < 1.0  # type: ignore[arg-type]


def test_composite_baseline_is_not_armed_until_every_part_is() -> None:
    """SpO2 readings without pulse: the pulse part has no run-in, so nothing is said."""
    readings = [oximeter(at(d), 94 + d % 2) for d in range(10)]
    a = judge(OXIMETRY, readings)
    assert (0, False) == (a.level, a.cleared)
    assert "heart_rate" == a.facts["unarmed"]
    assert "not armed yet (pulse 0 of 5 run-in readings)" in a.sentence()
    # Pulse stopped after the run-in: SpO2 is armed, pulse waits for a reading.
    stopped = [*_oximetry(STABLE_O2), *(oximeter(at(7 + d), 92) for d in range(3))]
    b = judge(OXIMETRY, stopped)
    assert (0, False, "heart_rate") == (b.level, b.cleared, b.facts["unarmed"])
    assert "(pulse: no reading after its run-in)" in b.sentence()
    assert "(puls: ingen mätning efter inkörningen)" in b.sentences()["sv"]


def test_composite_baseline_reads_every_part_from_the_oximeter_not_a_cuffs_pulse() -> None:
    """A cuff's pulse between the oximeter's readings neither runs the score nor enters it:
    the score at the oximeter's reading is the same with and without the cuff."""
    prodrome = _oximetry([*STABLE_O2, (93, 92), (92, 96)])
    cuff = [bp(at(d, hours=1), 130, 80, pulse=70) for d in range(9)]
    with_cuff = sorted([*prodrome, *cuff], key=lambda r: r.measured_at)
    alone = judge(OXIMETRY, [*prodrome, oximeter(at(9), 92, 99)])
    mixed = judge(OXIMETRY, [*with_cuff, oximeter(at(9), 92, 99)])
    assert 1 == alone.level
    assert alone.facts == mixed.facts
    outcomes, _ = one_by_one(plan(OXIMETRY), with_cuff)
    cuff_points = [
        o.assessed for o, r in zip(outcomes, with_cuff, strict=True) if r.device_id == "cuff-1"
    ]
    assert [0] * len(cuff) == cuff_points  # a cuff reading does not run the composite


def test_composite_baseline_floors_a_run_in_of_identical_readings() -> None:
    """A run-in of 95 % every day has SD 0: a 1 % dip is 2 SD (the 0.5 % floor), not infinite."""
    flat = [(95, 80 + (d % 2) * 8) for d in range(7)]
    a = judge(OXIMETRY, _oximetry([*flat, (94, 84)]))
    assert 0.5 == a.facts["spo2_sd"]
    assert pytest.approx(0.3 * 1.0 / 0.5) == a.facts["spo2_z"]


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"also": ()}, "needs at least one quantity in also"),
        ({"min_sd": 0.0}, "needs min_sd above 0"),
        ({"method": "ewma"}, "also and min_sd are for method composite only"),
        ({"method": "ewma", "also": ()}, "also and min_sd are for method composite only"),
        ({"min_deviation": 2.0}, "min_sd per part, not min_deviation"),
    ],
)
def test_composite_baseline_plans_that_make_no_sense_are_refused(
    update: dict[str, object], message: str
) -> None:
    data = OXIMETRY.model_dump() | update
    with pytest.raises(ValueError, match=message):
        BaselineRule.model_validate(data)
