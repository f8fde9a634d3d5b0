"""A self-contained HTML page of a GX validation result, readable offline.

GX Data Docs load their CSS and JavaScript from CDNs: without internet their index
page is blank. This page is built from the same (scrubbed) result JSON, with inline
CSS only: no script, no external URL, and a Content-Security-Policy that lets the
browser load nothing even if a value slipped through. Every value shown is
HTML-escaped and capped (at most 5 unexpected values, each cut to 40 characters),
although `tasks.checks.expectations.scrub` already removes every cell value.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from string import Template
from typing import Any

MAX_VALUES = 5  # unexpected values shown per expectation
MAX_VALUE_CHARS = 40  # characters of one unexpected value
MAX_ITEMS = 8  # items of a list argument or observed list
MAX_TEXT = 160  # characters of one argument or observed value
# Arguments that say nothing about the check itself (or are shown in their own column).
_HIDDEN_KWARGS = frozenset(
    {"batch_id", "column", "result_format", "include_config", "catch_exceptions", "meta"}
)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:700;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0}
dl.facts dt{font-weight:600;color:#57606a}dl.facts dd{margin:0;word-break:break-all}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
table.stats{width:auto}table.stats td{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#ffebe9}td.status{font-weight:700;white-space:nowrap}
td.type code{white-space:nowrap;word-break:normal}
tr.failed td.status{color:#cf222e}tr.passed td.status{color:#1a7f37}
code{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;word-break:break-word}
ul.args{margin:0;padding-left:16px}.note{color:#57606a}.warn{color:#cf222e;font-weight:600}
"""

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Validation $verdict: $suite</title>
<style>$css</style>
</head>
<body>
<h1>Validation of $suite <span id="verdict" class="verdict $verdict_class">$verdict</span></h1>
<dl class="facts" id="facts">
<dt>Suite</dt><dd id="suite">$suite</dd>
<dt>Dataset</dt><dd id="dataset">$dataset</dd>
$run_row<dt>Overall success</dt><dd id="success">$success</dd>
<dt>Great Expectations</dt><dd>$gx_version</dd>
</dl>
$problem
<h2>Statistics</h2>
<table class="stats" id="statistics">
<tr><th>evaluated</th><td id="evaluated">$evaluated</td></tr>
<tr><th>successful</th><td id="successful">$successful</td></tr>
<tr><th>unsuccessful</th><td id="unsuccessful">$unsuccessful</td></tr>
<tr><th>success percent</th><td>$percent</td></tr>
$expected_row</table>
<h2>Expectations ($evaluated, failures first)</h2>
<table id="expectations">
<thead><tr><th>#</th><th>status</th><th>expectation</th><th>column</th>
<th>key arguments</th><th>observed</th></tr></thead>
<tbody>
$rows</tbody>
</table>
<p class="note">Built from validation_result.json. This page is self-contained: no script,
no external resource. Cell values are not stored in the evidence, so unexpected values
are counted, not listed.</p>
</body>
</html>
"""
)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _value(value: Any, limit: int = MAX_TEXT) -> str:
    """One value as short plain text (not yet escaped)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, list | tuple):
        shown = ", ".join(_value(v, limit) for v in value[:MAX_ITEMS])
        more = f", \u2026 (+{len(value) - MAX_ITEMS} more)" if len(value) > MAX_ITEMS else ""
        return _cut(f"[{shown}{more}]", limit)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = str(value)
    return _cut(text, limit)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _column(kwargs: Mapping[str, Any]) -> str:
    if "column" in kwargs:
        return str(kwargs["column"])
    pair = [str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs]
    if pair:
        return ", ".join(pair)
    if isinstance(kwargs.get("column_list"), list):
        return _value(kwargs["column_list"])
    return "table"


def _arguments(kwargs: Mapping[str, Any]) -> str:
    items = [
        f"<li><code>{_esc(k)}={_esc(_value(v))}</code></li>"
        for k, v in sorted(kwargs.items())
        if k not in _HIDDEN_KWARGS and k not in ("column_A", "column_B")
    ]
    return f'<ul class="args">{"".join(items)}</ul>' if items else ""


def _raised(outcome: Mapping[str, Any]) -> bool:
    info = _mapping(outcome.get("exception_info"))
    entries = [info, *(v for v in info.values() if isinstance(v, Mapping))]
    return any(e.get("raised_exception") is True for e in entries)


def _observed(outcome: Mapping[str, Any]) -> str:
    result = _mapping(outcome.get("result"))
    parts = []
    if _raised(outcome):
        parts.append('<span class="warn">raised an exception (details scrubbed)</span>')
    if "observed_value" in result:
        parts.append(f"<code>{_esc(_value(result['observed_value']))}</code>")
    if "unexpected_count" in result:
        text = f"{_esc(_value(result['unexpected_count']))} unexpected"
        if isinstance(result.get("element_count"), int):
            text += f" of {result['element_count']}"
        percent = result.get("unexpected_percent")
        if isinstance(percent, int | float):
            text += f" ({percent:.3g}%)"
        parts.append(text)
    if result.get("missing_count"):
        parts.append(f"{_esc(_value(result['missing_count']))} missing")
    values = result.get("partial_unexpected_list")
    if isinstance(values, list) and values:
        shown = ", ".join(
            f"<code>{_esc(_value(v, MAX_VALUE_CHARS))}</code>" for v in values[:MAX_VALUES]
        )
        more = f" \u2026 (+{len(values) - MAX_VALUES} more)" if len(values) > MAX_VALUES else ""
        parts.append(f"e.g. {shown}{more}")
    return "<br>".join(parts) if parts else '<span class="note">-</span>'


def _row(number: int, outcome: Mapping[str, Any]) -> str:
    config = _mapping(outcome.get("expectation_config"))
    kwargs = _mapping(config.get("kwargs"))
    ok = outcome.get("success") is True
    return (
        f'<tr id="exp-{number}" class="{"passed" if ok else "failed"}" '
        f'data-success="{"true" if ok else "false"}">'
        f"<td>{number}</td>"
        f'<td class="status">{"passed" if ok else "FAILED"}</td>'
        f'<td class="type"><code>{_esc(_value(config.get("type", "?")))}</code></td>'
        f'<td class="column">{_esc(_column(kwargs))}</td>'
        f"<td>{_arguments(kwargs)}</td>"
        f"<td>{_observed(outcome)}</td></tr>\n"
    )


def render_validation_page(
    result: Mapping[str, Any] | None,
    *,
    dataset: str | None = None,
    run_id: str | None = None,
    expected: int | None = None,
) -> str:
    """The HTML page of a GX validation result (the dict of ``validation_result.json``).

    Args:
        result: The result JSON dict; ``{"success": false, "error": ...}`` or None when
            GX raised.
        dataset: How to name the dataset (default: GX's data asset name).
        run_id: The pipeline run, shown when given.
        expected: How many expectations the suite holds; fewer evaluated fails the page's
            verdict, as it fails the gate.

    Returns:
        A complete HTML document: inline CSS, no script, no external URL.
    """
    result = result if isinstance(result, Mapping) else {"success": False}
    outcomes = [o for o in result.get("results") or [] if isinstance(o, Mapping)]
    meta = _mapping(result.get("meta"))
    batch = _mapping(meta.get("active_batch_definition"))
    stats = _mapping(result.get("statistics"))
    evaluated = len(outcomes)
    failed = sum(o.get("success") is not True for o in outcomes)
    problems = []
    if "results" not in result:
        problems.append(f"validation did not run ({_value(result.get('error') or 'no result')})")
    if expected is not None and evaluated != expected:
        problems.append(f"only {evaluated} of {expected} expectations evaluated")
    if stats.get("evaluated_expectations", evaluated) != evaluated:
        problems.append("GX statistics disagree with the listed results")
    ok = result.get("success") is True and failed == 0 and not problems
    percent = 100.0 * (evaluated - failed) / evaluated if evaluated else 0.0
    order = sorted(range(evaluated), key=lambda i: outcomes[i].get("success") is True)
    return _PAGE.substitute(
        css=_CSS,
        verdict="PASSED" if ok else "FAILED",
        verdict_class="pass" if ok else "fail",
        suite=_esc(_value(result.get("suite_name") or "(unnamed suite)")),
        dataset=_esc(_value(dataset or batch.get("data_asset_name") or "(unknown)", 300)),
        run_row=f"<dt>Run</dt><dd>{_esc(_value(run_id))}</dd>\n" if run_id else "",
        success=_esc(json.dumps(result.get("success"))),
        gx_version=_esc(_value(meta.get("great_expectations_version") or "unknown")),
        problem="".join(f'<p class="warn problem">{_esc(p)}</p>\n' for p in problems),
        evaluated=evaluated,
        successful=evaluated - failed,
        unsuccessful=failed,
        percent=f"{percent:.4g}%",
        expected_row=(
            f"<tr><th>in the suite</th><td>{expected}</td></tr>\n" if expected is not None else ""
        ),
        rows="".join(_row(i + 1, outcomes[i]) for i in order),
    )
