"""The one plain sentence of an assessment, for the episode, the API and the nurse.

It names the quantity, the value with its unit (``Quantity.unit``), what the rule compared
it with, and the plan's version and bound; never the patient.
"""

from __future__ import annotations

from homemonitor.rules.kinds import Assessment


def sentence(assessment: Assessment) -> str:
    """One plain sentence saying what ``assessment`` found and against which plan rule."""
    raise NotImplementedError
