"""The quiet envelope (``homemonitor.rules.quiet``): a reading it accepts changes nothing.

The check that matters is the replay: simulated patients on their condition's template,
each reading evaluated by the engine as always, and wherever the envelope derived after
the previous evaluation accepted the reading, every rule the reading runs must assess to
level 0 and no episode may change. The patients' own months are followed by a burst of
readings drifting towards every rule's breach (weight and pulse up, SpO2 down, pressure
up), so envelopes are accepted often and have to give way before each breach.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import pytest

from homemonitor.contract.readings import Metric, Quantity
from homemonitor.rules.episodes import EpisodeState
from homemonitor.rules.evaluate import evaluate
from homemonitor.rules.history import History, StoredReading, packed
from homemonitor.rules.kinds import assess
from homemonitor.rules.plan import (
    AverageBound,
    AverageRule,
    BaselineRule,
    CarePlanSpec,
    ChangeRule,
    Plan,
    resolve,
    triggers,
)
from homemonitor.rules.quiet import Quiet, quiet
from homemonitor.rules.templates import TEMPLATES
from homemonitor_devices.cohort import generate_cohort
from homemonitor_eval.engine import stored
from homemonitor_eval.rulesets import personal_for
from tests.unit.rulekit import HR, S, W, at, bp, plan, weight

#: Per quantity, how a burst reading drifts towards a breach, per reading.
DRIFT = {
    Quantity.BODY_WEIGHT: 0.04,
    Quantity.SYSTOLIC: 0.25,
    Quantity.DIASTOLIC: 0.15,
    Quantity.MEAN_ARTERIAL: 0.2,
    Quantity.HEART_RATE: 0.12,
    Quantity.SPO2: -0.03,
}


def _burst(readings: Sequence[StoredReading], n: int, seed: int) -> list[StoredReading]:
    """``n`` readings after ``readings``, 10 minutes apart, repeating its last day's
    readings (devices, metrics) with noise and a drift towards every breach."""
    rng = random.Random(seed)
    last_day = [r for r in readings if r.measured_at > readings[-1].measured_at - timedelta(days=1)]
    out: list[StoredReading] = []
    t = readings[-1].measured_at
    for k in range(n):
        model = last_day[k % len(last_day)]
        t += timedelta(minutes=10)
        values = {
            q: x + DRIFT[q] * k + rng.gauss(0, 0.3 if q is Quantity.BODY_WEIGHT else 1.0)
            for q, x in model.values.items()
        }
        out.append(StoredReading(t, model.device_id, model.metric, values))
    return out


def _replay(p: Plan, readings: Sequence[StoredReading]) -> tuple[int, int]:
    """Every reading through the engine; (readings the envelope accepted, checked).

    Fails on an accepted reading after which a rule it runs is not at level 0 or an
    episode changed.
    """
    everything = History(readings)
    states: dict[str, EpisodeState] = {}
    envelope: Quiet | None = None
    accepted = 0
    for r in readings:
        h = everything.until(r.measured_at)
        ok = envelope.accepts([packed(r)]) if envelope is not None and not states else None
        out = evaluate(p, h, [r], states, r.measured_at)
        if ok is not None:
            accepted += 1
            for rule in p.rules:
                if any(q in r.values for q in triggers(rule)):
                    a = assess(rule, p, h, r.measured_at)
                    assert a.level == 0, (rule.id, r, a.facts)
            assert not out.changes, (r, out.changes)
            envelope = ok
        states.update(out.states)
        states = {k: s for k, s in states.items() if not s.idle}
        envelope = ok if ok is not None else (quiet(p, h) if not states else None)
    return accepted, len(readings)


@pytest.mark.parametrize("seed", [3, 11])
def test_what_an_envelope_accepts_changes_nothing_on_simulated_patients(seed: int) -> None:
    cohort = generate_cohort(18, days=45, seed=seed)
    accepted = checked = 0
    for patient in cohort.patients:
        own = stored(cohort.readings(patient))
        if not own:
            continue
        spec = CarePlanSpec(template=patient.condition, personal=personal_for(patient))
        p = resolve(spec, 1, TEMPLATES)
        a, n = _replay(p, [*own, *_burst(own, 150, seed)])
        accepted += a
        checked += n
    assert accepted > checked / 5  # the envelope is used, not only derived


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_change_envelopes_change_nothing_on_dense_noisy_weighings(seed: int) -> None:
    """Weighings every 1-6 minutes (sessions of several), 0.7 kg of noise around a slow
    drift, gaps of days: every reading a rise or a fall envelope takes changes nothing."""
    rng = random.Random(seed)
    rules = [
        ChangeRule(
            id=f"w.{d}.{r}",
            quantity=W,
            direction=d,  # type: ignore[arg-type]
            warning=2.0,
            window_hours=72,
            reference=r,  # type: ignore[arg-type]
        )
        for d in ("rise", "fall")
        for r in ("min", "max", "mean", "first")
        if (d, r) != ("rise", "max") and (d, r) != ("fall", "min")
    ]
    t, level, readings = at(), 80.0, []
    for _ in range(600):
        t += timedelta(days=3) if rng.random() < 0.01 else timedelta(minutes=rng.uniform(1, 6))
        level += rng.gauss(0, 0.05)
        readings.append(weight(t, round(level + rng.gauss(0, 0.7), 1)))
    for rule in rules:
        accepted, checked = _replay(plan(rule), readings)
        assert accepted > checked / 10, rule.id


def test_a_weight_gain_envelope_is_the_delta_wide_below_the_lowest_centred_on_the_mean() -> None:
    """2 kg in 3 days against the lowest (82.0): any 2 kg from a floor at or below it
    holds (a new reading at the floor lowers the reference as much); centred on the
    window's mean (82.53), 81.53 to 83.53."""
    rule = ChangeRule(id="w", quantity=W, direction="rise", warning=2.0, window_hours=72)
    readings = [weight(at(days=0), 83.0), weight(at(days=1), 82.0), weight(at(days=2), 82.6)]
    q = quiet(plan(rule), History(readings))
    assert q is not None
    assert q.accepts([packed(weight(at(days=3), 83.5))]) is not None
    assert q.accepts([packed(weight(at(days=3), 81.6))]) is not None  # a new lowest, in reach
    assert q.accepts([packed(weight(at(days=3), 83.6))]) is None  # above the centred top
    assert q.accepts([packed(weight(at(days=3), 81.5))]) is None  # below the floor
    chain = [packed(weight(at(days=3), 81.6)), packed(weight(at(days=3, hours=1), 83.5))]
    assert q.accepts(chain) is not None  # 1.9 kg apart: no 2 kg anywhere
    assert q.accepts([packed(weight(at(days=1, hours=1), 83.0))]) is None  # not after the newest
    questionable = weight(at(days=3), 83.0, quality=["body_movement"])
    assert q.accepts([packed(questionable)]) is None
    chain = q.accepts([packed(weight(at(days=3), 83.5)), packed(weight(at(days=4), 83.4))])
    assert chain is not None
    assert chain.newest == at(days=4).timestamp()


def test_a_session_of_many_weighings_bounds_by_its_newest_readings_means_not_its_largest() -> None:
    """A session of 81.0, 83.5, 81.0 (mean 81.83) over a lowest of 81.0: a later session
    keeps only its newest readings (81.0; 83.5 and 81.0: 82.25; all three), so a later
    value is at most 82.25 or the new readings, and a band of 2 kg from a floor between
    80.25 and 81.0 holds: centred on the window's mean (81.625), 80.625 to 82.625."""
    rule = ChangeRule(id="w", quantity=W, direction="rise", warning=2.0, window_hours=72)
    session = [at(days=2, minutes=m) for m in (0, 2, 4)]
    readings = [
        weight(at(days=0), 81.0),
        *(weight(t, x) for t, x in zip(session, (81.0, 83.5, 81.0), strict=True)),
    ]
    q = quiet(plan(rule), History(readings))
    assert q is not None  # the session's largest reading is 2.5 above the lowest
    assert q.accepts([packed(weight(at(days=2, minutes=6), 82.6))]) is not None
    assert q.accepts([packed(weight(at(days=2, minutes=6), 80.7))]) is not None
    assert q.accepts([packed(weight(at(days=2, minutes=6), 82.7))]) is None


def test_with_no_weight_in_the_window_any_readings_less_than_the_delta_apart_hold() -> None:
    """The last weight is 5 days old (the newest reading is a cuff's): new weights become
    the reference themselves, so a band of 2 kg around the last one holds, and only that."""
    rule = ChangeRule(id="w", quantity=W, direction="rise", warning=2.0, window_hours=72)
    readings = [weight(at(days=0), 83.0), bp(at(days=5), 130)]
    q = quiet(plan(rule), History(readings))
    assert q is not None
    near = [packed(weight(at(days=5, hours=1), 82.1)), packed(weight(at(days=6), 83.9))]
    assert q.accepts(near) is not None  # 1.8 kg apart
    apart = [packed(weight(at(days=5, hours=1), 82.0)), packed(weight(at(days=6), 84.1))]
    assert q.accepts(apart) is None  # 2.1 kg in a day: evaluate
    never_weighed = quiet(plan(rule), History([bp(at(days=5), 130)]))
    assert never_weighed is not None  # open to the cuff, closed to weights: no band to centre
    assert never_weighed.accepts([packed(weight(at(days=6), 83.0))]) is None


def test_a_home_mean_envelope_keeps_any_mean_of_enough_days_below_its_bound() -> None:
    """Days at 130, 134, 133: until midnight any mean of 4 days is those three and the day
    new readings fall on, below 135 while h < 4 x 135 - (134 + 133 + 130) = 143."""
    rule = AverageRule(id="bp", bounds={S: AverageBound(warning=135)}, days=7, min_days=4)
    readings = [bp(at(days=d), x) for d, x in ((0, 130), (1, 134), (2, 133))]
    q = quiet(plan(rule), History(readings))
    assert q is not None
    high = next(limit.high for limit in q.bounds if limit.quantity == S)
    assert 142.99 < high < 143.0
    assert q.accepts([packed(bp(at(days=2, hours=2), 142.9))]) is not None
    assert q.accepts([packed(bp(at(days=2, hours=2), 143.1))]) is None
    assert q.accepts([packed(bp(at(days=2, hours=17), 120))]) is None  # past midnight: a new day


def _pulse(when_days: float, bpm: float, device: str) -> StoredReading:
    return StoredReading(at(days=when_days), device, Metric.HEART_RATE, {HR: bpm})


def test_a_pulse_baseline_per_device_each_with_its_own_band() -> None:
    """A cuff's pulse around 60 and a monitor's around 80 are two baselines: each reading
    is judged against its own device's band, a new device starts a run-in of its own."""
    rule = BaselineRule(
        id="hr", quantity=HR, direction="high", method="ewma", warning=3.0,
        run_in_days=14, min_run_in_readings=7, monitor_days=7, min_deviation=5.0,
    )  # fmt: skip
    rng = random.Random(1)
    readings = [
        _pulse(d / 2 + k * 0.01, base + rng.gauss(0, 2), device)
        for d in range(40)
        for k, (base, device) in enumerate(((60, "cuff-1"), (80, "hr-1")))
    ]
    q = quiet(plan(rule), History(readings))
    assert q is not None
    later = at(days=20, hours=1)
    assert {"cuff-1", "hr-1"} == {limit.device for limit in q.bounds}
    for device, fine, high in (("cuff-1", 61, 75), ("hr-1", 81, 95)):
        ok = StoredReading(later, device, Metric.HEART_RATE, {HR: fine})
        too_high = StoredReading(later, device, Metric.HEART_RATE, {HR: high})
        assert q.accepts([packed(ok)]) is not None, device
        assert q.accepts([packed(too_high)]) is None, device
    new_device = StoredReading(later, "hr-2", Metric.HEART_RATE, {HR: 150})
    assert q.accepts([packed(new_device)]) is not None  # a run-in of its own: not armed
    assert q.until <= at(days=19.5 + 14).timestamp()


def test_a_rule_without_an_envelope_closes_it_only_to_what_it_reads() -> None:
    """MACD has no argument: every weight reading is evaluated, but a blood pressure
    reading, which the MACD rule neither reads nor runs at, is still screened by the
    home-mean rule's envelope. Before, one such rule left the whole patient unscreened."""
    macd = BaselineRule(
        id="weight.macd", quantity=W, direction="high", method="macd", run_in_days=7, warning=0.5
    )
    mean = AverageRule(
        id="bp.home_mean", days=4, min_days=3, bounds={S: AverageBound(warning=135.0)}
    )
    readings = [
        *(weight(at(days=d), 80.0) for d in range(10)),
        *(bp(at(days=d, hours=2), 120.0) for d in range(10)),
    ]
    q = quiet(plan(macd, mean), History(readings))
    assert q is not None
    assert q.accepts([packed(weight(at(days=10), 80.0))]) is None
    assert q.accepts([packed(bp(at(days=9, hours=3), 121.0))]) is not None
