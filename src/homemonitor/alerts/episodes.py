"""Alert episodes opened or updated by the readings of one batch.

An episode is one open alert per patient and rule: the database's partial unique index
on ``alerts (patient_id, rule) WHERE status <> 'resolved'``, not a lock in a worker, keeps
it one. :func:`open_or_update` evaluates every patient's care plan over the batch's new,
current readings, folds the breaches into one episode per (patient, rule) and upserts
them inside the caller's transaction (:func:`homemonitor.storage.transaction.commit`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import numpy as np

from homemonitor.contract.readings import QUANTITIES
from homemonitor.ingest.pipeline import Candidate
from homemonitor.rules import careplan
from homemonitor.rules.careplan import RULES, PlanTable
from homemonitor.storage.database import Conn

_UPSERT_ALERTS = """
INSERT INTO alerts AS a (patient_id, care_team_id, rule, quantity, direction, severity,
                         plan_version, threshold, opening_device_id, opening_metric,
                         opening_measured_at, opening_value, worst_value, last_measured_at,
                         breach_count)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::int[], $8::float8[], $9::text[], $10::text[], $11::timestamptz[],
                     $12::float8[], $13::float8[], $14::timestamptz[], $15::int[])
ON CONFLICT (patient_id, rule) WHERE status <> 'resolved' DO UPDATE SET
    breach_count = a.breach_count + EXCLUDED.breach_count,
    worst_value = CASE WHEN a.direction = 'high' THEN greatest(a.worst_value, EXCLUDED.worst_value)
                       ELSE least(a.worst_value, EXCLUDED.worst_value) END,
    last_measured_at = greatest(a.last_measured_at, EXCLUDED.last_measured_at),
    severity = CASE WHEN EXCLUDED.severity = 'urgent' THEN 'urgent' ELSE a.severity END,
    threshold = CASE WHEN EXCLUDED.severity = 'urgent' AND a.severity <> 'urgent'
                     THEN EXCLUDED.threshold ELSE a.threshold END,
    updated_at = clock_timestamp()
RETURNING (xmax = 0) AS opened, severity
"""


@dataclasses.dataclass(slots=True)
class _Episode:
    """The breaches of one rule by one patient in a batch, folded into one upsert row."""

    first_row: int  # the breaching candidate that opens it (the first in arrival order)
    rule: int
    level: int
    count: int
    worst: float
    last_measured_at: datetime


async def open_or_update(
    conn: Conn, rows: list[Candidate], plans: PlanTable
) -> tuple[list[str], int]:
    """Open or update one episode per (patient, rule) breached by ``rows``.

    ``rows`` are readings just stored and current (no clock flags), in arrival order.
    Returns the severities of the episodes opened and how many open ones were updated.
    """
    patient_rows = np.fromiter((plans.row(c.patient_id) for c in rows), np.intp, len(rows))
    values = careplan.values_matrix([c.reading.values for c in rows])
    levels = careplan.evaluate(plans, patient_rows, values)
    hits = np.argwhere(levels > 0)  # row-major: in arrival order
    if not len(hits):
        return [], 0
    episodes: dict[tuple[str, int], _Episode] = {}
    for i, j in hits.tolist():
        c, rule = rows[i], RULES[j]
        value = float(values.item(i, QUANTITIES.index(rule.quantity)))
        level = int(levels[i, j])
        ep = episodes.get((c.patient_id, j))
        if ep is None:
            episodes[(c.patient_id, j)] = _Episode(i, j, level, 1, value, c.reading.measured_at)
            continue
        ep.count += 1
        ep.level = max(ep.level, level)
        ep.worst = careplan.worse(rule.direction, ep.worst, value)
        ep.last_measured_at = max(ep.last_measured_at, c.reading.measured_at)
    ordered = sorted(episodes.items(), key=lambda kv: (kv[0][0], RULES[kv[0][1]].name))
    cols: list[list[object]] = [[] for _ in range(15)]
    for (patient_id, j), ep in ordered:
        rule, opening, prow = RULES[j], rows[ep.first_row], patient_rows[ep.first_row]
        plan = plans.plans[prow]
        first_value = float(values.item(ep.first_row, QUANTITIES.index(rule.quantity)))
        for col, value in zip(
            cols,
            (
                patient_id,
                plan.care_team_id,
                rule.name,
                rule.quantity.value,
                rule.direction,
                careplan.SEVERITIES[ep.level - 1],
                plan.version,
                plans.threshold(prow, j, ep.level),
                opening.reading.device_id,
                opening.reading.metric.value,
                opening.reading.measured_at,
                first_value,
                ep.worst,
                ep.last_measured_at,
                ep.count,
            ),
            strict=True,
        ):
            col.append(value)
    returned = await conn.fetch(_UPSERT_ALERTS, *cols)
    opened = [r["severity"] for r in returned if r["opened"]]
    return opened, len(returned) - len(opened)
