"""Local sources: confinement under ``dataset.data_root``, and reads that a file or
symlink swapped in after the check cannot redirect.

* `locate_local` resolves a path or bare dataset name inside the root one component
  at a time (`walk_inside`) and refuses ``..``, absolute paths elsewhere, symlinks
  leading out (without resolving through them) and symlink loops.
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

MAX_LINKS = 40  # symlinks followed for one path, as the kernel's limit (ELOOP)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def walk_inside(root: Path, parts: tuple[str, ...]) -> Path:
    """Resolve ``parts`` below the real directory ``root`` one component at a time,
    following a symlink only while its target stays inside ``root``: nothing outside
    the root is ever stat'ed, opened or resolved through.

    Returns:
        The real path inside ``root`` (it may not exist: the caller says not_found).

    Raises:
        SourceRefused: ``symlink_escape`` (a link leads out, however indirectly),
            ``symlink_loop`` (more than MAX_LINKS links, e.g. a loop).
    """
    todo, current, links = list(parts), root, 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":  # only from a link's target: the real parent, if still inside
            if current == root:
                raise _escape()
            current = current.parent
            continue
        nxt = current / part
        try:
            st = os.lstat(nxt)
        except OSError:  # absent (or unreadable): nothing below it can be checked
            return nxt.joinpath(*todo)
        if not stat.S_ISLNK(st.st_mode):
            current = nxt
            continue
        links += 1
        if links > MAX_LINKS:
            raise SourceRefused(
                "symlink_loop",
                f"the path goes through more than {MAX_LINKS} symlinks (a loop?); pass "
                "the real file inside dataset.data_root",
                scheme="file",
            )
        target = Path(os.readlink(nxt))
        if target.is_absolute():
            lexical = Path(os.path.normpath(target))
            if not _inside(lexical, root):
                raise _escape()
            current, todo = root, [*lexical.relative_to(root).parts, *todo]
        else:
            todo = [*target.parts, *todo]
    return current


def _escape() -> SourceRefused:
    return SourceRefused(
        "symlink_escape",
        "the path goes through a symlink that leads out of dataset.data_root; pass the "
        "real file inside the root",
        scheme="file",
    )


def locate_local(raw: str, root: Path) -> Located:
    """Resolve a path or bare dataset name inside `root` (see `tasks.sources.locate`).

    The root itself is resolved once (a symlinked root is the operator's choice); below
    it every component is checked by `walk_inside`, so a link leading out is refused
    without anything outside the root being touched.
    """
    real_root = Path(os.path.realpath(root))
    path = Path(raw).expanduser()
    base = {"scheme": "file"}
    if ".." in path.parts:
        raise SourceRefused(
            "traversal",
            "'..' is not allowed in a dataset path: name the file relative to dataset.data_root",
            **base,
        )
    if path.is_absolute():
        lexical = Path(os.path.normpath(path))
        for prefix in (real_root, Path(os.path.abspath(root))):
            if _inside(lexical, prefix):
                rel = lexical.relative_to(prefix)
                break
        else:
            raise SourceRefused(
                "outside_root",
                "the file is outside dataset.data_root; move it "
                "there or set SECURE_PIPELINE_DATASET__DATA_ROOT",
                **base,
            )
    else:
        rel = path
    real = walk_inside(real_root, rel.parts)
    if not os.path.lexists(real) and rel.name and not rel.suffix:
        for ext in (".csv", ".parquet"):  # a bare dataset name
            named = walk_inside(real_root, rel.with_name(rel.name + ext).parts)
            if os.path.lexists(named):
                real = named
                break
    try:
        st = os.lstat(real)
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
