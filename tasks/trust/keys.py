"""Key files on disk: created 0600 with O_EXCL, refused when readable by others.

Locally the pipeline keeps its signing key and master key in files under the
state directory; in production these come from KMS. Like ssh, we refuse a key
file that group or others can read: a key that leaked on disk is not a key.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

from tasks.common.errors import PipelineError
from tasks.common.files import write_new


class KeyFileError(PipelineError, RuntimeError):
    """A key file is missing, unreadable or too widely readable."""


def read_secret(path: Path) -> bytes:
    """Read a key file, refusing one that group or others may read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(mode):o}; run `chmod 600 {path}`"
        )
    return path.read_bytes()


def ensure_secret(path: Path, *, generate: bytes) -> bytes:
    """Return the key in `path`, creating it from `generate` on first use."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process was first: use theirs
            write_new(path, generate)
    return read_secret(path)
