"""The monitoring run's HTML page: one self-contained document people read.

A monitoring run alerts on numbers (gate results, drift per column); this page shows
them as a picture: the verdict, the champion's integrity and the audit chain, every
gate, each column's groups (reference vs batch) with the moved columns first, and the
champion's accuracy on the batch.

Threat: a page built from data can carry data into a browser. Column names and
category labels come from whoever sent the batch, so every string is HTML-escaped
(``/`` included), the page holds no script and no URL of any kind (inline CSS and
inline SVG only), and its Content-Security-Policy lets the browser load nothing even if
a value slipped through. Size: at most `MAX_CHARTS` columns are drawn (each with at
most `charts.MAX_GROUPS` groups) and `MAX_LISTED` more listed, whatever the number
of columns: measured 0.8 MB for 2,000 or 20,000 columns of 40 groups, 1.5 MB when every
name is made of characters that escape to six bytes. The run report keeps every column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.common.files import PUBLIC, write_atomic
from tasks.common.gates import GateResult
from tasks.monitoring.charts import (
    BATCH_COLOUR,
    REFERENCE_COLOUR,
    accuracy_meter,
    cut,
    esc,
    finite,
    group_chart,
)
from tasks.monitoring.types import ColumnDrift, DriftReport, QualityReport

# FORK: how much of a very wide batch the page shows (the run report has every column).
MAX_CHARTS = 60  # columns drawn in full, moved ones first
MAX_LISTED = 500  # further columns listed in a table, one row each
MAX_TEXT = 300  # characters of one fact, measured value or name
MAX_DETAIL = 1000  # characters of one gate's detail

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STATUS = {"healthy": "ok", "alert": "alert", "failed": "fail"}  # status -> badge class
_VERDICTS = (  # the gates a reader looks at first, in words
    ("monitor.integrity", "Integrity", "the champion release verifies (signature, digests)"),
    ("monitor.audit", "Audit", "the audit chain is intact and its anchors match"),
)

_CSS = f"""
*{{box-sizing:border-box}}
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0 auto;padding:16px;max-width:1240px;color:#1b1f24;background:#fff;
-webkit-print-color-adjust:exact;print-color-adjust:exact}}
h1{{font-size:22px;margin:0 0 6px;overflow-wrap:anywhere}}
h2{{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}}
h3{{font-size:15px;margin:0 0 4px;overflow-wrap:anywhere}}section>h3{{margin:18px 0 6px}}
.badge{{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:700;color:#fff;
font-size:14px;vertical-align:middle}}
.ok{{background:#1a7f37}}.alert{{background:#9a3d00}}.fail{{background:#cf222e}}
.none{{background:#57606a}}
dl.facts{{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}}
dl.facts dt{{font-weight:600;color:#57606a}}dl.facts dd{{margin:0;overflow-wrap:anywhere}}
.row{{display:flex;flex-wrap:wrap;gap:12px}}
.card{{flex:1 1 360px;max-width:100%;border:1px solid #d0d7de;border-radius:6px;padding:10px
12px;break-inside:avoid;page-break-inside:avoid}}
.verdict .word{{font-weight:700}}.verdict.passed .word{{color:#1a7f37}}
.verdict.failed{{border-color:#cf222e;border-width:2px}}.verdict.failed .word{{color:#cf222e}}
.column{{flex:1 1 480px}}.column.moved{{border-color:#9a3d00;border-width:2px}}
.tag{{display:inline-block;font-size:12px;padding:0 6px;border-radius:3px;margin-left:6px;
border:1px solid #57606a;color:#57606a;font-weight:600}}
.tag.moved{{border-color:#9a3d00;color:#9a3d00}}
.stats{{font-size:13px;margin:4px 0 0;color:#3d444d}}.stats b{{color:#1b1f24}}
svg.chart,svg.meter{{display:block;width:100%;max-width:500px;height:auto;margin-top:4px}}
.scroll{{overflow-x:auto}}
table{{border-collapse:collapse;width:100%;font-size:13px}}
th,td{{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;
overflow-wrap:break-word}}td.result{{white-space:nowrap}}
th{{background:#f6f8fa}}td.num{{text-align:right;font-variant-numeric:tabular-nums}}
tr.failed td{{background:#ffebe9}}tr.failed td.result{{color:#cf222e;font-weight:700}}
tr.passed td.result{{color:#1a7f37;font-weight:700}}
.key{{display:inline-block;width:12px;height:12px;vertical-align:-1px;margin:0 4px 0 10px}}
.key.ref{{background:{REFERENCE_COLOUR}}}.key.batch{{background:{BATCH_COLOUR}}}
.note{{color:#57606a}}.warn{{color:#cf222e;font-weight:600}}
@media print{{body{{max-width:none;padding:0;font-size:12px}}.card{{flex-basis:45%}}}}
"""


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """`value` as escaped text of at most `limit` characters."""
    return esc(cut(str(value), limit))


def _number(value: Any) -> str:
    """A measured value as short text: floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def _values(values: Mapping[str, Any]) -> str:
    """``key=value, ...`` of a gate's metrics or threshold, escaped and capped."""
    if not values:
        return '<span class="note">-</span>'
    return _text(", ".join(f"{k}={_number(v)}" for k, v in values.items()))


def _fixed(value: float, spec: str = ".3f") -> str:
    """A measured number in `spec`, or ``n/a`` when it is not a finite number."""
    number = finite(value, default=float("nan"))
    return "n/a" if number != number else format(number, spec)


def _p(value: float) -> str:
    number = finite(value, default=float("nan"))
    return _fixed(number, ".1e" if 0 < number < 0.001 else ".3f")


def _header(title: str, status: str, facts: Mapping[str, str]) -> str:
    badge = _STATUS.get(status.lower(), "fail")  # an unknown status looks like a failure
    rows = "".join(f"<dt>{_text(k, 80)}</dt><dd>{_text(v)}</dd>" for k, v in facts.items())
    return (
        f'<header><h1>{_text(title)} <span id="status" class="badge {badge}">'
        f"{_text(status.upper(), 40)}</span></h1>"
        f'<dl class="facts" id="facts">{rows}</dl></header>'
    )


def _verdicts(gates: Sequence[GateResult]) -> str:
    by_name = {g.name: g for g in gates}
    cards = []
    for name, heading, meaning in _VERDICTS:
        gate = by_name.get(name)
        if gate is None:
            state, word, detail = "none", "not run", "no result recorded for this gate"
        else:
            state = "passed" if gate.passed else "failed"
            word, detail = ("passed" if gate.passed else "FAILED"), gate.explain()
        cards.append(
            f'<div class="card verdict {state}" id="verdict-{name.split(".")[-1]}">'
            f'<h3>{heading}: <span class="word">{word}</span></h3>'
            f'<p class="note">{esc(meaning)}</p><p>{_text(detail, MAX_DETAIL)}</p></div>'
        )
    return f'<section><h2>Verdicts</h2><div class="row">{"".join(cards)}</div></section>'


def _gate_table(gates: Sequence[GateResult]) -> str:
    if not gates:
        return '<section><h2>Gates</h2><p class="warn">no gate ran</p></section>'
    rows = "".join(
        f'<tr class="{"passed" if g.passed else "failed"}" data-gate="{_text(g.name, 80)}">'
        f"<td>{_text(g.name, 80)}</td>"
        f'<td class="result">{"passed" if g.passed else "FAILED"}</td>'
        f"<td>{_values(g.metrics)}</td><td>{_values(g.threshold)}</td>"
        f"<td>{_text(g.detail, MAX_DETAIL) or '-'}</td></tr>"
        for g in gates
    )
    return (
        '<section><h2>Gates</h2><div class="scroll"><table id="gates"><thead><tr>'
        "<th>gate</th><th>result</th><th>measured</th><th>threshold</th><th>detail</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _order(columns: Sequence[ColumnDrift]) -> list[ColumnDrift]:
    """Moved columns first; within each part, the largest psi first."""
    return sorted(columns, key=lambda c: (not c.moved, -finite(c.psi)))


def _column_card(index: int, column: ColumnDrift) -> str:
    moved = ' class="tag moved">moved' if column.moved else ' class="tag">not moved'
    return (
        f'<div class="card column{" moved" if column.moved else ""}" id="col-{index}" '
        f'data-moved="{"true" if column.moved else "false"}">'
        f"<h3>{_text(column.column, 120)}"
        f'<span class="tag">{esc(column.kind)}</span><span{moved}</span></h3>'
        f'<p class="stats">psi <b>{_fixed(column.psi)}</b> \u00b7 adjusted p '
        f"<b>{_p(column.p_adjusted)}</b> \u00b7 shift <b>{_fixed(column.shift, '+.3f')}</b><br>"
        f"worst group: <b>{_text(column.worst, 160)}</b></p>"
        f"{group_chart(column)}</div>"
    )


def _column_table(columns: Sequence[ColumnDrift], first: int) -> str:
    rows = "".join(
        f'<tr id="col-{first + i}" data-moved="{"true" if c.moved else "false"}">'
        f"<td>{_text(c.column, 120)}</td><td>{esc(c.kind)}</td>"
        f'<td class="result">{"moved" if c.moved else "-"}</td>'
        f'<td class="num">{_fixed(c.psi)}</td><td class="num">{_p(c.p_adjusted)}</td>'
        f"<td>{_text(c.worst, 160)}</td></tr>"
        for i, c in enumerate(columns)
    )
    return (
        '<div class="scroll"><table id="more-columns"><thead><tr><th>column</th><th>kind</th>'
        "<th>moved</th><th>psi</th><th>adjusted p</th><th>worst group</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _drift(drift: DriftReport | None) -> str:
    if drift is None:
        return (
            '<section id="drift"><h2>Drift</h2><p class="note">No batch was read: drift '
            "and quality were not measured; the verdicts above still hold.</p></section>"
        )
    columns = _order(drift.columns)
    moved = sum(c.moved for c in columns)
    drawn, listed = columns[:MAX_CHARTS], columns[MAX_CHARTS : MAX_CHARTS + MAX_LISTED]
    hidden = columns[MAX_CHARTS + MAX_LISTED :]
    parts = [
        '<section id="drift"><h2>Drift</h2>',
        f'<p id="drift-summary"><b>{moved} of {len(columns)} columns moved</b> '
        f"({drift.rows:,} batch rows against {drift.reference_rows:,} reference rows; "
        f"family-wise false-alarm rate of a clean batch {finite(drift.alpha):.3g}; "
        f"threshold {_values(drift.threshold)}).</p>",
        '<p class="note">Each chart: the share of the reference\'s rows (upper bar,'
        '<span class="key ref"></span>blue) and of the batch\'s rows (lower bar,'
        '<span class="key batch"></span>orange) in each group; numeric bins in order, '
        "categories by reference share. A group in bold on a grey band is flagged: its "
        "change is significant after Holm's correction and larger than the materiality "
        "floor.</p>",
        f'<div class="row" id="columns">{"".join(_column_card(i, c) for i, c in enumerate(drawn))}'
        "</div>",
    ]
    if listed:
        parts.append(f"<h3>{len(listed)} more columns, not drawn</h3>")
        parts.append(_column_table(listed, len(drawn)))
    if hidden:
        parts.append(
            f'<p class="warn" id="hidden">{len(hidden)} more columns '
            f"({sum(c.moved for c in hidden)} moved) are not shown here: the run report "
            "lists every column.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _quality(quality: QualityReport | None) -> str:
    head = '<section id="quality"><h2>Quality</h2>'
    if quality is None:
        return head + '<p class="note">Not measured (no batch).</p></section>'
    floor = finite(quality.floor)
    method = f"<p>How: {_text(quality.method, MAX_DETAIL)}</p>" if quality.method else ""
    if quality.labelled and quality.accuracy is not None:
        value, what = quality.accuracy, "measured accuracy"
        basis = f"on {quality.rows:,} labelled rows"
    elif quality.estimated_accuracy is not None:
        value, what = quality.estimated_accuracy, "estimated accuracy"
        basis = (
            f"on {quality.rows:,} rows without labels: an estimate from the model's own "
            "confidence, not a measurement"
        )
    else:
        return (
            f'{head}<p class="warn">Accuracy neither measured nor estimated.</p>{method}</section>'
        )
    above = finite(value) >= floor
    colour = REFERENCE_COLOUR if above else "#cf222e"
    word = "at or above the floor" if above else "BELOW the floor"
    return (
        f'{head}<p id="accuracy"><b>{what} {finite(value):.3f}</b> {basis}; floor '
        f"{floor:.3f}: <b>{word}</b>.</p>{accuracy_meter(value, floor, colour=colour)}"
        f"{method}</section>"
    )


def render_page(
    *,
    title: str,
    status: str,
    gates: Sequence[GateResult],
    drift: DriftReport | None,
    quality: QualityReport | None,
    facts: Mapping[str, str],
) -> str:
    """The monitoring run as one self-contained HTML document.

    Args:
        title: The page's heading (e.g. "Monitoring of breast_cancer").
        status: The run's status: ``healthy``, ``alert`` or ``failed``.
        gates: Every gate the run produced (``monitor.integrity``, ``monitor.audit``,
            ``monitor.drift``, ``monitor.quality``), in the order they ran.
        drift: The batch against the reference, or None when no batch was read.
        quality: The champion's accuracy on the batch, or None.
        facts: What a reader needs to place the run (model, version, batch, rows,
            time, run id), shown in the given order.

    Returns:
        A complete HTML document: inline CSS and SVG, no script, no URL.
    """
    body = "\n".join(
        (
            _header(title, status, facts),
            _verdicts(gates),
            _quality(quality),
            _gate_table(gates),
            _drift(drift),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(status, 40)}: {_text(title)}</title>\n<style>{_CSS}</style>\n"
        f"</head>\n<body>\n{body}\n"
        '<p class="note">A self-contained page: no script, no external resource.</p>\n'
        "</body>\n</html>\n"
    )


def write_page(directory: Path, run_id: str, html: str, *, mode: int = PUBLIC) -> Path:
    """Write the page as ``<directory>/<UTC timestamp>-<run id, 8 chars>.html`` in one
    rename (a reader never sees half a page).

    The page holds no more than the signed reference profile (column names, shares of
    groups), which is written world-readable too; pass ``mode=PRIVATE`` to keep it to
    the owner. Characters of the run id other than letters, digits, ``-`` and ``_``
    become ``_``, so the name never leaves `directory`.

    Returns:
        The path written.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    short = re.sub(r"[^A-Za-z0-9_-]", "_", run_id[:8]) or "run"
    path = Path(directory) / f"{stamp}-{short}.html"
    write_atomic(path, html, mode=mode)
    return path
