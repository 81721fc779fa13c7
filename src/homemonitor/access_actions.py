"""The actions on patient data: what the access log records and the API metrics count.

One definition for both (:func:`homemonitor.api.access.log_access`, ``log_denied`` and
:meth:`homemonitor.metrics.Metrics.api_access`): every function that logs or counts an
action takes an :data:`AccessAction`, so ``mypy --strict`` refuses an action that is not
listed here, and the metrics create a series for each from the start.

>>> kind("acknowledge_alert"), kind("view_alert")
('write', 'read')
>>> "alert_stream" in ACTIONS
True
"""

from __future__ import annotations

from typing import Literal, get_args

AccessAction = Literal[
    "list_alerts",
    "view_alert",
    "view_readings",
    "view_trend",
    "fhir_observations",  # GET /fhir/r4/Observation?patient=...
    "fhir_flags",  # GET /fhir/r4/Flag?patient=...
    "fhir_export",  # Bulk Data $export: one row per patient in the files
    "view_alert_events",
    "acknowledge_alert",
    "comment_alert",
    "assign_alert",
    "snooze_alert",
    "resolve_alert",
    "view_care_plan",
    "view_care_plan_versions",
    "change_care_plan",
    "rules_backtest",  # the API's preview and `homemonitor rules backtest`
    "check_care_plans",  # `homemonitor registry check`: the patients it names
    "view_patient",  # the web app's Patient page
    "list_patients",  # My patients: each listed patient's latest readings
    "review_access_log",  # the access-log review names the patients it shows
    "export_access_log",  # and its CSV export
    "alert_stream",  # GET /api/v1/alerts/stream: once per stream opened
    "view_pauses",  # a patient's planned absences and admissions
    "add_pause",
    "delete_pause",
]

#: Every action, in the order above.
ACTIONS: tuple[AccessAction, ...] = get_args(AccessAction)

#: The actions that change patient data; every other one only reads it.
WRITES: frozenset[AccessAction] = frozenset(
    {
        "acknowledge_alert",
        "comment_alert",
        "assign_alert",
        "snooze_alert",
        "resolve_alert",
        "change_care_plan",
        "add_pause",
        "delete_pause",
    }
)


def kind(action: str) -> Literal["read", "write"]:
    """Whether ``action`` changes patient data or only reads it (never raises)."""
    return "write" if action in WRITES else "read"
