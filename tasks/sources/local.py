"""Local sources: confinement under ``dataset.data_root``, and reads that a file or
symlink swapped in after the check cannot redirect.

* `locate_local` resolves (realpath) a path or bare dataset name inside the root and
  refuses ``..``, absolute paths elsewhere and symlinks leading out.
* `read_local` then opens the file one path component at a time from the root with
  ``O_NOFOLLOW``, sizes it (fstat) before reading a byte, and reads its ``.sha256``
  sidecar the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tasks.common.files import FileTooLarge, NotRegularFile, read_fd
from tasks.sources.rules import (
    SIDECAR_MAX_BYTES,
    Fetched,
    FetchFailed,
    Located,
    SourceRefused,
    TooLarge,
    parse_sidecar,
)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def locate_local(raw: str, root: Path) -> Located:
    """Resolve a path or bare dataset name inside `root` (see `tasks.sources.locate`)."""
    real_root = Path(os.path.realpath(root))
    path = Path(raw).expanduser()
    base = {"scheme": "file"}
    if ".." in path.parts:
        raise SourceRefused(
            "traversal",
            "'..' is not allowed in a dataset path: name the file relative to dataset.data_root",
            **base,
        )
    candidate = path if path.is_absolute() else real_root / path
    if not os.path.lexists(candidate) and not candidate.suffix:
        for ext in (".csv", ".parquet"):  # a bare dataset name
            if os.path.lexists(candidate.with_name(candidate.name + ext)):
                candidate = candidate.with_name(candidate.name + ext)
                break
    real = Path(os.path.realpath(candidate))
    if not _inside(real, real_root):
        lexical = Path(os.path.normpath(candidate))
        via_link = _inside(lexical, real_root) or _inside(lexical, Path(os.path.abspath(root)))
        if via_link:
            raise SourceRefused(
                "symlink_escape",
                "the path goes through a symlink that leads "
                "out of dataset.data_root; pass the real file inside the root",
                **base,
            )
        raise SourceRefused(
            "outside_root",
            "the file is outside dataset.data_root; move it "
            "there or set SECURE_PIPELINE_DATASET__DATA_ROOT",
            **base,
        )
    try:
        st = os.stat(real)
    except OSError:
        raise SourceRefused(
            "not_found",
            "no such file under dataset.data_root; check the dataset name or path",
            **base,
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceRefused(
            "not_regular", "the source is not a regular file; pass a data file", **base
        )
    return Located("file", str(real), path=real, root=real_root)


def read_local(located: Located, *, max_bytes: int) -> Fetched:
    """Open the file component by component from the root without following any symlink,
    size it (fstat) before reading, read at most ``max_bytes`` and its sidecar."""
    if located.path is None or located.root is None:
        raise SourceRefused("error", "a local source without its resolved path", scheme="file")
    parts = located.path.relative_to(located.root).parts
    changed = SourceRefused(
        "changed",
        "the path changed after it was checked (a symlink or another file appeared); re-run",
        scheme="file",
    )
    try:
        dir_fd = os.open(located.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(exc, changed) from None
    try:
        for part in parts[:-1]:
            try:
                fd = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
            except OSError as exc:
                raise _open_error(exc, changed) from None
            os.close(dir_fd)
            dir_fd = fd
        try:
            data = _read_at(dir_fd, parts[-1], max_bytes=max_bytes, changed=changed)
        except FileNotFoundError:
            raise changed from None
        try:
            raw: bytes | None = _read_at(
                dir_fd, parts[-1] + ".sha256", max_bytes=SIDECAR_MAX_BYTES, changed=changed
            )
        except FileNotFoundError:
            raw = None
        except (OSError, SourceRefused, FetchFailed, TooLarge):
            raw = b""
    finally:
        os.close(dir_fd)
    return Fetched(data, None if raw is None else parse_sidecar(raw, parts[-1]))


def _open_error(exc: OSError, changed: SourceRefused) -> Exception:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
        return changed  # a symlink or another kind of file now, or gone
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FetchFailed("denied", "permission denied reading the data file")
    code = errno.errorcode.get(exc.errno or 0, "OSError")
    return FetchFailed("error", f"reading the data file failed ({code})")


def _read_at(dir_fd: int, name: str, *, max_bytes: int, changed: SourceRefused) -> bytes:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # FIFO: never hang
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _open_error(exc, changed) from None
    try:
        return read_fd(fd, max_bytes=max_bytes)
    except NotRegularFile:
        raise changed from None
    except FileTooLarge as exc:
        raise TooLarge(exc.n_bytes, exc.measured) from None
    except OSError as exc:
        raise _open_error(exc, changed) from None
