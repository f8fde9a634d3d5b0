"""The train stage's MLflow side: log a fitted pipeline as an MLflow model whose
``model.skops`` is written by `tasks.trust.modelio` (reproducible bytes), with an input
example that holds no one's record and without MLflow's serving check, then fetch the
logged files back to hash them (`tasks.train` runs the stage and its gate).
"""

from __future__ import annotations

import logging
import shutil
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tasks.common.context import Dataset, RunContext
from tasks.common.errors import PipelineError
from tasks.common.files import hash_tree
from tasks.common.outcome import mlflow_run_name, mlflow_run_tags
from tasks.common.registry import ModelRegistry
from tasks.common.settings import DatasetConfig
from tasks.common.tracking import configure_mlflow, redact_uri
from tasks.models import (
    pip_requirements,
)
from tasks.trust.modelio import TRUSTED_TYPES, dump_model

log = logging.getLogger(__name__)

TRAIN_SCORE_ROWS = 50_000  # train accuracy: a seeded sample of this many rows
EXAMPLE_ROWS = 5
# The input example's rows: these quantiles of each numeric input, column by column.
EXAMPLE_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)


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


# One model logged at a time per process: `_skops_dump_through_modelio` swaps a
# module attribute, and two overlapping swaps could restore each other's.
_DUMP_SWAP = threading.Lock()


@contextmanager
def _skops_dump_through_modelio() -> Iterator[None]:
    """While open, ``skops.io.dump`` is `tasks.trust.modelio.dump_model`.

    `mlflow.sklearn.log_model` writes the file itself with ``skops.io.dump(model,
    path)`` and has no option for how, and plain skops is not reproducible (memory
    addresses and the clock in the archive). Swapping that one public function for the
    duration of the call makes MLflow write the canonical bytes, and MLflow then
    test-loads, sizes and uploads that very file; its directory layout is unchanged.

    Raises:
        PipelineError: MLflow did not call ``skops.io.dump`` exactly once (another
            MLflow version serialises differently): the logged file may not be
            reproducible, so the stage stops instead of registering it.
    """
    import skops.io

    calls = 0

    def dump(obj: Any, file: Any) -> None:
        nonlocal calls
        calls += 1
        dump_model(obj, file)

    with _DUMP_SWAP:
        original = skops.io.dump
        skops.io.dump = dump
        try:
            yield
        finally:
            skops.io.dump = original
    if calls != 1:
        raise PipelineError(
            f"MLflow called skops.io.dump {calls} times while logging the model (expected "
            "once): the logged file may not be reproducible; check the MLflow version "
            "against tasks/train.py _skops_dump_through_modelio"
        )


def input_example(x_train: pd.DataFrame, columns: DatasetConfig) -> pd.DataFrame:
    """`EXAMPLE_ROWS` rows for the logged model's input example, holding no one's record.

    The columns are the model's inputs, in order and with their dtypes (never the
    target, a PII or an ignored column). No row is copied from the data: the rows are
    built column by column, row i holding the `EXAMPLE_QUANTILES`[i] quantile of a
    numeric input (the nearest observed value, so integers stay integers) and the i-th
    most frequent value of a categorical one (cycling when there are fewer), so no
    row is one person's record, and no rare value (an outlier, a rare category) shows.

    Raises:
        PipelineError: an input column is the target or marked PII or ignored (the
            inputs come from `DatasetConfig.inputs`, so this is a bug, not data).
    """
    barred = sorted({columns.target, *columns.pii, *columns.ignored} & set(x_train.columns))
    if barred:
        raise PipelineError(f"model inputs include target, PII or ignored columns: {barred}")
    out = {}
    for name in x_train.columns:
        col = x_train[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if numeric and name not in columns.categorical:
            values = list(col.quantile(list(EXAMPLE_QUANTILES), interpolation="nearest"))
        else:
            counts = col.dropna().value_counts(sort=False)
            # Most frequent first; ties in a fixed order (by text) so it is reproducible.
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            common = [v for v, _ in ranked] or [None]
            values = [common[i % len(common)] for i in range(EXAMPLE_ROWS)]
        out[name] = pd.Series(values[:EXAMPLE_ROWS], dtype=col.dtype)
    return pd.DataFrame(out, columns=x_train.columns)


_CHECK_SWAP = threading.Lock()


@contextmanager
def _no_mlflow_serving_check() -> Iterator[None]:
    """While open, MLflow does not load the model it logs to try the input example.

    Given an input example, ``log_model`` loads the saved model back with MLflow's own
    loader (``mlflow.pyfunc.load_model``: ``skops.io.load`` with the type list from the
    model's MLmodel file) and predicts on the example, unless the variable
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` stops it (then it only warns). The
    sklearn flavor passes no ``validate_serving_input`` option, so MLflow's one helper
    for it, ``mlflow.models.utils._validate_serving_input``, is a no-op for the call:
    MLflow's loader stays out of the trust path whatever the environment says, and
    gate ``train.artifact_roundtrip`` proves more (the logged file, loaded through
    modelio, predicts exactly like the trained pipeline).

    Raises:
        PipelineError: that helper is gone or was not called exactly once (another
            MLflow version validates differently): check it before logging models.
    """
    import mlflow.models.utils as model_utils

    if not callable(getattr(model_utils, "_validate_serving_input", None)):
        raise PipelineError(
            "mlflow.models.utils._validate_serving_input is gone: check how this MLflow "
            "version validates input examples (tasks/train.py _no_mlflow_serving_check)"
        )
    calls = 0

    def skip(model_uri: str, serving_input: Any) -> None:
        nonlocal calls
        calls += 1

    with _CHECK_SWAP:
        original = model_utils._validate_serving_input
        model_utils._validate_serving_input = skip
        try:
            yield
        finally:
            model_utils._validate_serving_input = original
    if calls != 1:
        raise PipelineError(
            f"MLflow validated the input example {calls} times through its helper (expected "
            "once): it may load the model another way; check tasks/train.py "
            "_no_mlflow_serving_check against this MLflow version"
        )


def _log_to_mlflow(
    ctx: RunContext,
    dataset: Dataset,
    pipeline: Pipeline,
    *,
    suite_sha256: str,
    params: dict[str, Any],
    x_train: pd.DataFrame,
    y_train: pd.Series,
    evidence: Mapping[str, Path],
) -> tuple[str, str, str]:
    """One MLflow run: params, provenance, metrics, evidence, model; then the version.

    Returns (run id, registered version, artifact URI of the logged model).
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.models import ModelSignature, infer_signature

    from tasks.common.mlflow_dataset import TrainingDataset, frame_schema

    s = ctx.settings
    experiment_id = configure_mlflow(s)
    uri = redact_uri(dataset.uri)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=mlflow_run_name(s),
        tags=mlflow_run_tags(s, ctx.run_id),
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
        # A seeded sample: scoring all training rows again cost 2 s at 1M rows; at
        # 50k rows the standard error is under 0.0023.
        rows = np.random.default_rng(0).permutation(len(x_train))[:TRAIN_SCORE_ROWS]
        mlflow.log_metric(
            "train_accuracy", float(pipeline.score(x_train.iloc[rows], y_train.iloc[rows]))
        )
        mlflow.log_param("train_accuracy_rows", len(rows))
        with warnings.catch_warnings():
            # MLflow registers its local source twice and warns it is ambiguous; and it
            # hints that integer outputs cannot hold NaN. Neither matters here.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(uri)
            # MLflow digests are <= 36 chars; the full sha256 goes in an input tag.
            mlflow.log_input(
                TrainingDataset(
                    dataset.frame,
                    source=source,
                    targets=dataset.target,
                    name=s.dataset.name,
                    digest=dataset.sha256[:32],
                ),
                context="training",
                tags={"sha256": dataset.sha256},
            )
            # Input types from the training rows, and a column optional if any of them
            # misses it; outputs from the example (which holds no training record).
            example = input_example(x_train, s.dataset)
            signature = ModelSignature(
                inputs=frame_schema(x_train),
                outputs=infer_signature(example, pipeline.predict(example)).outputs,
            )
        # Evidence of the data stages (GX result, Data Docs) rides along with the model
        # that the data produced.
        for name, directory in sorted(evidence.items()):
            if directory.is_dir():
                mlflow.log_artifacts(str(directory), artifact_path=f"evidence/{name}")
        with _skops_dump_through_modelio(), _no_mlflow_serving_check():
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                serialization_format="skops",
                pip_requirements=pip_requirements(s.model),
                # MLflow test-loads the file it saved; our own loader ignores this list
                # and uses the pinned one (modelio).
                skops_trusted_types=list(TRUSTED_TYPES),
                signature=signature,
                input_example=example,
            )
    version = ModelRegistry.for_settings(s).register(model_id=info.model_id, run_id=run.info.run_id)
    # `artifact_path` is the logged model's own artifact location: downloading it yields
    # exactly the logged files (a models:/ URI adds a registered_model_meta file).
    return run.info.run_id, version, info.artifact_path
