"""Relative poisoning screens: counts in the data against counts in the signed reference.

Every gate here is one family of `tasks.checks.compare` comparisons (Fisher's exact
test per count, Holm over the family at ``alpha``, plus a minimum effect), so each is
calibrated for the sizes of both the data and the reference:

* ``screen.label_distribution``: rows per class (two-sided). A small class losing a
  third of its rows blocks (relative effect), a large one must move ``max_label_shift``.
* ``screen.missingness``: missing cells per input, over all rows and per class (needs
  a version 4 profile).
* ``screen.category_shares``: rows per category of each categorical input, and rows
  holding a category the reference never saw.
* ``screen.duplicates``: exact repeats, against the reference's own repeat rate
  (one-sided: only more repeats block; the excess must reach ``max_duplicate_rate``).
* ``screen.backdoor``: small label-pure clusters (needs a version 4 profile). Per
  numeric input: rows of each (reference bin, class) as a share of all rows, rows of
  each class beyond the reference range (and their label mix against the outermost
  bin), rows per bin (a narrow band piles rows into one bin), and the most repeated
  value's rows (a single value stamped on many rows). Per categorical input: rows of
  each (category, class), and rows of each class at an unseen category (against the
  reference's singleton categories of that class: the Good-Turing estimate of what a
  clean sample holds at categories the reference never saw). One-sided; the excess must reach
  ``max_backdoor_score`` of all rows and ``min_relative_shift`` of the reference cell.

Measured (benchmarks/screen_calibration.py, defaults; the profile of the whole table,
200 draws each of 80% subsamples and bootstraps, and 200 random halves with the profile
built on one half and the other screened): every gate here passes at least 99.5% of
clean draws on breast_cancer (569 rows), the mixed synthetic table (2000), penguins
(344), mpg (234) and diamonds (53,940; 20 half draws), the worst being
label_distribution on penguins halves (1 in 200); screen.duplicates blocks every
bootstrap (it repeats 37% of its rows: a flood by construction). A clean 1M-row table
screened against a 50k-row profile of the same source passes every gate.

Detection (issue-17 attacks, profile of the clean table, 10 seeds): on diamonds every
attack blocks (the random-label unseen category by screen.category_shares). On the
small tables the counts often do not allow it at alpha 0.001: breast_cancer blocks
the minority flip, class gaps, the 6% single value and floods but not a 2% extreme
value nor the 3% narrow band (17 rows: about 20 rows of one class in a bin where the
reference has 3-7); penguins blocks gaps, the tripled category, the single value and
floods; mpg (234 rows) only floods. Minimum detectable backdoor cluster (one-sided
Fisher, Holm over about (bins + 2) x classes x inputs tests): roughly 30+ label-pure
rows where the reference cell holds a few, and at least ``max_backdoor_score`` of rows;
so 6% at 500 rows, 1.5-3% from about 10,000 rows (diamonds: 1.5-3% all block).

About 490 lines, over the usual 400: five gates of one comparison family, each with its
own refusal text, and the measurements above that calibrate them; the data's counts
live in `tasks.checks.counts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.compare import Comparison, compare_counts, concat, fisher_pvalues, holm_adjusted
from tasks.checks.conditional import (
    class_totals,
)
from tasks.checks.counts import Counts, as_counts
from tasks.checks.poisoning import (
    duplicate_rate,
    profile_inputs,
)
from tasks.common.gates import GateResult, check

REBUILD = (
    "the reference profile is version {v} and lacks the counts this screen compares "
    "with (version 4): rebuild it from the trusted data with `secure-pipeline refresh "
    "--config CONFIG` (or `secure-pipeline profile`)"
)


def _version_gate(name: str, profile: Mapping[str, Any], threshold: dict[str, Any]) -> GateResult:
    return check(
        name,
        ok=False,
        metrics={"profile_version": profile.get("version"), "tests": 0},
        threshold=threshold,
        detail=REBUILD.format(v=profile.get("version")),
    )


def _common(c: Comparison, i: int) -> dict[str, Any]:
    if i < 0:
        return {"tests": 0, "flagged": 0, "p_adjusted": 1.0}
    return {
        "tests": c.tests,
        "flagged": int(c.flagged.sum()),
        "rows": int(c.x[i]),
        "share": float(c.share[i]),
        "reference_share": float(c.reference_share[i]),
        "shift": float(c.shift[i]),
        "p_adjusted": float(c.p_adjusted[i]),
    }


def _fmt(x: float) -> str:
    return f"{x:.2%}" if abs(x) >= 0.0001 else f"{x:.4%}"


# --- screen.label_distribution ------------------------------------------------------------


def check_label_distribution(
    data: pd.DataFrame | Counts,
    profile: Mapping[str, Any],
    *,
    max_shift: float,
    alpha: float,
    min_relative: float,
    floor: float,
) -> GateResult:
    """`screen.label_distribution`: rows per class vs the reference, per class, calibrated.

    A class absent from the reference is compared with its 0 reference rows (one-sided):
    a split of a small table can leave a 2% class out of the reference by chance, so
    only a significant, material share of a new label blocks (the suite's label set is
    validate.expectations' business)."""
    counts = as_counts(data, profile)
    ref: Mapping[str, float] = profile["label_shares"]
    n0 = int(profile["rows"])
    observed = counts.label_counts
    new = sorted(set(observed) - set(ref))
    classes = [*sorted(ref), *new]
    kw: dict[str, Any] = {"alpha": alpha, "floor": floor, "min_relative": min_relative}
    comp = concat(
        [
            compare_counts(
                [observed.get(k, 0) for k in sorted(ref)],
                counts.rows,
                [round(ref[k] * n0) for k in sorted(ref)],
                n0,
                min_shift=max_shift,
                **kw,
            ),
            compare_counts(
                [observed[k] for k in new],
                counts.rows,
                0,
                n0,
                min_shift=0,
                alternative="greater",
                **kw,
            ),
        ],
        alpha=alpha,
    )
    if len(ref) == 2 and not new:  # two classes: one comparison, counted once
        adj = np.minimum(comp.p, 1.0)
        comp = replace(comp, p_adjusted=adj, significant=adj <= alpha)
        comp = replace(comp, flagged=comp.significant & comp.material)
    i = comp.worst()
    metrics: dict[str, Any] = {
        "max_shift": float(np.abs(comp.shift).max()) if comp.tests else 1.0,
        "class": classes[i] if i >= 0 else "",
        **_common(comp, i),
        "classes": len(observed),
        "reference_classes": len(ref),
        "unknown_classes": len(new),
    }
    ok = not comp.flagged.any()
    if ok:
        detail = ""
    elif classes[i] in new:
        detail = (
            f"label value {classes[i]!r}, absent from the reference, holds "
            f"{_fmt(comp.share[i])} of rows (adjusted p {comp.p_adjusted[i]:.1e} <= {alpha}): "
            "check the label column and where the new label comes from"
        )
    else:
        detail = (
            f"class {classes[i]!r} holds {_fmt(comp.share[i])} of rows against "
            f"{_fmt(comp.reference_share[i])} in the reference (adjusted p "
            f"{comp.p_adjusted[i]:.1e} <= {alpha}; shift beyond {max_shift} or "
            f"{min_relative:.0%} of the class): possible label flipping; inspect recent "
            "label changes of that class before training"
        )
    return check(
        "screen.label_distribution",
        ok=ok,
        metrics=metrics,
        threshold={
            "max_label_shift": max_shift,
            "min_relative_shift": min_relative,
            "min_share_shift": floor,
            "alpha": alpha,
        },
        detail=detail,
    )


# --- screen.missingness -----------------------------------------------------------------------


def check_missingness(
    data: pd.DataFrame | Counts,
    profile: Mapping[str, Any],
    *,
    max_shift: float,
    alpha: float,
    min_relative: float,
    floor: float,
) -> GateResult:
    """`screen.missingness`: missing cells per input column, over all rows and within each
    class, vs the reference (two-sided: gaps appearing, or gaps filled in)."""
    threshold = {
        "max_missing_shift": max_shift,
        "min_relative_shift": min_relative,
        "min_share_shift": floor,
        "alpha": alpha,
    }
    cond = profile.get("conditional")
    if not cond:
        return _version_gate("screen.missingness", profile, threshold)
    counts = as_counts(data, profile)
    classes = counts.classes
    ref_class = class_totals(cond)
    labels: list[tuple[str, str]] = []
    x: list[np.ndarray] = []
    n: list[np.ndarray] = []
    x0: list[np.ndarray] = []
    n0: list[np.ndarray] = []
    numeric, categorical = profile_inputs(profile)
    for col in [*numeric, *categorical]:
        if col in cond["numeric"]:
            miss = counts.numeric(col)["missing"]
            ref_miss = np.asarray(cond["numeric"][col]["missing"], dtype=np.float64)
        else:
            miss = counts.categorical(col)["missing"]
            ref_miss = np.asarray(cond["categorical"][col]["missing"], dtype=np.float64)
        x += [np.array([miss.sum()]), miss]
        n += [np.array([counts.class_counts.sum()]), counts.class_counts]
        x0 += [np.array([ref_miss.sum()]), ref_miss]
        n0 += [np.array([ref_class.sum()]), ref_class]
        labels += [(col, "all rows"), *((col, f"class {k!r}") for k in classes)]
    comp = compare_counts(
        np.concatenate(x) if x else [],
        np.concatenate(n) if n else [],
        np.concatenate(x0) if x0 else [],
        np.concatenate(n0) if n0 else [],
        alpha=alpha,
        floor=floor,
        min_shift=max_shift,
        min_relative=min_relative,
    )
    i = comp.worst()
    ok = not comp.flagged.any()
    col, where = labels[i] if i >= 0 else ("", "")
    return check(
        "screen.missingness",
        ok=ok,
        metrics={"column": col, "rows_of": where, **_common(comp, i), "columns": len(labels)},
        threshold=threshold,
        detail=""
        if ok
        else f"{col!r} is missing in {_fmt(comp.share[i])} of {where} against "
        f"{_fmt(comp.reference_share[i])} in the reference (adjusted p "
        f"{comp.p_adjusted[i]:.1e} <= {alpha}): gaps tied to a class teach the model "
        "that a gap means that class; find where the values were lost",
    )


# --- screen.category_shares ---------------------------------------------------------------


def _reference_categories(profile: Mapping[str, Any], col: str) -> dict[str, float]:
    """Reference rows per category (counts of version 4, else shares x rows)."""
    cond = profile.get("conditional")
    if cond and col in cond["categorical"]:
        return {c: float(sum(v)) for c, v in cond["categorical"][col]["counts"].items()}
    rows = profile["rows"]
    return {c: float(round(s * rows)) for c, s in profile["categorical"][col]["shares"].items()}


def check_category_shares(
    data: pd.DataFrame | Counts,
    profile: Mapping[str, Any],
    *,
    max_shift: float,
    alpha: float,
    min_relative: float,
    floor: float,
) -> GateResult:
    """`screen.category_shares`: rows per category of each categorical input vs the
    reference (two-sided), and rows at categories it never saw (one-sided)."""
    counts = as_counts(data, profile)
    _, categorical = profile_inputs(profile)
    n, n0 = counts.rows, int(profile["rows"])
    parts: list[Comparison] = []
    names: list[tuple[str, str]] = []
    kw: dict[str, Any] = {
        "alpha": alpha,
        "floor": floor,
        "min_shift": max_shift,
        "min_relative": min_relative,
    }
    for col in categorical:
        ref = _reference_categories(profile, col)
        cats = sorted(ref)
        codes, missing = counts.codes(col, cats)
        x = np.bincount(codes[codes >= 0], minlength=len(cats))
        unseen = int(((codes < 0) & ~missing).sum())
        parts.append(compare_counts(x, n, [ref[c] for c in cats], n0, **kw))
        singletons = sum(1 for v in ref.values() if v == 1)  # Good-Turing: unseen mass
        parts.append(compare_counts(unseen, n, singletons, n0, alternative="greater", **kw))
        names += [(col, f"category {c!r}") for c in cats] + [(col, "unseen categories")]
    comp = concat(parts, alpha=alpha)
    i = comp.worst()
    ok = not comp.flagged.any()
    col, what = names[i] if i >= 0 else ("", "")
    return check(
        "screen.category_shares",
        ok=ok,
        metrics={"column": col, "category": what, **_common(comp, i), "columns": len(categorical)},
        threshold={
            "max_category_shift": max_shift,
            "min_relative_shift": min_relative,
            "min_share_shift": floor,
            "alpha": alpha,
        },
        detail=""
        if ok
        else f"{what} of {col!r} holds {_fmt(comp.share[i])} of rows against "
        f"{_fmt(comp.reference_share[i])} in the reference (adjusted p "
        f"{comp.p_adjusted[i]:.1e} <= {alpha}): the mix of the data moved; find which "
        "source or filter changed before training on it",
    )


# --- screen.duplicates ------------------------------------------------------------------------


def check_duplicates(
    frame: pd.DataFrame, profile: Mapping[str, Any], *, max_rate: float, alpha: float
) -> GateResult:
    """`screen.duplicates`: exact repeats (content columns) beyond the reference's own
    repeat rate, by at least `max_rate` of the rows and significantly."""
    rate = duplicate_rate(frame)
    n, n0 = len(frame), int(profile["rows"])
    ref_rate = float(profile.get("duplicate_rate", 0.0))
    comp = compare_counts(
        round(rate * n),
        n,
        round(ref_rate * n0),
        n0,
        alpha=alpha,
        floor=max_rate,
        min_shift=max_rate,
        min_relative=float("inf"),
        alternative="greater",
    )
    ok = not comp.flagged.any()
    return check(
        "screen.duplicates",
        ok=ok,
        metrics={
            "duplicate_rows": round(rate * n),
            "rows": n,
            "duplicate_rate": rate,
            "reference_rate": ref_rate,
            "excess": rate - ref_rate,
            "p_adjusted": float(comp.p_adjusted[0]),
        },
        threshold={"max_duplicate_rate": max_rate, "alpha": alpha},
        detail=""
        if ok
        else f"{_fmt(rate)} of rows repeat an earlier row against {_fmt(ref_rate)} in the "
        f"reference (excess over {max_rate}, adjusted p {comp.p_adjusted[0]:.1e}): possible "
        "duplicate flooding; deduplicate the source or find where rows repeat",
    )


# --- screen.backdoor ------------------------------------------------------------------------


def _excess(
    c: Comparison, group_rows: np.ndarray, rows: int, *, floor: float, min_relative: float
) -> Comparison:
    """Backdoor effect: the excess rows (over what the reference share predicts for the
    compared rows) as a share of ALL rows, and the relative excess of the share."""
    excess = (c.x - c.n * c.reference_share) / max(rows, 1)
    with np.errstate(all="ignore"):
        rel = np.where(c.reference_share > 0, c.share / c.reference_share - 1, np.inf)
    mat = (excess >= floor) & (rel >= min_relative) & (group_rows > 0)
    return replace(c, material=mat, flagged=c.significant & mat)


def check_backdoor(
    data: pd.DataFrame | Counts,
    profile: Mapping[str, Any],
    *,
    max_score: float,
    alpha: float,
    min_relative: float,
) -> GateResult:
    """`screen.backdoor`: label-pure clusters at a value (see the module docstring).

    Score of the reported cluster: its excess rows over what the reference predicts, as
    a share of all rows (a trigger stamped on 2% of rows scores about 0.02)."""
    threshold = {
        "max_backdoor_score": max_score,
        "min_relative_shift": min_relative,
        "alpha": alpha,
    }
    cond = profile.get("conditional")
    if not cond:
        return _version_gate("screen.backdoor", profile, threshold)
    counts = as_counts(data, profile)
    n, k = counts.rows, len(counts.classes)
    n0 = float(profile["rows"])
    classes = counts.classes
    parts: list[Comparison] = []
    names: list[tuple[str, str, str]] = []

    def add(x: Any, nn: Any, x0: Any, nn0: Any, group: Any, what: list[tuple[str, str, str]]):
        c = compare_counts(
            x, nn, x0, nn0, alpha=alpha, floor=0, min_shift=0, min_relative=0, alternative="greater"
        )
        parts.append(_excess(c, np.asarray(group), n, floor=max_score, min_relative=min_relative))
        names.extend(what)

    for col, st in cond["numeric"].items():
        if not st["edges"]:
            continue
        g = counts.numeric(col)
        ref = np.asarray(st["counts"], dtype=np.float64)
        b = len(ref)
        bins = [f"bin {i + 1} of {b}" for i in range(b)]
        cells = [(col, bins[i], classes[j]) for i in range(b) for j in range(k)]
        add(g["bins"].ravel(), n, ref.ravel(), n0, np.ones(b * k), cells)
        add(g["bins"].sum(1), n, ref.sum(1), n0, np.ones(b), [(col, s, "") for s in bins])
        for tail, edge in (("low", ref[0]), ("high", ref[-1])):
            part = f"{'below' if tail == 'low' else 'above'} the reference range"
            what = [(col, part, c) for c in classes]
            add(g[tail], n, np.zeros(k), n0, np.ones(k), what)
            add(g[tail], g[tail].sum(), edge, edge.sum(), np.full(k, g[tail].sum()), what)
        top, finite = g["top"]
        ref_finite = n0 - float(sum(st["missing"]))
        top_what = [(col, "most repeated value", "")]
        add(top, finite, st.get("top_count", 0), ref_finite, [1], top_what)
    for col, st in cond["categorical"].items():
        g = counts.categorical(col)
        cats = sorted(st["counts"])
        ref = np.asarray([st["counts"][c] for c in cats], dtype=np.float64).reshape(-1, k)
        cells = [(col, f"category {c!r}", classes[j]) for c in cats for j in range(k)]
        add(g["counts"].ravel(), n, ref.ravel(), n0, np.ones(ref.size), cells)
        what = [(col, "unseen categories", c) for c in classes]
        # Good-Turing: the reference's singleton categories estimate the rows a clean
        # sample holds at categories the reference never saw (per class: its singletons)
        singles = ref[ref.sum(1) == 1].sum(0) if len(ref) else np.zeros(k)
        add(g["unseen"], n, singles, n0, np.ones(k), what)
    comp = concat(parts, alpha=alpha)
    excess = np.concatenate([(p.x - p.n * p.reference_share) / max(n, 1) for p in parts])
    i = comp.worst()
    ok = not comp.flagged.any()
    col, part, label = names[i] if i >= 0 else ("", "", "")
    metrics = {
        "score": float(excess[i]) if i >= 0 else 0.0,
        "feature": col,
        "part": part,
        "label": label,
        **_common(comp, i),
    }
    with_label = f" with label {label!r}" if label else ""
    return check(
        "screen.backdoor",
        ok=ok,
        metrics=metrics,
        threshold=threshold,
        detail=""
        if ok
        else f"{_fmt(metrics['score'])} more rows than the reference predicts at {part} of "
        f"{col!r}{with_label} (adjusted p {comp.p_adjusted[i]:.1e} <= {alpha}; score over "
        f"{max_score}): possible backdoor trigger; inspect those rows and where they came from",
    )


__all__ = [
    "Counts",
    "check_backdoor",
    "check_category_shares",
    "check_duplicates",
    "check_label_distribution",
    "check_missingness",
    "fisher_pvalues",
    "holm_adjusted",
]
