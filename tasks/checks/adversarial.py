"""Adversarial robustness (``evaluate.adversarial``): the attack beside the certificate.

The threat model and the attacks are in `tasks.checks.evasion` (FGM and the exact
corner for linear models, `tasks.checks.square_attack` for the rest); the
certificate in `tasks.checks.certified`. An attack gives an *upper* bound on the true
robust accuracy (it may miss adversarial rows), a certificate a *lower* bound (it may
fail to prove a robust row): the gate reports both on the same rows, at
``attack_eps`` (``robust_accuracy``, ``certified_accuracy``) and over a few eps
(``robustness_curve``, ``certified_curve``: ``[[eps, accuracy], ...]``).

Rules: the relative ones on the attack (drop, champion), the optional floors
``min_robust_accuracy`` (attack) and ``min_certified_accuracy`` (certificate). The
gate fails closed when the attack does not model the pipeline, or when a row the
verifier certified was broken by the attack (one of the two is wrong).

The public names of the former single module stay importable from here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tasks.checks.baselines import paired_difference
from tasks.checks.certified import certify
from tasks.checks.champion import NO_CHAMPION, Champion
from tasks.checks.evasion import (
    GRADIENT_ATTACKS,
    LINEAR_TWINS,
    Adversarial,
    NoAttack,
    Ranges,
    adversarial_examples,
    attack_clip,
    attack_rows,
    attacks_to_run,
    choose_attack,
    class_indices,
)
from tasks.checks.square_attack import class_scores
from tasks.common.gates import GateResult, check, failed
from tasks.common.settings import EvaluateConfig
from tasks.models import numeric_layout

__all__ = [
    "ADVERSARIAL",
    "CURVE_FACTORS",
    "GRADIENT_ATTACKS",
    "LINEAR_TWINS",
    "Adversarial",
    "NoAttack",
    "adversarial_examples",
    "attack_rows",
    "attacks_to_run",
    "check_adversarial",
    "choose_attack",
    "class_indices",
    "class_scores",
]

log = logging.getLogger(__name__)

ADVERSARIAL = "evaluate.adversarial"
# The curves' eps, as multiples of attack_eps (1.0 is the gate's own point).
# FORK: each other factor costs one more attack on the same rows.
CURVE_FACTORS = (0.5, 1.0, 2.0)


def check_adversarial(
    *,
    pipeline: Pipeline,
    estimator: str,
    x_train: pd.DataFrame,
    x: pd.DataFrame,
    y: pd.Series,
    config: EvaluateConfig,
    seed: int,
    champion: Champion | None = None,
    curves: bool = True,
    ranges: Ranges | None = None,
) -> GateResult:
    """Robustness of `pipeline` on rows `x` under the configured evasion attack.

    Rules (all must hold): the *drop* (clean accuracy on the attacked rows minus robust
    accuracy on them) is at most ``config.max_robust_drop``; the robust accuracy is no
    worse than the champion's on the same rows under the same attack beyond
    ``config.max_regression`` (paired interval, `tasks.checks.baselines`); and, when
    set, it reaches the fixed floor ``config.min_robust_accuracy``. A champion that
    could not be verified fails the gate (closed); none, or one with other inputs or
    classes, skips the comparison (``champion`` = ``none`` in the metrics, with why).

    Args:
        pipeline: A fitted pipeline of `tasks.models.build_pipeline`.
        estimator: Its estimator name (``model.estimator``): decides what "auto" runs.
        x_train: The training inputs (their range bounds the attack).
        ranges: Their numeric inputs' (min, max), if the train stage made them
            (`training_ranges`); else read from `x_train`.
        x: The attacked rows (`attack_rows`), with labels `y` (any label type).
        config: The ``[evaluate]`` settings (attack, eps, limits, iterations).
        seed: Seeds the black-box attack's random search.
        champion: The current champion (`tasks.checks.champion.load_champion`).
        curves: Certify and draw the curves (False: the attack at attack_eps only, as
            `init`'s measurement needs; ``certified_method`` says so).

    Metrics: attack (what decided), attacks (what ran), eps_std, samples,
    clean_accuracy, robust_accuracy (the attack's: an upper bound),
    certified_accuracy (a lower bound; None without a verifier), certified_method,
    certified_rows, robustness_curve, certified_curve, accuracy_drop,
    max_perturbation_std, champion (and, when compared, champion_robust_accuracy,
    robust_vs_champion, robust_vs_champion_ci).
    """
    eps = config.attack_eps
    champion = champion or NO_CHAMPION
    threshold: dict[str, Any] = {
        "max_robust_drop": config.max_robust_drop,
        "max_regression": config.max_regression,
    }
    if config.min_robust_accuracy is not None:
        threshold["min_robust_accuracy"] = config.min_robust_accuracy
    if config.min_certified_accuracy is not None:
        threshold["min_certified_accuracy"] = config.min_certified_accuracy
    metrics: dict[str, Any] = {
        "attack": choose_attack(config, estimator),
        "eps_std": eps,
        "samples": len(x),
        "champion": champion.label,
    }
    attack_kw = {"x_train": x_train, "x": x, "y": y, "config": config, "seed": seed}
    attack_kw["ranges"] = ranges
    try:
        adv = adversarial_examples(pipeline=pipeline, estimator=estimator, **attack_kw)
    except NoAttack as exc:
        return failed(
            ADVERSARIAL, metrics=metrics, threshold=threshold, detail=f"{exc}; failing closed"
        )
    metrics |= {"attack": adv.attack, "attacks": "+".join(adv.attacks)}
    truth = y.to_numpy()
    clean_ok = np.asarray(pipeline.predict(x)) == truth
    robust_ok = np.asarray(pipeline.predict(adv.x_adv)) == truth
    clean = float(np.mean(clean_ok)) if len(x) else 0.0
    robust = float(np.mean(robust_ok)) if len(x) else 0.0
    # Re-measured on what the pipeline itself sees of the adversarial rows.
    layout = numeric_layout(pipeline)
    pos = layout.positions
    max_pert, categories_changed = 0.0, False
    if len(x) and len(pos):
        prep = pipeline.named_steps["prep"]
        z = np.asarray(prep.transform(x), dtype=np.float64)
        z_seen = np.asarray(prep.transform(adv.x_adv), dtype=np.float64)
        others = np.setdiff1d(np.arange(z.shape[1]), pos)
        categories_changed = bool(np.any(z_seen[:, others] != z[:, others]))
        max_pert = float(np.max(np.abs(z_seen[:, pos] - z[:, pos])))
    metrics |= {
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "accuracy_drop": clean - robust,
        "max_perturbation_std": max_pert,
    }
    if (
        adv.wrapper_mismatch
        or adv.over_budget
        or categories_changed
        or max_pert > eps * (1 + 1e-6) + 1e-9
    ):
        return failed(
            ADVERSARIAL,
            metrics=metrics,
            threshold=threshold,
            detail="the attack does not model this pipeline (prediction mismatch, budget "
            "exceeded or a category changed); failing closed",
        )
    curve_eps = [round(eps * f, 6) for f in CURVE_FACTORS] if curves else [round(eps, 6)]
    cert = certify(
        active=curves,
        pipeline=pipeline,
        x=x,
        y=y,
        eps_values=curve_eps,
        seconds=config.certify_seconds,
        clip=_clip64(attack_clip(pipeline, x, x_train, ranges)) if len(x) else None,
    )
    log.info("certified %d rows in %.3f s (%s)", cert.rows_verified, cert.seconds, cert.method)
    certified = cert.accuracy(round(eps, 6))
    metrics |= {
        "certified_accuracy": certified,
        "certified_method": cert.method,
        "certified_rows": cert.rows_verified,
        "robustness_curve": _robustness_curve(
            pipeline, estimator, curve_eps, robust, attack_kw, truth
        ),
        "certified_curve": [[round(e, 4), _round(cert.accuracy(e))] for e in curve_eps],
    }
    proved = cert.rows.get(round(eps, 6))
    if proved is not None and np.any(proved & ~robust_ok):
        return failed(
            ADVERSARIAL,
            metrics=metrics,
            threshold=threshold,
            detail=f"{int(np.sum(proved & ~robust_ok))} rows certified robust at eps {eps} "
            f"were broken by the {adv.attack} attack: the verifier ({cert.method}) and the "
            "attack disagree on this pipeline; failing closed",
        )
    problems: list[str] = []
    if champion.status == "unverified":
        problems.append(
            f"the champion cannot be compared: {champion.reason}; failing closed: run "
            f"`secure-pipeline verify models:/NAME@champion` and repair or re-release it"
        )
    elif champion.status == "none":
        metrics["champion_reason"] = champion.reason
    elif champion.pipeline is not None and len(x):
        try:
            theirs = adversarial_examples(
                pipeline=champion.pipeline, estimator=champion.estimator or estimator, **attack_kw
            )
        except NoAttack as exc:
            problems.append(f"the champion cannot be attacked the same way ({exc}); failing closed")
        else:
            champ_ok = np.asarray(champion.pipeline.predict(theirs.x_adv)) == truth
            diff, half = paired_difference(robust_ok, champ_ok)
            metrics |= {
                "champion_robust_accuracy": float(np.mean(champ_ok)),
                "robust_vs_champion": diff,
                "robust_vs_champion_ci": round(half, 5),
            }
            if diff + half < -config.max_regression:
                problems.append(
                    f"robust accuracy {robust:.3f} is below the champion's ({champion.label}) "
                    f"{float(np.mean(champ_ok)):.3f} on the same {len(x)} attacked rows by "
                    f"{-diff:.3f} (interval ±{half:.3f}), beyond evaluate.max_regression = "
                    f"{config.max_regression}: find what made the new model more fragile "
                    "(data, parameters) before it replaces the champion"
                )
    if clean - robust > config.max_robust_drop:
        problems.append(
            f"a {adv.attack} attack of {eps} std per numeric input drops accuracy on "
            f"{len(x)} test rows from {clean:.3f} to {robust:.3f} (drop {clean - robust:.3f} > "
            f"evaluate.max_robust_drop = {config.max_robust_drop}): train with more "
            "regularisation or adversarial examples, or review max_robust_drop (its value "
            "measured by `init` is in the config) / attack_eps"
        )
    if config.min_robust_accuracy is not None and robust < config.min_robust_accuracy:
        problems.append(
            f"robust accuracy {robust:.3f} is below the fixed floor evaluate.min_robust_accuracy"
            f" = {config.min_robust_accuracy}: make the model more robust, or remove the floor "
            "and rely on max_robust_drop"
        )
    floor = config.min_certified_accuracy
    if floor is not None and (certified is None or certified < floor):
        measured = "none (no verifier)" if certified is None else f"{certified:.3f}"
        problems.append(
            f"certified accuracy {measured} at eps {eps} ({cert.method}; "
            f"{cert.rows_verified} of {len(x)} rows verified in evaluate.certify_seconds = "
            f"{config.certify_seconds}) is below the fixed floor "
            f"evaluate.min_certified_accuracy = {floor}: make the model more robust, raise "
            "certify_seconds, or remove the floor and rely on the attack's rules"
        )
    ok = not problems
    if problems:
        detail = "; ".join(problems)
    elif not len(pos):
        detail = "no numeric input to perturb: robust accuracy is the clean accuracy"
    else:
        detail = (
            f"accuracy drop {clean - robust:.3f} under attack is within "
            f"{config.max_robust_drop}"
            + (
                ""
                if champion.status != "loaded"
                else "; no robustness regression against the champion"
            )
        )
    return check(ADVERSARIAL, metrics=metrics, threshold=threshold, ok=ok, detail=detail)


def _clip64(clip: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return clip[0].astype(np.float64), clip[1].astype(np.float64)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _robustness_curve(
    pipeline: Pipeline,
    estimator: str,
    eps_values: list[float],
    robust: float,
    attack_kw: dict[str, Any],
    truth: np.ndarray,
) -> list[list[float | None]]:
    """``[[eps, attack accuracy], ...]`` on the same rows: `robust` at attack_eps, one more
    attack per other eps (None where that attack could not model the pipeline)."""
    config: EvaluateConfig = attack_kw["config"]
    x: pd.DataFrame = attack_kw["x"]
    out: list[list[float | None]] = []
    for e in eps_values:
        if e == round(config.attack_eps, 6) or not len(x):
            out.append([round(e, 4), round(robust, 4)])
            continue
        try:
            adv = adversarial_examples(pipeline=pipeline, estimator=estimator, eps=e, **attack_kw)
        except NoAttack:
            out.append([round(e, 4), None])
            continue
        if adv.wrapper_mismatch or adv.over_budget:
            out.append([round(e, 4), None])
            continue
        ok = np.asarray(pipeline.predict(adv.x_adv)) == truth
        out.append([round(e, 4), round(float(np.mean(ok)), 4)])
    return out
