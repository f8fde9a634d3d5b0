"""The training flow on production services: PostgreSQL behind a Prefect server and
an MLflow tracking server (artifacts in S3, here the embedded SeaweedFS), deployed
from ``infra/prefect/prefect.yaml`` to a process work pool and run by a worker.

Only what a user sets in production is set (README "Scaling out"): on the worker
``PREFECT_API_URL``, ``SECURE_PIPELINE_MLFLOW_TRACKING_URI``, the state directory and
``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false`` (the store's CA is private: artifacts
go through the tracking server); the servers' own database and artifact settings (the
MLflow server reaches the store with the pipeline's S3 identity here). Two runs are
triggered at once: the deployment's concurrency limit makes one wait
(AwaitingConcurrencySlot) until the other has ended, and both release a model that
`secure-pipeline verify` accepts.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tasks.common.s3 import s3_client
from tasks.common.settings import PROJECT_ROOT, LocalStackConfig, Settings, load_settings
from tasks.localstack import credentials, identities
from tasks.localstack.stack import local_down, local_status, local_up
from tasks.localstack.tls import tls_files
from tests.ports import free_port
from tests.scale.services import (
    BIN,
    Postgres,
    Service,
    answers,
    api,
    base_env,
    mlflow_server_argv,
    postgres,
    prefect_server_argv,
    started,
)

pytestmark = [pytest.mark.integration, pytest.mark.alone, pytest.mark.timeout(600)]

POOL = "secure-training"  # infra/prefect/prefect.yaml's work pool
DEPLOYMENT = "secure-training/nightly"
ARTIFACTS_BUCKET = "mlflow-artifacts"
RUNS_TIMEOUT = 420.0
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _cli(argv: list[str], env: dict[str, str], timeout: int = 180) -> None:
    proc = subprocess.run(
        argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(argv[:4])}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"


def _watch(prefect: Service, run_ids: list[str]) -> dict[str, list[str]]:
    """Poll both runs until they end; every state name each passed through."""
    seen: dict[str, list[str]] = {r: [] for r in run_ids}
    deadline = time.monotonic() + RUNS_TIMEOUT
    while time.monotonic() < deadline:
        done = True
        for run_id in run_ids:
            run: Any = api("GET", f"{prefect.url}/api/flow_runs/{run_id}")
            name = run["state"]["name"]
            if not seen[run_id] or seen[run_id][-1] != name:
                seen[run_id].append(name)
            done &= run["state"]["type"] in FINAL
        if done:
            return seen
        time.sleep(0.5)
    pytest.fail(f"runs not finished after {RUNS_TIMEOUT:.0f} s: {seen}")


def _stack(tmp: Path, stack: ExitStack) -> tuple[Postgres, Settings, Service, Service]:
    """PostgreSQL, the S3 store, and the Prefect and MLflow servers on them."""
    pg = stack.enter_context(postgres())
    pg.execute("postgres", "CREATE DATABASE prefect", "CREATE DATABASE mlflow")
    pg.execute("prefect", "CREATE EXTENSION IF NOT EXISTS pg_trgm")  # Prefect wants it
    ports = LocalStackConfig(s3_port=free_port(), prefect_port=free_port(), mlflow_port=free_port())
    settings = load_settings(state_dir=tmp / "state", local=ports)
    local_up(settings, ui=False)  # the store the runs deploy to, kept up between runs
    stack.callback(local_down, settings)
    s3_url = local_status(settings)["s3"]["url"]
    admin = s3_client(identities.endpoint_at(settings, s3_url, identity="admin"))
    admin.create_bucket(Bucket=ARTIFACTS_BUCKET)
    keys = credentials.role_keys(settings, "pipeline")
    logs = tmp / "logs"
    prefect = stack.enter_context(
        started(
            "prefect-server",
            prefect_server_argv(ports.prefect_port),
            base_env(
                PREFECT_HOME=str(tmp / "prefect-server"),
                PREFECT_API_DATABASE_CONNECTION_URL=pg.url("prefect", "postgresql+asyncpg"),
                PREFECT_UI_ENABLED="false",
                # A run refused a slot retries after this long (default 30 s).
                PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="5",
            ),
            logs,
            tmp,
            url=f"http://127.0.0.1:{ports.prefect_port}",
        )
    )
    mlflow = stack.enter_context(
        started(
            "mlflow-server",
            mlflow_server_argv(ports.mlflow_port),
            base_env(
                MLFLOW_BACKEND_STORE_URI=pg.url("mlflow", "postgresql+psycopg2"),
                MLFLOW_ARTIFACTS_DESTINATION=f"s3://{ARTIFACTS_BUCKET}",
                MLFLOW_S3_ENDPOINT_URL=s3_url,
                AWS_ACCESS_KEY_ID=keys["access_key"],
                AWS_SECRET_ACCESS_KEY=keys["secret_key"],
                AWS_CA_BUNDLE=str(tls_files(settings.state_dir).ca),
                AWS_DEFAULT_REGION=settings.storage.region,
                # The GenAI job runner (seven worker processes) serves no training run.
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            ),
            logs,
            tmp,
            url=f"http://127.0.0.1:{ports.mlflow_port}",
        )
    )
    prefect.wait(answers(f"{prefect.url}/api/health"))
    mlflow.wait(answers(f"{mlflow.url}/health"))
    return pg, settings, prefect, mlflow


def test_deployed_runs_on_postgres_take_turns_and_both_release_a_verified_model(
    tmp_path: Path,
) -> None:
    started_at = time.monotonic()
    with ExitStack() as stack:
        pg, settings, prefect, mlflow = _stack(tmp_path, stack)
        # What a user sets on the machine that deploys and on the worker: no more.
        user_env = base_env(
            PREFECT_API_URL=f"{prefect.url}/api",
            PREFECT_HOME=str(tmp_path / "prefect-client"),
            SECURE_PIPELINE_HOME=str(PROJECT_ROOT),
            SECURE_PIPELINE_STATE_DIR=str(settings.state_dir),
            SECURE_PIPELINE_MLFLOW_TRACKING_URI=mlflow.url,
            # Artifacts through the tracking server only: the workers need no route to
            # the artifact store nor trust in its CA (README "Scaling out").
            MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="false",
        )
        prefect_cli = str(BIN / "prefect")
        _cli(
            [prefect_cli, "--no-prompt", "work-pool", "create", POOL, "--type", "process"], user_env
        )
        _cli(
            [prefect_cli, "--no-prompt", "deploy", "--prefect-file",
             "infra/prefect/prefect.yaml", "--name", "nightly"],
            user_env,
        )  # fmt: skip
        deployment: Any = api("GET", f"{prefect.url}/api/deployments/name/{DEPLOYMENT}")
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        stack.enter_context(
            started(
                "worker",
                [prefect_cli, "worker", "start", "--pool", POOL, "--type", "process"],
                {**user_env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
                tmp_path / "logs",
                tmp_path,
            )
        )
        trigger = f"{prefect.url}/api/deployments/{deployment['id']}/create_flow_run"
        run_ids = [api("POST", trigger, {})["id"] for _ in range(2)]
        seen = _watch(prefect, run_ids)
        runs: list[Any] = [api("GET", f"{prefect.url}/api/flow_runs/{r}") for r in run_ids]

        # Both ended well, one after the other: the second waited for a slot.
        assert [r["state"]["name"] for r in runs] == ["Completed", "Completed"], seen
        first, second = sorted(runs, key=lambda r: r["start_time"])
        assert datetime.fromisoformat(second["start_time"]) >= datetime.fromisoformat(
            first["end_time"]
        ), "the two runs overlapped"
        history = [
            s["name"]
            for s in api("GET", f"{prefect.url}/api/flow_run_states/?flow_run_id={second['id']}")
        ]
        assert "AwaitingConcurrencySlot" in history, history
        steps = [name for i, name in enumerate(history) if i == 0 or history[i - 1] != name]
        print(f"the second run's states: {' -> '.join(steps)} ({len(history)} in all)")

        # Prefect keeps them in PostgreSQL.
        rows = pg.rows(
            "prefect", "SELECT count(*) FROM flow_run WHERE id::text = ANY(%s)", (run_ids,)
        )
        assert rows == [(2,)]

        # MLflow (on PostgreSQL, artifacts in S3) holds the model and its champion.
        model = settings.model.name
        registered: Any = api(
            "GET", f"{mlflow.url}/api/2.0/mlflow/registered-models/get?name={model}"
        )
        aliases = {a["alias"]: a["version"] for a in registered["registered_model"]["aliases"]}
        assert "champion" in aliases, registered
        rows = pg.rows("mlflow", "SELECT count(*) FROM model_versions WHERE name = %s", (model,))
        assert rows[0][0] >= 2, rows
        admin = s3_client(
            identities.endpoint_at(settings, local_status(settings)["s3"]["url"], identity="admin")
        )
        assert admin.list_objects_v2(Bucket=ARTIFACTS_BUCKET).get("KeyCount", 0) > 0

        # And the released champion verifies, as a consumer checks it.
        verify = subprocess.run(
            [str(BIN / "secure-pipeline"), "verify", f"models:/{model}@champion"],
            env=user_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert verify.returncode == 0, verify.stdout[-1500:] + verify.stderr[-1500:]
    print(f"services at scale: {time.monotonic() - started_at:.0f} s")
