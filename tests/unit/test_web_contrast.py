"""The web app's colours meet WCAG 2.1 AA: text at least 4.5:1 against its background."""

from __future__ import annotations

import re
from importlib import resources

import pytest

CSS = (resources.files("homemonitor.web") / "static" / "app.css").read_text()
VARS = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", CSS))

#: (text, background) as app.css pairs them.
PAIRS = [
    ("fg", "bg"),
    ("muted", "bg"),
    ("brand", "bg"),
    ("brand-fg", "brand"),
    ("urgent", "urgent-bg"),
    ("warning", "warning-bg"),
    ("ok", "bg"),
    ("brand", "warning-bg"),  # links and buttons inside a fresh (highlighted) alert
    ("brand", "brand-tint"),  # a period of the Patient page under the pointer
]


def _rule(selector: str) -> dict[str, str]:
    """The declarations app.css gives ``selector`` (its one rule of that exact selector)."""
    body = CSS.split(selector + " {", 1)[1].split("}", 1)[0]
    pairs = (d.split(":", 1) for d in body.split(";") if d.strip())
    return {k.strip(): v.strip() for k, v in pairs}


def test_the_period_control_marks_the_current_one_and_keeps_focus_visible() -> None:
    """The current period is filled (white on brand, a pair above); focus is drawn on top."""
    current = _rule('nav.periods a[aria-current="page"]')
    assert ("var(--brand)", "var(--brand-fg)") == (current["background"], current["color"])
    assert {"z-index": "1"} == _rule("nav.periods a:focus-visible")
    assert "outline: none" not in CSS.split("nav.periods", 1)[1]


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2.1's contrast ratio of two colours."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize(("text", "background"), PAIRS)
def test_text_contrast_is_aa(text: str, background: str) -> None:
    assert contrast(VARS[text], VARS[background]) >= 4.5


def test_urgent_badge_white_on_red() -> None:
    assert contrast("#ffffff", VARS["urgent"]) >= 4.5
