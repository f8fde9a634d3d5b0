"""Every pipeline run is an MLflow run (SQLite in tmp): `record_outcome`, `run_url`,
the experiment's kind, and the logged model's input example."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import socket
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tasks.common.errors import PipelineError
from tasks.common.gates import GateResult
from tasks.common.outcome import CLASSIC_VIEW, QUICK_HTTP, record_outcome, run_url
from tasks.common.registry import ModelRegistry
from tasks.common.report import RunReport
from tasks.common.settings import Settings, load_settings
from tasks.common.tracking import EXPERIMENT_KIND, configure_mlflow, mlflow_client
from tasks.mlflow_model import EXAMPLE_ROWS, input_example

pytestmark = pytest.mark.integration
NAME = re.compile(r"^breast_cancer-breast-cancer-classifier-\d{8}-\d{6}$")
DATA_GATES = [
    GateResult(name="ingest.integrity", passed=True, metrics={"bytes": 124_000}),
    GateResult(name="pii.scan", passed=True, metrics={"columns_flagged": 0}),
    GateResult(
        name="validate.expectations",
        passed=False,
        metrics={"failed": 2, "success_percent": 93.5, "ratio": float("nan"), "ok": True},
        threshold={"max_failed": 0},
        detail="2 expectations failed",
    ),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One SQLite store for the module (creating one costs seconds); each test makes
    its own runs and versions."""
    return load_settings(state_dir=tmp_path_factory.mktemp("outcome") / "state")


def _version(settings: Settings, run_id: str, source: Path) -> str:
    """A registered version of the configured model for run `run_id` (no model file)."""
    from mlflow.exceptions import MlflowException

    client, name = mlflow_client(settings), settings.model.name
    with contextlib.suppress(MlflowException):
        client.create_registered_model(name)
    return str(client.create_model_version(name, source=str(source), run_id=run_id).version)


def _report(status: str, gates: list[GateResult], **fields: object) -> RunReport:
    return RunReport(
        flow_run_id="flow-123",
        status=status,  # type: ignore[arg-type]
        gates=[g.as_report() for g in gates],
        dataset={"uri": "/data/breast_cancer.csv", "sha256": "ab" * 32, "rows": 569},
        **fields,  # type: ignore[arg-type]
    )


def _artifacts(settings: Settings, run_id: str, path: str = "") -> set[str]:
    return {a.path for a in mlflow_client(settings).list_artifacts(run_id, path)}


def test_blocked_before_training_gets_its_own_run(store: Settings) -> None:
    settings = store
    report = _report(
        "blocked",
        DATA_GATES,
        blocked_by="validate.expectations",
        stages={"ingest": 0.4, "pii": 0.1, "validate": 1.25},
    )
    run_id = record_outcome(
        settings,
        report,
        flow_run_id="flow-123",
        model_run_id=None,
        model_version=None,
        release_dir=None,
    )
    assert run_id is not None
    client = mlflow_client(settings)
    run = client.get_run(run_id)
    assert run.info.experiment_id == configure_mlflow(settings)
    assert NAME.match(run.info.run_name)
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert tags["status"] == "blocked" and tags["blocked_by"] == "validate.expectations"
    assert {k: v for k, v in tags.items() if k.startswith("gate.")} == {
        "gate.ingest.integrity": "passed",
        "gate.pii.scan": "passed",
        "gate.validate.expectations": "failed",
    }
    assert tags["prefect.flow_run_id"] == "flow-123"
    assert (tags["dataset"], tags["model"], tags["estimator"]) == (
        "breast_cancer",
        "breast-cancer-classifier",
        "logistic_regression",
    )
    note = tags["mlflow.note.content"]  # the run's description in the UI
    assert "blocked by validate.expectations: measured failed=2" in note
    assert "2 of 3 gates passed; failed: validate.expectations" in note
    # Numeric, finite metrics only (no NaN, no bool), and the stage times.
    assert run.data.metrics == {
        "ingest.integrity.bytes": 124_000,
        "pii.scan.columns_flagged": 0,
        "validate.expectations.failed": 2,
        "validate.expectations.success_percent": 93.5,
        "stage.ingest.seconds": 0.4,
        "stage.pii.seconds": 0.1,
        "stage.validate.seconds": 1.25,
    }
    assert run.data.params["dataset.sha256"] == "ab" * 32
    assert _artifacts(settings, run_id) == {"run_report.json"}
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="run_report.json", tracking_uri=settings.tracking_uri
    )
    logged = json.loads(Path(local).read_text())
    assert logged["status"] == "blocked" and logged["flow_run_id"] == "flow-123"
    assert [g["name"] for g in logged["gates"]] == [g.name for g in DATA_GATES]


def test_model_run_gets_the_outcome_release_and_version_description(
    store: Settings, tmp_path: Path
) -> None:
    settings = store
    client = mlflow_client(settings)
    experiment_id = configure_mlflow(settings)
    train_run = client.create_run(experiment_id, run_name="train")
    run_id = train_run.info.run_id
    client.log_metric(run_id, "evaluate.quality.accuracy", 0.97, step=0)  # as _record does
    client.set_terminated(run_id)
    registry = ModelRegistry.for_settings(settings)
    version = _version(settings, run_id, tmp_path)
    release = tmp_path / "release"
    release.mkdir()
    for name in ("model.skops", "provenance.dsse.json", "sbom.cdx.json", "report.json"):
        (release / name).write_text("{}")
    (release / "security-report.html").write_text("<!DOCTYPE html>")
    gates = [
        *DATA_GATES[:2],
        GateResult(name="train.artifact_roundtrip", passed=True, metrics={"mismatches": 0}),
        GateResult(name="evaluate.quality", passed=True, metrics={"accuracy": 0.97}),
        GateResult(name="evaluate.membership_inference", passed=True, metrics={"advantage": 0.3}),
    ]
    waiver = {"gate": "evaluate.membership_inference", "setting": "x", "value": 1, "safe": 0}
    report = _report(
        "deployed",
        gates,
        deployment={"uri": "s3://models/releases/v1", "sse": "AES256"},
        waivers=[{**waiver, "reason": "a documented reason"}],
        stages={"train": 2.0, "evaluate": 3.0},
    )

    assert (
        record_outcome(
            settings,
            report,
            flow_run_id="flow-123",
            model_run_id=run_id,
            model_version=version,
            release_dir=release,
        )
        == run_id
    )
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == "deployed" and "blocked_by" not in run.data.tags
    assert run.data.tags["gate.evaluate.membership_inference"] == "waived"
    assert run.data.tags["gate.evaluate.quality"] == "passed"
    assert run.data.tags["deployment.uri"] == "s3://models/releases/v1"
    assert run.data.metrics["train.artifact_roundtrip.mismatches"] == 0
    # Already logged by evaluate: not a second entry.
    assert len(client.get_metric_history(run_id, "evaluate.quality.accuracy")) == 1
    assert _artifacts(settings, run_id) == {"run_report.json", "release"}
    assert _artifacts(settings, run_id, "release") == {
        "release/provenance.dsse.json",
        "release/sbom.cdx.json",
        "release/report.json",
        "release/security-report.html",
    }
    description = client.get_model_version(registry.name, version).description
    assert description.startswith("Deployed: 5 of 5 gates passed")
    assert "waived: evaluate.membership_inference" in description
    assert "s3://models/releases/v1" in description


def test_blocked_model_run_ends_failed_and_says_why(store: Settings, tmp_path: Path) -> None:
    settings = store
    client = mlflow_client(settings)
    run_id = client.create_run(configure_mlflow(settings)).info.run_id
    client.set_terminated(run_id)
    registry = ModelRegistry.for_settings(settings)
    version = _version(settings, run_id, tmp_path)
    gates = [GateResult(name="evaluate.quality", passed=False, metrics={"accuracy": 0.5})]
    report = _report("blocked", gates, blocked_by="evaluate.quality")
    record_outcome(
        settings,
        report,
        flow_run_id="f",
        model_run_id=run_id,
        model_version=version,
        release_dir=None,
    )
    assert client.get_run(run_id).info.status == "FAILED"
    description = client.get_model_version(registry.name, version).description
    assert description == (
        "Blocked by evaluate.quality: 0 of 1 gates passed; failed: evaluate.quality."
    )


def test_experiment_opens_on_runs(store: Settings) -> None:
    settings = store
    client = mlflow_client(settings)
    experiment_id = configure_mlflow(settings)
    tags = client.get_experiment(experiment_id).tags
    assert tags[EXPERIMENT_KIND] == "custom_model_development"
    # An experiment created before the tag gets it; a kind someone chose is kept.
    old = client.create_experiment("older", artifact_location=settings.artifact_root)
    older = settings.model_copy(update={"mlflow_experiment": "older"})
    assert configure_mlflow(older) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND] == "custom_model_development"
    client.set_experiment_tag(old, EXPERIMENT_KIND, "genai_development")
    configure_mlflow(older)
    assert client.get_experiment(old).tags[EXPERIMENT_KIND] == "genai_development"


def test_unreachable_mlflow_returns_none_quickly(tmp_path: Path, monkeypatch, caplog) -> None:
    for key in QUICK_HTTP:
        monkeypatch.delenv(key, raising=False)
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(
        state_dir=tmp_path / "state", mlflow_tracking_uri=f"http://127.0.0.1:{port}"
    )
    report = _report("blocked", DATA_GATES, blocked_by="validate.expectations")
    started = time.monotonic()
    for model_run_id in (None, "0" * 32):
        assert (
            record_outcome(
                settings,
                report,
                flow_run_id="f",
                model_run_id=model_run_id,
                model_version="1",
                release_dir=None,
            )
            is None
        )
    assert time.monotonic() - started < 5
    assert "MLflow did not record the run's outcome" in caplog.text
    assert all(key not in os.environ for key in QUICK_HTTP)  # restored


def test_run_url(store: Settings) -> None:
    settings = store
    client = mlflow_client(settings)
    experiment_id = configure_mlflow(settings)
    run_id = client.create_run(experiment_id).info.run_id
    port = settings.local.mlflow_port
    assert run_url(settings, run_id) == (
        f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}{CLASSIC_VIEW}"
    )
    assert run_url(settings, "f" * 32) == f"http://127.0.0.1:{port}/#/runs/{'f' * 32}{CLASSIC_VIEW}"
    remote = settings.model_copy(update={"mlflow_tracking_uri": "databricks"})
    assert run_url(remote, run_id) is None


def test_input_example_holds_no_training_record(bundled: pd.DataFrame) -> None:
    settings = load_settings()
    frame = bundled.drop(columns="target").assign(
        colour=["red", "blue", "blue", "green"] * 142 + ["red"]
    )
    example = input_example(frame, settings.dataset)
    assert list(example.columns) == list(frame.columns)
    assert list(example.dtypes) == list(frame.dtypes)
    assert len(example) == EXAMPLE_ROWS
    assert list(example["colour"]) == ["blue", "red", "green", "blue", "red"]  # by frequency
    rows = {tuple(r) for r in frame.itertuples(index=False)}
    assert not any(tuple(r) in rows for r in example.itertuples(index=False))
    pii = settings.dataset.model_copy(update={"pii": {"colour": "drop"}})
    with pytest.raises(PipelineError, match="colour"):
        input_example(frame, pii)


def test_logged_model_has_example_and_mlflow_never_loads_it(store: Settings, monkeypatch) -> None:
    """The train stage's run: its name, tags, signature and example; MLflow's loader
    is not called even where the environment would allow it."""
    from tasks.common.context import RunContext
    from tasks.train import train
    from tests.conftest import bundled_dataset

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    loads: list[str] = []
    # The module itself: `mlflow.pyfunc` may be a lazy stand-in that setattr would miss.
    pyfunc = importlib.import_module("mlflow.pyfunc")
    monkeypatch.setattr(pyfunc, "load_model", lambda *a, **k: loads.append("pyfunc"))
    settings = store
    model, _ = train(RunContext(settings, "flow-9"), bundled_dataset(), suite_sha256="ab" * 32)
    assert loads == []
    run = mlflow_client(settings).get_run(model.mlflow_run_id)
    assert NAME.match(run.info.run_name)
    assert run.data.tags["prefect.flow_run_id"] == "flow-9"
    assert run.data.tags["estimator"] == "logistic_regression"
    mlmodel = (model.skops_path.parent / "MLmodel").read_text()
    assert "signature:" in mlmodel and "saved_input_example_info" in mlmodel
    example = json.loads((model.skops_path.parent / "input_example.json").read_text())
    assert len(example["data"]) == EXAMPLE_ROWS
    assert example["columns"] == list(model.x_train.columns)
    assert "target" not in example["columns"]
