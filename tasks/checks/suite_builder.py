"""Deriving a calibrated expectation suite from trusted data, outside any run.

``secure-pipeline suite DATA --config C --out SUITE`` (and ``secure-pipeline init``)
derive the suite with the config's column roles and write it; review it and pin its
sha256 in ``dataset.suite_sha256``. The validate stage only ever reads that pinned
file, so a suite changes through review, never because the data drifted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.checks.expectations import ROW_COUNT
from tasks.common.files import PUBLIC, sha256_bytes, write_atomic

CATEGORY_MOSTLY = 0.98  # share of non-missing values that must be known categories
MISSING_MARGIN = 0.05  # least allowance above the observed missing rate (imputed inputs)
INT_TYPES = ["int64", "int32"]
FLOAT_TYPES = ["float64", "float32"]
# Relative slack for floating point: GX and pandas may sum a column in another order,
# so a mean or a standard deviation can differ in its last bits between the two.
FLOAT_GUARD = 2.0**-40
ROUND_DIGITS = 2  # bounds keep this many digits below the leading digit of the margin
FLOAT_DIGITS = 16  # finer than this, relative to the value, a float has no digits


def outward(lo: float, hi: float, *, margin: float, magnitude: float = 0.0) -> list[float]:
    """[lo, hi] widened by the floating-point guard and rounded outward (floor the lower,
    ceil the upper) at a precision set by `margin`, the band's spread, never by the
    values' magnitude: a year 2007-2009 keeps digits beyond 2008, so the band around its
    mean 2008.02 stays around it.

    Args:
        lo, hi: The band before rounding (lo <= hi).
        margin: How far the band reaches beyond the observed value (a share of the
            column's spread, standard error or range); 0 for an exact band.
        magnitude: The size of the values the bound is measured on (the mean, for a
            standard deviation), when it exceeds the bounds' own.

    Returns:
        ``[low, high]`` with ``low <= lo`` and ``high >= hi``, both floats.
    """
    size = max(abs(lo), abs(hi), abs(magnitude))
    guard = FLOAT_GUARD * size
    lo, hi = lo - guard, hi + guard
    step = margin if margin > 0 else hi - lo
    if not (math.isfinite(step) and step > 0 and math.isfinite(size)):
        return [float(lo), float(hi)]  # an exact band (a constant zero), or not a number
    exponent = math.floor(math.log10(step)) - ROUND_DIGITS
    exponent = max(exponent, math.floor(math.log10(size)) - FLOAT_DIGITS)
    quantum = Decimal(1).scaleb(exponent)
    # Decimal(x) is x exactly; rounding it toward -inf (+inf) and back to the nearest
    # float cannot cross x again, which is a float itself.
    low = float(Decimal(lo).quantize(quantum, rounding=ROUND_FLOOR))
    high = float(Decimal(hi).quantize(quantum, rounding=ROUND_CEILING))
    return [low, high]


def _native(value: Any) -> Any:
    """A cell value as JSON has it: numpy scalars unwrapped, 3.0 as 3."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _value_set(series: pd.Series) -> list[Any]:
    values = {_native(v) for v in series.dropna().unique()}
    return sorted(values, key=lambda v: (type(v).__name__, v))


def _value_range(lo: float, hi: float) -> list[float]:
    """[min - |min|/2, max + |max|/2], a scale-free band for a one-signed quantity; a
    range that crosses zero is widened by half its width instead (|min|/2 near zero
    means nothing)."""
    if lo < 0 < hi:
        half = (hi - lo) / 2
        return outward(lo - half, hi + half, margin=half)
    low = outward(lo - abs(lo) / 2, lo, margin=abs(lo) / 2)[0]
    high = outward(hi, hi + abs(hi) / 2, margin=abs(hi) / 2)[1]
    return [low, high]


def _between(column: str, bounds: list[float]) -> dict[str, Any]:
    return {"column": column, "min_value": bounds[0], "max_value": bounds[1]}


def _stdev_band(sd: float, mean: float) -> list[float]:
    """[sd/3, 3 sd], rounded outward; the floating-point guard is the mean's, since a
    constant column's deviation is rounding noise on its mean."""
    low, high = outward(sd / 3, sd * 3, margin=sd / 3, magnitude=mean)
    return [max(low, 0.0), high]


def _type_check(column: str, series: pd.Series, *, may_be_missing: bool) -> dict[str, Any]:
    """Numbers by dtype (integers may turn float when a value is missing); text by value:
    GX matches no type name to pandas' string dtype, but checks ``str`` per value."""
    if pd.api.types.is_bool_dtype(series):
        types = ["bool"]
    elif pd.api.types.is_integer_dtype(series):
        types = INT_TYPES + (["float64"] if may_be_missing else [])
    elif pd.api.types.is_float_dtype(series):
        types = list(FLOAT_TYPES)
    else:
        return {
            "type": "expect_column_values_to_be_of_type",
            "kwargs": {"column": column, "type_": "str"},
        }
    if str(series.dtype) not in types:
        types.append(str(series.dtype))
    return {
        "type": "expect_column_values_to_be_in_type_list",
        "kwargs": {"column": column, "type_list": types},
    }


def _label_type_check(target: str, labels: pd.Series) -> dict[str, Any]:
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    if numeric and all(float(v).is_integer() for v in labels.dropna().unique()):
        types = list(INT_TYPES)  # integer classes (3.0 in a float column is not one)
        if str(labels.dtype) not in types:
            types.append(str(labels.dtype))
        return {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": target, "type_list": types},
        }
    return _type_check(target, labels, may_be_missing=False)


def _not_null(column: str, series: pd.Series, *, policy: str, min_rows: int) -> dict[str, Any]:
    """No missing value for a "refuse" column; else at most the observed rate plus a
    margin (4 standard errors at `min_rows`, at least MISSING_MARGIN)."""
    kwargs: dict[str, Any] = {"column": column}
    rate = float(series.isna().mean()) if len(series) else 0.0
    if policy == "refuse":
        if rate:
            raise ValueError(
                f"column {column!r} has missing values but its missing policy is refuse: "
                "set dataset.missing for it, or clean the trusted data"
            )
    else:
        margin = max(MISSING_MARGIN, 4 * math.sqrt(rate * (1 - rate) / max(min_rows, 1)))
        kwargs["mostly"] = math.floor(max(0.0, 1 - (rate + margin)) * 10_000) / 10_000
    return {"type": "expect_column_values_to_not_be_null", "kwargs": kwargs}


QUARTILES = (0.25, 0.5, 0.75)


def _quartile_bands(
    s: pd.Series, q: list[float], iqr: float, *, min_rows: int
) -> list[list[float]]:
    """Each quartile's band: +-1 IQR; with no IQR (values piled up: a column 76% zero
    has all three quartiles at 0), the values between the quantiles 4 standard errors
    (at `min_rows`) below and above it instead. The band [0, 0] failed clean 80%
    resamples whose 75th percentile was the first non-zero value."""
    if iqr > 0:
        return [outward(v - iqr, v + iqr, margin=iqr) for v in q]
    bands = []
    for share in QUARTILES:
        step = 4 * math.sqrt(share * (1 - share) / max(min_rows, 1))
        wanted = [max(0.0, share - step), min(1.0, share + step)]
        below, above = (float(x) for x in s.quantile(wanted))
        bands.append(outward(below, above, margin=above - below))
    return bands


def _numeric(column: str, series: pd.Series, *, policy: str, min_rows: int) -> list[dict[str, Any]]:
    try:
        s = series.astype("float64")
    except (TypeError, ValueError):  # pandas' message quotes a cell: say what, not which
        raise ValueError(
            f"numeric column {column!r} holds text: declare it categorical or ignored"
        ) from None
    lo, hi, mean, sd = float(s.min()), float(s.max()), float(s.mean()), float(s.std())
    q = [float(v) for v in s.quantile(QUARTILES)]
    iqr = q[2] - q[0]
    bounds = _value_range(lo, hi)
    if not math.isfinite(sd):  # one row: no spread to measure
        sd = 0.0
    return [
        _type_check(column, series, may_be_missing=policy != "refuse"),
        _not_null(column, series, policy=policy, min_rows=min_rows),
        {"type": "expect_column_values_to_be_between", "kwargs": _between(column, bounds)},
        {
            "type": "expect_column_mean_to_be_between",
            "kwargs": _between(column, outward(mean - sd / 2, mean + sd / 2, margin=sd / 2)),
        },
        {
            "type": "expect_column_stdev_to_be_between",
            "kwargs": _between(column, _stdev_band(sd, mean)),
        },
        {
            "type": "expect_column_quantile_values_to_be_between",
            "kwargs": {
                "column": column,
                "quantile_ranges": {
                    "quantiles": list(QUARTILES),
                    "value_ranges": _quartile_bands(s, q, iqr, min_rows=min_rows),
                },
            },
        },
    ]


def _categorical(
    column: str, series: pd.Series, *, policy: str, min_rows: int
) -> list[dict[str, Any]]:
    return [
        _type_check(column, series, may_be_missing=policy != "refuse"),
        _not_null(column, series, policy=policy, min_rows=min_rows),
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {
                "column": column,
                "value_set": _value_set(series),
                "mostly": CATEGORY_MOSTLY,
            },
        },
    ]


def derive_suite(
    frame: pd.DataFrame,
    *,
    name: str,
    target: str,
    notes: str,
    numeric: Iterable[str] | None = None,
    categorical: Iterable[str] = (),
    ignored: Iterable[str] = (),
    missing: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    min_rows: int = 100,
    max_rows: int = 2_000_000,
) -> dict[str, Any]:
    """The calibrated suite for a trusted dataset (as validation will see it: dropped
    PII already gone).

    Table: exact column set (every column of `frame`), rows in [`min_rows`,
    `max_rows`] (the maximum is also capped by ``dataset.max_rows``). Label: integer
    types (or ``str`` values for text labels), no nulls, values in the observed set,
    every class present. Per numeric input: float type (integers may be float too when
    missing values are allowed), missing values, values in [min - |min|/2,
    max + |max|/2] (half the range beyond each end if it crosses zero), mean within
    +-0.5 sd (5 standard errors at `min_rows`), sd in [sd/3, 3 sd], quartiles within
    +-1 IQR (with no IQR: between the quantiles 4 standard errors away,
    `_quartile_bands`); missing values are skipped by each. Every bound is rounded outward (the
    lower one down, the upper one up) at a hundredth of its margin (`outward`), so it
    holds the observed value however large the column's magnitude is.
    Per categorical input: type, missing values, values in the observed categories
    for at least 98% of the non-missing rows (a few new categories pass, a surge
    fails). Missing values: none for a "refuse" input; for an imputed one at most the
    observed rate + max(0.05, 4 standard errors at `min_rows`). Ignored and `exclude`
    columns (ids, pseudonymised PII) are only present in the column set.

    Args:
        numeric: Numeric inputs; None: every column but the target, `categorical`,
            `ignored` and `exclude` (the bundled numeric table).
        missing: Policy per input ("median", "most_frequent", "constant", "refuse");
            an unlisted input is "refuse".

    Raises:
        ValueError: a numeric input holds text, a declared column is absent, or a
            "refuse" input has missing values in the trusted data.
    """
    cats = list(categorical)
    skip = {target, *cats, *ignored, *exclude}
    nums = [c for c in frame.columns if c not in skip] if numeric is None else list(numeric)
    absent = [c for c in [target, *nums, *cats] if c not in frame.columns]
    if absent:
        raise ValueError(f"declared column(s) {absent[:10]} not in the data")
    policies = dict(missing or {})
    labels = _value_set(frame[target])
    exps: list[dict[str, Any]] = [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": [str(c) for c in frame.columns], "exact_match": True},
        },
        {"type": ROW_COUNT, "kwargs": {"min_value": min_rows, "max_value": max_rows}},
        _label_type_check(target, frame[target]),
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
    roles = {**dict.fromkeys(nums, _numeric), **dict.fromkeys(cats, _categorical)}
    for col in (c for c in frame.columns if c in roles):  # the table's order
        exps += roles[col](
            str(col),
            frame[col],
            policy=policies.get(col, "refuse"),
            min_rows=min_rows,
        )
    return {"name": name, "meta": {"notes": notes}, "expectations": exps}


def suite_text(suite: Mapping[str, Any]) -> str:
    return json.dumps(suite, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_suite(suite: Mapping[str, Any], path: Path) -> str:
    """Write the suite (indented, key-sorted JSON) in one rename; return its sha256,
    the value to pin in ``dataset.suite_sha256``."""
    text = suite_text(suite)
    write_atomic(path, text, mode=PUBLIC)
    return sha256_bytes(text.encode())
