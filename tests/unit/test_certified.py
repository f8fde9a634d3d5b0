"""Certified robustness beside the attack (evaluate.adversarial): the exact linear
radius against brute force, the tree verifier's soundness, certified <= attack on the
same rows, categorical inputs fixed, the time budget and the optional floor."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.checks.adversarial import (
    CURVE_FACTORS,
    adversarial_examples,
    attack_clip,
    attack_rows,
    check_adversarial,
)
from tasks.checks.certified import (
    LINEAR_METHOD,
    TREE_METHOD,
    _ensemble,
    certify,
    ensemble_margin,
    linear_radius,
)
from tasks.common.settings import EvaluateConfig
from tasks.models import numeric_layout
from tests.mixed_table import CATEGORICAL, mixed_table
from tests.unit.test_probes import MIXED, fit_model

ZOO = ("logistic_regression", "random_forest", "hist_gradient_boosting")


@pytest.fixture(scope="module")
def zoo() -> dict[str, Any]:
    frame = mixed_table(1200, seed=5)
    return {est: fit_model(est, frame, MIXED) for est in ZOO}


def _corners(z: np.ndarray, positions: np.ndarray, eps: float) -> np.ndarray:
    """Every corner of the L-inf box of `eps` around row `z` on `positions`."""
    out = []
    for signs in itertools.product((-1.0, 1.0), repeat=len(positions)):
        c = z.copy()
        c[positions] += eps * np.asarray(signs)
        out.append(c)
    return np.asarray(out)


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_radius_is_exact_at_the_worst_corner(classes):
    rng = np.random.default_rng(classes)
    width, positions = 5, np.array([0, 1, 3])  # 2 and 4 are fixed (one-hot) positions
    coef = rng.normal(size=(1 if classes == 2 else classes, width))
    bias = rng.normal(size=len(coef))
    z = rng.normal(size=(40, width))
    # Binary: scores [0, w.z + b], as `linear_scores` reads a binary model.
    full = np.vstack([np.zeros(width), coef]) if classes == 2 else coef
    full_b = np.r_[0.0, bias] if classes == 2 else bias
    pred, radius = linear_radius(full, full_b, z, positions)
    checked = 0
    for row, p, r in zip(z, pred, radius, strict=True):
        assert np.isfinite(r) and r > 0
        inside = (_corners(row, positions, r * (1 - 1e-6)) @ full.T + full_b).argmax(1)
        outside = (_corners(row, positions, r * (1 + 1e-6)) @ full.T + full_b).argmax(1)
        assert np.all(inside == p)  # nothing within the radius changes the prediction
        assert np.any(outside != p)  # a corner just beyond it does
        checked += 1
    assert checked == 40
    # A weight only on fixed positions: nothing the attacker may move changes the score.
    flat = np.zeros((1, width))
    flat[0, 2] = 1.0
    assert np.all(np.isinf(linear_radius(flat, np.zeros(1), z, positions)[1]))


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting"])
def test_the_tree_verifier_is_sound(zoo, estimator):
    """Rows it certifies keep their prediction at every corner and random point of the
    box; with a zero-width box it reproduces the pipeline's predictions."""
    pipeline, _, x_test, _, _ = zoo[estimator]
    x = x_test[:30]
    z = np.asarray(pipeline["prep"].transform(x), dtype=np.float64)
    pos = numeric_layout(pipeline).positions
    classes = pipeline.classes_
    pred = np.asarray(pd.Index(classes).get_indexer(pipeline.predict(x)))
    ens = _ensemble(pipeline["model"], len(classes))
    assert ens is not None
    assert np.all(ensemble_margin(ens, z, z, pred) >= 0)  # its scores are the model's
    eps = 0.2
    lo, hi = z.copy(), z.copy()
    lo[:, pos] -= eps
    hi[:, pos] += eps
    proved = ensemble_margin(ens, lo, hi, pred) > 0
    assert 0 < proved.sum() < len(x) or proved.all()
    rng = np.random.default_rng(0)
    model = pipeline["model"]
    for i in np.flatnonzero(proved):
        shifts = np.zeros((300, z.shape[1]))
        shifts[:, pos] = rng.uniform(-eps, eps, (300, len(pos)))
        points = np.vstack([_corners(z[i], pos, eps), z[i] + shifts])
        assert np.all(model.predict(points) == classes[pred[i]])


@pytest.mark.parametrize("estimator", ZOO)
def test_certified_is_at_most_the_attack_on_the_same_rows(zoo, estimator):
    pipeline, x_train, x_test, _, y_test = zoo[estimator]
    x, y = attack_rows(x_test, y_test, samples=120, seed=42)
    cfg = EvaluateConfig(attack_eps=0.2, attack_iterations=40)
    result = check_adversarial(
        pipeline=pipeline, estimator=estimator, x_train=x_train, x=x, y=y, config=cfg, seed=42
    )
    m = result.metrics
    assert "disagree" not in result.detail and "does not model" not in result.detail
    certified, robust = m["certified_accuracy"], m["robust_accuracy"]
    assert certified is not None and 0 < certified <= robust <= m["clean_accuracy"]
    expected = LINEAR_METHOD if estimator == "logistic_regression" else TREE_METHOD
    assert m["certified_method"] == expected
    assert m["certified_rows"] == len(x)  # the default budget certifies every row here
    eps_values = [round(0.2 * f, 6) for f in CURVE_FACTORS]
    assert [e for e, _ in m["robustness_curve"]] == eps_values
    assert [e for e, _ in m["certified_curve"]] == eps_values
    for (_, attacked), (_, proved) in zip(m["robustness_curve"], m["certified_curve"], strict=True):
        assert proved is not None and attacked is not None and proved <= attacked
    attacked_curve = [a for _, a in m["robustness_curve"]]
    proved_curve = [p for _, p in m["certified_curve"]]
    assert attacked_curve == sorted(attacked_curve, reverse=True)  # more eps, less accuracy
    assert proved_curve == sorted(proved_curve, reverse=True)
    assert dict(m["robustness_curve"])[0.2] == round(robust, 4)
    assert dict(m["certified_curve"])[0.2] == round(certified, 4)
    if estimator == "logistic_regression":
        assert m["attacks"] == "fgm+corner"
        # The exact worst case is among the attacks: attack and certificate meet.
        assert certified == robust
    else:
        assert m["attack"] == m["attacks"] == "square"


@pytest.mark.parametrize("estimator", ["logistic_regression", "dp_logistic_regression"])
def test_auto_keeps_the_worst_per_row_and_meets_the_certificate(estimator):
    """ "auto" on a linear model: FGM and the exact corner, the worst per row. It breaks
    every row FGM or PGD breaks, and what it leaves is exactly what is certified."""
    pipeline, x_train, x_test, _, y_test = fit_model(estimator, mixed_table(800, seed=2), MIXED)
    x, y = attack_rows(x_test, y_test, samples=120, seed=42)
    kw: dict[str, Any] = {"pipeline": pipeline, "estimator": estimator}
    kw |= {"x_train": x_train, "x": x, "y": y, "seed": 42}
    truth = y.to_numpy()

    def broken(attack: str) -> np.ndarray:
        cfg = EvaluateConfig(attack=attack, attack_eps=0.3, attack_iterations=40)
        adv = adversarial_examples(config=cfg, **kw)
        pd.testing.assert_frame_equal(adv.x_adv[CATEGORICAL], x[CATEGORICAL])
        assert adv.wrapper_mismatch == 0 and not adv.over_budget
        return np.asarray(pipeline.predict(adv.x_adv)) != truth

    both, fgm, pgd = broken("auto"), broken("fgm"), broken("pgd")
    assert np.all(both >= fgm) and np.all(both >= pgd) and both.sum() > 0
    clip = tuple(c.astype(np.float64) for c in attack_clip(pipeline, x, x_train))
    cert = certify(pipeline=pipeline, x=x, y=y, eps_values=[0.3], seconds=5, clip=clip)
    proved = cert.rows[0.3]
    assert proved is not None and np.array_equal(proved, ~both)


def test_categorical_inputs_stay_fixed_in_the_certificate():
    """A label decided by a category alone: moving a one-hot input by eps would flip
    a linear model; the certificate holds categories fixed, so every correct row is
    certified at any eps (the numeric input carries no weight that matters)."""
    rng = np.random.default_rng(1)
    n = 600
    region = rng.choice(["north", "south"], size=n)
    frame = pd.DataFrame(
        {
            "income": rng.normal(size=n),
            "age": rng.normal(size=n),
            "balance": rng.normal(size=n),
            "tenure": rng.normal(size=n),
            "region": region,
            "plan": "basic",
            "channel_code": 1,
            "segment": np.where(region == "north", "low", "high"),
        }
    )
    pipeline, _, x_test, _, y_test = fit_model("logistic_regression", frame, MIXED)
    cert = certify(pipeline=pipeline, x=x_test, y=y_test, eps_values=[0.45, 5.0], seconds=5)
    clean = float(np.mean(pipeline.predict(x_test) == y_test.to_numpy()))
    assert clean == 1.0
    assert cert.accuracy(0.45) == 1.0
    # The numeric weights are small but not zero: far enough, the certificate ends.
    assert cert.accuracy(5.0) is not None and cert.accuracy(5.0) <= 1.0
    coef = pipeline["model"].coef_[0]
    pos = numeric_layout(pipeline).positions
    others = np.setdiff1d(np.arange(len(coef)), pos)
    assert np.abs(coef[others]).max() > 2 * 0.45 * np.abs(coef[pos]).sum()


def test_the_budget_bounds_the_tree_verifier(zoo):
    pipeline, _, x_test, _, y_test = zoo["random_forest"]
    x = pd.concat([x_test] * 4)
    y = pd.concat([y_test] * 4)
    started = time.perf_counter()
    cert = certify(pipeline=pipeline, x=x, y=y, eps_values=[0.1, 0.2], seconds=0.1)
    took = time.perf_counter() - started
    full = certify(pipeline=pipeline, x=x[:50], y=y[:50], eps_values=[0.1], seconds=60)
    assert cert.rows_verified < len(x)
    assert took < 0.1 + 5 * max(full.seconds, 0.05)  # at most one chunk past the budget
    # Rows left over count as not certified: a lower bound stays a lower bound.
    share = cert.rows_verified / len(x)
    assert cert.accuracy(0.1) is not None and cert.accuracy(0.1) <= share


def test_a_certified_floor_blocks_with_its_name(zoo):
    pipeline, x_train, x_test, _, y_test = zoo["random_forest"]
    x, y = attack_rows(x_test, y_test, samples=60, seed=42)
    kw: dict[str, Any] = {"pipeline": pipeline, "estimator": "random_forest"}
    kw |= {"x_train": x_train, "x": x, "y": y, "seed": 42}
    cfg = EvaluateConfig(attack_iterations=20)
    passed = check_adversarial(config=cfg, **kw)
    assert passed.passed, passed.summary()
    assert "min_certified_accuracy" not in passed.threshold  # report only by default
    blocked = check_adversarial(
        config=cfg.model_copy(update={"min_certified_accuracy": 0.999}), **kw
    )
    assert not blocked.passed
    assert blocked.threshold["min_certified_accuracy"] == 0.999
    assert "below the fixed floor evaluate.min_certified_accuracy = 0.999" in blocked.detail
    assert "certify_seconds" in blocked.detail


def test_a_model_without_a_verifier_reports_none():
    from sklearn.neighbors import KNeighborsClassifier

    pipeline, x_train, x_test, _, y_test = fit_model("random_forest", mixed_table(400), MIXED)
    pipeline.steps[-1] = (
        "model",
        KNeighborsClassifier().fit(pipeline["prep"].transform(x_train), pipeline.predict(x_train)),
    )
    cert = certify(pipeline=pipeline, x=x_test, y=y_test, eps_values=[0.1], seconds=5)
    assert cert.accuracy(0.1) is None and "no verifier for KNeighborsClassifier" in cert.method


def test_the_evaluate_stage_reports_both_bounds(zoo):
    """Through `tasks.evaluate.evaluate_checks` (as the stage runs it): both bounds and
    both curves in the gate's metrics, curves as the report reads them."""
    from tasks.evaluate import evaluate_checks

    pipeline, x_train, x_test, y_train, y_test = zoo["logistic_regression"]
    results = evaluate_checks(
        EvaluateConfig(attack_samples=80),
        pipeline=pipeline,
        estimator="logistic_regression",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        seed=42,
    )
    gate = next(r for r in results if r.name == "evaluate.adversarial")
    m = gate.metrics
    assert gate.passed and m["samples"] == 80
    assert m["certified_accuracy"] == m["robust_accuracy"]  # linear: the bounds meet
    for key in ("robustness_curve", "certified_curve"):
        curve = m[key]
        assert 0 < len(curve) <= 64
        assert all(isinstance(x, float) and round(x, 4) == x for x, _ in curve)
        assert all(y is None or round(y, 4) == y for _, y in curve)


def test_a_certificate_the_attack_contradicts_fails_closed(zoo, monkeypatch):
    """A verifier that claims every row (wrong: the attack breaks some) is caught: the
    gate fails closed instead of reporting the two bounds crossed."""
    import tasks.checks.adversarial as adversarial_mod
    from tasks.checks.certified import Certified

    def overclaiming(**kw: Any) -> Certified:
        n = len(kw["x"])
        return Certified("overclaiming", {e: np.ones(n, bool) for e in kw["eps_values"]}, n, 0.0)

    monkeypatch.setattr(adversarial_mod, "certify", overclaiming)
    pipeline, x_train, x_test, _, y_test = zoo["logistic_regression"]
    x, y = attack_rows(x_test, y_test, samples=120, seed=42)
    result = check_adversarial(
        pipeline=pipeline,
        estimator="logistic_regression",
        x_train=x_train,
        x=x,
        y=y,
        config=EvaluateConfig(attack_eps=0.3),
        seed=42,
    )
    assert result.metrics["robust_accuracy"] < 1.0
    assert not result.passed and "disagree" in result.detail and "failing closed" in result.detail
