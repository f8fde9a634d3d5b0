"""Every file the pipeline reads or writes goes through here: capped reads, atomic
writes with the mode set before a byte lands, exclusive creation, and sha256.

* `read_capped` opens one regular file (never a FIFO that could hang the run, and not
  through a final symlink unless asked), sizes it before reading and refuses more
  than the cap; `read_fd` is the same read on a descriptor opened by the caller.
* `write_atomic` replaces a file in one rename, so a reader never sees half of it;
  `write_new` creates a file that must not exist yet (keys are never overwritten).
  Both default to mode 0600: state files are private unless a caller says otherwise.
* `sha256_bytes`, `sha256_file` and `hash_tree` are the only digest helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

PRIVATE = 0o600
PUBLIC = 0o644  # files meant to be shared: public keys, certificates, signed profiles


class NotRegularFile(OSError):
    """The path is a directory, FIFO, device or socket, not a regular file."""


class FileTooLarge(OSError):
    """The file holds more than the cap; ``measured`` says how that was known."""

    def __init__(self, n_bytes: int, measured: str):
        super().__init__(f"file is larger than the cap ({n_bytes} bytes, by {measured})")
        self.n_bytes, self.measured = n_bytes, measured


def read_fd(fd: int, *, max_bytes: int) -> bytes:
    """Read an open descriptor, then close it: a regular file of at most `max_bytes`.

    Raises:
        NotRegularFile: the descriptor is not a regular file.
        FileTooLarge: over the cap, known from fstat (nothing read) or while reading.
    """
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile("not a regular file")
        if st.st_size > max_bytes:
            raise FileTooLarge(st.st_size, "stat")  # before a single byte is read
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the fstat
        raise FileTooLarge(len(data), "read")
    return data


def read_capped(path: Path, *, max_bytes: int, follow_symlinks: bool = False) -> bytes:
    """Read a regular file, not through a final symlink, refusing more than `max_bytes`.

    `follow_symlinks` is for hash-pinned files (suite, profile) only: their digest
    matters, not their path (config maps are often mounted as symlinks).

    Raises:
        OSError: it cannot be opened, is not a regular file (`NotRegularFile`), or is
            larger than the cap (`FileTooLarge`).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    return read_fd(os.open(path, flags), max_bytes=max_bytes)  # NONBLOCK: a FIFO never hangs


def write_atomic(path: Path, data: bytes | str, *, mode: int = PRIVATE) -> None:
    """Replace `path` in one rename, with the final mode set before any byte lands."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)  # the umask must not widen or narrow it
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, payload: Any, *, mode: int = PRIVATE) -> None:
    """`write_atomic` of indented, key-sorted JSON (non-JSON values as strings)."""
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", mode=mode)


def write_new(path: Path, data: bytes, *, mode: int = PRIVATE) -> None:
    """Create `path` with `mode`; never overwrite an existing file.

    Raises:
        FileExistsError: it exists already (its content is untouched).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (models and data can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under `root`, keyed by relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
