"""False-alarm and detection rates of the relative screens (tasks/checks/relative.py).

    .venv/bin/python -m benchmarks.screen_calibration [--draws 200] [--seeds 10]
        [--tables breast_cancer,mixed,penguins,mpg,diamonds] [--no-real]

Clean draws, per table: ``sub`` (80% without replacement) and ``boot`` (bootstrap),
screened against the profile of the whole table; ``half``: a random half profiled, the
other half screened. Attacks (issue 17, `realattacks.attacks_for`): each screened
against the profile of the clean table, one seed per run. Prints one line per (table,
draw kind or attack): the share of runs each gate blocked. The real tables and their
attack generators come from `tests/realtables.py` and `tests/realattacks.py`; with
``--no-real`` only the bundled and the synthetic tables are measured.

Only the count-based gates run here (pure functions, milliseconds); the neighbour
gates (label_noise, near_duplicates, outliers) are measured by the unit tests.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.conditional import build_conditional
from tasks.checks.poisoning import category_keys, duplicate_rate, label_shares
from tasks.checks.relative import (
    Counts,
    check_backdoor,
    check_category_shares,
    check_duplicates,
    check_label_distribution,
    check_missingness,
)
from tasks.common.settings import ScreenConfig

ROOT = Path(__file__).resolve().parents[1]
GATES = ("label_distribution", "missingness", "category_shares", "duplicates", "backdoor")


def light_profile(frame: pd.DataFrame, target: str, numeric: list[str], categorical: list[str]):
    """The parts of a version 4 profile the count-based gates read (no neighbour search)."""
    n = len(frame)
    cats = {}
    for c in categorical:
        keys = category_keys(frame[c])
        cats[c] = {"shares": {str(k): v / n for k, v in keys.value_counts().items()}}
    return {
        "version": 4,
        "rows": n,
        "target": target,
        "inputs": {"numeric": numeric, "categorical": categorical},
        "label_shares": label_shares(frame[target]),
        "categorical": cats,
        "duplicate_rate": duplicate_rate(frame[[*numeric, *categorical, target]]),
        "conditional": build_conditional(
            frame, target=target, numeric=numeric, categorical=categorical
        ),
    }


def verdicts(frame: pd.DataFrame, profile: dict[str, Any], limits: ScreenConfig) -> dict[str, bool]:
    """Gate -> blocked, for the count-based gates."""
    counts = Counts(frame, profile)
    rel = {
        "alpha": limits.alpha,
        "min_relative": limits.min_relative_shift,
        "floor": limits.min_share_shift,
    }
    cols = [*profile["inputs"]["numeric"], *profile["inputs"]["categorical"], profile["target"]]
    results = {
        "label_distribution": check_label_distribution(
            counts, profile, max_shift=limits.max_label_shift, **rel
        ),
        "missingness": check_missingness(
            counts, profile, max_shift=limits.max_missing_shift, **rel
        ),
        "category_shares": check_category_shares(
            counts, profile, max_shift=limits.max_category_shift, **rel
        ),
        "duplicates": check_duplicates(
            frame[cols], profile, max_rate=limits.max_duplicate_rate, alpha=limits.alpha
        ),
        "backdoor": check_backdoor(
            counts,
            profile,
            max_score=limits.max_backdoor_score,
            alpha=limits.alpha,
            min_relative=limits.min_relative_shift,
        ),
    }
    return {g: not r.passed for g, r in results.items()}


def tables(names: list[str], real: Any) -> dict[str, tuple[pd.DataFrame, str, list, list, Any]]:
    """name -> (frame, target, numeric, categorical, spec or None)."""
    from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table

    out = {}
    for name in names:
        if name == "mixed":
            out[name] = (mixed_table(2000, seed=0), "segment", NUMERIC, CATEGORICAL, None)
        elif name == "breast_cancer" and real is None:
            frame = pd.read_csv(ROOT / "data" / "breast_cancer.csv")
            out[name] = (frame, "target", [c for c in frame if c != "target"], [], None)
        elif real is not None:
            spec = real.SPECS[name]
            frame = real.load(name)
            num = list(spec.numeric) or [c for c in frame if c != spec.target]
            out[name] = (frame, spec.target, num, list(spec.categorical), spec)
    return out


def rates(runs: list[dict[str, bool]]) -> str:
    return "  ".join(f"{g}={np.mean([r[g] for r in runs]):.3f}" for g in GATES)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tables", default="breast_cancer,mixed,penguins,mpg,diamonds")
    ap.add_argument(
        "--no-real", dest="real", action="store_false", help="skip the real public tables"
    )
    ap.add_argument("--no-attacks", action="store_true")
    args = ap.parse_args()
    real = None
    if args.real:  # the real tables and their attacks (tests/realtables.py, realattacks.py)
        sys.path.insert(0, str(ROOT))
        from tests import realattacks, realtables

        real = argparse.Namespace(
            SPECS=realtables.SPECS,
            load=realtables.load,
            attacks_for=realattacks.attacks_for,
            EXPECTED_GATES=realattacks.EXPECTED_GATES,
        )
    limits = ScreenConfig()
    for name, table in tables(args.tables.split(","), real).items():
        measure(name, *table, real=real, args=args, limits=limits)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def measure(
    name: str,
    frame: pd.DataFrame,
    target: str,
    num: list[str],
    cat: list[str],
    tspec: Any,
    *,
    real: Any,
    args: argparse.Namespace,
    limits: ScreenConfig,
) -> None:
    """Print the clean false-alarm rates, then the attack detection rates, of one table."""
    full = light_profile(frame, target, num, cat)
    n = len(frame)

    def sub(s: int) -> tuple[pd.DataFrame, dict[str, Any]]:
        return frame.sample(frac=0.8, random_state=s), full

    def boot(s: int) -> tuple[pd.DataFrame, dict[str, Any]]:
        return frame.sample(n=n, replace=True, random_state=s), full

    def half(s: int) -> tuple[pd.DataFrame, dict[str, Any]]:
        perm = np.random.default_rng(s).permutation(n)
        a, b = frame.iloc[perm[: n // 2]], frame.iloc[perm[n // 2 :]]
        return b, light_profile(a, target, num, cat)

    kinds: dict[str, Callable[[int], tuple[pd.DataFrame, dict[str, Any]]]] = {
        "sub": sub,
        "boot": boot,
        "half": half,
    }
    for kind, draw in kinds.items():
        runs = [verdicts(*draw(s), limits) for s in range(args.draws)]
        say(f"{name:14s} clean {kind:5s} n={len(runs):4d}  {rates(runs)}")
    if tspec is None or args.no_attacks:
        return
    for attack, fn in real.attacks_for(tspec).items():
        runs = [verdicts(fn(frame, s), full, limits) for s in range(args.seeds)]
        expected = [g.split(".")[1] for g in real.EXPECTED_GATES.get(attack, ())]
        hit = np.mean([any(r[g] for g in expected if g in r) for r in runs])
        any_gate = np.mean([any(r.values()) for r in runs])
        say(f"{name:14s} {attack:26s} expected={hit:.2f} any={any_gate:.2f}  {rates(runs)}")


if __name__ == "__main__":
    main()
