"""Charts as hand-written SVG, for report/ and the trainer's loss curve: a few milliseconds a figure, standard library
only.

`bar_chart` draws the report's two shapes: vertical bars (histograms, shares per epoch) and horizontal bars (words,
reasons); `line_chart` draws named series over a shared x axis (losses by step), on a linear or logarithmic value
axis. Value axes have "nice" ticks (1, 2 or 5 times a power of ten) and light grid lines.
Text widths are estimated (0.6 of the font size a character, a full size for wide East Asian characters) to size
the margins, so long labels do not run off the figure. Every piece of text is XML-escaped, and nothing varies but
the inputs (no date, no random id): equal charts are equal bytes.
"""

import math
import re
import unicodedata
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape, quoteattr

WIDTH = 700
BAR_COLOUR = "#4C72B0"
REFERENCE_COLOUR = "#C44E52"
LINE_COLOURS = (BAR_COLOUR, "#DD8452", "#55A868", REFERENCE_COLOUR, "#8172B3", "#937860")
_INK = "#262626"
_GRID = "#E5E5E5"
_FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"
_TITLE, _LABEL, _TICK, _SMALL = 14, 12, 11, 10  # font sizes in px
_PAD = 10  # around the figure
_TICK_LENGTH = 4
_MAX_LABEL_CHARS = 40
_ROTATION = 30  # degrees, for crowded or long category labels
# Characters XML 1.0 does not allow, even escaped (control characters, lone surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text_width(text: str, size: float) -> float:
    """Estimated width in px of `text` at font `size`: 0.6 em a character, 1 em for wide East Asian ones."""
    return size * sum(1.0 if unicodedata.east_asian_width(char) in "WF" else 0.6 for char in text)


def shorten(text: str, limit: int = _MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def nice_ticks(top: float, *, target: int = 5) -> List[float]:
    """Ticks from 0 to at least `top` in steps of 1, 2 or 5 times a power of ten, about `target` of them."""
    if not top > 0:
        return [0.0, 1.0]
    raw = top / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 12) for i in range(count + 1)]


def format_tick(value: float, step: float) -> str:
    """`1,000` for whole numbers (no `.0`), else as many decimals as the step needs."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    decimals = max(1, -math.floor(math.log10(step)))
    return f"{value:,.{decimals}f}"


def _number(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


class _Svg:
    """An SVG document written as text, element by element."""

    def __init__(self, width: int, height: int):
        self._parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                       f'viewBox="0 0 {width} {height}" font-family={quoteattr(_FONT)} fill="{_INK}">',
                       f'<rect width="{width}" height="{height}" fill="#FFFFFF"/>']

    def rect(self, x: float, y: float, width: float, height: float, *, fill: str = BAR_COLOUR) -> None:
        self._parts.append(f'<rect class="bar" x="{_number(x)}" y="{_number(y)}" width="{_number(width)}" '
                           f'height="{_number(height)}" fill="{fill}"/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, *, stroke: str = _INK, dash: str = "") -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self._parts.append(f'<line x1="{_number(x1)}" y1="{_number(y1)}" x2="{_number(x2)}" y2="{_number(y2)}" '
                           f'stroke="{stroke}" stroke-width="1"{dashes}/>')

    def text(self, x: float, y: float, content: str, *, size: int, anchor: str = "start", rotate: int = 0,
             middle: bool = False, halo: bool = False) -> None:
        """Text whose baseline is at y, or whose middle is at y (`middle`); rotated counter-clockwise by `rotate`;
        `halo`: outlined in white, to stay legible over a line."""
        if middle:
            y += 0.35 * size  # the baseline sits about a third of the size below the middle of the glyphs
        transform = f' transform="rotate({-rotate} {_number(x)} {_number(y)})"' if rotate else ""
        outline = ' stroke="#FFFFFF" stroke-width="3" paint-order="stroke"' if halo else ""
        content = escape(_NOT_XML.sub("\ufffd", content))
        self._parts.append(f'<text x="{_number(x)}" y="{_number(y)}" font-size="{size}" '
                           f'text-anchor="{anchor}"{transform}{outline}>{content}</text>')

    def polyline(self, points: Sequence[Tuple[float, float]], *, stroke: str) -> None:
        coordinates = " ".join(f"{_number(x)},{_number(y)}" for x, y in points)
        self._parts.append(f'<polyline class="series" points="{coordinates}" fill="none" stroke="{stroke}" '
                           'stroke-width="1.5"/>')

    def to_bytes(self) -> bytes:
        return ("\n".join(self._parts) + "\n</svg>\n").encode("utf-8")


def _rotated_extent(width: float, size: float) -> Tuple[float, float]:
    """(horizontal, vertical) extent of a text line rotated by _ROTATION degrees."""
    angle = math.radians(_ROTATION)
    return width * math.cos(angle) + size * math.sin(angle), width * math.sin(angle) + size * math.cos(angle)


def bar_chart(values: Sequence[float], labels: Sequence[str], *, title: str, height: int, value_label: str = "",
              category_label: str = "", horizontal: bool = False, note: str = "", title_left: bool = False,
              bar_width: float = 0.8, rotate_labels: bool = False, limit: Optional[float] = None,
              reference: Optional[float] = None, annotations: Optional[Sequence[str]] = None,
              empty_text: str = "no data") -> bytes:
    """SVG bytes of a bar chart: one bar (a `<rect class="bar">`) per value, `empty_text` when there is none.

    Args:
      values: bar lengths (negative ones drawn as 0; ones past `limit` stop at it).
      labels: one per bar, "" for a bar without a tick label; labels longer than 40 characters are shortened.
      title: above the plot, on the left (`title_left`) or centred.
      height: of the figure in px (the width is `WIDTH`).
      value_label, category_label: the axis titles.
      horizontal: bars left to right from a vertical category axis, the first label on top; else bars upwards.
      note: smaller text on the right of the title line (below the title when both do not fit).
      bar_width: of a bar, as a fraction of its slot.
      rotate_labels: vertical bars: tilt the category labels (they are tilted anyway when they would overlap).
      limit: the end of the value axis (else the first nice tick at or past the largest value).
      reference: a dashed line at this value (vertical bars).
      annotations: small text at the end of each bar ("" or None for none).

    Returns:
      UTF-8 SVG with `xmlns`, `viewBox`, `width` and `height`; equal arguments give equal bytes.
    """
    labels = [shorten(label) for label in labels]
    annotations = [text or "" for text in (annotations or [""] * len(values))]
    values = [max(0.0, float(value)) for value in values]
    ticks = nice_ticks(max(values, default=0.0)) if limit is None else nice_ticks(limit)
    top = limit if limit is not None else ticks[-1]
    ticks = [tick for tick in ticks if tick <= top * (1 + 1e-9)]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    tick_texts = [format_tick(tick, step) for tick in ticks]
    tick_width = max(text_width(text, _TICK) for text in tick_texts)
    label_width = max((text_width(label, _TICK) for label in labels), default=0.0)
    note_width = text_width(note, _SMALL)

    # Margins: left of, right of, above and below the plot area.
    right = _PAD + 6
    top_margin = _PAD + _TITLE
    if horizontal:
        left = _PAD + label_width + _TICK_LENGTH + 4 + (_LABEL + 8 if category_label else 0)
        right = max(right, _PAD + text_width(tick_texts[-1], _TICK) / 2,
                    _PAD + max((text_width(" " + text, _SMALL) for text in annotations if text), default=0.0))
        bottom = _TICK_LENGTH + 4 + _TICK + (8 + _LABEL if value_label else 0) + _PAD
        rotated = False
    else:
        left = _PAD + (_LABEL + 8 if value_label else 0) + tick_width + _TICK_LENGTH + 4
        slot = (WIDTH - left - right) / max(1, len(values))
        rotated = bool(labels) and (rotate_labels or label_width > 0.95 * slot)
        if rotated:
            label_height = max(_rotated_extent(text_width(label, _TICK), _TICK)[1] for label in labels)
            first = next((label for label in labels if label), "")
            left = max(left, _PAD + _rotated_extent(text_width(first, _TICK), _TICK)[0] - slot / 2)
        else:
            label_height = _TICK
        bottom = _TICK_LENGTH + 4 + label_height + (8 + _LABEL if category_label else 0) + _PAD
        if any(annotations):
            top_margin += _SMALL + 4
    title_x = _PAD if title_left else (left + WIDTH - right) / 2
    note_on_own_line = note and text_width(title, _TITLE) + note_width + 20 > WIDTH - 2 * _PAD
    if note_on_own_line:
        top_margin += _SMALL + 6
    top_margin += 10
    plot_left, plot_right, plot_top, plot_bottom = left, WIDTH - right, top_margin, height - bottom
    plot_width, plot_height = plot_right - plot_left, plot_bottom - plot_top

    svg = _Svg(WIDTH, height)
    svg.text(title_x, _PAD + _TITLE, title, size=_TITLE, anchor="start" if title_left else "middle")
    if note:
        note_y = _PAD + _TITLE + (_SMALL + 6 if note_on_own_line else 0)
        svg.text(WIDTH - _PAD, note_y, note, size=_SMALL, anchor="end")

    def scale(value: float) -> float:
        """A value's distance from the value axis' origin, in px."""
        return min(value, top) / top * (plot_width if horizontal else plot_height)

    # The value axis: grid lines, ticks and their labels.
    for tick, text in zip(ticks, tick_texts):
        if horizontal:
            x = plot_left + scale(tick)
            svg.line(x, plot_top, x, plot_bottom, stroke=_GRID)
            svg.line(x, plot_bottom, x, plot_bottom + _TICK_LENGTH)
            svg.text(x, plot_bottom + _TICK_LENGTH + 2 + _TICK, text, size=_TICK, anchor="middle")
        else:
            y = plot_bottom - scale(tick)
            svg.line(plot_left, y, plot_right, y, stroke=_GRID)
            svg.line(plot_left - _TICK_LENGTH, y, plot_left, y)
            svg.text(plot_left - _TICK_LENGTH - 3, y, text, size=_TICK, anchor="end", middle=True)

    slot = (plot_height if horizontal else plot_width) / max(1, len(values))
    annotation_marks: List[Tuple[float, float, str]] = []  # drawn last, over the bars and the reference line
    for index, (value, label, annotation) in enumerate(zip(values, labels, annotations)):
        centre = (plot_top if horizontal else plot_left) + (index + 0.5) * slot
        thickness, length = bar_width * slot, scale(value)
        if horizontal:
            svg.rect(plot_left, centre - thickness / 2, length, thickness)
            if label:
                svg.line(plot_left - _TICK_LENGTH, centre, plot_left, centre)
                svg.text(plot_left - _TICK_LENGTH - 3, centre, label, size=_TICK, anchor="end", middle=True)
            if annotation:
                annotation_marks.append((plot_left + length + 3, centre, annotation))
        else:
            svg.rect(centre - thickness / 2, plot_bottom - length, thickness, length)
            if label:
                svg.line(centre, plot_bottom, centre, plot_bottom + _TICK_LENGTH)
                label_y = plot_bottom + _TICK_LENGTH + 2 + _TICK
                svg.text(centre, label_y, label, size=_TICK, anchor="end" if rotated else "middle",
                         rotate=_ROTATION if rotated else 0)
            if annotation:
                annotation_marks.append((centre, plot_bottom - length - 3, annotation))
    if reference is not None and 0 <= reference <= top and not horizontal:
        y = plot_bottom - scale(reference)
        svg.line(plot_left, y, plot_right, y, stroke=REFERENCE_COLOUR, dash="5 3")
    for x, y, annotation in annotation_marks:
        # Beside a horizontal bar, centred on it; above a vertical bar, centred.
        svg.text(x, y, annotation, size=_SMALL, anchor="start" if horizontal else "middle", middle=horizontal,
                 halo=True)
    if not values:
        svg.text((plot_left + plot_right) / 2, (plot_top + plot_bottom) / 2, empty_text, size=_LABEL,
                 anchor="middle", middle=True)

    # Spines: left and bottom only.
    svg.line(plot_left, plot_top, plot_left, plot_bottom)
    svg.line(plot_left, plot_bottom, plot_right, plot_bottom)
    below, beside = (value_label, category_label) if horizontal else (category_label, value_label)
    if below:
        svg.text((plot_left + plot_right) / 2, height - _PAD, below, size=_LABEL, anchor="middle")
    if beside:
        svg.text(_PAD + _LABEL, (plot_top + plot_bottom) / 2, beside, size=_LABEL, anchor="middle", rotate=90)
    return svg.to_bytes()


def log_ticks(low: float, high: float) -> List[float]:
    """Ticks of a logarithmic axis from below `low` to above `high` (both > 0): powers of ten, with 2 and 5 times
    them where the range spans fewer than two decades."""
    first, last = math.floor(math.log10(low) + 1e-9), math.ceil(math.log10(high) - 1e-9)
    last = max(last, first + 1)
    multiples = (1, 2, 5) if last - first < 2 else (1,)
    ticks = [round(m * 10.0 ** power, 12) for power in range(first, last) for m in multiples]
    return ticks + [round(10.0 ** last, 12)]


def _format_log_tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def line_chart(x: Sequence[float], series: Sequence[Tuple[str, Sequence[Optional[float]]]], *, title: str,
               height: int, x_label: str = "", y_label: str = "", log_scale: bool = False,
               empty_text: str = "no data") -> bytes:
    """SVG bytes of a line chart: one line (a `<polyline class="series">`) per series with a point, and a legend.

    Args:
      x: the shared x values (e.g. steps), increasing.
      series: (name, y values) pairs, each as long as `x`; a missing (None), non-finite or (on a log scale)
        non-positive value leaves no point.
      title: above the plot, centred.
      height: of the figure in px (the width is `WIDTH`).
      x_label, y_label: the axis titles.
      log_scale: a logarithmic value axis (ticks at powers of ten).

    Returns:
      UTF-8 SVG with `xmlns`, `viewBox`, `width` and `height`; equal arguments give equal bytes.
    """
    def usable(value: Optional[float]) -> bool:
        return value is not None and math.isfinite(value) and (value > 0 or not log_scale)

    lines = [(name, [(float(a), float(b)) for a, b in zip(x, values) if usable(b)]) for name, values in series]
    lines = [(name, points) for name, points in lines if points]
    values = [point[1] for _, points in lines for point in points]
    if log_scale and values:
        y_ticks = log_ticks(min(values), max(values))
        y_texts = [_format_log_tick(tick) for tick in y_ticks]
    else:
        y_ticks = nice_ticks(max(values, default=0.0))
        y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
        y_texts = [format_tick(tick, y_step) for tick in y_ticks]
    x_ticks = nice_ticks(max((point[0] for _, points in lines for point in points), default=0.0))
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    x_texts = [format_tick(tick, x_step) for tick in x_ticks]

    legend_y = _PAD + _TITLE + 6 + _SMALL
    top_margin = legend_y + 10 if lines else _PAD + _TITLE + 10
    left = _PAD + (_LABEL + 8 if y_label else 0) + max(text_width(text, _TICK) for text in y_texts) + _TICK_LENGTH + 4
    right = _PAD + max(6.0, text_width(x_texts[-1], _TICK) / 2)
    bottom = _TICK_LENGTH + 4 + _TICK + (8 + _LABEL if x_label else 0) + _PAD
    plot_left, plot_right, plot_top, plot_bottom = left, WIDTH - right, top_margin, height - bottom

    def to_x(value: float) -> float:
        return plot_left + value / x_ticks[-1] * (plot_right - plot_left)

    def to_y(value: float) -> float:
        if log_scale and values:
            low, high = math.log10(y_ticks[0]), math.log10(y_ticks[-1])
            share = (math.log10(value) - low) / (high - low)
        else:
            share = value / y_ticks[-1]
        return plot_bottom - share * (plot_bottom - plot_top)

    svg = _Svg(WIDTH, height)
    svg.text((plot_left + plot_right) / 2, _PAD + _TITLE, title, size=_TITLE, anchor="middle")
    for tick, text in zip(y_ticks, y_texts):
        y = to_y(tick)
        svg.line(plot_left, y, plot_right, y, stroke=_GRID)
        svg.line(plot_left - _TICK_LENGTH, y, plot_left, y)
        svg.text(plot_left - _TICK_LENGTH - 3, y, text, size=_TICK, anchor="end", middle=True)
    for tick, text in zip(x_ticks, x_texts):
        x_position = to_x(tick)
        svg.line(x_position, plot_bottom, x_position, plot_bottom + _TICK_LENGTH)
        svg.text(x_position, plot_bottom + _TICK_LENGTH + 2 + _TICK, text, size=_TICK, anchor="middle")
    legend_x = plot_left
    for index, (name, points) in enumerate(lines):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        svg.polyline([(to_x(a), to_y(b)) for a, b in points], stroke=colour)
        svg.line(legend_x, legend_y - 4, legend_x + 16, legend_y - 4, stroke=colour)
        svg.text(legend_x + 20, legend_y, name, size=_SMALL)
        legend_x += 20 + text_width(name, _SMALL) + 14
    if not lines:
        svg.text((plot_left + plot_right) / 2, (plot_top + plot_bottom) / 2, empty_text, size=_LABEL,
                 anchor="middle", middle=True)

    svg.line(plot_left, plot_top, plot_left, plot_bottom)
    svg.line(plot_left, plot_bottom, plot_right, plot_bottom)
    if x_label:
        svg.text((plot_left + plot_right) / 2, height - _PAD, x_label, size=_LABEL, anchor="middle")
    if y_label:
        svg.text(_PAD + _LABEL, (plot_top + plot_bottom) / 2, y_label, size=_LABEL, anchor="middle", rotate=90)
    return svg.to_bytes()
