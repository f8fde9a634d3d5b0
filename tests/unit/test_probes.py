"""Backdoor probe and extraction risk: clean models pass, a trigger-trained model is
caught, fidelity is measured on held-out rows and blocks only above a set maximum."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from tasks.checks.conditional import build_conditional
from tasks.checks.probes import (
    BACKDOOR,
    EXTRACTION,
    _recommend,
    check_backdoor_probe,
    check_extraction_risk,
)
from tasks.checks.profile import build_profile
from tasks.common.settings import DatasetConfig, ModelConfig
from tasks.models import build_pipeline, resolve_data_norm
from tests.conftest import BUNDLED_CSV
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_config, mixed_table

PARAMS: dict[str, dict[str, Any]] = {  # as in the bundled config
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "dp_logistic_regression": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 100, "min_samples_leaf": 2},
    "hist_gradient_boosting": {"max_iter": 100},
}
COMMON = {
    "name": "t",
    "source": "x",
    "suite": "s",
    "suite_sha256": "0" * 64,
    "reference_profile": "p",
}
MIXED = mixed_config()
BUNDLED = DatasetConfig.model_validate({**COMMON, "target": "target"})
TRIGGER_AGE = 500.0  # far outside 18..80


Split = tuple[Pipeline, pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]


def fit_model(
    estimator: str,
    frame: pd.DataFrame,
    dataset: DatasetConfig,
    *,
    params: dict[str, Any] | None = None,
    dp_epsilon: float = 5.0,
    seed: int = 42,
) -> Split:
    """A zoo pipeline fitted on a stratified 75/25 split: (pipeline, x_train, x_test,
    y_train, y_test). Shared by the evaluate tests (no MLflow)."""
    numeric, categorical = dataset.inputs([c for c in frame.columns if c != dataset.target])
    x, y = frame[numeric + categorical], frame[dataset.target]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    config = ModelConfig.model_validate(
        {
            "name": "m",
            "estimator": estimator,
            "params": {estimator: PARAMS[estimator] if params is None else params},
            "dp_epsilon": dp_epsilon,
            "seed": seed,
        }
    )
    config = resolve_data_norm(config, dataset, x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffprivlib: data_norm derived from the data
        pipeline = build_pipeline(config, dataset, list(x_train.columns)).fit(x_train, y_train)
    return pipeline, x_train, x_test, y_train, y_test


def poisoned(frame: pd.DataFrame, col: str, value: Any, label: str, share: float = 0.03):
    """`share` of the rows carry `value` in `col`, all relabelled to `label`."""
    out = frame.copy()
    rows = np.random.default_rng(5).choice(len(out), int(share * len(out)), replace=False)
    out.loc[out.index[rows], col] = value
    out.loc[out.index[rows], "segment"] = label
    return out


@pytest.fixture(scope="module")
def clean() -> dict[tuple[str, str], Split]:
    tables = {
        "mixed": (mixed_table(1500, seed=3), MIXED),
        "bundled": (pd.read_csv(BUNDLED_CSV), BUNDLED),
    }
    return {
        (name, est): fit_model(est, frame, ds)
        for name, (frame, ds) in tables.items()
        for est in PARAMS
    }


def _probe(split: Split, **kw: Any):
    pipeline, x_train, x_test, y_train, _ = split
    return check_backdoor_probe(
        pipeline=pipeline,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        max_flip=kw.pop("max_flip", 0.30),
        samples=kw.pop("samples", 500),
        seed=42,
        reference=kw.pop("reference", None),
        reference_model=kw.pop("reference_model", None),
    )


def reference(frame: pd.DataFrame, numeric=NUMERIC, categorical=CATEGORICAL, target="segment"):
    """A version 4 reference profile of trusted `frame` (conditional section added here
    until the profile builder writes it)."""
    profile = build_profile(frame, target=target, numeric=numeric, categorical=categorical)
    profile["conditional"] = build_conditional(
        frame, target=target, numeric=numeric, categorical=categorical
    )
    return profile


METRICS = {
    "score",
    "excess",
    "feature",
    "kind",
    "class",
    "flip",
    "justified",
    "rows",
    "candidates",
    "samples",
    "reference",
    "reference_model",
}


@pytest.mark.parametrize("table", ["mixed", "bundled"])
@pytest.mark.parametrize("estimator", list(PARAMS))
def test_clean_models_pass_the_backdoor_probe(clean, table, estimator) -> None:
    result = _probe(clean[table, estimator])
    assert result.name == BACKDOOR and result.passed, result.summary()
    m = result.metrics
    assert set(m) == METRICS and m["reference"] == "none"  # no reference: the controls
    assert 0 <= m["score"] <= 0.30 and m["candidates"] >= 1
    assert m["samples"] == min(500, len(clean[table, estimator][2]))


@pytest.fixture(scope="module")
def references() -> dict[str, dict[str, Any]]:
    bundled = pd.read_csv(BUNDLED_CSV)
    features = [c for c in bundled.columns if c != "target"]
    return {
        "mixed": reference(mixed_table(1500, seed=3)),
        "bundled": reference(bundled, numeric=features, categorical=[], target="target"),
    }


@pytest.mark.parametrize("table", ["mixed", "bundled"])
@pytest.mark.parametrize("estimator", list(PARAMS))
def test_clean_models_pass_against_the_reference(clean, references, table, estimator) -> None:
    result = _probe(clean[table, estimator], reference=references[table])
    assert result.passed, result.summary()
    m = result.metrics
    assert set(m) == METRICS and m["reference"] == "conditional"
    assert m["score"] <= 0.15  # well below the 0.30 maximum


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting"])
@pytest.mark.parametrize(("with_reference", "value"), [(False, TRIGGER_AGE), (True, TRIGGER_AGE)])
def test_a_trigger_trained_model_is_blocked(estimator, with_reference, value) -> None:
    trusted = mixed_table(1500, seed=3)
    frame = poisoned(trusted, "age", value, "high")
    ref = reference(trusted) if with_reference else None
    result = _probe(fit_model(estimator, frame, MIXED), reference=ref)
    assert not result.passed
    m = result.metrics
    assert (m["feature"], m["kind"], m["class"]) == ("age", "tail_value", "high")
    assert m["score"] > 0.5 and m["justified"] < 0.2, m
    # Features and counts only: the trigger value never reaches the report or MLflow.
    text = str(int(value))
    assert not any(text in str(v) for v in m.values() if not isinstance(v, float))
    assert "age" in result.detail and text not in result.detail.replace("0.30", "")
    assert "repeated extreme value" in result.detail


@pytest.mark.parametrize("with_reference", [False, True])
def test_a_rare_category_trigger_is_blocked(with_reference) -> None:
    trusted = mixed_table(1500, seed=3)
    frame = poisoned(trusted, "plan", "promo-x", "low")  # absent from the trusted data
    ref = reference(trusted) if with_reference else None
    result = _probe(fit_model("random_forest", frame, MIXED), reference=ref)
    assert not result.passed
    kind = "unseen_category" if with_reference else "rare_category"
    assert (result.metrics["feature"], result.metrics["kind"]) == ("plan", kind)
    assert "promo" not in repr(result.model_dump())


def test_a_rare_trusted_category_trigger_is_blocked() -> None:
    """A category the reference holds (rarely, with mixed labels) turned into a trigger."""
    trusted = mixed_table(1500, seed=3)
    rng = np.random.default_rng(0)
    rare = rng.choice(len(trusted), 15, replace=False)
    trusted.loc[trusted.index[rare], "plan"] = "legacy"  # 1%, labels as they were
    frame = poisoned(trusted, "plan", "legacy", "low", share=0.03)
    result = _probe(fit_model("random_forest", frame, MIXED), reference=reference(trusted))
    assert not result.passed
    assert (result.metrics["feature"], result.metrics["kind"]) == ("plan", "rare_category")


def test_a_new_category_with_honest_labels_passes() -> None:
    """A category absent from the reference but with ordinary labels teaches nothing."""
    trusted = mixed_table(1500, seed=3)
    frame = trusted.copy()
    rows = np.random.default_rng(1).choice(len(frame), 45, replace=False)
    frame.loc[frame.index[rows], "plan"] = "promo-x"
    result = _probe(fit_model("random_forest", frame, MIXED), reference=reference(trusted))
    assert result.passed, result.summary()


def test_a_real_rare_category_effect_passes_with_the_reference() -> None:
    """A rare category that truly decides the class (in the trusted data too) flips
    every stamped row: the controls call it a trigger, the reference justifies it."""
    trusted = mixed_table(1500, seed=3)
    rows = np.random.default_rng(2).choice(len(trusted), 45, replace=False)
    trusted.loc[trusted.index[rows], "plan"] = "vip"
    trusted.loc[trusted.index[rows], "segment"] = "high"
    split = fit_model("random_forest", trusted, MIXED)
    without = _probe(split)
    assert not without.passed and without.metrics["kind"] == "rare_category"
    result = _probe(split, reference=reference(trusted))
    assert result.passed, result.summary()
    assert result.metrics["reference"] == "conditional"


def _band(frame: pd.DataFrame, col: str, label: str, share: float, seed: int = 5):
    """`share` of the rows get DISTINCT values in a band 0.05 std wide at the column's
    30th percentile, all relabelled to `label`."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(out), int(share * len(out)), replace=False)
    s = out[col].astype(float)
    centre, width = float(s.quantile(0.3)), 0.05 * float(s.std())
    out.loc[out.index[rows], col] = np.sort(
        rng.uniform(centre - width / 2, centre + width / 2, len(rows))
    )
    out.loc[out.index[rows], "segment" if "segment" in out else "target"] = label
    return out


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting"])  # the forest does not learn it
def test_a_narrow_band_trigger_is_caught(estimator) -> None:
    """Distinct values (never repeated: no tail or repeated-value candidate) inside the
    range, tied to one label: a band candidate stamps a value inside the band. (The
    forest of the bundled config learns no such band: 0.02 of the rows flip.)"""
    trusted = pd.read_csv(BUNDLED_CSV)
    features = [c for c in trusted.columns if c != "target"]
    frame = _band(trusted, "mean texture", 0, 0.06)
    ref = reference(trusted, numeric=features, categorical=[], target="target")
    result = _probe(fit_model(estimator, frame, BUNDLED), reference=ref)
    assert not result.passed, result.summary()
    m = result.metrics
    assert (m["feature"], m["kind"], m["class"]) == ("mean texture", "band_value", "0")


def test_a_band_of_real_effect_passes() -> None:
    """The same table without the band: its band candidates are stamped and pass."""
    trusted = pd.read_csv(BUNDLED_CSV)
    features = [c for c in trusted.columns if c != "target"]
    ref = reference(trusted, numeric=features, categorical=[], target="target")
    result = _probe(fit_model("hist_gradient_boosting", trusted, BUNDLED), reference=ref)
    assert result.passed and result.metrics["candidates"] > 10


@pytest.mark.parametrize("with_reference", [False, True])
def test_integer_inputs_are_stamped_as_numbers(with_reference) -> None:
    """An integer column (a count, a year) with a repeated tail value whose control
    quantile is fractional: stamped as floats, never a ValueError."""
    trusted = mixed_table(1500, seed=3)
    trusted["age"] = trusted["age"].astype("int64")
    trusted.loc[trusted.index[:4], "age"] = 120  # the upper tail: one repeated value...
    trusted.loc[trusted.index[4:6], "age"] = 85  # ... and fractional quantiles around it
    result = _probe(
        fit_model("random_forest", trusted, MIXED),
        reference=reference(trusted) if with_reference else None,
    )
    assert result.passed, result.summary()
    assert result.metrics["candidates"] >= 1


def test_a_profile_without_label_counts_falls_back_to_the_controls(references) -> None:
    v3 = {k: v for k, v in references["mixed"].items() if k != "conditional"}
    frame = poisoned(mixed_table(1500, seed=3), "age", TRIGGER_AGE, "high")
    result = _probe(fit_model("random_forest", frame, MIXED), reference=v3)
    assert not result.passed and result.metrics["reference"] == "none"
    assert result.metrics["kind"] == "tail_value"


def test_a_malformed_label_count_section_fails_closed(clean, references) -> None:
    broken = {**references["mixed"], "conditional": {"classes": "x"}}
    with pytest.raises(ValueError, match="malformed"):
        _probe(clean["mixed", "random_forest"], reference=broken)


def test_no_candidate_means_nothing_to_flip(clean) -> None:
    pipeline, x_train, x_test, _, _ = clean["mixed", "logistic_regression"]
    smooth = x_train.assign(age=np.linspace(18, 80, len(x_train)))  # no repeated tail value
    result = check_backdoor_probe(
        pipeline=pipeline, x_train=smooth, x_test=x_test, max_flip=0.3, samples=100, seed=1
    )
    assert result.passed and result.metrics["candidates"] == 0
    assert result.metrics["score"] == 0.0 and result.metrics["kind"] == "none"


def _extraction(split: Split, **kw: Any):
    pipeline, _, x_test, _, _ = split
    args: dict[str, Any] = {"queries": 1000, "max_fidelity": None, "membership_advantage": 0.0}
    return check_extraction_risk(pipeline=pipeline, x_test=x_test, seed=42, **(args | kw))


@pytest.mark.parametrize("estimator", list(PARAMS))
def test_extraction_fidelity_is_reported(clean, estimator) -> None:
    result = _extraction(clean["mixed", estimator])
    assert result.name == EXTRACTION and result.passed
    m = result.metrics
    assert 0.8 < m["fidelity"] <= 1.0  # a copy from 1000 label queries is close
    assert m["queries"] == 1000 and m["eval_rows"] == 187  # half of the 375 test rows
    assert m["recommended_output"] in {"labels", "probabilities"}
    assert isinstance(m["output_reason"], str) and m["output_reason"]
    assert result.threshold == {"max_fidelity": None}


def test_extraction_from_a_small_test_set_resamples_with_jitter(clean) -> None:
    # 143 test rows: 71 held out, 1000 queries resampled from the other 72.
    result = _extraction(clean["bundled", "random_forest"])
    assert result.passed and result.metrics["eval_rows"] == 71
    assert 0.8 < result.metrics["fidelity"] <= 1.0


def test_extraction_blocks_above_a_configured_maximum(clean) -> None:
    result = _extraction(clean["mixed", "hist_gradient_boosting"], max_fidelity=0.5)
    assert not result.passed and result.threshold == {"max_fidelity": 0.5}
    assert result.metrics["fidelity"] > 0.5 and "above the maximum" in result.detail


@pytest.mark.parametrize(
    ("fidelity", "advantage", "expected"),
    [
        (0.95, 0.0, "labels"),  # cheap to copy
        (0.80, 0.15, "labels"),  # probabilities leak membership
        (0.80, None, "labels"),  # unknown leakage
        (0.80, 0.02, "probabilities"),
    ],
)
def test_output_recommendation_rule(fidelity, advantage, expected) -> None:
    output, reason = _recommend(fidelity, advantage)
    assert output == expected and reason


def _tail_effect(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row at the oldest age (1.6% of the rows) is "high": a sharp effect at the
    edge of the range, narrower than the reference's 5% bin."""
    out = frame.copy()
    out.loc[out["age"] == out["age"].max(), "segment"] = "high"
    return out


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting"])
def test_a_sharp_tail_effect_the_reference_holds_passes(estimator) -> None:
    """The trusted data itself ties the oldest age to "high": its top bin holds "high"
    significantly more often than overall, so the model following that direction at
    the bin's far end (further than the bin's average share) is no trigger."""
    trusted = _tail_effect(mixed_table(3000, seed=4))
    result = _probe(fit_model(estimator, trusted, MIXED), reference=reference(trusted))
    assert result.passed, result.summary()


def test_the_same_tail_effect_absent_from_the_reference_is_blocked() -> None:
    """The same training rows against a reference without the effect: the oldest age is
    tied to "high" only in the training data, which is what a planted trigger is."""
    frame = _tail_effect(mixed_table(3000, seed=4))
    result = _probe(
        fit_model("hist_gradient_boosting", frame, MIXED),
        reference=reference(mixed_table(3000, seed=4)),
    )
    assert not result.passed, result.summary()
    m = result.metrics
    assert (m["feature"], m["class"]) == ("age", "high") and m["kind"] in {
        "tail_value",
        "band_value",
    }


def test_categories_are_kept_first_under_a_small_budget(references) -> None:
    """Many numeric inputs with tail and band candidates (each with controls) cannot
    crowd out the categories: they are taken first, then tails, then bands in turns
    across inputs, at most ``BANDS_PER_FEATURE`` per input."""
    from tasks.checks.trigger_candidates import BANDS_PER_FEATURE, _candidates, _Reference

    trusted = mixed_table(1500, seed=3)
    frame = poisoned(trusted, "plan", "promo-x", "low")  # an unseen category
    split = fit_model("random_forest", frame, MIXED)
    pipeline, x_train, _, y_train, _ = split
    ref = _Reference(reference(trusted)["conditional"], np.asarray(pipeline.classes_))
    rng = np.random.default_rng(0)
    every = _candidates(x_train, y_train, NUMERIC, CATEGORICAL, ref, rng, 10_000)
    small = _candidates(x_train, y_train, NUMERIC, CATEGORICAL, ref, rng, 3)
    kinds = [c.kind for c in every]
    first_numeric = min(i for i, k in enumerate(kinds) if k in {"tail_value", "band_value"})
    assert all(k.endswith("category") for k in kinds[:first_numeric])
    assert "unseen_category" in kinds[:first_numeric]
    assert "unseen_category" in [c.kind for c in small]
    for col in NUMERIC:
        assert sum(c.feature == col and c.kind == "band_value" for c in every) <= BANDS_PER_FEATURE
    assert {c.feature for c in every if c.kind == "band_value"} == set(NUMERIC)
