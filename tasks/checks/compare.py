"""Calibrated comparison of counts in new data with counts in a trusted reference.

One machinery for every relative screen (and, later, drift monitoring): a statistic is
always a count ``x`` out of ``n`` rows of the data against a count ``x0`` out of ``n0``
rows of the reference (rows of a class, missing cells of a column, rows of a category,
rows of a (bin, class) cell, ...). Pure numpy/scipy; no gate logic here.

A comparison is *flagged* when it is both

* **significant**: Fisher's exact test of the 2x2 table ``[[x, n - x], [x0, n0 - x0]]``
  (hypergeometric, so both sample sizes and the reference's own uncertainty count; exact
  for a 3-row bin and for a 0-count reference cell alike), one- or two-sided (two-sided:
  twice the smaller tail), with Holm's step-down correction over the whole family the
  caller passes at once (every class, category, bin, column of one gate), so the chance
  that a clean sample flags anything in the family is at most ``alpha``; and
* **material**: the share moved by at least ``floor`` AND by at least ``min_shift`` or
  ``min_relative`` times the reference share (a 3% class losing 30% of its rows moves
  0.009 of the rows: material at ``min_relative`` 0.25; a 50% class must move
  ``min_shift``). A huge table never blocks on a tiny, significant drift.

Shares are ``x / n`` and ``x0 / n0``; the shift is their difference (data minus
reference). Reference counts may come from stored shares (``round(share * rows)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import hypergeom

Alternative = Literal["two-sided", "greater", "less"]


def _arr(x: object) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


def fisher_pvalues(
    x: object, n: object, x0: object, n0: object, *, alternative: Alternative = "two-sided"
) -> np.ndarray:
    """Fisher's exact p-value of each count pair (vectorised; broadcasts its arguments).

    ``greater``: the data's share is larger than the reference's; ``less``: smaller;
    ``two-sided``: min(1, 2 x the smaller one-sided p). A pair with no rows is 1.0.
    """
    xs, ns, x0s, n0s = np.broadcast_arrays(_arr(x), _arr(n), _arr(x0), _arr(n0))
    xs, x0s = np.minimum(xs, ns), np.minimum(x0s, n0s)
    total, hits = ns + n0s, xs + x0s
    with np.errstate(all="ignore"):
        up = hypergeom.sf(xs - 1, total, hits, ns)
        down = hypergeom.cdf(xs, total, hits, ns)
    if alternative == "greater":
        p = up
    elif alternative == "less":
        p = down
    else:
        p = np.minimum(1.0, 2.0 * np.minimum(up, down))
    p = np.where((ns <= 0) | (total <= 0) | ~np.isfinite(p), 1.0, p)
    return np.clip(p, 0.0, 1.0)


def holm_adjusted(pvalues: object) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted p <= alpha)."""
    p = _arr(pvalues)
    m = len(p)
    if not m:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = stepped
    return out


def material(
    share: object, reference: object, *, floor: float, min_shift: float, min_relative: float
) -> np.ndarray:
    """|shift| >= floor and (|shift| >= min_shift or |shift| >= min_relative x reference)."""
    s, r = _arr(share), _arr(reference)
    d = np.abs(s - r)
    with np.errstate(invalid="ignore"):
        relative = np.where(r > 0, min_relative * r, 0.0) if np.isfinite(min_relative) else np.inf
    return (d >= floor) & ((d >= min_shift) | (d >= relative))


@dataclass(frozen=True)
class Comparison:
    """Arrays over one family of comparisons (same order as the caller's)."""

    x: np.ndarray
    n: np.ndarray
    x0: np.ndarray
    n0: np.ndarray
    share: np.ndarray
    reference_share: np.ndarray
    shift: np.ndarray  # share - reference share
    p: np.ndarray  # raw p-values
    p_adjusted: np.ndarray  # Holm over the family
    significant: np.ndarray
    material: np.ndarray
    flagged: np.ndarray

    @property
    def tests(self) -> int:
        return len(self.p)

    def worst(self) -> int:
        """Index of the comparison to report: the flagged one with the smallest adjusted
        p (ties: largest |shift|); with none flagged, the material one closest to
        significance, else the smallest p overall. -1 for an empty family."""
        if not self.tests:
            return -1
        for pool in (self.flagged, self.material, np.ones(self.tests, dtype=bool)):
            if pool.any():
                idx = np.flatnonzero(pool)
                key = np.lexsort((-np.abs(self.shift[idx]), self.p_adjusted[idx]))
                return int(idx[key[0]])
        return -1


def compare_counts(
    x: object,
    n: object,
    x0: object,
    n0: object,
    *,
    alpha: float,
    floor: float,
    min_shift: float,
    min_relative: float,
    alternative: Alternative = "two-sided",
) -> Comparison:
    """Compare every count of a family with the reference (see the module docstring).

    For one-sided ``greater`` (``less``) only a rise (drop) can be material.
    """
    xs, ns, x0s, n0s = (a.copy() for a in np.broadcast_arrays(_arr(x), _arr(n), _arr(x0), _arr(n0)))
    with np.errstate(all="ignore"):
        share = np.where(ns > 0, xs / np.where(ns > 0, ns, 1), 0.0)
        ref = np.where(n0s > 0, x0s / np.where(n0s > 0, n0s, 1), 0.0)
    p = fisher_pvalues(xs, ns, x0s, n0s, alternative=alternative)
    adj = holm_adjusted(p)
    shift = share - ref
    mat = material(share, ref, floor=floor, min_shift=min_shift, min_relative=min_relative)
    if alternative == "greater":
        mat &= shift > 0
    elif alternative == "less":
        mat &= shift < 0
    sig = adj <= alpha
    return Comparison(
        x=xs,
        n=ns,
        x0=x0s,
        n0=n0s,
        share=share,
        reference_share=ref,
        shift=shift,
        p=p,
        p_adjusted=adj,
        significant=sig,
        material=mat,
        flagged=sig & mat,
    )


def concat(parts: list[Comparison], *, alpha: float) -> Comparison:
    """Several families as one (Holm re-run over all of them)."""
    if not parts:
        e = np.zeros(0)
        b = np.zeros(0, dtype=bool)
        return Comparison(e, e, e, e, e, e, e, e, e, b, b, b)
    fields = Comparison.__dataclass_fields__
    cat = {f: np.concatenate([getattr(c, f) for c in parts]) for f in fields}
    adj = holm_adjusted(cat["p"])
    sig = adj <= alpha
    cat.update(p_adjusted=adj, significant=sig, flagged=sig & cat["material"])
    return Comparison(**cat)
