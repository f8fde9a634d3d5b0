"""monitor.quality: the champion on a batch, measured with labels, estimated without.

The champion is fitted as the train stage fits it (`tasks.models.fit_pipeline`) on
the mixed table; batches are fresh draws of the same distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tasks.checks.profile import build_profile
from tasks.common.errors import PipelineError
from tasks.common.settings import ModelConfig
from tasks.models import fit_pipeline
from tasks.monitoring.quality import measure_quality, quality_gate
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_config, mixed_table

INPUTS = [*NUMERIC, *CATEGORICAL]
FLOOR, ALPHA = 0.8, 0.01


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return mixed_table(2000, seed=0)


@pytest.fixture(scope="module")
def profile(reference):
    return build_profile(
        reference,
        target="segment",
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        exclude=["customer_id", "email"],
    )


@pytest.fixture(scope="module")
def champion(reference):
    config = ModelConfig(name="m", estimator="logistic_regression", seed=0)
    return fit_pipeline(config, mixed_config(), reference[INPUTS], reference["segment"])


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return mixed_table(3000, seed=21)


def true_accuracy(champion, frame: pd.DataFrame) -> float:
    return float((champion.predict(frame[INPUTS]) == frame["segment"].to_numpy()).mean())


def test_a_good_model_on_clean_labelled_data_passes(champion, profile, batch):
    q = measure_quality(champion, batch, profile, floor=FLOOR, alpha=ALPHA)
    assert q.labelled and q.rows == len(batch)
    assert q.accuracy == pytest.approx(true_accuracy(champion, batch))
    assert q.accuracy > FLOOR and "labelled rows" in q.method
    gate = quality_gate(q, ALPHA)
    assert gate.passed and gate.name == "monitor.quality"
    assert gate.metrics["accuracy"] == q.accuracy and gate.threshold["min_accuracy"] == FLOOR


def test_scrambled_labels_fail_naming_accuracy_and_floor(champion, profile, batch):
    scrambled = batch.assign(
        segment=np.random.default_rng(0).permutation(batch["segment"].to_numpy())
    )
    q = measure_quality(champion, scrambled, profile, floor=FLOOR, alpha=ALPHA)
    gate = quality_gate(q, ALPHA)
    assert not gate.passed and gate.metrics["p_value"] <= ALPHA
    assert f"accuracy {q.accuracy:.3f}" in gate.detail and f"floor {FLOOR}" in gate.detail
    assert "binomial" in gate.detail


def test_a_small_shortfall_on_few_rows_is_not_significant(champion, profile, batch):
    """20 rows at 0.75 against a 0.8 floor: chance, not evidence (binomial p ~ 0.4)."""
    rows = batch.iloc[:20].copy()
    right = champion.predict(rows[INPUTS]) == rows["segment"].to_numpy()
    wrong_at = np.flatnonzero(right)[: max(int(right.sum()) - 15, 0)]
    rows.iloc[wrong_at, rows.columns.get_loc("segment")] = "nobody"
    q = measure_quality(champion, rows, profile, floor=FLOOR, alpha=ALPHA)
    assert q.accuracy == pytest.approx(0.75)
    assert quality_gate(q, ALPHA).passed


def test_without_labels_the_estimate_is_close_and_not_a_verdict(champion, profile, batch):
    q = measure_quality(
        champion, batch.drop(columns=["segment"]), profile, floor=FLOOR, alpha=ALPHA
    )
    assert not q.labelled and q.accuracy is None
    assert q.estimated_accuracy == pytest.approx(true_accuracy(champion, batch), abs=0.05)
    assert "calibrated" in q.method and "P(label | inputs) unchanged" in q.method
    gate = quality_gate(q, ALPHA)
    assert gate.passed and "not a verdict" in gate.detail
    assert f"{q.estimated_accuracy:.3f}" in gate.detail


def test_only_labelled_rows_are_scored(champion, profile, batch):
    partly = batch.copy()
    partly.loc[partly.index[:1000], "segment"] = np.nan
    q = measure_quality(champion, partly, profile, floor=FLOOR, alpha=ALPHA)
    assert q.labelled and q.rows == len(batch) - 1000
    assert q.accuracy == pytest.approx(true_accuracy(champion, batch.iloc[1000:]))


def test_integer_labels_read_back_as_floats_are_the_same_class():
    frame = pd.read_csv(BUNDLED_CSV)
    inputs = [c for c in frame.columns if c != "target"]
    model = Pipeline([("scale", StandardScaler()), ("m", LogisticRegression(max_iter=500))])
    model.fit(frame[inputs], frame["target"])
    profile = build_profile(frame, target="target")
    as_float = frame.astype({"target": "float64"})
    q = measure_quality(model, as_float, profile, floor=0.9, alpha=ALPHA)
    assert q.accuracy == pytest.approx(float(model.score(frame[inputs], frame["target"])))
    assert q.accuracy > 0.9


def test_a_model_without_probabilities_has_no_estimate(reference, profile, batch):
    numeric = reference[NUMERIC].fillna(0)
    model = Pipeline([("scale", StandardScaler()), ("m", LinearSVC())])
    model.fit(numeric, reference["segment"])
    unlabelled = batch[NUMERIC].fillna(0)
    q = measure_quality(model, unlabelled, profile, floor=FLOOR, alpha=ALPHA)
    assert q.estimated_accuracy is None and "no predict_proba" in q.method
    gate = quality_gate(q, ALPHA)
    assert gate.passed and "accuracy none" in gate.detail
    labelled = batch[[*NUMERIC, "segment"]].fillna({c: 0 for c in NUMERIC})
    q = measure_quality(model, labelled, profile, floor=FLOOR, alpha=ALPHA)
    assert q.accuracy == pytest.approx(float(model.score(unlabelled, batch["segment"])))


def test_a_batch_the_champion_cannot_score_is_refused(champion, profile, batch):
    with pytest.raises(PipelineError, match="batch is empty"):
        measure_quality(champion, batch.iloc[:0], profile, floor=FLOOR, alpha=ALPHA)
    with pytest.raises(PipelineError, match=r"lacks the champion's input\(s\) \['plan'\]"):
        measure_quality(champion, batch.drop(columns="plan"), profile, floor=FLOOR, alpha=ALPHA)
