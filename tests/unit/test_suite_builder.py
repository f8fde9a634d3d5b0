"""`derive_suite` on a team table (numeric and categorical inputs, missing values, string
labels, an id and a pseudonymised email), run through Great Expectations: clean tables
pass, a surge of unseen categories or of missing values fails. The bundled numeric
suite is reproduced byte for byte in test_validate.py."""

from __future__ import annotations

import hashlib
import json
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tasks.checks.expectations import run_suite
from tasks.checks.suite_builder import derive_suite, write_suite
from tests.mixed_table import CATEGORICAL, MISSING, NUMERIC, mixed_table
from tests.realtables import load, subsample

TARGET = "segment"
ROLES: dict[str, Any] = {
    "numeric": NUMERIC,
    "categorical": CATEGORICAL,
    "ignored": ["customer_id"],
    "missing": MISSING,
    "exclude": ["email"],  # pseudonymised PII: present, never value-checked
}


@pytest.fixture(scope="module")
def suite() -> dict[str, Any]:
    return derive_suite(
        mixed_table(2000, seed=0), name="customers", target=TARGET, notes="", **ROLES
    )


def failures(frame: pd.DataFrame, suite: dict[str, Any]) -> set[tuple[str, str | None]]:
    result = run_suite(frame, suite, max_rows=10_000_000)
    for o in result["results"]:  # every generated expectation type runs in GX
        assert not (o.get("exception_info") or {}).get("raised_exception"), o
    return {
        (o["expectation_config"]["type"], o["expectation_config"]["kwargs"].get("column"))
        for o in result["results"]
        if not o["success"]
    }


def by_column(suite: dict[str, Any], column: str) -> dict[str, dict[str, Any]]:
    return {
        e["type"]: e["kwargs"] for e in suite["expectations"] if e["kwargs"].get("column") == column
    }


def test_layout(suite: dict[str, Any]) -> None:
    kinds = Counter(e["type"] for e in suite["expectations"])
    assert kinds["expect_column_values_to_be_in_set"] == 1 + len(CATEGORICAL)
    assert kinds["expect_column_values_to_not_be_null"] == 1 + len(NUMERIC) + len(CATEGORICAL)
    assert kinds["expect_column_mean_to_be_between"] == len(NUMERIC)
    columns = suite["expectations"][0]["kwargs"]["column_set"]
    assert {"customer_id", "email"} <= set(columns)  # present, and nothing more:
    assert by_column(suite, "customer_id") == by_column(suite, "email") == {}
    label = by_column(suite, TARGET)
    assert label["expect_column_values_to_be_of_type"] == {"column": TARGET, "type_": "str"}
    assert label["expect_column_distinct_values_to_equal_set"]["value_set"] == [
        "high",
        "low",
        "medium",
    ]
    region = by_column(suite, "region")
    assert region["expect_column_values_to_be_in_set"]["mostly"] == 0.98
    assert 0.8 < region["expect_column_values_to_not_be_null"]["mostly"] < 0.95  # imputed
    codes = by_column(suite, "channel_code")
    assert codes["expect_column_values_to_be_in_set"]["value_set"] == [1, 2, 3]
    assert codes["expect_column_values_to_be_in_type_list"]["type_list"] == ["int64", "int32"]
    assert "mostly" not in by_column(suite, "tenure")["expect_column_values_to_not_be_null"]


def test_clean_tables_pass_their_suite(suite: dict[str, Any], tmp_path: Path) -> None:
    assert failures(mixed_table(2000, seed=0), suite) == set()
    fresh = tmp_path / "fresh.csv"  # a new draw, as ingestion reads it
    mixed_table(300, seed=1).to_csv(fresh, index=False)
    frame = pd.read_csv(fresh)
    frame.loc[frame.sample(n=3, random_state=1).index, "region"] = "arctic"  # 1%: passes
    assert failures(frame, suite) == set()


def test_category_and_missing_value_surges_fail(suite: dict[str, Any]) -> None:
    frame = mixed_table(2000, seed=2)
    rng = np.random.default_rng(2)
    frame.loc[rng.random(len(frame)) < 0.30, "region"] = "atlantis"
    frame.loc[rng.random(len(frame)) < 0.27, "income"] = np.nan  # with the 5%: ~30% missing
    assert failures(frame, suite) == {
        ("expect_column_values_to_be_in_set", "region"),
        ("expect_column_values_to_not_be_null", "income"),
    }


def test_integer_labels_and_numeric_default() -> None:
    frame = pd.DataFrame({"x": np.linspace(1.0, 2.0, 200), "y": [0, 1] * 100})
    suite = derive_suite(frame, name="t", target="y", notes="")
    label = by_column(suite, "y")
    assert label["expect_column_values_to_be_in_type_list"]["type_list"] == ["int64", "int32"]
    assert label["expect_column_values_to_be_in_set"]["value_set"] == [0, 1]
    assert by_column(suite, "x")["expect_column_values_to_be_in_type_list"]["type_list"] == [
        "float64",
        "float32",
    ]
    with pytest.raises(ValueError, match="refuse"):  # missing values where none may be
        derive_suite(frame.assign(x=[np.nan] + [1.0] * 199), name="t", target="y", notes="")


def test_write_suite_and_command(tmp_path: Path) -> None:
    # a fresh suite: run_suite adds GX's version to the meta of the dict it is given
    suite = derive_suite(
        mixed_table(2000, seed=0), name="customers", target=TARGET, notes="", **ROLES
    )
    out = tmp_path / "suite.json"
    digest = write_suite(suite, out)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.read_text()) == suite and stat.S_IMODE(out.stat().st_mode) == 0o644
    assert out.read_text() == json.dumps(suite, indent=2, sort_keys=True) + "\n"
    data = tmp_path / "customers.csv"
    mixed_table(2000, seed=0).to_csv(data, index=False)
    config = tmp_path / "customers.toml"  # `secure-pipeline suite` reads the roles from it
    config.write_text(
        f"""[dataset]
name = "customers"
source = "customers.csv"
target = "{TARGET}"
numeric = {json.dumps(NUMERIC)}
categorical = {json.dumps(CATEGORICAL)}
ignored = ["customer_id"]
suite = "c.json"
suite_sha256 = "{"0" * 64}"
reference_profile = "p.json"
missing = {{ {", ".join(f'{c} = "{p}"' for c, p in MISSING.items())} }}
pii = {{ email = "pseudonymize" }}

[model]
name = "m"
"""
    )
    assert (
        main(["suite", str(data), "--config", str(config), "--out", str(tmp_path / "c.json")]) == 0
    )
    made = json.loads((tmp_path / "c.json").read_text())
    assert made["meta"] == {"notes": "derived from customers.csv"}
    assert made["expectations"] == suite["expectations"]  # the same roles, the same suite


# --- bounds hold the table they were derived from, at any magnitude ---------------------


def large_and_narrow(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Columns whose magnitude dwarfs their spread: 4 significant digits cannot hold
    them (a year's mean 2008.02 rounded to [2008.0, 2008.0] failed its own table)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "year": rng.choice([2007, 2008, 2009], size=rows, p=[0.24, 0.50, 0.26]),
            "price": rng.integers(123_400, 123_480, size=rows),
            "huge": 1e12 + rng.normal(0.0, 1e-3, size=rows),
            "flat": np.full(rows, 0.1),  # no spread at all: only float noise in its mean
            "label": rng.integers(0, 2, size=rows),
        }
    )


def test_bounds_contain_what_they_were_derived_from() -> None:
    frame = large_and_narrow()
    suite = derive_suite(frame, name="t", target="label", notes="")
    for col in ("year", "price", "huge", "flat"):
        s, kw = frame[col].astype("float64"), by_column(suite, col)
        checks = {
            "expect_column_values_to_be_between": (s.min(), s.max()),
            "expect_column_mean_to_be_between": (s.mean(), s.mean()),
            "expect_column_stdev_to_be_between": (s.std(), s.std()),
        }
        for kind, (lo, hi) in checks.items():
            assert kw[kind]["min_value"] <= lo <= hi <= kw[kind]["max_value"], (col, kind)
        ranges = kw["expect_column_quantile_values_to_be_between"]["quantile_ranges"]
        for q, (low, high) in zip(ranges["quantiles"], ranges["value_ranges"], strict=True):
            assert low <= s.quantile(q) <= high, (col, q)
    year = by_column(suite, "year")["expect_column_mean_to_be_between"]
    assert year["min_value"] < 2008.0 < frame["year"].mean() < year["max_value"]
    assert year["max_value"] - year["min_value"] < 1  # spread-sized, not magnitude-sized


def test_large_narrow_table_passes_its_suite_and_a_shift_fails() -> None:
    frame = large_and_narrow()
    suite = derive_suite(frame, name="t", target="label", notes="")
    assert failures(frame, suite) == set()  # GX's own metrics, on the table it came from
    assert failures(large_and_narrow(seed=1), suite) == set()  # a fresh draw too
    shifted = frame.assign(year=frame["year"] + 1, price=frame["price"] + 200)
    assert failures(shifted, suite) == {
        ("expect_column_mean_to_be_between", "year"),
        ("expect_column_mean_to_be_between", "price"),
        ("expect_column_quantile_values_to_be_between", "price"),  # year: within 1 IQR
    }


def test_quartile_band_of_a_column_mostly_zero_holds_a_clean_resample() -> None:
    """hpc_data's num_pending is 76% zero: every quartile and the IQR are 0, and the old
    +-1 IQR band [0, 0] failed 2 of 100 clean 80% resamples (seeds 1000 and 1027: their
    75th percentile is the first non-zero value). The band now reaches the quantiles 4
    standard errors away (columns with an IQR keep +-1 IQR: the bundled suite is
    unchanged)."""
    table = load("hpc_data")
    suite = derive_suite(
        table,
        name="hpc_data",
        target="class",
        notes="test",
        numeric=["compounds", "input_fields", "iterations", "num_pending", "hour"],
        categorical=["protocol", "day"],
    )
    (quartiles,) = [
        e["kwargs"]["quantile_ranges"]["value_ranges"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_quantile_values_to_be_between"
        and e["kwargs"]["column"] == "num_pending"
    ]
    assert quartiles[0] == [0.0, 0.0] and quartiles[2][1] > 0
    highest = max(subsample(table, s)["num_pending"].quantile(0.75) for s in range(1000, 1100))
    assert 0 < highest <= quartiles[2][1]
    once_failing = subsample(table, 1000)
    assert once_failing["num_pending"].quantile(0.75) > 0  # outside the old [0, 0]
    result = run_suite(once_failing, suite, max_rows=1_000_000)
    failing = [r["expectation_config"]["type"] for r in result["results"] if not r["success"]]
    assert result["success"], failing
