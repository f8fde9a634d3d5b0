"""Labels and categories as profile keys, each column converted once.

The profile stores class labels and categories as strings (`label_key`: 1 and 1.0 are
one class), so every screen must turn the data's values into the same keys. Done per
row, that conversion was the screen's second cost at 1M rows: pandas' Arrow-backed
``str`` columns through ``Series.map`` and ``Index.get_indexer`` took about 1.5 s,
and several gates repeated it on the same column. Here each column is factorised
once (`pd.factorize`: Arrow's dictionary encoding for ``str`` columns, the category
codes of a categorical, a hash table for the rest), only its few distinct values are
keyed, and a row's key is an integer index into them (`Keyed`). `FrameKeys` keeps
those per column of one frame, so the count-based screens and the neighbour search
share them (`tasks.checks.counts.Counts.keys`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MISSING_LABEL = "<missing>"


def label_key(value: object) -> str:
    """JSON key of a class label; 1 and 1.0 are the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value.item() if hasattr(value, "item") else value)


@dataclass(frozen=True)
class Keyed:
    """One column as keys: ``keys[codes[i]]`` is row i's key; code -1: missing value."""

    codes: np.ndarray  # int64, one per row
    keys: np.ndarray  # object array of distinct key strings, sorted

    def positions(self, categories: list[str]) -> np.ndarray:
        """Each row's position in `categories`; -1 for a missing value or another key."""
        pos = pd.Index(np.asarray(categories, dtype=object)).get_indexer(self.keys)
        return np.append(pos, -1).astype(np.int64)[self.codes]


def keyed(values: pd.Series) -> Keyed:
    """`values` as keys: distinct values keyed once (two values with one key, such as
    1 and 1.0, merge); None, NaN and pd.NA are missing (code -1) in every dtype."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    raw = np.asarray([label_key(u) for u in uniques], dtype=object)
    keys, inverse = np.unique(raw, return_inverse=True)
    lookup = np.append(np.asarray(inverse, dtype=np.int64).ravel(), -1)
    return Keyed(codes=lookup[np.asarray(codes, dtype=np.int64)], keys=keys.astype(object))


def label_keyed(labels: pd.Series) -> Keyed:
    """Labels as keys, a missing label being the class `MISSING_LABEL` (no code -1)."""
    k = keyed(labels)
    if not (k.codes < 0).any():
        return k
    keys, inverse = np.unique(np.append(k.keys, MISSING_LABEL).astype(object), return_inverse=True)
    inverse = np.asarray(inverse, dtype=np.int64).ravel()  # the last one is MISSING_LABEL
    return Keyed(codes=inverse[k.codes], keys=keys.astype(object))


def label_keys(labels: pd.Series) -> pd.Series:
    """Labels as profile keys (missing labels are their own class), same index."""
    k = label_keyed(labels)
    return pd.Series(k.keys[k.codes], index=labels.index, name=labels.name).astype(str)


def category_codes(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Position of each value's key in `categories`; -1 for missing or unseen."""
    return keyed(values).positions(categories)


class FrameKeys:
    """The keys of a frame's columns, each column converted once and then shared."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self._keyed: dict[str, Keyed] = {}
        self._codes: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._labels: dict[str, Keyed] = {}

    def keyed(self, col: str) -> Keyed:
        if col not in self._keyed:
            self._keyed[col] = keyed(self.frame[col])
        return self._keyed[col]

    def codes(self, col: str, categories: list[str]) -> np.ndarray:
        """`category_codes` of a column (cached per column and category list)."""
        key = (col, tuple(categories))
        if key not in self._codes:
            self._codes[key] = self.keyed(col).positions(categories)
        return self._codes[key]

    def missing(self, col: str) -> np.ndarray:
        return self.keyed(col).codes < 0

    def labels(self, col: str) -> Keyed:
        """`label_keyed` of a column (cached)."""
        if col not in self._labels:
            self._labels[col] = label_keyed(self.frame[col])
        return self._labels[col]
