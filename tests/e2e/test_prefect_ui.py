"""What a Prefect user sees, read back from Prefect's own API: a blocked run is a
Failed-type state named Blocked with the gate in its message, every gate is a line in
the run's log, the run carries its tags and artifacts, and the terminal shows one
line per stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import BUNDLED_CSV
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.e2e


def _flow_run(pipe: Pipeline, run_id: str) -> dict[str, Any]:
    run = pipe.prefect_api("GET", f"/flow_runs/{run_id}")
    logs = pipe.prefect_api(
        "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    )
    artifacts = pipe.prefect_api(
        "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    )
    return {"run": run, "logs": [entry["message"] for entry in logs], "artifacts": artifacts}


def test_a_blocked_run_is_labelled_blocked_with_every_gate_in_its_log(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    frame = pd.read_csv(BUNDLED_CSV)
    frame["backdoor_note"] = "x"  # an undeclared column: validation blocks
    data = tmp_path / "extra.csv"
    frame.to_csv(data, index=False)
    report_path = tmp_path / "r.json"
    proc = kept_up.run("run", "--data", str(data), "--report", str(report_path))
    assert proc.returncode == 1, proc.stderr
    report = json.loads(report_path.read_text())
    gate = report["blocked_by"]
    assert gate.startswith("validate."), gate

    # The terminal: one line per finished stage, the blocking one, then the verdict.
    # A stage slower than 10 s (a busy machine) also prints "running N s ..." lines.
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    done = [ln.split() for ln in lines[:-1] if ln.split()[1:2] != ["running"]]
    assert [words[0] for words in done] == ["ingest", "pii", "validate"], lines
    assert done[0][1] == "ok" and done[2][1] == "BLOCKED"
    assert lines[-1].startswith(f"blocked by {gate}: measured ")

    seen = _flow_run(kept_up, report["flow_run_id"])
    state = seen["run"]["state"]
    assert state["type"] == "FAILED" and state["name"] == "Blocked"
    assert gate in state["message"] and "threshold" in state["message"]
    assert {"dataset:breast_cancer", "model:breast-cancer-classifier"} <= set(seen["run"]["tags"])
    assert "estimator:logistic_regression" in seen["run"]["tags"]
    gate_lines = [m for m in seen["logs"] if m.startswith("gate ")]
    # Every gate of the report has its line (the screens, run beside a blocked
    # validation, log theirs too, as the audit log holds them).
    assert {g["name"] for g in report["gates"]} <= {
        m.split(":")[0].removeprefix("gate ") for m in gate_lines
    }
    assert any(m.startswith(f"gate {gate}: BLOCK; measured ") for m in gate_lines)
    assert not any("Traceback" in m for m in seen["logs"])
    kinds = {a["key"]: a["type"] for a in seen["artifacts"]}
    assert kinds.get("secure-training-gates") == "table"
    assert kinds.get("secure-training-report") == "markdown"
    table = next(a for a in seen["artifacts"] if a["key"] == "secure-training-gates")
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert all(len(r["measured"]) <= 120 for r in rows)  # reads at a normal width
    assert not any(len(w) > 20 for r in rows for w in r["measured"].split() if w.isalnum())


def test_a_deployed_run_logs_every_gate_and_links_its_mlflow_run(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    code, report, err = kept_up.train(tmp_path)
    assert code == 0, err
    seen = _flow_run(kept_up, report["flow_run_id"])
    assert seen["run"]["state"]["type"] == "COMPLETED"
    logged = {m.split(":")[0].removeprefix("gate ") for m in seen["logs"] if m.startswith("gate ")}
    assert logged == {g["name"] for g in report["gates"]}
    (link,) = [a for a in seen["artifacts"] if a["key"] == "mlflow-run"]  # a link artifact
    assert "/runs/" in json.dumps(link["data"])


def test_the_uis_show_a_blocked_run_and_its_gates_in_a_browser(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    """Debian's chromium, network off: the Prefect run page says Blocked and shows the
    gate; the MLflow run page lists the gate metrics. Screenshots are kept."""
    from tests.browser import artifact_path, screenshot, visible_text, wait_for_text

    frame = pd.read_csv(BUNDLED_CSV)
    frame["extra_field"] = 1.0
    data = tmp_path / "extra.csv"
    frame.to_csv(data, index=False)
    code, report, err = kept_up.train(tmp_path, "--data", str(data))
    assert code == 1, err
    prefect = f"http://127.0.0.1:{kept_up.env['SECURE_PIPELINE_LOCAL__PREFECT_PORT']}"
    page = f"{prefect}/runs/flow-run/{report['flow_run_id']}"
    shown = visible_text(wait_for_text(page, "Blocked", timeout=120))
    assert "dataset:breast_cancer" in shown and "estimator:logistic_regression" in shown
    screenshot(
        f"{page}?tab=Logs", artifact_path("prefect-blocked-run.png"), virtual_time_budget_ms=25000
    )

    from tasks.common.tracking import mlflow_client

    client = mlflow_client(kept_up.settings())
    (run,) = client.search_runs(
        [client.get_experiment_by_name(kept_up.settings().mlflow_experiment).experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{report['flow_run_id']}'",
    )
    assert run.data.tags["blocked_by"] == report["blocked_by"]
    from tasks.common.outcome import run_url

    url = run_url(kept_up.settings(), run.info.run_id)  # the link the Prefect run holds
    assert url is not None and "workflowType=machine_learning" in url
    wait_for_text(url, run.info.run_name, timeout=120)
    screenshot(url, artifact_path("mlflow-blocked-run.png"), virtual_time_budget_ms=15000)


def test_a_deployed_run_holds_every_gate_in_mlflow(kept_up: Pipeline, tmp_path: Path) -> None:
    code, report, err = kept_up.train(tmp_path)
    assert code == 0, err
    from tasks.common.tracking import mlflow_client

    client = mlflow_client(kept_up.settings())
    run = client.get_run(report["model"]["mlflow_run_id"])
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["status"] == "deployed" and "blocked_by" not in tags
    assert {f"gate.{g['name']}" for g in report["gates"]} <= set(tags)
    for gate in report["gates"]:
        numeric = [
            k
            for k, v in gate["metrics"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        assert all(f"{gate['name']}.{k}" in metrics for k in numeric), gate["name"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run_report.json", "release"} <= artifacts
    released = {a.path for a in client.list_artifacts(run.info.run_id, "release")}
    assert {"release/provenance.dsse.json", "release/sbom.cdx.json"} <= released
    version = client.get_model_version(report["model"]["name"], report["model"]["version"])
    assert version.description.startswith("Deployed:")
