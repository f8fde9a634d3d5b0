"""End-to-end fixtures: the real `secure-pipeline` command in subprocesses,
against a kept-up embedded stack (SeaweedFS, Prefect server, MLflow UI) in a
throwaway state directory on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

CLI = str(Path(sys.executable).parent / "secure-pipeline")


@dataclass
class Pipeline:
    """Runs the CLI with one state directory and inspects what it left."""

    state_dir: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def train(self, tmp: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
        report = tmp / f"report-{len(list(tmp.glob('report-*')))}.json"
        proc = self.run("run", "--quiet", "--report", str(report), *extra)
        data = json.loads(report.read_text()) if report.exists() else {}
        return proc.returncode, data, proc.stderr

    def settings(self) -> Any:
        """The settings the CLI sees (same state dir and ports)."""
        from tasks.common.settings import LocalStackConfig, load_settings

        ports = LocalStackConfig(
            s3_port=int(self.env["SECURE_PIPELINE_LOCAL__S3_PORT"]),
            prefect_port=int(self.env["SECURE_PIPELINE_LOCAL__PREFECT_PORT"]),
            mlflow_port=int(self.env["SECURE_PIPELINE_LOCAL__MLFLOW_PORT"]),
        )
        return load_settings(state_dir=self.state_dir, local=ports)

    def bucket_keys(self, prefix: str = "") -> list[str]:
        """Every object version in the deployment bucket under `prefix`."""
        from tasks.common.s3 import s3_client
        from tasks.localstack.stack import s3_service

        settings = self.settings()
        with s3_service(settings) as endpoint:
            client = s3_client(endpoint)
            out = client.list_object_versions(Bucket=settings.storage.bucket, Prefix=prefix)
        return sorted(f"{v['Key']}@{v['VersionId']}" for v in out.get("Versions", []))

    def prefect_api(self, method: str, path: str, body: Any = None) -> Any:
        """One call to the kept-up Prefect server's REST API, answered as JSON.

        The server answers 503 while its SQLite file is busy (the flow run writes
        states and logs at the same moment): Prefect's own client retries those, so
        the tests do too (six tries, backing off), and fail on anything else."""
        import time

        import httpx

        url = f"http://127.0.0.1:{self.env['SECURE_PIPELINE_LOCAL__PREFECT_PORT']}/api{path}"
        for attempt in range(6):
            resp = httpx.request(method, url, json=body, timeout=30)
            if resp.status_code != 503:
                break
            time.sleep(0.5 * 2**attempt)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def champion(self) -> str | None:
        from mlflow.exceptions import MlflowException

        from tasks.common.tracking import mlflow_client

        settings = self.settings()
        try:
            mv = mlflow_client(settings).get_model_version_by_alias(settings.model.name, "champion")
        except MlflowException:
            return None
        return str(mv.version)


def _env(state_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_PIPELINE_", "PREFECT_", "MLFLOW_"))
    }
    env.update(
        {
            "SECURE_PIPELINE_STATE_DIR": str(state_dir),
            "SECURE_PIPELINE_LOCAL__S3_PORT": str(free_port()),
            "SECURE_PIPELINE_LOCAL__PREFECT_PORT": str(free_port()),
            "SECURE_PIPELINE_LOCAL__MLFLOW_PORT": str(free_port()),
        }
    )
    return env


@pytest.fixture(scope="session")
def kept_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack kept up with `local up`, and a first clean run deployed on it."""
    state = tmp_path_factory.mktemp("e2e") / "state"
    pipe = Pipeline(state_dir=state, env=_env(state))
    up = pipe.run("local", "up", timeout=180)
    assert up.returncode == 0, up.stderr
    try:
        code, report, err = pipe.train(state.parent)
        assert code == 0, err
        assert report["status"] == "deployed"
        yield pipe
    finally:
        pipe.run("local", "down", timeout=120)


@pytest.fixture
def cold(tmp_path: Path) -> Pipeline:
    """Nothing running: the command starts what it needs and stops it after."""
    state = tmp_path / "state"
    return Pipeline(state_dir=state, env=_env(state))
