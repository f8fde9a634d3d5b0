"""Adversarial robustness (``evaluate.adversarial``): accuracy under an evasion attack.

Threat: evasion (OWASP ML01). The attacker changes each *numeric* input of a row by
at most ``attack_eps`` standard deviations of that input (L-inf budget, measured by
the pipeline's own scaler); *categorical* inputs are held fixed (a category cannot
be nudged a little). A missing numeric cell is imputed first (as the pipeline does)
and may then be perturbed like any other value: the adversarial row carries the
imputed-and-perturbed value. Every model of the zoo is attacked, never skipped:

- models with loss gradients (`tasks.models.GRADIENT_MODELS`, linear): ART's FGM
  (``attack = "auto"`` or ``"fgm"``) or PGD, white box;
- all others (forests, boosting; ``"auto"`` or ``"square"``): ART's Square attack, a
  score-based black box that only reads ``predict_proba``.

The attack runs in the transformed space of the pipeline's ``prep`` step (one-hot
categories, standardised numerics: `tasks.models.numeric_layout`), restricted to
the numeric positions, with each numeric value clipped to the training range
(widened to the attacked rows, so clipping never moves a clean row). The
adversarial rows are mapped back to raw inputs (``z * scale + mean`` in the numeric
columns, the categorical columns copied) and scored by the *whole* pipeline. The
gate fails closed when the attack's view of the model disagrees with the pipeline
(a prediction mismatch on the clean rows), when a perturbation exceeds the budget,
or when a categorical input changed, as re-measured on the pipeline's own
transform of the adversarial rows.

Why the transformed space, not ART's ``preprocessing=(mean, scale)`` on raw rows:
measured on ART 1.20.1, ``ScikitlearnLogisticRegression.loss_gradient`` applies the
preprocessing twice (it calls ``self.predict`` on already preprocessed rows), so
probabilities saturate and a third of the rows get a zero gradient and are never
perturbed: robust accuracy comes out too high (0.70 instead of 0.62 at eps 0.3 on
the bundled data). Attacking ``(x - mean) / scale`` with a scalar eps is the same
threat model (eps * scale per raw feature) with correct gradients.

How Square fits tabular rows: ART's `SquareAttack` only takes images (4-d input)
from a `NeuralNetworkMixin` estimator, so each row becomes a ``(g+1) x (g+1) x 1``
image (``BlackBoxClassifierNeuralNetwork``): the numeric values fill the top-left
``g x g`` block, the row's index sits in the bottom-right cell. ART's square windows
never reach the last image row and column (``randint`` excludes its upper bound), so
those hold the index and padding; every cell stays within eps of its start (ART
projects onto the budget), so rounding recovers the index exactly (eps < 0.5) and the
predict function rebuilds each row from its index (its one-hot part fixed) and the
attacked numeric values. ``p_init`` is lowered for small grids so the first window
fits. Rows ART asks to score again are answered from a small cache (5-8x faster on
the zoo's models, same result). Its random draws come from
NumPy's and Python's global generators: they are seeded (``seed``) for the attack and
restored afterwards, so a run is reproducible. HopSkipJump (decision-based) was
measured at ~176 s per 100 rows on a 100-tree forest; Square takes seconds.

FORK: a new estimator with ``predict_proba`` needs nothing here (Square fits it);
one with loss gradients in ART may be added to `GRADIENT_MODELS`.

About 560 lines, over the usual 400: the three attacks (FGM/PGD on gradients, Square on
probabilities), their shared clip range and class scoring, and the gate that compares
clean, robust and champion accuracy on the same rows are one threat's code, read
together when the threat model changes.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from tasks.checks.baselines import paired_difference
from tasks.checks.champion import NO_CHAMPION, Champion
from tasks.common.gates import GateResult, check, failed
from tasks.common.settings import EvaluateConfig
from tasks.models import GRADIENT_MODELS, NumericLayout, numeric_layout

# ART at module load, not inside the check: imported inside a running flow it measured
# 5 s instead of 1 s. Its "PyTorch not found" import warnings are not ours to show.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from art.attacks.evasion import (
        FastGradientMethod,
        ProjectedGradientDescent,
        SquareAttack,
    )
    from art.estimators.classification import (
        BlackBoxClassifierNeuralNetwork,
        SklearnClassifier,
    )
    from art.estimators.estimator import LossGradientsMixin

log = logging.getLogger(__name__)

ADVERSARIAL = "evaluate.adversarial"
GRADIENT_ATTACKS = frozenset({"fgm", "pgd"})


def attack_rows(
    x: pd.DataFrame, y: pd.Series, *, samples: int, seed: int
) -> tuple[pd.DataFrame, pd.Series]:
    """Up to `samples` test rows, chosen by a seeded generator (same rows every run)."""
    if len(x) <= samples:
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=samples, replace=False))
    return x.iloc[idx], y.iloc[idx]


# Linear models ART does not accept but whose decision function is a plain
# LogisticRegression's (diffprivlib's DP LogisticRegression: the noise is in the
# fitted coefficients, prediction is ordinary). Named exactly: never a whole module.
LINEAR_TWINS = frozenset({"diffprivlib.models.logistic_regression.LogisticRegression"})


def _attack_target(final: BaseEstimator) -> BaseEstimator:
    """The estimator ART attacks for `final`: itself, or a scikit-learn twin.

    The twin is a LogisticRegression with the same ``coef_``, ``intercept_`` and
    ``classes_``, so the same decision function and predictions; the caller's
    wrapper-mismatch check compares its predictions with the real pipeline's and
    fails closed on any difference.
    """
    name = f"{type(final).__module__}.{type(final).__qualname__}"
    if name not in LINEAR_TWINS or not isinstance(final, LogisticRegression):
        return final
    twin = LogisticRegression()
    twin.classes_ = np.array(final.classes_, copy=True)
    twin.coef_ = np.array(final.coef_, dtype=np.float64, copy=True)
    twin.intercept_ = np.array(final.intercept_, dtype=np.float64, copy=True)
    twin.n_features_in_ = final.n_features_in_
    return twin


def class_indices(classes: np.ndarray, y: pd.Series | np.ndarray) -> np.ndarray:
    """Index of each label in `classes` (any hashable labels); -1 for an unknown one."""
    return np.asarray(pd.Index(classes).get_indexer(pd.Series(np.asarray(y, dtype=object))))


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
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


def _fgm_pgd(
    attack: str,
    final: BaseEstimator,
    z: np.ndarray,
    onehot: np.ndarray,
    clip: tuple[np.ndarray, np.ndarray],
    positions: np.ndarray,
    config: EvaluateConfig,
) -> tuple[np.ndarray | None, Callable[[np.ndarray], np.ndarray] | None]:
    """White-box FGM/PGD on the numeric positions of `z`: (adversarial z, class
    scores of the wrapper), or (None, None) when ART has no loss gradients for it."""
    try:
        clf = SklearnClassifier(model=_attack_target(final), clip_values=clip)
    except TypeError:  # not a scikit-learn model (and no linear twin for it)
        return None, None
    if not isinstance(clf, LossGradientsMixin):
        return None, None
    eps = config.attack_eps
    mask = np.zeros(z.shape[1], dtype=np.float32)
    mask[positions] = 1.0
    if attack == "fgm":
        art_attack: Any = FastGradientMethod(clf, norm=np.inf, eps=eps, eps_step=eps)
    else:
        art_attack = ProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=eps,
            eps_step=eps / 10,
            max_iter=config.attack_iterations,
            num_random_init=0,
            verbose=False,
        )
    z_adv = art_attack.generate(x=z.astype(np.float32), y=onehot, mask=mask)
    return np.asarray(z_adv, dtype=np.float64), clf.predict


def _square(
    final: BaseEstimator,
    z: np.ndarray,
    onehot: np.ndarray,
    clip: tuple[np.ndarray, np.ndarray],
    positions: np.ndarray,
    config: EvaluateConfig,
    seed: int,
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Black-box Square attack on the numeric positions of `z` (see the module
    docstring for the image layout): (adversarial z, class scores of the wrapper)."""
    n, d = len(z), len(positions)
    g = max(1, math.ceil(math.sqrt(d)))
    side = g + 1
    cells = np.array([(k // g) * side + k % g for k in range(d)], dtype=int)
    id_cell = side * side - 1
    base = z.copy()
    scores = class_scores(_one_job(final))

    def to_image(values: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        img = np.zeros((len(values), side * side), dtype=dtype)
        img[:, cells] = values[:, positions]
        img[:, id_cell] = np.arange(len(values))
        return img.reshape(len(values), side, side, 1)

    def from_image(img: np.ndarray) -> np.ndarray:
        flat = np.asarray(img, dtype=np.float64).reshape(len(img), side * side)
        rows = base[np.clip(np.rint(flat[:, id_cell]).astype(int), 0, n - 1)]
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
    lo[id_cell], hi[id_cell] = 0.0, max(n - 1.0, 1.0)
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
        eps=config.attack_eps,
        max_iter=config.attack_iterations,
        # The first window (side of round(sqrt(p * cells))) must fit in the g x g block.
        p_init=min(0.8, (g / side) ** 2),
        nb_restarts=1,
        batch_size=max(n, 1),
        verbose=False,
    )
    # One thread: thousands of small batches, where OpenMP start-up costs more than it
    # saves (measured 50 ms vs 8 ms per 200-row batch on a 300-tree boosting model).
    with _seeded_global_rng(seed), threadpool_limits(1):
        img_adv = attack.generate(x=to_image(z), y=onehot)
    # The wrapper check reads the clean rows through the same image mapping, in float64.
    return from_image(img_adv), lambda values: scores(from_image(to_image(values, np.float64)))


class NoAttack(ValueError):
    """No attack of this module fits the model and configuration (the gate fails closed)."""


@dataclass(frozen=True)
class Adversarial:
    """The attacked rows, and what the gate checks about the attack itself."""

    attack: str  # "fgm" | "pgd" | "square"
    x_adv: pd.DataFrame  # raw inputs: numeric columns moved, categorical ones copied
    wrapper_mismatch: int  # clean rows the attack's view predicts differently
    over_budget: bool  # a perturbation beyond eps, before projection onto the budget


def _as_float(values: pd.Series) -> np.ndarray:
    """A numeric input as float64, without a copy when it already is one (NaN stays)."""
    if values.dtype == np.float64:
        return values.to_numpy()
    return pd.to_numeric(values).to_numpy(np.float64, na_value=np.nan)


def _clip_range(
    layout: NumericLayout, z: np.ndarray, x_train: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Per transformed column: the training range of each numeric input (scaled),
    widened to the attacked rows; the attacked rows' own range elsewhere (one-hot
    positions are never perturbed). Always min < max, as ART requires."""
    lo, hi = z.min(0), z.max(0)
    if len(layout.columns):
        # Column by column on the arrays (pandas' min/max copied all training rows).
        cols = [_as_float(x_train[c]) for c in layout.columns]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: no range
            tr_lo = (np.array([np.nanmin(v) for v in cols]) - layout.mean) / layout.scale
            tr_hi = (np.array([np.nanmax(v) for v in cols]) - layout.mean) / layout.scale
        pos = layout.positions
        lo[pos] = np.fmin(lo[pos], tr_lo)  # fmin: a column all NaN in training has no range
        hi[pos] = np.fmax(hi[pos], tr_hi)
    hi = np.maximum(hi, lo + 1e-6)
    return lo.astype(np.float32), hi.astype(np.float32)


def choose_attack(config: EvaluateConfig, estimator: str) -> str:
    """The attack for this estimator: "auto" is FGM with gradients, else Square."""
    if config.attack != "auto":
        return config.attack
    return "fgm" if estimator in GRADIENT_MODELS else "square"


def adversarial_examples(
    *,
    pipeline: Pipeline,
    estimator: str,
    x_train: pd.DataFrame,
    x: pd.DataFrame,
    y: pd.Series,
    config: EvaluateConfig,
    seed: int,
) -> Adversarial:
    """Attack rows `x` (labels `y`) of `pipeline` under the module's threat model.

    Raises:
        NoAttack: the configured attack does not fit this model (the reason, in words).
    """
    eps = config.attack_eps
    attack = choose_attack(config, estimator)
    if attack in GRADIENT_ATTACKS and estimator not in GRADIENT_MODELS:
        raise NoAttack(
            f"attack {attack!r} needs loss gradients and {estimator} has none: set "
            'evaluate.attack = "auto" or "square" (black box)'
        )
    try:
        layout = numeric_layout(pipeline)
    except ValueError:
        raise NoAttack(
            "not a pipeline of tasks/models.py (no 'prep' step): no attack knows its inputs"
        ) from None
    if len(x) == 0 or len(layout.positions) == 0:  # nothing to perturb
        return Adversarial(attack, x.copy(), 0, False)
    prep, final = pipeline.named_steps["prep"], pipeline.named_steps["model"]
    classes = np.asarray(pipeline.classes_)
    clean_pred = np.asarray(pipeline.predict(x))
    z = np.asarray(prep.transform(x), dtype=np.float64)
    pos = layout.positions
    idx = class_indices(classes, y.to_numpy())
    idx = np.where(idx >= 0, idx, class_indices(classes, clean_pred))  # unknown: wrong anyway
    onehot = np.eye(len(classes), dtype=np.float32)[idx]
    clip = _clip_range(layout, z, x_train)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "PyTorch not found": harmless
        if attack in GRADIENT_ATTACKS:
            z_adv, scores = _fgm_pgd(attack, final, z, onehot, clip, pos, config)
            if z_adv is None or scores is None:
                raise NoAttack(
                    f"ART has no loss gradients for {type(final).__name__}: use "
                    'evaluate.attack = "square"'
                )
        else:
            z_adv, scores = _square(final, z, onehot, clip, pos, config, seed)
    log.info("%s attack on %d rows took %.3f s", attack, len(z), time.perf_counter() - started)
    wrapper_mismatch = int(np.sum(classes[np.asarray(scores(z)).argmax(1)] != clean_pred))
    # ART works in float32: allow its rounding on top of the budget, then project onto it.
    delta = z_adv[:, pos] - z[:, pos].astype(np.float32).astype(np.float64)
    slack = eps * 1e-4 + 1e-6 + 4 * np.spacing(np.abs(z[:, pos]).astype(np.float32) + eps)
    over_budget = bool(np.any(np.abs(delta) > eps + slack))
    raw = (z[:, pos] + np.clip(delta, -eps, eps)) * layout.scale + layout.mean
    x_adv = x.assign(**{col: raw[:, i] for i, col in enumerate(layout.columns)})
    return Adversarial(attack, x_adv, wrapper_mismatch, over_budget)


def check_adversarial(
    *,
    pipeline: Pipeline,
    estimator: str,
    x_train: pd.DataFrame,
    x: pd.DataFrame,
    y: pd.Series,
    config: EvaluateConfig,
    seed: int,
    champion: Champion | None = None,
) -> GateResult:
    """Robustness of `pipeline` on rows `x` under the configured evasion attack.

    Rules (all must hold): the *drop* (clean accuracy on the attacked rows minus robust
    accuracy on them) is at most ``config.max_robust_drop``; the robust accuracy is no
    worse than the champion's on the same rows under the same attack beyond
    ``config.max_regression`` (paired interval, `tasks.checks.baselines`); and, when
    set, it reaches the fixed floor ``config.min_robust_accuracy``. A champion that
    could not be verified fails the gate (closed); none, or one with other inputs or
    classes, skips the comparison (``champion`` = ``none`` in the metrics, with why).

    Args:
        pipeline: A fitted pipeline of `tasks.models.build_pipeline`.
        estimator: Its estimator name (``model.estimator``): decides what "auto" runs.
        x_train: The training inputs (their range bounds the attack).
        x: The attacked rows (`attack_rows`), with labels `y` (any label type).
        config: The ``[evaluate]`` settings (attack, eps, limits, iterations).
        seed: Seeds the black-box attack's random search.
        champion: The current champion (`tasks.checks.champion.load_champion`).

    Metrics: attack, eps_std, samples, clean_accuracy, robust_accuracy,
    accuracy_drop, max_perturbation_std, champion (and, when compared,
    champion_robust_accuracy, robust_vs_champion, robust_vs_champion_ci).
    """
    eps = config.attack_eps
    champion = champion or NO_CHAMPION
    threshold: dict[str, Any] = {
        "max_robust_drop": config.max_robust_drop,
        "max_regression": config.max_regression,
    }
    if config.min_robust_accuracy is not None:
        threshold["min_robust_accuracy"] = config.min_robust_accuracy
    metrics: dict[str, Any] = {
        "attack": choose_attack(config, estimator),
        "eps_std": eps,
        "samples": len(x),
        "champion": champion.label,
    }
    attack_kw = {"x_train": x_train, "x": x, "y": y, "config": config, "seed": seed}
    try:
        adv = adversarial_examples(pipeline=pipeline, estimator=estimator, **attack_kw)
    except NoAttack as exc:
        return failed(
            ADVERSARIAL, metrics=metrics, threshold=threshold, detail=f"{exc}; failing closed"
        )
    truth = y.to_numpy()
    clean_ok = np.asarray(pipeline.predict(x)) == truth
    robust_ok = np.asarray(pipeline.predict(adv.x_adv)) == truth
    clean = float(np.mean(clean_ok)) if len(x) else 0.0
    robust = float(np.mean(robust_ok)) if len(x) else 0.0
    # Re-measured on what the pipeline itself sees of the adversarial rows.
    layout = numeric_layout(pipeline)
    pos = layout.positions
    max_pert, categories_changed = 0.0, False
    if len(x) and len(pos):
        prep = pipeline.named_steps["prep"]
        z = np.asarray(prep.transform(x), dtype=np.float64)
        z_seen = np.asarray(prep.transform(adv.x_adv), dtype=np.float64)
        others = np.setdiff1d(np.arange(z.shape[1]), pos)
        categories_changed = bool(np.any(z_seen[:, others] != z[:, others]))
        max_pert = float(np.max(np.abs(z_seen[:, pos] - z[:, pos])))
    metrics |= {
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "accuracy_drop": clean - robust,
        "max_perturbation_std": max_pert,
    }
    if (
        adv.wrapper_mismatch
        or adv.over_budget
        or categories_changed
        or max_pert > eps * (1 + 1e-6) + 1e-9
    ):
        return failed(
            ADVERSARIAL,
            metrics=metrics,
            threshold=threshold,
            detail="the attack does not model this pipeline (prediction mismatch, budget "
            "exceeded or a category changed); failing closed",
        )
    problems: list[str] = []
    if champion.status == "unverified":
        problems.append(
            f"the champion cannot be compared: {champion.reason}; failing closed: run "
            f"`secure-pipeline verify models:/NAME@champion` and repair or re-release it"
        )
    elif champion.status == "none":
        metrics["champion_reason"] = champion.reason
    elif champion.pipeline is not None and len(x):
        try:
            theirs = adversarial_examples(
                pipeline=champion.pipeline, estimator=champion.estimator or estimator, **attack_kw
            )
        except NoAttack as exc:
            problems.append(f"the champion cannot be attacked the same way ({exc}); failing closed")
        else:
            champ_ok = np.asarray(champion.pipeline.predict(theirs.x_adv)) == truth
            diff, half = paired_difference(robust_ok, champ_ok)
            metrics |= {
                "champion_robust_accuracy": float(np.mean(champ_ok)),
                "robust_vs_champion": diff,
                "robust_vs_champion_ci": round(half, 5),
            }
            if diff + half < -config.max_regression:
                problems.append(
                    f"robust accuracy {robust:.3f} is below the champion's ({champion.label}) "
                    f"{float(np.mean(champ_ok)):.3f} on the same {len(x)} attacked rows by "
                    f"{-diff:.3f} (interval ±{half:.3f}), beyond evaluate.max_regression = "
                    f"{config.max_regression}: find what made the new model more fragile "
                    "(data, parameters) before it replaces the champion"
                )
    if clean - robust > config.max_robust_drop:
        problems.append(
            f"a {adv.attack} attack of {eps} std per numeric input drops accuracy on "
            f"{len(x)} test rows from {clean:.3f} to {robust:.3f} (drop {clean - robust:.3f} > "
            f"evaluate.max_robust_drop = {config.max_robust_drop}): train with more "
            "regularisation or adversarial examples, or review max_robust_drop (its value "
            "measured by `init` is in the config) / attack_eps"
        )
    if config.min_robust_accuracy is not None and robust < config.min_robust_accuracy:
        problems.append(
            f"robust accuracy {robust:.3f} is below the fixed floor evaluate.min_robust_accuracy"
            f" = {config.min_robust_accuracy}: make the model more robust, or remove the floor "
            "and rely on max_robust_drop"
        )
    ok = not problems
    if problems:
        detail = "; ".join(problems)
    elif not len(pos):
        detail = "no numeric input to perturb: robust accuracy is the clean accuracy"
    else:
        detail = (
            f"accuracy drop {clean - robust:.3f} under attack is within "
            f"{config.max_robust_drop}"
            + (
                ""
                if champion.status != "loaded"
                else "; no robustness regression against the champion"
            )
        )
    return check(ADVERSARIAL, metrics=metrics, threshold=threshold, ok=ok, detail=detail)
