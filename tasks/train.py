"""Train stage: a deterministic scikit-learn pipeline, tracked and registered in MLflow.

Threats: insider tampering with the model between training and release, and
unsafe model formats. The model is logged with skops (never pickle), every
file of the logged model is hashed, and gate ``train.artifact_roundtrip``
loads the *logged* artifact through `tasks.trust.modelio` (digest checked,
pinned allow-list) and requires it to predict exactly what the trained
pipeline predicts: what will be signed and deployed is what was evaluated.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.files import hash_tree
from tasks.common.gates import GateResult, check, run_check
from tasks.common.settings import ModelConfig
from tasks.common.tracking import configure_mlflow, mlflow_client, redact_uri
from tasks.trust.modelio import TRUSTED_TYPES, load_model_file

log = logging.getLogger(__name__)

ROUNDTRIP = "train.artifact_roundtrip"
DP_ESTIMATOR = "dp_logistic_regression"
# Pinned, not inferred: inference picks up test tools and costs ~5 s (STACK-NOTES).
PIP_REQUIREMENTS = [f"{d}=={dist_version(d)}" for d in ("scikit-learn", "skops")]
DP_REQUIREMENTS = [f"diffprivlib=={dist_version('diffprivlib')}"]


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


def model_params(config: ModelConfig) -> dict[str, Any]:
    """Everything that decides the fitted model, as logged to MLflow (and signed).

    A differentially private model adds its privacy budget and row-norm bound.
    """
    params: dict[str, Any] = {
        "estimator": config.estimator,
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        **config.params,
    }
    if config.estimator == DP_ESTIMATOR:
        params |= {"dp_epsilon": config.dp_epsilon, "dp_data_norm": config.dp_data_norm}
    return params


def resolve_data_norm(config: ModelConfig, x_train: pd.DataFrame) -> ModelConfig:
    """`config` with ``dp_data_norm`` fixed before training, so it is logged and signed.

    Unset, it becomes the largest L2 norm of a scaled training row. Deriving the
    bound from the data leaks a little privacy (the bound is not itself private);
    a fixed value from domain knowledge is the right production choice.
    """
    if config.estimator != DP_ESTIMATOR or config.dp_data_norm is not None:
        return config
    scaled = StandardScaler().fit_transform(x_train.to_numpy(np.float64))
    return config.model_copy(update={"dp_data_norm": float(np.linalg.norm(scaled, axis=1).max())})


def build_pipeline(config: ModelConfig) -> Pipeline:
    """The unfitted pipeline for `config` (scaler + estimator, seeded)."""
    estimator: LogisticRegression
    if config.estimator == "logistic_regression":
        estimator = LogisticRegression(random_state=config.seed, **config.params)
    elif config.estimator == DP_ESTIMATOR:
        from diffprivlib.accountant import BudgetAccountant
        from diffprivlib.models import LogisticRegression as DPLogisticRegression

        # Only the model is private: the StandardScaler's mean and scale are fitted on
        # the raw training data without noise (private scaling/bounds are out of scope).
        # A fresh accountant per model: the fitted model (and its skops file) records
        # this run's spend only, not every fit of the process (diffprivlib's default).
        estimator = DPLogisticRegression(
            epsilon=config.dp_epsilon,
            data_norm=config.dp_data_norm,  # None: diffprivlib derives it and warns
            random_state=config.seed,
            accountant=BudgetAccountant(),
            **config.params,  # C, max_iter, tol: as for plain LogisticRegression
        )
    else:  # pragma: no cover - the settings type allows only the above
        raise ValueError(f"unsupported estimator {config.estimator!r}")
    return Pipeline([("scaler", StandardScaler()), ("model", estimator)])


def split(
    dataset: Dataset, *, config: ModelConfig, features: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Stratified, seeded train/test split: (x_train, x_test, y_train, y_test).

    `features` defaults to every numeric column but the target (pseudonymised
    PII columns are strings: kept for joins and audit, never model inputs).
    """
    x = dataset.frame[features or dataset.features]
    y = dataset.frame[dataset.target]
    parts = train_test_split(
        x, y, test_size=config.test_fraction, random_state=config.seed, stratify=y
    )
    return parts[0], parts[1], parts[2], parts[3]


def check_artifact_roundtrip(
    *, pipeline: Pipeline, skops_path: Path, expected_sha256: str, x: pd.DataFrame
) -> GateResult:
    """The logged file, loaded the safe way, must predict exactly like `pipeline` on `x`."""
    loaded = load_model_file(skops_path, expected_sha256=expected_sha256)
    expected = pipeline.predict(x)
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


def fetch_model_dir(*, artifact_uri: str, dest: Path, tracking_uri: str) -> dict[str, str]:
    """Download the logged model into `dest` (replacing it) and hash every file."""
    import mlflow

    staging = dest.with_name(dest.name + ".download")
    for stale in (dest, staging):  # never hash files left by an earlier try
        shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir(parents=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_uri, dst_path=str(staging), tracking_uri=tracking_uri
    )
    Path(local).rename(dest)  # MLflow nests the files under the URI's last segment
    shutil.rmtree(staging)
    return hash_tree(dest)


def _log_to_mlflow(
    ctx: RunContext,
    dataset: Dataset,
    pipeline: Pipeline,
    *,
    suite_sha256: str,
    params: dict[str, Any],
    x_train: pd.DataFrame,
    y_train: pd.Series,
) -> tuple[str, str, str]:
    """One MLflow run: params, provenance, metrics, model.

    Returns (run id, registered version, artifact URI of the logged model).
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    s = ctx.settings
    experiment_id = configure_mlflow(s)
    uri = redact_uri(dataset.uri)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"train-{ctx.run_id}",
        tags={"prefect_flow_run_id": ctx.run_id},
    ) as run:
        mlflow.log_params(params)
        mlflow.log_params(
            {
                "dataset.uri": uri,
                "dataset.sha256": dataset.sha256,
                "dataset.rows": dataset.rows,
                "dataset.format": dataset.format,
                "dataset.integrity": dataset.integrity,
                "suite_sha256": suite_sha256,
            }
        )
        mlflow.log_metric("train_accuracy", float(pipeline.score(x_train, y_train)))
        with warnings.catch_warnings():
            # MLflow registers its local source twice and warns it is ambiguous; and it
            # hints that integer outputs cannot hold NaN. Neither matters here.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(uri)
            # MLflow digests are <= 36 chars; the full sha256 goes in an input tag.
            mlflow.log_input(
                from_pandas(
                    dataset.frame,
                    source=source,
                    targets=dataset.target,
                    name=s.dataset.name,
                    digest=dataset.sha256[:32],
                ),
                context="training",
                tags={"sha256": dataset.sha256},
            )
            head = x_train.head(5)
            signature = infer_signature(head, pipeline.predict(head))
        # Evidence of the data stages (GX result, Data Docs, screen reports) rides
        # along with the model that the data produced.
        evidence = s.state_dir / "runs" / ctx.run_id
        for part in sorted(evidence.iterdir()) if evidence.is_dir() else []:
            if part.is_dir() and part.name != "model":
                mlflow.log_artifacts(str(part), artifact_path=f"evidence/{part.name}")
        dp = s.model.estimator == DP_ESTIMATOR
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="skops",
            pip_requirements=[*PIP_REQUIREMENTS, *(DP_REQUIREMENTS if dp else [])],
            # MLflow test-loads the file it saved; our own loader ignores this list
            # and uses the pinned one (modelio).
            skops_trusted_types=list(TRUSTED_TYPES) if dp else None,
            registered_model_name=s.model.name,
            signature=signature,
        )
    if info.registered_model_version is None:
        raise RuntimeError("MLflow did not register the model")
    # `artifact_path` is the logged model's own artifact location: downloading it yields
    # exactly the logged files (a models:/ URI adds a registered_model_meta file).
    return run.info.run_id, str(info.registered_model_version), info.artifact_path


def train(
    ctx: RunContext, dataset: Dataset, *, suite_sha256: str
) -> tuple[TrainedModel, list[GateResult]]:
    """Fit, log and register the model, then prove the logged artifact is the model.

    Args:
        ctx: Run settings, identity and audit trail.
        dataset: The validated and screened dataset.
        suite_sha256: Digest of the expectation suite the data passed (provenance).

    Returns:
        The trained model and this stage's gate results.

    Raises:
        GateFailed: ``train.artifact_roundtrip`` failed; the registered version
            is tagged ``gate_status=blocked``.
    """
    s = ctx.settings
    if Path(ctx.run_id).name != ctx.run_id or ctx.run_id in ("", ".", ".."):
        raise ValueError("run id must be a plain name")  # it becomes a directory name
    gates = StageGates(ctx)
    x_train, x_test, y_train, y_test = split(dataset, config=s.model, features=s.dataset.features)
    config = resolve_data_norm(s.model, x_train)
    params = model_params(config)
    pipeline = build_pipeline(config).fit(x_train, y_train)
    run_id, version, artifact_uri = _log_to_mlflow(
        ctx,
        dataset,
        pipeline,
        suite_sha256=suite_sha256,
        params=params,
        x_train=x_train,
        y_train=y_train,
    )
    model_dir = s.state_dir / "runs" / ctx.run_id / "model"
    files = fetch_model_dir(artifact_uri=artifact_uri, dest=model_dir, tracking_uri=s.tracking_uri)
    found = [rel for rel in files if rel.endswith(".skops")]
    skops_rel = found[0] if len(found) == 1 else ""  # none or several: the check fails closed
    sha256 = files.get(skops_rel, "")
    result = run_check(
        ROUNDTRIP,
        check_artifact_roundtrip,
        pipeline=pipeline,
        skops_path=model_dir / skops_rel,
        expected_sha256=sha256,
        x=x_test,
    )
    client = mlflow_client(s)
    client.set_tag(run_id, "model_sha256", sha256)
    tags = {
        "model_sha256": sha256,
        "gate_status": "candidate" if result.passed else "blocked",
        **({} if result.passed else {"blocked_by": ROUNDTRIP}),
    }
    for key, value in tags.items():
        client.set_model_version_tag(s.model.name, version, key, value)
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
    )
    return model, gates.results


@task(name="train", cache_policy=NO_CACHE, persist_result=False)  # a cached result skips gates
def train_task(
    ctx: RunContext, dataset: Dataset, *, suite_sha256: str
) -> tuple[TrainedModel, list[GateResult]]:
    """Prefect task: train, log and register the model (see `train`).

    Args:
        ctx: Run settings, identity and audit trail.
        dataset: The validated and screened dataset.
        suite_sha256: Digest of the expectation suite the data passed.

    Returns:
        The trained model and the stage's gate results.
    """
    return train(ctx, dataset, suite_sha256=suite_sha256)
