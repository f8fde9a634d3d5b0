"""Second round of attacks on the pipeline, through the `secure-pipeline` command:
signals to the whole process group, code dropped into site-packages, paths and
files that crashed or escaped, and what the operator is told about the audit trail.

The signal tests need cold runs (the command starts its store and its Prefect API);
the others share one kept-up stack (`kept`) so that each costs one short run.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BUNDLED_CSV
from tests.e2e.conftest import CLI, Pipeline, _env

pytestmark = pytest.mark.e2e

# World-readable on purpose: public keys and certificates, and SeaweedFS's volume
# info files (it creates them 0644 itself; the state dir is 0700 around them).
PUBLIC = re.compile(r"^(keys/[^/]+\.pub|tls/(ca|server)\.pem|seaweedfs/.*\.vif)$")


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A kept-up stack of its own (store, Prefect and MLflow), no run yet."""
    state = tmp_path_factory.mktemp("inputs") / "state"
    pipe = Pipeline(state_dir=state, env=_env(state))
    up = pipe.run("local", "up", timeout=240)
    assert up.returncode == 0, up.stderr
    try:
        yield pipe
    finally:
        pipe.run("local", "down", timeout=120)


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def _ours(state: Path) -> list[str]:
    """Live processes started for `state`: its path in their command line or in their
    environment (the temporary Prefect API has it as PREFECT_HOME)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if "\nState:\tZ" in status:
            continue
        if str(state).encode() in cmdline or f"={state}".encode() in environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:120])
    return found


# --- 1. a signal to the whole process group (Ctrl-C, `timeout`, systemd) -----------------
@pytest.mark.alone  # "within seconds": no parallel test worker beside it
@pytest.mark.parametrize(
    ("point", "sig"),
    [("ingest", signal.SIGTERM), ("train", signal.SIGINT), ("deploy", signal.SIGTERM)],
)
def test_a_signal_to_the_process_group_ends_the_run_within_seconds(
    cold: Pipeline, tmp_path: Path, point: str, sig: signal.Signals
) -> None:
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [CLI, "run", "--report", str(report)],
        env=cold.env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell job: killpg reaches it all
    )
    assert proc.stderr is not None
    lines: list[str] = []
    if point == "ingest":  # the run is under way once its store is up: ingest is next
        lock = cold.state_dir / "seaweedfs.lock"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
    else:  # the stage lines: train starts after screen's, deploy after sign's
        before = {"train": "screen", "deploy": "sign"}[point]
        for line in proc.stderr:
            lines.append(line)
            if line.split()[:1] == [before]:
                break
    weed = int((cold.state_dir / "seaweedfs.lock").read_text())
    os.killpg(proc.pid, sig)
    sent = time.monotonic()
    _, rest = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    err = "".join(lines) + rest
    assert proc.returncode == 128 + sig, err
    assert took < 10, f"{took:.1f} s after {sig.name} to the group at {point}"
    assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert json.loads(report.read_text())["status"] == "interrupted"
    entries = [json.loads(e) for e in (cold.state_dir / "audit" / "audit.jsonl").open()]
    ends = [e for e in entries if e["event"] == "run.end"]
    assert len(ends) == 1 and ends[0]["status"] == "interrupted"
    time.sleep(0.5)
    assert not Path(f"/proc/{weed}").exists(), "the store the command started still runs"
    assert not _ours(cold.state_dir), "stray processes"
    assert not list(Path("/tmp").glob(f"weed.*.{weed}")), "SeaweedFS logged outside the state"
    assert cold.state_dir.stat().st_mode & 0o077 == 0
    readable = [
        str(p.relative_to(cold.state_dir))
        for p in cold.state_dir.rglob("*")
        if p.is_file() and p.stat().st_mode & 0o004
    ]
    assert [p for p in readable if not PUBLIC.match(p)] == [], readable
    assert not (cold.state_dir / "prefect" / "storage").exists()  # nothing pickled
    console = (cold.state_dir / "logs" / "last-run.log").read_text(errors="replace")
    assert not [ln for ln in (err + console).splitlines() if "ERROR" in ln and "vent" in ln]


# --- 2. code that belongs to no distribution --------------------------------------------
def test_a_pth_and_module_dropped_into_site_packages_block_the_run(
    kept: Pipeline, tmp_path: Path
) -> None:
    # A copy of this venv (hard links: seconds, and the shared venv is never touched),
    # with the attack of the finding: a .pth that imports a module at every start-up.
    venv = Path(sys.prefix)
    copy = tmp_path / "venv"
    subprocess.run(["cp", "-al", str(venv), str(copy)], check=True)
    site = next(copy.glob("lib/python3*/site-packages"))
    (site / "zz_patch.pth").write_text("import zz_patch\n")
    (site / "zz_patch.py").write_text("import os\nos.environ['ZZ_PATCHED'] = '1'\n")
    report = tmp_path / "r.json"
    out = subprocess.run(
        [
            str(copy / "bin" / "python"),
            "-m",
            "flows.cli",
            "run",
            "--quiet",
            "--report",
            str(report),
        ],
        env=kept.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = one_line(out.stderr)
    assert out.returncode == 1 and "sign.dependencies" in line and "zz_patch" in line, line
    data = json.loads(report.read_text())
    gate = next(g for g in data["gates"] if g["name"] == "sign.dependencies")
    assert data["blocked_by"] == "sign.dependencies" and not gate["passed"]
    unrecorded = gate["metrics"]["unrecorded_files"]  # and the .pyc Python wrote for it
    assert {"zz_patch.pth", "zz_patch.py"} <= set(unrecorded), unrecorded
    assert all("zz_patch" in f for f in unrecorded), unrecorded
    assert "zz_patch.pth" in line  # the .pth, which runs at every start-up, is named
    assert gate["metrics"]["files_modified"] == 0
    assert gate["metrics"]["lock_compared_with"].startswith("commit ")
    assert not (venv / site.relative_to(copy) / "zz_patch.pth").exists()


# --- 3. paths confined before anything is opened, parser errors refused -----------------
def test_a_symlink_loop_given_to_data_is_a_usage_error(kept: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    out = kept.run("run", "--data", str(tmp_path / "loop.csv"))
    assert out.returncode == 2 and "symlink loop" in one_line(out.stderr), out.stderr


@pytest.mark.parametrize("target", ["/etc/passwd", "outside"])
def test_a_data_symlink_leading_out_of_its_directory_is_refused(
    kept: Pipeline, tmp_path: Path, target: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if target == "outside":  # a good table outside the directory the operator named
        (tmp_path / "elsewhere").mkdir()
        target = str(shutil.copy(BUNDLED_CSV, tmp_path / "elsewhere" / "new.csv"))
    (data / "new.csv").symlink_to(target)
    code, report, err = kept.train(tmp_path, "--data", str(data / "new.csv"))
    assert code == 1 and report["blocked_by"] == "ingest.source", err
    gate = report["gates"][-1]
    assert gate["metrics"]["reason"] == "symlink_escape"
    assert gate["threshold"]["data_root"] == str(data.resolve())  # never the target's dir
    assert "root:" not in json.dumps(report)  # nothing of /etc/passwd was read


def _parquet_with_duplicate_columns() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(BUNDLED_CSV)
    table = pa.table([pa.array(frame[c]) for c in frame.columns], names=list(frame.columns))
    table = table.rename_columns([*frame.columns[:-2], frame.columns[0], frame.columns[-1]])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _ragged_first_row() -> bytes:
    lines = BUNDLED_CSV.read_text().splitlines(keepends=True)
    return "".join([lines[0], "7," + lines[1], *lines[2:]]).encode()


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("dupes.parquet", _parquet_with_duplicate_columns, "duplicate column names"),
        ("ragged.csv", _ragged_first_row, "row 2 (the first data row) has"),
    ],
)
def test_a_file_that_does_not_parse_is_refused_by_the_format_gate(
    kept: Pipeline, tmp_path: Path, name: str, content: object, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content())  # type: ignore[operator]
    code, report, err = kept.train(tmp_path, "--data", str(path))
    line = one_line(err)
    assert code == 1 and report["blocked_by"] == "ingest.format", line
    assert says in line and "missing" not in line


# --- 4. what the operator is told about the audit trail ---------------------------------
def test_a_failed_anchor_after_a_deploy_is_said_and_audit_verify_counts_the_gap(
    kept: Pipeline, tmp_path: Path
) -> None:
    creds_path = kept.state_dir / "s3" / "roles" / "auditor.json"
    original = creds_path.read_bytes()
    creds = json.loads(original)
    creds["secret_key"] = "x" * 40  # the store refuses the anchor's signature
    creds_path.write_text(json.dumps(creds))
    try:
        code, report, err = kept.train(tmp_path)
    finally:
        creds_path.write_bytes(original)
    lines = err.strip().splitlines()
    assert code == 0 and report["status"] == "deployed" and report["audit_anchor"] is None, err
    assert lines[0].startswith("deployed ") and len(lines) == 2
    assert "could not be anchored" in lines[1] and "audit verify" in lines[1]
    out = kept.run("audit", "verify")
    assert out.returncode == 0, out.stderr
    assert re.search(r"\d+ entries (after it )?\(entries \d+-\d+\) not anchored yet", out.stderr)
    code, _, err = kept.train(tmp_path)  # the next run anchors everything
    assert code == 0, err
    out = kept.run("audit", "verify")
    assert out.returncode == 0 and "not anchored" not in out.stderr, out.stderr
