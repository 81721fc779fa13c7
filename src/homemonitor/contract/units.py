"""Unit conversion on the way in: every value is stored in its quantity's canonical unit.

Units are accepted in their everyday spelling and in UCUM (as FHIR and IEEE 11073 use).
"""

from __future__ import annotations

from homemonitor.contract.readings import Quantity

KPA_TO_MMHG = 7.500615758456564
LB_TO_KG = 0.45359237

_PRESSURE = {"mmhg": 1.0, "mm[hg]": 1.0, "kpa": KPA_TO_MMHG}
_MASS = {"kg": 1.0, "g": 0.001, "lb": LB_TO_KG, "lbs": LB_TO_KG, "[lb_av]": LB_TO_KG}
_PERCENT = {"%": 1.0}
_RATE = {
    "/min": 1.0,
    "bpm": 1.0,
    "{beats}/min": 1.0,
    "{beat}/min": 1.0,
    "beats/min": 1.0,
    "1/min": 1.0,
}

_FACTORS: dict[Quantity, dict[str, float]] = {
    Quantity.SYSTOLIC: _PRESSURE,
    Quantity.DIASTOLIC: _PRESSURE,
    Quantity.MEAN_ARTERIAL: _PRESSURE,
    Quantity.BODY_WEIGHT: _MASS,
    Quantity.SPO2: _PERCENT,
    Quantity.HEART_RATE: _RATE,
}


class UnknownUnitError(ValueError):
    """A unit that cannot be converted to the quantity's canonical unit."""

    def __init__(self, quantity: Quantity, unit: str) -> None:
        known = ", ".join(sorted(_FACTORS[quantity]))
        super().__init__(f"unit {unit!r} is not known for {quantity.value} (known: {known})")
        self.quantity = quantity
        self.unit = unit


def to_canonical(quantity: Quantity, value: float, unit: str) -> float:
    """Convert ``value`` given in ``unit`` to ``quantity``'s canonical unit.

    >>> round(to_canonical(Quantity.BODY_WEIGHT, 176.4, "lb"), 2)
    80.01
    >>> round(to_canonical(Quantity.SYSTOLIC, 16.0, "kPa"), 1)
    120.0
    """
    factor = _FACTORS[quantity].get(unit.strip().lower())
    if factor is None:
        raise UnknownUnitError(quantity, unit)
    return value * factor


def known_units(quantity: Quantity) -> tuple[str, ...]:
    """The unit spellings accepted for ``quantity`` (lower case)."""
    return tuple(sorted(_FACTORS[quantity]))
