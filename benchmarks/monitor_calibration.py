"""False alarms, detection and speed of monitor.drift (tasks/monitoring/drift.py).

    .venv/bin/python -m benchmarks.monitor_calibration [--quick]

Clean batches: the bundled table (569 rows, 30 numeric inputs) as bootstrap resamples
of the table its profile was built from; the mixed synthetic table (tests/mixed_table.py:
4 numeric, 3 categorical inputs, missing cells, 3 string labels) as fresh draws of its
distribution (other seeds) against the profile of a 2,000-row draw. A batch alerts
when any column moved; the rate should stay at or below ``alpha`` (0.01) at any size.

Injected drifts (each on clean batches, at 500 and 5,000 rows): "detected" is the
share of batches where every changed column moved, "others" where any other column did.
Speed: `measure_drift` on 1M-row batches (best of 3), with its peak memory beyond the
batch itself (tracemalloc: numpy's buffers included).

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.profile import build_profile
from tasks.monitoring.drift import measure_drift
from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_table

ROOT = Path(__file__).resolve().parents[1]
BC_SCALED = ["mean radius", "mean texture", "worst area"]

Draw = Callable[[int, int], pd.DataFrame]  # (rows, seed) -> a clean batch
Inject = Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _scale(cols: list[str], factor: float) -> Inject:
    def inject(f: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        f = f.copy()
        f[cols] = f[cols] * factor
        return f

    return inject


def _set_share(col: str, value: Any, share: float, *, only_other: bool = False) -> Inject:
    """`value` written into `share` of the rows (only rows not already holding it)."""

    def inject(f: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        f = f.copy()
        pool = f.index[f[col] != value] if only_other else f.index
        pick = rng.choice(pool, min(int(share * len(f)), len(pool)), replace=False)
        f.loc[pick, col] = value
        return f

    return inject


def tables() -> dict[str, tuple[dict[str, Any], Draw, dict[str, tuple[list[str], Inject]]]]:
    """Per table: its profile, a clean-batch draw, and the drifts injected into it."""
    bc = pd.read_csv(ROOT / "data" / "breast_cancer.csv")
    bc_profile = build_profile(bc, target="target")
    ref = mixed_table(2000, seed=0)
    mixed_profile = build_profile(
        ref, target="segment", numeric=NUMERIC, categorical=CATEGORICAL,
        exclude=["customer_id", "email"],
    )  # fmt: skip

    def bc_draw(rows: int, seed: int) -> pd.DataFrame:
        return bc.sample(rows, replace=True, random_state=seed)

    def mixed_draw(rows: int, seed: int) -> pd.DataFrame:
        return mixed_table(rows, seed=1000 + seed)

    bc_drifts: dict[str, tuple[list[str], Inject]] = {
        "3 columns x1.3": (BC_SCALED, _scale(BC_SCALED, 1.3)),
        "3 columns x1.1": (BC_SCALED, _scale(BC_SCALED, 1.1)),
        "target: 1 -> 0 in 15% of rows": (
            ["target"],
            _set_share("target", 0, 0.15, only_other=True),
        ),
    }
    other = {"only_other": True}  # only rows not already holding the value
    mixed_drifts: dict[str, tuple[list[str], Inject]] = {
        "income x1.3": (["income"], _scale(["income"], 1.3)),
        "income x1.1": (["income"], _scale(["income"], 1.1)),
        "region 'north' +15 points": (["region"], _set_share("region", "north", 0.15, **other)),
        "region 'north' +5 points": (["region"], _set_share("region", "north", 0.05, **other)),
        "tenure 20% missing": (["tenure"], _set_share("tenure", np.nan, 0.20)),
        "tenure 5% missing": (["tenure"], _set_share("tenure", np.nan, 0.05)),
        "plan unseen in 10%": (["plan"], _set_share("plan", "enterprise", 0.10)),
        "plan unseen in 2%": (["plan"], _set_share("plan", "enterprise", 0.02)),
        "segment 'high' in 15% more": (["segment"], _set_share("segment", "high", 0.15, **other)),
    }  # fmt: skip
    return {
        "breast_cancer (bootstrap)": (bc_profile, bc_draw, bc_drifts),
        "mixed (fresh draws)": (mixed_profile, mixed_draw, mixed_drifts),
    }


def false_alarms(sizes: dict[int, int]) -> None:
    say("| table | batch rows | batches | alerted | rate | columns moved (total) |")
    say("|---|---:|---:|---:|---:|---:|")
    for name, (profile, draw, _) in tables().items():
        for rows, batches in sizes.items():
            moved = [len(measure_drift(draw(rows, s), profile).moved) for s in range(batches)]
            alerted = sum(m > 0 for m in moved)
            say(
                f"| {name} | {rows:,} | {batches} | {alerted} | {alerted / batches:.3f} "
                f"| {sum(moved)} |"
            )


def detection(sizes: list[int], seeds: int) -> None:
    say("| table | injected drift | batch rows | detected | others moved |")
    say("|---|---|---:|---:|---:|")
    for name, (profile, draw, drifts) in tables().items():
        for drift, (columns, inject) in drifts.items():
            for rows in sizes:
                hit = other = 0
                for s in range(seeds):
                    batch = inject(draw(rows, 500 + s), np.random.default_rng(s))
                    moved = {c.column for c in measure_drift(batch, profile).moved}
                    hit += set(columns) <= moved
                    other += bool(moved - set(columns))
                say(f"| {name} | {drift} | {rows:,} | {hit / seeds:.2f} | {other / seeds:.2f} |")


def speed(rows: int) -> None:
    say("| batch | rows | columns compared | groups | best of 3 (s) | peak extra memory (MB) |")
    say("|---|---:|---:|---:|---:|---:|")
    for name, (profile, draw, _) in tables().items():
        batch = draw(rows, 7)
        mb = batch.memory_usage(deep=False).sum() / 1e6
        times = []
        for _ in range(3):
            t = time.perf_counter()
            report = measure_drift(batch, profile)
            times.append(time.perf_counter() - t)
        tracemalloc.start()
        measure_drift(batch, profile)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        groups = sum(len(c.groups) for c in report.columns)
        say(
            f"| {name} ({mb:.0f} MB) | {rows:,} | {len(report.columns)} | {groups} "
            f"| {min(times):.2f} | {peak:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the batches")
    args = parser.parse_args()
    k = 10 if args.quick else 1
    say("## False alarms on clean batches (alpha 0.01)\n")
    false_alarms({500: 200 // k, 5_000: 100 // k, 100_000: max(20 // k, 2)})
    say("\n## Detection of injected drift\n")
    detection([500, 5_000], seeds=max(50 // k, 5))
    say("\n## Speed\n")
    speed(1_000_000)


if __name__ == "__main__":
    main()
