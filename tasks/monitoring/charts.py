"""Inline SVG pictures for the monitoring page: a column's groups (reference vs batch
shares, paired horizontal bars) and the champion's accuracy against its floor.

Every string from data goes through `esc` (HTML-escaped, and ``/`` too, so a column
named like a URL cannot put ``//`` or ``://`` into the page). No ``xmlns`` attribute
(inline SVG in HTML needs none, and it would be the page's only URL); no external
reference of any kind. Colours are Okabe-Ito blue and orange (told apart with every
common colour-vision deficiency); a flagged group is also marked in words, in bold,
so neither the screen nor a grey print depends on colour alone.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.monitoring.types import ColumnDrift, Group

# FORK: how much of a wide column or a long category list is drawn.
MAX_GROUPS = 25  # groups drawn per column; the rest are summed into one "others" row
MAX_LABEL_CHARS = 18  # characters of a group label drawn left of its bars

REFERENCE_COLOUR = "#0072B2"  # Okabe-Ito blue
BATCH_COLOUR = "#E69F00"  # Okabe-Ito orange
FLAG_BAND = "#F3F3F3"  # a light grey band behind a flagged group (prints as grey)
_SPECIAL = frozenset({"unseen", "missing"})  # drawn after the categories, never sorted in

# Geometry of one group chart (SVG user units; the picture scales to its box).
_WIDTH, _LEGEND, _ROW = 440, 22, 22  # narrow: a phone shrinks it least
_LABEL_X, _BAR_X, _BAR_W = 116, 122, 150
_VALUE_X = _BAR_X + _BAR_W + 6


def esc(value: object) -> str:
    """HTML-escape `value` for text or a quoted attribute; ``/`` becomes ``&#47;``."""
    return html.escape(str(value), quote=True).replace("/", "&#47;")


def cut(text: str, limit: int) -> str:
    """`text` shortened to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def finite(value: float, default: float = 0.0) -> float:
    """`value` as a float when it is a finite number, else `default`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def share(value: float) -> str:
    """A share as a percentage: ``31.2%``, ``<0.1%`` for a non-zero sliver, ``0%``."""
    number = finite(value)
    if number <= 0:
        return "0%"
    return "<0.1%" if number < 0.001 else f"{100 * number:.1f}%"


@dataclass(frozen=True)
class Bar:
    """One drawn row: a group, or the groups summed into "others"."""

    label: str
    reference: float
    batch: float
    flagged: bool


def ordered(column: ColumnDrift) -> list[Group]:
    """The groups in reading order: numeric bins as the reference cut them; categories
    (and label classes) by reference share, largest first, unseen and missing last."""
    groups = list(column.groups)
    if column.kind == "numeric":
        return groups
    named = [g for g in groups if g.label not in _SPECIAL]
    named.sort(key=lambda g: -finite(g.reference))  # stable: ties keep their order
    return named + [g for g in groups if g.label in _SPECIAL]


def capped(groups: Sequence[Group], limit: int = MAX_GROUPS) -> list[Bar]:
    """At most `limit` bars: flagged groups and the largest ones kept in reading order,
    the rest summed into one "others (n groups)" bar (flagged if any of them was)."""
    if len(groups) <= limit:
        return [Bar(g.label, g.reference, g.batch, g.flagged) for g in groups]
    rank = sorted(
        range(len(groups)),
        key=lambda i: (
            not groups[i].flagged,
            -max(finite(groups[i].reference), finite(groups[i].batch)),
        ),
    )
    keep = set(rank[: limit - 1])
    rest = [g for i, g in enumerate(groups) if i not in keep]
    bars = [
        Bar(g.label, g.reference, g.batch, g.flagged) for i, g in enumerate(groups) if i in keep
    ]
    bars.append(
        Bar(
            f"others ({len(rest)} groups)",
            sum(finite(g.reference) for g in rest),
            sum(finite(g.batch) for g in rest),
            any(g.flagged for g in rest),
        )
    )
    return bars


def _legend() -> str:
    return (
        f'<rect x="{_BAR_X}" y="4" width="12" height="12" fill="{REFERENCE_COLOUR}"/>'
        f'<text x="{_BAR_X + 16}" y="14">reference</text>'
        f'<rect x="{_BAR_X + 80}" y="4" width="12" height="12" fill="{BATCH_COLOUR}"/>'
        f'<text x="{_BAR_X + 96}" y="14">batch</text>'
        f'<text x="{_VALUE_X}" y="14" font-weight="700">bold: flagged</text>'
    )


def _row(index: int, bar: Bar, scale: float) -> str:
    y = _LEGEND + index * _ROW
    label = cut(bar.label, MAX_LABEL_CHARS)
    tip = f"<title>{esc(bar.label)}</title>" if label != bar.label else ""
    weight = ' font-weight="700"' if bar.flagged else ""
    parts = []
    if bar.flagged:
        parts.append(f'<rect x="0" y="{y}" width="{_WIDTH}" height="{_ROW}" fill="{FLAG_BAND}"/>')
    parts.append(
        f'<text x="{_LABEL_X}" y="{y + 15}" text-anchor="end"{weight}>{tip}{esc(label)}</text>'
    )
    for offset, value, colour in (
        (3, bar.reference, REFERENCE_COLOUR),
        (11, bar.batch, BATCH_COLOUR),
    ):
        number = finite(value)
        width = 0.0 if number <= 0 else max(1.0, number / scale * _BAR_W)
        parts.append(
            f'<rect x="{_BAR_X}" y="{y + offset}" width="{width:.1f}" height="8" fill="{colour}"/>'
        )
    flag = " flagged" if bar.flagged else ""
    parts.append(
        f'<text x="{_VALUE_X}" y="{y + 15}"{weight}>'
        f"{share(bar.reference)} \u2192 {share(bar.batch)}{flag}</text>"
    )
    return "".join(parts)


def group_chart(column: ColumnDrift) -> str:
    """The column's groups as paired bars (reference above batch), with a legend.

    Returns:
        An inline ``<svg>`` element, or a short note when the column has no groups.
    """
    bars = capped(ordered(column))
    if not bars:
        return '<p class="note">no groups recorded for this column</p>'
    scale = max([0.01, *(finite(b.reference) for b in bars), *(finite(b.batch) for b in bars)])
    height = _LEGEND + len(bars) * _ROW + 4
    rows = "".join(_row(i, b, scale) for i, b in enumerate(bars))
    return (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        'aria-label="share of the reference and of the batch in each group" '
        f'font-size="11" font-family="system-ui,DejaVu Sans,sans-serif" fill="#1b1f24">'
        f"{_legend()}{rows}</svg>"
    )


def accuracy_meter(value: float, floor: float, *, colour: str) -> str:
    """A 0..1 bar of `value`, the floor drawn across it as a dark line and named."""
    width, left, bar_w = 420, 10, 320
    v, f = min(max(finite(value), 0.0), 1.0), min(max(finite(floor), 0.0), 1.0)
    x_floor = left + f * bar_w
    return (
        f'<svg class="meter" viewBox="0 0 {width} 46" role="img" '
        f'aria-label="accuracy {v:.3f} against the floor {f:.3f}" font-size="11" '
        f'font-family="system-ui,DejaVu Sans,sans-serif" fill="#1b1f24">'
        f'<rect x="{left}" y="8" width="{bar_w}" height="16" fill="#eaeef2"/>'
        f'<rect x="{left}" y="8" width="{v * bar_w:.1f}" height="16" fill="{colour}"/>'
        f'<line x1="{x_floor:.1f}" y1="2" x2="{x_floor:.1f}" y2="30" stroke="#1b1f24" '
        f'stroke-width="2"/>'
        f'<text x="{x_floor:.1f}" y="42" text-anchor="middle">floor {f:.3f}</text>'
        f'<text x="{left + bar_w + 8}" y="21">{v:.3f}</text></svg>'
    )
