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


def run_suite(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    *,
    max_rows: int,
    docs_dir: Path | None = None,
    run_name: str = "run",
    batch_id: str = "batch",
) -> dict[str, Any]:
    """Validate `frame` against a suite dict in an ephemeral GX context; returns the
    scrubbed JSON result and, with `docs_dir`, builds Data Docs there from it.

    The row-count maximum is tightened to `max_rows` (never loosened). A Data Docs
    failure is logged, never raised: the verdict does not depend on the HTML.
    """
    import great_expectations as gx  # ~2-3 s: imported only when a run gets this far
    from great_expectations.data_context.types.base import ProgressBarsConfig

    skip_decimal_scan_on_typed_columns()

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
    batch = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset("dataset")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    # BASIC with no partial lists, then scrubbed: counts only, no cell values.
    result = batch.validate(
        gx_suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0}
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
