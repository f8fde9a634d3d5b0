"""`make bench`: speed and memory of the pipeline as ratios against baselines
measured in the same run, on the same machine (never absolute timings).

Baselines are the bare minimum a team would write without any security:
read the CSV, fit scaler + LogisticRegression, score, dump the model. Each
measurement runs in a fresh process so peak memory is its own.

    measurement          what runs
    baseline_small       bare script on the bundled data (569 rows)
    stages_small         ingest, validate, screen, train, evaluate (no Prefect)
    full_run_small       `secure-pipeline run`, cold: Prefect, MLflow, S3 start-up included
    baseline_large       bare script on N synthetic rows (default 1M x 30 features)
    data_stages_large    ingest, validate, screen on the same rows

Targets are ratios; the command exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "breast_cancer.csv"
TARGETS = {  # measurement / baseline, upper bounds
    "data_stages_large.seconds / baseline_large.seconds": 4.0,
    "data_stages_large.peak_mb / baseline_large.peak_mb": 3.0,
    "stages_small.seconds / baseline_small.seconds": 15.0,
    "full_run_small.seconds / baseline_small.seconds": 40.0,
}


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, it does not
    carry over the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(path: str) -> dict[str, Any]:
    import io

    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = pd.read_csv(path)
    x, y = frame.drop(columns=["target"]), frame["target"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    model.score(x, y)
    import skops.io

    io.BytesIO(skops.io.dumps(model))
    return {}


def stages(path: str, *, state: str, upto: str) -> dict[str, Any]:
    """Run the pure stage functions in order; time each (a blocked stage stops it)."""
    from tasks.common.context import RunContext
    from tasks.common.environment import configure
    from tasks.common.gates import GateFailed
    from tasks.common.settings import load_settings

    configure(load_settings(state_dir=state))  # before Prefect and MLflow are imported
    from tasks.evaluate import evaluate
    from tasks.ingest import ingest
    from tasks.screen import guard_pii, screen
    from tasks.train import train
    from tasks.validate import validate

    settings = load_settings(
        state_dir=state,
        dataset={
            **load_settings().dataset.model_dump(),
            "data_root": str(Path(path).parent),
            "max_bytes": 4 << 30,
            "max_rows": 50_000_000,
        },
    )
    ctx = RunContext(settings=settings, run_id="bench")
    times: dict[str, float] = {}
    blocked = None
    try:
        t = time.perf_counter()
        dataset, _ = ingest(ctx, source=path)
        times["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        dataset, _ = guard_pii(ctx, dataset)
        times["pii"] = time.perf_counter() - t
        t = time.perf_counter()
        validated, _ = validate(ctx, dataset)
        times["validate"] = time.perf_counter() - t
        t = time.perf_counter()
        screened, _ = screen(ctx, validated.dataset)
        times["screen"] = time.perf_counter() - t
        if upto == "all":
            t = time.perf_counter()
            model, _ = train(ctx, screened, suite_sha256=validated.suite_sha256)
            times["train"] = time.perf_counter() - t
            t = time.perf_counter()
            evaluate(ctx, model)
            times["evaluate"] = time.perf_counter() - t
    except GateFailed as exc:
        blocked = exc.gate.name
    return {"stages": {k: round(v, 3) for k, v in times.items()}, "blocked_by": blocked}


def child(kind: str, path: str, state: str) -> None:
    """Entry point of one measurement process: prints one JSON line."""
    t = time.perf_counter()
    extra = (
        baseline(path)
        if kind == "baseline"
        else stages(path, state=state, upto="all" if kind == "stages" else "data")
    )
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": _peak_mb(), **extra}))  # noqa: T201


def measure(kind: str, path: Path, state: Path) -> dict[str, Any]:
    t = time.perf_counter()
    argv = [sys.executable, "-m", "benchmarks.run", "--child", kind, str(path), str(state)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - t  # includes imports and start-up
    result["seconds"] = result["wall_seconds"]
    return result


def synthetic(rows: int, dest: Path) -> Path:
    """Rows resampled from the bundled data with 8% multiplicative jitter: same
    schema and close distributions, and no near-duplicate flood (plain resampling
    of 569 rows would be one, and the screen would rightly block it)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    base = pd.read_csv(BUNDLED)
    frame = base.sample(n=rows, replace=True, random_state=7).reset_index(drop=True)
    features = [c for c in frame.columns if c != "target"]
    frame[features] = frame[features] * rng.normal(1.0, 0.08, size=(rows, len(features)))
    path = dest / f"synthetic_{rows}.csv"
    frame.to_csv(path, index=False, float_format="%.8g")
    return path


def full_run(state: Path) -> dict[str, Any]:
    cli = Path(sys.executable).parent / "secure-pipeline"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURE_PIPELINE_")}
    env["SECURE_PIPELINE_STATE_DIR"] = str(state)
    t = time.perf_counter()
    out = subprocess.run(  # noqa: S603 - our own argv
        [str(cli), "run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return {"seconds": time.perf_counter() - t, "exit": out.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "STATE"))
    parser.add_argument("--out", default=str(ROOT / ".secure-pipeline" / "bench.json"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        large = synthetic(args.rows, work)
        results = {
            "baseline_small": measure("baseline", BUNDLED, work / "s1"),
            "stages_small": measure("stages", BUNDLED, work / "s2"),
            "full_run_small": full_run(work / "s3"),
            "baseline_large": measure("baseline", large, work / "s4"),
            "data_stages_large": measure("data", large, work / "s5"),
        }
    ok = True
    lines = [f"{'measurement':<20}{'seconds':>9}{'peak MB':>9}  stages"]
    for name, r in results.items():
        note = r.get("blocked_by") or ("" if r.get("exit", 0) == 0 else f"exit {r['exit']}")
        lines.append(
            f"{name:<20}{r['seconds']:>9.2f}{r.get('peak_mb', 0):>9.0f}  "
            f"{r.get('stages', '')} {note}"
        )
    lines.append("")
    for ratio, limit in TARGETS.items():
        (a, ma), (b, mb) = (part.split(".") for part in ratio.split(" / "))
        value = results[a][ma] / results[b][mb]
        ok &= value <= limit
        lines.append(
            f"{ratio:<55} {value:6.2f}  (target <= {limit}) {'ok' if value <= limit else 'MISSED'}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "targets": TARGETS}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
