"""`secure-pipeline monitor` end to end, on the kept-up stack with its deployed
champion: a clean batch is healthy (metrics file and page written, even with the
Pushgateway down), a drifted one alerts naming exactly the moved columns and ends the
Prefect flow run in a Failed-type state named Alert, bad batches are refused with one
line, and a state with no champion alerts from monitor.integrity. The tampered
champion and the edited audit log are in tests/e2e/test_run.py, beside verify and
audit verify (a state of its own, and the kept-up log restored)."""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import BUNDLED_CSV
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.e2e

MOVED = ["mean radius", "worst area", "mean texture"]  # scaled 1.3x
HOLED = "mean smoothness"  # 30% of its cells emptied


def monitor(pipe: Pipeline, tmp: Path, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    report = tmp / f"monitor-{len(list(tmp.glob('monitor-*')))}.json"
    saved = dict(pipe.env)
    pipe.env.update(env)
    try:
        proc = pipe.run("monitor", "--report", str(report), *args)
    finally:
        pipe.env.clear()
        pipe.env.update(saved)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def _batch(tmp: Path, frame: pd.DataFrame, name: str = "batch.csv") -> Path:
    path = tmp / name
    frame.to_csv(path, index=False)
    return path


def test_a_clean_batch_is_healthy_with_metrics_and_page_even_without_a_pushgateway(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    batch = pd.read_csv(BUNDLED_CSV).sample(400, random_state=7)
    gateway = f"http://127.0.0.1:{_closed_port()}"
    code, report, err = monitor(
        kept_up,
        tmp_path,
        "--data",
        str(_batch(tmp_path, batch)),
        SECURE_PIPELINE_MONITORING__PUSHGATEWAY=gateway,
    )
    assert code == 0, err
    assert report["status"] == "healthy" and report["flow"] == "monitoring", report
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("healthy"), err
    names = [g["name"] for g in report["gates"]]
    for gate in ("monitor.integrity", "monitor.audit", "monitor.drift", "monitor.quality"):
        assert gate in names, names
    assert all(g["passed"] for g in report["gates"]), report["gates"]
    mon = report["monitor"]
    assert mon["drift"]["moved"] == [] and mon["quality"]["labelled"] is True
    assert mon["champion"]["version"] == kept_up.champion()
    page = Path(mon["page"])
    html = page.read_text()
    assert "<script" not in html.lower() and "://" not in html and "mean radius" in html
    prom = kept_up.settings().metrics_dir / "secure_pipeline_monitoring.prom"
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    gates = {s.labels["gate"] for s in families["secure_pipeline_gate_passed"].samples}
    assert {"monitor.integrity", "monitor.drift"} <= gates
    # The outage is said once, in the log; the verdict and the file stand.
    assert report["metrics"]["pushed"] is False, report["metrics"]
    assert "127.0.0.1" in report["metrics"]["error"]


def test_a_drifted_batch_alerts_naming_exactly_the_moved_columns(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    batch = pd.read_csv(BUNDLED_CSV).sample(400, random_state=11)
    batch[MOVED] = batch[MOVED] * 1.3
    holes = np.random.default_rng(0).random(len(batch)) < 0.3
    batch.loc[holes, HOLED] = np.nan
    code, report, err = monitor(kept_up, tmp_path, "--data", str(_batch(tmp_path, batch)))
    assert code == 1, err
    assert report["status"] == "alert" and report["blocked_by"] == "monitor.drift", report
    assert set(report["monitor"]["drift"]["moved"]) == {*MOVED, HOLED}
    line = err.strip().splitlines()[-1]
    assert line.startswith("alert from monitor.drift") and "mean radius" in line, line
    assert "Traceback" not in err
    # In Prefect: a Failed-type state named Alert whose message names the gate.
    state = kept_up.prefect_api("GET", f"/flow_runs/{report['flow_run_id']}")["state"]
    assert state["type"] == "FAILED" and state["name"] == "Alert", state
    assert "monitor.drift" in state["message"]


@pytest.mark.parametrize(
    "case",
    ["pickle named .csv", "empty", "other columns"],
)
def test_bad_batches_are_refused_with_one_line(
    kept_up: Pipeline, tmp_path: Path, case: str
) -> None:
    path = tmp_path / "batch.csv"
    if case == "pickle named .csv":
        path.write_bytes(pickle.dumps({"not": "a table"}))
    elif case == "empty":
        path.write_text("")
    else:
        pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]}).to_csv(path, index=False)
    code, report, err = monitor(kept_up, tmp_path, "--data", str(path))
    assert code == 1, err
    assert report["status"] == "alert" and report["blocked_by"], report
    verdict = err.strip().splitlines()[-1]
    assert "Traceback" not in err and verdict.startswith(f"alert from {report['blocked_by']}")


def test_usage_errors_exit_2(kept_up: Pipeline, tmp_path: Path) -> None:
    out = kept_up.run("monitor", "--data", str(tmp_path / "absent.csv"))
    assert out.returncode in (1, 2), out.stderr  # a missing file: ingest.source refuses it
    assert "Traceback" not in out.stderr
    out = kept_up.run("monitor", "--no-such-flag")
    assert out.returncode == 2


def test_no_champion_yet_alerts_from_integrity(cold: Pipeline, tmp_path: Path) -> None:
    code, report, err = monitor(cold, tmp_path)
    assert code == 1, err
    assert report["blocked_by"] == "monitor.integrity", report
    assert "no champion" in err.strip().splitlines()[-1], err
