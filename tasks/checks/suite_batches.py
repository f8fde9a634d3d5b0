"""Which columns each expectation of a suite needs: the plan of narrow GX batches.

GX's pandas engine evaluates a column-map expectation (not null, between, in set...) on
its batch's whole frame: it first drops the rows where the column is null with
``df[df[column].notnull()]``, which copies every column of the frame. On a 22-column,
1M-row table that copy, once per column-map expectation, was a third of validation.
An expectation that reads one column gives the same result on a frame that holds only
that column (same rows, same dtype), so `plan_batches` groups the suite's expectations
by the columns they read; `tasks.checks.expectations.run_suite` runs each group on a
frame of just those columns and assembles one result in the suite's order.

Only expectations whose type and every kwarg are listed in `COLUMN_KWARGS` are moved to
a narrow batch. Everything else (table-level ones: row count, column set, column count;
multicolumn and compound ones; a ``row_condition``; an unknown type or kwarg; a column
the frame does not hold) stays on the whole frame, where GX evaluates it as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence, Set
from dataclasses import dataclass

# Kwargs every single-column expectation may carry without reading another column.
_COMMON = frozenset(
    {"column", "mostly", "result_format", "include_config", "catch_exceptions", "batch_id"}
)
_BOUNDS = frozenset({"min_value", "max_value", "strict_min", "strict_max"})
_SET = frozenset({"value_set"})

# FORK: an expectation type that reads only ``kwargs["column"]`` may be added here with
# the kwargs it accepts; any other type or kwarg keeps its expectation on the whole frame.
COLUMN_KWARGS: Mapping[str, frozenset[str]] = {
    "expect_column_values_to_not_be_null": _COMMON,
    "expect_column_values_to_be_null": _COMMON,
    "expect_column_values_to_be_between": _COMMON | _BOUNDS,
    "expect_column_values_to_be_in_set": _COMMON | _SET,
    "expect_column_values_to_not_be_in_set": _COMMON | _SET,
    "expect_column_values_to_be_of_type": _COMMON | {"type_"},
    "expect_column_values_to_be_in_type_list": _COMMON | {"type_list"},
    "expect_column_values_to_be_unique": _COMMON,
    "expect_column_mean_to_be_between": _COMMON | _BOUNDS,
    "expect_column_median_to_be_between": _COMMON | _BOUNDS,
    "expect_column_min_to_be_between": _COMMON | _BOUNDS,
    "expect_column_max_to_be_between": _COMMON | _BOUNDS,
    "expect_column_stdev_to_be_between": _COMMON | _BOUNDS,
    "expect_column_sum_to_be_between": _COMMON | _BOUNDS,
    "expect_column_unique_value_count_to_be_between": _COMMON | _BOUNDS,
    "expect_column_proportion_of_unique_values_to_be_between": _COMMON | _BOUNDS,
    "expect_column_proportion_of_non_null_values_to_be_between": _COMMON | _BOUNDS,
    "expect_column_quantile_values_to_be_between": _COMMON
    | {"quantile_ranges", "allow_relative_error"},
    "expect_column_distinct_values_to_equal_set": _COMMON | _SET,
    "expect_column_distinct_values_to_be_in_set": _COMMON | _SET,
    "expect_column_distinct_values_to_contain_set": _COMMON | _SET,
}


@dataclass(frozen=True)
class BatchPlan:
    """Expectations (indices into the suite) to run on one batch.

    ``columns`` is None for the whole frame, else the frame's columns this batch holds
    (in the frame's order).
    """

    columns: tuple[Hashable, ...] | None
    indices: tuple[int, ...]


def column_of(kind: str, kwargs: Mapping[str, object], unique: Set[Hashable]) -> str | None:
    """The one column an expectation reads, or None if it must run on the whole frame.

    Args:
        kind: The expectation type.
        kwargs: Its kwargs.
        unique: The frame's columns whose name occurs once.
    """
    allowed = COLUMN_KWARGS.get(kind)
    if allowed is None or not set(kwargs) <= allowed:
        return None
    column = kwargs.get("column")
    if not isinstance(column, str) or column not in unique:
        return None  # absent (GX reports it on the whole frame) or a duplicated name
    return column


def plan_batches(
    expectations: Sequence[tuple[str, Mapping[str, object]]],
    columns: Sequence[Hashable],
    *,
    columns_per_batch: int,
) -> list[BatchPlan]:
    """Group a suite's expectations into batches of at most `columns_per_batch` columns.

    Args:
        expectations: Each expectation's type and kwargs, in the suite's order.
        columns: The frame's columns, in order.
        columns_per_batch: How many columns one narrow batch holds (>= 1).

    Returns:
        The whole-frame batch first (if any expectation needs it, or the suite is
        empty), then the narrow batches in the frame's column order. Every index of
        `expectations` is in exactly one batch.
    """
    if columns_per_batch < 1:
        raise ValueError("columns_per_batch must be >= 1")
    counts = Counter(columns)
    unique = {c for c, n in counts.items() if n == 1}
    whole: list[int] = []
    by_column: dict[Hashable, list[int]] = {}
    for i, (kind, kwargs) in enumerate(expectations):
        column = column_of(kind, kwargs, unique)
        if column is None:
            whole.append(i)
        else:
            by_column.setdefault(column, []).append(i)
    ordered = [c for c in columns if c in by_column]
    plans = [BatchPlan(None, tuple(whole))] if whole or not by_column else []
    for start in range(0, len(ordered), columns_per_batch):
        chunk = tuple(ordered[start : start + columns_per_batch])
        plans.append(BatchPlan(chunk, tuple(sorted(i for c in chunk for i in by_column[c]))))
    return plans
