"""Validate gates: the suite's pin, then the bundled GX suite on good and broken data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.common.context import Dataset, RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.validate import check_expectations, check_suite_integrity, validate
from tests.conftest import BUNDLED_CSV

SECRET = "SECRET-CELL-VALUE"


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CSV)


def as_dataset(frame: pd.DataFrame) -> Dataset:
    return Dataset(frame=frame, uri="memory", sha256="0" * 64, format="csv",
                   integrity="none", target="target")


def variant(ctx: RunContext, **dataset: Any) -> RunContext:
    s = ctx.settings
    return RunContext(s.model_copy(update={"dataset": s.dataset.model_copy(update=dataset)}),
                      ctx.run_id)


def blocked(ctx: RunContext, frame: pd.DataFrame) -> GateResult:
    with pytest.raises(GateFailed) as info:
        validate(ctx, as_dataset(frame))
    return info.value.gate


def test_bundled_data_passes(ctx: RunContext, bundled: pd.DataFrame) -> None:
    out, results = validate(ctx, as_dataset(bundled))
    assert [r.name for r in results] == ["validate.suite_integrity", "validate.expectations"]
    assert all(r.passed for r in results)
    exp = results[1]
    assert exp.metrics["evaluated"] == exp.metrics["successful"] == 94
    assert exp.metrics["failed"] == 0 and exp.metrics["success_rate"] == 1.0
    assert out.suite_sha256 == ctx.settings.dataset.suite_sha256
    run_dir = ctx.settings.state_dir / "runs" / "test-run"
    assert out.result_path == run_dir / "validation_result.json"
    assert json.loads(out.result_path.read_text())["success"] is True
    assert out.dataset.frame is bundled


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
    g.loc[[3, 7], "worst radius"] = np.nan
    return g


def _unknown_label(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    g.loc[0, "target"] = 2
    return g


def _unit_error(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(**{"mean area": f["mean area"] * 1000})  # m^2 vs mm^2 style mistake


def _too_few_rows(f: pd.DataFrame) -> pd.DataFrame:
    return f.head(50)


def _null_label(f: pd.DataFrame) -> pd.DataFrame:
    g = f.copy()
    g["target"] = g["target"].astype("float64")
    g.loc[1, "target"] = np.nan
    return g


@pytest.mark.parametrize(("mutate", "expected_failure"), [
    (_extra, "expect_table_columns_to_match_set(table)"),
    (_missing, "expect_column_values_to_not_be_null(mean texture)"),
    (_renamed, "expect_table_columns_to_match_set(table)"),
    (_strings, "expect_column_values_to_be_in_type_list(mean area)"),
    (_nans, "expect_column_values_to_not_be_null(worst radius)"),
    (_unknown_label, "expect_column_values_to_be_in_set(target)"),
    (_unit_error, "expect_column_values_to_be_between(mean area)"),
    (_too_few_rows, "expect_table_row_count_to_be_between(table)"),
    (_null_label, "expect_column_values_to_not_be_null(target)"),
])
def test_broken_data_blocked(ctx: RunContext, bundled: pd.DataFrame,
                             mutate: Callable[[pd.DataFrame], pd.DataFrame],
                             expected_failure: str) -> None:
    g = blocked(ctx, mutate(bundled))
    assert g.name == "validate.expectations"
    assert g.metrics["failed"] >= 1 and g.metrics["success_rate"] < 1
    assert g.threshold == {"max_failed": 0, "expectations": 94}
    assert expected_failure in g.detail


def test_no_cell_values_in_gate_or_result_file(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = blocked(ctx, _strings(bundled))
    assert SECRET not in g.model_dump_json()
    result_file = ctx.settings.state_dir / "runs" / "test-run" / "validation_result.json"
    assert result_file.exists() and SECRET not in result_file.read_text()


def test_row_cap_from_settings_tightens_the_suite(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = blocked(variant(ctx, max_rows=500), bundled)
    assert "expect_table_row_count_to_be_between(table)" in g.detail


def test_tampered_suite_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    raw = bytearray(ctx.settings.dataset.suite.read_bytes())
    at = raw.index(b'"max_value": ') + len(b'"max_value": ')
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")  # loosen/alter one bound
    copy = tmp_path / "suite.json"
    copy.write_bytes(bytes(raw))
    g = blocked(variant(ctx, suite=copy), bundled)
    assert g.name == "validate.suite_integrity" and g.metrics["matched"] is False
    assert g.metrics["sha256"] == hashlib.sha256(raw).hexdigest()


def test_missing_suite_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    g = blocked(variant(ctx, suite=tmp_path / "absent.json"), bundled)
    assert g.name == "validate.suite_integrity" and g.metrics["readable"] is False


def test_unknown_expectation_type_fails_closed(ctx: RunContext, bundled: pd.DataFrame,
                                              tmp_path: Path) -> None:
    # GX 1.24 logs and DROPS an unknown type (no exception): the count check catches it.
    suite = {"name": "x", "expectations": [
        {"type": "expect_nothing_at_all", "kwargs": {}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]}
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


def test_check_expectations_counts_and_fails_closed() -> None:
    def outcome(ok: bool) -> dict[str, Any]:
        config = {"type": "expect_x", "kwargs": {"column": "c"}}
        return {"success": ok, "expectation_config": config}

    ok = check_expectations({"success": True, "results": [outcome(True)] * 3}, expected=3)
    assert ok.passed and ok.metrics["evaluated"] == 3
    bad = check_expectations({"success": False, "results": [outcome(True), outcome(False)]},
                             expected=2)
    assert not bad.passed and bad.metrics["failed"] == 1 and "expect_x(c)" in bad.detail
    short = check_expectations({"success": True, "results": [outcome(True)]}, expected=2)
    assert not short.passed and "1 of 2" in short.detail  # an expectation was skipped
    assert not check_expectations(None, expected=2, error="ValueError").passed
