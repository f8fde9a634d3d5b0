"""What scaling out relies on, checked without the services: the deployment's
concurrency limit, and where a tracking server's runs keep their artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tasks.common.settings import PROJECT_ROOT, load_settings
from tasks.common.tracking import artifact_location
from tests.scale import services


def test_the_training_deployment_runs_one_at_a_time_and_queues_the_rest() -> None:
    data = yaml.safe_load((PROJECT_ROOT / "infra/prefect/prefect.yaml").read_text())
    by_entry = {d["entrypoint"]: d for d in data["deployments"]}
    training = by_entry["flows/training.py:secure_training"]
    assert training["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_a_tracking_server_chooses_where_artifacts_go(tmp_path: Path) -> None:
    local = load_settings(state_dir=tmp_path / "state")
    assert artifact_location(local) == local.artifact_root  # SQLite: under the state dir
    for uri in ("http://mlflow.internal:5000", "https://mlflow.example.com"):
        remote = load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=uri)
        assert artifact_location(remote) is None  # the server's --artifacts-destination
    database = load_settings(
        state_dir=tmp_path / "state", mlflow_tracking_uri="postgresql+psycopg2://db/mlflow"
    )
    assert artifact_location(database) == database.artifact_root  # opened by this process


def test_without_postgresql_the_scale_test_fails_and_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no initdb on PATH
    monkeypatch.setattr(services, "DEBIAN_PG", tmp_path)  # nor Debian's
    monkeypatch.setitem(sys.modules, "pgserver", None)  # nor the pgserver wheel
    with pytest.raises(pytest.fail.Exception, match=r"make postgres.*pip install pgserver"):
        services.postgres_bin_dir()
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "initdb").touch()
    assert services.postgres_bin_dir() == tmp_path / "15" / "bin"
