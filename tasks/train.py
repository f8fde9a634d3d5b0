"""Train stage: a deterministic scikit-learn pipeline, tracked and registered in MLflow.

Threats: insider tampering with the model between training and release, and
unsafe model formats. The model is logged with skops (never pickle), every
file of the logged model is hashed, and gate ``train.artifact_roundtrip``
loads the *logged* artifact through `tasks.trust.modelio` (digest checked,
pinned allow-list) and requires it to predict exactly what the trained
pipeline predicts: what will be signed and deployed is what was evaluated.

Reproducible: the same data, config (seed included) and installed packages give a
``model.skops`` with the same sha256 on every run (`fit_pipeline`, and MLflow writes
the file with `tasks.trust.modelio.dump_model`, see `tasks.mlflow_model`),
so anyone can retrain and compare with the released digest. The other files of the
model directory (MLmodel: run id, time, uuid) differ per run and are not part of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from tasks.checks.baselines import trivial_baselines
from tasks.checks.evasion import training_ranges
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.gates import GateResult, check, run_check
from tasks.common.registry import ModelRegistry
from tasks.common.settings import DatasetConfig, ModelConfig
from tasks.common.tracking import mlflow_client
from tasks.mlflow_model import _log_to_mlflow, fetch_model_dir
from tasks.models import (
    fit_pipeline,
    model_params,
    numeric_layout,
    resolve_data_norm,
)
from tasks.trust.modelio import load_model_file

log = logging.getLogger(__name__)

ROUNDTRIP = "train.artifact_roundtrip"


@dataclass(frozen=True)
class TrainedModel:
    """A trained pipeline, its registered MLflow version and its exact files."""

    pipeline: Pipeline
    name: str  # registered model name
    version: str  # registered version
    mlflow_run_id: str
    model_uri: str  # "models:/name/version"
    skops_path: Path  # local copy of the logged .skops file
    sha256: str  # of the .skops file
    files: dict[str, str]  # relative path -> sha256, every file in the logged model dir
    params: dict[str, Any]
    x_test: pd.DataFrame
    y_test: pd.Series
    x_train: pd.DataFrame
    y_train: pd.Series
    # The trained pipeline's predictions on x_test, made once: the round-trip gate
    # compares the logged file's against them and the quality gate scores them.
    test_pred: np.ndarray | None = None
    test_proba: np.ndarray | None = None
    # What the evaluate stage would otherwise read of every row: the numeric inputs'
    # training (min, max) (the attack's range) and the trivial baselines' accuracies
    # (the quality gate). Made here, where every row is read anyway.
    input_ranges: dict[str, tuple[float, float]] | None = None
    baselines: dict[str, float] | None = None


def split(
    dataset: Dataset, *, config: ModelConfig, columns: DatasetConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Stratified, seeded train/test split: (x_train, x_test, y_train, y_test).

    Only the model's inputs (`DatasetConfig.inputs`) are kept: ignored and
    pseudonymised PII columns stay in the data for joins and audit, never in a model.
    """
    numeric, categorical = columns.inputs([str(c) for c in dataset.frame.columns])
    x = dataset.frame[[*numeric, *categorical]]
    y = dataset.frame[dataset.target]
    parts = train_test_split(
        x, y, test_size=config.test_fraction, random_state=config.seed, stratify=y
    )
    return parts[0], parts[1], parts[2], parts[3]


def check_artifact_roundtrip(
    *,
    pipeline: Pipeline,
    skops_path: Path,
    expected_sha256: str,
    x: pd.DataFrame,
    expected: np.ndarray | None = None,
) -> GateResult:
    """The logged file, loaded the safe way, must predict exactly like `pipeline` on `x`
    (`expected`: the pipeline's predictions on `x`, if already made)."""
    loaded = load_model_file(skops_path, expected_sha256=expected_sha256)
    expected = pipeline.predict(x) if expected is None else expected
    actual = np.asarray(loaded.predict(x))
    mismatches = int(np.sum(actual != expected)) if actual.shape == expected.shape else len(x)
    return check(
        ROUNDTRIP,
        metrics={"mismatches": mismatches, "rows": len(x)},
        threshold={"max_mismatches": 0},
        ok=mismatches == 0,
        detail="logged model predicts like the trained one"
        if mismatches == 0
        else "the logged artifact differs from the trained model; do not release it, "
        "check who can write the MLflow artifact store and re-run",
    )


def train(
    ctx: RunContext,
    dataset: Dataset,
    *,
    suite_sha256: str,
    evidence: Mapping[str, Path] | None = None,
) -> tuple[TrainedModel, list[GateResult]]:
    """Fit, log and register the model, then prove the logged artifact is the model.

    Args:
        ctx: Run settings, identity and audit trail.
        dataset: The validated and screened dataset.
        suite_sha256: Digest of the expectation suite the data passed (provenance).
        evidence: Directories of the data stages' evidence, by name, logged with the model.

    Returns:
        The trained model and this stage's gate results.

    Raises:
        GateFailed: ``train.artifact_roundtrip`` failed; the registered version
            is tagged ``gate_status=blocked``.
    """
    s = ctx.settings
    gates = StageGates(ctx)
    x_train, x_test, y_train, y_test = split(dataset, config=s.model, columns=s.dataset)
    config = resolve_data_norm(s.model, s.dataset, x_train)
    params = model_params(config)
    pipeline = fit_pipeline(config, s.dataset, x_train, y_train)
    run_id, version, artifact_uri = _log_to_mlflow(
        ctx,
        dataset,
        pipeline,
        suite_sha256=suite_sha256,
        params=params,
        x_train=x_train,
        y_train=y_train,
        evidence=evidence or {},
    )
    model_dir = ctx.run_dir / "model"
    files = fetch_model_dir(artifact_uri=artifact_uri, dest=model_dir, tracking_uri=s.tracking_uri)
    found = [rel for rel in files if rel.endswith(".skops")]
    skops_rel = found[0] if len(found) == 1 else ""  # none or several: the check fails closed
    sha256 = files.get(skops_rel, "")
    test_pred = np.asarray(pipeline.predict(x_test))
    test_proba = (
        np.asarray(pipeline.predict_proba(x_test)) if hasattr(pipeline, "predict_proba") else None
    )
    result = run_check(
        ROUNDTRIP,
        check_artifact_roundtrip,
        pipeline=pipeline,
        skops_path=model_dir / skops_rel,
        expected_sha256=sha256,
        x=x_test,
        expected=test_pred,
    )
    mlflow_client(s).set_tag(run_id, "model_sha256", sha256)
    registry = ModelRegistry.for_settings(s)
    registry.tag(version, {"model_sha256": sha256})
    registry.mark(
        version,
        status="candidate" if result.passed else "blocked",
        blocked_by=None if result.passed else ROUNDTRIP,
    )
    log.info("trained %s version %s (%s)", s.model.name, version, result.summary())
    gates.enforce(result)
    model = TrainedModel(
        pipeline=pipeline,
        name=s.model.name,
        version=version,
        mlflow_run_id=run_id,
        model_uri=f"models:/{s.model.name}/{version}",
        skops_path=model_dir / skops_rel,
        sha256=sha256,
        files=files,
        params=params,
        x_test=x_test,
        y_test=y_test,
        x_train=x_train,
        y_train=y_train,
        test_pred=test_pred,
        test_proba=test_proba,
        input_ranges=_input_ranges(pipeline, x_train),
        baselines=trivial_baselines(y_train, y_test),
    )
    return model, gates.results


def _input_ranges(
    pipeline: Pipeline, x_train: pd.DataFrame
) -> dict[str, tuple[float, float]] | None:
    """The numeric inputs' training ranges; None if they cannot be read here (the
    evaluate stage then reads them itself, and fails closed if it cannot either)."""
    try:
        return training_ranges(x_train, numeric_layout(pipeline).columns)
    except (ValueError, KeyError, TypeError):
        return None


# The Prefect task is the pure function itself, with the options every stage needs.
train_task = stage_task("train")(train)
