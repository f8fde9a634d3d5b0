"""Certified robustness for ``evaluate.adversarial``: a *lower* bound beside the attack.

An attack (`tasks.checks.evasion`) finds adversarial rows; the rows it does not break
may still break. A certificate proves, row by row, that *no* perturbation of the
threat model changes the prediction: the attack's L-inf ball of ``eps`` standard
deviations on each numeric input, categorical inputs fixed. In the transformed space
of the pipeline's ``prep`` step (`tasks.models.numeric_layout`) that is the box
``z[p] +- eps`` on the numeric positions ``p``, cut to the attack's range (the
training range widened to the attacked rows, `tasks.checks.evasion`; a hair wider
for float32 rounding), the one-hot positions fixed. The certificate covers every
perturbation the attack may try, so on the same rows and eps
``certified_accuracy <= robust_accuracy`` (a row counts when it is correctly
classified and certified); the gate fails closed when a certified row was broken.

- **Linear models** (logistic regression, diffprivlib's DP one): exact. Class scores
  are ``s = W z + b``; the prediction ``y`` holds against class ``j`` for every
  perturbation of L-inf size ``r`` on ``p`` as long as
  ``s_y - s_j > r * ||(w_y - w_j)[p]||_1`` (the dual norm of L-inf is L1), so the
  certified radius is ``min_j (s_y - s_j) / ||(w_y - w_j)[p]||_1`` (binary: ``|s| /
  ||w[p]||_1``), reached at the corner ``z - r * sign(w_y - w_j)`` (`linear_radius`).
  Cut to the attack's range, the worst point is still a corner of the box, each
  input moved against ``w_y - w_j`` as far as the box allows (`linear_worst_case`):
  exact at any eps, and free. The attack uses the same corner ("corner" in
  `tasks.checks.evasion`), so for linear models the two bounds meet.
- **Tree ensembles** (random forest, histogram gradient boosting): a sound lower
  bound, the per-tree interval bound. For each tree, the leaves a row can reach inside
  its box (descend left when ``lo <= threshold``, right when ``hi > threshold``);
  the ensemble's margin of the predicted class over another is at least the sum over
  trees of the smallest margin among the reachable leaves (exact for one tree; for
  many it ignores that the trees read the same coordinates, so it may leave a robust
  row uncertified, never the reverse). Rows are verified in chunks until
  ``evaluate.certify_seconds`` is spent; rows left over count as *not* certified.

Alternatives (see the README): ART 1.20.1's
`RobustnessVerificationTreeModelsCliqueMethod` takes scikit-learn's random forest,
not ``HistGradientBoostingClassifier`` (no ``get_trees``), wants every input in
[0, 1], perturbs every input (no fixed categoricals), returns only averages over the
rows, and measured ~1 s per row on a 100-tree forest (breast cancer, 5 search steps);
dtai-veritas 0.3.x would add a compiled runtime dependency to the lock (and is not in
this machine's package mirror, so it was not measured).

FORK: a new estimator gets a certificate by adding its extraction to `_ensemble`
(leaf boxes and values), or its linear scores to `linear_scores`; without one its
``certified_accuracy`` is None with the reason in ``certified_method``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tasks.models import numeric_layout

LINEAR_METHOD = "exact linear worst case (margin against the L1 norm of the numeric weights)"
TREE_METHOD = "per-tree interval bound (reachable leaves; sound, may under-certify)"
CHUNK_ROWS = 40  # rows verified between two looks at the clock


@dataclass(frozen=True)
class Certified:
    """What the verifier proved on the attacked rows, per eps asked."""

    method: str  # how, or why nothing could be certified
    # eps -> per row: correctly classified and certified at that eps (None when no
    # verifier applies to the model)
    rows: dict[float, np.ndarray | None]
    rows_verified: int  # rows the budget allowed (the rest count as not certified)
    seconds: float

    def accuracy(self, eps: float) -> float | None:
        """Certified accuracy at `eps` (one of those asked), None without a verifier."""
        ok = self.rows.get(eps)
        return None if ok is None else float(np.mean(ok)) if len(ok) else 0.0


@dataclass(frozen=True)
class _Ensemble:
    """A tree ensemble as class scores: ``base + sum over trees of leaf vectors``."""

    base: np.ndarray  # (classes,)
    trees: list[tuple[np.ndarray, ...]]  # feature, threshold, left, right, leaf values
    float32: bool  # the model compares inputs rounded to float32 (scikit-learn's trees)


def linear_scores(final: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) with class scores ``z @ W.T + b`` whose argmax is the prediction, for a
    scikit-learn logistic regression or a subclass of it (diffprivlib's); else None."""
    if not isinstance(final, LogisticRegression):
        return None
    coef = np.asarray(final.coef_, dtype=np.float64)
    bias = np.asarray(final.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: class 1 when w.z + b > 0
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, bias]
    return coef, bias


def linear_radius(
    coef: np.ndarray, bias: np.ndarray, z: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class index, exact L-inf certified radius on `positions`) per row of
    `z` for class scores ``z @ coef.T + bias`` (inf: no attackable weight moves it)."""
    scores = z @ coef.T + bias
    pred = scores.argmax(1)
    radius = np.full(len(z), np.inf)
    for j in range(coef.shape[0]):
        gap = scores[np.arange(len(z)), pred] - scores[:, j]
        dual = np.abs(coef[pred][:, positions] - coef[j, positions]).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(dual > 0, gap / dual, np.inf)
        r = np.where(pred == j, np.inf, r)
        radius = np.minimum(radius, r)
    return pred, radius


def linear_worst_case(
    coef: np.ndarray, bias: np.ndarray, z: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(worst margin, worst point) per row of `z` over the box [`lo`, `hi`] for class
    scores ``z @ coef.T + bias``: the smallest, over other classes ``j``, of the
    predicted class's score minus ``j``'s, reached at the box's corner that moves every
    input against ``w_pred - w_j`` (exact: the margin is linear, each input on its
    own). A margin > 0 proves the prediction; < 0 gives an adversarial point."""
    scores = z @ coef.T + bias
    pred = scores.argmax(1)
    n = len(z)
    worst = np.full(n, np.inf)
    point = z.copy()
    for j in range(coef.shape[0]):
        d = coef[pred] - coef[j]  # (rows, inputs): the margin's gradient
        corner = np.where(d > 0, lo, np.where(d < 0, hi, z))
        margin = scores[np.arange(n), pred] - scores[:, j] + (d * (corner - z)).sum(1)
        better = (pred != j) & (margin < worst)
        worst = np.where(better, margin, worst)
        point[better] = corner[better]
    return worst, point


def _sklearn_tree(tree: object, scale: float) -> tuple[np.ndarray, ...]:
    t = tree.tree_  # type: ignore[attr-defined]
    value = np.asarray(t.value[:, 0, :], dtype=np.float64)
    sums = value.sum(1, keepdims=True)
    value = np.divide(value, sums, out=np.zeros_like(value), where=sums > 0) * scale
    return (t.feature, t.threshold, t.children_left, t.children_right, value)


def _ensemble(final: object, n_classes: int) -> _Ensemble | None:
    """`final` as an `_Ensemble`, or None when this module cannot read it."""
    if isinstance(final, RandomForestClassifier):
        trees = [_sklearn_tree(e, 1.0 / len(final.estimators_)) for e in final.estimators_]
        return _Ensemble(np.zeros(n_classes), trees, float32=True)
    if isinstance(final, HistGradientBoostingClassifier):
        out: list[tuple[np.ndarray, ...]] = []
        for iteration in final._predictors:
            for k, predictor in enumerate(iteration):
                nodes = predictor.nodes
                if np.any(nodes["is_categorical"]):
                    return None  # bitset splits: not read here
                leaf = np.zeros((len(nodes), n_classes))
                # binary: one score (class 1 when > 0); multiclass: one tree per class
                leaf[:, 1 if n_classes == 2 else k] = nodes["value"]
                is_leaf = nodes["is_leaf"].astype(bool)
                left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
                left[is_leaf], right[is_leaf] = -1, -1
                feat = nodes["feature_idx"].astype(np.int64)
                out.append((feat, nodes["num_threshold"].astype(np.float64), left, right, leaf))
        base = np.zeros(n_classes)
        raw = np.asarray(final._baseline_prediction, dtype=np.float64).ravel()
        if n_classes == 2:
            base[1] = raw[0]
        else:
            base[:] = raw
        return _Ensemble(base, out, float32=False)
    return None


def ensemble_margin(ens: _Ensemble, lo: np.ndarray, hi: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Lower bound, per row, of (score of class `pred` minus the best other class) over
    the box [`lo`, `hi`]; > 0 proves the prediction cannot change in the box."""
    n, k = lo.shape[0], len(ens.base)
    if ens.float32:  # rounding is monotone: the rounded box holds every rounded row
        lo, hi = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
    total = np.tile(ens.base, (n, 1))
    total = total[np.arange(n), pred][:, None] - total
    for feature, threshold, left, right, value in ens.trees:
        worst = np.full((n, k), np.inf)
        rows, nodes = np.arange(n), np.zeros(n, dtype=np.int64)
        while len(rows):
            leaf = left[nodes] < 0
            if leaf.any():
                r, v = rows[leaf], value[nodes[leaf]]
                np.minimum.at(worst, r, v[np.arange(len(r)), pred[r]][:, None] - v)
            rows, nodes = rows[~leaf], nodes[~leaf]
            f, t = feature[nodes], threshold[nodes]
            go_l, go_r = lo[rows, f] <= t, hi[rows, f] > t
            rows = np.r_[rows[go_l], rows[go_r]]
            nodes = np.r_[left[nodes[go_l]], right[nodes[go_r]]]
        total += worst
    total[np.arange(n), pred] = np.inf
    return np.asarray(total.min(1))


def box(
    z: np.ndarray,
    positions: np.ndarray,
    eps: float,
    clip: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the threat model around each row of `z`: ``+- eps`` on `positions`,
    cut to `clip` (widened by a hair: float32 rounding of the attack's range), the other
    positions fixed."""
    lo, hi = z.copy(), z.copy()
    lo[:, positions] -= eps
    hi[:, positions] += eps
    if clip is not None:
        hair = 1e-6 * (1 + np.abs(z[:, positions]))
        lo[:, positions] = np.maximum(lo[:, positions], clip[0][positions] - hair)
        hi[:, positions] = np.minimum(hi[:, positions], clip[1][positions] + hair)
    return lo, hi


def certify(
    *,
    pipeline: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    eps_values: list[float],
    seconds: float,
    clip: tuple[np.ndarray, np.ndarray] | None = None,
    active: bool = True,
) -> Certified:
    """Certified accuracy of `pipeline` on rows `x` (labels `y`) at each of `eps_values`
    (standard deviations of each numeric input, L-inf; categorical inputs fixed),
    within `seconds` for the tree verifier (rows beyond it count as not certified).
    `clip`: the attack's range per transformed column (`tasks.checks.evasion`); the box
    is cut to it (a hair wider, so it always holds what the attack may reach)."""
    started = time.perf_counter()
    none: dict[float, np.ndarray | None] = dict.fromkeys(eps_values)
    if not active:
        return Certified("none: not asked (the attack alone was measured)", none, 0, 0.0)
    try:
        layout = numeric_layout(pipeline)
    except ValueError:
        return Certified("none: not a pipeline of tasks/models.py", none, 0, 0.0)
    prep, final = pipeline.named_steps["prep"], pipeline.named_steps["model"]
    classes = np.asarray(pipeline.classes_)
    if len(x) == 0:
        return Certified("none: no rows", {e: np.zeros(0, bool) for e in eps_values}, 0, 0.0)
    z = np.asarray(prep.transform(x), dtype=np.float64)
    clean_pred = np.asarray(pipeline.predict(x))
    correct = clean_pred == y.to_numpy()
    pos = layout.positions
    linear = linear_scores(final)
    if linear is not None:
        pred, _ = linear_radius(*linear, z, pos)
        if np.any(classes[pred] != clean_pred):  # our scores are not the pipeline's
            return Certified("none: linear scores disagree with the pipeline", none, 0, 0.0)
        rows = {
            e: correct & (linear_worst_case(*linear, z, *box(z, pos, e, clip))[0] > 0)
            for e in eps_values
        }
        return Certified(LINEAR_METHOD, rows, len(x), time.perf_counter() - started)
    ens = _ensemble(final, len(classes))
    if ens is None:
        return Certified(
            f"none: no verifier for {type(final).__name__} (its attack accuracy is an "
            "upper bound only)",
            none,
            0,
            0.0,
        )
    pred_idx = np.asarray(pd.Index(classes).get_indexer(clean_pred))
    certified = {e: np.zeros(len(x), dtype=bool) for e in eps_values}
    done = 0
    # The budget is spent chunk by chunk of rows, every eps of a chunk together.
    for start in range(0, len(x), CHUNK_ROWS):
        if time.perf_counter() - started > seconds:
            break
        sl = slice(start, start + CHUNK_ROWS)
        zc = z[sl]
        # Every eps of the chunk in one pass over the trees (the zero-width box first:
        # the clean prediction itself must be the ensemble's).
        boxes = [(zc, zc), *(box(zc, pos, e, clip) for e in eps_values)]
        lo, hi = np.vstack([b[0] for b in boxes]), np.vstack([b[1] for b in boxes])
        margin = ensemble_margin(ens, lo, hi, np.tile(pred_idx[sl], len(boxes)))
        margin = margin.reshape(len(boxes), len(zc))
        if np.any(margin[0] < 0):
            return Certified("none: the tree scores disagree with the pipeline", none, 0, 0.0)
        for k, e in enumerate(eps_values, start=1):
            certified[e][sl] = margin[k] > 0
        done = min(len(x), start + CHUNK_ROWS)
    rows = {e: correct & certified[e] for e in eps_values}
    return Certified(TREE_METHOD, rows, done, time.perf_counter() - started)
