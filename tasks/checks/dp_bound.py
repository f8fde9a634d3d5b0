"""The statistics of a one-run privacy audit: how large an epsilon must be to explain
the auditor's correct guesses (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with
One (1) Training Run", arXiv:2305.08846, Theorem 3.1 and its (epsilon, delta) form).

Setting: ``m`` canaries, each included in the training data independently with
probability 1/2; from the trained model the auditor guesses "in" or "out" for ``r`` of
them (abstaining on the rest) and ``v`` guesses are right. If the training run is
epsilon-DP, the number of correct guesses is stochastically dominated by
``Binomial(r, q)`` with ``q = e^eps / (1 + e^eps)`` (the accuracy of epsilon-DP
randomised response), whatever the data, the canaries and the guessing rule (as long
as the guesses depend on the trained model and the canaries only, never on the
inclusion bits). Under (epsilon, delta)-DP an extra term bounds what delta can add:
``2 m delta`` times the largest ``P[v - i <= Binomial(r, q) < v] / i`` over
``i = 1..v``.

`p_value` is the probability of ``v`` or more correct guesses under that null
hypothesis; `epsilon_lower_bound` is the largest epsilon the observation rejects at
the given confidence: a mechanism claiming less than it is contradicted by the audit.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

CONFIDENCE = 0.95
_SEARCH_STEPS = 60  # bisection steps: the bound to ~1e-15 of its bracket


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """P[at least `v` of `r` guesses right] if training is (`epsilon`, `delta`)-DP.

    Args:
        m: Canaries, each included with probability 1/2.
        r: Guesses made (abstentions excluded).
        v: Correct guesses.
        epsilon: The epsilon of the null hypothesis (>= 0).
        delta: Its delta (0: pure epsilon-DP).
    """
    _check_counts(m, r, v)
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError("need epsilon >= 0 and 0 <= delta <= 1")
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0
    tail = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= Binomial(r, q) < v] for i = 1..v, each divided by i: its maximum.
    below = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))
    spread = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * spread, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = CONFIDENCE
) -> float:
    """The empirical epsilon: the largest epsilon whose (epsilon, `delta`)-DP hypothesis
    the observation (`v` of `r` guesses right among `m` canaries) rejects at
    `confidence`; 0.0 when even epsilon = 0 is not rejected (e.g. half the guesses
    right). The p-value grows with epsilon, so the bound is found by bisection.
    """
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    alpha = 1.0 - confidence
    if r == 0 or p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    low, high = 0.0, 1.0  # keep p(low) < alpha <= p(high)
    while p_value(m, r, v, high, delta) < alpha:
        if high > 1e3:  # cannot happen for r >= 1 (p -> 1); guards a float corner
            return high
        high *= 2
    for _ in range(_SEARCH_STEPS):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < alpha:
            low = mid
        else:
            high = mid
    return low


def all_correct_bound(r: int, *, confidence: float = CONFIDENCE) -> float:
    """The pure-DP bound when all `r` guesses are right, in closed form:
    ``q^r = 1 - confidence`` gives ``q``, and epsilon = log(q / (1 - q)). The most a
    one-run audit with `r` guesses can ever show (tests check the bisection on it)."""
    q = (1.0 - confidence) ** (1.0 / r)
    return math.log(q / (1.0 - q))
