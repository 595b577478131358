"""Charts as inline SVG strings: no script, no network, no plotting library.

The validation report embeds them, and the live service's dashboard can too: every
function takes plain lists and returns one ``<svg>`` element of a fixed size with a
``<title>``. NaN (or None) values are left out of the drawing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
WIDTH, HEIGHT = 640, 300
MARGIN = {"left": 64, "right": 16, "top": 32, "bottom": 62}


def _finite(value) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def _nice(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _scale(low: float, high: float, out_low: float, out_high: float):
    span = (high - low) or 1.0
    return lambda v: out_low + (v - low) / span * (out_high - out_low)


def _range(values: Sequence, include_zero: bool) -> tuple[float, float]:
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return (0.0, 1.0)
    low, high = min(finite), max(finite)
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    pad = 0.05 * (high - low)
    return (low - (pad if low < 0 or not include_zero else 0), high + pad)


def _legend(legend: Sequence[str]) -> list[tuple[str, float, int]]:
    """(name, x, row) of each legend entry: left to right, a new row when one is full."""
    placed, x, row = [], MARGIN["left"] + 8, 0
    for name in legend:
        width = 24 + 6 * len(str(name))
        if x + width > WIDTH and x > MARGIN["left"] + 8:
            x, row = MARGIN["left"] + 8, row + 1
        placed.append((str(name), x, row))
        x += width
    return placed


def _frame(title: str, y_label: str, body: list[str], legend: Sequence[str] = ()) -> str:
    """The chart's frame: title, y label, body, and a legend that adds rows below the
    plot (the picture grows taller rather than overlap the axis)."""
    top = MARGIN["top"]
    placed = _legend(legend)
    rows = max((row for _, _, row in placed), default=0) + 1
    height = HEIGHT + 14 * (rows - 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" class="chart" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
        f'<text transform="translate(14,{top + (HEIGHT - top - MARGIN["bottom"]) / 2}) '
        f'rotate(-90)" text-anchor="middle">{escape(y_label)}</text>',
        *body,
    ]
    for index, (name, x, row) in enumerate(placed):
        y = HEIGHT - 24 + 14 * row
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(y_of, low: float, high: float, log: bool = False) -> list[str]:
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    parts = []
    ticks = [low + (high - low) * i / 4 for i in range(5)]
    for tick in ticks:
        y = y_of(tick)
        shown = 10**tick if log else tick
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_nice(shown)}</text>'
        )
    return parts


def bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str,
    y_label: str = "",
    intervals: Mapping[str, tuple[Sequence, Sequence]] | None = None,
    notes: Sequence[str] | None = None,
) -> str:
    """Grouped bars: one group per category, one bar per series, optional interval
    whiskers per series (``(lows, highs)``) and a short note under each category
    (e.g. "too little data" where a value is missing).

    Examples
    --------
    >>> svg = bar_chart(["a", "b"], {"x": [1.0, 2.0]}, "demo")
    >>> svg.startswith("<svg") and svg.count("<rect") == 3  # the background and two bars
    True
    """
    intervals = intervals or {}
    everything = [v for values in series.values() for v in values]
    for lows, highs in intervals.values():
        everything += list(lows) + list(highs)
    low, high = _range(everything, include_zero=True)
    top, bottom = MARGIN["top"], HEIGHT - MARGIN["bottom"]
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    y_of = _scale(low, high, bottom, top)
    body = _y_axis(y_of, low, high)
    group = (right - left) / max(len(categories), 1)
    width = group * 0.8 / max(len(series), 1)
    zero = y_of(0.0)
    for c, category in enumerate(categories):
        x0 = left + c * group + group * 0.1
        label_y = bottom + 14
        body.append(
            f'<text x="{left + (c + 0.5) * group:.1f}" y="{label_y}" '
            f'text-anchor="middle">{escape(str(category))}</text>'
        )
        if notes and notes[c]:
            body.append(
                f'<text x="{left + (c + 0.5) * group:.1f}" y="{label_y + 12}" '
                f'text-anchor="middle" fill="#a00">{escape(notes[c])}</text>'
            )
        for s, (name, values) in enumerate(series.items()):
            value = values[c]
            if not _finite(value):
                continue
            x = x0 + s * width
            y = y_of(float(value))
            body.append(
                f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{width * 0.9:.1f}" '
                f'height="{abs(zero - y):.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(name)} {escape(str(category))}: {_nice(float(value))}</title>"
                "</rect>"
            )
            if name in intervals:
                lo, hi = intervals[name][0][c], intervals[name][1][c]
                if _finite(lo) and _finite(hi):
                    mid = x + width * 0.45
                    body.append(
                        f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{y_of(lo):.1f}" '
                        f'y2="{y_of(hi):.1f}" stroke="black"/>'
                    )
    body.append(f'<line x1="{left}" x2="{right}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#444"/>')
    return _frame(title, y_label, body, list(series) if len(series) > 1 else ())


def line_chart(
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str,
    y_label: str = "",
    log: bool = False,
) -> str:
    """Lines over equally spaced points labelled by ``x_labels`` (e.g. dates; about
    six are written); ``log`` draws the y axis in log10 (positive values only).

    Examples
    --------
    >>> line_chart(["1", "2", "3"], {"a": [1, None, 3]}, "t").count("<polyline")
    2
    """

    def transform(v):
        if not _finite(v):
            return None
        if log:
            return math.log10(v) if v > 0 else None
        return float(v)

    shown = {name: [transform(v) for v in values] for name, values in series.items()}
    low, high = _range([v for values in shown.values() for v in values], include_zero=False)
    top, bottom = MARGIN["top"], HEIGHT - MARGIN["bottom"]
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    y_of = _scale(low, high, bottom, top)
    n = max(len(x_labels), 1)
    x_of = _scale(0, max(n - 1, 1), left, right)
    body = _y_axis(y_of, low, high, log)
    for i in sorted({int(round(j * (n - 1) / 5)) for j in range(6)} if n > 1 else {0}):
        body.append(
            f'<text x="{x_of(i):.1f}" y="{bottom + 14}" text-anchor="middle">'
            f"{escape(str(x_labels[i]) if x_labels else '')}</text>"
        )
    for s, (name, values) in enumerate(shown.items()):
        color = PALETTE[s % len(PALETTE)]
        # A missing value breaks the line: one polyline per finite run.
        run: list[str] = []
        for i, value in enumerate([*values, None]):
            if value is not None:
                run.append(f"{x_of(i):.1f},{y_of(value):.1f}")
                continue
            if run:
                body.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                    f'points="{" ".join(run)}"><title>{escape(name)}</title></polyline>'
                )
            run = []
    return _frame(title, y_label, body, list(series) if len(series) > 1 else ())


def heatmap(
    matrix: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
) -> str:
    """A matrix as coloured cells (white 0 to dark blue 1), each cell's value written
    in it; rows are "from", columns "to"."""
    size = len(row_labels)
    top, bottom = MARGIN["top"] + 14, HEIGHT - MARGIN["bottom"] + 20
    cell = min((bottom - top) / max(size, 1), (WIDTH / 2) / max(len(column_labels), 1))
    left = (WIDTH - cell * len(column_labels)) / 2
    body = [f'<text x="{left - 30:.1f}" y="{top - 4:.1f}">from \\ to</text>']
    for j, label in enumerate(column_labels):
        body.append(
            f'<text x="{left + (j + 0.5) * cell:.1f}" y="{top - 4:.1f}" '
            f'text-anchor="middle">{escape(str(label))}</text>'
        )
    for i, row in enumerate(matrix):
        y = top + i * cell
        body.append(
            f'<text x="{left - 6:.1f}" y="{y + cell / 2 + 4:.1f}" '
            f'text-anchor="end">{escape(str(row_labels[i]))}</text>'
        )
        for j, value in enumerate(row):
            finite = _finite(value)
            shade = max(0.0, min(1.0, float(value))) if finite else 0.0
            fill = (
                f"rgb({int(255 - 225 * shade)},{int(255 - 180 * shade)},{int(255 - 90 * shade)})"
                if finite
                else "#eee"
            )
            text = f"{float(value):.2f}" if finite else "n/a"
            color = "white" if shade > 0.6 else "black"
            body.append(
                f'<rect x="{left + j * cell:.1f}" y="{y:.1f}" width="{cell:.1f}" '
                f'height="{cell:.1f}" fill="{fill}" stroke="white"/>'
                f'<text x="{left + (j + 0.5) * cell:.1f}" y="{y + cell / 2 + 4:.1f}" '
                f'text-anchor="middle" fill="{color}">{text}</text>'
            )
    return _frame(title, "", body)
