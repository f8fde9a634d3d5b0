"""The optional UIs that ``local up`` keeps running: the Prefect server and the MLflow UI.

Both bind to 127.0.0.1 only, on the ports from ``settings.local``, and get the
pipeline's service environment (telemetry off, Prefect home in the state dir).
The MLflow UI serves the pipeline's own tracking store, ``settings.tracking_uri``.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request

from tasks.common.environment import service_env
from tasks.common.settings import Settings
from tasks.localstack.processes import BIN_DIR, StackError, log_file, require_free_port, spawn

NAMES = ("prefect", "mlflow")
START_TIMEOUT = 120.0


def start(settings: Settings, name: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start UI ``name`` ("prefect" or "mlflow") detached, without waiting for it.

    Returns:
        The child and its base URL, ``http://127.0.0.1:PORT``.

    Raises:
        StackError: its port is busy or its executable is missing.
    """
    port = settings.local.prefect_port if name == "prefect" else settings.local.mlflow_port
    require_free_port(port, name, f"SECURE_PIPELINE_LOCAL__{name.upper()}_PORT")
    exe = BIN_DIR / name
    if not exe.is_file():
        raise StackError(f"{name} not found at {exe}: install the project's requirements")
    if name == "prefect":
        argv = [str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [
            str(exe),
            "server",
            "--backend-store-uri",
            settings.tracking_uri,
            "--default-artifact-root",
            settings.artifact_root,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
    env = {**os.environ, **service_env(settings)}
    env.pop("PREFECT_API_URL", None)
    if name == "prefect":  # the UI in the browser calls this API (else it asks :4200)
        env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
        # Prefect copies its UI bundle to serve it: into the state dir, never into
        # site-packages (where the supply-chain gate refuses files no RECORD lists).
        env["PREFECT_UI_STATIC_DIRECTORY"] = str(settings.state_dir / "prefect" / "ui")
    child = spawn(argv, env=env, log_path=log_file(settings, name), cwd=settings.state_dir)
    return child, f"http://127.0.0.1:{port}"


def healthy(name: str, url: str) -> bool:
    """UI ``name`` at base ``url`` answers its health check with 200."""
    health = f"{url}/api/health" if name == "prefect" else f"{url}/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(health, timeout=3) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False
