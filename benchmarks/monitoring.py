"""`make bench`, section "monitoring": the monitoring flow's drift check
(`tasks.monitoring.drift.measure_drift`) against Evidently's DataDriftPreset on the
same batch, each in a fresh process. Ratios only, like the training section.

    .venv/bin/python -m benchmarks.run --only monitoring [--repeats 3]

What runs (under the bench directory, beside the training section's files):

1. The batch: the 1M-row bench table (`benchmarks.table`, seed 3: the training
   section's large table) with known drifts injected (`DRIFTS`): three numeric inputs
   scaled 1.3x, one category's share up 15 points of all rows, one input's missing
   cells up 20 points of all rows. Written once as CSV and kept (same seeds, same bytes).
2. The reference: the 20k-row draw that `secure-pipeline init` profiled and signed for
   the bench (its config names the profile).
3. Evidently in a venv of its own, ``<bench dir>/evidently-venv``, installed from
   ``benchmarks/requirements-evidently.lock`` with ``--require-hashes`` and kept while
   the lock is unchanged (its pins differ from the project's: it never shares a venv).
4. One untimed warm-up of each, then `--repeats` times, in rotating order, each in a
   fresh process: (a) ours: verify the signed profile, read the batch with pandas and
   run `measure_drift` with the config's ``[monitoring]`` settings; (b) Evidently: read
   the batch and the reference table with pandas, ``Report([DataDriftPreset()])`` on
   the same columns (the profile's inputs and its label); (c) the baseline: only read
   the batch with pandas.

Targets: ours' wall time <= 0.5x Evidently's; ours' peak RSS (VmHWM) <= 1.5x the
read-only baseline's; both flag the same columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.verdict import MARGIN, Target, table

if TYPE_CHECKING:
    from benchmarks.run import Bench

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "benchmarks" / "requirements-evidently.lock"
BATCH_ROWS = 1_000_000
BATCH_SEED = 3  # the training section's large table: one file on disk for both
# FORK: the injected drifts, and so the columns both contenders must flag.
SCALED = ("x05", "x09", "x14")  # values times SCALE
SCALE = 1.3
SHARE = ("region", "north", 0.15)  # this category gains this share of all rows
MISSING = ("x07", 0.20)  # this many more of all rows lose their value
DRIFTS = {
    **{c: f"scaled {SCALE}x" for c in SCALED},
    SHARE[0]: f"{SHARE[1]!r} up {SHARE[2]:.0%} of rows",
    MISSING[0]: f"missing up {MISSING[1]:.0%} of rows",
}
# The read-only baselines: with the project's pandas (3.x) and with Evidently's (2.x).
KINDS = ("ours", "evidently", "read", "read_ev")
# Evidently's drift tests drop missing cells (evidently/legacy/calculations/data_drift.py),
# so a missing rate that rises at random is a drift it cannot see, by design.
UNSEEN_BY_EVIDENTLY = (MISSING[0],)


def _peak_mb() -> float:
    """VmHWM of this process (the same measure as `benchmarks.run`)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --- the batch ----------------------------------------------------------------------


def write_batch(data: Path, rows: int = BATCH_ROWS) -> Path:
    """The drifted batch in `data` (kept: deterministic), from the bench's table of
    `rows` rows (seed 3, written first if absent: the training section's large table)."""
    import numpy as np
    import pandas as pd

    from benchmarks.table import write_table

    out = data / f"monitoring_batch_{rows}_{BATCH_SEED}.csv"
    if out.exists():
        return out
    source = data / f"table_{rows}_{BATCH_SEED}.csv"
    if not source.exists():
        write_table(source.with_suffix(".part"), rows, seed=BATCH_SEED).rename(source)
    rng = np.random.default_rng(11)
    part = out.with_suffix(".part")
    with part.open("w", newline="") as sink:
        for i, chunk in enumerate(pd.read_csv(source, chunksize=250_000)):
            n = len(chunk)
            for col in SCALED:
                chunk[col] = chunk[col] * SCALE
            col, category, share = SHARE  # exactly `share` of the chunk's rows move
            others = np.flatnonzero((chunk[col].notna() & (chunk[col] != category)).to_numpy())
            moved = rng.choice(others, round(share * n), replace=False)
            chunk.iloc[moved, chunk.columns.get_loc(col)] = category
            col, share = MISSING
            present = np.flatnonzero(chunk[col].notna().to_numpy())
            gone = rng.choice(present, round(share * n), replace=False)
            chunk.iloc[gone, chunk.columns.get_loc(col)] = np.nan
            chunk.to_csv(sink, index=False, header=i == 0, float_format="%.6g")
    return part.rename(out)


# --- Evidently's venv -----------------------------------------------------------------


def evidently_python(out: Path) -> Path:
    """The python of ``<out>/evidently-venv``, (re)installed from the lock if it changed."""
    venv = out / "evidently-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".lock-sha256"
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    sys.stdout.write(f"installing evidently into {venv} (once per lock)\n")
    sys.stdout.flush()
    for argv in (
        ["python3", "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(LOCK)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"could not install evidently: {' / '.join(tail)}")
    stamp.write_text(digest)
    return python


# --- child processes: one measurement each, one JSON line on stdout -----------------


def child_ours(batch: str, config: str) -> dict[str, Any]:
    """The monitoring flow's drift check: verified profile, pandas read, measure_drift."""
    import pandas as pd

    from tasks.checks.profile import check_profile_integrity, signature_path, trusted_keys
    from tasks.common.settings import load_settings
    from tasks.monitoring.drift import measure_drift

    started = time.perf_counter()
    s = load_settings(config)
    ds = s.dataset
    keys = trusted_keys(s.keys_dir, ds.profile_signers, trainer=not s.trust.signers)
    result, profile = check_profile_integrity(
        ds.reference_profile.read_bytes(),
        signature_path(ds.reference_profile).read_bytes(),
        keys=keys,
        expected_sha256=ds.reference_profile_sha256,
    )
    if not result.passed:
        raise SystemExit(result.detail)
    verified = time.perf_counter()
    frame = pd.read_csv(batch)
    read = time.perf_counter()
    m = s.monitoring
    report = measure_drift(
        frame,
        profile,
        alpha=m.alpha,
        min_shift=m.min_shift,
        min_relative_shift=m.min_relative_shift,
        floor=m.floor,
    )
    done = time.perf_counter()
    return {
        "moved": sorted(c.column for c in report.moved),
        "checked": sorted(c.column for c in report.columns),
        "verify_s": round(verified - started, 3),
        "read_s": round(read - verified, 3),
        "check_s": round(done - read, 3),
    }


def child_evidently(batch: str, reference: str, spec: str) -> dict[str, Any]:
    """Evidently's DataDriftPreset, its defaults, on the same columns (Evidently's venv)."""
    columns = json.loads(spec)
    numeric, categorical = columns["numeric"], columns["categorical"]
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    current = pd.read_csv(batch)
    read = time.perf_counter()
    ref = pd.read_csv(reference)
    names = numeric + categorical
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=names)], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current[names], data_definition=definition),
        Dataset.from_pandas(ref[names], data_definition=definition),
    )
    moved = _evidently_moved(snapshot.dict())
    done = time.perf_counter()
    return {
        "moved": sorted(moved),
        "checked": sorted(names),
        "read_s": round(read - started, 3),
        "check_s": round(done - read, 3),
    }


def _evidently_moved(body: dict[str, Any]) -> set[str]:
    """The columns whose "Value Drift" test failed: Evidently's own verdict (its method's
    distance at or over its threshold, or its p-value under it)."""
    moved = set()
    for test in body["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift") and test["status"] != "SUCCESS":
            moved.add(params["column"])
    return moved


def child_read(batch: str) -> dict[str, Any]:
    """The baseline: read the batch with pandas, nothing else."""
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_csv(batch)
    return {"rows": len(frame), "read_s": round(time.perf_counter() - started, 3)}


def child(kind: str, args: list[str]) -> None:
    started = time.perf_counter()
    fn = {"ours": child_ours, "evidently": child_evidently}.get(kind, child_read)
    out = fn(*args)
    out.update(seconds=round(time.perf_counter() - started, 3), peak_mb=round(_peak_mb(), 1))
    sys.stdout.write("\nBENCH " + json.dumps(out) + "\n")


# --- the driver -----------------------------------------------------------------------


def _measure(bench: Bench, python: Path, kind: str, *args: str) -> dict[str, Any]:
    started = time.perf_counter()
    proc = bench._run([str(python), "-m", "benchmarks.monitoring", "--child", kind, *args])
    wall = round(time.perf_counter() - started, 3)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"wall": wall, "ok": False, "reason": " / ".join(tail)}
    return {**json.loads(lines[-1].removeprefix("BENCH ")), "wall": wall, "ok": True}


def run(bench: Bench, config: Path, repeats: int) -> dict[str, Any]:
    """Every run of the section: {kind: [measurement, ...]} plus what they ran on."""
    from tasks.common.settings import load_settings

    batch = write_batch(bench.data)
    evidently = evidently_python(bench.out)
    profile = json.loads(load_settings(str(config)).dataset.reference_profile.read_text())
    inputs = profile["inputs"]
    categorical = [*inputs["categorical"], profile["target"]]  # the label drifts too
    spec = {"numeric": inputs["numeric"], "categorical": categorical}
    reference = bench.data / "table_20000_1.csv"  # what `init` profiled
    ours = Path(sys.executable)
    argv: dict[str, tuple[Path, list[str]]] = {
        "ours": (ours, [str(batch), str(config)]),
        "evidently": (evidently, [str(batch), str(reference), json.dumps(spec)]),
        "read": (ours, [str(batch)]),
        "read_ev": (evidently, [str(batch)]),
    }
    load = [round(x, 2) for x in os.getloadavg()]  # a shared machine: say how busy it was
    for kind in KINDS:  # untimed warm-up: file caches, .pyc files of a fresh venv
        _measure(bench, argv[kind][0], kind, *argv[kind][1])
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for r in range(repeats):
        for kind in KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]:
            m = _measure(bench, argv[kind][0], kind, *argv[kind][1])
            runs[kind].append(m)
            note = "" if m["ok"] else f"  FAILED: {m['reason']}"
            sys.stdout.write(
                f"monitoring {kind:<9} {m['wall']:7.1f} s  {m.get('peak_mb', 0):6.0f} MB  "
                f"moved {m.get('moved', '-')}{note}\n"
            )
            sys.stdout.flush()
    load += [round(x, 2) for x in os.getloadavg()]
    return {"rows": BATCH_ROWS, "batch": str(batch), "drifts": DRIFTS, "load": load, "runs": runs}


def failures(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for ms in results["runs"].values() for m in ms if not m["ok"]]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Medians per contender, and the columns each flagged (from its last run)."""

    def med(kind: str, key: str) -> float:
        return statistics.median(m[key] for m in results["runs"][kind])

    out: dict[str, Any] = {"rows": results["rows"], "injected": sorted(results["drifts"])}
    out["drifts"], out["load"] = results["drifts"], results.get("load")
    for kind in KINDS:
        out[kind] = {
            k: med(kind, k)
            for k in ("wall", "peak_mb", "read_s", "check_s", "verify_s")
            if k in results["runs"][kind][0]
        }
        out[kind]["moved"] = results["runs"][kind][-1].get("moved")
    out["wall_ratio"] = out["ours"]["wall"] / out["evidently"]["wall"]
    out["rss_ratio"] = out["ours"]["peak_mb"] / out["read"]["peak_mb"]
    return out


def targets(s: dict[str, Any]) -> list[Target]:
    """The section's targets (`benchmarks.verdict`)."""
    ours, theirs = set(s["ours"]["moved"]), set(s["evidently"]["moved"])
    seen = set(UNSEEN_BY_EVIDENTLY)
    differ = (ours - seen) ^ (theirs - seen)
    wrong = ours ^ set(s["injected"])
    rows = f"{s['rows']:,} rows"
    return [
        Target(f"monitoring wall time, ours / Evidently, {rows}", s["wall_ratio"], "<=", 0.5),
        Target(f"monitoring peak RSS, ours / pandas read, {rows}", s["rss_ratio"], "<=", 1.5),
        Target("monitoring: columns flagged by only one of ours and Evidently (missing-rate "
               "drift left out: Evidently drops missing cells)", len(differ), "=", 0),
        Target("monitoring: injected drifts ours missed + clean columns ours flagged",
               len(wrong), "=", 0),
    ]  # fmt: skip


def markdown(s: dict[str, Any], checks: list[Target], margin: float = MARGIN) -> str:
    def cell(kind: str, key: str) -> str:
        return f"{s[kind][key]:.2f} s" if key in s[kind] else "-"

    lines = [
        "",
        f"Monitoring: drift of a {s['rows']:,}-row batch from the reference profile "
        "(medians, fresh processes, rotating order).",
        "",
        "| contender | wall | peak RSS | read | check (no read) | verify profile |",
        "|---|---|---|---|---|---|",
    ]
    names = {"ours": "ours (measure_drift)", "evidently": "Evidently DataDriftPreset"}
    names["read"] = "pandas read only (project's pandas)"
    names["read_ev"] = "pandas read only (Evidently's venv)"
    for kind in KINDS:
        lines.append(
            f"| {names[kind]} | {s[kind]['wall']:.1f} s | {s[kind]['peak_mb']:,.0f} MB | "
            f"{cell(kind, 'read_s')} | {cell(kind, 'check_s')} | {cell(kind, 'verify_s')} |"
        )
    lines += [
        "",
        "- injected: " + "; ".join(f"{c} {w}" for c, w in s["drifts"].items()),
        f"- ours flagged: {', '.join(s['ours']['moved']) or 'none'}",
        f"- Evidently flagged: {', '.join(s['evidently']['moved']) or 'none'}",
        f"- load average (1, 5, 15 min) at the start, then at the end: {s.get('load')}",
        "",
        *table(checks, margin),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--child":
        raise SystemExit("run through `python -m benchmarks.run --only monitoring`")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    child(sys.argv[2], sys.argv[3:])
