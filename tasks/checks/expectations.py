"""Running an expectation suite with Great Expectations, keeping evidence that holds
no cell value.

The GX result and the Data Docs built from it are kept with the run (and logged to
MLflow), so they must not leak the data: results are requested in BASIC format
without partial lists and then scrubbed, so that only counts, types, column names,
means and standard deviations survive (a min, max, quantile or distinct value is a
cell value). Data Docs assets no page uses are pruned.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.suite_batches import plan_batches

log = logging.getLogger(__name__)
ROW_COUNT = "expect_table_row_count_to_be_between"
# Result keys kept for every expectation (counts only), and the expectation types whose
# observed value is an aggregate or schema fact rather than a cell value.
_COUNT_KEYS = frozenset(
    {
        "element_count",
        "missing_count",
        "missing_percent",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
        "partial_unexpected_list",
    }
)
_OBSERVED_OK = frozenset(
    {
        ROW_COUNT,
        "expect_table_columns_to_match_set",
        "expect_table_column_count_to_equal",
        "expect_column_values_to_be_in_type_list",
        "expect_column_mean_to_be_between",
        "expect_column_stdev_to_be_between",
    }
)


def scrub(result: Any) -> None:
    """Remove anything that can hold a cell value from a GX suite result, in place."""
    for outcome in result.results:
        if isinstance(outcome.success, np.bool_):  # would serialise as the string "True"
            outcome.success = bool(outcome.success)
        kind = outcome.expectation_config.type
        kept = {
            k: v
            for k, v in (outcome.result or {}).items()
            if k in _COUNT_KEYS or (kind in _OBSERVED_OK and k in ("observed_value", "details"))
        }
        if "partial_unexpected_list" in kept:
            kept["partial_unexpected_list"] = []
        outcome.result = kept
        info = outcome.exception_info or {}
        for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
            if entry.get("raised_exception"):
                entry.update(exception_message="(scrubbed)", exception_traceback="(scrubbed)")


# GX's column mean, standard deviation and sum metrics look for `decimal.Decimal` objects
# in every value of the column, in a Python loop, even in a float64 column: at 1M rows
# and 16 numeric inputs, 2.4 s of a 5.1 s validation. A column whose dtype is not
# ``object`` cannot hold a Decimal: for NumPy's bool, int and float columns the loop is
# skipped; every other column (object, extension dtypes) still gets GX's conversion.
# Applied once, the first time a suite runs.
DECIMAL_SCAN_MODULES = tuple(
    f"great_expectations.expectations.metrics.column_aggregate_metrics.{name}"
    for name in ("column_mean", "column_standard_deviation", "column_sum")
)


def skip_decimal_scan_on_typed_columns() -> None:
    import importlib

    import great_expectations.util as gx_util

    original = gx_util.convert_pandas_series_decimal_to_float_dtype

    def typed_columns_hold_no_decimal(data: pd.Series, inplace: bool = False) -> pd.Series | None:
        if isinstance(data.dtype, np.dtype) and data.dtype.kind in "biuf":  # plain numbers
            return None if inplace else data
        return original(data, inplace=inplace)

    for name in DECIMAL_SCAN_MODULES:
        module = importlib.import_module(name)
        current = getattr(module, "convert_pandas_series_decimal_to_float_dtype", None)
        if current is original:  # only GX's own function, and only once
            module.convert_pandas_series_decimal_to_float_dtype = (  # type: ignore[attr-defined]
                typed_columns_hold_no_decimal
            )


# GX fingerprints every batch's frame (an MD5 of `pandas.util.hash_pandas_object` over all
# its cells, twice per batch: when the batch is built and when it is validated) for a
# `pandas_data_fingerprint` batch marker. We never read it (the run's batch id is the
# dataset's SHA-256), and GX itself leaves it out above `HASH_THRESHOLD` bytes, so no
# consumer can rely on it: at 1M rows it cost 0.35 s. GX offers no option to skip it;
# setting the threshold to 0 does (idempotent; every suite run sets it).
def skip_batch_fingerprint() -> None:
    from great_expectations.execution_engine import pandas_execution_engine as engine

    engine.HASH_THRESHOLD = 0  # `memory_usage().sum() < 0` never holds: no fingerprint


# Columns per narrow batch (see `tasks.checks.suite_batches`): fewer columns copy less
# per column-map expectation, fewer batches pay GX's fixed cost per validation less often.
COLUMNS_PER_BATCH = 4


def run_suite(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    *,
    max_rows: int,
    docs_dir: Path | None = None,
    run_name: str = "run",
    batch_id: str = "batch",
    columns_per_batch: int | None = COLUMNS_PER_BATCH,
) -> dict[str, Any]:
    """Validate `frame` against a suite dict in an ephemeral GX context; returns the
    scrubbed JSON result and, with `docs_dir`, builds Data Docs there from it.

    The row-count maximum is tightened to `max_rows` (never loosened). Each column's
    expectations run on a batch of only the columns they read (`columns_per_batch` per
    batch; None: every expectation on the whole frame, as one GX validation), the rest
    on the whole frame; the results are assembled into one suite result in the suite's
    order. A Data Docs failure is logged, never raised: the verdict does not depend on
    the HTML.
    """
    import great_expectations as gx  # ~2-3 s: imported only when a run gets this far
    from great_expectations.data_context.types.base import ProgressBarsConfig

    skip_decimal_scan_on_typed_columns()
    skip_batch_fingerprint()

    expectations = [dict(e, kwargs=dict(e.get("kwargs", {}))) for e in suite["expectations"]]
    for exp in expectations:
        if exp["type"] == ROW_COUNT:
            exp["kwargs"]["max_value"] = min(exp["kwargs"].get("max_value") or max_rows, max_rows)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no stderr bars
    context.variables.data_docs_sites = {}  # not the default site in a temp directory
    # GX writes its version into the suite's meta: give it a copy, never the caller's.
    meta = dict(suite.get("meta") or {})
    gx_suite = context.suites.add(
        gx.ExpectationSuite(**{**suite, "meta": meta, "expectations": expectations})
    )
    asset = context.data_sources.add_pandas("pandas").add_dataframe_asset("dataset")
    # BASIC with no partial lists, then scrubbed: counts only, no cell values.
    result_format = {"result_format": "BASIC", "partial_unexpected_count": 0}
    if columns_per_batch is None:
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
            batch_parameters={"dataframe": frame}
        )
        result = batch.validate(gx_suite, result_format=result_format)
    else:
        result = _validate_narrow(
            asset.add_batch_definition_whole_dataframe("whole"),
            gx_suite,
            frame,
            result_format=result_format,
            columns_per_batch=columns_per_batch,
        )
    scrub(result)
    out: dict[str, Any] = result.to_json_dict()
    if docs_dir is not None:
        try:
            _build_docs(
                context,
                result,
                docs_dir,
                suite_name=gx_suite.name,
                run_name=run_name,
                batch_id=batch_id,
            )
        except Exception as exc:  # noqa: BLE001 - evidence, not a gate
            log.warning("Data Docs not built (%s); the JSON result is kept", type(exc).__name__)
    return out


def _validate_narrow(
    definition: Any,
    gx_suite: Any,
    frame: pd.DataFrame,
    *,
    result_format: dict[str, Any],
    columns_per_batch: int,
) -> Any:
    """Run `gx_suite` as planned by `plan_batches`, one GX validation per batch, and
    assemble one `ExpectationSuiteValidationResult` in the suite's order.

    Each batch is validated straight from the batch definition (GX builds the batch
    once). The result's meta (GX version, batch spec and markers, the asset) is the
    whole-frame batch's, or the first batch's if every expectation ran narrow.
    """
    from great_expectations import ExpectationSuite
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.validator.v1_validator import Validator
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    configs = gx_suite.expectation_configurations  # with the ids the context gave them
    plans = plan_batches(
        [(c.type, c.kwargs) for c in configs],
        list(frame.columns),
        columns_per_batch=columns_per_batch,
    )
    by_id: dict[str, Any] = {}
    first: Any = None
    for plan in plans:
        batch_frame = frame if plan.columns is None else frame[list(plan.columns)]
        part = Validator(
            batch_definition=definition,
            batch_parameters={"dataframe": batch_frame},
            result_format=result_format,
        ).validate_expectation_suite(
            ExpectationSuite(name=gx_suite.name, expectations=[configs[i] for i in plan.indices])
        )
        first = part if first is None else first
        for outcome in part.results:
            config = outcome.expectation_config
            if config is not None and config.id is not None:
                by_id[config.id] = outcome
    # An expectation GX did not evaluate stays missing: the count check fails closed.
    results = [by_id[c.id] for c in configs if c.id in by_id]
    stats = calc_validation_statistics(results)
    return ExpectationSuiteValidationResult(
        results=results,
        success=stats.success,
        suite_name=gx_suite.name,
        statistics={
            "evaluated_expectations": stats.evaluated_expectations,
            "successful_expectations": stats.successful_expectations,
            "unsuccessful_expectations": stats.unsuccessful_expectations,
            "success_percent": stats.success_percent,
        },
        meta=first.meta,
        batch_id=first.batch_id,
    )


def _build_docs(
    context: Any, result: Any, docs_dir: Path, *, suite_name: str, run_name: str, batch_id: str
) -> None:
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    for outcome in result.results:  # GX's renderer needs a percent next to a count
        if "unexpected_count" in outcome.result and "unexpected_percent" not in outcome.result:
            outcome.result = {
                k: v
                for k, v in outcome.result.items()
                if k not in ("unexpected_count", "missing_count")
            }
    if docs_dir.is_dir() and not docs_dir.is_symlink():
        shutil.rmtree(docs_dir)  # this run's previous attempt
    docs_dir.mkdir(parents=True, mode=0o700)
    context.variables.data_docs_sites = {
        "run": {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    }
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
        run_id=RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC)),
        batch_identifier=batch_id,
    )
    result.meta.update(run_id=key.run_id, validation_time=key.run_id.run_time)
    context.validation_results_store.set(key, result)
    context.build_data_docs(site_names=["run"])
    _prune_static(docs_dir)


def _prune_static(docs_dir: Path) -> None:
    """Drop the tutorial GIFs and fonts no page uses (~4 MB of every run's evidence)."""
    pages = " ".join(
        p.read_text(errors="replace")
        for p in docs_dir.rglob("*")
        if p.suffix in (".html", ".css") and p.is_file()
    )
    for asset in [p for p in (docs_dir / "static").rglob("*") if p.is_file()]:
        if asset.name not in pages:
            asset.unlink()
