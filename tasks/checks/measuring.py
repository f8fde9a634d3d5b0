"""`init`'s measurement of each estimator on the trusted table, and the settings
chosen from it.

**Measuring** (`measure`, for `secure-pipeline init`): per estimator, stratified
5-fold CV (seeded) on up to `MEASURE_ROWS` rows sampled from the trusted table, each
fold's model fitted on a stratified half of its training rows (`TRAIN_SHARE`: as many
as a run on half the table trains on, so the settings hold for smaller runs): clean
accuracy, the trivial baselines, skill (`tasks.checks.baselines`), robust accuracy
under the default attack on up to ``attack_samples`` rows of each fold (as the gate
attacks; folds attacked within `ATTACK_SECONDS`) and, given the table's reference
profile, the backdoor probe's score on each clean fold (within `PROBE_SECONDS`), with
the reference model a run's probe gets (the estimator trained on the whole table).

**Choosing** (`choose`): settings a clean resample passes at least 99% of the time:
mean minus (skill) or plus (drop, probe) t standard deviations (Student's t,
one-sided 99%, folds - 1 degrees of freedom: 3.75 for 5 folds, which estimate a spread
roughly), the deviation being the larger of the folds' spread and the binomial one.
Beyond the safe range (`tasks.common.catalog.SAFE_RANGES`): skill and the probe limit
are clipped, with a note; a robustness drop the trusted table itself needs is written
as measured, under a waiver init writes (`Measured.waivers`), so each release of that
estimator needs an approver.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.baselines import skill, trivial_baselines

MEASURE_ROWS = 20_000  # init measures on a seeded sample of at most this many rows
MEASURE_FOLDS = 5
# Each fold's model is fitted on this share of its training rows (stratified, seeded):
# as many rows as a run on half the trusted table trains on, so that the settings
# chosen hold for runs on smaller tables too (a model on fewer rows is less skilled,
# more fragile and memorises more).
TRAIN_SHARE = 0.5
ATTACK_SECONDS = 20.0  # per estimator: folds are attacked while within this budget
# Standard deviations between the measured mean and the chosen setting: Student's t,
# one-sided 99%, for the folds' degrees of freedom (3.75 for 5 folds: 5 folds estimate a
# spread roughly; 3 normal sd blocked 1 of 20 clean resamples of mpg, 234 rows).
PASS_RATE = 0.99


def spread_factor(folds: int) -> float:
    from scipy.stats import t

    return float(t.ppf(PASS_RATE, max(folds - 1, 1)))


MIN_DROP_SETTING = 0.05  # a chosen max_robust_drop is never tighter than this
PROBE_SECONDS = 15.0  # per estimator: folds are probed while within this budget


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
    probe: Spread | None = None  # the backdoor probe's score on clean folds
    probe_skipped: str | None = None  # why the probe was not measured (the rest was)
    skipped: str | None = None  # why robustness was not measured
    partial: str | None = None  # why fewer folds were attacked than measured
    seconds: float = 0.0
    error: str | None = None  # the estimator could not be measured at all
    chosen: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    waivers: dict[str, str] = field(default_factory=dict)  # gate -> why init wrote one

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
        probe = f", backdoor probe {self.probe.text()}" if self.probe is not None else ""
        if self.probe_skipped:
            probe = f", backdoor probe not measured ({self.probe_skipped})"
        return (
            f"accuracy {self.accuracy.text()}, majority {self.majority:.3f}, stratified "
            f"{self.stratified:.3f}, skill {self.skill.text()}{robust}{probe}"
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
    reference: Any = None,
    reference_models: Mapping[str, Any] | None = None,
) -> list[Measured]:
    """Cross-validate each estimator (name -> its parameters) on `frame`.

    Args:
        frame: The trusted table (PII already dropped); its inputs are `dataset`'s.
        dataset: A `DatasetConfig` (or one built with ``model_construct``) naming the
            target, the inputs and their missing policies.
        evaluate: The `EvaluateConfig` whose attack and backdoor probe are measured.
        reference: The signed reference profile of the table (a dict), as a run gives
            the probe; None: the probe is not measured.
        reference_models: Per estimator, the `ReferenceModel` a run's probe would get
            (`tasks.checks.reference_models`); None: none.
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
        probe: list[float] = []
        probe_seconds = 0.0
        probe_skipped = ""
        attack, attack_n, skipped, partial = None, 0, None, None
        attack_seconds = 0.0
        try:
            if smallest < 2:
                raise ValueError("a class has fewer than 2 rows: no stratified folds")
            config = ModelConfig.model_validate(
                {"name": "m", "estimator": name, "params": {name: params}, "seed": seed}
            )
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            halves = np.random.default_rng(seed)
            for i, (folds_tr, te) in enumerate(splitter.split(x, y)):
                tr = _fit_rows(folds_tr, y, halves)
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
                if reference is not None and not probe_skipped and probe_seconds < PROBE_SECONDS:
                    probe_started = time.perf_counter()
                    scored = _probe_fold(
                        pipe,
                        x.iloc[tr],
                        y.iloc[tr],
                        x.iloc[te],
                        evaluate=evaluate,
                        seed=seed,
                        reference=reference,
                        reference_model=(reference_models or {}).get(name),
                    )
                    if isinstance(scored, str):
                        probe_skipped = scored  # the rest of the measurement stands
                    else:
                        probe.append(scored)
                    probe_seconds += time.perf_counter() - probe_started
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
                probe=_spread(probe) if probe else None,
                probe_skipped=probe_skipped or None,
                attack=attack,
                attack_rows=attack_n,
                skipped=skipped,
                partial=partial,
                seconds=time.perf_counter() - started,
            )
        )
    return out


def _fit_rows(rows: np.ndarray, y: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """A stratified ``TRAIN_SHARE`` of a fold's training `rows` (at least two rows of
    each class, all of a class with fewer), sorted."""
    labels = y.iloc[rows].to_numpy()
    keep = []
    for c in pd.unique(labels):
        of_c = rows[labels == c]
        take = min(len(of_c), max(2, round(TRAIN_SHARE * len(of_c))))
        keep.append(rng.choice(of_c, take, replace=False))
    return np.sort(np.concatenate(keep))


def _probe_fold(
    pipe: Any,
    x_train: pd.DataFrame,
    y_train: pd.Series,
    x_test: pd.DataFrame,
    *,
    evaluate: Any,
    seed: int,
    reference: Any,
    reference_model: Any,
) -> float | str:
    """The backdoor probe's score on one clean fold, or why it has none (the probe
    raised, or refused its reference model): init then keeps the default limit and
    says why, and the fold's other measurements stand."""
    from threadpoolctl import threadpool_limits

    from tasks.checks.backdoor_probe import check_backdoor_probe

    try:
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            scored = check_backdoor_probe(
                pipeline=pipe,
                x_train=x_train,
                y_train=y_train,
                x_test=x_test,
                max_flip=evaluate.max_backdoor_flip,
                samples=evaluate.backdoor_samples,
                seed=seed,
                reference=reference,
                reference_model=reference_model,
            )
    except Exception as exc:  # noqa: BLE001 - reported in the config's comment
        return f"{type(exc).__name__}: {exc}"[:200]
    score = scored.metrics.get("score")
    return float(score) if isinstance(score, int | float) else scored.detail[:200]


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
        m.chosen["max_robust_drop"] = min(chosen, 1.0)
        if chosen > ceiling:
            # The table, not a setting, makes the model this fragile (measured on the
            # trusted rows): the setting stays honest and a waiver says so, which makes
            # every release of this estimator need an approver's signature.
            m.waivers["evaluate.adversarial"] = (
                f"{m.estimator} loses {m.drop.mean:.2f} ± {m.drop.sd:.2f} (max_robust_drop "
                f"{chosen:.2f})"
            )
            m.notes.append(
                f"robustness drop {m.drop.text()}: mean + {factor:.2f} sd = {want:.3f} exceeds "
                f"the safe maximum {ceiling}: max_robust_drop = {chosen:.2f} under a waiver "
                "(review it: every release of this estimator then needs an approver)"
            )
    if m.probe is not None:
        _choose_probe(m, m.probe, factor, bounds["evaluate.max_backdoor_flip"].at_most or 1.0)
    return m


def _choose_probe(m: Measured, probe: Spread, factor: float, ceiling: float) -> None:
    """``max_backdoor_flip``: the default, raised only where the clean folds' probe
    score needs more (a real effect the reference cannot tell from a trigger, e.g. a
    linear model's smooth response to one input), never beyond the safe maximum: a
    probe that must pass a clean flip of 0.5 could not block a trigger."""
    from tasks.checks.backdoor_probe import MIN_BLOCK_ROWS
    from tasks.common.sections import EvaluateConfig

    default = EvaluateConfig().max_backdoor_flip
    p = min(max(probe.mean, 0.0), 1.0)
    binomial = math.sqrt(p * (1 - p) / MIN_BLOCK_ROWS)  # the probe's fewest rows per value
    want = probe.mean + factor * max(probe.sd, binomial)
    if want <= default:
        return
    chosen = math.ceil(want * 100) / 100
    m.chosen["max_backdoor_flip"] = min(chosen, ceiling)
    if chosen > ceiling:
        m.notes.append(
            f"backdoor probe {probe.text()} on clean folds: mean + {factor:.2f} sd = "
            f"{want:.3f} exceeds the safe maximum {ceiling}; clean runs of this estimator "
            "will be blocked by evaluate.backdoor_probe at times"
        )
