"""Unit conversion to each quantity's canonical unit (``homemonitor.contract.units``).

Expected values come from the definitions, not from the module's constants: 1 lb is
0.45359237 kg exactly; 1 mmHg is 133.322387415 Pa (the conventional millimetre of
mercury), so 1 kPa is 7.50062 mmHg to the precision any cuff reports.
"""

from __future__ import annotations

import pytest

from homemonitor.contract.readings import Quantity
from homemonitor.contract.units import UnknownUnitError, known_units, to_canonical

MMHG_PER_KPA = 1000 / 133.322387415
PRESSURES = (Quantity.SYSTOLIC, Quantity.DIASTOLIC, Quantity.MEAN_ARTERIAL)

#: (id, quantity, value, unit as sent, value in the canonical unit)
CONVERSIONS: list[tuple[str, Quantity, float, str, float]] = [
    *(
        row
        for q in PRESSURES
        for row in (
            (f"{q.value}-mmHg", q, 120.0, "mmHg", 120.0),
            (f"{q.value}-ucum-mm[Hg]", q, 120.0, "mm[Hg]", 120.0),
            (f"{q.value}-kPa", q, 16.0, "kPa", 16.0 * MMHG_PER_KPA),
        )
    ),
    ("weight-kg", Quantity.BODY_WEIGHT, 80.0, "kg", 80.0),
    ("weight-g", Quantity.BODY_WEIGHT, 80_000.0, "g", 80.0),
    ("weight-lb", Quantity.BODY_WEIGHT, 100.0, "lb", 45.359237),
    ("weight-lbs", Quantity.BODY_WEIGHT, 100.0, "lbs", 45.359237),
    ("weight-ucum-[lb_av]", Quantity.BODY_WEIGHT, 100.0, "[lb_av]", 45.359237),
    ("spo2-percent", Quantity.SPO2, 96.0, "%", 96.0),
    ("rate-/min", Quantity.HEART_RATE, 72.0, "/min", 72.0),
    ("rate-bpm", Quantity.HEART_RATE, 72.0, "bpm", 72.0),
    ("rate-ucum-{beats}/min", Quantity.HEART_RATE, 72.0, "{beats}/min", 72.0),
    ("rate-ucum-{beat}/min", Quantity.HEART_RATE, 72.0, "{beat}/min", 72.0),
    ("rate-beats/min", Quantity.HEART_RATE, 72.0, "beats/min", 72.0),
    ("rate-ucum-1/min", Quantity.HEART_RATE, 72.0, "1/min", 72.0),
]


@pytest.mark.parametrize(
    ("quantity", "value", "unit", "expected"),
    [row[1:] for row in CONVERSIONS],
    ids=[row[0] for row in CONVERSIONS],
)
def test_conversion(quantity: Quantity, value: float, unit: str, expected: float) -> None:
    """Each accepted unit converts to the canonical unit by its defined factor."""
    assert pytest.approx(expected, rel=1e-6) == to_canonical(quantity, value, unit)


def test_every_accepted_unit_has_a_conversion_row() -> None:
    """The table above covers every (quantity, unit) the module accepts, and nothing else."""
    accepted = {(q, u) for q in Quantity for u in known_units(q)}
    assert accepted == {(row[1], row[3].lower()) for row in CONVERSIONS}


@pytest.mark.parametrize("quantity", list(Quantity), ids=[q.value for q in Quantity])
def test_canonical_unit_is_accepted_unchanged(quantity: Quantity) -> None:
    """A value already in the quantity's canonical unit comes out as it went in."""
    assert 61.5 == to_canonical(quantity, 61.5, quantity.unit)


SPELLINGS = [
    ("upper-case", Quantity.SYSTOLIC, 16.0, "KPA", 16.0 * MMHG_PER_KPA),
    ("mixed-case", Quantity.BODY_WEIGHT, 100.0, "Lbs", 45.359237),
    ("ucum-case", Quantity.SYSTOLIC, 120.0, "MM[HG]", 120.0),
    ("surrounding-space", Quantity.DIASTOLIC, 80.0, " mmHg\t", 80.0),
    ("upper-case-rate", Quantity.HEART_RATE, 72.0, "BPM", 72.0),
]


@pytest.mark.parametrize(
    ("quantity", "value", "unit", "expected"),
    [row[1:] for row in SPELLINGS],
    ids=[row[0] for row in SPELLINGS],
)
def test_unit_spelling_ignores_case_and_surrounding_space(
    quantity: Quantity, value: float, unit: str, expected: float
) -> None:
    """Units match case-insensitively and after trimming whitespace."""
    assert pytest.approx(expected, rel=1e-6) == to_canonical(quantity, value, unit)


UNKNOWN = [
    ("pressure-psi", Quantity.SYSTOLIC, "psi"),
    ("pressure-in-a-mass-unit", Quantity.DIASTOLIC, "kg"),
    ("pressure-cmH2O", Quantity.MEAN_ARTERIAL, "cm[H2O]"),
    ("weight-stone", Quantity.BODY_WEIGHT, "st"),
    ("weight-in-a-pressure-unit", Quantity.BODY_WEIGHT, "mmHg"),
    ("spo2-as-a-fraction", Quantity.SPO2, "1"),
    ("spo2-per-mille", Quantity.SPO2, "%0"),
    ("rate-per-second", Quantity.HEART_RATE, "/s"),
    ("rate-hertz", Quantity.HEART_RATE, "Hz"),
    ("empty", Quantity.BODY_WEIGHT, ""),
    ("blank", Quantity.SYSTOLIC, "  "),
]


@pytest.mark.parametrize(
    ("quantity", "unit"), [row[1:] for row in UNKNOWN], ids=[row[0] for row in UNKNOWN]
)
def test_unknown_unit_is_refused_naming_the_known_ones(quantity: Quantity, unit: str) -> None:
    """A unit not defined for the quantity raises UnknownUnitError with what would be known."""
    with pytest.raises(UnknownUnitError) as caught:
        to_canonical(quantity, 1.0, unit)
    known = ", ".join(known_units(quantity))
    assert (
        quantity,
        unit,
        f"unit {unit!r} is not known for {quantity.value} (known: {known})",
    ) == (
        caught.value.quantity,
        caught.value.unit,
        str(caught.value),
    )


def test_unknown_unit_error_is_a_value_error() -> None:
    """Callers that handle ValueError also handle an unknown unit."""
    assert issubclass(UnknownUnitError, ValueError)


KNOWN = [
    (Quantity.SYSTOLIC, ("kpa", "mm[hg]", "mmhg")),
    (Quantity.BODY_WEIGHT, ("[lb_av]", "g", "kg", "lb", "lbs")),
    (Quantity.SPO2, ("%",)),
    (Quantity.HEART_RATE, ("/min", "1/min", "beats/min", "bpm", "{beats}/min", "{beat}/min")),
]


@pytest.mark.parametrize(("quantity", "expected"), KNOWN, ids=[row[0].value for row in KNOWN])
def test_known_units_are_lower_case_and_sorted(
    quantity: Quantity, expected: tuple[str, ...]
) -> None:
    """known_units lists the accepted spellings, lower case, in sorted order."""
    assert expected == known_units(quantity)
