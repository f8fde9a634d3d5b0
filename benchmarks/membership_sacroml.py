"""`make bench-sacroml`: the gate's low-FPR membership attack against sacroml's LiRA
(AI-SDC's ``sacroml.attacks.likelihood_attack.LIRAAttack``, an implementation we do not
maintain), on the same fitted models and the same scored rows.

    .venv/bin/python -m benchmarks.membership_sacroml --sacroml-python .venv-sacroml/bin/python

Two interpreters. sacroml imports torch and its dependency acro caps pandas below the
project's pin, so it lives in a tool venv of its own (``.venv-sacroml``, from the
hash-pinned requirements-sacroml.lock). This process (the project venv) fits each model
(the helpers of ``benchmarks.membership_crosscheck``: zoo pipelines with the bundled
config's parameters and a memorising forest, bootstrap off; bundled data and the mixed
test table of 2000 rows, split 75/25), samples members and non-members as the gate does,
and runs ours (``tasks.checks.membership_lowfpr.lira_attack``). The tool venv runs this
file with ``--worker DIR`` (it imports numpy and sacroml only).

Budget: ours runs with as many references as sacroml has shadow models (SHADOWS), so
the comparison is of the two implementations, not of two budgets; ours at the gate's
default (4 references) is shown in the last column, not judged. Measured: the budget,
not the implementation, moves the AUC of the memorising forest (ours 0.76 -> 0.84 on
the bundled data from 4 to 20 references, sacroml 0.81 at 20); the TPR at 1% FPR agrees
at both budgets.

What sacroml is given: its ``Target`` wraps the pipeline's classifier step (``model``)
with the pipeline's preprocessed features (``prep`` fitted on the target's training set,
dense float arrays) of the same members (``X_train``) and non-members (``X_test``). The
whole pipeline cannot go in: sacroml reseeds its shadow models with
``set_params(random_state=...)``, which a Pipeline does not take. So sacroml's shadows
refit the classifier only, ours refit the whole pipeline. The classifier crosses by
pickle: scikit-learn, numpy, scipy and diffprivlib are pinned alike in both venvs.
sacroml's settings: ``mode="offline"``, ``n_shadow_models=SHADOWS`` (20: each shadow is
fitted on as many rows as there are members, drawn from members and non-members, so a
row is out of about n/(m+n) of them, 5 on the bundled data), ``fix_variance=True`` (a
global variance, as Carlini et al. advise below 64 shadows, and as ours does).

Columns: AUC ours / sacroml; TPR at 1% FPR, ours with its exact 95% interval and
sacroml's (its own ``TPR@0.01``, interpolated on the ROC curve) with the exact 95%
(Clopper-Pearson) interval of ``round(TPR * m)`` out of ``m`` members; "in CI": ours
inside that interval. That interval covers the sampling of the members only, not the
threshold's: on ``n`` non-members a 1% threshold rests on ``floor(0.01 n)`` of them (one
on the bundled data's 143), so the FPR it really lets through is anywhere in the exact
95% interval of that count (0.02%-3.8% there). Tolerance (exit 1 when a model is outside
it), so chosen to carry both noises:
- TPR: the two bands overlap. A band, computed alike for each attack from its own
  scores: from the lower 95% bound of its TPR at the lowest FPR the threshold can
  really have to the upper 95% bound at the highest (``_band`` of
  ``benchmarks.membership_crosscheck``). A first version judged ours against sacroml's
  band alone (as ``make bench-membership`` does) and failed the chance-level logistic
  regression on the bundled data (ours 0.007, sacroml 0.035, AUC 0.505 both): a gap of
  the few top-scored rows that sacroml's band covers only on its own side;
- AUC: within 1.96 * sqrt(2) Hanley-McNeil standard errors of sacroml's.
Checked to fail: ours on the memorising forest against sacroml on the default forest,
and the reverse, disagree on both counts; on 143 non-members the TPR bands alone are
lenient (chance-level logistic regression against the default forest: bands overlap,
the AUC, 0.505 vs 0.687, fails it).
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SHADOWS = 20  # sacroml's shadow models per case (its default, 100, takes ~5x longer)
GATE_REFERENCES = 4  # the gate's default `evaluate.membership_references`, shown only
SEED = 42


def run_sacroml(case: Path) -> dict[str, Any]:
    """sacroml's offline LiRA on one case directory (tool venv only)."""
    try:
        from sacroml.attacks.likelihood_attack import LIRAAttack
        from sacroml.attacks.target import Target
    except ImportError as exc:  # the project venv: sacroml is not a dependency
        raise SystemExit(
            f"sacroml is not importable ({exc}): run `make bench-sacroml`, which builds "
            ".venv-sacroml from requirements-sacroml.lock"
        ) from exc
    arrays = np.load(case / "data.npz", allow_pickle=False)
    with (case / "model.pkl").open("rb") as fh:
        model = pickle.load(fh)  # noqa: S301 - written by this benchmark's other half
    target = Target(
        model=model,
        dataset_name=case.name,
        X_train=arrays["x_members"],
        y_train=arrays["y_members"],
        X_test=arrays["x_others"],
        y_test=arrays["y_others"],
    )
    attack = LIRAAttack(
        output_dir=str(case / "sacroml"),
        write_report=False,
        n_shadow_models=SHADOWS,
        mode="offline",
        fix_variance=True,
        report_individual=True,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attack.attack(target)
    metrics = attack.attack_metrics[0]
    individual = metrics["individual"]
    return {
        "auc": float(metrics["AUC"]),
        "tpr_at_1pct": float(metrics["TPR@0.01"]),
        "scores": [float(s) for s in individual["score"]],
        "member": [int(m) for m in individual["member"]],
        "seconds": time.perf_counter() - started,
    }


def worker(root: Path) -> int:
    """Tool venv: every case directory under `root` gets a result.json."""
    import logging

    logging.disable(logging.INFO)  # sacroml logs every ten shadow models
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        (case / "result.json").write_text(json.dumps(run_sacroml(case)))
    return 0


def _cases() -> list[tuple[str, Any]]:
    """(name, split) of every compared model, fitted as `make bench-membership` does."""
    import pandas as pd

    from tests.conftest import BUNDLED_CSV
    from tests.mixed_table import mixed_table
    from tests.unit.test_probes import BUNDLED, MIXED, PARAMS, fit_model

    out = []
    for table, frame, dataset in (
        ("bundled", pd.read_csv(BUNDLED_CSV), BUNDLED),
        ("mixed", mixed_table(2000, seed=3), MIXED),
    ):
        forest = fit_model("random_forest", frame, dataset, params={"bootstrap": False})
        out.append((f"memorising forest, {table}", forest))
        out += [(f"{e}, {table}", fit_model(e, frame, dataset)) for e in PARAMS]
    return out


def _sample(split: Any) -> tuple[Any, Any, Any, Any]:
    """The gate's rows: up to SAMPLES members and non-members (seeded)."""
    from benchmarks.membership_crosscheck import SAMPLES

    _, x_train, x_test, y_train, y_test = split
    rng = np.random.default_rng(SEED)
    mi = rng.choice(len(x_train), min(SAMPLES, len(x_train)), replace=False)
    ni = rng.choice(len(x_test), min(SAMPLES, len(x_test)), replace=False)
    return x_train.iloc[mi], y_train.iloc[mi], x_test.iloc[ni], y_test.iloc[ni]


def _write_case(case: Path, pipeline: Any, rows: tuple[Any, Any, Any, Any]) -> None:
    """The classifier step and the preprocessed rows, for the tool venv."""
    xm, ym, xn, yn = rows
    prep, model = pipeline[:-1], pipeline[-1]

    def dense(x: Any) -> np.ndarray:
        out = prep.transform(x)
        return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=np.float64)

    case.mkdir(parents=True)
    labels = np.asarray(model.classes_)
    kind = str if labels.dtype == object else labels.dtype  # npz without pickle
    np.savez(
        case / "data.npz",
        x_members=dense(xm),
        y_members=np.asarray(ym, dtype=kind),
        x_others=dense(xn),
        y_others=np.asarray(yn, dtype=kind),
    )
    with (case / "model.pkl").open("wb") as fh:
        pickle.dump(model, fh)


def _ours(pipeline: Any, rows: tuple[Any, Any, Any, Any], references: int) -> Any:
    """Our attack (the gate's code) on the sampled rows with `references` references."""
    from tasks.checks.membership_lowfpr import lira_attack

    xm, ym, xn, yn = rows
    return lira_attack(
        pipeline=pipeline,
        x_members=xm,
        y_members=ym,
        x_others=xn,
        y_others=yn,
        references=references,
        seed=SEED,
    )


def _compare(name: str, split: Any, sac: dict[str, Any]) -> bool:
    """One table row; True when ours is within the tolerance of sacroml's."""
    from benchmarks.membership_crosscheck import _auc_tolerance, _band, _cp

    pipeline = split[0]
    xm, ym, xn, yn = _sample(split)
    started = time.perf_counter()
    ours = _ours(pipeline, (xm, ym, xn, yn), SHADOWS)  # the same budget as sacroml's
    ours_s = time.perf_counter() - started
    o_rate, o_low, o_high = ours.tpr_at(0.01)
    o_auc = ours.auc()
    gate = _ours(pipeline, (xm, ym, xn, yn), GATE_REFERENCES)
    m, n = len(xm), len(xn)
    labels, scores = np.asarray(sac["member"]), np.asarray(sac["scores"])
    if int(labels.sum()) != m or len(labels) != m + n:  # sacroml drops unseen-class rows
        sys.stdout.write(f"| {name} | sacroml scored other rows: {labels.sum()}/{len(labels)} |\n")
        return False
    s_rate, s_auc = sac["tpr_at_1pct"], sac["auc"]
    s_low, s_high = _cp(round(s_rate * m), m)
    _, band_low, band_high = _band(scores, labels)
    _, our_low, our_high = _band(np.r_[ours.member_scores, ours.non_member_scores], labels)
    in_ci = s_low <= o_rate <= s_high
    overlap = our_low <= band_high and band_low <= our_high
    agree = overlap and abs(o_auc - s_auc) <= _auc_tolerance(s_auc, m, n)
    sys.stdout.write(
        f"| {name} | {m}/{n} | {o_auc:.3f} / {s_auc:.3f} | {o_rate:.3f} [{o_low:.3f}, "
        f"{o_high:.3f}] | {s_rate:.3f} [{s_low:.3f}, {s_high:.3f}] | "
        f"{'yes' if in_ci else 'no'} | [{our_low:.3f}, {our_high:.3f}] / [{band_low:.3f}, "
        f"{band_high:.3f}] | "
        f"{ours_s:.1f} / {sac['seconds']:.1f} | {'yes' if agree else 'NO'} | "
        f"{gate.auc():.3f} / {gate.tpr_at(0.01)[0]:.3f} |\n"
    )
    return agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sacroml-python", help="the tool venv's interpreter")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    if not args.sacroml_python:
        parser.error("--sacroml-python is required (make bench-sacroml sets it)")
    warnings.simplefilter("ignore")  # diffprivlib and small-sample fits
    np.seterr(all="ignore")
    cases = _cases()
    with tempfile.TemporaryDirectory(prefix="bench-sacroml-") as tmp:
        root = Path(tmp)
        for i, (_, split) in enumerate(cases):
            _write_case(root / f"case{i:02d}", split[0], _sample(split))
        done = subprocess.run(  # noqa: S603 - our own interpreter and file
            [args.sacroml_python, str(Path(__file__).resolve()), "--worker", str(root)],
            check=False,
        )
        if done.returncode != 0:
            sys.stderr.write(f"sacroml's side failed (exit {done.returncode})\n")
            return 3
        results = [
            json.loads((root / f"case{i:02d}" / "result.json").read_text())
            for i in range(len(cases))
        ]
    sys.stdout.write(
        f"| model | members/non-members | AUC ours / sacroml | TPR@1%FPR ours [95% CI] | "
        "TPR@1%FPR sacroml [exact 95% CI] | ours in CI | bands ours / sacroml | "
        f"s ours / sacroml | agree | ours at {GATE_REFERENCES} references: AUC / TPR |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    ok = True
    for (name, split), sac in zip(cases, results, strict=True):
        ok &= _compare(name, split, sac)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
