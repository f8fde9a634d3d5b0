"""What every `secure-pipeline` command shares: exit codes, the one-line messages on
stderr, JSON reports and the pipeline's signer."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

from tasks.common.files import PUBLIC, write_json
from tasks.common.settings import Settings

EXIT_OK, EXIT_BLOCKED, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3


def mute(stream: TextIO) -> None:
    """Send what is still written to `stream` nowhere: its reader went away.

    Python's advice for SIGPIPE (the `signal` module's documentation): point the file
    descriptor at devnull, so that neither the next write nor the flush at exit raises
    BrokenPipeError again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor (a test's StringIO): nothing to mute
        pass


def _write(stream: TextIO, text: str) -> None:
    # A closed pipe (`| head -1`) is the reader's choice, never the command's failure:
    # the output is dropped and the command's work and exit code stand.
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        mute(stream)


def say(message: str) -> None:
    """One line for the operator, on stderr (stdout carries only what scripts read)."""
    _write(sys.stderr, message.rstrip() + "\n")


def emit(line: str) -> None:
    """One line of the command's result on stdout (what a script reads or pastes)."""
    _write(sys.stdout, line.rstrip("\n") + "\n")


def write_report(path: str | None, payload: dict[str, Any]) -> None:
    """Write `payload` as JSON to `path` (world-readable); nothing when `path` is None."""
    if path:
        write_json(Path(path), payload, mode=PUBLIC)


def pipeline_signer(settings: Settings) -> Any:
    """The pipeline's signer; a new state directory gets its keyring first (audited)."""
    from tasks.common.audit import AuditLog
    from tasks.trust import keys
    from tasks.trust.signing import Signer

    ring, created = keys.ensure_keys(
        settings.keys_dir, had_runs=lambda: AuditLog(settings.audit_path).recorded("keys.created")
    )
    if created:
        AuditLog(settings.audit_path).append("keys.created", keys=keys.key_ids(ring), by="init")
        say(f"created the pipeline's keys under {settings.keys_dir}: back this directory up")
    return Signer.local(settings.keys_dir)
