"""ART's Square attack on tabular rows: the black-box half of ``evaluate.adversarial``.

Square is a score-based black box that only reads ``predict_proba``; it attacks every
model without loss gradients (forests, boosting). The threat model and the mapping
between raw and transformed rows are `tasks.checks.evasion`'s; this module only fits
the rows to what ART's attack accepts.

How Square fits tabular rows: ART's `SquareAttack` only takes images (4-d input)
from a `NeuralNetworkMixin` estimator, so each row becomes a ``(g+1) x (g+1) x 1``
image (``BlackBoxClassifierNeuralNetwork``): the numeric values fill the top-left
``g x g`` block, the row's index sits in the bottom-right cell. ART's square windows
never reach the last image row and column (``randint`` excludes its upper bound), so
those hold the index and padding; every cell stays within eps of its start (ART
projects onto the budget), so the index is stored as ``i * spacing`` with a spacing
above ``2 * eps`` and rounding recovers it exactly; the predict function rebuilds each
row from its index (its one-hot part fixed) and the attacked numeric values.
``p_init`` is lowered for small grids so the first window fits. Rows ART asks to score
again are answered from a small cache (5-8x faster on the zoo's models, same result).
Its random draws come from NumPy's and Python's global generators: they are seeded
(``seed``) for the attack and restored afterwards, so a run is reproducible.
HopSkipJump (decision-based) was measured at ~176 s per 100 rows on a 100-tree
forest; Square takes seconds.

FORK: a new estimator with ``predict_proba`` needs nothing here (Square fits it).
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

# ART at module load, not inside the check: imported inside a running flow it measured
# 5 s instead of 1 s. Its "PyTorch not found" import warnings are not ours to show.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed NumPy's and Python's global generators (ART's Square draws from them);
    restore them afterwards so nothing else in the process is affected."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2**32)  # ART reads the global generator
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _one_job(final: BaseEstimator) -> BaseEstimator:
    """`final`, or a shallow copy (sharing its fitted state) that predicts in one job:
    joblib's per-call start-up dominates the attack's many small batches."""
    if getattr(final, "n_jobs", None) in (None, 1):
        return final
    single = copy.copy(final)
    single.n_jobs = 1
    return single


def class_scores(final: BaseEstimator) -> Callable[[np.ndarray], np.ndarray]:
    """What a score-based attacker reads: class scores whose argmax is `final`'s
    prediction. ``predict_proba`` for most models; for a logistic regression the
    softmax of its decision function (its probabilities saturate to exact 0 and 1 far
    from the boundary, where ties break the argmax; DP coefficients are large)."""
    if isinstance(final, LogisticRegression):

        def softmax(z: np.ndarray) -> np.ndarray:
            d = np.asarray(final.decision_function(z), dtype=np.float64)
            if d.ndim == 1:
                d = np.c_[np.zeros_like(d), d]
            e = np.exp(d - d.max(1, keepdims=True))
            return np.asarray(e / e.sum(1, keepdims=True))

        return softmax
    return lambda z: np.asarray(final.predict_proba(z), dtype=np.float64)


def square(
    final: BaseEstimator,
    z: np.ndarray,
    onehot: np.ndarray,
    clip: tuple[np.ndarray, np.ndarray],
    positions: np.ndarray,
    *,
    eps: float,
    iterations: int,
    seed: int,
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Black-box Square attack on the numeric positions of `z` (see the module
    docstring for the image layout): (adversarial z, class scores of the wrapper).

    `eps`: the L-inf budget in the transformed (standardised) space; `iterations`:
    ART's ``max_iter`` (queries per row); `seed`: its random search.
    """
    n, d = len(z), len(positions)
    g = max(1, math.ceil(math.sqrt(d)))
    side = g + 1
    cells = np.array([(k // g) * side + k % g for k in range(d)], dtype=int)
    id_cell = side * side - 1
    spacing = max(1.0, 4.0 * eps)  # the index cell moves at most eps: rounding holds
    base = z.copy()
    scores = class_scores(_one_job(final))

    def to_image(values: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        img = np.zeros((len(values), side * side), dtype=dtype)
        img[:, cells] = values[:, positions]
        img[:, id_cell] = np.arange(len(values)) * spacing
        return img.reshape(len(values), side, side, 1)

    def from_image(img: np.ndarray) -> np.ndarray:
        flat = np.asarray(img, dtype=np.float64).reshape(len(img), side * side)
        rows = base[np.clip(np.rint(flat[:, id_cell] / spacing).astype(int), 0, n - 1)]
        rows[:, positions] = flat[:, cells]
        return rows

    # ART's Square asks again for rows it has just scored (each iteration scores all
    # rows, then the still-robust ones again): answer repeats from a small cache.
    cache: dict[bytes, np.ndarray] = {}

    def predict(img: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(img, dtype=np.float32).reshape(len(img), -1)
        keys = [row.tobytes() for row in flat]
        out = np.empty((len(keys), onehot.shape[1]), dtype=np.float64)
        todo = []
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit
        if todo:
            out[todo] = scores(from_image(img[todo]))
            if len(cache) > 8 * n:
                cache.clear()
            cache.update((keys[i], out[i].copy()) for i in todo)
        return out

    lo = np.full(side * side, -1.0, dtype=np.float32)
    hi = np.full(side * side, 1.0, dtype=np.float32)
    lo[cells], hi[cells] = clip[0][positions], clip[1][positions]
    lo[id_cell], hi[id_cell] = 0.0, max(n - 1.0, 1.0) * spacing
    clf = BlackBoxClassifierNeuralNetwork(
        predict,
        input_shape=(side, side, 1),
        nb_classes=onehot.shape[1],
        channels_first=False,
        clip_values=(lo.reshape(side, side, 1), hi.reshape(side, side, 1)),
    )
    attack = SquareAttack(
        clf,
        norm=np.inf,
        eps=eps,
        max_iter=iterations,
        # The first window (side of round(sqrt(p * cells))) must fit in the g x g block.
        p_init=min(0.8, (g / side) ** 2),
        nb_restarts=1,
        batch_size=max(n, 1),
        verbose=False,
    )
    # One thread: thousands of small batches, where OpenMP start-up costs more than it
    # saves (measured 50 ms vs 8 ms per 200-row batch on a 300-tree boosting model).
    with seeded_global_rng(seed), threadpool_limits(1):
        img_adv = attack.generate(x=to_image(z), y=onehot)
    # The wrapper check reads the clean rows through the same image mapping, in float64.
    return from_image(img_adv), lambda values: scores(from_image(to_image(values, np.float64)))
