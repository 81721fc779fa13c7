"""The clinicians' pages beside the Inbox: Alert, Patient, My patients, Access-log review,
Follow-up. Each module is a router (``router``) listed in :data:`homemonitor.web.PAGES`.

Every page that shows patient data checks and logs the read with
:mod:`homemonitor.api.access`, the API's own functions (another team's id answers as an
unknown one, and the attempt is logged as denied); actions reuse the API's route functions
(:mod:`homemonitor.api.plans`, :mod:`homemonitor.api.backtest`), so a page can do nothing
the API would refuse. Nothing about a patient's readings is put in a URL or in the browser's
storage: pages are ``no-store``, forms post.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from homemonitor.web import charts, i18n

i18n.add(charts.MESSAGES)

#: The quantities' names as a nurse says them, per language.
i18n.add(
    {
        "sv": {
            "q.systolic": "Systoliskt blodtryck",
            "q.diastolic": "Diastoliskt blodtryck",
            "q.mean_arterial": "Medelartärtryck",
            "q.heart_rate": "Puls",
            "q.body_weight": "Vikt",
            "q.spo2": "Syremättnad (SpO2)",
            "m.blood_pressure": "Blodtryck",
            "m.body_weight": "Vikt",
            "m.spo2": "SpO2",
            "m.heart_rate": "Puls",
            "sev.warning": "Varning",
            "sev.urgent": "Brådskande",
            "none": "–",
        },
        "en": {
            "q.systolic": "Systolic blood pressure",
            "q.diastolic": "Diastolic blood pressure",
            "q.mean_arterial": "Mean arterial pressure",
            "q.heart_rate": "Pulse",
            "q.body_weight": "Weight",
            "q.spo2": "Oxygen saturation (SpO2)",
            "m.blood_pressure": "Blood pressure",
            "m.body_weight": "Weight",
            "m.spo2": "SpO2",
            "m.heart_rate": "Pulse",
            "sev.warning": "Warning",
            "sev.urgent": "Urgent",
            "none": "–",
        },
    }
)


def speech(request: Request) -> tuple[Callable[..., str], str]:
    """The request's translator and language (what ``render`` adds to a template)."""
    lang = i18n.language(request)
    return i18n.translator(lang), lang
