"""Gate margins on real tables: how far clean data stays from each gate's threshold,
and which gate (if any) blocks each data attack.

    .venv/bin/python -m benchmarks.gate_margins [--tables penguins,mpg,diamonds]
        [--estimators logistic_regression,random_forest,hist_gradient_boosting]
        [--resamples 20] [--diamonds-resamples 5] [--attacks all] [--out FILE.json]

Per table (`tests.realtables`) the trusted reference is made by `init` itself
(`tasks.onboarding.init_dataset`: inferred roles, suite, profile, config) from the
whole table; the user's only input is the target and the PII flags (`TableSpec`).
Then, without Prefect, MLflow or S3, every frame goes through the stage functions
the run calls (the adapter below): the PII guard, validation (column check and the
Great Expectations suite), the poisoning screens, training (the pure fit) and the
five evaluate gates (the backdoor probe with the reference model `init` trained).
The profile's signature is not checked (`init` just signed it), and neither are the
ingest gates nor the artifact round trip (file-level gates that do not depend on the
data's statistics).

* clean: N seeded 80% subsamples (without replacement) of the table; per gate the
  pass rate and the worst margin (threshold minus measured, signed so that positive
  means passing: ``max - value`` for an upper bound, ``value - min`` for a floor);
* attacks: each attack of `tests.realattacks.attacks_for` on one 80% subsample; per
  gate the verdict and measured value, and whether a gate meant for it
  (`EXPECTED_GATES`) blocked it.

The data gates do not depend on the estimator, so they run once per frame. The class-
conditional missingness attack needs a column whose config imputes gaps: where `init`
set none (mpg, diamonds), its reference adds the spec's ``missing_policy``.

Writes JSON (``--out``) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.realattacks import EXPECTED_GATES, attacks_for  # noqa: E402
from tests.realtables import REAL, SPECS, TableSpec, load, subsample, write_table  # noqa: E402

ESTIMATORS = ("logistic_regression", "random_forest", "hist_gradient_boosting")
SHORT = {"logistic_regression": "LR", "random_forest": "RF", "hist_gradient_boosting": "HGB"}
ATTACK_BASE_SEED = 500  # the subsample every attack is applied to
ATTACK_SEED = 7


# === adapter: the one place that knows the stage functions' signatures ======================
# Other work changes these functions; keep every call to tasks.* here, small and plain.


@dataclass(frozen=True)
class Reference:
    """What `init` wrote for a table, loaded: settings (from the written config), the
    suite and the profile (as dicts)."""

    spec: TableSpec
    settings: Any  # tasks.common.settings.Settings
    suite: dict[str, Any]
    profile: dict[str, Any]
    directory: Path  # where init wrote them (and the reference models)


def build_reference(
    frame: pd.DataFrame, spec: TableSpec, workdir: Path, *, missing: dict[str, str] | None = None
) -> Reference:
    """Run `init` on `frame` (written as CSV in `workdir`) exactly as the command does,
    with a throwaway signing key; `missing`: policies added to the written config (the
    suite is then derived again with them, as `secure-pipeline suite` does)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tasks.common.settings import load_settings
    from tasks.onboarding import init_dataset
    from tasks.refresh import suite_for
    from tasks.trust.signing import Signer

    data = write_table(frame, workdir, spec.name)
    result = init_dataset(
        data,
        target=spec.target,
        name=spec.name.replace("_", "-"),
        pii=dict(spec.pii),
        out_dir=workdir,
        signer=Signer(ec.generate_private_key(ec.SECP256R1())),
        force=True,
    )
    settings = load_settings(result.config, state_dir=workdir / "state")
    suite = json.loads(result.suite.read_text())
    profile = json.loads(result.profile.read_text())
    if missing:
        ds = settings.dataset.model_copy(
            update={"missing": {**settings.dataset.missing, **missing}}
        )
        settings = settings.model_copy(update={"dataset": ds})
        suite = suite_for(ds, frame, notes="init + missing policy")
    return Reference(spec, settings, suite, profile, workdir)


def data_gates(ref: Reference, frame: pd.DataFrame, *, seed: int) -> tuple[list[Any], Any]:
    """The PII guard, validation and screen gates of `frame` (every one, none enforced),
    and the dataset training would get (None when the PII guard blocked)."""
    from tasks.checks.expectations import run_suite
    from tasks.common.context import Dataset
    from tasks.common.gates import run_check, run_check_with
    from tasks.screen import check_and_handle_pii, poisoning_gates
    from tasks.validate import check_columns, check_expectations

    ds = ref.settings.dataset
    pii, handled = run_check_with(
        "screen.pii",
        check_and_handle_pii,
        frame,
        declared=ds.pii,
        target=ds.target,
        key=lambda: b"gate-margins-benchmark-pii-key-0",
    )
    if handled is None:
        return [pii], None
    columns = run_check("validate.columns", check_columns, handled, config=ds)
    try:
        result, error = run_suite(handled, ref.suite, max_rows=ds.max_rows), None
    except Exception as exc:  # noqa: BLE001 - as the stage: a suite that raises fails closed
        result, error = None, type(exc).__name__
    expectations = run_check(
        "validate.expectations",
        check_expectations,
        result,
        expected=len(ref.suite["expectations"]),
        error=error,
    )
    screens = poisoning_gates(handled, ref.profile, limits=ref.settings.screen, seed=seed)
    dataset = Dataset(
        frame=handled,
        uri="memory",
        sha256="0" * 64,
        format="csv",
        integrity="none",
        target=ds.target,
    )
    return [pii, columns, expectations, *screens], dataset


def model_gates(ref: Reference, dataset: Any, estimator: str) -> list[Any]:
    """Fit `estimator` with the config's parameters as the train stage does (its split,
    its fit), then the five evaluate gates, given the reference profile as the run gives
    it (the backdoor probe reads its label counts by value). A fit that raises is a
    failed ``train.fit`` entry (the run would crash there)."""
    from tasks.checks.reference_models import load_reference_model, model_inputs
    from tasks.common.gates import failed
    from tasks.common.settings import ModelConfig
    from tasks.evaluate import evaluate_checks
    from tasks.models import fit_pipeline, resolve_data_norm
    from tasks.train import split

    s = ref.settings
    config = ModelConfig.model_validate({**s.model.model_dump(), "estimator": estimator})
    try:
        x_train, x_test, y_train, y_test = split(dataset, config=config, columns=s.dataset)
        config = resolve_data_norm(config, s.dataset, x_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings: the gates judge the model
            pipeline = fit_pipeline(config, s.dataset, x_train, y_train)
    except Exception as exc:  # noqa: BLE001 - recorded, as the run would stop here
        return [failed("train.fit", metrics={"error": type(exc).__name__}, detail=str(exc)[:200])]
    pred = np.asarray(pipeline.predict(x_test))
    proba = np.asarray(pipeline.predict_proba(x_test))
    return list(
        evaluate_checks(
            s.evaluate,
            pipeline=pipeline,
            estimator=estimator,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            seed=s.model.seed,
            test_pred=pred,
            test_proba=proba,
            reference=ref.profile,  # as the run: the profile the screen stage verified
            reference_model=load_reference_model(
                ref.profile,
                directory=ref.directory,
                estimator=estimator,
                params=config.estimator_params,
                inputs=model_inputs(s.dataset, list(x_train.columns)),
            ),
        )
    )


# The measured metric of each gate; its threshold is the gate's one max_*/min_* bound.
# A gate not listed (a new one) is read by the fallback names.
MEASURED = {
    "validate.expectations": "failed",
    "screen.label_distribution": "max_shift",
    "screen.label_noise": "excess",
    "screen.duplicates": "duplicate_rate",
    "screen.near_duplicates": "excess",
    "screen.outliers": "excess",
    "screen.backdoor": "score",
    "evaluate.quality": "skill",  # against min_skill (the first bound)
    "evaluate.adversarial": "accuracy_drop",  # against max_robust_drop
    "evaluate.membership_inference": "advantage_lower_95",  # what the gate compares
    "evaluate.backdoor_probe": "score",
    "evaluate.extraction_risk": "fidelity",
}
FALLBACK = ("score", "excess", "shift", "rate", "max_shift", "value")


# === measurement ===========================================================================


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def reading(result: Any) -> dict[str, Any]:
    """A gate result as the benchmark records it: verdict, measured value, threshold and
    margin (positive: passing side), plus the metrics that say where (feature, class)."""
    metrics, threshold = dict(result.metrics), dict(result.threshold)
    key = MEASURED.get(result.name) or next((k for k in FALLBACK if k in metrics), None)
    measured = _number(metrics.get(key)) if key else None
    bounds = [(k, _number(v)) for k, v in threshold.items() if k.startswith(("max_", "min_"))]
    name, limit = bounds[0] if bounds else ("", None)
    margin = None
    if measured is not None and limit is not None:
        margin = limit - measured if name.startswith("max_") else measured - limit
    where = {k: metrics[k] for k in ("feature", "tail", "kind", "class") if metrics.get(k)}
    return {
        "passed": bool(result.passed),
        "metric": key,
        "measured": measured,
        "bound": name or None,
        "threshold": limit,
        "margin": margin,
        **({"where": where} if where else {}),
        **({} if result.passed else {"detail": result.detail[:300]}),
    }


def run_frame(
    ref: Reference, frame: pd.DataFrame, estimators: Iterable[str], *, seed: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every gate's reading for one frame: {"data": {gate: reading}, estimator: {...}}."""
    gates, dataset = data_gates(ref, frame, seed=seed)
    out: dict[str, dict[str, dict[str, Any]]] = {"data": {g.name: reading(g) for g in gates}}
    for est in estimators:
        out[est] = {g.name: reading(g) for g in model_gates(ref, dataset, est)} if dataset else {}
    return out


def summarise_clean(runs: list[dict[str, Any]], estimators: Iterable[str]) -> dict[str, Any]:
    """Per estimator and gate: pass rate, worst margin and the failing resample seeds."""
    out: dict[str, Any] = {}
    for est in estimators:
        per_gate: dict[str, Any] = {}
        for run in runs:
            for gate, r in {**run["gates"]["data"], **run["gates"][est]}.items():
                g = per_gate.setdefault(
                    gate, {"passed": 0, "runs": 0, "worst_margin": None, "failed_seeds": []}
                )
                g["runs"] += 1
                g["passed"] += r["passed"]
                if not r["passed"]:
                    g["failed_seeds"].append(run["seed"])
                    g.setdefault("details", [])
                    if r.get("detail") not in g["details"] and len(g["details"]) < 3:
                        g["details"].append(r.get("detail"))  # what failed, for the report
                if r["margin"] is not None and (
                    g["worst_margin"] is None or r["margin"] < g["worst_margin"]
                ):
                    g["worst_margin"] = r["margin"]
                    g["worst_measured"] = r["measured"]
                    g["threshold"] = r["threshold"]
        for g in per_gate.values():
            g["pass_rate"] = g["passed"] / g["runs"]
        out[est] = per_gate
    return out


def attack_verdict(
    name: str, gates: dict[str, dict[str, Any]], estimators: Iterable[str]
) -> dict[str, Any]:
    """Which gates blocked the attack (data gates once, model gates per estimator) and
    whether one meant for it did, per estimator."""
    expected = EXPECTED_GATES.get(name, ())
    data_blocks = [g for g, r in gates["data"].items() if not r["passed"]]
    out: dict[str, Any] = {"expected": list(expected), "data_blocked_by": data_blocks}
    for est in estimators:
        model_blocks = [g for g, r in gates[est].items() if not r["passed"]]
        blocked = data_blocks + model_blocks
        out[est] = {
            "blocked_by": blocked,
            "model_blocked_by": model_blocks,
            "expected_gate_blocked": any(g in expected for g in blocked),
        }
    return out


def measure_table(
    name: str,
    *,
    estimators: list[str],
    resamples: int,
    attacks: list[str] | None,
    workdir: Path,
    rows: int | None = None,
    log: Callable[[str], Any] = lambda s: sys.stderr.write(s + "\n"),
) -> dict[str, Any]:
    """The clean and attack measurements of one table (see the module docstring)."""
    spec = SPECS[name]
    table = load(name, rows=rows)
    t0 = time.time()
    ref = build_reference(table, spec, workdir / name)
    ds = ref.settings.dataset
    out: dict[str, Any] = {
        "rows": len(table),
        "reference": {
            "numeric": ds.numeric,
            "categorical": ds.categorical,
            "ignored": ds.ignored,
            "missing": ds.missing,
            "pii": ds.pii,
            "duplicate_rate": ref.profile.get("duplicate_rate"),
            "label_shares": ref.profile.get("label_shares"),
        },
        "clean": {},
        "attacks": {},
    }
    runs = []
    for i in range(resamples):
        seed = 1000 + i
        runs.append(
            {"seed": seed, "gates": run_frame(ref, subsample(table, seed), estimators, seed=seed)}
        )
        log(f"  {name}: clean resample {i + 1}/{resamples} ({time.time() - t0:.0f} s)")
    out["clean"] = summarise_clean(runs, estimators)
    out["clean_runs"] = runs
    base = subsample(table, ATTACK_BASE_SEED)
    refs = {"": ref}
    for attack, make in attacks_for(spec).items():
        if attacks is not None and attack not in attacks:
            continue
        key = "missing" if attack == "class_missingness" and spec.missing_policy else ""
        if key not in refs:
            refs[key] = build_reference(
                table, spec, workdir / f"{name}-missing", missing=dict(spec.missing_policy)
            )
        gates = run_frame(refs[key], make(base, ATTACK_SEED), estimators, seed=ATTACK_SEED)
        out["attacks"][attack] = {
            "reference": "init + " + json.dumps(spec.missing_policy) if key else "init",
            "gates": gates,
            **attack_verdict(attack, gates, estimators),
        }
        log(f"  {name}: attack {attack} ({time.time() - t0:.0f} s)")
    out["seconds"] = round(time.time() - t0, 1)
    return out


# === report ================================================================================


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _value(gate: str, r: dict[str, Any]) -> str:
    """The measured value against its threshold; for the suite, the failing
    expectations themselves (their count says little)."""
    detail = r.get("detail") or ""
    if gate == "validate.expectations" and detail.startswith("failing: "):
        return detail.removeprefix("failing: ").split("; fix", 1)[0]
    m, t = r.get("measured"), r.get("threshold")
    if m is None:
        return detail[:60] or "blocked"
    return f"{m:.3f}" + (f" vs {t:g}" if t is not None else "")


def _failing_expectations(detail: str | None) -> set[str]:
    """``type(column)`` of each failing expectation named in a validate.expectations detail."""
    return set(re.findall(r"\w+\([^)]*\)", (detail or "").split("; fix", 1)[0]))


def _verdict(a: dict[str, Any], est: str, clean: dict[str, Any]) -> str:
    """OK: a gate meant for the attack blocked it (OK*: a gate that blocks clean
    resamples too, so the block proves little); missed: nothing blocked it but gates
    that also block clean resamples of the table (they tell nothing about the attack;
    for the suite: no expectation failed that a clean resample did not fail too); else
    the other gates that blocked it."""
    gates = {**a["gates"]["data"], **a["gates"][est]}
    meant = [
        g
        for g in a[est]["blocked_by"]
        if g in a["expected"] and not (gates[g].get("detail") or "").startswith("check raised")
    ]  # a check that raised fails closed, right for a run, but it detected nothing
    if meant:
        sound = any(clean.get(g, {}).get("pass_rate", 1) == 1 for g in meant)
        return "OK" if sound else "OK* (that gate also blocks clean resamples)"
    other = []
    for g in a[est]["blocked_by"]:
        c = clean.get(g)
        if c is None or c["pass_rate"] == 1:
            other.append(g)
        elif g == "validate.expectations":
            seen = set().union(*(_failing_expectations(d) for d in c.get("details", [])))
            mine = _failing_expectations(a["gates"]["data"][g].get("detail"))
            if mine - seen:
                other.append(f"{g} ({', '.join(sorted(mine - seen))})")
    return f"other: {'; '.join(other)}" if other else "missed"


def markdown(results: dict[str, Any], estimators: list[str]) -> str:
    """Two tables: clean pass rates and worst margins per gate; attacks and blockers."""
    lines: list[str] = []
    cols = [(t, e) for t in results for e in estimators]
    head = " | ".join(f"{t} {SHORT.get(e, e)}" for t, e in cols)
    lines += [
        "Clean 80% resamples: passed / runs (worst margin; negative = blocked side)",
        "",
        f"| gate | {head} |",
        "|---|" + "---|" * len(cols),
    ]
    gates: list[str] = []
    for t, e in cols:
        for g in results[t]["clean"][e]:
            if g not in gates:
                gates.append(g)
    for g in gates:
        cells = []
        for t, e in cols:
            r = results[t]["clean"][e].get(g)
            cells.append(
                "-" if r is None else f"{r['passed']}/{r['runs']} ({_fmt(r['worst_margin'])})"
            )
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Attacks (one 80% subsample each): the data gates that blocked (estimator-"
        "independent), the model gates per estimator, with the measured value vs threshold. "
        "Verdict per estimator: OK = a gate meant for it blocked; missed = only gates that "
        "also block clean resamples did.",
        "",
        "| table | attack | meant for | data gates blocking | "
        + " | ".join(f"{SHORT.get(e, e)} model gates blocking" for e in estimators)
        + " | verdict |",
        "|---|---|---|---|" + "---|" * len(estimators) + "---|",
    ]
    for t, res in results.items():
        for name, a in res["attacks"].items():
            data = "; ".join(
                f"{g} ({_value(g, a['gates']['data'][g])})" for g in a["data_blocked_by"]
            )
            per_est, verdicts = [], []
            for e in estimators:
                blocks = a[e]["model_blocked_by"]
                per_est.append(
                    "; ".join(f"{g} ({_value(g, a['gates'][e][g])})" for g in blocks) or "-"
                )
                verdicts.append((SHORT.get(e, e), _verdict(a, e, res["clean"][e])))
            distinct = {v for _, v in verdicts}
            verdict = (
                distinct.pop()
                if len(distinct) == 1
                else "; ".join(f"{e}: {v}" for e, v in verdicts)
            )
            lines.append(
                f"| {t} | {name} | {', '.join(a['expected'])} | {data or 'none'} | "
                + " | ".join(per_est)
                + f" | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def write_json(
    path: Path, results: dict[str, Any], estimators: list[str], args: argparse.Namespace
) -> None:
    """The measurements so far, with the settings that produced them and the tables."""
    payload = {
        "estimators": estimators,
        "resamples": args.resamples,
        "diamonds_resamples": args.diamonds_resamples,
        "rows": args.rows,
        "tables": results,
        "markdown": markdown(results, estimators),
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(REAL))
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--resamples", type=int, default=20)
    parser.add_argument(
        "--diamonds-resamples", type=int, default=5, help="diamonds is 54k rows: fewer draws"
    )
    parser.add_argument("--rows", type=int, default=None, help="seeded sample of each table")
    parser.add_argument("--attacks", default="all", help="comma-separated names, or all")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        help="print the tables of saved --out files (merged) instead of measuring",
    )
    args = parser.parse_args(argv)
    if args.report:
        saved = [json.loads(p.read_text()) for p in args.report]
        merged = {t: r for s in saved for t, r in s["tables"].items()}
        sys.stdout.write(markdown(merged, saved[0]["estimators"]))
        return 0
    # Library chatter (GX's temporary docs site, sklearn's undefined-metric warnings on
    # tiny classes) would bury the tables; the gates report what matters.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    estimators = [e for e in args.estimators.split(",") if e]
    attacks = None if args.attacks == "all" else args.attacks.split(",")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gate-margins-") as tmp:
        for name in [t for t in args.tables.split(",") if t]:
            n = args.diamonds_resamples if name == "diamonds" else args.resamples
            sys.stderr.write(f"{name}: {n} clean resamples, estimators {estimators}\n")
            results[name] = measure_table(
                name,
                estimators=estimators,
                resamples=n,
                attacks=attacks,
                workdir=Path(tmp),
                rows=args.rows,
                log=lambda s: sys.stderr.write(s + "\n"),
            )
            if args.out:  # after each table: a long run keeps what it measured
                write_json(args.out, results, estimators, args)
    sys.stdout.write(markdown(results, estimators))
    return 0


if __name__ == "__main__":
    sys.exit(main())
