"""monitor.drift: every column of a batch against the signed reference profile.

Profiles are built from the bundled table (30 numeric inputs) and the mixed table
(numeric, string and integer categories, missing cells, string labels). Clean batches
(bootstrap resamples of the bundled table, fresh draws of the mixed table) must not
alert; each injected change must move exactly the column it was made in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.checks.conditional import numeric_groups
from tasks.checks.profile import build_profile
from tasks.common.errors import PipelineError
from tasks.monitoring.drift import DETAIL_CHARS, drift_gate, measure_drift, psi
from tasks.monitoring.types import DriftReport
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table

SCALED = ["mean radius", "mean texture", "worst area"]


@pytest.fixture(scope="module")
def bc() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CSV)


@pytest.fixture(scope="module")
def bc_profile(bc):
    return build_profile(bc, target="target")


@pytest.fixture(scope="module")
def mixed_profile():
    frame = mixed_table(2000, seed=0)
    return build_profile(
        frame,
        target="segment",
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        exclude=["customer_id", "email"],
    )


def moved(report: DriftReport) -> set[str]:
    return {c.column for c in report.moved}


def fresh(rows: int = 1000, seed: int = 11) -> pd.DataFrame:
    """New rows of the mixed table's distribution (not a resample of the reference)."""
    return mixed_table(rows, seed=seed)


def test_a_clean_resample_moves_nothing(bc, bc_profile):
    report = measure_drift(bc.sample(500, replace=True, random_state=3), bc_profile)
    gate = drift_gate(report)
    assert gate.passed and gate.name == "monitor.drift"
    assert gate.metrics["moved_columns"] == 0 and gate.metrics["columns"] == 31
    assert report.rows == 500 and report.reference_rows == len(bc)
    assert "no column" in gate.detail


def test_a_clean_fresh_batch_moves_nothing(mixed_profile):
    report = measure_drift(fresh(), mixed_profile)
    assert not report.moved
    kinds = {c.column: c.kind for c in report.columns}
    assert kinds == {
        **dict.fromkeys(NUMERIC, "numeric"),
        **dict.fromkeys(CATEGORICAL, "categorical"),
        "segment": "label",
    }


def test_scaled_columns_move_and_only_they(bc, bc_profile):
    batch = bc.sample(500, replace=True, random_state=4)
    batch[SCALED] = batch[SCALED] * 1.3
    report = measure_drift(batch, bc_profile)
    assert moved(report) == set(SCALED)
    assert [c.column for c in report.columns[:3]] == sorted(
        SCALED, key=lambda c: next(x.p_adjusted for x in report.columns if x.column == c)
    )
    gate = drift_gate(report)
    assert not gate.passed and gate.metrics["moved_columns"] == 3
    assert gate.metrics["worst_column"] in SCALED and gate.metrics["worst_p_adjusted"] <= 0.01
    assert all(c in gate.detail for c in SCALED) and "vs" in gate.detail
    assert gate.threshold == {
        "alpha": 0.01,
        "min_shift": 0.05,
        "min_relative_shift": 0.5,
        "floor": 0.01,
    }


def test_a_category_share_moved_15_points(mixed_profile):
    batch = fresh()
    others = batch.index[batch["region"] != "north"]
    pick = np.random.default_rng(0).choice(others, int(0.15 * len(batch)), replace=False)
    batch.loc[pick, "region"] = "north"
    report = measure_drift(batch, mixed_profile)
    assert moved(report) == {"region"}
    col = report.columns[0]
    assert col.column == "region" and col.worst.startswith("'north'")
    assert col.shift == pytest.approx(0.15, abs=0.05)
    assert next(g for g in col.groups if g.label == "'north'").flagged


def test_a_missing_rate_surge(mixed_profile):
    batch = fresh()
    batch.loc[batch.sample(frac=0.2, random_state=1).index, "tenure"] = np.nan
    report = measure_drift(batch, mixed_profile)
    assert moved(report) == {"tenure"}
    assert report.columns[0].worst.startswith("missing:")


def test_an_unseen_category(mixed_profile):
    batch = fresh()
    batch.loc[batch.sample(frac=0.1, random_state=2).index, "plan"] = "enterprise"
    report = measure_drift(batch, mixed_profile)
    assert moved(report) == {"plan"}
    assert report.columns[0].worst.startswith("unseen:")


def test_shifted_labels_move_the_label_column(mixed_profile):
    batch = fresh()
    batch.loc[batch.sample(frac=0.15, random_state=3).index, "segment"] = "high"
    report = measure_drift(batch, mixed_profile)
    assert moved(report) == {"segment"}
    assert report.columns[0].kind == "label"


def test_a_batch_without_labels_has_no_label_column(mixed_profile):
    report = measure_drift(fresh().drop(columns=["segment"]), mixed_profile)
    assert "segment" not in {c.column for c in report.columns}
    assert not report.moved and len(report.columns) == len(NUMERIC) + len(CATEGORICAL)
    unlabelled = fresh().assign(segment=np.nan)  # labels not arrived yet: same
    assert "segment" not in {c.column for c in measure_drift(unlabelled, mixed_profile).columns}


def test_categories_are_keyed_as_the_reference(mixed_profile):
    """An integer code read back as a float (1.0) is the reference's category 1."""
    batch = fresh().astype({"channel_code": "float64"})
    report = measure_drift(batch, mixed_profile)
    col = next(c for c in report.columns if c.column == "channel_code")
    assert not col.moved and next(g for g in col.groups if g.label == "unseen").batch == 0


def test_extra_columns_are_ignored(mixed_profile):
    report = measure_drift(fresh().assign(note="x"), mixed_profile)
    assert {c.column for c in report.columns} == {*NUMERIC, *CATEGORICAL, "segment"}


def test_bins_match_the_screens_counting(bc, bc_profile):
    """Values on the reference's edges, beyond its range and missing are counted as
    `tasks.checks.conditional.numeric_groups` counts them (the screens' machinery)."""
    stats = bc_profile["conditional"]["numeric"]["mean radius"]
    edges = np.asarray(stats["edges"])
    extra = [edges[0] - 1, edges[-1] + 1, np.nan, np.inf, -np.inf]
    values = np.concatenate([edges, edges[:-1] + 1e-9, edges[1:] - 1e-9, extra])
    batch = bc.iloc[np.arange(len(values)) % len(bc)].assign(**{"mean radius": values})
    col = next(c for c in measure_drift(batch, bc_profile).columns if c.column == "mean radius")
    theirs = numeric_groups(edges, values, np.zeros(len(values), dtype=np.int64), 1)
    expected = [*theirs["bins"][:, 0], theirs["low"][0], theirs["high"][0], theirs["missing"][0]]
    assert [round(g.batch * len(values)) for g in col.groups] == expected
    assert [g.label for g in col.groups][-3:] == [
        f"below {edges[0]:.4g}",
        f"above {edges[-1]:.4g}",
        "missing",
    ]


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    same = psi(np.array([50, 50, 0]), np.array([100, 100, 0]))
    small = psi(np.array([55, 45, 0]), np.array([100, 100, 0]))
    large = psi(np.array([90, 10, 0]), np.array([100, 100, 0]))
    assert same == pytest.approx(0, abs=0.005) and 0 < small < large
    assert np.isfinite(psi(np.array([0, 10, 5]), np.array([10, 0, 0])))


def test_the_detail_stays_short_with_many_moved_columns(bc, bc_profile):
    batch = bc.sample(500, replace=True, random_state=5)
    numeric = [c for c in bc.columns if c != "target"]
    batch[numeric] = batch[numeric] * 2.0
    gate = drift_gate(measure_drift(batch, bc_profile))
    assert not gate.passed and gate.metrics["moved_columns"] == 30
    assert "more;" in gate.detail and len(gate.detail) <= DETAIL_CHARS + 60
    assert "\n" not in gate.detail


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: f.iloc[:0], "batch is empty"),
        (lambda f: f.drop(columns=["income", "plan"]), "['income', 'plan']"),
        (lambda f: f.astype({"age": object}).assign(age="secret-text"), "holds text"),
    ],
)
def test_a_wrong_batch_is_refused_in_one_line(mixed_profile, change, words):
    with pytest.raises(PipelineError) as err:
        measure_drift(change(fresh(50)), mixed_profile)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert "secret-text" not in str(err.value)  # a cell value never reaches the message


def test_an_old_profile_is_refused(mixed_profile):
    old = {k: v for k, v in mixed_profile.items() if k != "conditional"} | {"version": 3}
    with pytest.raises(
        PipelineError, match=r"version 3.*rebuild it with `secure-pipeline profile`"
    ):
        measure_drift(fresh(50), old)


def test_false_alarms_on_clean_batches_are_rare(bc, bc_profile, mixed_profile):
    """50 clean 500-row batches of each table alert at most once (alpha 0.01: about
    0.5 expected at worst; the measured rate is in benchmarks/monitor_calibration.py)."""
    alerts = 0
    for seed in range(50):
        alerts += bool(
            measure_drift(bc.sample(500, replace=True, random_state=seed), bc_profile).moved
        )
        alerts += bool(measure_drift(fresh(500, seed=100 + seed), mixed_profile).moved)
    assert alerts <= 1


def test_a_constant_and_an_empty_reference_column():
    """One reference value: one bin ("= 5"); no reference value: present vs missing."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.normal(size=300), "const": 5.0, "gone": np.nan, "y": rng.integers(0, 2, 300)}
    )
    profile = build_profile(frame, target="y")
    clean = frame.sample(200, replace=True, random_state=1)
    report = measure_drift(clean, profile)
    assert not report.moved
    groups = {c.column: [g.label for g in c.groups] for c in report.columns}
    assert groups["const"] == ["= 5", "below 5", "above 5", "missing"]
    assert groups["gone"] == ["present", "missing"]
    assert moved(measure_drift(clean.assign(const=6.0, gone=1.0), profile)) == {"const", "gone"}
