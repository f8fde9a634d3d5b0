"""Deriving a calibrated expectation suite from trusted data, outside any run.

``python -m tasks.checks.suite_builder DATA.csv --target COL --name NAME --notes TEXT``
prints the suite; review it, save it under ``expectations/`` and pin its sha256 in
``dataset.suite_sha256``. The validate stage only ever reads that pinned file, so
a suite changes through review, never because the data drifted.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.checks.expectations import ROW_COUNT


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) and value != 0 else float(value)


def derive_suite(
    frame: pd.DataFrame,
    *,
    name: str,
    target: str,
    notes: str,
    min_rows: int = 100,
    max_rows: int = 2_000_000,
) -> dict[str, Any]:
    """The calibrated suite for a trusted dataset with numeric features and a label.

    Per feature: float type, no nulls, values in [min - |min|/2, max + |max|/2],
    mean within +-0.5 sd (5 standard errors at `min_rows`), sd in [sd/3, 3 sd],
    quartiles within +-1 IQR. Table: exact column set, rows >= `min_rows`. Label:
    integer, no nulls, values in the observed set, every class present. Rows in
    [`min_rows`, `max_rows`] (the maximum is also capped by ``dataset.max_rows``).
    """
    labels = sorted(int(v) for v in frame[target].dropna().unique())
    exps: list[dict[str, Any]] = [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": [str(c) for c in frame.columns], "exact_match": True},
        },
        {"type": ROW_COUNT, "kwargs": {"min_value": min_rows, "max_value": max_rows}},
        {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": target, "type_list": ["int64", "int32"]},
        },
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": target}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": target, "value_set": labels},
        },
        {
            "type": "expect_column_distinct_values_to_equal_set",
            "kwargs": {"column": target, "value_set": labels},
        },
    ]
    for col in (c for c in frame.columns if c != target):
        s = frame[col].astype("float64")
        lo, hi, mean, sd = float(s.min()), float(s.max()), float(s.mean()), float(s.std())
        q = [float(v) for v in s.quantile([0.25, 0.5, 0.75])]
        iqr, c = q[2] - q[0], str(col)
        exps += [
            {
                "type": "expect_column_values_to_be_in_type_list",
                "kwargs": {"column": c, "type_list": ["float64", "float32"]},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": c,
                    "min_value": _sig(lo - abs(lo) / 2, 6),
                    "max_value": _sig(hi + abs(hi) / 2, 6),
                },
            },
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {
                    "column": c,
                    "min_value": _sig(mean - sd / 2),
                    "max_value": _sig(mean + sd / 2),
                },
            },
            {
                "type": "expect_column_stdev_to_be_between",
                "kwargs": {"column": c, "min_value": _sig(sd / 3), "max_value": _sig(sd * 3)},
            },
            {
                "type": "expect_column_quantile_values_to_be_between",
                "kwargs": {
                    "column": c,
                    "quantile_ranges": {
                        "quantiles": [0.25, 0.5, 0.75],
                        "value_ranges": [[_sig(v - iqr), _sig(v + iqr)] for v in q],
                    },
                },
            },
        ]
    return {"name": name, "meta": {"notes": notes}, "expectations": exps}


def main(argv: list[str] | None = None) -> int:
    """``python -m tasks.checks.suite_builder DATA.csv --target COL --name NAME --notes
    TEXT``: print a suite derived from trusted data (then review it and pin its sha256)."""
    parser = argparse.ArgumentParser(
        prog="python -m tasks.checks.suite_builder", description=main.__doc__
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--notes", default="")
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument("--max-rows", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    suite = derive_suite(
        pd.read_csv(args.data),
        name=args.name,
        target=args.target,
        notes=args.notes,
        min_rows=args.min_rows,
        max_rows=args.max_rows,
    )
    print(json.dumps(suite, indent=2))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
