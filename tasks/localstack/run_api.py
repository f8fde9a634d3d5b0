"""The temporary Prefect API of one `secure-pipeline run`, in a session of its own.

Without a kept-up server, Prefect starts an "ephemeral" API server (uvicorn) as a
plain child of the CLI, in the CLI's process group. Ctrl-C, ``timeout`` and systemd
signal the whole group: the API server died with the run, and the run then spent
150 s or more retrying its calls to it (``ConnectError``) before it could record
that it was interrupted. Here the CLI starts that same server itself, detached in a
session of its own (the group signal reaches the CLI only), tied to the CLI's life
with ``PR_SET_PDEATHSIG`` (a ``kill -9`` of the CLI still stops it), and stops it
only once the run has recorded its end and Prefect's event and log workers have
drained into it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from tasks.common.environment import PREFECT_START_TIMEOUT, service_env
from tasks.common.settings import Settings
from tasks.localstack import ui_servers
from tasks.localstack.processes import (
    StackError,
    log_file,
    spawn,
    terminate,
    wait_until_healthy,
)

_PR_SET_PDEATHSIG = 1
log = logging.getLogger(__name__)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """In the forked child: get SIGTERM when the thread that started it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _argv(port: int) -> list[str]:
    """Prefect 3's own ephemeral-server command (``SubprocessASGIServer``)."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")  # the package's location, without importing it
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("prefect")
    app_dir = Path(spec.origin).parent.parent
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(app_dir),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


@contextmanager
def run_api(
    settings: Settings,
    kept_up: str | None,
    *,
    while_starting: Callable[[str], object] | None = None,
) -> Iterator[str]:
    """Yield the Prefect API URL for one run, starting a temporary server if needed.

    Args:
        settings: The run's settings (state dir: the server's home and log).
        kept_up: The API of a server `local up` keeps running, if any: used as it is.
        while_starting: Called with the API URL once the temporary server is spawned,
            before waiting for it: the server takes about 7 s to answer, time the CLI
            spends importing the flow (about 5 s) on the other core. The URL is the
            one yielded (a retry reuses the port), so Prefect can be configured and
            imported here. Not called for a kept-up server.

    Raises:
        StackError: the temporary server did not answer within
            ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (default 120 s).
    """
    if kept_up is not None:
        try:
            yield kept_up
        finally:
            drain_workers()  # the command ends without the interpreter's atexit hooks
        return
    env = {**os.environ, **service_env(settings)}
    env.pop("PREFECT_API_URL", None)
    # What Prefect's SubprocessASGIServer sets: no UI, and no background services
    # (scheduler, late runs) in a server that lives for one run.
    env |= {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    env |= {"PREFECT__SERVER_FINAL": "1"}
    child, url = _start(settings, env, while_starting)
    try:
        yield f"{url}/api"
    finally:
        drain_workers()
        terminate([child.pid])
        child.wait()


def _start(
    settings: Settings, env: dict[str, str], while_starting: Callable[[str], object] | None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server and wait until it answers; on a busy machine, once more on the
    same port (`while_starting` may have configured Prefect with its URL). Whatever
    happens (a signal included), a server not handed back is stopped.

    Raises:
        StackError: it did not answer twice; the message says what to do.
    """
    log_path = log_file(settings, "prefect-api")
    timeout = float(os.environ.get(PREFECT_START_TIMEOUT) or 120)
    port = _free_port()
    for attempt in (1, 2):
        child = spawn(
            _argv(port),
            env=env,
            log_path=log_path,
            cwd=settings.state_dir,
            preexec_fn=_die_with_parent,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            if attempt == 1 and while_starting is not None:
                while_starting(f"{url}/api")
            wait_until_healthy(
                "the temporary Prefect API",
                partial(ui_servers.healthy, "prefect", url),
                child,
                log_path,
                timeout,
            )
            return child, url
        except BaseException as exc:
            terminate([child.pid])
            child.wait()
            if attempt == 2 or not isinstance(exc, StackError):
                if isinstance(exc, StackError):
                    raise StackError(
                        f"{exc}, twice: wait for the machine to be less busy, raise "
                        f"{PREFECT_START_TIMEOUT}, or keep a server up with "
                        "`secure-pipeline local up`"
                    ) from None
                raise
            log.warning("the temporary Prefect API was slow to start; retrying once")
    raise AssertionError("unreachable")  # pragma: no cover


def drain_workers() -> None:
    """Let Prefect's event and log workers deliver what they hold while the API still
    answers (else they log every undelivered event at ERROR when the process exits)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        with contextlib.suppress(Exception):  # best effort: the run is recorded already
            worker.drain_all(timeout=5)
