"""Bar charts as inline SVG, written by hand: no plotting dependency, no network, deterministic text.

Why not matplotlib: the report needs only bar charts, and inline SVG keeps the page one text file a
browser draws natively (no data: PNGs to decode), every bar carries its value as an attribute the
browser test reads back, and CI installs nothing more (matplotlib brings numpy, pillow, fonttools,
kiwisolver and contourpy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart"]

# Colour-blind-safe (Okabe-Ito), in the order series are given.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT = "font-family:sans-serif;font-size:11px"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP = 52, 10, 26
LABEL_CHAR_PX = 6.0  # width of one 11px sans-serif character, roughly: room for the rotated labels
LABEL_GAP_PX = 18
LEGEND_ROW = 16
TICKS = 4


def _number(value: float) -> str:
    return f"{value:.4g}"


def bar_chart(
    figure_id: str,
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    y_max: float,
    y_label: str = "",
    width: int = 320,
    height: int = 220,
    label_angle: float = 35,
) -> str:
    """Grouped bars: one group per category, one bar per series (NaN: no bar, an `n/a` mark).

    Category labels are rotated by `label_angle` degrees; steeper angles suit many or long labels.
    """
    names = list(series)
    figure_id = re.sub(r"[^A-Za-z0-9_-]+", "-", figure_id)
    legend_height = LEGEND_ROW * len(names) if len(names) > 1 else 0
    total_height = height + legend_height
    longest = max((len(category) for category in categories), default=0)
    margin_bottom = LABEL_GAP_PX + longest * LABEL_CHAR_PX * math.sin(math.radians(label_angle))
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - margin_bottom
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(names), 1)
    parts = [
        f'<svg class="plot" id="{escape(figure_id)}" '
        f'width="{width}" height="{total_height}" viewBox="0 0 {width} {total_height}" '
        f'role="img" aria-label="{escape(title)}" style="{FONT}">',
        f'<text x="{width / 2}" y="15" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in range(TICKS + 1):
        value = y_max * tick / TICKS
        y = MARGIN_TOP + plot_h - plot_h * tick / TICKS
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd"/><text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_number(value)}</text>"
        )
    if y_label:
        parts.append(
            f'<text transform="translate(11,{MARGIN_TOP + plot_h / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
    for index, category in enumerate(categories):
        x0 = MARGIN_LEFT + group_w * index + group_w * 0.1
        for number, name in enumerate(names):
            value = series[name][index]
            x = x0 + bar_w * number
            if value is None or math.isnan(value):
                parts.append(
                    f'<text x="{x + bar_w / 2:.1f}" y="{MARGIN_TOP + plot_h - 3}" text-anchor="middle" '
                    f'fill="#999" font-size="8">n/a</text>'
                )
                continue
            bar_h = plot_h * min(max(value / y_max, 0.0), 1.0) if y_max > 0 else 0.0
            parts.append(
                f'<rect class="bar" data-series="{escape(name)}" data-category="{escape(category)}" '
                f'data-value="{_number(value)}" x="{x:.1f}" y="{MARGIN_TOP + plot_h - bar_h:.1f}" '
                f'width="{bar_w:.1f}" height="{bar_h:.1f}" fill="{PALETTE[number % len(PALETTE)]}">'
                f"<title>{escape(name)}, {escape(category)}: {_number(value)}</title></rect>"
            )
        label_x = MARGIN_LEFT + group_w * (index + 0.5)
        label_y = MARGIN_TOP + plot_h + 12
        parts.append(
            f'<text x="{label_x:.1f}" y="{label_y}" text-anchor="end" '
            f'transform="rotate(-{label_angle} {label_x:.1f} {label_y})">{escape(category)}</text>'
        )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{MARGIN_TOP + plot_h}" '
        f'y2="{MARGIN_TOP + plot_h}" stroke="#333"/>'
    )
    if legend_height:
        for number, name in enumerate(names):
            y = height + LEGEND_ROW * number
            parts.append(
                f'<rect x="{MARGIN_LEFT}" y="{y}" width="10" height="10" '
                f'fill="{PALETTE[number % len(PALETTE)]}"/>'
                f'<text x="{MARGIN_LEFT + 14}" y="{y + 9}">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
