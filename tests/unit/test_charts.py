"""Server-rendered charts: what the picture shows is also in its description and its table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from homemonitor.web import i18n
from homemonitor.web.charts import MESSAGES, Bar, Bound, Point, Window, bars, time_series

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 2026-03-03 00:00 in Stockholm (CET)
END = START + timedelta(days=7)


i18n.add(MESSAGES)
sv = i18n.translator("sv")
en = i18n.translator("en")


def daily(values: dict[int, float]) -> list[Point]:
    """A reading at 08:00 Stockholm on each day offset given."""
    return [Point(START + timedelta(days=d, hours=8), v) for d, v in values.items()]


def chart(points: list[Point], **extra: object) -> ET.Element:
    html = time_series(
        points,
        start=START,
        end=END,
        title="Systoliskt tryck",
        unit="mmHg",
        chart_id="c1",
        t=extra.pop("t", sv),  # type: ignore[arg-type]
        lang=str(extra.pop("lang", "sv")),
        **extra,  # type: ignore[arg-type]
    )
    return ET.fromstring(html)  # noqa: S314 - our own output, parsed to check its structure


def table(figure: ET.Element) -> list[list[str]]:
    return [[c.text or "" for c in row] for row in figure.iter("tr")]


def description(figure: ET.Element) -> str:
    desc = figure.find(f".//{SVG}desc")
    assert desc is not None
    return desc.text or ""


def test_missing_days_are_drawn_described_and_listed() -> None:
    """Two days without a reading: two hatched bands, named in the description and the table."""
    figure = chart(daily({0: 120, 1: 125, 4: 130, 5: 128, 6: 126}))
    missing = [r for r in figure.iter(f"{SVG}rect") if r.get("class") == "missing"]
    assert 2 == len(missing)
    assert "Dagar utan mätning: 2 (2026-03-05, 2026-03-06)." in description(figure)
    assert [
        ["Tid", "Värde", "Nivå"],
        ["2026-03-03 08:00", "120 mmHg", "inom gränserna"],
        ["2026-03-04 08:00", "125 mmHg", "inom gränserna"],
        ["2026-03-05", "–", "ingen mätning"],
        ["2026-03-06", "–", "ingen mätning"],
        ["2026-03-07 08:00", "130 mmHg", "inom gränserna"],
        ["2026-03-08 08:00", "128 mmHg", "inom gränserna"],
        ["2026-03-09 08:00", "126 mmHg", "inom gränserna"],
    ] == table(figure)
    # The trace is broken across the gap: two lines, not one drawn over the missing days.
    traces = [p for p in figure.iter(f"{SVG}polyline") if p.get("class") == "trace"]
    assert 2 == len(traces)


def test_bounds_are_lines_with_labels_and_readings_beyond_them_are_named() -> None:
    """Each bound is a labelled line; the table says which reading reached which level."""
    bounds = [Bound(160, "warning", "high"), Bound(180, "urgent", "high")]
    figure = chart(daily(dict(enumerate([150, 165, 185, 160, 120, 121, 122.5]))), bounds=bounds)
    lines = [ln for ln in figure.iter(f"{SVG}line") if ln.get("class") == "bound"]
    assert 2 == len(lines)
    labels = {t.text for t in figure.iter(f"{SVG}text")}
    assert {"varning 160 mmHg", "brådskande 180 mmHg"} <= labels
    levels = [row[2] for row in table(figure)[1:]]
    assert [
        "inom gränserna",
        "varning",
        "brådskande",
        "varning",  # bounds are inclusive: 160 fires at 160
        "inom gränserna",
        "inom gränserna",
        "inom gränserna",
    ] == levels
    assert "122,5 mmHg" == table(figure)[-1][1]
    assert "Gränser: övre varning 160 mmHg, övre brådskande 180 mmHg." in description(figure)
    # The urgent line is above the warning line (a smaller y).
    y = {ln.get("stroke-dasharray"): float(ln.get("y1", "0")) for ln in lines}
    assert y["none"] < y["6 3"]


def test_a_rules_window_is_shaded_where_it_lies() -> None:
    """The window's band starts and ends at its times, between the period's edges."""
    window = Window(START + timedelta(days=2), START + timedelta(days=5), "3 dagar")
    figure = chart(daily({d: 80.0 + d for d in range(7)}), windows=[window])
    (band,) = [r for r in figure.iter(f"{SVG}rect") if r.get("class") == "window"]
    left, width = float(band.get("x", "0")), float(band.get("width", "0"))
    plot_left, plot_width = 52, 720 - 52 - 150
    assert abs(left - (plot_left + plot_width * 2 / 7)) < 0.2
    assert abs(width - plot_width * 3 / 7) < 0.2
    assert "3 dagar: 2026-03-05 00:00–2026-03-08 00:00." in description(figure)


def test_a_point_window_is_a_line() -> None:
    """A rule that looks at one reading marks its time with a line, not an empty band."""
    at = START + timedelta(days=3, hours=8)
    figure = chart(daily({3: 190}), windows=[Window(at, at)])
    marks = [m.tag for m in figure.iter() if m.get("class") == "window"]
    assert [f"{SVG}line"] == marks


def test_the_svg_is_an_image_labelled_by_its_title_and_description() -> None:
    """Screen readers get one image with a name and a description, and a table with a caption."""
    figure = chart(daily({0: 120, 6: 140}))
    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    assert ("img", "c1-title c1-desc") == (svg.get("role"), svg.get("aria-labelledby"))
    assert "Systoliskt tryck" == figure.findtext("figcaption")
    assert "Systoliskt tryck" == figure.findtext(".//table/caption")
    assert "Visa som tabell" == figure.findtext(".//details/summary")
    assert description(figure).startswith(
        "2 mätningar, lägst 120 mmHg, högst 140 mmHg, senast 140 mmHg (2026-03-09 08:00)."
    )


def test_english_texts_and_numbers() -> None:
    """In English the texts are English and the decimal mark a point."""
    figure = chart(daily({0: 82.45}), t=en, lang="en")
    assert ["2026-03-03 08:00", "82.5 mmHg", "within bounds"] == table(figure)[1]
    assert "Days without a reading: 6" in description(figure)


def test_times_are_stockholm_time_across_summer_time() -> None:
    """A reading at 12:00 UTC in June is 14:00 in Stockholm; in March 13:00."""
    june = datetime(2026, 6, 1, 12, tzinfo=UTC)
    html = time_series(
        [Point(june, 96.0, questionable=True)],
        start=june - timedelta(hours=12),
        end=june + timedelta(hours=1),
        title="SpO2",
        unit="%",
        chart_id="c2",
        t=sv,
        lang="sv",
    )
    figure = ET.fromstring(html)  # noqa: S314
    assert ["2026-06-01 14:00", "96%", "inom gränserna, osäker mätning"] == table(figure)[1]
    (dot,) = [c for c in figure.iter(f"{SVG}circle") if c.get("class") == "reading"]
    assert "#fff" == dot.get("fill")  # hollow: questionable


def test_one_reading_is_counted_in_the_singular() -> None:
    """One reading is "1 mätning" / "1 reading", never "1 mätningar"."""
    assert description(chart(daily({3: 130}))).startswith("1 mätning, lägst 130 mmHg")
    assert description(chart(daily({3: 130}), t=en, lang="en")).startswith("1 reading, lowest")


def test_no_readings_says_so_and_text_is_escaped() -> None:
    """An empty period is a sentence saying so, not a blank picture; a title is text only."""
    html = time_series(
        [],
        start=START,
        end=END,
        title="<script>x</script>",
        unit="kg",
        chart_id="c3",
        t=sv,
        lang="sv",
    )
    assert "<script>" not in html
    figure = ET.fromstring(html)  # noqa: S314
    assert "<script>x</script>" == figure.findtext("figcaption")
    assert "Inga data under perioden." == figure.findtext("p")
    assert (None, []) == (figure.find(f"{SVG}svg"), table(figure))


def test_bars_write_every_value_and_a_missing_one_as_a_dash() -> None:
    """Shares as per cent per series; a row without a value is a dash, with no bar drawn."""
    rows = [Bar("bp.high", (0.5, 0.25)), Bar("weight.gain_3d", (None, 1.0))]
    html = bars(
        rows,
        series=["Åtgärdbara", "Alla"],
        title="Andel åtgärdbara",
        chart_id="b1",
        t=sv,
        lang="sv",
        percent=True,
    )
    figure = ET.fromstring(html)  # noqa: S314
    assert [
        ["Kategori", "Åtgärdbara", "Alla"],
        ["bp.high", "50 %", "25 %"],
        ["weight.gain_3d", "–", "100 %"],
    ] == table(figure)
    widths = [
        float(r.get("width", "0")) for r in figure.iter(f"{SVG}rect") if r.get("class") == "bar"
    ]
    assert [215.0, 107.5, 0.0, 430.0] == widths
    assert "bp.high: Åtgärdbara 50 %, Alla 25 %" in description(figure)


def test_bars_without_any_value_say_there_is_no_data() -> None:
    """A follow-up chart with no value in its period (no rows, or only gaps) says so in words."""
    for rows in ([], [Bar("v. 48", (None,)), Bar("v. 49", (None,))]):
        html = bars(rows, series=["Andel"], title="Följsamhet", chart_id="c5", t=en, lang="en")
        figure = ET.fromstring(html)  # noqa: S314
        assert ("Följsamhet", "No data in this period.") == (
            figure.findtext("figcaption"),
            figure.findtext("p"),
        )
