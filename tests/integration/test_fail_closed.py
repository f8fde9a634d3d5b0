"""Every gate fails closed, systemically: for each gate in the catalog, its check is
made to raise, and the real flow (Prefect, MLflow, SeaweedFS) must end blocked by
that very gate: not deployed, not crashed, not blocked by another gate. The monitoring
flow's gates likewise end a monitoring run in an alert from that very gate.

One state directory and one kept-up SeaweedFS serve every case, so each case costs a
flow run (a few seconds), not a stack start.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.common.catalog import GATES, Gate
from tasks.common.settings import LocalStackConfig, Settings, load_settings
from tasks.localstack import stack
from tests.conftest import BUNDLED_CSV
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


TRAINING = [g for g in GATES if g.flow == "training"]
MONITORING = [g for g in GATES if g.flow == "monitoring"]


class CheckFault(RuntimeError):
    """Raised by a check under test; its name must reach the report."""


@pytest.fixture(scope="module")
def run_env(
    tmp_path_factory: pytest.TempPathFactory, prefect_api: None
) -> Iterator[tuple[Settings, pytest.MonkeyPatch]]:
    state, port = tmp_path_factory.mktemp("fail-closed") / "state", free_port()
    env = pytest.MonkeyPatch()  # what the flow reads: it loads its settings itself
    env.setenv("SECURE_PIPELINE_STATE_DIR", str(state))
    env.setenv("SECURE_PIPELINE_LOCAL__S3_PORT", str(port))
    settings = load_settings(state_dir=state, local=LocalStackConfig(s3_port=port))
    stack.local_up(settings, ui=False)
    try:
        yield settings, env
    finally:
        stack.local_down(settings)
        env.undo()


def run_flow(tmp: Path) -> dict:
    from flows.training import secure_training

    report = tmp / "report.json"
    state = secure_training(report_path=str(report), return_state=True)
    assert report.is_file(), state
    return json.loads(report.read_text())


def test_a_clean_run_deploys(run_env: tuple[Settings, pytest.MonkeyPatch], tmp_path: Path) -> None:
    """The baseline: with no fault injected, the same run deploys (so every block
    below is caused by its fault)."""
    report = run_flow(tmp_path)
    assert report["status"] == "deployed", report.get("error") or report.get("blocked_by")
    assert {g["name"] for g in report["gates"]} == {g.name for g in TRAINING}


@pytest.mark.parametrize("gate", TRAINING, ids=lambda g: g.name)
def test_a_raising_check_blocks_the_run_at_its_gate(
    run_env: tuple[Settings, pytest.MonkeyPatch],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gate: Gate,
) -> None:
    module_name, _, attr = gate.check.partition(":")
    module = importlib.import_module(module_name)
    calls: list[str] = []

    def broken(*args: object, **kwargs: object) -> None:
        calls.append(gate.name)
        raise CheckFault("injected")

    monkeypatch.setattr(module, attr, broken)
    report = run_flow(tmp_path)
    assert calls, f"{gate.check} was never called: the catalog names the wrong function"
    assert report["status"] == "blocked", (report["status"], report.get("error"))
    assert report["blocked_by"] == gate.name
    result = next(g for g in report["gates"] if g["name"] == gate.name)
    assert not result["passed"] and "CheckFault" in result["detail"], result
    assert report["deployment"] is None


def monitor_flow(tmp: Path) -> dict:
    from flows.monitoring import secure_monitoring

    report = tmp / "monitor.json"
    state = secure_monitoring(report_path=str(report), data=str(BUNDLED_CSV), return_state=True)
    assert report.is_file(), state
    return json.loads(report.read_text())


@pytest.mark.parametrize("gate", MONITORING, ids=lambda g: g.name)
def test_a_raising_monitoring_check_alerts_at_its_gate(
    run_env: tuple[Settings, pytest.MonkeyPatch],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gate: Gate,
) -> None:
    """After the clean run above deployed a champion: a monitoring run whose check
    raises ends ``alert`` from that gate (the other gates still ran)."""
    module_name, _, attr = gate.check.partition(":")
    module = importlib.import_module(module_name)

    def broken(*args: object, **kwargs: object) -> None:
        raise CheckFault("injected")

    monkeypatch.setattr(module, attr, broken)
    report = monitor_flow(tmp_path)
    assert report["status"] == "alert", (report["status"], report.get("error"))
    failed = [g for g in report["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == [gate.name], failed
    assert "CheckFault" in failed[0]["detail"]
