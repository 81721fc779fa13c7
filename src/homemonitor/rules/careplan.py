"""Care-plan thresholds, and their evaluation over a whole batch with numpy.

A plan sets, per quantity, a ``high`` and/or ``low`` bound with a ``warning`` and/or
``urgent`` level. Each (quantity, direction) pair is a *rule*, named ``systolic.high``,
``spo2.low`` and so on: an alert episode is per patient and rule, and its severity is the
worst level breached. Bounds are inclusive: ``systolic.high.urgent = 180`` fires at 180.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, model_validator

from homemonitor.contract.readings import QUANTITIES, Quantity

Direction = Literal["high", "low"]
Severity = Literal["warning", "urgent"]
SEVERITIES: tuple[Severity, ...] = ("warning", "urgent")  # index + 1 is the breach level


class Levels(BaseModel):
    """The warning and urgent bound of one direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    warning: float | None = None
    urgent: float | None = None


class Bounds(BaseModel):
    """The high and low bounds of one quantity."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    high: Levels | None = None
    low: Levels | None = None

    @model_validator(mode="after")
    def _urgent_beyond_warning(self) -> Bounds:
        high, low = self.high, self.low
        if (
            high
            and high.warning is not None
            and high.urgent is not None
            and (high.urgent < high.warning)
        ):
            msg = "high.urgent must be at or above high.warning"
            raise ValueError(msg)
        if (
            low
            and low.warning is not None
            and low.urgent is not None
            and (low.urgent > low.warning)
        ):
            msg = "low.urgent must be at or below low.warning"
            raise ValueError(msg)
        return self


Thresholds = dict[Quantity, Bounds]


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One (quantity, direction) pair a plan can bound."""

    quantity: Quantity
    direction: Direction

    @property
    def name(self) -> str:
        return f"{self.quantity.value}.{self.direction}"


RULES: tuple[Rule, ...] = tuple(Rule(q, d) for q in QUANTITIES for d in ("high", "low"))
_RULE_COLUMN = np.array([QUANTITIES.index(r.quantity) for r in RULES], dtype=np.intp)
_RULE_SIGN = np.array([1.0 if r.direction == "high" else -1.0 for r in RULES])


@dataclasses.dataclass(frozen=True, slots=True)
class PlanRow:
    """A patient's current plan as the registry cache holds it."""

    patient_id: str
    care_team_id: str
    version: int
    thresholds: Thresholds


class PlanTable:
    """Every patient's current bounds as two (patients + 1) x rules matrices.

    The last row is all NaN: patients without a plan never breach.
    """

    def __init__(self, plans: list[PlanRow]) -> None:
        self.rows: dict[str, int] = {p.patient_id: i for i, p in enumerate(plans)}
        self.plans = plans
        size = (len(plans) + 1, len(RULES))
        self.warning = np.full(size, np.nan)
        self.urgent = np.full(size, np.nan)
        for i, plan in enumerate(plans):
            for j, rule in enumerate(RULES):
                bounds = plan.thresholds.get(rule.quantity)
                levels = getattr(bounds, rule.direction) if bounds else None
                if levels is None:
                    continue
                if levels.warning is not None:
                    self.warning[i, j] = levels.warning
                if levels.urgent is not None:
                    self.urgent[i, j] = levels.urgent

    def row(self, patient_id: str) -> int:
        """The row of ``patient_id``'s bounds: the last (all NaN) when it has no plan."""
        return self.rows.get(patient_id, len(self.plans))

    def threshold(self, row: int, rule: int, level: int) -> float:
        """The bound of ``level`` (1 warning, 2 urgent) that a breach crossed."""
        table = self.urgent if level == 2 else self.warning
        return float(table[row, rule])


def evaluate(
    table: PlanTable, patient_rows: npt.NDArray[np.intp], values: npt.NDArray[np.float64]
) -> npt.NDArray[np.int8]:
    """Breach level per reading and rule: 0 none, 1 warning, 2 urgent.

    ``values`` is readings x quantities (NaN where a reading lacks the quantity), in the
    order of :data:`homemonitor.contract.readings.QUANTITIES`; ``patient_rows`` are rows of
    ``table``. No Python loop per reading: comparisons with NaN are simply false.
    """
    signed = values[:, _RULE_COLUMN] * _RULE_SIGN
    with np.errstate(invalid="ignore"):
        warning = signed >= table.warning[patient_rows] * _RULE_SIGN
        urgent = signed >= table.urgent[patient_rows] * _RULE_SIGN
    return np.where(urgent, 2, np.where(warning, 1, 0)).astype(np.int8)


def values_matrix(readings_values: list[Mapping[Quantity, float]]) -> npt.NDArray[np.float64]:
    """Readings' values as a readings x quantities matrix, NaN where absent."""
    nan = float("nan")
    return np.array(
        [[v.get(q, nan) for q in QUANTITIES] for v in readings_values], dtype=np.float64
    ).reshape(len(readings_values), len(QUANTITIES))
