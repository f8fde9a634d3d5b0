"""The evasion threat model of ``evaluate.adversarial`` and the attacks that search it.

Threat: evasion (OWASP ML01). The attacker changes each *numeric* input of a row by
at most ``attack_eps`` standard deviations of that input (L-inf budget, measured by
the pipeline's own scaler); *categorical* inputs are held fixed (a category cannot
be nudged a little). A missing numeric cell is imputed first (as the pipeline does)
and may then be perturbed like any other value: the adversarial row carries the
imputed-and-perturbed value. Every model of the zoo is attacked, never skipped:

- models with loss gradients (`tasks.models.GRADIENT_MODELS`, linear): ART's FGM
  (``attack = "fgm"``) or PGD with random starts (``"pgd"``), white box. ``"auto"``
  runs FGM and the exact worst case of the linear scores ("corner": per row, the
  corner of its clipped box against the closest other class's margin,
  `tasks.checks.certified.linear_worst_case`) and keeps, row by row, the worst: a row
  counts as broken when either breaks it. Gradient attacks miss rows where the
  probabilities saturate (diffprivlib's large coefficients give zero loss gradients:
  on the bundled data FGM and PGD left 0.60 robust where the corner leaves 0.30, at
  eps 0.1). PGD is not in "auto": the corner is exact, PGD (100 steps, 2 random starts)
  cost 3 s per 143 rows and cannot break a row the corner leaves;
- all others (forests, boosting; ``"auto"`` or ``"square"``): ART's Square attack, a
  score-based black box that only reads ``predict_proba`` (`tasks.checks.square_attack`).

An attack finds adversarial rows, it never proves there are none: its robust accuracy
is an *upper* bound on the true one. `tasks.checks.certified` gives the lower bound.

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

FORK: one estimator with loss gradients in ART may be added to `GRADIENT_MODELS`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tasks.checks.certified import box, linear_scores, linear_worst_case
from tasks.checks.square_attack import class_scores, square
from tasks.common.settings import EvaluateConfig
from tasks.models import GRADIENT_MODELS, NumericLayout, numeric_layout

with warnings.catch_warnings():  # see tasks.checks.square_attack: ART at module load
    warnings.simplefilter("ignore")
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import SklearnClassifier
    from art.estimators.estimator import LossGradientsMixin

log = logging.getLogger(__name__)

GRADIENT_ATTACKS = frozenset({"fgm", "pgd"})
# PGD's random starts in the eps ball (ART keeps, per row, a start that breaks it).
# FORK: its cost is linear in it.
PGD_RANDOM_STARTS = 2


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


def _fgm_pgd(
    attack: str,
    final: BaseEstimator,
    z: np.ndarray,
    onehot: np.ndarray,
    clip: tuple[np.ndarray, np.ndarray],
    positions: np.ndarray,
    *,
    eps: float,
    iterations: int,
) -> tuple[np.ndarray | None, Callable[[np.ndarray], np.ndarray] | None]:
    """White-box FGM/PGD on the numeric positions of `z`: (adversarial z, class
    scores of the wrapper), or (None, None) when ART has no loss gradients for it."""
    try:
        clf = SklearnClassifier(model=_attack_target(final), clip_values=clip)
    except TypeError:  # not a scikit-learn model (and no linear twin for it)
        return None, None
    if not isinstance(clf, LossGradientsMixin):
        return None, None
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
            max_iter=iterations,
            num_random_init=PGD_RANDOM_STARTS,
            verbose=False,
        )
    z_adv = art_attack.generate(x=z.astype(np.float32), y=onehot, mask=mask)
    return np.asarray(z_adv, dtype=np.float64), clf.predict


class NoAttack(ValueError):
    """No attack of this module fits the model and configuration (the gate fails closed)."""


@dataclass(frozen=True)
class Adversarial:
    """The attacked rows, and what the gate checks about the attack itself."""

    attack: str  # what decided: "fgm" | "pgd" | "corner" | "square", or "fgm+corner"
    x_adv: pd.DataFrame  # raw inputs: numeric columns moved, categorical ones copied
    wrapper_mismatch: int  # clean rows the attack's view predicts differently
    over_budget: bool  # a perturbation beyond eps, before projection onto the budget
    attacks: tuple[str, ...] = ()  # every attack run (the worst case per row is kept)


def _as_float(values: pd.Series) -> np.ndarray:
    """A numeric input as float64, without a copy when it already is one (NaN stays)."""
    if values.dtype == np.float64:
        return values.to_numpy()
    return pd.to_numeric(values).to_numpy(np.float64, na_value=np.nan)


Ranges = Mapping[str, tuple[float, float]]


def training_ranges(
    x_train: pd.DataFrame, columns: Iterable[str]
) -> dict[str, tuple[float, float]]:
    """(min, max) of each numeric input over every training row (NaN: an all-missing
    column). The train stage computes them once, where it reads every row anyway, so
    the evaluate stage's cost does not grow with the rows."""
    out: dict[str, tuple[float, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: no range
        for c in columns:
            v = _as_float(x_train[c])  # column by column: pandas' min/max copied all rows
            out[c] = (float(np.nanmin(v)), float(np.nanmax(v)))
    return out


def _clip_range(
    layout: NumericLayout, z: np.ndarray, x_train: pd.DataFrame, ranges: Ranges | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per transformed column: the training range of each numeric input (scaled),
    widened to the attacked rows; the attacked rows' own range elsewhere (one-hot
    positions are never perturbed). Always min < max, as ART requires. `ranges`: the
    training ranges if already made (`training_ranges`)."""
    lo, hi = z.min(0), z.max(0)
    if len(layout.columns):
        if ranges is None or not all(c in ranges for c in layout.columns):
            ranges = training_ranges(x_train, layout.columns)
        tr_lo = (np.array([ranges[c][0] for c in layout.columns]) - layout.mean) / layout.scale
        tr_hi = (np.array([ranges[c][1] for c in layout.columns]) - layout.mean) / layout.scale
        pos = layout.positions
        lo[pos] = np.fmin(lo[pos], tr_lo)  # fmin: a column all NaN in training has no range
        hi[pos] = np.fmax(hi[pos], tr_hi)
    hi = np.maximum(hi, lo + 1e-6)
    return lo.astype(np.float32), hi.astype(np.float32)


def attack_clip(
    pipeline: Pipeline, x: pd.DataFrame, x_train: pd.DataFrame, ranges: Ranges | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The attack's range per transformed column for rows `x` (see `_clip_range`)."""
    z = np.asarray(pipeline.named_steps["prep"].transform(x), dtype=np.float64)
    return _clip_range(numeric_layout(pipeline), z, x_train, ranges)


def _corner(
    final: BaseEstimator,
    z: np.ndarray,
    clip: tuple[np.ndarray, np.ndarray],
    positions: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The exact worst case of a linear model: per row, the corner of its (clipped) box
    that moves every numeric input against the margin of the closest other class
    (`tasks.checks.certified.linear_worst_case`). Gradient attacks may miss it where the
    probabilities saturate (large DP coefficients: zero loss gradients)."""
    linear = linear_scores(final)
    if linear is None:
        raise NoAttack(f"{type(final).__name__} has no linear class scores")
    clip64 = (clip[0].astype(np.float64), clip[1].astype(np.float64))
    _, point = linear_worst_case(*linear, z, *box(z, positions, eps, clip64))
    return point, class_scores(final)


def choose_attack(config: EvaluateConfig, estimator: str) -> str:
    """The attacks for this estimator, as named in the metrics: "auto" is FGM and the
    exact corner (the worst per row) with gradients, else Square."""
    return "+".join(attacks_to_run(config, estimator))


def attacks_to_run(config: EvaluateConfig, estimator: str) -> tuple[str, ...]:
    """The attacks `config` runs on `estimator`, the first one preferred on ties."""
    if config.attack != "auto":
        return (config.attack,)
    return ("fgm", "corner") if estimator in GRADIENT_MODELS else ("square",)


def _decided(attacks: tuple[str, ...], broken: list[np.ndarray]) -> str:
    """The attack that alone breaks every row any of them broke (the first one on ties),
    else all of them joined by "+"."""
    union = np.logical_or.reduce(broken) if broken else np.zeros(0, dtype=bool)
    for name, rows in zip(attacks, broken, strict=True):
        if not np.any(union & ~rows):
            return name
    return "+".join(attacks)


def adversarial_examples(
    *,
    pipeline: Pipeline,
    estimator: str,
    x_train: pd.DataFrame,
    x: pd.DataFrame,
    y: pd.Series,
    config: EvaluateConfig,
    seed: int,
    eps: float | None = None,
    ranges: Ranges | None = None,
) -> Adversarial:
    """Attack rows `x` (labels `y`) of `pipeline` under the module's threat model.

    Every attack of `attacks_to_run` runs on the same rows; each row keeps the first
    adversarial version the pipeline misclassifies (the per-row worst case).
    `eps`: the budget (standard deviations of each numeric input), default
    ``config.attack_eps`` (the robustness curve asks for others). `ranges`: the
    training ranges of the numeric inputs, if made (else read from `x_train`).

    Raises:
        NoAttack: the configured attack does not fit this model (the reason, in words).
    """
    eps = config.attack_eps if eps is None else eps
    attacks = attacks_to_run(config, estimator)
    if set(attacks) & GRADIENT_ATTACKS and estimator not in GRADIENT_MODELS:
        raise NoAttack(
            f"attack {config.attack!r} needs loss gradients and {estimator} has none: set "
            'evaluate.attack = "auto" or "square" (black box)'
        )
    try:
        layout = numeric_layout(pipeline)
    except ValueError:
        raise NoAttack(
            "not a pipeline of tasks/models.py (no 'prep' step): no attack knows its inputs"
        ) from None
    if len(x) == 0 or len(layout.positions) == 0:  # nothing to perturb
        return Adversarial(attacks[0], x.copy(), 0, False, attacks)
    prep, final = pipeline.named_steps["prep"], pipeline.named_steps["model"]
    classes = np.asarray(pipeline.classes_)
    clean_pred = np.asarray(pipeline.predict(x))
    z = np.asarray(prep.transform(x), dtype=np.float64)
    idx = class_indices(classes, y.to_numpy())
    idx = np.where(idx >= 0, idx, class_indices(classes, clean_pred))  # unknown: wrong anyway
    onehot = np.eye(len(classes), dtype=np.float32)[idx]
    clip = _clip_range(layout, z, x_train, ranges)
    truth = y.to_numpy()
    found: list[tuple[pd.DataFrame, int, bool]] = []
    broken: list[np.ndarray] = []
    for attack in attacks:
        x_adv, mismatch, over = _one_attack(
            attack, final, x, z, onehot, clip, layout, classes, clean_pred, eps, config, seed
        )
        found.append((x_adv, mismatch, over))
        broken.append(np.asarray(pipeline.predict(x_adv)) != truth)
    # Per row: the first attack's row that breaks it, else the first attack's row.
    pick = np.zeros(len(x), dtype=int)
    for k in range(len(attacks) - 1, -1, -1):
        pick[broken[k]] = k
    x_adv = found[0][0].copy()
    cols = [x_adv.columns.get_loc(c) for c in layout.columns]
    for k in range(1, len(attacks)):
        rows = np.flatnonzero(pick == k)
        if len(rows):
            x_adv.iloc[rows, cols] = found[k][0].iloc[rows, cols].to_numpy()
    return Adversarial(
        attack=_decided(attacks, broken),
        x_adv=x_adv,
        wrapper_mismatch=max(f[1] for f in found),
        over_budget=any(f[2] for f in found),
        attacks=attacks,
    )


def _one_attack(
    attack: str,
    final: BaseEstimator,
    x: pd.DataFrame,
    z: np.ndarray,
    onehot: np.ndarray,
    clip: tuple[np.ndarray, np.ndarray],
    layout: NumericLayout,
    classes: np.ndarray,
    clean_pred: np.ndarray,
    eps: float,
    config: EvaluateConfig,
    seed: int,
) -> tuple[pd.DataFrame, int, bool]:
    """One attack on the transformed rows `z`: (raw adversarial rows, wrapper mismatch,
    over budget) as `Adversarial` reports them."""
    pos = layout.positions
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "PyTorch not found": harmless
        z_adv: np.ndarray | None
        scores: Callable[[np.ndarray], np.ndarray] | None
        if attack == "corner":
            z_adv, scores = _corner(final, z, clip, pos, eps)
        elif attack in GRADIENT_ATTACKS:
            z_adv, scores = _fgm_pgd(
                attack, final, z, onehot, clip, pos, eps=eps, iterations=config.attack_iterations
            )
        else:
            z_adv, scores = square(
                final, z, onehot, clip, pos, eps=eps, iterations=config.attack_iterations, seed=seed
            )
    if z_adv is None or scores is None:
        raise NoAttack(
            f'ART has no loss gradients for {type(final).__name__}: use evaluate.attack = "square"'
        )
    log.info("%s attack on %d rows took %.3f s", attack, len(z), time.perf_counter() - started)
    wrapper_mismatch = int(np.sum(classes[np.asarray(scores(z)).argmax(1)] != clean_pred))
    # ART works in float32: allow its rounding on top of the budget, then project onto it.
    delta = z_adv[:, pos] - z[:, pos].astype(np.float32).astype(np.float64)
    slack = eps * 1e-4 + 1e-6 + 4 * np.spacing(np.abs(z[:, pos]).astype(np.float32) + eps)
    over_budget = bool(np.any(np.abs(delta) > eps + slack))
    raw = (z[:, pos] + np.clip(delta, -eps, eps)) * layout.scale + layout.mean
    x_adv = x.assign(**{col: raw[:, i] for i, col in enumerate(layout.columns)})
    return x_adv, wrapper_mismatch, over_budget
