"""Validate: run the dataset's pinned Great Expectations suite, keep the evidence.

The suite file is hash-pinned in the config because a loosened suite (wider
bounds, a dropped column check) is the quiet way for an insider to let bad data
through. The suite is parsed from the very bytes that were hashed.

Evidence, whether the data passes or not, goes to
``<state>/runs/<run_id>/validation/``: the GX result JSON and GX Data Docs (HTML),
both scrubbed so that no cell value is stored: only counts, types, column names,
means and standard deviations survive (a min, max, quantile or distinct value is
a cell value).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.gates import GateFailed, GateResult, check, failed, run_check
from tasks.common.sources import read_capped

log = logging.getLogger(__name__)
_SUITE_MAX_BYTES = 16 * 1024 * 1024
_ROW_COUNT = "expect_table_row_count_to_be_between"
_MAX_LISTED = 15  # failing expectations named in the detail
RESULT_FILE, DOCS_DIR = "validation_result.json", "data_docs"
# Result keys kept for every expectation (counts only), and the expectation types whose
# observed value is an aggregate or schema fact rather than a cell value.
_COUNT_KEYS = frozenset({"element_count", "missing_count", "missing_percent", "unexpected_count",
                         "unexpected_percent", "unexpected_percent_total",
                         "unexpected_percent_nonmissing", "partial_unexpected_list"})
_OBSERVED_OK = frozenset({_ROW_COUNT, "expect_table_columns_to_match_set",
                          "expect_table_column_count_to_equal",
                          "expect_column_values_to_be_in_type_list",
                          "expect_column_mean_to_be_between", "expect_column_stdev_to_be_between"})


@dataclass(frozen=True)
class ValidationOutput:
    """The validated dataset, the suite digest it was checked against, and the evidence."""

    dataset: Dataset
    suite_sha256: str
    result_path: Path     # the GX validation result (JSON)
    evidence_dir: Path    # result JSON + data_docs/ (HTML); the lead logs it to MLflow


def evidence_dir(ctx: RunContext) -> Path:
    return ctx.settings.state_dir / "runs" / ctx.run_id / "validation"


def check_suite_integrity(raw: bytes | None, *, expected: str) -> GateResult:
    """`validate.suite_integrity`: sha256 of the suite file equals `dataset.suite_sha256`."""
    name, threshold = "validate.suite_integrity", {"sha256": expected}
    if raw is None:
        return failed(name, metrics={"readable": False}, threshold=threshold,
                      detail="suite file missing, unreadable or over 16 MiB; check dataset.suite")
    digest = hashlib.sha256(raw).hexdigest()
    ok = digest == expected
    return check(name, metrics={"sha256": digest, "matched": ok}, threshold=threshold, ok=ok,
                 detail="" if ok else "suite differs from its pin: review the suite change, "
                                      "then re-pin dataset.suite_sha256 (sha256sum)")


def failing_expectations(result: dict[str, Any]) -> list[str]:
    """``type(column)`` of every expectation that did not pass, sorted."""
    return sorted(
        f"{o['expectation_config']['type']}"
        f"({o['expectation_config']['kwargs'].get('column', 'table')})"
        + (" [error: missing column?]" if (o.get("exception_info") or {}).get("raised_exception")
           else "")
        for o in result.get("results", []) if o.get("success") is not True)


def check_expectations(result: dict[str, Any] | None, *, expected: int,
                       error: str | None = None) -> GateResult:
    """`validate.expectations`: every expectation of the suite evaluated and passed.

    Args:
        result: The GX validation result as a JSON dict (None if GX raised).
        expected: How many expectations the suite holds.
        error: Exception type raised by GX, if any.
    """
    name, threshold = "validate.expectations", {"max_failed": 0, "expectations": expected}
    if result is None:
        return failed(name, metrics={"evaluated": 0}, threshold=threshold,
                      detail=f"validation raised {error}; failing closed")
    failing = Counter(failing_expectations(result))
    evaluated, n_failed = len(result["results"]), sum(failing.values())
    metrics = {"evaluated": evaluated, "successful": evaluated - n_failed, "failed": n_failed,
               "success_rate": (evaluated - n_failed) / evaluated if evaluated else 0.0}
    ok = n_failed == 0 and evaluated == expected and result["success"] is True
    listed = sorted(failing)[:_MAX_LISTED]
    more = f" and {len(failing) - len(listed)} more" if len(failing) > len(listed) else ""
    detail = ("" if ok else
              f"failing: {', '.join(listed)}{more}; fix the data or its export (see "
              f"{RESULT_FILE} and the Data Docs)" if n_failed else
              f"only {evaluated} of {expected} expectations evaluated; failing closed")
    return check(name, metrics=metrics, threshold=threshold, ok=ok, detail=detail)


def scrub(result: Any) -> None:
    """Remove anything that can hold a cell value from a GX suite result, in place."""
    for outcome in result.results:
        if isinstance(outcome.success, np.bool_):  # would serialise as the string "True"
            outcome.success = bool(outcome.success)
        kind = outcome.expectation_config.type
        kept = {k: v for k, v in (outcome.result or {}).items()
                if k in _COUNT_KEYS or (kind in _OBSERVED_OK and k in ("observed_value",
                                                                         "details"))}
        if "partial_unexpected_list" in kept:
            kept["partial_unexpected_list"] = []
        outcome.result = kept
        info = outcome.exception_info or {}
        for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
            if entry.get("raised_exception"):
                entry.update(exception_message="(scrubbed)", exception_traceback="(scrubbed)")


def run_suite(frame: pd.DataFrame, suite: dict[str, Any], *, max_rows: int,
              docs_dir: Path | None = None, run_name: str = "run",
              batch_id: str = "batch") -> dict[str, Any]:
    """Validate `frame` against a suite dict in an ephemeral GX context; returns the
    scrubbed JSON result and, with `docs_dir`, builds Data Docs there from it.

    The row-count maximum is tightened to `max_rows` (never loosened). A Data Docs
    failure is logged, never raised: the verdict does not depend on the HTML.
    """
    import great_expectations as gx  # ~2-3 s: imported only when a run gets this far
    from great_expectations.data_context.types.base import ProgressBarsConfig

    expectations = [dict(e, kwargs=dict(e.get("kwargs", {}))) for e in suite["expectations"]]
    for exp in expectations:
        if exp["type"] == _ROW_COUNT:
            exp["kwargs"]["max_value"] = min(exp["kwargs"].get("max_value") or max_rows, max_rows)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no stderr bars
    context.variables.data_docs_sites = {}  # not the default site in a temp directory
    gx_suite = context.suites.add(gx.ExpectationSuite(**{**suite, "expectations": expectations}))
    batch = (context.data_sources.add_pandas("pandas").add_dataframe_asset("dataset")
             .add_batch_definition_whole_dataframe("whole")
             .get_batch(batch_parameters={"dataframe": frame}))
    # BASIC with no partial lists, then scrubbed: counts only, no cell values.
    result = batch.validate(gx_suite, result_format={"result_format": "BASIC",
                                                     "partial_unexpected_count": 0})
    scrub(result)
    out: dict[str, Any] = result.to_json_dict()
    if docs_dir is not None:
        try:
            _build_docs(context, result, docs_dir, suite_name=gx_suite.name,
                        run_name=run_name, batch_id=batch_id)
        except Exception as exc:  # noqa: BLE001 - evidence, not a gate
            log.warning("Data Docs not built (%s); the JSON result is kept", type(exc).__name__)
    return out


def _build_docs(context: Any, result: Any, docs_dir: Path, *, suite_name: str, run_name: str,
                batch_id: str) -> None:
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    for outcome in result.results:  # GX's renderer needs a percent next to a count
        if "unexpected_count" in outcome.result and "unexpected_percent" not in outcome.result:
            outcome.result = {k: v for k, v in outcome.result.items()
                              if k not in ("unexpected_count", "missing_count")}
    if docs_dir.is_dir() and not docs_dir.is_symlink():
        shutil.rmtree(docs_dir)  # this run's previous attempt
    docs_dir.mkdir(parents=True, mode=0o700)
    context.variables.data_docs_sites = {"run": {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}}
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
        run_id=RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC)),
        batch_identifier=batch_id)
    result.meta.update(run_id=key.run_id, validation_time=key.run_id.run_time)
    context.validation_results_store.set(key, result)
    context.build_data_docs(site_names=["run"])
    _prune_static(docs_dir)


def _prune_static(docs_dir: Path) -> None:
    """Drop the tutorial GIFs and fonts no page uses (~4 MB of every run's evidence)."""
    pages = " ".join(p.read_text(errors="replace") for p in docs_dir.rglob("*")
                     if p.suffix in (".html", ".css") and p.is_file())
    for asset in [p for p in (docs_dir / "static").rglob("*") if p.is_file()]:
        if asset.name not in pages:
            asset.unlink()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)


def validate(ctx: RunContext, dataset: Dataset) -> tuple[ValidationOutput, list[GateResult]]:
    """Check the suite's pin, then validate the dataset against it.

    The evidence (``validation_result.json`` and ``data_docs/``) is written to
    `evidence_dir` whether or not the data passes, so a blocked run keeps it.

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The dataset with the suite digest and evidence paths, and this stage's gate results.

    Raises:
        GateFailed: the suite was tampered with or the data failed an expectation.
    """
    ds, gates = ctx.settings.dataset, StageGates(ctx)
    try:
        raw: bytes | None = read_capped(ds.suite, max_bytes=_SUITE_MAX_BYTES,
                                        follow_symlinks=True)
    except OSError:
        raw = None
    gates.enforce(run_check("validate.suite_integrity", check_suite_integrity, raw,
                            expected=ds.suite_sha256))
    assert raw is not None  # the integrity gate passed
    result: dict[str, Any] | None = None
    expected, error = -1, None
    out_dir = evidence_dir(ctx)
    try:
        suite = json.loads(raw)
        expected = len(suite["expectations"])
        result = run_suite(dataset.frame, suite, max_rows=ds.max_rows,
                           docs_dir=out_dir / DOCS_DIR, run_name=ctx.run_id,
                           batch_id=f"sha256-{dataset.sha256[:16]}")
    except Exception as exc:  # noqa: BLE001 - a suite that cannot run is a failed gate
        error = type(exc).__name__
    result_path = out_dir / RESULT_FILE
    _write_json(result_path, result if result is not None else {"success": False,
                                                                "error": error})
    gate = run_check("validate.expectations", check_expectations, result, expected=expected,
                     error=error)
    log.info("validation evidence written to %s", out_dir)
    gates.enforce(gate)
    return (ValidationOutput(dataset, hashlib.sha256(raw).hexdigest(), result_path, out_dir),
            gates.results)


def summary_markdown(results: list[GateResult], out_dir: Path) -> str:
    """The "validation-summary" artifact: verdicts, counts, failing expectations, evidence."""
    lines = ["# Validation", "", "| gate | verdict | measured | threshold |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {'passed' if r.passed else '**BLOCKED**'} | "
                     f"{json.dumps(r.metrics)} | {json.dumps(r.threshold)} |")
    try:
        saved = json.loads(read_capped(out_dir / RESULT_FILE, max_bytes=_SUITE_MAX_BYTES))
    except (OSError, ValueError):
        saved = {}
    failing = failing_expectations(saved) if "results" in saved else []
    lines += ["", f"Failing expectations: {len(failing)}"]
    lines += [f"- `{f}`" for f in failing[:50]] + ([f"- and {len(failing) - 50} more"]
                                                   if len(failing) > 50 else [])
    index = out_dir / DOCS_DIR / "index.html"
    lines += ["", f"Data Docs: `{index}`" if index.is_file() else "Data Docs: not built",
              f"Result JSON: `{out_dir / RESULT_FILE}`"]
    return "\n".join(lines)


@task(name="validate", cache_policy=NO_CACHE, persist_result=False)  # cached = gates skipped
def validate_task(ctx: RunContext, dataset: Dataset) -> tuple[ValidationOutput, list[GateResult]]:
    """Prefect task: check the suite pin and validate the dataset (see `validate`), and
    publish the "validation-summary" markdown artifact, blocked or not.

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The validation output and this stage's gate results.
    """
    try:
        out, results = validate(ctx, dataset)
    except GateFailed as exc:
        create_markdown_artifact(key="validation-summary",
                                 markdown=summary_markdown(exc.results, evidence_dir(ctx)),
                                 description=f"blocked by {exc.gate.name}")
        raise
    create_markdown_artifact(key="validation-summary",
                             markdown=summary_markdown(results, out.evidence_dir),
                             description="all expectations passed")
    return out, results


# --- deriving a suite from trusted data ----------------------------------------------------

def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) and value != 0 else float(value)


def derive_suite(frame: pd.DataFrame, *, name: str, target: str, notes: str,
                 min_rows: int = 100, max_rows: int = 2_000_000) -> dict[str, Any]:
    """The calibrated suite for a trusted dataset with numeric features and a label.

    Per feature: float type, no nulls, values in [min - |min|/2, max + |max|/2],
    mean within +-0.5 sd (5 standard errors at `min_rows`), sd in [sd/3, 3 sd],
    quartiles within +-1 IQR. Table: exact column set, rows >= `min_rows`. Label:
    integer, no nulls, values in the observed set, every class present. Rows in
    [`min_rows`, `max_rows`] (the maximum is also capped by ``dataset.max_rows``).
    """
    labels = sorted(int(v) for v in frame[target].dropna().unique())
    exps: list[dict[str, Any]] = [
        {"type": "expect_table_columns_to_match_set",
         "kwargs": {"column_set": [str(c) for c in frame.columns], "exact_match": True}},
        {"type": _ROW_COUNT, "kwargs": {"min_value": min_rows, "max_value": max_rows}},
        {"type": "expect_column_values_to_be_in_type_list",
         "kwargs": {"column": target, "type_list": ["int64", "int32"]}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": target}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": target, "value_set": labels}},
        {"type": "expect_column_distinct_values_to_equal_set",
         "kwargs": {"column": target, "value_set": labels}}]
    for col in (c for c in frame.columns if c != target):
        s = frame[col].astype("float64")
        lo, hi, mean, sd = float(s.min()), float(s.max()), float(s.mean()), float(s.std())
        q = [float(v) for v in s.quantile([0.25, 0.5, 0.75])]
        iqr, c = q[2] - q[0], str(col)
        exps += [
            {"type": "expect_column_values_to_be_in_type_list",
             "kwargs": {"column": c, "type_list": ["float64", "float32"]}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}},
            {"type": "expect_column_values_to_be_between",
             "kwargs": {"column": c, "min_value": _sig(lo - abs(lo) / 2, 6),
                        "max_value": _sig(hi + abs(hi) / 2, 6)}},
            {"type": "expect_column_mean_to_be_between",
             "kwargs": {"column": c, "min_value": _sig(mean - sd / 2),
                        "max_value": _sig(mean + sd / 2)}},
            {"type": "expect_column_stdev_to_be_between",
             "kwargs": {"column": c, "min_value": _sig(sd / 3), "max_value": _sig(sd * 3)}},
            {"type": "expect_column_quantile_values_to_be_between",
             "kwargs": {"column": c, "quantile_ranges": {
                 "quantiles": [0.25, 0.5, 0.75],
                 "value_ranges": [[_sig(v - iqr), _sig(v + iqr)] for v in q]}}}]
    return {"name": name, "meta": {"notes": notes}, "expectations": exps}


def main(argv: list[str] | None = None) -> int:
    """``python -m tasks.validate DATA.csv --target COL --name NAME --notes TEXT``: print a
    suite derived from trusted data (then review it and pin its sha256)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.validate", description=main.__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--notes", default="")
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument("--max-rows", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    suite = derive_suite(pd.read_csv(args.data), name=args.name, target=args.target,
                         notes=args.notes, min_rows=args.min_rows, max_rows=args.max_rows)
    print(json.dumps(suite, indent=2))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
