"""The security report page from synthetic gate results: today's metrics and the new
curve keys, hostile text, size bounds, and a page with no URL and no script."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from tasks.common.gates import GateResult
from tasks.report import svg
from tasks.report.page import render_security_report, verdict

MODEL = {"name": "breast-cancer-classifier", "version": "7", "sha256": "ab" * 32}
WHEN = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

# What the evaluate stage reports today (no curve keys, no dp_audit gate).
TODAY = [
    GateResult(
        name="ingest.integrity", passed=True, metrics={"sha256": "cd" * 32}, detail="pinned"
    ),
    GateResult(
        name="evaluate.adversarial",
        passed=True,
        metrics={
            "attack": "fgm",
            "eps_std": 0.1,
            "samples": 200,
            "clean_accuracy": 0.95,
            "robust_accuracy": 0.81,
            "accuracy_drop": 0.14,
        },
        threshold={"max_robust_drop": 0.3, "max_regression": 0.02},
        detail="robust enough",
    ),
    GateResult(
        name="evaluate.membership_inference",
        passed=True,
        metrics={"advantage": 0.04, "advantage_ci_low": 0.01, "advantage_ci_high": 0.07},
        threshold={"max_advantage": 0.25},
        detail="no leak",
    ),
    GateResult(
        name="evaluate.backdoor_probe",
        passed=True,
        metrics={
            "score": 0.02,
            "excess": 0.05,
            "feature": "mean radius",
            "kind": "tail_value",
            "class": "1",
            "flip": 0.12,
            "justified": 0.07,
            "rows": 40,
            "candidates": 31,
            "samples": 120,
            "reference": "conditional",
        },
        threshold={"max_backdoor_flip": 0.3},
        detail="no candidate trigger flips predictions",
    ),
    GateResult(
        name="evaluate.extraction_risk",
        passed=True,
        metrics={
            "fidelity": 0.93,
            "queries": 1000,
            "recommended_output": "labels",
            "output_reason": "a copy is cheap",
        },
        threshold={"max_fidelity": None},
        detail="extraction fidelity reported",
    ),
]
ROC = [
    [round(10 ** (-3 + 3 * i / 20), 4), round(min(1.0, 2 * 10 ** (-3 + 3 * i / 20)), 4)]
    for i in range(21)
]
# The keys the audits add (the shared contract).
NEW = [
    GateResult(
        name="evaluate.adversarial",
        passed=True,
        metrics={
            **TODAY[1].metrics,
            "robustness_curve": [[0.0, 0.95], [0.05, 0.9], [0.1, 0.81], [0.2, 0.6]],
            "certified_curve": [[0.0, 0.95], [0.05, 0.7], [0.1, 0.4], [0.2, None]],
            "certified_accuracy": 0.4,
            "certified_method": "interval bound propagation",
        },
        threshold={**TODAY[1].threshold, "min_robust_accuracy": 0.5},
        detail="robust enough",
    ),
    GateResult(
        name="evaluate.membership_inference",
        passed=False,
        metrics={
            "roc_curve": ROC,
            "auc": 0.61,
            "tpr_at_1pct_fpr": 0.021,
            "tpr_at_1pct_fpr_ci_low": 0.011,
            "tpr_at_1pct_fpr_ci_high": 0.034,
            "tpr_at_01pct_fpr": 0.002,
            "exposed_records": 12,
            "advantage": 0.04,
        },
        threshold={"max_tpr_at_low_fpr": 0.015},
        detail="the attack finds members at low FPR",
    ),
    GateResult(
        name="evaluate.dp_audit",
        passed=True,
        metrics={
            "epsilon_claimed": 2.0,
            "epsilon_audited": 0.7,
            "canaries": 500,
            "audit_correct": 40,
            "audit_guesses": 45,
        },
        threshold={"max_audited_over_claimed": 1.0},
        detail="the audit does not refute the claim",
    ),
]


def _render(gates: list[GateResult], **kw: object) -> str:
    return render_security_report(
        run_id="3f2a9c1e-0000",
        model=MODEL,
        estimator="logistic_regression",
        gates=gates,
        config={"name": "breast_cancer.toml", "sha256": "ef" * 32},
        generated=WHEN,
        **kw,  # type: ignore[arg-type]
    )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs


def _no_url_no_script(page: str) -> None:
    """No script, no URL (a data value may say "https", never ``https:/``), no
    attribute that loads or runs anything."""
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "<script" not in page.lower()
    assert not re.search(r"https?:/|url\(|//|@import|xmlns", page, re.IGNORECASE)
    assert not any(name in ("href", "src", "srcset", "action") for name, _ in parser.attrs)
    assert not any(name.startswith("on") for name, _ in parser.attrs)  # no event handlers


def test_todays_metrics_render_with_not_measured_for_the_new_keys() -> None:
    page = _render(TODAY)
    _no_url_no_script(page)
    assert not re.search(r"https?:", page, re.IGNORECASE)  # not even as text
    for gate in TODAY:
        assert f'data-gate="{gate.name}"' in page
    assert 'id="status" class="badge ok">PASSED' in page
    assert 'id="roc-absent"' in page  # no roc_curve: said, not drawn
    assert page.count("not measured") >= 5  # tpr at 1%/0.1%, auc, certified, curves
    assert 'aria-label="accuracy against the perturbation budget"' in page  # the lone point
    assert "gate eps 0.1" in page and "floor 0.65" in page  # clean 0.95 - max drop 0.3
    assert "not a DP model" in page
    assert "mean radius" in page and "a repeated extreme value" in page
    assert "breast_cancer.toml" in page and "logistic_regression" in page


def test_new_keys_draw_the_roc_the_curves_and_the_dp_audit() -> None:
    page = _render([*TODAY[:1], *NEW, *TODAY[3:]])
    _no_url_no_script(page)
    assert "membership attack ROC, log-log" in page and 'id="roc-absent"' not in page
    assert "limit: TPR 0.015 at 1% FPR" in page
    assert "0.021 (95% interval 0.011 to 0.034)" in page
    assert "interval bound propagation" in page and "certified" in page
    assert "floor 0.65" in page  # the stricter of min_robust_accuracy 0.5 and 0.95 - 0.3
    assert 'id="status" class="badge fail">BLOCKED' in page
    assert 'class="failed" data-gate="evaluate.membership_inference"' in page
    assert "epsilon audited (lower bound)" in page and ">0.7<" in page
    assert "0.05: 0.900, 0.1: 0.810" in page  # the measured curve as text beside its chart
    assert page.count("<circle") >= len(ROC) + 4 + 3  # ROC points, attack, certified (no None)


def test_a_waived_gate_is_named_waived_with_its_reason() -> None:
    waivers = [{"gate": "evaluate.adversarial", "reason": "tabular demo", "setting": "x"}]
    page = _render(TODAY, waivers=waivers)
    assert 'class="waived" data-gate="evaluate.adversarial"' in page
    assert "evaluate.adversarial: tabular demo" in page
    assert verdict(TODAY[1], {"evaluate.adversarial"}) == "waived"
    assert verdict(NEW[1], {"evaluate.membership_inference"}) == "BLOCKED"  # never waived


def test_a_non_dp_audit_result_and_a_claimed_epsilon_without_audit() -> None:
    na = GateResult(
        name="evaluate.dp_audit",
        passed=True,
        metrics={"applies": False},
        detail="not a DP model (logreg): nothing to audit",
    )
    page = _render([*TODAY, na])
    assert "not a DP model (logreg): nothing to audit" in page
    assert "not a DP model: not a DP model" not in page
    assert "epsilon claimed 1.5: not audited" in _render(TODAY, dp_epsilon=1.5)


def test_hostile_text_renders_as_text() -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)> https://evil.example/x"
    gates = [
        GateResult(
            name="evaluate.backdoor_probe",
            passed=False,
            metrics={"feature": evil, "kind": evil, "class": evil, "score": 0.9},
            threshold={"max_backdoor_flip": 0.3},
            detail=evil,
        ),
        GateResult(name=evil, passed=True, metrics={evil: evil}, detail=evil),
    ]
    page = render_security_report(
        run_id=evil,
        model={"name": evil, "version": evil},
        estimator=evil,
        gates=gates,
        waivers=[{"gate": evil, "reason": evil}],
        config={"name": evil, "sha256": evil},
    )
    _no_url_no_script(page)
    assert "&lt;script&gt;alert(1)&lt;&#47;script&gt;" in page
    assert "https:&#47;&#47;evil.example" in page  # text, not a link


@pytest.mark.parametrize(
    "curve",
    [
        "not a list",
        [[1, 2, 3], ["a", "b"], [None, 0.5], [float("nan"), 1], [True, 0.5], {"x": 1}],
        [[i / 1e5, 0.5] for i in range(100_000)],
    ],
)
def test_hostile_or_huge_curves_are_bounded(curve: object) -> None:
    got = svg.points(curve)
    assert len(got) <= svg.MAX_POINTS
    gate = GateResult(
        name="evaluate.membership_inference",
        passed=True,
        metrics={"roc_curve": curve, "auc": "high", "tpr_at_1pct_fpr": float("inf")},
        threshold={"max_advantage": 0.25},
    )
    page = _render([gate])
    _no_url_no_script(page)
    assert page.count("<circle") <= svg.MAX_POINTS


def test_the_page_stays_small_whatever_the_gates_say() -> None:
    long = "\u00e9<&>" * 50_000
    gates = [
        GateResult(
            name=f"evaluate.g{i}-{long}",
            passed=i % 2 == 0,
            metrics={f"m{j}": long for j in range(50)},
            threshold={"t": long},
            detail=long,
        )
        for i in range(500)
    ]
    page = _render([*gates, *NEW])
    assert len(page.encode()) < 1_000_000
    assert "more gates: see report.json" in page
    assert len(_render([*TODAY, *NEW]).encode()) < 60_000  # a realistic page: tens of kB


def test_a_release_without_the_page_keeps_verifying_and_a_stripped_page_does_not() -> None:
    from tasks.trust import release as rel

    base = "models/m/1"
    now = {n: {"key": f"{base}/{n}"} for n in rel.PLAIN_FILES}
    before = {n: v for n, v in now.items() if n != rel.SECURITY_REPORT}  # an older release
    assert rel.layout_ok(now, base) and rel.layout_ok(before, base)
    assert not rel.layout_ok({**now, "notes.txt": {"key": f"{base}/notes.txt"}}, base)
    assert not rel.layout_ok({n: v for n, v in now.items() if n != rel.REPORT}, base)
    assert not rel.layout_ok({**now, rel.SECURITY_REPORT: {"key": "models/x/1/page"}}, base)

    digests = {rel.SBOM: "s", rel.REPORT: "r", rel.SECURITY_REPORT: "p"}
    old = {rel.SBOM: "s", rel.REPORT: "r"}
    assert rel.byproducts_ok(digests, digests) and rel.byproducts_ok(old, old)
    assert not rel.byproducts_ok(digests, old)  # the provenance names a page that is gone
    assert not rel.byproducts_ok(old, digests)  # a page the provenance never named
    assert not rel.byproducts_ok(digests, {**digests, rel.SECURITY_REPORT: "edited"})


class _Bucket:
    """`list_object_versions` pages of one release prefix (what `audit verify` reads)."""

    def __init__(self, names: list[str]) -> None:
        when = datetime(2026, 12, 5, tzinfo=UTC)
        self.page: dict[str, object] = {
            "Versions": [
                {"Key": f"models/m/1/{n}", "VersionId": "v1", "LastModified": when} for n in names
            ],
            "DeleteMarkers": [],
        }

    def get_paginator(self, _: str) -> _Bucket:
        return self

    def paginate(self, **_: object) -> list[dict[str, object]]:
        return [self.page]


def test_audit_verify_accepts_an_older_release_without_the_page() -> None:
    from tasks.trust import release as rel
    from tasks.trust.versions import scan_release_histories

    def scan(names: list[str]) -> list[str]:
        return scan_release_histories(
            _Bucket(names),
            bucket="b",
            prefix="models",
            names=rel.OBJECTS,
            optional=rel.OPTIONAL_FILES,
        )

    assert scan(list(rel.OBJECTS)) == []
    assert scan([n for n in rel.OBJECTS if n != rel.SECURITY_REPORT]) == []
    missing = scan([n for n in rel.OBJECTS if n != rel.REPORT])
    assert missing == ["models/m/1/report.json: no version of it is stored"]


def test_a_run_that_was_never_signed_says_so_and_is_never_green() -> None:
    page = _render(TODAY, status="failed")  # every gate so far passed, then a crash
    assert 'id="status" class="badge fail">FAILED' in page
    assert "no: the run stopped before the sign stage" in page
    blocked = _render([*TODAY, NEW[1]], status="blocked")
    assert 'class="badge fail">BLOCKED' in blocked and "PASSED" not in blocked
