"""How a crash is told: its cause and the next step in one line, without data or secrets.

A library's message can quote a cell value ("could not convert string to float:
'jane@example.org'") and Prefect keeps failed runs' exceptions, so only messages this
project writes itself (`PipelineError`) are shown as they are. For anything else the
line names the exception type, where it happened and what to do; the full traceback
stays in the run's own logs (the Prefect UI, or the terminal with ``--verbose``).
"""

from __future__ import annotations

import errno
import signal


class PipelineError(Exception):
    """An error whose message this project wrote: it names the cause and the next step
    and holds no data value or secret, so it may be shown and reported as it is."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_number(exc: BaseException) -> int:
    """The signal behind an interruption (Prefect's TerminationSignal carries one too)."""
    value = getattr(exc, "signum", None) or getattr(exc, "signal", None)
    return int(value) if isinstance(value, int) else int(signal.SIGINT)


class StoreUnreachable(PipelineError):
    """The object store did not answer (connection refused, timed out, TLS failure)."""


_OS_HINTS = {
    errno.ENOSPC: "free disk space under the state directory",
    errno.EACCES: "check the permissions of that path",
    errno.EPERM: "check the permissions of that path",
    errno.EROFS: "the state directory must be writable",
    errno.ENOENT: "check that the path exists",
}


def stage_of(exc: BaseException) -> str | None:
    """The pipeline stage (``tasks.<stage>`` module) deepest in the traceback, if any."""
    stage, tb = None, exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("tasks.") and module.count(".") == 1:
            stage = module.split(".", 1)[1]
        tb = tb.tb_next
    return stage


def explain(exc: BaseException, *, where: str | None = None) -> str:
    """One line for the terminal and the report's ``error`` field.

    Args:
        exc: What was raised.
        where: Where it happened; default: the stage found in the traceback.
    """
    name = type(exc).__name__
    where = where or stage_of(exc)
    at = f" in {where}" if where else ""
    if isinstance(exc, PipelineError):
        return f"{name}{at}: {exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        path = f" ({exc.filename})" if exc.filename else ""
        hint = _OS_HINTS.get(exc.errno, "check the file system and retry")
        return f"{name}{at}: {exc.strerror}{path}; {hint}"
    module = type(exc).__module__.split(".", 1)[0]
    if module in ("botocore", "boto3"):
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or name
        return (
            f"the object store refused or did not answer{at} ({code}): check that it runs "
            "(`secure-pipeline local status`) or storage.endpoint_url, and the credentials"
        )
    if module == "mlflow":
        code = getattr(exc, "error_code", name)
        return (
            f"the MLflow tracking store failed{at} ({code}): check mlflow_tracking_uri and "
            "that the store is reachable and writable"
        )
    return (
        f"{name}{at}; its message may hold data values, so it is kept out of reports: see "
        "the run's logs (Prefect UI, or rerun with --verbose)"
    )
