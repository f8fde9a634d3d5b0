"""Shared fixtures. The environment is set before any test module imports
Prefect or MLflow: telemetry off, and all state in a throwaway directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tasks.common.environment import TELEMETRY_OFF

_SESSION_STATE = Path(tempfile.mkdtemp(prefix="secure-pipeline-tests-"))
os.environ.update(TELEMETRY_OFF)
os.environ["PREFECT_HOME"] = str(_SESSION_STATE / "prefect")
os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] = "false"
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_STATE / 'mlflow.db'}"
for _var in list(os.environ):
    if _var.startswith("SECURE_PIPELINE_") or _var == "PREFECT_API_URL":
        del os.environ[_var]  # a developer's shell must not leak into the tests

import pytest  # noqa: E402

from tasks.common.context import RunContext  # noqa: E402
from tasks.common.settings import Settings, load_settings  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CSV = PROJECT_ROOT / "data" / "breast_cancer.csv"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The bundled configuration with its state in a fresh directory."""
    return load_settings(state_dir=tmp_path / "state")


@pytest.fixture
def ctx(settings: Settings) -> RunContext:
    return RunContext(settings=settings, run_id="test-run")
