"""Bar charts as inline SVG, written by hand: no plotting dependency, no network, deterministic text.

Why not matplotlib: the report needs only bar charts, and inline SVG keeps the page one text file a
browser draws natively (no data: PNGs to decode), every bar, error bar, reference line and marker carries
its value as an attribute the browser test reads back, and CI installs nothing more (matplotlib brings
numpy, pillow, fonttools, kiwisolver and contourpy).

Every mark a chart draws has a legend entry: each series (its label carries its n), the error bars, each
reference line, the "no rows" marker and the "not measurable" marker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

__all__ = ["NOT_MEASURABLE", "NO_ROWS", "PALETTE", "Chart", "Reference", "bar_chart"]

# Colour-blind-safe (Okabe-Ito), in the order series are given.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT = "font-family:sans-serif;font-size:11px"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP = 52, 10, 26
LABEL_CHAR_PX = 6.0  # width of one 11px sans-serif character, roughly: room for the rotated labels
LABEL_GAP_PX = 18
LEGEND_ROW = 15
TICKS = 4
NO_ROWS = "no rows"  # the marker where a series has no value (no row of that condition)
NOT_MEASURABLE = "not measurable"  # the marker where a series' distribution is below the coverage threshold
REFERENCE_COLOURS = ("#444", "#B00")


@dataclass(frozen=True)
class Reference:
    """A horizontal line across the plot, e.g. chance."""

    value: float
    label: str


@dataclass(frozen=True)
class Chart:
    """What one panel shows. `series` maps a series to one value per category (NaN: no rows there);
    `labels` gives each series' legend text (its n); a series in `not_measurable` draws no bar at all, its
    legend entry says why."""

    figure_id: str
    title: str
    categories: Sequence[str]
    series: Mapping[str, Sequence[float]]
    y_max: float
    y_label: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, Sequence[float]] = field(default_factory=dict)  # series -> +/- per category
    error_label: str = "error bars: +/- 1 SE over rows"
    not_measurable: Mapping[str, str] = field(default_factory=dict)  # series -> reason
    references: Sequence[Reference] = ()
    integer_axis: bool = False  # counts: ticks at whole numbers only
    width: int = 320
    height: int = 220
    label_angle: float = 35


def _number(value: float) -> str:
    return f"{value:.4g}"


def _ticks(chart: Chart) -> tuple[float, list[float]]:
    """The axis top and its tick values (whole numbers for counts)."""
    if not chart.integer_axis:
        return chart.y_max, [chart.y_max * tick / TICKS for tick in range(TICKS + 1)]
    step = max(1, math.ceil(chart.y_max / TICKS))
    top = step * max(1, math.ceil(chart.y_max / step))
    return float(top), [float(value) for value in range(0, top + 1, step)]


def _legend(chart: Chart, names: list[str], has_gaps: bool) -> list[tuple[str, str]]:
    """(swatch kind, text) per legend row: kind is a series colour, 'error', 'ref<i>', 'gap', 'nm' or
    'indent' (the row continues the one above)."""
    rows = []
    for number, name in enumerate(names):
        text = chart.labels.get(name, name)
        if name in chart.not_measurable:
            rows.append(("nm", f"{text}: {NOT_MEASURABLE}"))
            rows.append(("indent", chart.not_measurable[name]))
        else:
            rows.append((PALETTE[number % len(PALETTE)], text))
    if chart.errors:
        rows.append(("error", chart.error_label))
    rows.extend((f"ref{i}", reference.label) for i, reference in enumerate(chart.references))
    if has_gaps:
        rows.append(("gap", f"{NO_ROWS} for this series here"))
    return rows


def _swatch(kind: str, x: float, y: float) -> str:
    if kind == "error":
        return (
            f'<line x1="{x + 5}" x2="{x + 5}" y1="{y}" y2="{y + 10}" stroke="#000"/>'
            f'<line x1="{x + 2}" x2="{x + 8}" y1="{y}" y2="{y}" stroke="#000"/>'
            f'<line x1="{x + 2}" x2="{x + 8}" y1="{y + 10}" y2="{y + 10}" stroke="#000"/>'
        )
    if kind.startswith("ref"):
        colour = REFERENCE_COLOURS[int(kind[3:]) % len(REFERENCE_COLOURS)]
        return (
            f'<line x1="{x}" x2="{x + 10}" y1="{y + 5}" y2="{y + 5}" stroke="{colour}" '
            'stroke-dasharray="3 2"/>'
        )
    if kind == "gap":
        return f'<text x="{x + 5}" y="{y + 9}" text-anchor="middle" fill="#999">&#8211;</text>'
    if kind == "indent":
        return ""
    if kind == "nm":
        return f'<text x="{x + 5}" y="{y + 9}" text-anchor="middle" fill="#B00">&#215;</text>'
    return f'<rect x="{x}" y="{y}" width="10" height="10" fill="{kind}"/>'


def bar_chart(chart: Chart) -> str:
    """Grouped bars: one group per category, one bar per series, each with its error bar."""
    names = list(chart.series)
    figure_id = re.sub(r"[^A-Za-z0-9_-]+", "-", chart.figure_id)
    has_gaps = any(
        value is None or math.isnan(value)
        for name in names
        if name not in chart.not_measurable
        for value in chart.series[name]
    )
    legend = _legend(chart, names, has_gaps)
    width, height = chart.width, chart.height
    total_height = height + LEGEND_ROW * len(legend) + 4
    longest = max((len(category) for category in chart.categories), default=0)
    margin_bottom = LABEL_GAP_PX + longest * LABEL_CHAR_PX * math.sin(math.radians(chart.label_angle))
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - margin_bottom
    group_w = plot_w / max(len(chart.categories), 1)
    bar_w = group_w * 0.8 / max(len(names), 1)
    y_top, ticks = _ticks(chart)
    base = MARGIN_TOP + plot_h

    def y_of(value: float) -> float:
        return base - plot_h * min(max(value / y_top, 0.0), 1.0) if y_top > 0 else base

    parts = [
        f'<svg class="plot" id="{escape(figure_id)}" '
        f'width="{width}" height="{total_height}" viewBox="0 0 {width} {total_height}" '
        f'role="img" aria-label="{escape(chart.title)}" style="{FONT}">',
        f'<text x="{width / 2}" y="15" text-anchor="middle" font-weight="bold">{escape(chart.title)}</text>',
    ]
    for value in ticks:
        y = y_of(value)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text class="tick" x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_number(value)}</text>"
        )
    if chart.y_label:
        parts.append(
            f'<text transform="translate(11,{MARGIN_TOP + plot_h / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(chart.y_label)}</text>'
        )
    for index, category in enumerate(chart.categories):
        x0 = MARGIN_LEFT + group_w * index + group_w * 0.1
        for number, name in enumerate(names):
            x = x0 + bar_w * number
            mid = x + bar_w / 2
            data = f'data-series="{escape(name)}" data-category="{escape(category)}"'
            if name in chart.not_measurable:
                parts.append(
                    f'<text class="not-measurable" {data} x="{mid:.1f}" y="{base - 3}" text-anchor="middle" '
                    f'fill="#B00">&#215;</text>'
                )
                continue
            value = chart.series[name][index]
            if value is None or math.isnan(value):
                parts.append(
                    f'<text class="no-rows" {data} x="{mid:.1f}" y="{base - 3}" text-anchor="middle" '
                    f'fill="#999">&#8211;</text>'
                )
                continue
            top = y_of(value)
            parts.append(
                f'<rect class="bar" {data} data-value="{_number(value)}" x="{x:.1f}" y="{top:.1f}" '
                f'width="{bar_w:.1f}" height="{base - top:.1f}" fill="{PALETTE[number % len(PALETTE)]}">'
                f"<title>{escape(chart.labels.get(name, name))}, {escape(category)}: "
                f"{_number(value)}</title></rect>"
            )
            error = chart.errors.get(name, [math.nan] * len(chart.categories))[index]
            if error is not None and not math.isnan(error):
                low, high = y_of(value - error), y_of(value + error)
                parts.append(
                    f'<g class="errorbar" {data} data-error="{_number(error)}" stroke="#000">'
                    f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{low:.1f}" y2="{high:.1f}"/>'
                    f'<line x1="{mid - 2:.1f}" x2="{mid + 2:.1f}" y1="{low:.1f}" y2="{low:.1f}"/>'
                    f'<line x1="{mid - 2:.1f}" x2="{mid + 2:.1f}" y1="{high:.1f}" y2="{high:.1f}"/></g>'
                )
        label_x = MARGIN_LEFT + group_w * (index + 0.5)
        label_y = base + 12
        parts.append(
            f'<text x="{label_x:.1f}" y="{label_y}" text-anchor="end" '
            f'transform="rotate(-{chart.label_angle} {label_x:.1f} {label_y})">{escape(category)}</text>'
        )
    for number, reference in enumerate(chart.references):
        y = y_of(reference.value)
        colour = REFERENCE_COLOURS[number % len(REFERENCE_COLOURS)]
        parts.append(
            f'<line class="reference" data-value="{_number(reference.value)}" x1="{MARGIN_LEFT}" '
            f'x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-dasharray="4 3">'
            f"<title>{escape(reference.label)}</title></line>"
        )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{base}" y2="{base}" stroke="#333"/>'
    )
    for row, (kind, text) in enumerate(legend):
        y = height + LEGEND_ROW * row
        parts.append(
            f'<g class="legend">{_swatch(kind, 8, y)}<text x="22" y="{y + 9}">{escape(text)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
