"""Validate gates: the suite's pin, then the bundled GX suite on clean resamples and on
broken data; the evidence (result JSON + Data Docs) and the Prefect summary artifact."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tasks.checks.suite_builder import derive_suite
from tasks.checks.validation_page import render_validation_page
from tasks.common.context import RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.validate import (
    check_expectations,
    check_suite_integrity,
    failing_expectations,
    summary_markdown,
    validate,
    validate_task,
)
from tests.conftest import BUNDLED_CSV, as_dataset, variant

SECRET = "SECRET-CELL-VALUE"
N_EXPECTATIONS = 186


def evidence(ctx: RunContext) -> Path:
    return ctx.settings.state_dir / "runs" / ctx.run_id / "validation"


def blocked(
    ctx: RunContext, frame: pd.DataFrame, gate: str = "validate.expectations"
) -> GateResult:
    """The result of `gate` in a validation that must block."""
    with pytest.raises(GateFailed) as info:
        validate(ctx, as_dataset(frame))
    return next(r for r in info.value.results if r.name == gate)


def saved_failures(ctx: RunContext) -> list[str]:
    return failing_expectations(json.loads((evidence(ctx) / "validation_result.json").read_text()))


def test_bundled_data_passes(ctx: RunContext, bundled: pd.DataFrame) -> None:
    out, results = validate(ctx, as_dataset(bundled))
    assert [r.name for r in results] == [
        "validate.suite_integrity",
        "validate.columns",
        "validate.expectations",
    ]
    assert all(r.passed for r in results)
    exp = results[2]
    assert exp.metrics["evaluated"] == exp.metrics["successful"] == N_EXPECTATIONS
    assert exp.metrics["failed"] == 0 and exp.metrics["success_rate"] == 1.0
    assert out.suite_sha256 == ctx.settings.dataset.suite_sha256
    assert out.evidence_dir == evidence(ctx)
    assert out.result_path == evidence(ctx) / "validation_result.json"
    saved = json.loads(out.result_path.read_text())
    assert saved["success"] is True and all(o["success"] is True for o in saved["results"])
    assert (out.evidence_dir / "data_docs" / "index.html").is_file()
    assert out.page_path == out.evidence_dir / "validation.html"
    assert 'class="verdict pass">PASSED<' in out.page_path.read_text()
    pages = list((out.evidence_dir / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "sha256-0000" in pages[0].name
    size = sum(p.stat().st_size for p in (out.evidence_dir / "data_docs").rglob("*"))
    assert size < 1_000_000  # unused GX tutorial assets pruned
    assert out.dataset.frame is bundled


def test_suite_covers_schema_types_nulls_ranges_labels_rows_and_distribution() -> None:
    suite = json.loads(
        (Path(BUNDLED_CSV).parents[1] / "expectations" / "breast_cancer.json").read_text()
    )
    kinds = Counter(e["type"] for e in suite["expectations"])
    assert kinds == {
        "expect_table_columns_to_match_set": 1,
        "expect_table_row_count_to_be_between": 1,
        "expect_column_values_to_be_in_type_list": 31,
        "expect_column_values_to_not_be_null": 31,
        "expect_column_values_to_be_in_set": 1,
        "expect_column_distinct_values_to_equal_set": 1,
        "expect_column_values_to_be_between": 30,
        "expect_column_mean_to_be_between": 30,
        "expect_column_stdev_to_be_between": 30,
        "expect_column_quantile_values_to_be_between": 30,
    }
    assert "Uniqueness: none" in suite["meta"]["notes"]


def test_bundled_suite_is_the_derived_one(bundled: pd.DataFrame) -> None:
    """The suite file is reproducible from the data (`secure-pipeline suite`)."""
    suite = json.loads(
        (Path(BUNDLED_CSV).parents[1] / "expectations" / "breast_cancer.json").read_text()
    )
    derived = derive_suite(
        bundled, name="breast_cancer", target="target", notes=suite["meta"]["notes"]
    )
    assert derived == suite


def test_suite_command_rederives_the_bundled_suite(tmp_path: Path) -> None:
    path = Path(BUNDLED_CSV).parents[1] / "expectations" / "breast_cancer.json"
    notes = json.loads(path.read_text())["meta"]["notes"]
    out = tmp_path / "suite.json"
    assert main(["suite", str(BUNDLED_CSV), "--out", str(out), "--notes", notes]) == 0
    assert json.loads(out.read_text()) == json.loads(path.read_text())


# --- calibration: clean resamples pass --------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_clean_resamples_pass(ctx: RunContext, bundled: pd.DataFrame, seed: int) -> None:
    sample = bundled.sample(frac=0.95, random_state=seed)  # without replacement, shuffled
    _, results = validate(ctx, as_dataset(sample.reset_index(drop=True)))
    assert all(r.passed for r in results)


# --- broken data is blocked by validate.expectations ------------------------------------------


def _extra(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(extra=1.0)


def _missing(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns=["mean texture"])


def _renamed(f: pd.DataFrame) -> pd.DataFrame:
    return f.rename(columns={"mean radius": "radius"})


def _strings(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    g["mean area"] = g["mean area"].astype(str)
    g.loc[5, "mean area"] = SECRET
    return g


def _nans(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    rng = np.random.default_rng(3)
    for col in ("worst radius", "mean texture", "area error"):
        g.loc[rng.choice(len(g), size=round(0.05 * len(g)), replace=False), col] = np.nan
    return g


def _scaled_few(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    rows = np.random.default_rng(4).choice(len(g), size=round(0.03 * len(g)), replace=False)
    g.loc[rows, "mean area"] = g.loc[rows, "mean area"] * 1000
    return g


def _unknown_label(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    g.loc[0, "target"] = 2
    return g


def _unit_error(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(**{"mean area": f["mean area"] * 1000})  # m^2 vs mm^2 style mistake


def _twenty_rows(f: pd.DataFrame) -> pd.DataFrame:
    return f.head(20)


def _null_label(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    g["target"] = g["target"].astype("float64")
    g.loc[1, "target"] = np.nan
    return g


def _one_class(f: pd.DataFrame) -> pd.DataFrame:
    return f[f["target"] == 1].reset_index(drop=True)


def _shifted(f: pd.DataFrame) -> pd.DataFrame:
    """Every value moved by one standard deviation: inside the range bounds, a drift."""
    return f.assign(**{"mean texture": f["mean texture"] + f["mean texture"].std()})


@pytest.mark.parametrize(
    ("mutate", "expected_failures"),
    [
        (_extra, ["expect_table_columns_to_match_set(table)"]),
        (_missing, ["expect_table_columns_to_match_set(table)"]),
        (_renamed, ["expect_table_columns_to_match_set(table)"]),
        (_strings, ["expect_column_values_to_be_in_type_list(mean area)"]),
        (
            _nans,
            [
                f"expect_column_values_to_not_be_null({c})"
                for c in ("area error", "mean texture", "worst radius")
            ],
        ),
        (
            _scaled_few,
            [
                "expect_column_values_to_be_between(mean area)",
                "expect_column_mean_to_be_between(mean area)",
                "expect_column_stdev_to_be_between(mean area)",
            ],
        ),
        (
            _unknown_label,
            [
                "expect_column_values_to_be_in_set(target)",
                "expect_column_distinct_values_to_equal_set(target)",
            ],
        ),
        (_unit_error, ["expect_column_values_to_be_between(mean area)"]),
        (_twenty_rows, ["expect_table_row_count_to_be_between(table)"]),
        (
            _null_label,
            [
                "expect_column_values_to_not_be_null(target)",
                "expect_column_values_to_be_in_type_list(target)",
            ],
        ),
        (_one_class, ["expect_column_distinct_values_to_equal_set(target)"]),
        (_shifted, ["expect_column_mean_to_be_between(mean texture)"]),
    ],
)
def test_broken_data_blocked(
    ctx: RunContext,
    bundled: pd.DataFrame,
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
    expected_failures: list[str],
) -> None:
    g = blocked(ctx, mutate(bundled))
    assert g.name == "validate.expectations"
    assert g.metrics["failed"] >= 1 and g.metrics["success_rate"] < 1
    assert g.threshold == {"max_failed": 0, "expectations": N_EXPECTATIONS}
    assert g.detail.startswith("failing: expect_")
    failures = saved_failures(ctx)
    for expected in expected_failures:
        assert any(f.startswith(expected) for f in failures), (expected, failures)
    assert (evidence(ctx) / "data_docs" / "index.html").is_file()  # evidence when blocked too
    assert ">FAILED<" in (evidence(ctx) / "validation.html").read_text()


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_strings, "not_numeric"),
        (_nans, "refused_missing"),
        (_null_label, "target_missing"),
    ],
)
def test_columns_gate_names_what_cannot_be_used(
    ctx: RunContext,
    bundled: pd.DataFrame,
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
    problem: str,
) -> None:
    g = blocked(ctx, mutate(bundled), "validate.columns")
    assert not g.passed and g.metrics[problem]
    assert (evidence(ctx) / "data_docs" / "index.html").is_file()  # the suite ran too


def test_columns_gate_refuses_undeclared_and_one_class(
    ctx: RunContext, bundled: pd.DataFrame
) -> None:
    declared = variant(ctx, numeric=["mean radius"], ignored=[])
    g = blocked(declared, bundled, "validate.columns")
    assert g.metrics["undeclared_count"] == 29  # named, never dropped silently
    assert "mean texture" in g.metrics["undeclared"]
    assert "dataset.numeric, categorical, ignored or pii" in g.detail
    assert blocked(ctx, _one_class(bundled), "validate.columns").metrics["classes"] == 1


def test_shifted_feature_passes_the_range_bounds(ctx: RunContext, bundled: pd.DataFrame) -> None:
    """Only the distribution bounds catch a drift that stays inside the value ranges."""
    blocked(ctx, _shifted(bundled))
    failures = saved_failures(ctx)
    assert "expect_column_values_to_be_between(mean texture)" not in failures


@pytest.mark.parametrize("column", ["mean area", "target"])
def test_no_cell_values_in_gate_result_file_or_data_docs(
    ctx: RunContext, bundled: pd.DataFrame, column: str
) -> None:
    frame = bundled.copy()
    frame[column] = frame[column].astype(str)
    frame.loc[5, column] = SECRET
    g = blocked(ctx, frame)
    assert SECRET not in g.model_dump_json()
    files = [
        evidence(ctx) / "validation_result.json",
        evidence(ctx) / "validation.html",
        *(evidence(ctx) / "data_docs").rglob("*.html"),
    ]
    assert len(files) >= 4
    for path in files:
        assert SECRET not in path.read_text(), path


def test_data_docs_render_a_blocked_run_without_errors(
    ctx: RunContext, bundled: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        blocked(ctx, _unknown_label(_strings(bundled)))
    warned = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name != "tasks.common.context"  # gate verdicts
    ]
    assert not warned, caplog.text  # neither GX's renderer nor ours warned
    page = next((evidence(ctx) / "data_docs" / "validations").rglob("*.html")).read_text()
    assert "Unsuccessful Expectations" in page and ctx.run_id in page


def test_quantile_values_are_scrubbed_means_kept(ctx: RunContext, bundled: pd.DataFrame) -> None:
    out, _ = validate(ctx, as_dataset(bundled))
    saved = json.loads(out.result_path.read_text())["results"]
    by_type = {o["expectation_config"]["type"]: o["result"] for o in saved}
    assert "observed_value" not in by_type["expect_column_quantile_values_to_be_between"]
    assert "observed_value" not in by_type["expect_column_distinct_values_to_equal_set"]
    assert isinstance(by_type["expect_column_mean_to_be_between"]["observed_value"], float)


def test_row_cap_from_settings_tightens_the_suite(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = blocked(variant(ctx, max_rows=500), bundled)
    assert "expect_table_row_count_to_be_between(table)" in g.detail


def test_tampered_suite_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    raw = bytearray(ctx.settings.dataset.suite.read_bytes())
    at = raw.index(b'"max_value": ') + len(b'"max_value": ')
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")  # loosen/alter one bound
    copy = tmp_path / "suite.json"
    copy.write_bytes(bytes(raw))
    g = blocked(variant(ctx, suite=copy), bundled, "validate.suite_integrity")
    assert g.name == "validate.suite_integrity" and g.metrics["matched"] is False
    assert g.metrics["sha256"] == hashlib.sha256(raw).hexdigest()


def test_missing_suite_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    g = blocked(variant(ctx, suite=tmp_path / "absent.json"), bundled, "validate.suite_integrity")
    assert g.name == "validate.suite_integrity" and g.metrics["readable"] is False


def test_unknown_expectation_type_fails_closed(
    ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path
) -> None:
    # GX 1.24 logs and DROPS an unknown type (no exception): the count check catches it.
    suite = {
        "name": "x",
        "expectations": [
            {"type": "expect_nothing_at_all", "kwargs": {}},
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        ],
    }
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    pinned = variant(ctx, suite=path, suite_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    g = blocked(pinned, bundled)
    assert g.name == "validate.expectations" and "1 of 2 expectations evaluated" in g.detail


def test_check_suite_integrity_pure() -> None:
    digest = hashlib.sha256(b"suite").hexdigest()
    assert check_suite_integrity(b"suite", expected=digest).passed
    assert not check_suite_integrity(b"suitf", expected=digest).passed
    assert not check_suite_integrity(None, expected=digest).passed


def test_a_governed_suite_needs_the_data_stewards_signature(tmp_path: Path) -> None:
    """With ``[trust] signers`` (steward keys given) the pin alone is not enough: only a
    signature by a ``dataset.profile_signers`` key over exactly these bytes passes."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tasks.checks.suite_signature import sign_suite, signature_path
    from tasks.trust.signing import Signer

    steward, trainer = (Signer(ec.generate_private_key(ec.SECP256R1())) for _ in range(2))
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "s", "expectations": []}, indent=2))
    raw, digest = suite.read_bytes(), hashlib.sha256(suite.read_bytes()).hexdigest()
    keys = {"steward.pub": steward.public_key}

    def gate(sig: bytes | None, body: bytes = raw) -> GateResult:
        pin = hashlib.sha256(body).hexdigest()
        return check_suite_integrity(body, expected=pin, sig_raw=sig, steward_keys=keys)

    unsigned = gate(None)
    assert not unsigned.passed and "no signature file" in unsigned.detail
    assert unsigned.threshold == {"sha256": digest, "signed_by": "dataset.profile_signers"}
    sign_suite(suite, trainer)  # the trainer re-signs its own rebuild: not counted
    by_trainer = gate(signature_path(suite).read_bytes())
    assert not by_trainer.passed and "no valid signature by a dataset.profile_signers key" in (
        by_trainer.detail
    )
    assert "--key STEWARD.pem" in by_trainer.detail
    sign_suite(suite, steward)
    sig = signature_path(suite).read_bytes()
    ok = gate(sig)
    assert ok.passed and ok.metrics["signed_by"] == "steward.pub"
    loosened = json.dumps({"name": "s", "expectations": [], "x": 1}).encode()
    edited = gate(sig, loosened)  # re-pinned, but not what the steward signed
    assert not edited.passed and "edited after signing" in edited.detail
    broken = check_suite_integrity(raw, expected=digest, key_error="profile signer x unreadable")
    assert not broken.passed and "profile signer x unreadable" in broken.detail
    assert check_suite_integrity(raw, expected=digest).passed  # unpinned: the pin alone


def test_check_expectations_counts_and_fails_closed() -> None:
    def outcome(ok: Any) -> dict[str, Any]:
        config = {"type": "expect_x", "kwargs": {"column": "c"}}
        return {"success": ok, "expectation_config": config}

    ok = check_expectations({"success": True, "results": [outcome(True)] * 3}, expected=3)
    assert ok.passed and ok.metrics["evaluated"] == 3
    bad = check_expectations(
        {"success": False, "results": [outcome(True), outcome(False)]}, expected=2
    )
    assert not bad.passed and bad.metrics["failed"] == 1 and "expect_x(c)" in bad.detail
    short = check_expectations({"success": True, "results": [outcome(True)]}, expected=2)
    assert not short.passed and "1 of 2" in short.detail  # an expectation was skipped
    assert not check_expectations(None, expected=2, error="ValueError").passed
    odd = check_expectations({"success": True, "results": [outcome("True")]}, expected=1)
    assert not odd.passed  # only a real True passes


# --- the self-contained validation page --------------------------------------------------------


def _outcome(kind: str, ok: bool, result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    config = {"type": kind, "kwargs": {"batch_id": "b", **kwargs}}
    return {"success": ok, "expectation_config": config, "result": result}


def test_validation_page_escapes_and_caps_what_it_shows() -> None:
    values = [f"<b>{i}</b>" + "x" * 60 for i in range(8)]
    result = {
        "success": False,
        "suite_name": "s<script>alert(1)</script>",
        "statistics": {"evaluated_expectations": 3},
        "results": [
            _outcome("expect_table_row_count_to_be_between", True, {"observed_value": 569}),
            _outcome(
                "expect_column_values_to_be_in_set",
                False,
                {"unexpected_count": 8, "element_count": 9, "partial_unexpected_list": values},
                column='a"b',
                value_set=list(range(100)),
            ),
            _outcome("expect_column_to_exist", True, {}, column="https://example.com/x"),
        ],
    }
    page = render_validation_page(result, dataset="<data>", run_id="r1", expected=3)
    assert "<script" not in page and 'src="' not in page and 'href="' not in page
    assert "default-src 'none'" in page  # the browser may load nothing
    assert "s&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;data&gt;" in page
    assert "a&quot;b" in page and "8 unexpected of 9" in page
    shown = [v for v in values if html_escape(v[:39]) in page]
    assert len(shown) == 5 and html_escape(values[0][:40]) not in page  # 5 values, 40 chars
    assert "(+3 more)" in page and "(+92 more)" in page  # long lists cut
    assert page.index('id="exp-2"') < page.index('id="exp-1"')  # failures first
    assert 'class="verdict fail">FAILED<' in page


def test_validation_page_fails_closed_on_missing_or_short_results() -> None:
    assert "validation did not run (ValueError)" in render_validation_page(
        {"success": False, "error": "ValueError"}
    )
    assert ">FAILED<" in render_validation_page(None)
    one = {"success": True, "results": [_outcome("expect_x", True, {})]}
    assert ">PASSED<" in render_validation_page(one, expected=1)
    short = render_validation_page(one, expected=2)
    assert ">FAILED<" in short and "only 1 of 2 expectations evaluated" in short


def test_page_failure_does_not_change_the_verdict(
    ctx: RunContext,
    bundled: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_: Any, **__: Any) -> str:
        raise ValueError("renderer bug")

    monkeypatch.setattr("tasks.validate.render_validation_page", broken)
    with caplog.at_level(logging.WARNING):
        _, results = validate(ctx, as_dataset(bundled))
    assert all(r.passed for r in results)
    assert not (evidence(ctx) / "validation.html").exists()
    assert "validation.html not written (ValueError)" in caplog.text
    assert "Data Docs: not built" in summary_markdown(results, evidence(ctx))


# --- the Prefect summary artifact -------------------------------------------------------------


def test_summary_markdown_lists_counts_failures_and_docs(
    ctx: RunContext, bundled: pd.DataFrame
) -> None:
    with pytest.raises(GateFailed) as info:
        validate(ctx, as_dataset(_unknown_label(bundled)))
    text = summary_markdown(info.value.results, evidence(ctx))
    assert "validate.expectations | **BLOCKED**" in text
    assert "Failing expectations: 2" in text
    assert "`expect_column_values_to_be_in_set(target)`" in text
    assert f"Data Docs: `{evidence(ctx) / 'validation.html'}`" in text  # the offline page
    assert "index.html" not in text  # never GX's CDN-dependent index


def test_task_publishes_validation_summary_artifact(
    prefect_api: None, ctx: RunContext, bundled: pd.DataFrame
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    @flow
    def run_validation() -> None:
        validate_task(ctx, as_dataset(_unknown_label(bundled)))

    state = run_validation(return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["validation-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert len(artifacts) == 1 and artifacts[0].type == "markdown"
    body = str(artifacts[0].data)
    assert "**BLOCKED**" in body and "expect_column_values_to_be_in_set(target)" in body
    assert str(evidence(ctx) / "validation.html") in body


def test_decimal_scan_skipped_only_where_no_decimal_can_be(tmp_path: Path) -> None:
    """GX's mean/stdev/sum metrics scan every value for Decimal objects; the fast path
    skips typed columns only: an object column of Decimals still validates as numbers,
    and the verdicts on a float column are GX's own."""
    import decimal
    import importlib

    import pyarrow as pa

    from tasks.checks.expectations import DECIMAL_SCAN_MODULES, run_suite

    def suite(low: float, high: float) -> dict[str, Any]:
        return {
            "name": "t",
            "expectations": [
                {"type": "expect_column_mean_to_be_between",
                 "kwargs": {"column": c, "min_value": low, "max_value": high}}
                for c in ("typed", "decimals")
            ] + [
                {"type": "expect_column_stdev_to_be_between",
                 "kwargs": {"column": c, "min_value": 0.5, "max_value": 2.0}}
                for c in ("typed", "decimals")
            ],
        }  # fmt: skip

    # GX's own Decimal conversion calls inspect.stack() once per value (about 0.1 s
    # each under pytest), so the object column stays short.
    values = np.random.default_rng(0).normal(5.0, 1.0, 12)
    frame = pd.DataFrame(
        {"typed": values, "decimals": [decimal.Decimal(str(round(v, 6))) for v in values]}
    )
    assert frame["decimals"].dtype == object
    ok = run_suite(frame, suite(4.5, 5.5), max_rows=10_000)
    assert ok["success"], [r["expectation_config"]["type"] for r in ok["results"]]
    bad = run_suite(frame, suite(6.0, 7.0), max_rows=10_000)
    means = [r for r in bad["results"] if "mean" in r["expectation_config"]["type"]]
    assert len(means) == 2 and not any(r["success"] for r in means)
    for name in DECIMAL_SCAN_MODULES:  # the fast path is in place for every metric
        fn = importlib.import_module(name).convert_pandas_series_decimal_to_float_dtype
        assert fn.__name__ == "typed_columns_hold_no_decimal"
        typed = frame["typed"]
        assert fn(typed) is typed  # untouched: no scan
        assert fn(frame["decimals"]).dtype.kind == "f"
        arrow = pd.Series(frame["decimals"].tolist(), dtype=pd.ArrowDtype(pa.decimal128(12, 6)))
        assert fn(arrow).dtype.kind == "f"  # not a plain NumPy number: GX's conversion
