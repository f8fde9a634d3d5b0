"""Column-narrow validation: `run_suite` runs each column's expectations on a frame of
only the columns they read and assembles one result; it must equal GX's own validation
of the whole frame (same expectations, success flags, counts, statistics), on clean
data and on data that fails in every way the suites check, in the suite's order."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.checks.expectations import COLUMNS_PER_BATCH, run_suite
from tasks.checks.suite_batches import BatchPlan, plan_batches
from tasks.checks.suite_builder import derive_suite
from tests.conftest import PROJECT_ROOT
from tests.mixed_table import CATEGORICAL, MISSING, NUMERIC, mixed_table

BUNDLED_SUITE = PROJECT_ROOT / "expectations" / "breast_cancer.json"


def outcomes(result: dict[str, Any]) -> Counter[str]:
    """Every expectation's outcome (config, success, counts, exception flag) as text,
    without GX's per-context expectation id."""
    return Counter(
        json.dumps({**o, "expectation_config": {**o["expectation_config"], "id": None}},
                   sort_keys=True, default=str)
        for o in result["results"]
    )  # fmt: skip


def assert_same(suite: dict[str, Any], frame: pd.DataFrame, *, narrow: int) -> dict[str, Any]:
    """The narrow result equals the whole-frame one; returns the narrow result."""
    whole = run_suite(frame, suite, max_rows=10_000, columns_per_batch=None)
    new = run_suite(frame, suite, max_rows=10_000, columns_per_batch=narrow)
    assert outcomes(new) == outcomes(whole)
    for key in ("success", "statistics", "suite_name", "suite_parameters"):
        assert new[key] == whole[key], key
    assert new["meta"]["active_batch_definition"] == whole["meta"]["active_batch_definition"]
    assert new["meta"]["great_expectations_version"] == whole["meta"]["great_expectations_version"]
    # the suite's order, whatever order GX reports errors in
    order = [(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]]
    got = [(o["expectation_config"]["type"], o["expectation_config"]["kwargs"].get("column"))
           for o in new["results"]]  # fmt: skip
    assert got == [t for t in order if t in set(got)]
    for result in (whole, new):  # GX's whole-frame fingerprint is skipped
        assert "pandas_data_fingerprint" not in result["meta"]["batch_markers"]
    return new


@pytest.fixture(scope="module")
def mixed() -> tuple[dict[str, Any], pd.DataFrame]:
    """A team table (floats, strings, integer codes, missing values) and its suite."""
    roles = {"numeric": NUMERIC, "categorical": CATEGORICAL, "ignored": ["customer_id"],
             "missing": MISSING, "exclude": ["email"]}  # fmt: skip
    suite = derive_suite(mixed_table(2000, seed=0), name="t", target="segment", notes="", **roles)
    return suite, mixed_table(3000, seed=1)


def test_bundled_data_same_result_every_grouping() -> None:
    suite = json.loads(BUNDLED_SUITE.read_text())
    frame = pd.read_csv(PROJECT_ROOT / "data" / "breast_cancer.csv")
    for narrow in (1, COLUMNS_PER_BATCH, 64):
        new = assert_same(suite, frame, narrow=narrow)
        assert new["success"] is True
        assert new["statistics"]["evaluated_expectations"] == len(suite["expectations"])


def test_clean_mixed_table_same_result(mixed: tuple[dict[str, Any], pd.DataFrame]) -> None:
    suite, frame = mixed
    new = assert_same(suite, frame, narrow=COLUMNS_PER_BATCH)
    assert new["success"] is True and frame.isna().any().any()  # nulls were filtered


def test_broken_table_same_failures(mixed: tuple[dict[str, Any], pd.DataFrame]) -> None:
    """Out of range, nulls, an unknown category, text in a numeric column, a missing
    column and a wrong row count, plus expectations that must stay on the whole frame
    (a row condition, a multicolumn one, an unknown type)."""
    suite, frame = mixed
    extra = [
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "age", "min_value": 0, "max_value": 50,
                    "row_condition": 'plan=="basic"', "condition_parser": "pandas"}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "age", "column_B": "tenure", "or_equal": True}},
        {"type": "expect_nothing_at_all", "kwargs": {"column": "age"}},
    ]  # fmt: skip
    suite = {**suite, "expectations": [*suite["expectations"], *extra]}
    g = frame.head(40).copy()  # the suite asks for at least 100 rows
    rng = np.random.default_rng(5)
    g.loc[rng.choice(len(g), 12, replace=False), "income"] = np.nan  # nulls
    g.loc[[1, 2], "balance"] = g["balance"].max() * 1e6  # out of range
    g.loc[3, "region"] = "atlantis"  # unknown category
    g["age"] = g["age"].astype(str)  # text in a numeric column
    g = g.drop(columns=["tenure"])  # a missing column
    new = assert_same(suite, g, narrow=COLUMNS_PER_BATCH)
    failed = {(o["expectation_config"]["type"], o["expectation_config"]["kwargs"].get("column"))
              for o in new["results"] if not o["success"]}  # fmt: skip
    for expected in [
        ("expect_table_row_count_to_be_between", None),
        ("expect_table_columns_to_match_set", None),
        ("expect_column_values_to_not_be_null", "income"),
        ("expect_column_values_to_be_between", "balance"),
        ("expect_column_values_to_be_in_set", "region"),
        ("expect_column_values_to_be_in_type_list", "age"),
        ("expect_column_mean_to_be_between", "tenure"),  # raised: no such column
    ]:
        assert expected in failed, (expected, sorted(failed, key=str))
    # GX drops the unknown type, in both paths: the count check fails closed on it
    assert new["statistics"]["evaluated_expectations"] == len(suite["expectations"]) - 1
    n_failed = sum(not o["success"] for o in new["results"])
    assert new["statistics"]["unsuccessful_expectations"] == n_failed >= len(failed)
    assert new["success"] is False


def test_plan_routes_only_single_column_expectations_to_narrow_batches() -> None:
    exps: list[tuple[str, dict[str, Any]]] = [
        ("expect_table_row_count_to_be_between", {"min_value": 1}),  # 0: table
        ("expect_column_values_to_not_be_null", {"column": "a"}),  # 1
        ("expect_column_mean_to_be_between", {"column": "b", "min_value": 0}),  # 2
        ("expect_column_values_to_not_be_null", {"column": "a", "row_condition": "b>1"}),  # 3
        ("expect_column_values_to_not_be_null", {"column": "gone"}),  # 4: not in the frame
        ("expect_column_values_to_not_be_null", {"column": "dup"}),  # 5: duplicated name
        ("expect_custom_thing", {"column": "c"}),  # 6: unknown type
        ("expect_column_values_to_be_in_set", {"column": "c", "value_set": [1]}),  # 7
        ("expect_column_pair_values_to_be_equal", {"column_A": "a", "column_B": "b"}),  # 8
        ("expect_column_stdev_to_be_between", {"column": "a", "max_value": 2}),  # 9
    ]
    columns = ["c", "a", "dup", "b", "dup"]
    assert plan_batches(exps, columns, columns_per_batch=2) == [
        BatchPlan(None, (0, 3, 4, 5, 6, 8)),
        BatchPlan(("c", "a"), (1, 7, 9)),
        BatchPlan(("b",), (2,)),
    ]
    one = plan_batches(exps, columns, columns_per_batch=1)
    assert sorted(i for p in one for i in p.indices) == list(range(len(exps)))
    assert [p.columns for p in one] == [None, ("c",), ("a",), ("b",)]
    assert plan_batches([], columns, columns_per_batch=4) == [BatchPlan(None, ())]
    assert plan_batches(exps[1:3], columns, columns_per_batch=4) == [
        BatchPlan(("a", "b"), (0, 1))
    ]  # no whole-frame batch when nothing needs it
    with pytest.raises(ValueError, match="columns_per_batch"):
        plan_batches(exps, columns, columns_per_batch=0)
