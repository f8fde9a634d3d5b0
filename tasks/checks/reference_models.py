"""Reference models: each estimator `init` configures, trained on the trusted table.

The backdoor probe (`tasks.checks.backdoor_probe`) has to tell a learned trigger from
a real effect of the data. The profile's label counts by value answer that for one
input at a time; a model trained on the trusted table answers it for the whole row:
stamping a value that flips rows because of how the inputs interact (one of a
diamond's three tied dimensions, a long linear trend) flips them in a clean model as
well, while a trigger exists only in a model that was trained on it.

`init` and `refresh` fit one model per estimator (`fit_reference_models`) on the
trusted table with the config's parameters, write each as
``NAME.reference.ESTIMATOR.skops`` next to the profile (reproducible bytes,
`tasks.trust.modelio`) and list it in the profile's ``reference_models`` section::

    "reference_models": {"random_forest": {"file": "NAME.reference.random_forest.skops",
                                           "sha256": "...", "params": {...}, "rows": n,
                                           "inputs": {"numeric": [...], "categorical": [...],
                                                      "missing": {column: policy}}}}

The section is signed with the profile, so whoever may sign the profile (the
pipeline's key, or the data steward's when ``[trust] signers`` is pinned) vouches for
the models: no new key and no new pin. A run reads the model of its estimator only
through `tasks.trust.modelio` (digest first, then skops with the pinned type
allow-list), and uses it only when it was trained with the run's parameters, inputs
and missing-value policies; a
listed model that is missing, altered or unreadable fails the probe closed. A
profile without the section (the `profile` command, the bundled one) leaves the probe
to the label counts.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tasks.common.files import PUBLIC, sha256_bytes, write_atomic

SECTION = "reference_models"
# The estimators `refresh` trains a reference model for (`init`: those it configures).
# A differentially private model is left out: its reference would be a noisy model.
REFERENCE_ESTIMATORS = ("logistic_regression", "random_forest", "hist_gradient_boosting")
FIT_ROWS = 20_000  # a seeded sample of the trusted table at most this large is fitted
MAX_FILE_BYTES = 1024**3  # a listed model larger than this is refused unread
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.skops$")


@dataclass(frozen=True)
class ReferenceModel:
    """The reference model of one estimator as a run gets it: the fitted pipeline, or
    why it cannot be used (`problem`: the probe fails closed) or is not used
    (`skipped`: the probe runs on the label counts alone)."""

    estimator: str
    pipeline: Any = None
    problem: str = ""
    skipped: str = ""

    @property
    def status(self) -> str:
        """What the probe's metrics say of it."""
        if self.pipeline is not None:
            return "used"
        return "refused" if self.problem else "none"


def fit_reference_models(
    frame: pd.DataFrame,
    *,
    dataset: Any,
    params: Mapping[str, Mapping[str, Any]],
    name: str,
    out_dir: Path,
    seed: int = 42,
) -> dict[str, dict[str, Any]]:
    """Fit each estimator (name -> its parameters) on the trusted table (a seeded sample
    of at most ``FIT_ROWS`` labelled rows), write ``NAME.reference.ESTIMATOR.skops`` in
    `out_dir` and return the profile's ``reference_models`` section.

    Args:
        frame: The trusted table as validation sees it (PII to drop already gone).
        dataset: A `DatasetConfig` (or one built with ``model_construct``) naming the
            target, the inputs and their missing policies.
    """
    from tasks.common.settings import ModelConfig
    from tasks.models import fit_pipeline
    from tasks.trust.modelio import dumps_model

    numeric, categorical = dataset.inputs([c for c in frame.columns if c != dataset.target])
    data = frame.dropna(subset=[dataset.target])
    if len(data) > FIT_ROWS:
        pick = np.random.default_rng(seed).choice(len(data), size=FIT_ROWS, replace=False)
        data = data.iloc[np.sort(pick)]
    x, y = data[numeric + categorical], data[dataset.target]
    section: dict[str, dict[str, Any]] = {}
    for estimator, kwargs in params.items():
        config = ModelConfig.model_validate(
            {
                "name": "reference",
                "estimator": estimator,
                "params": {estimator: dict(kwargs)},
                "seed": seed,
            }
        )
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # convergence warnings: the probe judges
            blob = dumps_model(fit_pipeline(config, dataset, x, y))
        file = f"{name}.reference.{estimator}.skops"
        write_atomic(out_dir / file, blob, mode=PUBLIC)
        section[estimator] = {
            "file": file,
            "sha256": sha256_bytes(blob),
            "params": dict(kwargs),
            "rows": len(x),
            "inputs": model_inputs(dataset, list(x.columns)),
        }
    return section


def reference_params(model: Any) -> dict[str, dict[str, Any]]:
    """Each estimator that gets a reference model (``REFERENCE_ESTIMATORS``) with the
    parameters `model` (a `ModelConfig`) gives it: what `refresh` trains."""
    return {
        e: model.model_copy(update={"estimator": e}).estimator_params for e in REFERENCE_ESTIMATORS
    }


def model_inputs(dataset: Any, columns: list[str]) -> dict[str, Any]:
    """What a model's preprocessing is built from (besides its parameters): the inputs
    by role and their missing-value policies, for a table with these `columns`."""
    numeric, categorical = dataset.inputs([c for c in columns if c != dataset.target])
    return {
        "numeric": list(numeric),
        "categorical": list(categorical),
        "missing": {c: dataset.missing_policy(c) for c in [*numeric, *categorical]},
    }


def load_reference_model(
    profile: Mapping[str, Any] | None,
    *,
    directory: Path,
    estimator: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
) -> ReferenceModel:
    """The reference model the verified `profile` lists for `estimator`, read from
    `directory` (the profile's), if it was trained with `params` and (when given) the
    run's `inputs` (`model_inputs`: a model without the imputer a policy added cannot
    predict the run's gaps).

    Never raises: what goes wrong is the returned model's `problem`.
    """
    from tasks.trust.modelio import load_model_bytes

    section = (profile or {}).get(SECTION)
    entry = section.get(estimator) if isinstance(section, Mapping) else section
    if entry is None:
        return ReferenceModel(estimator, skipped="the profile lists no reference model")
    file = str(entry.get("file", "")) if isinstance(entry, Mapping) else ""
    if (
        not _FILE.match(file)
        or not isinstance(entry.get("sha256"), str)
        or not isinstance(entry.get("params", {}), Mapping)
    ):  # never raises here: the stage reads it outside any gate
        return ReferenceModel(estimator, problem="the profile's entry is malformed")
    if dict(entry.get("params", {})) != dict(params):
        return ReferenceModel(
            estimator,
            skipped=f"{file} was trained with other parameters than the config's "
            "(`secure-pipeline refresh` retrains it)",
        )
    if inputs is not None and entry.get("inputs") != dict(inputs):
        return ReferenceModel(
            estimator,
            skipped=f"{file} was trained with other inputs or missing-value policies than "
            "the config's (`secure-pipeline refresh` retrains it)",
        )
    path = Path(directory) / file
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return ReferenceModel(
                estimator, problem=f"{file} is larger than {MAX_FILE_BYTES} bytes"
            )
        pipeline = load_model_bytes(path.read_bytes(), expected_sha256=entry["sha256"])
    except FileNotFoundError:
        return ReferenceModel(
            estimator, problem=f"{file}, listed in the signed profile, is missing"
        )
    except Exception as exc:  # noqa: BLE001 - altered or unreadable: the probe fails closed
        return ReferenceModel(
            estimator, problem=f"{file} cannot be used ({type(exc).__name__}: {exc})"[:300]
        )
    return ReferenceModel(estimator, pipeline=pipeline)
