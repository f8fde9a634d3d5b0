"""The security report: one self-contained HTML page per training run.

The gates already decide; this page shows their evidence to a person: every gate's
verdict (passed, BLOCKED or waived) with what it measured against its threshold, the
membership attack's ROC at low false-positive rates, accuracy against the
perturbation budget (under attack and certified), the backdoor probe's strongest
candidate trigger, the extraction fidelity, and the DP epsilon claimed against the
one audited. A key a gate does not (yet) report is written "not measured", never
guessed: the page renders from any version's metrics.

The sign stage writes it into the release directory as ``security-report.html``
(`tasks.sign`), so the OpenSSF signature and the SLSA provenance cover it and deploy
ships it with the model; the run's MLflow record keeps a copy.

Threat: a page built from data can carry data into a browser. Gate details and
metrics can quote column names and category labels of the training data, so every
string is HTML-escaped (``/`` included), the page holds no script and no URL of any
kind (inline CSS and SVG only), and its Content-Security-Policy lets the browser load
nothing even if a value slipped through. Size: at most `MAX_GATES` gates, each text
capped, curves capped at `svg.MAX_POINTS`: measured 19 kB for a real run, 180 kB for
500 gates of long plain text, 680 kB when every character escapes to several bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tasks.common.gates import GateResult
from tasks.monitoring.charts import cut, esc
from tasks.report import svg

FILE = "security-report.html"  # its name in the release directory and in MLflow
# FORK: how much of a gate the page shows (report.json keeps everything).
MAX_GATES = 100
MAX_TEXT = 300  # characters of one measured value, name or fact
MAX_DETAIL = 1000  # characters of one gate's detail

MEMBERSHIP = "evaluate.membership_inference"
ADVERSARIAL = "evaluate.adversarial"
BACKDOOR = "evaluate.backdoor_probe"
EXTRACTION = "evaluate.extraction_risk"
DP_AUDIT = "evaluate.dp_audit"
NOT_MEASURED = '<span class="na">not measured</span>'

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0 auto;padding:16px;max-width:1240px;color:#1b1f24;background:#fff;
-webkit-print-color-adjust:exact;print-color-adjust:exact}
h1{font-size:22px;margin:0 0 6px;overflow-wrap:anywhere}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.badge{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:700;color:#fff;
font-size:14px;vertical-align:middle}.ok{background:#1a7f37}.fail{background:#cf222e}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
dl.facts dt{font-weight:600;color:#57606a}dl.facts dd{margin:0;overflow-wrap:anywhere}
.row{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 480px;max-width:100%;border:1px solid #d0d7de;border-radius:6px;
padding:10px 12px;break-inside:avoid;page-break-inside:avoid}
.card h3{font-size:15px;margin:0 0 6px}
svg.chart{display:block;width:100%;max-width:560px;height:auto;margin-top:4px}
svg.meter{display:block;width:100%;max-width:460px;height:auto;margin-top:4px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;
overflow-wrap:anywhere}th{background:#f6f8fa}td.result{white-space:nowrap;font-weight:700}
td.gate{white-space:nowrap}
tr.failed td{background:#ffebe9}tr.failed td.result{color:#cf222e}
tr.passed td.result{color:#1a7f37}tr.waived td{background:#fff8c5}
tr.waived td.result{color:#9a6700}
.kv{border:0;width:auto}.kv th,.kv td{border:0;background:none;padding:1px 12px 1px 0}
.na{color:#57606a;font-style:italic}.note{color:#57606a}.warn{color:#cf222e;font-weight:600}
@media print{body{max-width:none;padding:0;font-size:12px}}
"""


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """`value` as escaped text of at most `limit` characters."""
    return esc(cut(str(value), limit))


def _short(value: Any) -> str:
    """A measured value as short text: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} values]"  # a curve: drawn, not listed
    return str(value)


def _values(values: Mapping[str, Any]) -> str:
    """``key=value, ...`` of a gate's metrics or threshold, escaped and capped."""
    if not values:
        return '<span class="note">-</span>'
    return _text(", ".join(f"{k}={_short(v)}" for k, v in values.items()))


def _num(value: Any, spec: str = ".3f") -> str:
    """A number in `spec`, or "not measured" when it is absent or not a finite number."""
    got = svg.number(value)
    return NOT_MEASURED if got is None else format(got, spec)


def _ci(metrics: Mapping[str, Any], key: str) -> str:
    """``value [low, high]`` of `key` and its ``_ci_low``/``_ci_high`` when present."""
    low, high = svg.number(metrics.get(f"{key}_ci_low")), svg.number(metrics.get(f"{key}_ci_high"))
    interval = (
        f" (95% interval {low:.3f} to {high:.3f})" if low is not None and high is not None else ""
    )
    return _num(metrics.get(key)) + ("" if svg.number(metrics.get(key)) is None else interval)


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of (name, already-escaped value) rows."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def verdict(gate: GateResult, waived: set[str]) -> str:
    """``passed``, ``BLOCKED``, or ``waived`` (passed under a waiver of this gate)."""
    if not gate.passed:
        return "BLOCKED"
    return "waived" if gate.name in waived else "passed"


def _gate_table(gates: Sequence[GateResult], waived: set[str]) -> str:
    if not gates:
        return '<section id="gates"><h2>Gates</h2><p class="warn">no gate ran</p></section>'
    rows = []
    for g in gates[:MAX_GATES]:
        word = verdict(g, waived)
        css = {"BLOCKED": "failed"}.get(word, word)
        rows.append(
            f'<tr class="{css}" data-gate="{_text(g.name, 80)}">'
            f'<td class="gate">{_text(g.name, 80)}</td>'
            f'<td class="result">{word}</td><td>{_values(g.metrics)}</td>'
            f"<td>{_values(g.threshold)}</td><td>{_text(g.detail, MAX_DETAIL) or '-'}</td></tr>"
        )
    more = len(gates) - MAX_GATES
    tail = f'<p class="warn">{more} more gates: see report.json</p>' if more > 0 else ""
    return (
        '<section id="gates"><h2>Gates</h2><div class="scroll"><table><thead><tr><th>gate</th>'
        "<th>verdict</th><th>measured</th><th>threshold</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>{tail}</section>"
    )


def _absent(name: str, title: str, anchor: str) -> str:
    return (
        f'<div class="card" id="{anchor}"><h3>{esc(title)}</h3><p>{NOT_MEASURED}: no result '
        f"of gate {esc(name)} in this run.</p></div>"
    )


def _membership(gate: GateResult | None) -> str:
    if gate is None:
        return _absent(MEMBERSHIP, "Membership inference", "membership")
    m, t = gate.metrics, gate.threshold
    curve = svg.points(m.get("roc_curve"))
    max_tpr = svg.number(t.get("max_tpr_at_low_fpr"))  # the gate's limit on TPR at 1% FPR
    max_adv = svg.number(t.get("max_advantage"))
    chart = (
        svg.roc_chart(curve, max_tpr=max_tpr, max_advantage=max_adv)
        if curve
        else '<p id="roc-absent">ROC curve: ' + NOT_MEASURED + " by this run's attack.</p>"
    )
    exposed = svg.number(m.get("exposed_records"))
    rows = [
        ("TPR at 1% FPR", _ci(m, "tpr_at_1pct_fpr")),
        ("TPR at 0.1% FPR", _ci(m, "tpr_at_01pct_fpr")),
        ("AUC", _num(m.get("auc"))),
        ("advantage (TPR - FPR)", _ci(m, "advantage")),
        ("records exposed", NOT_MEASURED if exposed is None else f"{exposed:.0f}"),
        ("blocking threshold", _values(t)),
    ]
    return (
        f'<div class="card" id="membership"><h3>Membership inference</h3>{_kv(rows)}{chart}'
        '<p class="note">How often an attacker who sees the model\'s outputs names a training '
        "row a member (TPR) against how often it wrongly names an outside row (FPR); low FPR "
        "is where an attack is believed. Both axes logarithmic.</p></div>"
    )


def _eps_points(points: list[tuple[float, float]]) -> str:
    """A measured curve as text beside its chart: ``0.05: 0.95, 0.1: 0.90``."""
    return ", ".join(f"{x:.3g}: {y:.3f}" for x, y in points)


def _robustness(gate: GateResult | None) -> str:
    if gate is None:
        return _absent(ADVERSARIAL, "Robustness", "robustness")
    m, t = gate.metrics, gate.threshold
    eps = svg.number(m.get("eps_std"))
    attack = svg.points(m.get("robustness_curve"))
    joined = bool(attack)  # a measured curve; else separate points, not joined
    if not attack:  # one measured point: the gate's attack at its eps (and eps 0: clean)
        pairs = [(0.0, m.get("clean_accuracy")), (eps, m.get("robust_accuracy"))]
        attack = svg.points([[x, y] for x, y in pairs if x is not None])
    certified = svg.points(m.get("certified_curve"))
    clean, drop = svg.number(m.get("clean_accuracy")), svg.number(t.get("max_robust_drop"))
    floors = [svg.number(t.get("min_robust_accuracy"))]
    floors.append(clean - drop if clean is not None and drop is not None else None)
    floor = max((f for f in floors if f is not None), default=None)
    method = m.get("certified_method")
    rows = [
        ("attack", _text(m.get("attack", "-"))),
        ("eps (std, L-inf)", _num(eps, ".3g")),
        ("clean accuracy", _num(m.get("clean_accuracy"))),
        ("accuracy under attack", _num(m.get("robust_accuracy"))),
        ("certified accuracy", _num(m.get("certified_accuracy"))),
        ("certified by", _text(method) if method else NOT_MEASURED),
        ("accuracy vs eps (attack)", _eps_points(attack) if joined else NOT_MEASURED),
        ("accuracy vs eps (certified)", _eps_points(certified) if certified else NOT_MEASURED),
        ("blocking threshold", _values(t)),
    ]
    chart = (
        svg.accuracy_chart(attack, certified, floor=floor, budget=eps, joined=joined)
        if attack or certified
        else ""
    )
    return (
        f'<div class="card" id="robustness"><h3>Robustness</h3>{_kv(rows)}{chart}'
        '<p class="note">Accuracy on test rows perturbed by at most eps standard deviations '
        "per numeric input: under the strongest attack run (an upper bound: a stronger "
        "attack could only lower it) and certified (a lower bound no attack within eps "
        "can break). The dashed floor is what the gate requires at its eps.</p></div>"
    )


def _backdoor(gate: GateResult | None) -> str:
    if gate is None:
        return _absent(BACKDOOR, "Backdoor probe", "backdoor")
    from tasks.checks.backdoor_probe import KIND_TEXT

    m, t = gate.metrics, gate.threshold
    limit = svg.number(t.get("max_backdoor_flip"))
    score = svg.number(m.get("score"))
    kind = str(m.get("kind", ""))
    strongest = (
        f"{_text(KIND_TEXT.get(kind, kind))} of <b>{_text(m.get('feature'))}</b> towards class "
        f"<b>{_text(m.get('class'))}</b>"
        if m.get("feature")
        else '<span class="note">none flips anything</span>'
    )
    rows = [
        ("candidate triggers tried", _num(m.get("candidates"), ".0f")),
        ("clean rows stamped", _num(m.get("samples"), ".0f")),
        ("strongest candidate", strongest),
        ("share flipped", _num(m.get("flip"))),
        ("justified by the reference", _num(m.get("justified"))),
        ("excess (score, noise removed)", _num(m.get("score"))),
        ("reference", _text(m.get("reference", "-"))),
    ]
    bar = svg.meter(score, limit, label="backdoor score") if score is not None else ""
    return (
        f'<div class="card" id="backdoor"><h3>Backdoor probe</h3>{_kv(rows)}{bar}'
        '<p class="note">Each candidate trigger is stamped on clean test rows of other '
        "classes; the score is the share turned into one class beyond what the signed "
        "reference's label counts justify.</p></div>"
    )


def _extraction(gate: GateResult | None) -> str:
    if gate is None:
        return _absent(EXTRACTION, "Model extraction", "extraction")
    m, t = gate.metrics, gate.threshold
    fidelity, limit = svg.number(m.get("fidelity")), svg.number(t.get("max_fidelity"))
    rows = [
        ("surrogate fidelity", _num(fidelity)),
        ("label-only queries", _num(m.get("queries"), ".0f")),
        ("maximum", "reported only" if limit is None else f"{limit:.3g}"),
        ("serving output", _text(m.get("recommended_output", "-"))),
        ("why", _text(m.get("output_reason", "-"), MAX_DETAIL)),
    ]
    bar = svg.meter(fidelity, limit, label="extraction fidelity") if fidelity is not None else ""
    return (
        f'<div class="card" id="extraction"><h3>Model extraction</h3>{_kv(rows)}{bar}'
        '<p class="note">Agreement with this model of a copy trained only on its answers to '
        "the queries: how much of it a thief takes away.</p></div>"
    )


def _privacy(gate: GateResult | None, dp_epsilon: Any) -> str:
    head = '<div class="card" id="dp"><h3>Differential privacy</h3>'
    claimed = svg.number(dp_epsilon)
    if gate is None:
        text = (
            "not a DP model"
            if claimed is None
            else f"epsilon claimed {claimed:.3g}: not audited (no dp_audit result in this run)"
        )
        return f'{head}<p id="dp-verdict">{esc(text)}.</p></div>'
    m = gate.metrics
    if m.get("applies") is False:
        return f'{head}<p id="dp-verdict">{_text(gate.detail, MAX_DETAIL)}</p></div>'
    rows = [
        ("epsilon claimed", _num(m.get("epsilon_claimed", dp_epsilon), ".3g")),
        ("epsilon audited (lower bound)", _num(m.get("epsilon_audited"), ".3g")),
        ("canaries", _num(m.get("canaries"), ".0f")),
        (
            "audit guesses (correct / made)",
            f"{_num(m.get('audit_correct'), '.0f')} / {_num(m.get('audit_guesses'), '.0f')}",
        ),
        ("threshold", _values(gate.threshold)),
    ]
    return (
        f'{head}{_kv(rows)}<p class="note">The audited epsilon is what one training run '
        "with planted canaries proves at least; above the claimed one, the DP claim is "
        "false.</p></div>"
    )


def render_security_report(
    *,
    run_id: str,
    model: Mapping[str, Any],
    estimator: str,
    gates: Sequence[GateResult],
    waivers: Sequence[Mapping[str, Any]] = (),
    config: Mapping[str, Any] | None = None,
    dp_epsilon: Any = None,
    generated: datetime | None = None,
    status: str | None = None,
) -> str:
    """The run's security evidence as one self-contained HTML document.

    Args:
        run_id: The Prefect flow run id.
        model: ``name``, ``version`` and ``sha256`` of the model.
        estimator: ``model.estimator`` of the run's config.
        gates: Every gate result so far, in the order they ran.
        waivers: The waivers in force (`Settings.active_waivers`): a passed gate one
            names is shown ``waived``, with its reason.
        config: ``name`` and ``sha256`` of the config file, when there is one.
        dp_epsilon: The DP budget the model was trained with (None: not a DP model).
        generated: When (default: now, UTC).
        status: The run's status when it stopped before the sign stage ("blocked",
            "failed", "interrupted"): shown, with a note that the page is not signed.
            None: a release's page, PASSED when every gate passed.

    Returns:
        A complete HTML document: inline CSS and SVG, no script, no URL.
    """
    waived = {str(w.get("gate")) for w in waivers}
    ok = bool(gates) and all(g.passed for g in gates)
    by_name = {g.name: g for g in gates}
    when = (generated or datetime.now(UTC)).astimezone(UTC)
    facts = {
        "run": run_id,
        "model": f"{model.get('name')} version {model.get('version')}",
        "model sha256": model.get("sha256") or "-",
        "estimator": estimator,
        "config": f"{config.get('name')} (sha256 {config.get('sha256')})" if config else "-",
        "waivers": "; ".join(f"{w.get('gate')}: {w.get('reason')}" for w in waivers) or "none",
        "generated": f"{when:%Y-%m-%d %H:%M:%S} UTC",
    }
    title = f"Security report: {model.get('name')} version {model.get('version')}"
    word, badge = ("PASSED", "ok") if ok else ("BLOCKED", "fail")
    if status is not None:  # a run that was never signed: its own ending, never green
        word, badge = _text(status.upper(), 40), "fail"
        facts["signed"] = "no: the run stopped before the sign stage"
    header = (
        f'<header><h1>{_text(title)} <span id="status" class="badge {badge}">{word}</span></h1>'
        '<dl class="facts" id="facts">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{_text(v, MAX_DETAIL)}</dd>" for k, v in facts.items())
        + "</dl></header>"
    )
    evidence = "".join(
        (
            _membership(by_name.get(MEMBERSHIP)),
            _robustness(by_name.get(ADVERSARIAL)),
            _backdoor(by_name.get(BACKDOOR)),
            _extraction(by_name.get(EXTRACTION)),
            _privacy(by_name.get(DP_AUDIT), dp_epsilon),
        )
    )
    body = "\n".join(
        (
            header,
            f'<section id="evidence"><h2>Evidence</h2><div class="row">{evidence}</div></section>',
            _gate_table(gates, waived),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        '<p class="note">The gates up to the sign stage: the ones the release was signed '
        "on. A self-contained page: no script, no external resource. In a release "
        "directory it is covered by the release's OpenSSF signature (model.sig) and named "
        "by digest in its SLSA provenance.</p>\n</body>\n</html>\n"
    )
