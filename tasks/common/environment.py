"""Process environment for the pipeline and the services it starts.

Prefect, MLflow and Great Expectations read their settings from the
environment, some at import time, so the CLI calls `configure` before it
imports any of them. Every library's telemetry is switched off here: the
pipeline talks to nothing the user did not configure.
"""

from __future__ import annotations

import os

from tasks.common.settings import Settings

# The temporary Prefect API a run starts takes far longer than Prefect's default 20 s on
# a busy machine (8 of ~35 cold runs timed out beside other work): allow 120 s.
PREFECT_START_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}


def service_env(settings: Settings, *, prefect_api_url: str | None = None) -> dict[str, str]:
    """Variables for this process and for child services (Prefect, MLflow)."""
    state = settings.state_dir
    env = {
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(state / "prefect"),
        # Results stay in memory: data and secrets must not be pickled to disk.
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        # MLflow's own loader trusts the artifact's type list; we never use it.
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_LOGGING_LEVEL": os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING"),
        "GIT_PYTHON_REFRESH": "quiet",
        PREFECT_START_TIMEOUT: os.environ.get(PREFECT_START_TIMEOUT, "120"),
    }
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    return env


def configure(
    settings: Settings, *, prefect_api_url: str | None = None, quiet_console: bool = False
) -> None:
    """Apply `service_env` to this process. Call before importing prefect/mlflow.

    With `quiet_console`, Prefect's console handler only shows critical records:
    task tracebacks still reach the Prefect API (and UI) and the run report,
    while the terminal gets one readable line.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.update(service_env(settings, prefect_api_url=prefect_api_url))
    if quiet_console:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
