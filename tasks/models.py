"""The model zoo: how `model.estimator` becomes an unfitted scikit-learn pipeline.

FORK: this is the file to edit for another model. A new estimator needs, in all:
1. a branch in `build_pipeline` (and its name in `ModelConfig.estimator`,
   tasks/common/settings.py, so a config can select it);
2. the skops types its file holds in `TRUSTED_TYPES` (tasks/trust/modelio.py),
   reviewed like code: the loader refuses any other type;
3. an attack that fits it in tasks/checks/adversarial.py: without one the
   ``evaluate.adversarial`` gate fails closed, never silently.
The pipeline is trained, signed and deployed as one object, preprocessing included.
"""

from __future__ import annotations

from importlib.metadata import version as dist_version
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tasks.common.settings import ModelConfig

DP_ESTIMATOR = "dp_logistic_regression"


# Pinned, not inferred: inference picks up test tools and costs ~5 s.
PIP_REQUIREMENTS = [f"{d}=={dist_version(d)}" for d in ("scikit-learn", "skops")]


DP_REQUIREMENTS = [f"diffprivlib=={dist_version('diffprivlib')}"]


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
    # FORK: add your estimator as another branch (see the module docstring).
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


def pip_requirements(config: ModelConfig) -> list[str]:
    """What the logged model needs installed to load (exact versions of this environment)."""
    return [*PIP_REQUIREMENTS, *(DP_REQUIREMENTS if config.estimator == DP_ESTIMATOR else [])]
