"""Charts drawn on the server as inline SVG, each with a table that says the same.

A page never needs JavaScript or an image request to show a trend: :func:`time_series`
draws a quantity's readings over a period with the plan's bounds (lines, and the region
beyond each bound shaded), a rule's window shaded, and every local day without a reading
marked, so a missing day is as visible as a high one. :func:`bars` draws labelled values
(the follow-up's figures). Both return :class:`Html`: a ``<figure>`` whose ``<svg>`` is an
image with a title and a description a screen reader reads out (how many readings, the
range, the latest, the bounds, the days without readings), followed by a ``<details>``
table of every value, for readers and for anyone who wants the numbers. A chart with
nothing to show in its period says so in words instead (:func:`empty`), one way for all.

The text comes from a translator (``t``, a key to text), so the chart speaks the page's
language; :data:`MESSAGES` are the keys, for :func:`homemonitor.web.i18n.add`. Times are
shown in Europe/Stockholm; numbers with a decimal comma in Swedish.

Colour is never the only carrier of meaning: bounds are labelled with their level and
value, questionable readings are hollow, and the table names each reading's level.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from html import escape
from typing import Literal

from homemonitor.web.base import TZ as LOCAL_ZONE
from homemonitor.web.base import local

__all__ = [
    "LOCAL_ZONE",
    "MESSAGES",
    "Bar",
    "Bound",
    "Html",
    "Point",
    "Window",
    "bars",
    "empty",
    "missing_days",
    "number",
    "time_series",
]

#: ``t(key, **values)`` of :func:`homemonitor.web.i18n.translator`.
Translate = Callable[..., str]
Level = Literal["warning", "urgent"]

#: The charts' texts, by language then key (``homemonitor.web.i18n.add(MESSAGES)``).
MESSAGES: dict[str, dict[str, str]] = {
    "sv": {
        "chart.table": "Visa som tabell",
        "chart.time": "Tid",
        "chart.value": "Värde",
        "chart.level": "Nivå",
        "chart.within": "inom gränserna",
        "chart.warning": "varning",
        "chart.urgent": "brådskande",
        "chart.high": "övre",
        "chart.low": "undre",
        "chart.bound": "gräns",
        "chart.questionable": "osäker mätning",
        "chart.no_reading": "ingen mätning",
        "chart.empty": "Inga data under perioden.",
        "chart.readings.one": "{n} mätning",
        "chart.readings.other": "{n} mätningar",
        "chart.range": "lägst {low}, högst {high}, senast {last} ({at})",
        "chart.missing": "Dagar utan mätning: {n} ({days}).",
        "chart.window": "Regelns fönster",
        "chart.bounds": "Gränser",
        "chart.label": "Kategori",
    },
    "en": {
        "chart.table": "Show as a table",
        "chart.time": "Time",
        "chart.value": "Value",
        "chart.level": "Level",
        "chart.within": "within bounds",
        "chart.warning": "warning",
        "chart.urgent": "urgent",
        "chart.high": "upper",
        "chart.low": "lower",
        "chart.bound": "bound",
        "chart.questionable": "questionable reading",
        "chart.no_reading": "no reading",
        "chart.empty": "No data in this period.",
        "chart.readings.one": "{n} reading",
        "chart.readings.other": "{n} readings",
        "chart.range": "lowest {low}, highest {high}, latest {last} ({at})",
        "chart.missing": "Days without a reading: {n} ({days}).",
        "chart.window": "The rule's window",
        "chart.bounds": "Bounds",
        "chart.label": "Category",
    },
}


class Html(str):
    """Markup that is safe to put in a page as it is (Jinja2 honours ``__html__``)."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    """One reading of the quantity; ``questionable``: the device flagged it."""

    at: datetime
    value: float
    questionable: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Bound:
    """A plan bound: ``direction`` high fires at or above ``value``, low at or below."""

    value: float
    level: Level
    direction: Literal["high", "low"]

    def breached_by(self, value: float) -> bool:
        """True when ``value`` is at or beyond this bound (bounds are inclusive)."""
        return value >= self.value if self.direction == "high" else value <= self.value


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """A span of time to shade (the readings a rule looked at); a point when start == end."""

    start: datetime
    end: datetime
    label: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    """One row of a bar chart: a label and one value per series (None: no value)."""

    label: str
    values: tuple[float | None, ...]


# Geometry of a time series, in SVG user units (the SVG scales to its container).
_W, _H = 720, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 150, 14, 34  # right: room for "brådskande 180 mmHg"
_COLOURS = {"warning": "#8a5a00", "urgent": "#b3261e"}  # ≥ 4.5:1 on white (WCAG AA)
_BANDS = {"warning": "#fff4d6", "urgent": "#fde3e1"}


def number(x: float, lang: str) -> str:
    """``x`` to one decimal without a trailing zero, with a decimal comma in Swedish.

    >>> number(84.64, "sv"), number(180.0, "sv"), number(2.35, "en"), number(-0.04, "en")
    ('84,6', '180', '2.4', '0')
    """
    text = f"{x:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    if text == "-0":
        text = "0"
    return text.replace(".", ",") if lang == "sv" else text


def _days(start: datetime, end: datetime) -> Iterator[date]:
    """The local dates of ``[start, end)``: each day any part of which lies in it."""
    day = start.astimezone(LOCAL_ZONE).date()
    last = (end - timedelta(microseconds=1)).astimezone(LOCAL_ZONE).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), LOCAL_ZONE)


def missing_days(points: Sequence[Point], start: datetime, end: datetime) -> list[date]:
    """The local days of ``[start, end)`` with no reading.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    >>> missing_days([Point(t0, 1.0)], t0 - timedelta(days=2), t0 + timedelta(hours=1))
    [datetime.date(2026, 2, 27), datetime.date(2026, 2, 28)]
    """
    measured = {p.at.astimezone(LOCAL_ZONE).date() for p in points}
    return [d for d in _days(start, end) if d not in measured]


def _level(bounds: Sequence[Bound], value: float) -> Level | None:
    levels = {b.level for b in bounds if b.breached_by(value)}
    return "urgent" if "urgent" in levels else "warning" if levels else None


def _ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values spanning ``[low, high]``, at most about ``most`` of them."""
    span = high - low
    raw = span / max(most - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    count = int((high - first) / step + 1e-9) + 1
    return [round(first + i * step, 10) for i in range(count)]


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _attrs(**attributes: object) -> str:
    return " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in attributes.items()
    )


def time_series(
    points: Sequence[Point],
    *,
    start: datetime,
    end: datetime,
    title: str,
    unit: str,
    chart_id: str,
    t: Translate,
    lang: str,
    bounds: Sequence[Bound] = (),
    windows: Sequence[Window] = (),
) -> Html:
    """A quantity's readings over ``[start, end)``, with bounds, windows and missing days.

    ``chart_id`` makes the element ids unique on the page (``aria-labelledby``).
    Readings outside the period are left out; with none in it, the chart is :func:`empty`.
    """
    shown = sorted((p for p in points if start <= p.at < end), key=lambda p: p.at)
    if not shown:
        return empty(chart_id, title, t)
    missing = missing_days(shown, start, end)
    y_low, y_high = _y_range([p.value for p in shown] + [b.value for b in bounds])
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    span = (end - start).total_seconds()

    def x(at: datetime) -> float:
        share = (at - start).total_seconds() / span
        return round(_LEFT + min(max(share, 0.0), 1.0) * plot_w, 1)

    def y(value: float) -> float:
        share = (value - y_low) / (y_high - y_low)
        return round(_TOP + (1 - min(max(share, 0.0), 1.0)) * plot_h, 1)

    def amount(value: float) -> str:
        text = number(value, lang)
        return f"{text}{unit}" if unit[:1] in "%/" else f"{text} {unit}".rstrip()

    svg: list[str] = []
    # The regions beyond each bound, warning first so urgent is drawn over it.
    for bound in sorted(bounds, key=lambda b: b.level == "urgent"):
        top = _TOP if bound.direction == "high" else y(bound.value)
        bottom = y(bound.value) if bound.direction == "high" else _TOP + plot_h
        svg.append(
            f"<rect {_attrs(x=_LEFT, y=top, width=plot_w, height=round(bottom - top, 1))} "
            f'fill="{_BANDS[bound.level]}"/>'
        )
    for day in missing:
        left, right = x(_day_start(day)), x(_day_start(day + timedelta(days=1)))
        svg.append(
            f"<rect {_attrs(x=left, y=_TOP, width=round(right - left, 1), height=plot_h)} "
            f'fill="url(#{chart_id}-hatch)" class="missing"><title>{escape(day.isoformat())}: '
            f"{escape(t('chart.no_reading'))}</title></rect>"
        )
    for window in windows:
        left, right = x(window.start), x(window.end)
        label = escape(window.label or t("chart.window"))
        if right - left < 2:
            svg.append(
                f'<line x1="{left}" x2="{left}" y1="{_TOP}" y2="{_TOP + plot_h}" '
                f'stroke="#1f4e8c" stroke-width="2" class="window"><title>{label}</title></line>'
            )
        else:
            svg.append(
                f"<rect {_attrs(x=left, y=_TOP, width=round(right - left, 1), height=plot_h)} "
                f'fill="#1f4e8c" fill-opacity="0.12" stroke="#1f4e8c" class="window">'
                f"<title>{label}</title></rect>"
            )
        svg.append(
            f'<text x="{left + 3}" y="{_TOP + 12}" font-size="11" fill="#1f4e8c">{label}</text>'
        )
    # Axes: value ticks on the left, local days along the bottom.
    for tick in _ticks(y_low, y_high):
        svg.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(tick)}" y2="{y(tick)}" '
            'stroke="#d0d4da" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y(tick) + 4}" font-size="11" text-anchor="end" '
            f'fill="#333">{escape(number(tick, lang))}</text>'
        )
    days = list(_days(start, end))
    every = max(1, math.ceil(len(days) / 7))
    for i, day in enumerate(days):
        if i % every:
            continue
        left = x(max(_day_start(day), start))
        svg.append(
            f'<line x1="{left}" x2="{left}" y1="{_TOP + plot_h}" y2="{_TOP + plot_h + 4}" '
            'stroke="#333"/>'
            f'<text x="{left}" y="{_TOP + plot_h + 18}" font-size="11" text-anchor="middle" '
            f'fill="#333">{day.strftime("%d/%m")}</text>'
        )
    svg.append(
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#555"/>'
    )
    for bound in bounds:
        name = f"{t('chart.' + bound.level)} {amount(bound.value)}"
        svg.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(bound.value)}" '
            f'y2="{y(bound.value)}" stroke="{_COLOURS[bound.level]}" stroke-width="1.5" '
            f'stroke-dasharray="{"6 3" if bound.level == "warning" else "none"}" class="bound"/>'
            f'<text x="{_LEFT + plot_w + 4}" y="{y(bound.value) + 4}" font-size="11" '
            f'fill="{_COLOURS[bound.level]}">{escape(name)}</text>'
        )
    # The readings: a line through consecutive days, broken where a day has none.
    missing_set = set(missing)
    run: list[str] = []
    previous: date | None = None
    for p in shown:
        day = p.at.astimezone(LOCAL_ZONE).date()
        if previous is not None and any(
            previous + timedelta(days=k) in missing_set for k in range(1, (day - previous).days)
        ):
            svg.append(_polyline(run))
            run = []
        run.append(f"{x(p.at)},{y(p.value)}")
        previous = day
    svg.append(_polyline(run))
    for p in shown:
        level = _level(bounds, p.value)
        colour = _COLOURS[level] if level else "#1a1a1a"
        fill = "#fff" if p.questionable else colour
        svg.append(
            f'<circle cx="{x(p.at)}" cy="{y(p.value)}" r="3.5" fill="{fill}" '
            f'stroke="{colour}" stroke-width="1.5" class="reading"/>'
        )

    # What a screen reader says instead of the picture.
    last = shown[-1]
    summary = (
        t("chart.readings", n=len(shown))
        + ", "
        + t("chart.range").format(
            low=amount(min(p.value for p in shown)),
            high=amount(max(p.value for p in shown)),
            last=amount(last.value),
            at=local(last.at),
        )
        + "."
    )
    if bounds:
        summary += (
            f" {t('chart.bounds')}: "
            + ", ".join(
                f"{t('chart.' + b.direction)} {t('chart.' + b.level)} {amount(b.value)}"
                for b in bounds
            )
            + "."
        )
    if missing:
        summary += " " + t("chart.missing").format(
            n=len(missing), days=", ".join(d.isoformat() for d in missing)
        )
    for window in windows:
        summary += (
            f" {window.label or t('chart.window')}: {local(window.start)}–{local(window.end)}."
        )

    # The table: every reading and every day without one, in time order.
    rows: list[tuple[datetime, str]] = []
    for p in shown:
        level = _level(bounds, p.value)
        status = t("chart." + level) if level else t("chart.within")
        if p.questionable:
            status += f", {t('chart.questionable')}"
        rows.append((p.at, _row(local(p.at), amount(p.value), status)))
    for day in missing:
        rows.append((_day_start(day), _row(day.isoformat(), "–", t("chart.no_reading"))))
    rows.sort(key=lambda r: r[0])
    head = _row(t("chart.time"), t("chart.value"), t("chart.level"), cell="th")
    return _figure(
        chart_id,
        title,
        summary,
        body="".join(svg),
        head=head,
        rows=[r for _, r in rows],
        table_label=t("chart.table"),
        defs=(
            f'<pattern id="{chart_id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f1f1f1"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#9aa0a6" stroke-width="2"/></pattern>'
        ),
    )


def _polyline(run: list[str]) -> str:
    if len(run) < 2:
        return ""
    return (
        f'<polyline points="{" ".join(run)}" fill="none" stroke="#1a1a1a" '
        'stroke-width="1.5" class="trace"/>'
    )


def _row(*cells: str, cell: str = "td") -> str:
    scope = ' scope="col"' if cell == "th" else ""
    inner = "".join(f"<{cell}{scope}>{escape(c)}</{cell}>" for c in cells)
    return f"<tr>{inner}</tr>"


def _figure(
    chart_id: str,
    title: str,
    summary: str,
    *,
    body: str,
    head: str,
    rows: Sequence[str],
    table_label: str,
    height: int = _H,
    defs: str = "",
) -> Html:
    return Html(
        f'<figure class="chart" id="{escape(chart_id)}">'
        f'<figcaption id="{escape(chart_id)}-title">{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {_W} {height}" role="img" focusable="false" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(title)}</title>"
        f'<desc id="{escape(chart_id)}-desc">{escape(summary)}</desc>'
        f"<defs>{defs}</defs>{body}</svg>"
        f'<p class="chart-summary">{escape(summary)}</p>'
        f"<details><summary>{escape(table_label)}</summary>"
        f"<table><caption>{escape(title)}</caption><thead>{head}</thead>"
        f"<tbody>{''.join(rows)}</tbody></table></details></figure>"
    )


def empty(chart_id: str, title: str, t: Translate) -> Html:
    """A chart with nothing to draw in its period: its title and a sentence that says so,
    where a blank picture and an empty table would leave the reader guessing."""
    return Html(
        f'<figure class="chart empty" id="{escape(chart_id)}">'
        f'<figcaption id="{escape(chart_id)}-title">{escape(title)}</figcaption>'
        f'<p class="chart-empty">{escape(t("chart.empty"))}</p></figure>'
    )


def bars(
    rows: Sequence[Bar],
    *,
    series: Sequence[str],
    title: str,
    chart_id: str,
    t: Translate,
    lang: str,
    unit: str = "",
    maximum: float | None = None,
    percent: bool = False,
) -> Html:
    """Horizontal bars, one group per row and one bar per series, each value written out.

    ``percent``: values are shares (0–1) shown as per cent; ``maximum`` fixes the scale's
    end (otherwise the largest value). A row without a value shows "–"; with no value at
    all, the chart is :func:`empty`.
    """

    def shown(value: float | None) -> str:
        if value is None:
            return "–"
        if percent:
            return f"{number(100 * value, lang)} %"
        return f"{number(value, lang)} {unit}".rstrip()

    present = [v for r in rows for v in r.values if v is not None]
    if not present:
        return empty(chart_id, title, t)
    top = maximum if maximum is not None else (1.0 if percent else max(present))
    top = top or 1.0
    label_w, value_w = 200, 90
    bar_h, gap = 14, 10
    group_h = bar_h * len(series) + gap
    height = _TOP + group_h * max(len(rows), 1) + 24
    plot_w = _W - label_w - value_w
    fills = ("#1f4e8c", "#8a5a00", "#2e6b30", "#6b2e6b")
    svg: list[str] = []
    for i, row in enumerate(rows):
        y0 = _TOP + i * group_h
        svg.append(
            f'<text x="{label_w - 8}" y="{y0 + bar_h * len(series) / 2 + 4}" font-size="12" '
            f'text-anchor="end" fill="#1a1a1a">{escape(row.label)}</text>'
        )
        for j, value in enumerate(row.values):
            y1 = y0 + j * bar_h
            width = 0.0 if value is None else round(max(value, 0.0) / top * plot_w, 1)
            svg.append(
                f'<rect x="{label_w}" y="{y1}" width="{width}" height="{bar_h - 2}" '
                f'fill="{fills[j % len(fills)]}" class="bar"/>'
                f'<text x="{label_w + width + 4}" y="{y1 + bar_h - 4}" font-size="11" '
                f'fill="#1a1a1a">{escape(shown(value))}</text>'
            )
    if len(series) > 1:
        x0 = label_w
        for j, name in enumerate(series):
            svg.append(
                f'<rect x="{x0}" y="{height - 16}" width="10" height="10" '
                f'fill="{fills[j % len(fills)]}"/>'
                f'<text x="{x0 + 14}" y="{height - 7}" font-size="11" fill="#1a1a1a">'
                f"{escape(name)}</text>"
            )
            x0 += 24 + 7 * len(name)
    summary = "; ".join(
        f"{r.label}: "
        + ", ".join(
            f"{name} {shown(v)}" if len(series) > 1 else shown(v)
            for name, v in zip(series, r.values, strict=True)
        )
        for r in rows
    )
    head = _row(t("chart.label"), *series, cell="th")
    body_rows = [_row(r.label, *(shown(v) for v in r.values)) for r in rows]
    return _figure(
        chart_id,
        title,
        summary,
        body="".join(svg),
        head=head,
        rows=body_rows,
        table_label=t("chart.table"),
        height=height,
    )
