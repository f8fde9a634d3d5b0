"""Is the evaluate stage flat in dataset size? Times each evaluate check (not MLflow)
for every estimator of the zoo on the synthetic team table at 10k, 100k and 1M rows.

    .venv/bin/python -m benchmarks.evaluate_scaling [--rows 10000,100000,1000000]

Each size is trained once per estimator with a cheap configuration (the forest is
smaller than the bundled config's; the others as configured), then the six checks
run exactly as `tasks.evaluate.evaluate_checks` calls them, each one timed (the DP
audit costs only for the DP estimator). Apart from the quality gate (which predicts
the whole test set, by design), every check reads a bounded number of rows, so its
time should not grow with the rows. ``ev/tr``: the evaluate checks' time over the
pipeline's fit at the same size.
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings
from collections.abc import Callable
from typing import Any

from sklearn.model_selection import train_test_split

import tasks.evaluate as ev
from tasks.common.settings import EvaluateConfig, ModelConfig
from tasks.models import build_pipeline, resolve_data_norm
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_config, mixed_table

CHECKS = (
    "check_quality",
    "check_adversarial",
    "check_membership_inference",
    "check_backdoor_probe",
    "check_extraction_risk",
    "check_dp_audit",
)
ESTIMATORS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "dp_logistic_regression": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 50, "min_samples_leaf": 5, "n_jobs": -1},
    "hist_gradient_boosting": {"max_iter": 100},
}
DATASET = mixed_config()


def _timed(name: str, fn: Callable[..., Any], times: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] = time.perf_counter() - started

    return wrapper


def measure(rows: int, estimator: str) -> dict[str, Any]:
    frame = mixed_table(rows, seed=1)
    x = frame[NUMERIC + CATEGORICAL]
    y = frame["segment"]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=42, stratify=y
    )
    config = ModelConfig.model_validate(
        {
            "name": "scaling",
            "estimator": estimator,
            "params": {estimator: ESTIMATORS[estimator]},
            "dp_epsilon": 5.0,
        }
    )
    config = resolve_data_norm(config, DATASET, x_train)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffprivlib's data_norm and convergence notes
        pipeline = build_pipeline(config, DATASET, list(x_train.columns)).fit(x_train, y_train)
    train_s = time.perf_counter() - started
    times: dict[str, float] = {}
    originals = {name: getattr(ev, name) for name in CHECKS}
    for name, fn in originals.items():
        setattr(ev, name, _timed(name, fn, times))
    try:
        started = time.perf_counter()
        results = ev.evaluate_checks(
            EvaluateConfig(min_accuracy=0.5, min_robust_accuracy=0.5),
            pipeline=pipeline,
            estimator=estimator,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            seed=42,
        )
        total = time.perf_counter() - started
    finally:
        for name, fn in originals.items():
            setattr(ev, name, fn)
    return {
        "rows": rows,
        "estimator": estimator,
        "train_s": train_s,
        "total_s": total,
        **{name.removeprefix("check_"): times.get(name, float("nan")) for name in CHECKS},
        "passed": ",".join("y" if r.passed else "n" for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    args = parser.parse_args()
    cols = [name.removeprefix("check_") for name in CHECKS]
    header = f"{'rows':>8} {'estimator':<24} {'train':>7} {'evaluate':>8} {'ev/tr':>6} " + " ".join(
        f"{c[:11]:>11}" for c in cols
    )
    print(header)  # noqa: T201
    for rows in (int(r) for r in args.rows.split(",")):
        for estimator in args.estimators.split(","):
            m = measure(rows, estimator)
            line = (
                f"{rows:>8} {estimator:<24} {m['train_s']:>7.2f} {m['total_s']:>8.2f} "
                f"{m['total_s'] / m['train_s']:>6.2f} " + " ".join(f"{m[c]:>11.2f}" for c in cols)
            )
            print(f"{line}  gates passed: {m['passed']}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
