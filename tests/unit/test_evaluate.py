"""evaluate: the six gates on a registered model (a real MLflow store), and the
evasion attacks themselves: FGM/PGD on linear models, Square on trees."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.checks.adversarial import (
    ADVERSARIAL,
    adversarial_examples,
    attack_clip,
    attack_rows,
    check_adversarial,
)
from tasks.common.context import Dataset, RunContext
from tasks.common.files import sha256_file
from tasks.common.gates import GateFailed
from tasks.common.settings import EvaluateConfig, load_settings
from tasks.common.tracking import mlflow_client
from tasks.evaluate import (
    BACKDOOR,
    DP_AUDIT,
    EXTRACTION,
    MEMBERSHIP,
    QUALITY,
    check_quality,
    evaluate,
)
from tasks.models import numeric_layout
from tasks.train import TrainedModel, train
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table
from tests.unit.test_probes import MIXED, fit_model

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"
GATES = [QUALITY, ADVERSARIAL, MEMBERSHIP, BACKDOOR, EXTRACTION, DP_AUDIT]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[RunContext, TrainedModel]:
    """One registered model shared by the module (training costs ~2.5 s)."""
    settings = load_settings(state_dir=tmp_path_factory.mktemp("evaluate") / "state")
    ctx = RunContext(settings=settings, run_id="test-run")
    dataset = Dataset(
        frame=pd.read_csv(CSV),
        uri=str(CSV),
        sha256=sha256_file(CSV),
        format="csv",
        integrity="none",
        target="target",
    )
    model, _ = train(ctx, dataset, suite_sha256="0" * 64)
    return ctx, model


def with_evaluate(ctx: RunContext, **changes: Any) -> RunContext:
    s = ctx.settings
    evaluate_cfg = s.evaluate.model_copy(update=changes)
    return RunContext(settings=s.model_copy(update={"evaluate": evaluate_cfg}), run_id=ctx.run_id)


@pytest.mark.integration
def test_defaults_pass_and_are_recorded(trained):
    ctx, model = trained
    metrics, results = evaluate(ctx, model)
    assert [(r.name, r.passed) for r in results] == [(g, True) for g in GATES]
    assert metrics["accuracy"] >= 0.95 and metrics["roc_auc"] > 0.99 and metrics["f1"] > 0.95
    assert metrics["samples"] == len(model.x_test)  # 143 test rows < attack_samples=200
    assert metrics["clean_accuracy"] == metrics["accuracy"]
    assert 0.8 <= metrics["robust_accuracy"] < metrics["clean_accuracy"]
    assert metrics["max_perturbation_std"] == pytest.approx(0.1, abs=1e-5)
    assert metrics["advantage_ci_low"] < metrics["advantage"] < metrics["advantage_ci_high"]
    assert 0 <= metrics["score"] <= 0.3 and 0.8 < metrics["fidelity"] <= 1
    by_name = {r.name: r for r in results}
    assert by_name[ADVERSARIAL].metrics["attack"] == "fgm"  # "auto" on a linear model
    assert by_name[MEMBERSHIP].threshold == {"max_advantage": 0.25, "max_tpr_at_low_fpr": 0.15}
    assert 0 <= metrics["tpr_at_1pct_fpr_ci_low"] <= 0.15 and "roc_curve" not in metrics
    # The bundled config keeps its fixed floors beside the relative rules.
    assert by_name[QUALITY].threshold == {
        "min_skill": 0.2,
        "max_regression": 0.02,
        "min_accuracy": 0.9,
    }
    assert by_name[ADVERSARIAL].threshold == {
        "max_robust_drop": 0.3,
        "max_regression": 0.02,
        "min_robust_accuracy": 0.8,
    }
    assert by_name[QUALITY].metrics["champion"] == "none"  # no champion in this registry
    assert by_name[QUALITY].metrics["skill"] > 0.8
    assert by_name[BACKDOOR].threshold == {"max_backdoor_flip": 0.3}
    assert by_name[EXTRACTION].threshold == {"max_fidelity": None}
    assert by_name[EXTRACTION].metrics["recommended_output"] == "labels"  # fidelity >= 0.9
    assert by_name[DP_AUDIT].metrics == {"applies": False}  # not a DP model
    client = mlflow_client(ctx.settings)
    run = client.get_run(model.mlflow_run_id)
    logged = run.data.metrics
    assert logged["evaluate.quality.accuracy"] == metrics["accuracy"]
    assert logged["evaluate.adversarial.robust_accuracy"] == metrics["robust_accuracy"]
    assert logged["evaluate.backdoor_probe.score"] == metrics["score"]
    assert logged["evaluate.extraction_risk.fidelity"] == metrics["fidelity"]
    assert "evaluate.extraction_risk.recommended_output" not in logged  # text: report only
    assert run.data.tags["evaluate.attack"] == "fgm"
    tags = client.get_model_version(model.name, model.version).tags
    assert all(tags[g] == "passed" for g in GATES)
    assert evaluate(ctx, model)[0] == metrics  # deterministic


@pytest.mark.integration
def test_quality_floor_blocks(trained):
    ctx, model = trained
    with pytest.raises(GateFailed) as err:
        evaluate(with_evaluate(ctx, min_accuracy=0.999), model)
    assert err.value.gate.name == QUALITY
    assert err.value.gate.metrics["accuracy"] < 0.999
    assert err.value.gate.threshold["min_accuracy"] == 0.999
    assert "below the fixed floor evaluate.min_accuracy = 0.999" in err.value.gate.detail
    assert [r.name for r in err.value.results] == GATES  # every gate ran and is reported
    tags = mlflow_client(ctx.settings).get_model_version(model.name, model.version).tags
    assert tags["gate_status"] == "blocked" and tags["blocked_by"] == QUALITY


@pytest.mark.integration
def test_large_attack_blocks(trained):
    ctx, model = trained
    with pytest.raises(GateFailed) as err:
        evaluate(with_evaluate(ctx, attack_eps=0.45), model)
    gate = err.value.gate
    assert gate.name == ADVERSARIAL
    assert gate.metrics["robust_accuracy"] < 0.5  # measured 0.40
    assert "> evaluate.max_robust_drop = 0.3" in gate.detail  # the drop: 0.59
    assert "below the fixed floor evaluate.min_robust_accuracy" in gate.detail


@pytest.mark.integration
def test_an_extraction_maximum_blocks(trained):
    ctx, model = trained
    with pytest.raises(GateFailed) as err:
        evaluate(with_evaluate(ctx, max_extraction_fidelity=0.5), model)
    assert err.value.gate.name == EXTRACTION
    assert err.value.gate.threshold == {"max_fidelity": 0.5}


# FGM robust accuracy on the bundled data, measured: 0.902 / 0.622 at eps 0.1 / 0.3.
@pytest.mark.integration
@pytest.mark.parametrize(("eps", "expected"), [(0.1, 0.90), (0.3, 0.62)])
@pytest.mark.parametrize("attack", ["fgm", "pgd"])
def test_robust_accuracy_matches_stack_notes(trained, eps, expected, attack):
    ctx, model = trained
    cfg = ctx.settings.evaluate.model_copy(update={"attack": attack, "attack_eps": eps})
    result = check_adversarial(
        pipeline=model.pipeline,
        estimator="logistic_regression",
        x_train=model.x_train,
        x=model.x_test,
        y=model.y_test,
        config=cfg,
        seed=42,
    )
    assert result.metrics["robust_accuracy"] == pytest.approx(expected, abs=0.03)
    assert result.metrics["max_perturbation_std"] <= eps * (1 + 1e-4) + 1e-6


@pytest.mark.integration
@pytest.mark.parametrize("attack", ["fgm", "pgd"])
def test_a_gradient_attack_on_a_tree_model_fails_closed(trained, attack):
    ctx, model = trained
    s = ctx.settings
    from tasks.models import build_pipeline

    forest_cfg = s.model.model_copy(update={"estimator": "random_forest"})
    forest = build_pipeline(forest_cfg, s.dataset, list(model.x_train.columns))
    forest.fit(model.x_train, model.y_train)
    other = dataclasses.replace(
        model, pipeline=forest, params={**model.params, "estimator": "random_forest"}
    )
    with pytest.raises(GateFailed) as err:
        evaluate(with_evaluate(ctx, attack=attack), other)
    gate = err.value.gate
    assert gate.name == ADVERSARIAL and not gate.passed
    assert "needs loss gradients" in gate.detail and "failing closed" in gate.detail
    assert {r.name: r.passed for r in err.value.results}[QUALITY] is True


@pytest.mark.integration
def test_a_pipeline_of_another_shape_fails_closed(trained):
    _, model = trained
    plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    plain.fit(model.x_train, model.y_train)
    result = check_adversarial(
        pipeline=plain,
        estimator="logistic_regression",
        x_train=model.x_train,
        x=model.x_test,
        y=model.y_test,
        config=EvaluateConfig(),
        seed=42,
    )
    assert not result.passed and "not a pipeline of tasks/models.py" in result.detail


@pytest.mark.integration
def test_attack_rows_are_a_seeded_subset(trained):
    _, model = trained
    a = attack_rows(model.x_test, model.y_test, samples=50, seed=42)
    b = attack_rows(model.x_test, model.y_test, samples=50, seed=42)
    assert len(a[0]) == 50 and list(a[0].index) == list(b[0].index)
    assert list(a[0].index) == list(a[1].index)
    assert attack_rows(model.x_test, model.y_test, samples=500, seed=42)[0] is model.x_test


# ---- Square (black box) on the synthetic team table: strings, NaN, 3 classes ----


@pytest.fixture(scope="module")
def trees() -> dict[str, Any]:
    frame = mixed_table(1500, seed=3)
    return {
        est: fit_model(est, frame, MIXED) for est in ("random_forest", "hist_gradient_boosting")
    }


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting"])
def test_square_attacks_trees_on_numeric_inputs_only(trees, estimator):
    pipeline, x_train, x_test, _, y_test = trees[estimator]
    x, y = attack_rows(x_test, y_test, samples=200, seed=42)
    cfg = EvaluateConfig()
    result = check_adversarial(
        pipeline=pipeline, estimator=estimator, x_train=x_train, x=x, y=y, config=cfg, seed=42
    )
    m = result.metrics
    assert result.passed, result.summary()
    assert m["attack"] == "square" and m["samples"] == 200
    assert 0.8 <= m["robust_accuracy"] < m["clean_accuracy"]  # measured 0.94 / 0.93
    assert m["max_perturbation_std"] == pytest.approx(0.1, abs=1e-6)
    # The adversarial rows themselves (a smaller batch: the same code path).
    adv = adversarial_examples(
        pipeline=pipeline,
        estimator=estimator,
        x_train=x_train,
        x=x[:60],
        y=y[:60],
        config=cfg,
        seed=1,
    )
    pd.testing.assert_frame_equal(adv.x_adv[CATEGORICAL], x[:60][CATEGORICAL])
    assert not adv.x_adv[NUMERIC].isna().any().any()  # a missing cell: imputed, then perturbed
    layout = numeric_layout(pipeline)
    imputed = pipeline.named_steps["prep"].transform(x[:60])[:, layout.positions]
    moved = (adv.x_adv[layout.columns].to_numpy() - layout.mean) / layout.scale - imputed
    assert np.abs(moved).max() <= 0.1 + 1e-9
    assert adv.wrapper_mismatch == 0 and not adv.over_budget


def test_the_black_box_search_is_seeded_and_leaves_global_state_alone(trees):
    pipeline, x_train, x_test, _, y_test = trees["hist_gradient_boosting"]
    x, y = x_test[:40], y_test[:40]
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    args: dict[str, Any] = {"pipeline": pipeline, "estimator": "hist_gradient_boosting"}
    cfg = EvaluateConfig(attack_iterations=20)
    a = adversarial_examples(**args, x_train=x_train, x=x, y=y, config=cfg, seed=3)
    b = adversarial_examples(**args, x_train=x_train, x=x, y=y, config=cfg, seed=3)
    pd.testing.assert_frame_equal(a.x_adv, b.x_adv)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_square_is_selectable_for_a_linear_model():
    pipeline, x_train, x_test, _, y_test = fit_model("logistic_regression", mixed_table(800), MIXED)
    result = check_adversarial(
        pipeline=pipeline,
        estimator="logistic_regression",
        x_train=x_train,
        x=x_test,
        y=y_test,
        config=EvaluateConfig(attack="square", attack_iterations=30),
        seed=42,
    )
    assert result.metrics["attack"] == "square" and "does not model" not in result.detail


def test_quality_with_string_labels_and_three_classes(trees):
    pipeline, _, x_test, _, y_test = trees["random_forest"]
    result = check_quality(pipeline=pipeline, x=x_test, y=y_test, min_accuracy=0.9)
    assert result.passed and result.metrics["rows"] == len(x_test)
    assert result.metrics["f1"] > 0.9 and result.metrics["roc_auc"] > 0.95


def test_quality_with_binary_string_labels():
    from tests.unit.test_probes import BUNDLED

    frame = pd.read_csv(CSV)
    named = frame.assign(target=np.where(frame["target"] == 1, "benign", "malignant"))
    pipeline, _, x_test, _, y_test = fit_model("logistic_regression", named, BUNDLED)
    result = check_quality(pipeline=pipeline, x=x_test, y=y_test, min_accuracy=0.9)
    assert list(pipeline.classes_) == ["benign", "malignant"]
    assert result.passed and result.metrics["f1"] > 0.9 and result.metrics["roc_auc"] > 0.99


@pytest.mark.parametrize("classes", [["no", "yes"], ["high", "low", "medium"], [0, 1, 2]])
def test_quality_metrics_on_codes_equal_the_metrics_on_labels(classes):
    """The gate scores class codes; the values must be sklearn's on the labels, an
    unseen test label included (it counts against accuracy and F1, and leaves no AUC
    beyond 2 classes)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(3)
    labels = np.array(classes)
    x = pd.DataFrame({"a": np.zeros(400)})
    y = pd.Series(labels[rng.integers(0, len(classes), 400)])
    model = DummyClassifier().fit(x, y)
    pred = labels[rng.integers(0, len(classes), 400)]
    proba = rng.dirichlet(np.ones(len(classes)), 400)
    binary = len(classes) == 2
    f1_args = {"average": "binary", "pos_label": classes[-1]} if binary else {"average": "macro"}
    for truth in (y, y.where(np.arange(400) != 7, "unseen" if isinstance(classes[0], str) else 9)):
        if binary and not truth.isin(classes).all():  # a third label: binary F1 is undefined
            with pytest.raises(ValueError, match="multiclass"):
                f1_score(truth, pred, **f1_args)
            with pytest.raises(ValueError, match="multiclass"):  # so the gate fails closed
                check_quality(pipeline=model, x=x, y=truth, min_accuracy=0.0, pred=pred)
            continue
        result = check_quality(
            pipeline=model, x=x, y=truth, min_accuracy=0.0, pred=pred, proba=proba
        )
        assert result.metrics["accuracy"] == pytest.approx(accuracy_score(truth, pred))
        assert result.metrics["f1"] == pytest.approx(f1_score(truth, pred, **f1_args))
        if binary:
            auc = roc_auc_score(truth == classes[1], proba[:, 1])
        elif truth.isin(classes).all():
            auc = roc_auc_score(truth, proba, multi_class="ovr", labels=classes)
        else:
            auc = None
        assert result.metrics["roc_auc"] == (pytest.approx(auc) if auc is not None else None)


def test_quality_on_a_large_test_set_samples_unless_the_sample_could_tip_the_verdict():
    """Beyond QUALITY_ROWS test rows the metrics come from a seeded sample, whose 99.9%
    interval holds the whole set's accuracy; a floor inside that interval makes the
    gate score every row, so the verdict is always the whole test set's."""
    from sklearn.dummy import DummyClassifier

    import tasks.checks.quality as ev

    n = 3 * ev.QUALITY_ROWS
    rng = np.random.default_rng(5)
    labels = np.array(["a", "b", "c"])
    y = pd.Series(labels[rng.integers(0, 3, n)])
    pred = np.where(rng.random(n) < 0.9, y.to_numpy(), labels[rng.integers(0, 3, n)])
    x = pd.DataFrame({"f": np.zeros(n)})
    model = DummyClassifier().fit(x, y)
    whole = float(np.mean(pred == y.to_numpy()))

    far = check_quality(pipeline=model, x=x, y=y, min_accuracy=0.75, pred=pred)
    m = far.metrics
    assert far.passed and m["accuracy_rows"] == ev.QUALITY_ROWS and m["rows"] == n
    assert abs(m["accuracy"] - whole) <= m["accuracy_ci999"] and m["accuracy_ci999"] < 0.01

    for floor in (whole - 0.001, whole + 0.001):  # inside the interval: every row decides
        near = check_quality(pipeline=model, x=x, y=y, min_accuracy=floor, pred=pred)
        assert near.metrics["accuracy_rows"] == n and near.metrics["accuracy"] == whole
        assert near.passed == (whole >= floor)


def test_the_train_stage_hands_evaluate_what_it_read_of_every_row(trained):
    """The training ranges and the trivial baselines are made once in the train stage;
    the gates give the same verdict and metrics with them as when they read every row
    themselves (so the evaluate stage's cost does not grow with the rows)."""
    ctx, model = trained
    assert model.input_ranges is not None and model.baselines is not None
    col = numeric_layout(model.pipeline).columns[0]
    assert model.input_ranges[col] == (model.x_train[col].min(), model.x_train[col].max())
    cfg = ctx.settings.evaluate
    x, y = attack_rows(model.x_test, model.y_test, samples=cfg.attack_samples, seed=0)
    kw = {"pipeline": model.pipeline, "estimator": "logistic_regression", "x_train": model.x_train}
    kw |= {"x": x, "y": y, "config": cfg, "seed": 0, "curves": False}
    given = check_adversarial(**kw, ranges=model.input_ranges)
    read = check_adversarial(**kw)
    assert given.model_dump() == read.model_dump()
    # Other ranges change the attack's clip: the argument is really used.
    off = {c: (lo - 100.0, hi + 100.0) for c, (lo, hi) in model.input_ranges.items()}
    same = attack_clip(model.pipeline, x, model.x_train, model.input_ranges)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(same, attack_clip(model.pipeline, x, model.x_train), strict=True)
    )
    wider = attack_clip(model.pipeline, x, model.x_train, off)
    assert (wider[0] <= same[0]).all() and (wider[0] < same[0]).any()
    qkw = {"pipeline": model.pipeline, "x": model.x_test, "y": model.y_test}
    qkw |= {"y_train": model.y_train, "pred": model.test_pred, "proba": model.test_proba}
    assert check_quality(**qkw, baselines=model.baselines).model_dump() == (
        check_quality(**qkw).model_dump()
    )
