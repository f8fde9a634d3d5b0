"""The model zoo: how the config becomes one unfitted scikit-learn pipeline.

The pipeline is ``Pipeline([("prep", ColumnTransformer), ("model", estimator)])``,
trained, signed and deployed as one object, so serving preprocesses exactly as
training did. ``prep`` has one branch per (kind, missing policy):
``num_<policy>`` (impute, then standardise) and ``cat_<policy>`` (impute, then
one-hot; an unseen category encodes as none of the known ones). Numeric outputs
come first, in declaration order; the attacks rely on that layout (`numeric_layout`).

FORK: this is the file to edit for another model. A new estimator needs, in all:
1. a builder in `ESTIMATORS` (and its name in `Estimator`, tasks/common/settings.py,
   so a config can select it);
2. the skops types its file holds in `TRUSTED_BY_ESTIMATOR` (tasks/trust/modelio.py),
   reviewed like code: the loader refuses any other type;
3. nothing for the attacks if it has ``predict_proba`` (the black-box Square attack
   fits any such model); gradient attacks only for linear models (`GRADIENT_MODELS`).
4. reproducibility: its randomness from ``config.seed`` only, and nothing of the
   machine in the fitted object (`fit_pipeline`); tests/unit/test_reproducible.py
   fits it twice and requires the same file bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tasks.common.settings import DatasetConfig, ModelConfig

DP_ESTIMATORS = frozenset({"dp_logistic_regression"})
# Models with loss gradients, attacked with FGM/PGD ("auto"); all others get Square.
GRADIENT_MODELS = frozenset({"logistic_regression", "dp_logistic_regression"})
MISSING_CATEGORY = "<missing>"

# Pinned, not inferred: inference picks up test tools and costs ~5 s.
PIP_REQUIREMENTS = [f"{d}=={dist_version(d)}" for d in ("scikit-learn", "skops")]
DP_REQUIREMENTS = [f"diffprivlib=={dist_version('diffprivlib')}"]


def _logistic(config: ModelConfig, params: dict[str, Any]) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(random_state=config.seed, **params)


def _dp_logistic(config: ModelConfig, params: dict[str, Any]) -> BaseEstimator:
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.models import LogisticRegression as DPLogisticRegression

    # Only the model is private: the preprocessing (medians, means, scales, category
    # lists) is fitted on the raw training data without noise. A fresh accountant per
    # model: the fitted model records this run's spend only (not the process's).
    # The noise is drawn from random_state (diffprivlib's secure generator is used only
    # without a seed), so the same seed gives the same model.
    # FORK: n_jobs > 1 fits the one-vs-rest models in worker processes that each get a
    # copy of the seeded generator: still reproducible, but another model with the
    # classes' noise drawn from the same start. Leave n_jobs unset.
    return DPLogisticRegression(
        epsilon=config.dp_epsilon,
        data_norm=config.dp_data_norm,  # None: diffprivlib derives it and warns
        random_state=config.seed,
        accountant=BudgetAccountant(),
        **params,  # C, max_iter, tol: as for plain LogisticRegression
    )


def _random_forest(config: ModelConfig, params: dict[str, Any]) -> BaseEstimator:
    from sklearn.ensemble import RandomForestClassifier

    # FORK: n_jobs (threads) leaves the trees unchanged: every tree's seed is drawn from
    # random_state before the trees are built. It is a parameter, so it is in the file:
    # set it in the config, never from the machine's CPU count.
    return RandomForestClassifier(random_state=config.seed, **params)


def _hist_gradient_boosting(config: ModelConfig, params: dict[str, Any]) -> BaseEstimator:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # FORK: the OpenMP thread count (all CPUs, or OMP_NUM_THREADS) does not change the
    # trees, but the fitted model records it; `fit_pipeline` removes it.
    return HistGradientBoostingClassifier(random_state=config.seed, **params)


# FORK: add your estimator here (see the module docstring).
ESTIMATORS: dict[str, Callable[[ModelConfig, dict[str, Any]], BaseEstimator]] = {
    "logistic_regression": _logistic,
    "dp_logistic_regression": _dp_logistic,
    "random_forest": _random_forest,
    "hist_gradient_boosting": _hist_gradient_boosting,
}


def estimator(config: ModelConfig) -> BaseEstimator:
    return ESTIMATORS[config.estimator](config, config.estimator_params)


def validate_params(config: ModelConfig) -> None:
    """Raise ValueError when ``model.params`` do not fit the estimator (names and types)."""
    try:
        est = estimator(config)
    except TypeError as exc:  # an unknown keyword
        raise ValueError(f"model.params for {config.estimator}: {exc}") from None
    check = getattr(est, "_validate_params", None)  # scikit-learn's own type constraints
    if check is not None:
        try:
            check()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model.params for {config.estimator}: {exc}") from None


def model_params(config: ModelConfig) -> dict[str, Any]:
    """Everything that decides the fitted model, as logged to MLflow (and signed).

    A differentially private model adds its privacy budget and row-norm bound.
    """
    params: dict[str, Any] = {
        "estimator": config.estimator,
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        **config.estimator_params,
    }
    if config.estimator in DP_ESTIMATORS:
        params |= {"dp_epsilon": config.dp_epsilon, "dp_data_norm": config.dp_data_norm}
    return params


def build_preprocessor(dataset: DatasetConfig, columns: list[str]) -> ColumnTransformer:
    """The ``prep`` step for a table with these `columns` (see the module docstring)."""
    numeric, categorical = dataset.inputs(columns)
    branches: list[tuple[str, Any, list[str]]] = []
    for kind, cols in (("num", numeric), ("cat", categorical)):
        for policy in ("refuse", "median", "most_frequent", "constant"):
            group = [c for c in cols if dataset.missing_policy(c) == policy]
            if not group:
                continue
            steps: list[tuple[str, Any]] = []
            if policy != "refuse":  # refused columns hold no missing value (validate.columns)
                fill = 0 if kind == "num" else MISSING_CATEGORY
                steps.append(("impute", SimpleImputer(strategy=policy, fill_value=fill)))
            if kind == "num":
                steps.append(("scale", StandardScaler()))
            else:
                # dtype as a string: a numpy type object would widen the skops allow-list.
                steps.append(
                    (
                        "onehot",
                        OneHotEncoder(
                            handle_unknown="ignore", sparse_output=False, dtype="float64"
                        ),
                    )
                )
            branches.append((f"{kind}_{policy}", Pipeline(steps), group))
    return ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=False)


def build_pipeline(config: ModelConfig, dataset: DatasetConfig, columns: list[str]) -> Pipeline:
    """The unfitted pipeline for the config, for a table with these `columns`."""
    return Pipeline([("prep", build_preprocessor(dataset, columns)), ("model", estimator(config))])


def fit_pipeline(
    config: ModelConfig, dataset: DatasetConfig, x: pd.DataFrame, y: pd.Series
) -> Pipeline:
    """`build_pipeline` for the columns of `x`, fitted on (`x`, `y`), ready to serialise.

    The fitted object depends on the data, the config (seed included) and the installed
    packages only, so its file (`tasks.trust.modelio.dumps_model`) has the same sha256
    on every run and every machine that has them. Hence the one change after the fit:
    hist gradient boosting keeps the thread count of the fitting machine in its bin
    mapper (``n_threads``), used only to bin training data; it is reset to the unfitted
    default (None: all CPUs), as if the model had been fitted anywhere.
    """
    pipeline = build_pipeline(config, dataset, list(x.columns)).fit(x, y)
    # FORK: an estimator that stores the machine (thread or CPU counts, paths, times)
    # in its fitted attributes is cleared here, or its file differs on each machine.
    mapper = getattr(pipeline.named_steps["model"], "_bin_mapper", None)
    if mapper is not None and hasattr(mapper, "n_threads"):
        mapper.n_threads = None
    return pipeline


def resolve_data_norm(
    config: ModelConfig, dataset: DatasetConfig, x_train: pd.DataFrame
) -> ModelConfig:
    """`config` with ``dp_data_norm`` fixed before training, so it is logged and signed.

    Unset, it becomes the largest L2 norm of a preprocessed training row. Deriving the
    bound from the data leaks a little privacy (the bound is not itself private);
    a fixed value from domain knowledge is the right production choice.
    """
    if config.estimator != "dp_logistic_regression" or config.dp_data_norm is not None:
        return config
    rows = build_preprocessor(dataset, list(x_train.columns)).fit_transform(x_train)
    norm = float(np.linalg.norm(np.asarray(rows, dtype=np.float64), axis=1).max())
    return config.model_copy(update={"dp_data_norm": norm})


@dataclass(frozen=True)
class NumericLayout:
    """Where the standardised numeric inputs sit in the output of ``prep``."""

    columns: list[str]  # raw column names, in output order
    positions: np.ndarray  # their indices in the transformed matrix
    mean: np.ndarray  # scaler mean per column (raw = z * scale + mean)
    scale: np.ndarray
    width: int  # columns of the transformed matrix


def numeric_layout(pipeline: Pipeline) -> NumericLayout:
    """Read the numeric part of a fitted pipeline built by `build_pipeline`.

    Raises:
        ValueError: the pipeline does not have the ``prep`` layout of this module.
    """
    prep = pipeline.named_steps.get("prep") if isinstance(pipeline, Pipeline) else None
    if not isinstance(prep, ColumnTransformer):
        raise ValueError("not a pipeline of tasks/models.py (no 'prep' ColumnTransformer)")
    cols: list[str] = []
    positions: list[int] = []
    means: list[np.ndarray] = []
    scales: list[np.ndarray] = []
    for name, branch, group in prep.transformers_:
        if not name.startswith("num_"):
            continue
        scaler = branch.named_steps["scale"]
        cols += list(group)
        sl = prep.output_indices_[name]
        positions += list(range(sl.start, sl.stop))
        means.append(np.asarray(scaler.mean_, dtype=np.float64))
        scales.append(np.asarray(scaler.scale_, dtype=np.float64))
    width = max((sl.stop for sl in prep.output_indices_.values()), default=0)
    return NumericLayout(
        columns=cols,
        positions=np.asarray(positions, dtype=int),
        mean=np.concatenate(means) if means else np.zeros(0),
        scale=np.concatenate(scales) if scales else np.zeros(0),
        width=width,
    )


def pip_requirements(config: ModelConfig) -> list[str]:
    """What the logged model needs installed to load (exact versions of this environment)."""
    dp = config.estimator in DP_ESTIMATORS
    return [*PIP_REQUIREMENTS, *(DP_REQUIREMENTS if dp else [])]
