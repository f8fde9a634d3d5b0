"""The reference's label counts by input value (`tasks.checks.conditional`)."""

import numpy as np
import pandas as pd

from tasks.checks.conditional import (
    bin_edges,
    bin_index,
    build_conditional,
    class_totals,
    outside,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "year": [2007, 2007, 2008, 2008, 2009, 2009, np.nan, 2008],
            "color": ["a", "b", "a", None, "b", "b", "a", "a"],
            "y": ["p", "q", "p", "q", "q", "q", "p", "p"],
        }
    )


def test_counts_add_up_to_the_reference() -> None:
    cond = build_conditional(_frame(), target="y", numeric=["year"], categorical=["color"])
    assert cond["classes"] == ["p", "q"]
    year = cond["numeric"]["year"]
    assert year["edges"] == [2007.0, 2007.5, 2008.5, 2009.0]  # a bin per year
    assert np.asarray(year["counts"]).sum() + sum(year["missing"]) == 8
    assert year["missing"] == [1, 0]
    color = cond["categorical"]["color"]
    assert color["counts"] == {"a": [4, 0], "b": [0, 3]}
    assert color["missing"] == [0, 1]
    assert class_totals(cond).tolist() == [4.0, 4.0]


def test_bins_and_values_beyond_the_range() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.9, 3.0, 7.0, np.nan])
    assert bin_index(edges, values).tolist() == [0, 0, 0, 1, 2, 2, 2, -1]
    assert outside(edges, values).tolist() == [True, False, False, False, False, False, True, False]


def test_one_value_columns_have_one_bin() -> None:
    frame = pd.DataFrame({"c": [5.0] * 4, "y": [0, 1, 0, 1]})
    cond = build_conditional(frame, target="y", numeric=["c"], categorical=[])
    assert cond["numeric"]["c"]["counts"] == [[2, 2]]


def test_the_extremes_get_finer_bins_once_they_hold_enough_rows() -> None:
    """20 equal-count bins, the outermost 1% split again at 0.5% and 1% (hpc_data's jobs
    just after midnight, nearly all class F, are as few as a trigger); a table too small
    for 20 rows in such a bin keeps the 20 bins."""
    values = np.arange(4000, dtype=float)
    edges = np.asarray(bin_edges(values))
    assert len(edges) == 25  # 21 edges of the 5% bins + 4 inner tail edges
    shares = np.searchsorted(np.sort(values), edges) / len(values)
    assert {0.005, 0.01, 0.99, 0.995} <= set(np.round(shares, 3))
    assert len(bin_edges(np.arange(3999, dtype=float))) == 21
