"""Inline SVG charts for the HTML report (:mod:`canny.cli._report_html`): columns over
time with a money axis, and horizontal bars. No scripts, no fonts, no external assets.

Every chart is drawn three times, in a wide, a medium and a narrow frame (a phone's
width), and the page's CSS shows one of them: an SVG scales as a picture, so one drawing
cannot keep 12 px text readable at both 1100 px and 360 px. Each frame fits its own text: tick and
x labels are thinned until they cannot overlap, labels too long for their column are
shortened with an ellipsis (the full text is in the tooltip), and nothing is drawn
outside the view box. Text widths are estimated (``_CHAR_EM`` em per character, generous
for system sans-serif fonts), since the renderer cannot measure them.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["FRAMES", "MEDIUM", "NARROW", "WIDE", "Bar", "Column", "Frame", "bar_chart", "column_chart", "nice_ticks"]

_CHAR_EM = 0.62  # estimated average glyph width, in em, of the chart font
_MANTISSAS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5))


@dataclass(frozen=True, slots=True)
class Frame:
    """One drawing size: view box width, column chart height, the label column of bar
    charts, the font size, and the widest a single column may be."""

    name: str
    width: int
    height: int
    label_w: int
    font: int
    max_column: int


WIDE = Frame("wide", 960, 280, 210, 12, 48)
MEDIUM = Frame("medium", 600, 250, 170, 12, 40)
NARROW = Frame("narrow", 360, 220, 136, 12, 28)
#: The page shows WIDE from 820 px, MEDIUM from 520 px, else NARROW (the text stays
#: within about 0.8 to 1.35 times its size).
FRAMES = (WIDE, MEDIUM, NARROW)


@dataclass(frozen=True, slots=True)
class Column:
    """One period: its first day, its priced cost (``None``: it has attempts but none
    priced, drawn as a grey mark on the baseline) and its tooltip."""

    start: date
    value: Decimal | None
    tip: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One horizontal bar: label, length (any unit), the text shown after it, tooltip, CSS class."""

    label: str
    value: float
    shown: str
    tip: str
    css: str = "bar"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _text_w(text: str, font: int) -> float:
    return len(text) * font * _CHAR_EM


def _fit(text: str, room: float, font: int) -> str:
    """``text`` shortened with an ellipsis to fit ``room`` units."""
    most = max(int(room / (font * _CHAR_EM)), 2)
    return text if len(text) <= most else text[: most - 1] + "…"


def _svg_open(frame: Frame, height: float, title: str) -> str:
    return (
        f'<svg class="{frame.name}" viewBox="0 0 {frame.width} {height:.0f}" role="img" '
        f'aria-label="{_e(title)}" font-size="{frame.font}">'
    )


# --- the money axis ---------------------------------------------------------------------


def nice_ticks(top: Decimal, most: int = 5) -> list[Decimal]:
    """Round axis values from 0 to at least ``top``: 3 to ``most`` equal steps of 1, 2, 2.5
    or 5 × 10^k (so 4 to 6 values with the default). ``top <= 0`` gives ``[0, 1]``."""
    if top <= 0:
        return [Decimal(0), Decimal(1)]
    exponent = (top / most).adjusted()
    for power in (exponent, exponent + 1):
        for mantissa in _MANTISSAS:
            step = mantissa.scaleb(power)
            count = math.ceil(top / step)
            if count <= most:
                return [step * i for i in range(count + 1)]
    raise AssertionError("unreachable: 10^(k+1) always fits")  # pragma: no cover


def tick_label(value: Decimal, step: Decimal) -> str:
    """``$200``, ``$2.50``, ``$0.0025``: as many decimals as the step needs (cents once
    there are any), with thousands separators."""
    places = max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
    if places == 1:
        places = 2
    text = f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN):,f}"
    return "$" + text


# --- the time axis ----------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _day_text(day: date) -> str:
    return f"{_MONTHS[day.month - 1]} {day.day}"


def _month_text(day: date) -> str:
    return str(day.year) if day.month == 1 else _MONTHS[day.month - 1]


#: Ways to pick labelled periods, densest first: (applies to units, picks (index, first
#: day, previous first day), label text).
_Pick = Callable[[int, date, date | None], bool]


def _new_month(i: int, day: date, before: date | None) -> bool:
    return (before is not None and before.month != day.month) or (i == 0 and day.day == 1)


def _months_every(n: int) -> _Pick:
    return lambda i, day, before: _new_month(i, day, before) and (day.month - 1) % n == 0


_PLANS: tuple[tuple[frozenset[str], _Pick, Callable[[date], str]], ...] = (
    (frozenset({"day", "week"}), lambda i, d, b: True, _day_text),
    (frozenset({"day", "week"}), lambda i, d, b: i % 2 == 0, _day_text),
    (frozenset({"day"}), lambda i, d, b: d.weekday() == 0, _day_text),
    (frozenset({"day"}), lambda i, d, b: d.day in (1, 15), _day_text),
    (frozenset({"month"}), lambda i, d, b: True, _month_text),
    (frozenset({"day", "week", "month"}), _months_every(1), _month_text),
    (frozenset({"day", "week", "month"}), _months_every(2), _month_text),
    (frozenset({"day", "week", "month"}), _months_every(3), _month_text),
    (frozenset({"day", "week", "month"}), _months_every(6), _month_text),
    (frozenset({"day", "week", "month"}), _months_every(12), _month_text),
)


def x_labels(starts: Sequence[date], unit: str, centres: Sequence[float], font: int) -> list[tuple[int, str]]:
    """(index, text) of the periods to label: the densest plan whose labels, centred on
    their columns, leave at least one label's width between neighbours."""
    for units, pick, text in _PLANS:
        if unit not in units:
            continue
        chosen = [(i, text(day)) for i, day in enumerate(starts) if pick(i, day, starts[i - 1] if i else None)]
        if not chosen:
            continue
        widest = max(_text_w(t, font) for _, t in chosen)
        gaps = [centres[b] - centres[a] for (a, _), (b, _) in itertools.pairwise(chosen)]
        if all(gap >= widest + font for gap in gaps):
            return chosen
    return [(0, _day_text(starts[0]))] if starts else []


# --- charts -----------------------------------------------------------------------------


def column_chart(columns: Sequence[Column], unit: str, title: str, frame: Frame) -> str:
    """Columns per period on a money axis with 4-6 round ticks and gridlines. A column is
    never wider than ``frame.max_column`` (one day is a slim centred column, not a block)."""
    top_value = max((c.value for c in columns if c.value is not None), default=Decimal(0))
    ticks = nice_ticks(top_value)
    step = ticks[1] - ticks[0]
    labels = [tick_label(t, step) for t in ticks]
    font, height = frame.font, frame.height
    left = max(_text_w(s, font) for s in labels) + 12
    right, top, bottom = 14, 10, 26
    plot_w, plot_h = frame.width - left - right, height - top - bottom
    base = top + plot_h
    parts = [_svg_open(frame, height, title)]
    for tick, label in zip(ticks, labels, strict=True):
        y = base - float(tick / ticks[-1]) * plot_h
        css = "axis" if tick == 0 else "grid"
        parts.append(f'<line class="{css}" x1="{left:.1f}" y1="{y:.1f}" x2="{frame.width - right}" y2="{y:.1f}"/>')
        parts.append(f'<text class="yl" x="{left - 6:.1f}" y="{y + font / 3:.1f}" text-anchor="end">{_e(label)}</text>')
    slot = plot_w / max(len(columns), 1)
    width = min(slot * 0.8 if slot >= 3 else slot, frame.max_column)
    centres = [left + (i + 0.5) * slot for i in range(len(columns))]
    for centre, column in zip(centres, columns, strict=True):
        x = centre - width / 2
        if column.value is None:
            shape = f'class="bar unpriced" x="{x:.2f}" y="{base - 3:.1f}" width="{width:.2f}" height="3"'
        elif column.value > 0:
            h = float(column.value / ticks[-1]) * plot_h
            shape = f'class="bar" x="{x:.2f}" y="{base - h:.2f}" width="{width:.2f}" height="{h:.2f}"'
        else:
            continue
        parts.append(f"<rect {shape}><title>{_e(column.tip)}</title></rect>")
    for i, text in x_labels([c.start for c in columns], unit, centres, font):
        half = _text_w(text, font) / 2
        x = min(max(centres[i], half + 2), frame.width - half - 2)
        parts.append(f'<line class="axis" x1="{centres[i]:.1f}" y1="{base}" x2="{centres[i]:.1f}" y2="{base + 4}"/>')
        parts.append(f'<text class="xl" x="{x:.1f}" y="{base + font + 6}" text-anchor="middle">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(bars: Sequence[Bar], title: str, frame: Frame) -> str:
    """Horizontal bars scaled to the longest, each with its label (shortened to the label
    column) and its shown value after it."""
    font, row_h = frame.font, frame.font * 2
    height = row_h * len(bars) + 8
    value_w = max(_text_w(b.shown, font) for b in bars) + 8
    room = frame.width - frame.label_w - value_w - 4
    longest = max((b.value for b in bars), default=0.0) or 1.0
    parts = [_svg_open(frame, height, title)]
    for i, item in enumerate(bars):
        y = 4 + i * row_h
        length = item.value / longest * room
        label = _fit(item.label, frame.label_w - 10, font)
        parts.append(f"<g><title>{_e(item.tip)}</title>")
        parts.append(f'<text x="{frame.label_w - 8}" y="{y + row_h * 0.68:.1f}" text-anchor="end">{_e(label)}</text>')
        parts.append(
            f'<rect class="{item.css}" x="{frame.label_w}" y="{y + 4}" width="{length:.2f}" height="{row_h - 8}"/>'
        )
        value_x = frame.label_w + length + 6
        parts.append(f'<text x="{value_x:.1f}" y="{y + row_h * 0.68:.1f}">{_e(item.shown)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
