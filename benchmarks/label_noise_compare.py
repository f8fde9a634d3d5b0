"""Label-noise finders compared: the screen's k-NN rule against cleanlab's
out-of-fold ``find_label_issues``, at the same false-positive rate.

cleanlab is not a dependency of the pipeline; run this with a scratch environment
that has it on top of the project's packages, e.g.::

    python3 -m venv /tmp/clvenv
    /tmp/clvenv/bin/pip install --no-deps cleanlab termcolor
    echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/clvenv/lib/python3.11/site-packages/project.pth
    /tmp/clvenv/bin/python -m benchmarks.label_noise_compare

(without cleanlab only the k-NN rule is measured). Method, per dataset:

* reference: the trusted table (bundled: the whole CSV; mixed: ``mixed_table(2000)``
  seed 0) and its profile;
* clean: 20 clean tables (bundled: 95% resamples; mixed: independent draws);
* flipped: 20 more clean tables per (source, destination) class pair, with labels
  flipped from the source class to the destination class: scenario "10% of rows"
  (10% of all rows, taken from one class), "10% of a class" (10% of that class's
  rows) and "5% of a class";
* statistic: the share of rows flagged (k-NN: label disagrees with most of its k
  neighbours, the screen's rule; cleanlab: ``find_label_issues`` on 5-fold
  out-of-fold probabilities of a logistic regression on the screen's encoding);
* threshold: the largest statistic over the clean tables (every clean table passes:
  the same 0/20 false-positive rate for both), then the share of flipped tables
  above it is the detection rate. The screen's own rule (reference rate + 0.05) is
  reported too, and the separation of flipped from clean tables in clean std units
  (detection saturates at 100% when both separate well).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.checks.poisoning import encoded, label_keys, neighbour_stats  # noqa: E402
from tasks.checks.profile import build_profile, profile_text  # noqa: E402
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table  # noqa: E402

SCREEN_EXCESS = 0.05  # screen.max_label_noise_excess
# name: (share flipped, of all rows or of the source class's rows)
SCENARIOS = {
    "10% of rows": (0.10, "rows"),
    "10% of a class": (0.10, "class"),
    "5% of a class": (0.05, "class"),
}
Table = tuple[pd.DataFrame, str]  # frame, target


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def knn_rate(frame: pd.DataFrame, profile: dict[str, Any]) -> float:
    return neighbour_stats(frame, profile).label_noise_rate


def cleanlab_rate(frame: pd.DataFrame, profile: dict[str, Any]) -> float:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, _ = encoded(frame, profile)
    keys = label_keys(frame[profile["target"]])
    classes = sorted(keys.unique())
    y = keys.map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs = cross_val_predict(
        LogisticRegression(max_iter=2000),
        x,
        y,
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
        method="predict_proba",
    )
    return float(np.mean(find_label_issues(y, probs)))


def flip(
    frame: pd.DataFrame, target: str, *, src: Any, dst: Any, n: int, seed: int
) -> pd.DataFrame:
    rows = frame.index[frame[target] == src].to_series().sample(n=n, random_state=seed)
    return frame.assign(**{target: frame[target].where(~frame.index.isin(rows), dst)})


def bundled() -> tuple[pd.DataFrame, str, Callable[[int], pd.DataFrame]]:
    ref = pd.read_csv(ROOT / "data" / "breast_cancer.csv")
    return ref, "target", lambda s: ref.sample(frac=0.95, random_state=s).reset_index(drop=True)


def mixed() -> tuple[pd.DataFrame, str, Callable[[int], pd.DataFrame]]:
    return mixed_table(2000, seed=0), "segment", lambda s: mixed_table(2000, seed=s)


def flipped_tables(
    draw: Callable[[int], pd.DataFrame], target: str, classes: list[Any], *, scenario: str, n: int
) -> Iterator[tuple[str, pd.DataFrame]]:
    for pair, (src, dst) in enumerate((a, b) for a in classes for b in classes if a != b):
        for i in range(n):
            seed = 1000 + 100 * pair + i
            frame = draw(seed)
            share, of = SCENARIOS[scenario]
            base = len(frame) if of == "rows" else int((frame[target] == src).sum())
            n_flips = round(share * base)
            yield f"{src}->{dst}", flip(frame, target, src=src, dst=dst, n=n_flips, seed=seed)


def measure(
    name: str, make: Callable[[], Any], *, n: int, finders: dict[str, Any]
) -> dict[str, Any]:
    ref, target, draw = make()
    kwargs = {"numeric": NUMERIC, "categorical": CATEGORICAL} if name == "mixed" else {}
    profile = json.loads(profile_text(build_profile(ref, target=target, **kwargs)))
    classes = sorted(ref[target].unique().tolist())
    out: dict[str, Any] = {"rows": len(ref), "reference_knn_rate": profile["label_noise_rate"]}
    clean = [draw(s) for s in range(1, n + 1)]
    for finder, rate in finders.items():
        started = time.perf_counter()
        clean_stats = [rate(f, profile) for f in clean]
        threshold = max(clean_stats)
        res: dict[str, Any] = {
            "clean_mean": float(np.mean(clean_stats)),
            "clean_max (threshold)": threshold,
            "clean_std": float(np.std(clean_stats, ddof=1)),
        }
        spread = float(np.std(clean_stats, ddof=1)) or 1e-12
        for scenario in SCENARIOS:
            stats: dict[str, list[float]] = {}
            for pair, frame in flipped_tables(draw, target, classes, scenario=scenario, n=n):
                stats.setdefault(pair, []).append(rate(frame, profile))
            every = [v for vs in stats.values() for v in vs]
            res[scenario] = {
                "detected_at_equal_fpr": float(np.mean([v > threshold for v in every])),
                "flipped_mean": float(np.mean(every)),
                # how far the flipped tables sit above the clean ones, in clean std units
                "separation_sd": (float(np.mean(every)) - float(np.mean(clean_stats))) / spread,
                "lowest_flipped_minus_threshold_sd": (min(every) - threshold) / spread,
                "per_pair_detected": {
                    p: float(np.mean([v > threshold for v in vs])) for p, vs in stats.items()
                },
            }
            if finder == "knn":
                limit = profile["label_noise_rate"] + SCREEN_EXCESS
                res[scenario]["detected_by_screen_rule"] = float(
                    np.mean([v > limit for v in every])
                )
        res["seconds"] = round(time.perf_counter() - started, 1)
        out[finder] = res
        _say(f"{name} {finder}: {json.dumps(res)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=20, help="clean tables, and per class pair")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    finders: dict[str, Any] = {"knn": knn_rate}
    if importlib.util.find_spec("cleanlab") is not None:
        finders["cleanlab"] = cleanlab_rate
    else:
        _say("cleanlab is not installed: measuring the k-NN rule only")
    results = {
        name: measure(name, make, n=args.tables, finders=finders)
        for name, make in (("bundled", bundled), ("mixed", mixed))
    }
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    _say(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
