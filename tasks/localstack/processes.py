"""Detached service processes and their bookkeeping in ``<state>/stack.json``.

The embedded servers run in sessions of their own, so they outlive the CLI and
one ``killpg`` stops a server together with its workers. A pid read back from
stack.json is trusted only while /proc still shows the command line and start
time recorded at launch, so a reused pid is never signalled. Nothing here knows
which service it runs; `seaweedfs` and `ui_servers` say what to start, and
`stack` decides when.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from tasks.common.errors import PipelineError
from tasks.common.files import write_atomic
from tasks.common.settings import Settings

log = logging.getLogger(__name__)

# The service executables are installed next to the interpreter, by the project's requirements.
BIN_DIR = Path(sys.executable).parent
STOP_TIMEOUT = 20.0
_DETACHED: list[subprocess.Popen[bytes]] = []  # keep detached children from GC warnings


class StackError(PipelineError, RuntimeError):
    """An embedded service could not be started or reached; the message says what to do."""


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    cwd: Path,
    pass_fds: tuple[int, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached, with stdout and stderr appended to ``log_path`` (0600).

    ``preexec_fn`` runs in the child before exec (e.g. to tie it to the CLI's life).

    Returns:
        The child, which leads a new session (and so a new process group).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        # Own session: survives the CLI and its Ctrl-C; killpg reaches its workers.
        child = subprocess.Popen(  # noqa: S603 - argv built by the launcher
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )
    _DETACHED.append(child)
    return child


def wait_until_healthy(
    name: str,
    healthy: Callable[[], bool],
    child: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
) -> None:
    """Poll ``healthy`` until it holds.

    Raises:
        StackError: ``child`` exited first, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise StackError(
                f"{name} exited with code {child.returncode} during start-up; see {log_path}"
            )
        if healthy():
            return
        time.sleep(0.2)
    raise StackError(f"{name} was not healthy after {timeout:.0f} s; see {log_path}")


def proc_identity(pid: int) -> tuple[str, str] | None:
    """(cmdline, start time) of a live process; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"), fields[19]


def record(child: subprocess.Popen[bytes], *, url: str, log_path: Path) -> dict[str, Any]:
    """The stack.json entry of a started service: pid, its /proc identity, url and log.

    Raises:
        StackError: the process is already gone.
    """
    ident = proc_identity(child.pid)
    if ident is None:
        raise StackError(f"process {child.pid} vanished right after start-up; see {log_path}")
    return {
        "pid": child.pid,
        "cmdline": ident[0],
        "start": ident[1],
        "url": url,
        "log": str(log_path),
    }


def is_ours(entry: dict[str, Any]) -> bool:
    """The recorded pid is still the process we started (guards against pid reuse)."""
    try:
        pid = int(entry["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return pid > 1 and proc_identity(pid) == (entry.get("cmdline"), entry.get("start"))


def terminate(pids: list[int]) -> None:
    """SIGTERM each process group, wait, SIGKILL what is left after STOP_TIMEOUT."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in pids:
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pid):
            log.warning(
                "process group %s ignored SIGTERM for %.0f s; killing it", pid, STOP_TIMEOUT
            )
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _group_alive(pid: int) -> bool:
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child, else it stays a zombie
    if proc_identity(pid) is not None:
        return True
    try:
        os.killpg(pid, 0)  # workers of the group (e.g. MLflow's) may outlive the leader
    except (ProcessLookupError, PermissionError):
        return False
    return True


def port_free(port: int) -> bool:
    """Nothing listens on (or holds) ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: TIME_WAIT from a just-stopped stack must not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_free_port(port: int, what: str, setting: str) -> None:
    """Raise a StackError naming ``setting`` (the env variable to change) if ``port`` is busy."""
    if not port_free(port):
        raise StackError(
            f"port {port} on 127.0.0.1 ({what}) is in use: stop the program using "
            f"it or set {setting} to another port"
        )


def log_file(settings: Settings, name: str) -> Path:
    """Where service ``name`` writes its output."""
    return settings.state_dir / "logs" / f"{name}.log"


def _stack_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def read_services(settings: Settings) -> dict[str, Any]:
    """The recorded services by name; empty if stack.json is missing or unreadable."""
    try:
        stack: dict[str, Any] = json.loads(_stack_file(settings).read_text())
    except (OSError, ValueError):
        return {}
    services = stack.get("services")
    return services if isinstance(services, dict) else {}


def write_services(settings: Settings, services: dict[str, Any]) -> None:
    """Record ``services`` in stack.json (0600)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(_stack_file(settings), json.dumps({"services": services}, indent=2).encode())


def forget_services(settings: Settings) -> None:
    """Remove stack.json."""
    _stack_file(settings).unlink(missing_ok=True)
