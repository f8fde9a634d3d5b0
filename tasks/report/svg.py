"""Inline SVG charts of the security report, drawn by hand from the gates' numbers.

Two line charts and a meter, each a few kilobytes of text: the membership attack's
ROC on log-log axes (the blocking limit drawn across it), accuracy against the
perturbation budget eps (attack and certified lines, the floor drawn), and a 0..1
bar against a maximum (extraction fidelity, a backdoor flip).

Threat: the numbers come from the gates' ``metrics`` dicts, which travel through JSON;
`points` keeps only finite numbers (at most `MAX_POINTS` pairs), and every label is
escaped by `esc` (``/`` too). No ``xmlns`` (inline SVG in HTML needs none and it would
be the page's only URL), no external reference, no script. Colours are Okabe-Ito
(blue, vermilion, bluish green): told apart with common colour-vision deficiencies;
each line is also dashed or solid and named in the legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tasks.monitoring.charts import esc, finite

# FORK: how many points of one curve are drawn (the contract caps producers at 64).
MAX_POINTS = 64
ATTACK_COLOUR = "#D55E00"  # Okabe-Ito vermilion: the attack / the attacker's line
CERTIFIED_COLOUR = "#0072B2"  # Okabe-Ito blue: certified accuracy
LIMIT_COLOUR = "#1b1f24"  # the blocking limit: dark, dashed
CHANCE_COLOUR = "#8c959f"  # a random guess
FONT = 'font-size="11" font-family="system-ui,DejaVu Sans,sans-serif" fill="#1b1f24"'

# Geometry of a chart (SVG user units; the picture scales to its box).
_W, _H = 460, 320
_L, _R, _T, _B = 56, 16, 30, 44  # margins: left (ticks), right, top (legend), bottom
_PW, _PH = _W - _L - _R, _H - _T - _B
LOG_MIN = 1e-3  # the lowest rate a log axis shows; smaller values sit on the axis


Point = tuple[float, float]


def points(value: Any) -> list[Point]:
    """A ``_curve`` metric as a list of finite (x, y) pairs, at most `MAX_POINTS`,
    sorted by x; anything else in it (None, text, a malformed pair) is dropped."""
    if not isinstance(value, (list, tuple)):
        return []
    out: list[Point] = []
    for pair in value[: MAX_POINTS * 4]:  # bounded work on a hostile list
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            continue
        x, y = (finite(v, default=math.nan) if not isinstance(v, bool) else math.nan for v in pair)
        if math.isfinite(x) and math.isfinite(y):
            out.append((x, y))
    return sorted(out)[:MAX_POINTS]


def number(value: Any) -> float | None:
    """`value` as a finite float, None when it is absent, a bool, text or not finite."""
    if value is None or isinstance(value, bool):
        return None
    got = finite(value, default=math.nan)
    return got if math.isfinite(got) else None


def _log_x(v: float) -> float:
    v = min(max(v, LOG_MIN), 1.0)
    return _L + (math.log10(v) - math.log10(LOG_MIN)) / -math.log10(LOG_MIN) * _PW


def _log_y(v: float) -> float:
    v = min(max(v, LOG_MIN), 1.0)
    return _T + _PH - (math.log10(v) - math.log10(LOG_MIN)) / -math.log10(LOG_MIN) * _PH


def _path(xy: Sequence[Point]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(xy))


def _frame(label: str, x_title: str, y_title: str, ticks: str, body: str, legend: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{esc(label)}" {FONT}>'
        f'<rect x="{_L}" y="{_T}" width="{_PW}" height="{_PH}" fill="#fff" stroke="#d0d7de"/>'
        f"{ticks}{body}"
        f'<text x="{_L + _PW / 2:.0f}" y="{_H - 8}" text-anchor="middle">{esc(x_title)}</text>'
        f'<text transform="translate(14 {_T + _PH / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_title)}</text>{legend}</svg>'
    )


def _legend(items: Sequence[tuple[str, str, str]]) -> str:
    """A row of (colour, dash pattern or "", name) above the plot."""
    out, x = [], _L
    for colour, dash, name in items:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{x}" y1="14" x2="{x + 22}" y2="14" stroke="{colour}" stroke-width="2"'
            f'{dashed}/><text x="{x + 26}" y="18">{esc(name)}</text>'
        )
        x += 34 + 6 * len(name)
    return "".join(out)


def _log_ticks() -> str:
    out = []
    for k in range(4):  # 1e-3, 1e-2, 1e-1, 1
        v = 10.0 ** (k - 3)
        text = f"{v:g}" if v >= 0.01 else "0.001"
        x, y = _log_x(v), _log_y(v)
        out.append(
            f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_T + _PH}" stroke="#eaeef2"/>'
            f'<line x1="{_L}" y1="{y:.1f}" x2="{_L + _PW}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{x:.1f}" y="{_T + _PH + 14}" text-anchor="middle">{text}</text>'
            f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{text}</text>'
        )
    return "".join(out)


def roc_chart(curve: Sequence[Point], *, max_tpr: float | None, max_advantage: float | None) -> str:
    """The membership attack's ROC (FPR, TPR) on log-log axes, 1e-3..1 each.

    Args:
        curve: The attack's operating points (`points` of ``roc_curve``).
        max_tpr: A blocking maximum on the TPR at 1% FPR, drawn as a dashed mark at
            1% FPR up to that TPR and across; None: not the blocking threshold.
        max_advantage: A blocking maximum on TPR - FPR, drawn as the dashed curve
            TPR = FPR + max (the attack blocks where its ROC crosses above it).
    """
    chance = _path([(_log_x(v), _log_y(v)) for v in (LOG_MIN, 1.0)])
    body = [f'<path d="{chance}" fill="none" stroke="{CHANCE_COLOUR}" stroke-dasharray="2 3"/>']
    legend = [(ATTACK_COLOUR, "", "attack"), (CHANCE_COLOUR, "2 3", "chance")]
    x1 = _log_x(0.01)
    body.append(
        f'<line x1="{x1:.1f}" y1="{_T}" x2="{x1:.1f}" y2="{_T + _PH}" stroke="{CHANCE_COLOUR}"/>'
        f'<text x="{x1 + 3:.1f}" y="{_T + 12}">FPR 1%</text>'
    )
    if max_tpr is not None:
        y = _log_y(max_tpr)
        body.append(
            f'<line x1="{_L}" y1="{y:.1f}" x2="{_L + _PW}" y2="{y:.1f}" stroke="{LIMIT_COLOUR}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        legend.append((LIMIT_COLOUR, "6 4", f"limit: TPR {max_tpr:.3g} at 1% FPR"))
    if max_advantage is not None:
        grid = [LOG_MIN * 10 ** (3 * i / 40) for i in range(41)]
        line = [(f, f + max_advantage) for f in grid if f + max_advantage <= 1.0]
        if line:
            drawn = _path([(_log_x(f), _log_y(t)) for f, t in line])
            body.append(
                f'<path d="{drawn}" fill="none" stroke="{LIMIT_COLOUR}" stroke-width="1.5" '
                f'stroke-dasharray="6 4"/>'
            )
            legend.append((LIMIT_COLOUR, "6 4", f"limit: TPR-FPR {max_advantage:.3g}"))
    if curve:
        xy = [(_log_x(f), _log_y(t)) for f, t in curve]
        body.append(
            f'<path d="{_path(xy)}" fill="none" stroke="{ATTACK_COLOUR}" stroke-width="2"/>'
            + "".join(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{ATTACK_COLOUR}"/>' for x, y in xy
            )
        )
    return _frame(
        "membership attack ROC, log-log",
        "false-positive rate (non-members called members)",
        "true-positive rate",
        _log_ticks(),
        "".join(body),
        _legend(legend),
    )


def accuracy_chart(
    attack: Sequence[Point],
    certified: Sequence[Point],
    *,
    floor: float | None,
    budget: float | None,
    joined: bool = True,
) -> str:
    """Accuracy (0..1) against eps (0..the largest eps drawn): the attack's line and
    the certified line, each point a dot; `floor` (a minimum robust accuracy) dashed
    across, `budget` (the attack eps the gate uses) marked. `joined` False: the attack's
    points are separate measurements (clean, and at the gate's eps), not a curve, and
    are drawn as dots only."""
    eps_max = max([x for x, _ in (*attack, *certified)] + [budget or 0.0, 1e-9])
    eps_max = _nice(eps_max * 1.2)  # room right of the largest eps for its label

    def sx(v: float) -> float:
        return _L + min(max(v, 0.0), eps_max) / eps_max * _PW

    def sy(v: float) -> float:
        return _T + _PH - min(max(v, 0.0), 1.0) * _PH

    ticks = []
    for k in range(6):
        ex, acc = eps_max * k / 5, k / 5
        ticks.append(
            f'<line x1="{sx(ex):.1f}" y1="{_T}" x2="{sx(ex):.1f}" y2="{_T + _PH}" '
            'stroke="#eaeef2"/>'
            f'<line x1="{_L}" y1="{sy(acc):.1f}" x2="{_L + _PW}" y2="{sy(acc):.1f}" '
            f'stroke="#eaeef2"/><text x="{sx(ex):.1f}" y="{_T + _PH + 14}" '
            f'text-anchor="middle">{ex:.3g}</text><text x="{_L - 4}" y="{sy(acc) + 4:.1f}" '
            f'text-anchor="end">{acc:.1f}</text>'
        )
    body, legend = [], []
    for line, colour, dash, name, join in (
        (attack, ATTACK_COLOUR, "", "under attack", joined),
        (certified, CERTIFIED_COLOUR, "8 3", "certified", True),
    ):
        if not line:
            continue
        xy = [(sx(x), sy(y)) for x, y in line]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        if join and len(xy) > 1:
            body.append(
                f'<path d="{_path(xy)}" fill="none" stroke="{colour}" stroke-width="2"{dashed}/>'
            )
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in xy]
        legend.append((colour, dash, name if join else f"{name} (points)"))
    if floor is not None:
        body.append(
            f'<line x1="{_L}" y1="{sy(floor):.1f}" x2="{_L + _PW}" y2="{sy(floor):.1f}" '
            f'stroke="{LIMIT_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        legend.append((LIMIT_COLOUR, "6 4", f"floor {floor:.3g}"))
    if budget is not None:
        x = sx(budget)
        body.append(
            f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_T + _PH}" stroke="{CHANCE_COLOUR}"/>'
            f'<text x="{x + 3:.1f}" y="{_T + 12}">gate eps {budget:.3g}</text>'
        )
    return _frame(
        "accuracy against the perturbation budget",
        "eps (standard deviations of numeric inputs, L-inf)",
        "accuracy",
        "".join(ticks),
        "".join(body),
        _legend(legend),
    )


def _nice(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above `v` (a round axis end)."""
    exp = math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10**exp >= v * (1 - 1e-9):
            return m * 10**exp
    return 10.0 ** (exp + 1)


def meter(value: float, limit: float | None, *, label: str) -> str:
    """A 0..1 bar of `value`; `limit` (a maximum) drawn across it and named; the bar
    is vermilion above the limit, blue at or under it (and the page says it in words)."""
    width, left, bar_w = 420, 10, 320
    v = min(max(value, 0.0), 1.0)
    over = limit is not None and value > limit
    colour = ATTACK_COLOUR if over else CERTIFIED_COLOUR
    mark = ""
    if limit is not None:
        x = left + min(max(limit, 0.0), 1.0) * bar_w
        mark = (
            f'<line x1="{x:.1f}" y1="2" x2="{x:.1f}" y2="30" stroke="{LIMIT_COLOUR}" '
            f'stroke-width="2"/><text x="{x:.1f}" y="42" text-anchor="middle">'
            f"maximum {limit:.3g}</text>"
        )
    return (
        f'<svg class="meter" viewBox="0 0 {width} 46" role="img" aria-label="{esc(label)}" '
        f'{FONT}><rect x="{left}" y="8" width="{bar_w}" height="16" fill="#eaeef2"/>'
        f'<rect x="{left}" y="8" width="{v * bar_w:.1f}" height="16" fill="{colour}"/>{mark}'
        f'<text x="{left + bar_w + 8}" y="21">{value:.3f}</text></svg>'
    )
