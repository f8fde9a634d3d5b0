"""Nearest other row of a few query rows, for the near-twin screen (`screen.near_duplicates`).

Above ``base_cap`` rows, `tasks.checks.poisoning.neighbour_stats` looks up the nearest
other row of ``query_cap`` sampled rows among ALL rows (a flood is found wherever its
copies are). A brute search over 1M encoded rows cost about 3 s of matrix products on
two cores. It is only asked one question, though: is the nearest other row within the
twin radius? And the encoding bounds where such a row can be:

* each categorical input is a one-hot block of value ``category_weight`` (w) over the
  reference's categories, all zeros for a missing or unseen one. Two rows that hold
  different known categories of a column are w * sqrt(2) apart in that block; a known
  category against a missing or unseen one, w. Missing and unseen are both all zeros:
  they are the same point of the space, so they share one code (-1).
* Hence two rows whose tuples of categorical codes differ are at least w apart. When
  the twin radius is below w, every row within the radius of a query holds the query's
  very codes: the nearest other row *within its group of equal codes* decides the
  question exactly as the nearest row overall does (when the group has none within the
  radius, neither has the table).

`nearest_other` therefore searches each query's group only (rows grouped by one sort
of an integer key made of the codes; a group is searched in chunks of its rows, so one
huge group, such as a table with one category, stays bounded in memory: ``CHUNK_CELLS``).
The query itself is left out; an exact duplicate is another row, at distance 0. Within
a group the one-hot blocks are equal, so only the numeric columns are compared. When the
radius is not below w (less ``MARGIN``, far above the rounding of a distance), or there
is no categorical input, `nearest_other` keeps the brute search over all rows
(`brute_nearest_other`). Only the count of queries within the radius is used: past the
radius the distance reported may differ (the nearest row of the group rather than of
the table), never which side of the radius it lies on. Both searches compute distances
the same way (|q|^2 - 2 q.m + |m|^2), so they agree up to the rounding of a row lying
exactly on the radius (tests/unit/test_twins_and_keys.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors

CHUNK_CELLS = 4_000_000  # FORK: query x member distances held at once (8 B each)
_KEY_LIMIT = 2**62
# The brute search computes a distance of exactly w as w - 1e-16 or so (one matrix
# product): grouping is used only when the radius is below w by far more than that.
MARGIN = 1e-6


def code_groups(codes: Sequence[np.ndarray], rows: int) -> np.ndarray:
    """One integer group per row: rows share a group iff they share every code."""
    key = np.zeros(rows, dtype=np.int64)
    for c in codes:
        width = int(c.max()) + 2 if len(c) else 1  # codes -1 .. max
        if (int(key.max(initial=0)) + 1) * width >= _KEY_LIMIT:
            key = np.unique(key, return_inverse=True)[1].astype(np.int64).ravel()
        key = key * width + (np.asarray(c, dtype=np.int64) + 1)
    return key


def _without_self(
    idx: np.ndarray, dist: np.ndarray, rows: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop each query row from its own neighbour list (or the farthest one when exact
    duplicates pushed it out of the list), keeping `keep` neighbours."""
    is_self = idx == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), idx.shape[1] - 1)
    keep_mask = np.ones_like(idx, dtype=bool)
    keep_mask[np.arange(len(idx)), drop] = False
    return (
        idx[keep_mask].reshape(len(idx), -1)[:, :keep],
        dist[keep_mask].reshape(len(idx), -1)[:, :keep],
    )


def brute_nearest_other(z: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Distance from each query row of `z` to its nearest other row, among all rows."""
    full = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(z)
    qdist, qidx = full.kneighbors(z[queries])
    _, dist = _without_self(qidx, qdist, queries, 1)
    return dist[:, 0]


def _nearest_in(
    block: np.ndarray, rows: np.ndarray, q: np.ndarray, queries: np.ndarray
) -> np.ndarray:
    """Nearest row of `block` (the encoded `rows` of one group) other than each query
    itself (inf when there is none): squared distances as sklearn's brute search makes
    them (|q|^2 - 2 q.m + |m|^2, one matrix product, clipped at 0 by the caller), in
    chunks of rows so that queries x chunk stays under ``CHUNK_CELLS``. (sklearn's own
    search per group cost 20-30 ms of set-up for each of ~450 groups: 9 s at 1M rows.)"""
    q_norm = np.einsum("ij,ij->i", q, q)
    best = np.full(len(queries), np.inf)
    step = max(CHUNK_CELLS // max(len(queries), 1), 1)
    for start in range(0, len(rows), step):
        m = block[start : start + step]
        d2 = q_norm[:, None] - 2.0 * (q @ m.T) + np.einsum("ij,ij->i", m, m)[None, :]
        d2[rows[None, start : start + step] == queries[:, None]] = np.inf  # the query itself
        best = np.minimum(best, d2.min(axis=1))
    return best


def grouped_nearest_other(z: np.ndarray, queries: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Distance from each query row to its nearest other row of the same group (inf when
    alone in it). Exact for the radius question while the radius is below the smallest
    distance between groups (see the module docstring). `z` may hold only the columns
    in which rows of one group differ (the numeric ones: their one-hot blocks are equal).
    """
    small = groups.min(initial=0) >= 0 and groups.max(initial=0) < 2**16
    order = np.argsort(groups.astype(np.uint16) if small else groups, kind="stable")  # radix
    ordered = groups[order]
    query_groups = groups[queries]
    distinct, which = np.unique(query_groups, return_inverse=True)
    which = np.asarray(which).ravel()
    starts = np.searchsorted(ordered, distinct, side="left")
    ends = np.searchsorted(ordered, distinct, side="right")
    by_group = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[by_group], np.arange(len(distinct) + 1))
    touched = np.concatenate([order[a:b] for a, b in zip(starts, ends, strict=True)])
    grouped = z[touched]  # one gather: each group's rows are then one contiguous block
    offsets = np.concatenate([[0], np.cumsum(ends - starts)])
    out = np.full(len(queries), np.inf)
    for g in range(len(distinct)):  # one pass per group holding a query, not per row
        sel = by_group[bounds[g] : bounds[g + 1]]
        block = slice(offsets[g], offsets[g + 1])
        out[sel] = _nearest_in(grouped[block], touched[block], z[queries[sel]], queries[sel])
    return np.sqrt(np.maximum(out, 0.0))


def nearest_other(
    z: np.ndarray,
    queries: np.ndarray,
    *,
    codes: Sequence[np.ndarray],
    numeric: int,
    radius: float,
    category_weight: float,
) -> np.ndarray:
    """Distance from each query row of `z` to its nearest other row, where it decides
    whether that row is within `radius`: searched within the query's group of equal
    categorical `codes` (over the first `numeric` columns of `z`, the only ones where
    rows of one group differ) when the radius is below `category_weight`, else among
    all rows."""
    if not codes or not radius < category_weight * (1 - MARGIN):
        return brute_nearest_other(z, queries)
    return grouped_nearest_other(z[:, :numeric], queries, code_groups(codes, len(z)))
