"""The monitoring bench's own parts: the injected drifts are exactly what it claims, and
its targets compare the flagged columns as documented (`benchmarks/monitoring.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks import monitoring as mon


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = tmp_path_factory.mktemp("bench-data")
    path = mon.write_batch(data, rows=20_000)
    stamp = path.stat().st_mtime_ns
    assert mon.write_batch(data, rows=20_000).stat().st_mtime_ns == stamp  # kept
    source = pd.read_csv(data / f"table_20000_{mon.BATCH_SEED}.csv")
    return source, pd.read_csv(path)


def test_the_batch_carries_exactly_the_injected_drifts(
    batch: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    source, drifted = batch
    n = len(source)
    assert len(drifted) == n and list(drifted.columns) == list(source.columns)
    for col in mon.SCALED:
        np.testing.assert_allclose(drifted[col], source[col] * mon.SCALE, rtol=1e-5)
    col, category, share = mon.SHARE
    gained = (drifted[col] == category).mean() - (source[col] == category).mean()
    assert gained == pytest.approx(share, abs=1 / n)
    assert drifted[col].isna().sum() == source[col].isna().sum()  # missing cells kept
    col, share = mon.MISSING
    assert drifted[col].isna().mean() - source[col].isna().mean() == pytest.approx(share, abs=1 / n)
    kept = drifted[col].notna()
    np.testing.assert_allclose(drifted.loc[kept, col], source.loc[kept, col])
    untouched = [c for c in source.columns if c not in mon.DRIFTS]
    pd.testing.assert_frame_equal(drifted[untouched], source[untouched])


def _test(column: str, status: str) -> dict[str, Any]:
    params = {"type": "evidently:metric_v2:ValueDrift", "column": column}
    return {"id": "drift", "status": status, "metric_config": {"params": params}}


def test_evidently_verdict_is_its_failed_value_drift_tests() -> None:
    count = {"type": "evidently:metric_v2:DriftedColumnsCount", "columns": ["a", "b"]}
    body = {
        "metrics": [],
        "tests": [
            {"id": "lt", "status": "FAIL", "metric_config": {"params": count}},
            _test("a", "FAIL"),
            _test("b", "SUCCESS"),
            _test("c", "FAIL"),
        ],
    }
    assert mon._evidently_moved(body) == {"a", "c"}


def _summary(ours: list[str], theirs: list[str]) -> dict[str, Any]:
    return {
        "rows": 1000,
        "injected": sorted(mon.DRIFTS),
        "ours": {"moved": ours},
        "evidently": {"moved": theirs},
        "wall_ratio": 0.3,
        "rss_ratio": 1.2,
    }


def test_targets_compare_the_flagged_columns() -> None:
    injected = sorted(mon.DRIFTS)
    unseen = set(mon.UNSEEN_BY_EVIDENTLY)
    # Evidently cannot see a missing-rate rise: agreement on the rest is a match.
    met = mon.targets(_summary(injected, sorted(set(injected) - unseen)))
    assert [t.met(0.1) for t in met] == [True, True, True, True]
    # Evidently flags a clean column: the sets differ by one.
    differ = mon.targets(_summary(injected, [*injected, "x00"]))[2]
    assert (differ.measured, differ.met()) == (1, False)
    # Ours misses an injected drift: both the agreement and the injected target fail.
    missed = mon.targets(_summary(injected[1:], injected))
    assert [t.met() for t in missed][2:] == [False, False]
    slow = {**_summary(injected, injected), "wall_ratio": 0.6, "rss_ratio": 1.6}
    assert [t.met() for t in mon.targets(slow)][:2] == [False, False]
    # Inside the margin: met at the bound, not with 10% to spare.
    close = mon.targets({**_summary(injected, injected), "wall_ratio": 0.48})[0]
    assert close.met() and not close.met(0.1) and close.verdict(0.1) == "met, inside the margin"
    assert "MISSED" in mon.markdown(
        {**slow, "drifts": mon.DRIFTS, **{k: {"wall": 1, "peak_mb": 1} for k in mon.KINDS}}
        | {"ours": {"wall": 1, "peak_mb": 1, "moved": injected}}
        | {"evidently": {"wall": 1, "peak_mb": 1, "moved": injected}},
        mon.targets(slow),
    )
