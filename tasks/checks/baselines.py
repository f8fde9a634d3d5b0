"""What a model is compared with: trivial baselines, a paired comparison with another
model on the same rows, and `init`'s cross-validated measurement of each estimator.

**Skill over a trivial baseline** (``evaluate.quality``). Accuracy alone means
nothing across tables: 0.65 is a good model of a 5-class table whose largest class
holds 40% of the rows, and a useless one of a 2-class table whose largest class holds
65%. The gate scores the model against the better of two trivial baselines on the
*same* test rows: always the training majority class, and guessing at random with the
training label shares (expected accuracy ``sum_k p_train(k) * p_test(k)``). Skill is
Cohen-style and scale-free::

    skill = (accuracy - baseline) / (1 - baseline)

0 is no better than the baseline, 1 is perfect, negative is worse than guessing.
Chosen over a lift (``accuracy / baseline``) because a lift is bounded by
``1 / baseline`` (1.5 at a 65% majority, 2.5 at 40%), so no single default means the
same on two tables, while skill is the share of the errors the baseline makes that
the model avoids on every table. Measured (`init`, 5-fold CV; see the README): breast
cancer 0.92-0.95, penguins 0.96-0.98, mpg (class, 7 classes) 0.69-0.80, diamonds
(cut) 0.42-0.61; a label-flipped or constant model is near 0 or below.

**Paired comparison** (the champion; ``evaluate.max_regression``). Both models
predict the same rows, so their difference in accuracy is a paired one: only the
rows where exactly one of them is right count (McNemar). `paired_difference` gives
the difference and the half-width of its one-sided ``REGRESSION_Z`` interval from the
discordant rows; a candidate is a regression only when even the upper end of the
interval lies below ``-max_regression``. With equally good models a clean retrain is
blocked at most about 1 time in 200 (z = 2.576), at any number of test rows; with
more rows the interval narrows, so a smaller real regression is caught.

**Measuring** (`measure`, for `secure-pipeline init`): per estimator, stratified
5-fold CV (seeded) on up to `MEASURE_ROWS` rows sampled from the trusted table: clean
accuracy, the baselines, skill, and robust accuracy under the default attack on up
to ``attack_samples`` rows of each fold (as the gate attacks), skipped with a reason
when the first fold shows it would exceed `ATTACK_SECONDS`. `choose` turns the
measurement into settings a clean resample passes at least 99% of the time: mean
minus (skill) or plus (drop) t standard deviations (Student's t, one-sided 99%, folds
- 1 degrees of freedom: 3.75 for 5 folds, which estimate a spread roughly), the
deviation being the larger of the folds' spread and the binomial one at the run's
number of test rows, clipped to the safe range.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

REGRESSION_Z = 2.576  # one-sided 99.5% normal quantile
MEASURE_ROWS = 20_000  # init measures on a seeded sample of at most this many rows
MEASURE_FOLDS = 5
ATTACK_SECONDS = 20.0  # per estimator: folds are attacked while within this budget
# Standard deviations between the measured mean and the chosen setting: Student's t,
# one-sided 99%, for the folds' degrees of freedom (3.75 for 5 folds: 5 folds estimate a
# spread roughly; 3 normal sd blocked 1 of 20 clean resamples of mpg, 234 rows).
PASS_RATE = 0.99


def spread_factor(folds: int) -> float:
    from scipy.stats import t

    return float(t.ppf(PASS_RATE, max(folds - 1, 1)))


MIN_DROP_SETTING = 0.05  # a chosen max_robust_drop is never tighter than this


def _shares(labels: Any) -> pd.Series:
    """Each label's share. A text or number Series is counted as it is (one Python
    object per row for 1M labels took 0.1 s of the evaluate stage); anything else
    (categories, mixed objects, arrays) as Python objects."""
    if isinstance(labels, pd.Series) and (
        isinstance(labels.dtype, pd.StringDtype)
        or (isinstance(labels.dtype, np.dtype) and labels.dtype.kind in "biuf")
    ):
        return labels.value_counts(normalize=True)
    return pd.Series(np.asarray(labels, dtype=object)).value_counts(normalize=True)


def trivial_baselines(y_train: Any, y_test: Any) -> dict[str, float]:
    """Accuracy on `y_test` of the majority class of `y_train` and the expected
    accuracy of guessing with `y_train`'s label shares; ``baseline`` is the larger."""
    train, test = _shares(y_train), _shares(y_test)
    if train.empty or test.empty:
        return {"majority": 0.0, "stratified": 0.0, "baseline": 0.0}
    majority = float(test.get(train.index[0], 0.0))
    stratified = float(sum(p * float(test.get(k, 0.0)) for k, p in train.items()))
    return {"majority": majority, "stratified": stratified, "baseline": max(majority, stratified)}


def skill(accuracy: float, baseline: float) -> float:
    """Share of the baseline's errors the model avoids (see the module docstring)."""
    return (accuracy - baseline) / (1 - baseline) if baseline < 1 else 0.0


def paired_difference(
    first: np.ndarray, second: np.ndarray, *, z: float = REGRESSION_Z
) -> tuple[float, float]:
    """(mean of first - second, half-width of its interval) for two boolean arrays of
    per-row correctness on the same rows; the variance from the discordant rows."""
    n = len(first)
    if n == 0:
        return 0.0, math.inf
    d = first.astype(np.float64) - second.astype(np.float64)
    mean = float(d.mean())
    var = float(np.mean(d * d)) - mean * mean
    return mean, z * math.sqrt(max(var, 0.0) / n) + 1 / n


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float

    def text(self) -> str:
        return f"{self.mean:.3f} ± {self.sd:.3f}"


@dataclass
class Measured:
    """One estimator's cross-validated measurement on the trusted table."""

    estimator: str
    rows: int  # rows measured (a sample of the table beyond MEASURE_ROWS)
    table_rows: int
    folds: int
    accuracy: Spread
    majority: float
    stratified: float
    skill: Spread
    robust: Spread | None = None
    drop: Spread | None = None
    attack: str | None = None
    attack_rows: int = 0
    skipped: str | None = None  # why robustness was not measured
    partial: str | None = None  # why fewer folds were attacked than measured
    seconds: float = 0.0
    error: str | None = None  # the estimator could not be measured at all
    chosen: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def comment(self) -> str:
        """One line for the config: what init saw."""
        if self.error:
            return f"not measured: {self.error}"
        robust = (
            f", robust {self.robust.text()} (drop {self.drop.text()}, {self.attack}, "
            f"{self.attack_rows} rows/fold{'; ' + self.partial if self.partial else ''})"
            if self.robust is not None and self.drop is not None
            else f", robust not measured ({self.skipped})"
        )
        return (
            f"accuracy {self.accuracy.text()}, majority {self.majority:.3f}, stratified "
            f"{self.stratified:.3f}, skill {self.skill.text()}{robust}"
        )


def _spread(values: list[float]) -> Spread:
    arr = np.asarray(values, dtype=np.float64)
    return Spread(float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)


def measure(
    frame: pd.DataFrame,
    *,
    dataset: Any,
    estimators: dict[str, dict[str, Any]],
    evaluate: Any,
    seed: int = 42,
    rows: int = MEASURE_ROWS,
    folds: int = MEASURE_FOLDS,
) -> list[Measured]:
    """Cross-validate each estimator (name -> its parameters) on `frame`.

    Args:
        frame: The trusted table (PII already dropped); its inputs are `dataset`'s.
        dataset: A `DatasetConfig` (or one built with ``model_construct``) naming the
            target, the inputs and their missing policies.
        evaluate: The `EvaluateConfig` whose attack is measured.
    """
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from tasks.checks.adversarial import attack_rows, check_adversarial
    from tasks.common.settings import ModelConfig
    from tasks.models import build_pipeline

    numeric, categorical = dataset.inputs([c for c in frame.columns if c != dataset.target])
    data = frame.dropna(subset=[dataset.target])
    table_rows = len(data)
    if len(data) > rows:
        pick = np.random.default_rng(seed).choice(len(data), size=rows, replace=False)
        data = data.iloc[np.sort(pick)]
    x, y = data[numeric + categorical].reset_index(drop=True), data[dataset.target]
    y = y.reset_index(drop=True)
    smallest = int(y.value_counts().min()) if len(y) else 0
    k = max(2, min(folds, smallest))
    out: list[Measured] = []
    for name, params in estimators.items():
        started = time.perf_counter()
        acc: list[float] = []
        skl: list[float] = []
        maj: list[float] = []
        strat: list[float] = []
        rob: list[float] = []
        drop: list[float] = []
        attack, attack_n, skipped, partial = None, 0, None, None
        attack_seconds = 0.0
        try:
            if smallest < 2:
                raise ValueError("a class has fewer than 2 rows: no stratified folds")
            config = ModelConfig.model_validate(
                {"name": "m", "estimator": name, "params": {name: params}, "seed": seed}
            )
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            for i, (tr, te) in enumerate(splitter.split(x, y)):
                # One thread: OpenMP on a busy machine measured minutes for seconds' work.
                with warnings.catch_warnings(), threadpool_limits(1):
                    warnings.simplefilter("ignore")
                    pipe = build_pipeline(config, dataset, list(x.columns))
                    pipe.fit(x.iloc[tr], y.iloc[tr])
                    pred = np.asarray(pipe.predict(x.iloc[te]))
                a = float(np.mean(pred == y.iloc[te].to_numpy()))
                base = trivial_baselines(y.iloc[tr], y.iloc[te])
                acc.append(a)
                maj.append(base["majority"])
                strat.append(base["stratified"])
                skl.append(skill(a, base["baseline"]))
                if skipped is not None or attack_seconds >= ATTACK_SECONDS:
                    continue
                fold_started = time.perf_counter()
                x_att, y_att = attack_rows(
                    x.iloc[te], y.iloc[te], samples=evaluate.attack_samples, seed=seed
                )
                result = check_adversarial(
                    pipeline=pipe,
                    estimator=name,
                    x_train=x.iloc[tr],
                    x=x_att,
                    y=y_att,
                    config=evaluate,
                    seed=seed,
                    curves=False,  # init measures the attack only
                )
                if "robust_accuracy" not in result.metrics:
                    skipped = result.detail
                    continue
                attack, attack_n = str(result.metrics["attack"]), len(x_att)
                rob.append(float(result.metrics["robust_accuracy"]))
                drop.append(float(result.metrics["accuracy_drop"]))
                attack_seconds += time.perf_counter() - fold_started
                if attack_seconds / len(rob) * (len(rob) + 1) > ATTACK_SECONDS and i + 1 < k:
                    partial = (
                        f"attacked {len(rob)} of {k} folds: {attack_seconds:.0f} s of init's "
                        f"{ATTACK_SECONDS:.0f} s attack budget"
                    )
                    attack_seconds = ATTACK_SECONDS
        except Exception as exc:  # noqa: BLE001 - one estimator that fails is reported
            out.append(
                Measured(
                    name,
                    len(x),
                    table_rows,
                    k,
                    Spread(0, 0),
                    0.0,
                    0.0,
                    Spread(0, 0),
                    error=f"{type(exc).__name__}: {exc}"[:200],
                )
            )
            continue
        out.append(
            Measured(
                estimator=name,
                rows=len(x),
                table_rows=table_rows,
                folds=k,
                accuracy=_spread(acc),
                majority=float(np.mean(maj)),
                stratified=float(np.mean(strat)),
                skill=_spread(skl),
                robust=_spread(rob) if rob else None,
                drop=_spread(drop) if drop else None,
                attack=attack,
                attack_rows=attack_n,
                skipped=skipped,
                partial=partial,
                seconds=time.perf_counter() - started,
            )
        )
    return out


def choose(
    m: Measured, *, test_rows: int, attack_samples: int = 200, quality_rows: int = 20_000
) -> Measured:
    """Fill ``m.chosen`` with ``min_skill`` and ``max_robust_drop`` a clean resample
    passes at least 99% of the time, clipped to the safe ranges (`SAFE_RANGES`);
    ``m.notes`` says when a clip means the estimator would be blocked more often.

    `test_rows`: the test rows of a run on the whole table (``test_fraction * rows``).
    """
    from tasks.common.catalog import SAFE_RANGES

    if m.error:
        return m
    bounds = {r.setting: r for r in SAFE_RANGES}
    n = max(1, min(test_rows, quality_rows))
    base = max(m.majority, m.stratified)
    acc = min(max(m.accuracy.mean, 0.0), 1.0)
    binomial = math.sqrt(acc * (1 - acc) / n) / max(1 - base, 1e-9)
    sd = max(m.skill.sd, binomial)
    factor = spread_factor(m.folds)
    want = m.skill.mean - factor * sd
    floor = bounds["evaluate.min_skill"].at_least or 0.0
    chosen = math.floor(max(want, floor) * 100) / 100
    m.chosen["min_skill"] = chosen
    if want < floor:
        m.notes.append(
            f"skill {m.skill.text()}: mean - {factor:.2f} sd = {want:.3f} lies below the "
            f"safe minimum {floor}; this estimator is barely better than guessing here"
        )
    if m.drop is not None:
        d = min(max(m.drop.mean, 0.0), 1.0)
        attacked = max(1, min(m.attack_rows or attack_samples, attack_samples, test_rows))
        binomial = math.sqrt(max(d * (1 - d), 0.0) / attacked)
        want = m.drop.mean + factor * max(m.drop.sd, binomial)
        ceiling = bounds["evaluate.max_robust_drop"].at_most or 1.0
        chosen = max(MIN_DROP_SETTING, math.ceil(want * 100) / 100)
        m.chosen["max_robust_drop"] = min(chosen, ceiling)
        if chosen > ceiling:
            m.notes.append(
                f"robustness drop {m.drop.text()}: mean + {factor:.2f} sd = {want:.3f} exceeds "
                f"the safe maximum {ceiling}; set max_robust_drop = {chosen:.2f} with a waiver for "
                "evaluate.adversarial only if the data owner accepts a model this fragile"
            )
    return m
