"""Membership inference at low false-positive rates: offline LiRA with references.

An average advantage (TPR - FPR at the attack's own threshold) hides the records an
attacker can single out with near certainty (Carlini et al., "Membership Inference
Attacks From First Principles", 2022). What matters is the true-positive rate at a
false-positive rate an attacker would accept: 1%, 0.1%. This module measures it with
the offline likelihood-ratio attack (LiRA) of that paper, with a few reference models.

Rows, all bounded by ``samples`` (the cost is flat in the table's size):
- members: up to ``samples`` training rows; non-members: up to ``samples`` test rows
  (all of them when fewer: more non-members give a finer false-positive axis);
- the reference pool is exactly those scored rows. Reference ``2i`` is fitted on a
  seeded half of the pool and reference ``2i+1`` on the other half, so every scored
  row is *out* of exactly ``references / 2`` references (offline attack: no reference
  was trained on the row it scores, member or not).

Each reference is ``sklearn.base.clone`` of the target: the same pipeline, the same
parameters (preprocessing refitted), only the estimator's seed changed per reference.

Score of a row: LiRA's logit of the model's probability of the true label,
``phi = log(p / (1 - p))``; the target's ``phi`` minus the mean ``phi`` of the
references that never saw the row, divided by the references' pooled spread (a global
variance: per-row variances need dozens of references). A row scores high when the
target is far surer of *it* than models that never saw it.

Fairness of the calibration: references see half the pool (about ``samples`` rows)
where the target saw the whole training set, so they are less sure of every row than
the target. That shift is common to members and non-members and cancels in the
ranking (the ROC curve and every TPR at a fixed FPR depend on ranks only); what
remains is each row's excess over its own out-reference mean. RMIA (Zarifzadeh et al.
2024), measured as the alternative, ranks the same rows by the probability ratio
against the references: it flagged the default forest (min_samples_leaf 2, bootstrap)
about as strongly as a memorising one on the bundled data (TPR at 1% FPR 0.16-0.19 for
both), where LiRA's logit scale separates exact memorisation (0.33) from the default
forest (0.05).

Statistics: the threshold for a target FPR ``alpha`` lets at most ``floor(alpha * n)``
of the ``n`` non-members through (strictly greater scores); the TPR at it has an exact
(Clopper-Pearson) 95% interval over the members. The interval covers the sampling of
the members, not the threshold's own noise: with ``n`` non-members the FPR axis moves
in steps of ``1/n``; below ``1/n`` (0.1% needs 1000 non-members) the TPR is the one at
zero false positives, resting on the single highest non-member score.
``exposed_records`` counts members whose score is individually significant: their
empirical p-value against the non-member scores passes Benjamini-Hochberg at a 5%
false-discovery rate. Only counts leave this module, never a row.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

EXPOSURE_FDR = 0.05  # Benjamini-Hochberg false-discovery rate for `exposed_records`
CURVE_POINTS = 64
CURVE_MIN_FPR = 1e-3
PROB_FLOOR = 1e-6


@dataclass(frozen=True)
class LowFprResult:
    """Scores of the attack and what the gate reads from them (counts only)."""

    member_scores: np.ndarray
    non_member_scores: np.ndarray

    @property
    def members(self) -> int:
        return len(self.member_scores)

    @property
    def non_members(self) -> int:
        return len(self.non_member_scores)

    def auc(self) -> float:
        labels = np.r_[np.ones(self.members), np.zeros(self.non_members)]
        return float(roc_auc_score(labels, np.r_[self.member_scores, self.non_member_scores]))

    def tpr_at(self, fpr: float) -> tuple[float, float, float]:
        """TPR at false-positive rate <= `fpr`, with its exact 95% interval."""
        hits = true_positives_at(self.member_scores, self.non_member_scores, fpr)
        ci = binomtest(hits, self.members).proportion_ci(confidence_level=0.95, method="exact")
        return hits / self.members, float(ci.low), float(ci.high)

    def exposed(self, fdr: float = EXPOSURE_FDR) -> int:
        """Members individually significant against the non-members (BH at `fdr`)."""
        others = np.sort(self.non_member_scores)
        beaten_by = len(others) - np.searchsorted(others, self.member_scores, side="left")
        pvalues = np.sort((1 + beaten_by) / (len(others) + 1))
        passed = pvalues <= fdr * np.arange(1, len(pvalues) + 1) / len(pvalues)
        return int(np.flatnonzero(passed)[-1] + 1) if passed.any() else 0

    def curve(self) -> list[list[float | None]]:
        """[[fpr, tpr], ...] on a log FPR axis from 1e-3 to 1 (the report's format)."""
        grid = np.geomspace(CURVE_MIN_FPR, 1.0, CURVE_POINTS)
        return [
            [
                round(float(f), 4),
                round(
                    true_positives_at(self.member_scores, self.non_member_scores, f) / self.members,
                    4,
                ),
            ]
            for f in grid
        ]


def true_positives_at(members: np.ndarray, others: np.ndarray, fpr: float) -> int:
    """Members scored strictly above the threshold that lets <= fpr*n non-members by."""
    allowed = math.floor(fpr * len(others) + 1e-9)
    if allowed >= len(others):
        return len(members)
    threshold = np.sort(others)[::-1][allowed]  # the (allowed+1)-th highest
    return int(np.sum(members > threshold))


def true_label_proba(model: Any, x: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """The model's probability of each row's true label (0 for a label it never saw,
    1/classes where the model returns no finite probability)."""
    classes = pd.Index(np.asarray(model.classes_))
    idx = classes.get_indexer(pd.Series(np.asarray(y, dtype=object)))
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    out = np.zeros(len(idx))
    known = idx >= 0
    out[known] = proba[np.flatnonzero(known), idx[known]]
    # A differentially private reference fitted on few rows can overflow (NaN): it
    # then knows nothing of the row, as a uniform guess.
    out[~np.isfinite(out)] = 1.0 / max(len(classes), 1)
    return np.clip(out, PROB_FLOOR, 1.0)


def _reseeded(pipeline: Any, seed: int) -> Any:
    """An unfitted copy of `pipeline` with every integer random_state set to `seed`."""
    ref = clone(pipeline)
    params = ref.get_params(deep=True)
    seeds = {
        k: seed
        for k, v in params.items()
        if k.endswith("random_state") and (v is None or isinstance(v, int | np.integer))
    }
    return ref.set_params(**seeds) if seeds else ref


def logit(p: np.ndarray) -> np.ndarray:
    """LiRA's scaling of a confidence: log(p / (1 - p)), finite for p in [0, 1]."""
    q = np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR)
    return np.log(q) - np.log1p(-q)


def reference_out_logits(
    pipeline: Any, x: pd.DataFrame, y: pd.Series, *, references: int, seed: int
) -> tuple[np.ndarray, float]:
    """Per row, the mean logit of its true label over the references it is out of, and
    the pooled standard deviation of those logits around their row means.

    `x`, `y`: the pool (the scored rows). References come in complementary pairs of
    halves, so every row is out of exactly ``references / 2`` of them.
    """
    rng = np.random.default_rng(seed)
    pairs = max(references // 2, 1)
    out = np.zeros((pairs, len(x)))  # each row is out of one reference per pair
    for pair in range(pairs):
        order = rng.permutation(len(x))
        halves = (order[: len(x) // 2], order[len(x) // 2 :])
        for side, (fit_rows, out_rows) in enumerate((halves, halves[::-1])):
            ref = _reseeded(pipeline, seed + 2 * pair + side + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # diffprivlib, convergence on small halves
                ref.fit(x.iloc[fit_rows], y.iloc[fit_rows])
            out[pair, out_rows] = logit(true_label_proba(ref, x.iloc[out_rows], y.iloc[out_rows]))
    mean = out.mean(axis=0)
    spread = float(np.sqrt(np.sum((out - mean) ** 2) / max(out.size - len(x), 1)))
    return mean, max(spread, 1e-3)


def lira_attack(
    *,
    pipeline: Any,
    x_members: pd.DataFrame,
    y_members: pd.Series,
    x_others: pd.DataFrame,
    y_others: pd.Series,
    references: int,
    seed: int,
) -> LowFprResult:
    """Offline LiRA scores of the sampled members and non-members (see module doc)."""
    x_pool = pd.concat([x_members, x_others], ignore_index=True)
    y_pool = pd.concat([y_members, y_others], ignore_index=True)
    target = logit(true_label_proba(pipeline, x_pool, y_pool))
    mean, spread = reference_out_logits(pipeline, x_pool, y_pool, references=references, seed=seed)
    score = (target - mean) / spread
    m = len(x_members)
    return LowFprResult(member_scores=score[:m], non_member_scores=score[m:])
