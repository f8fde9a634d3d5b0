"""`make bench`: the security tax, measured against the flow a team would write without
this template, on the same machine in the same session. Ratios only: the targets never
name an absolute time.

    .venv/bin/python -m benchmarks.run [--rows 100000,1000000] [--repeats 5]
                                       [--only training|monitoring]
                                       [--margin 0.1] [--loaded]

What runs (everything under ``<state dir>/bench/``, its own state directory included):

1. The bench table (`benchmarks.table`: 16 numeric and 4 categorical inputs, missing
   values, an id, an email, 3 string classes) at each size, and `secure-pipeline init`
   on a separate 20k-row draw of it: config, suite and signed reference profile.
2. One embedded S3 server (SeaweedFS) for both flows, kept up for the whole bench, as a
   scheduled deployment would keep its store (its start-up is nobody's tax).
3. For each size, `--repeats` times, alternating, each in a fresh process:
   (a) the plain Prefect flow (`benchmarks.plain_flow`): read, fit the same model, log
   it to MLflow, upload it to S3; (b) ``secure-pipeline run --data <table>``. Both use
   the same Prefect home (a temporary API server per run), the same MLflow store and
   the same bucket. One untimed warm-up of each comes first (file caches, .pyc files).
4. The release path's encryption (`tasks.trust.envelope.encrypt`) against raw AES-GCM
   (`cryptography`) on the same 64 MiB.
5. The monitoring section (`benchmarks.monitoring`): the drift check on a drifted
   1M-row batch against Evidently's DataDriftPreset and a pandas read.

It reports medians (with min and max) of wall time and peak RSS (VmHWM of the flow's
process), the secure run's per-stage and per-check times (from its run report) and the
plain flow's per-task times, writes ``bench.md``, ``bench.png`` and ``bench.json``, and
exits 1 when a target is not met with ``--margin`` (10%: `benchmarks.verdict`), or a
run did not deploy or complete. ``--loaded``, for a run taken beside other work (a
parallel ``make test``): the targets must hold at their bounds, the margin may be used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_report as report
from benchmarks.bench_report import CRYPTO_MIB, PLAIN_TASKS
from benchmarks.verdict import MARGIN, Target, passed

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ROWS = 20_000


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, it does not carry
    over the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _free_port() -> int:
    """A free port in the range the settings accept for ``local.s3_port``."""
    for port in range(21_000, 55_535, 97):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port for the bench's S3 server")


# --- child processes: one measurement each, one JSON line on stdout -----------------


def child_plain(table: str, config: str) -> dict[str, Any]:
    from tasks.common.environment import configure
    from tasks.common.settings import load_settings
    from tasks.localstack import identities, processes

    settings = load_settings(config)
    configure(settings)  # the same Prefect home, MLflow store and telemetry off
    endpoint = identities.endpoint_at(
        settings, processes.read_services(settings)["s3"]["url"], identity="admin"
    )
    os.environ.update(
        AWS_ENDPOINT_URL_S3=endpoint.url,
        AWS_ACCESS_KEY_ID=str(endpoint.access_key),
        AWS_SECRET_ACCESS_KEY=str(endpoint.secret_key),
        AWS_CA_BUNDLE=str(endpoint.ca_bundle),
        AWS_DEFAULT_REGION=endpoint.region,
    )
    from prefect import task

    import benchmarks.plain_flow as plain

    times: dict[str, float] = {}
    for name in PLAIN_TASKS:  # time each task without touching the flow's code
        fn = getattr(plain, name).fn

        def timed(*args: Any, _fn: Any = fn, _name: str = name, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                times[_name] = round(time.perf_counter() - started, 3)

        setattr(plain, name, task(name=name)(timed))
    plain.plain_training(table, settings.storage.bucket)
    return {"stages": times, "deployed": True}


def child_secure(table: str, config: str) -> dict[str, Any]:
    report = Path(config).parent / "last-report.json"
    from flows.cli import main

    code = main(["run", "--config", config, "--data", table, "--report", str(report)])
    body = json.loads(report.read_text())
    gates = {g["name"]: g["metrics"] for g in body["gates"]}
    return {
        "exit": code,
        "deployed": code == 0 and body["status"] == "deployed",
        "reason": body.get("blocked_by") or body.get("error"),
        "stages": body.get("stages", {}),
        "checks": body.get("checks", {}),
        "membership": gates.get("evaluate.membership_inference", {}),
        "adversarial": gates.get("evaluate.adversarial", {}),
    }


def child_crypto(repeats: int) -> dict[str, Any]:
    """MB/s of raw AES-256-GCM and of the release path's envelope encryption."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tasks.trust import envelope

    data = os.urandom(CRYPTO_MIB << 20)
    raw_key = AESGCM(AESGCM.generate_key(bit_length=256))
    provider = envelope.LocalMasterKeys.of({"bench": os.urandom(32)})
    context = {"model_name": "bench", "model_version": "1", "model_sha256": "0" * 64}

    def rate(fn: Any) -> float:
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            runs.append(CRYPTO_MIB / (time.perf_counter() - started))
        return statistics.median(runs)

    raw = rate(lambda: raw_key.encrypt(os.urandom(12), data, None))
    release = rate(lambda: envelope.encrypt(data, key_provider=provider, context=context))
    return {"raw_mb_s": round(raw, 1), "release_mb_s": round(release, 1)}


def child(kind: str, args: list[str]) -> None:
    started = time.perf_counter()
    if kind == "plain":
        out = child_plain(*args)
    elif kind == "secure":
        out = child_secure(*args)
    else:
        out = child_crypto(int(args[0]))
    out.update(seconds=time.perf_counter() - started, peak_mb=round(_peak_mb(), 1))
    sys.stdout.write("\nBENCH " + json.dumps(out) + "\n")


# --- the driver ------------------------------------------------------------------


class Bench:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.data = out / "data"
        self.state = out / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SECURE_PIPELINE_")}
        self.env["SECURE_PIPELINE_STATE_DIR"] = str(self.state)
        self.env["PYTHONPATH"] = str(ROOT)  # `python -m benchmarks.run` from another cwd
        self.env["SECURE_PIPELINE_LOCAL__S3_PORT"] = str(_free_port())  # beside `make ui`
        self.cli = str(Path(sys.executable).parent / "secure-pipeline")

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own argv
            argv, cwd=self.out, env=self.env, capture_output=True, text=True, check=False
        )

    def prepare(self, sizes: list[int]) -> Path:
        """Tables (kept between benches: same seeds, same bytes), a fresh state
        directory, the config from `init`, and the S3 server kept up."""
        from benchmarks.table import write_table

        self.data.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.state, ignore_errors=True)
        for rows, seed in [(REFERENCE_ROWS, 1), *((n, 2 + i) for i, n in enumerate(sizes))]:
            path = self.data / f"table_{rows}_{seed}.csv"
            if not path.exists():
                write_table(path.with_suffix(".part"), rows, seed=seed).rename(path)
        reference = self.data / f"table_{REFERENCE_ROWS}_1.csv"
        init = self._run(
            [
                *(self.cli, "init", str(reference), "--target", "segment"),
                *("--pii", "email=drop", "--name", "bench"),
                *("--out", str(self.state / "config"), "--force"),
            ]
        )
        if init.returncode != 0:
            raise SystemExit(f"init failed: {init.stdout}{init.stderr}")
        config = self.state / "config" / "bench.toml"
        # The tables live beside the reference; --data must resolve under data_root.
        text = config.read_text().replace('data_root = "."', f'data_root = "{self.data}"')
        config.write_text(text)
        return config

    def up(self, config: Path) -> None:
        """The S3 server both training flows use, kept up until `stop`."""
        up = self._run([self.cli, "local", "up", "--no-ui", "--config", str(config)])
        if up.returncode != 0:
            raise SystemExit(f"could not start the S3 server: {up.stdout}{up.stderr}")

    def stop(self, config: Path) -> None:
        self._run([self.cli, "local", "down", "--config", str(config)])

    def measure(self, kind: str, *args: str) -> dict[str, Any]:
        started = time.perf_counter()
        proc = self._run([sys.executable, "-m", "benchmarks.run", "--child", kind, *args])
        wall = time.perf_counter() - started
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
        if (proc.returncode != 0 and kind != "secure") or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"wall": wall, "deployed": False, "reason": " / ".join(tail)}
        return {**json.loads(lines[-1].removeprefix("BENCH ")), "wall": round(wall, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="two sizes, small,large")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--margin", type=float, default=MARGIN, help="default: %(default)s")
    parser.add_argument(
        "--loaded", action="store_true", help="taken beside other work: targets at the bound"
    )
    parser.add_argument("--only", choices=("training", "monitoring"), help="one section")
    parser.add_argument("--out", help="default: <state dir>/bench")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1:])
        return 0
    from benchmarks import monitoring
    from tasks.common.settings import load_settings

    sizes = [int(r) for r in args.rows.split(",")]
    if len(sizes) != 2 or sizes[0] >= sizes[1]:
        parser.error("--rows takes two sizes, the smaller first")
    training = args.only != "monitoring"
    out = Path(args.out) if args.out else load_settings().state_dir / "bench"
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(out.resolve())
    config = bench.prepare(sizes if training else [])
    results: dict[str, Any] = {"runs": {}}
    results["load"] = {"start": [round(x, 2) for x in os.getloadavg()]}  # how busy it was
    if training:
        bench.up(config)
        try:
            for i, rows in enumerate(sizes):
                table = str(bench.data / f"table_{rows}_{2 + i}.csv")
                runs: dict[str, list[dict[str, Any]]] = {"plain": [], "secure": []}
                if i == 0:  # untimed warm-up
                    bench.measure("plain", table, str(config))
                    bench.measure("secure", table, str(config))
                for r in range(args.repeats):
                    order = ("plain", "secure") if r % 2 == 0 else ("secure", "plain")
                    for kind in order:
                        m = bench.measure(kind, table, str(config))
                        runs[kind].append(m)
                        note = "" if m.get("deployed") else f"  NOT DEPLOYED: {m.get('reason')}"
                        sys.stdout.write(
                            f"{rows:>9,} rows  {kind:<6} {m['wall']:7.1f} s  "
                            f"{m.get('peak_mb', 0):6.0f} MB  {m.get('stages', '')}{note}\n"
                        )
                        sys.stdout.flush()
                results["runs"][str(rows)] = runs
            results["crypto"] = bench.measure("crypto", "5")
            results["load"]["end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            bench.stop(config)
    if args.only != "training":
        results["monitoring"] = monitoring.run(bench, config, args.repeats)
    failed = [
        m for runs in results["runs"].values() for ms in runs.values() for m in ms
        if not m.get("deployed")
    ]  # fmt: skip
    failed += monitoring.failures(results["monitoring"]) if "monitoring" in results else []
    if failed:
        sys.stdout.write(f"{len(failed)} run(s) did not complete; no ratios\n")
        (out / "bench.json").write_text(json.dumps(results, indent=2))
        return 1
    summary: dict[str, Any] = {}
    checks: list[Target] = []
    text = ""
    if training:
        summary = report.summarise(results, args.repeats)
        checks = report.targets(summary, str(sizes[0]), str(sizes[1]))
        text = report.markdown(summary, checks, margin=args.margin, loaded=args.loaded)
        report.chart(summary, out / "bench.png")
    if "monitoring" in results:
        summary["monitoring"] = monitoring.summarise(results["monitoring"])
        mchecks = monitoring.targets(summary["monitoring"])
        text += monitoring.markdown(summary["monitoring"], mchecks, args.margin)
        checks += mchecks
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps({**results, "summary": summary}, indent=2))
    written = "bench.md, bench.png, bench.json" if training else "bench.md, bench.json"
    sys.stdout.write("\n" + text + f"\nwritten: {out}/{written}\n")
    return 0 if passed(checks, args.margin, loaded=args.loaded) else 1


if __name__ == "__main__":
    sys.exit(main())
