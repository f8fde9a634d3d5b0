"""The data's side of the relative screens: its counts, made the way the reference's were.

`Counts` holds what `tasks.checks.relative` compares with the signed reference profile
(rows per class, per numeric bin and class, per category and class, missing cells per
class, the most repeated value's rows), each computed once and only when a gate asks
for it. It is kept apart from the gates so that a drift monitor can count fresh data
the same way and compare it with the same machinery (`tasks.checks.compare`).

Labels and categorical inputs are converted to profile keys once per column (`keys`,
a `tasks.checks.keys.FrameKeys`), and the neighbour statistics of the screen reuse
that conversion (`tasks.checks.poisoning.neighbour_stats(..., keys=counts.keys)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.conditional import (
    categorical_groups,
    numeric_groups,
    top_count,
)
from tasks.checks.keys import FrameKeys, Keyed
from tasks.checks.poisoning import feature_values

TOP_VALUE_ROWS = 200_000  # the repeated-value count runs on a random sample above this


class Counts:
    """The data's counts the relative screens compare, each computed once, on demand."""

    def __init__(self, frame: pd.DataFrame, profile: Mapping[str, Any], *, seed: int = 0):
        self.frame, self.profile, self.seed = frame, profile, seed
        self.rows = len(frame)
        self.keys = FrameKeys(frame)

    @property
    def label_keyed(self) -> Keyed:
        """Each row's label key, as a code into the distinct keys (converted once)."""
        return self.keys.labels(self.profile["target"])

    @cached_property
    def labels(self) -> pd.Series:
        """Label keys of the rows (as `tasks.checks.keys.label_keys`)."""
        k = self.label_keyed
        target = self.frame[self.profile["target"]]
        return pd.Series(k.keys[k.codes], index=target.index, name=target.name).astype(str)

    @cached_property
    def label_counts(self) -> dict[str, int]:
        """Rows per label key, most frequent first."""
        k = self.label_keyed
        n = np.bincount(k.codes, minlength=len(k.keys))
        return {str(k.keys[i]): int(n[i]) for i in np.argsort(-n, kind="stable") if n[i]}

    @property
    def conditional(self) -> Mapping[str, Any]:
        """The profile's counts (version 4); a KeyError on an older one fails closed."""
        return self.profile.get("conditional", {})

    @cached_property
    def classes(self) -> list[str]:
        cond = self.conditional
        return list(cond["classes"]) if cond else sorted(self.profile["label_shares"])

    @cached_property
    def cls(self) -> np.ndarray:
        """Each row's position in `classes`; -1 for a class the reference lacks."""
        return self.label_keyed.positions(self.classes)

    @cached_property
    def class_counts(self) -> np.ndarray:
        c = self.cls
        return np.bincount(c[c >= 0], minlength=len(self.classes)).astype(np.float64)

    @cached_property
    def top_rows(self) -> np.ndarray | None:
        """The rows (one random draw without replacement, shared by every column) the
        repeated-value count runs on above ``TOP_VALUE_ROWS`` rows."""
        if self.rows <= TOP_VALUE_ROWS:
            return None
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(self.rows, TOP_VALUE_ROWS, replace=False))

    def numeric(self, col: str) -> dict[str, np.ndarray]:
        return self._cached(("num", col), lambda: self._numeric(col))

    def _numeric(self, col: str) -> dict[str, np.ndarray]:
        edges = self.conditional["numeric"][col]["edges"]
        values = feature_values(self.frame, col)
        groups = numeric_groups(edges, values, self.cls, len(self.classes))
        sample = values if self.top_rows is None else values[self.top_rows]
        groups["top"] = np.array([top_count(sample), np.isfinite(sample).sum()])
        return groups

    def codes(self, col: str, categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(code in `categories` or -1, missing mask) of a categorical input."""
        return self.keys.codes(col, categories), self.keys.missing(col)

    def categorical(self, col: str) -> dict[str, np.ndarray]:
        cats = sorted(self.conditional["categorical"][col]["counts"])
        codes, missing = self.codes(col, cats)
        return self._cached(
            ("cat", col),
            lambda: categorical_groups(codes, missing, self.cls, len(cats), len(self.classes)),
        )

    def _cached(self, key: tuple[str, ...], make: Any) -> Any:
        store = self.__dict__.setdefault("_store", {})
        if key not in store:
            store[key] = make()
        return store[key]


def as_counts(data: pd.DataFrame | Counts, profile: Mapping[str, Any]) -> Counts:
    return data if isinstance(data, Counts) else Counts(data, profile)
