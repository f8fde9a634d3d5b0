"""What a model is compared with: trivial baselines, a paired comparison with another
model on the same rows.

**Skill over a trivial baseline** (``evaluate.quality``). Accuracy alone means
nothing across tables: 0.65 is a good model of a 5-class table whose largest class
holds 40% of the rows, and a useless one of a 2-class table whose largest class holds
65%. The gate scores the model against the better of two trivial baselines on the
*same* test rows: always the training majority class, and guessing at random with the
training label shares (expected accuracy ``sum_k p_train(k) * p_test(k)``). Skill is
Cohen-style and scale-free::

    skill = (accuracy - baseline) / (1 - baseline)

0 is no better than the baseline, 1 is perfect, negative is worse than guessing.
Chosen over a lift (``accuracy / baseline``) because a lift is bounded by
``1 / baseline`` (1.5 at a 65% majority, 2.5 at 40%), so no single default means the
same on two tables, while skill is the share of the errors the baseline makes that
the model avoids on every table. Measured (`init`, 5-fold CV; see the README): breast
cancer 0.92-0.95, penguins 0.96-0.98, mpg (class, 7 classes) 0.69-0.80, diamonds
(cut) 0.42-0.61; a label-flipped or constant model is near 0 or below.

**Paired comparison** (the champion; ``evaluate.max_regression``). Both models
predict the same rows, so their difference in accuracy is a paired one: only the
rows where exactly one of them is right count (McNemar). `paired_difference` gives
the difference and the half-width of its one-sided ``REGRESSION_Z`` interval from the
discordant rows; a candidate is a regression only when even the upper end of the
interval lies below ``-max_regression``. With equally good models a clean retrain is
blocked at most about 1 time in 200 (z = 2.576), at any number of test rows; with
more rows the interval narrows, so a smaller real regression is caught.

`init`'s cross-validated measurement of each estimator is `tasks.checks.measuring`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

REGRESSION_Z = 2.576  # one-sided 99.5% normal quantile


def _shares(labels: Any) -> pd.Series:
    """Each label's share. A text or number Series is counted as it is (one Python
    object per row for 1M labels took 0.1 s of the evaluate stage); anything else
    (categories, mixed objects, arrays) as Python objects."""
    if isinstance(labels, pd.Series) and (
        isinstance(labels.dtype, pd.StringDtype)
        or (isinstance(labels.dtype, np.dtype) and labels.dtype.kind in "biuf")
    ):
        return labels.value_counts(normalize=True)
    return pd.Series(np.asarray(labels, dtype=object)).value_counts(normalize=True)


def trivial_baselines(y_train: Any, y_test: Any) -> dict[str, float]:
    """Accuracy on `y_test` of the majority class of `y_train` and the expected
    accuracy of guessing with `y_train`'s label shares; ``baseline`` is the larger."""
    train, test = _shares(y_train), _shares(y_test)
    if train.empty or test.empty:
        return {"majority": 0.0, "stratified": 0.0, "baseline": 0.0}
    majority = float(test.get(train.index[0], 0.0))
    stratified = float(sum(p * float(test.get(k, 0.0)) for k, p in train.items()))
    return {"majority": majority, "stratified": stratified, "baseline": max(majority, stratified)}


def skill(accuracy: float, baseline: float) -> float:
    """Share of the baseline's errors the model avoids (see the module docstring)."""
    return (accuracy - baseline) / (1 - baseline) if baseline < 1 else 0.0


def paired_difference(
    first: np.ndarray, second: np.ndarray, *, z: float = REGRESSION_Z
) -> tuple[float, float]:
    """(mean of first - second, half-width of its interval) for two boolean arrays of
    per-row correctness on the same rows; the variance from the discordant rows."""
    n = len(first)
    if n == 0:
        return 0.0, math.inf
    d = first.astype(np.float64) - second.astype(np.float64)
    mean = float(d.mean())
    var = float(np.mean(d * d)) - mean * mean
    return mean, z * math.sqrt(max(var, 0.0) / n) + 1 / n
