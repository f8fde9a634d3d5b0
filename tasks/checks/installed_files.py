"""What `sign.dependencies` checks beyond names and versions: every installed file,
and the lock files against the commit the provenance records.

**Installed files.** Each distribution's ``.dist-info/RECORD`` lists the files pip
installed with their sha256 (pip checked the wheels against the lock's hashes, and
wrote RECORD from what it unpacked). `scan_installed` walks every ``site-packages``
directory of the environment and finds:

- **modified**: a file a RECORD lists whose size or sha256 differs from it (a module
  patched in place at an unchanged version);
- **unrecorded**: a file no RECORD lists: a ``.pth`` (which Python runs at start-up)
  and a module dropped beside it, a stray ``pip install --target``, leftovers.

Exceptions, all of them: a RECORD entry without a hash (RECORD itself, by the
wheel spec) is checked for presence only; RECORD entries outside site-packages
(console scripts in ``bin/``) are hash-checked when present but ``bin/`` is not
walked (the venv's own ``python`` links and ``activate`` scripts live there). No
bytecode exception is needed: pip compiles every module at install and lists each
``__pycache__/*.pyc`` in RECORD with its hash (measured: 0 unlisted ``.pyc`` in a
venv after hundreds of runs), so an unlisted ``.pyc`` (Python prefers a valid one to
its source) is refused like any file. This project's editable install is listed in its
own RECORD (its ``__editable__*.pth`` and finder module) and checked like the rest; the
code it points to is the checkout, which the provenance names by git commit. A symlink
counts as a file (it is never followed).

Cost: the whole environment is hashed on every run (1.4 GB, 53,000 files: about
0.3 s to list and 1.2-2.5 s to hash on 2 busy cores with a warm page cache). It is not
cached between runs on purpose: a cache of "file -> verified digest" would have to be
written where the pipeline's user can write, and whoever can drop a file into
site-packages as that user can then write the cache too; keys that could authenticate
it sit with the same user. Hashing everything, every time, trusts nothing on disk but
RECORD, and RECORD is what pip wrote.

**Committed lock.** `compare_with_commit` compares ``requirements.lock`` and
``requirements-dev.lock`` byte for byte with their versions at the commit the
provenance records (``git show COMMIT:PATH``). A pin changed in the lock and in the
environment together passes the version check; it does not pass this one until the
change is committed (reviewed). Outside a git checkout nothing is compared, and the
gate says so (the provenance still binds the lock file by digest).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import stat
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

_HASHERS = 2  # threads: sha256 releases the GIL, and the machine may have 2 cores


@dataclass(frozen=True)
class FileScan:
    """What `scan_installed` found (paths relative to their site-packages directory)."""

    files: int
    modified: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class LockComparison:
    """The lock files against the recorded commit: ``commit`` None when not compared."""

    commit: str | None
    differing: list[str] = field(default_factory=list)
    why_not: str = ""


def site_dirs() -> list[Path]:
    """The environment's site-packages directories (purelib and platlib, as `import`
    searches them), existing ones only."""
    found: list[Path] = []
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key])
        if path.is_dir() and path not in found:
            found.append(path)
    return found


def _records(site: Path) -> dict[Path, tuple[str, str, int | None]]:
    """Every RECORD entry of the distributions in `site`: absolute path -> (algorithm,
    urlsafe-base64 digest, size); empty strings and None where RECORD gives none."""
    listed: dict[Path, tuple[str, str, int | None]] = {}
    for info in site.glob("*.dist-info"):
        record = info / "RECORD"
        try:
            text = record.read_text(encoding="utf-8")
        except OSError:  # a dist-info without RECORD: its files count as unrecorded
            continue
        for row in csv.reader(text.splitlines()):
            if not row or not row[0]:
                continue
            algo, _, digest = (row[1] if len(row) > 1 else "").partition("=")
            size = int(row[2]) if len(row) > 2 and row[2].isdigit() else None
            listed[Path(os.path.normpath(site / row[0]))] = (algo, digest, size)
    return listed


def _walk(site: Path) -> list[Path]:
    """Every file under `site`; a symlink (to a file or a directory) is one entry."""
    files: list[Path] = []
    for top, dirs, names in os.walk(site, followlinks=False):
        base = Path(top)
        files += [base / n for n in names]
        links = [d for d in dirs if (base / d).is_symlink()]
        files += [base / d for d in links]
        dirs[:] = [d for d in dirs if d not in links]
    return files


def _matches(path: Path, algo: str, digest: str, size: int | None) -> bool:
    """The file's content is what RECORD says (no hash in RECORD: it exists)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return False
        if not algo:
            return True
        hasher = hashlib.new(algo)
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                hasher.update(block)
    except (OSError, ValueError):  # unreadable, or an algorithm hashlib does not know
        return False
    return base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode() == digest


def scan_installed(sites: list[Path] | None = None, *, prefix: Path | None = None) -> FileScan:
    """Check every file under the site-packages directories against the RECORDs.

    Args:
        sites: Directories to scan; default: this environment's (`site_dirs`).
        prefix: RECORD entries outside the sites are checked only under this
            directory (default: ``sys.prefix``, the venv).
    """
    started = time.perf_counter()
    prefix = Path(prefix or sys.prefix).resolve()
    modified: list[str] = []
    unrecorded: list[str] = []
    jobs: list[tuple[Path, str, tuple[str, str, int | None]]] = []
    count = 0
    for site in sites if sites is not None else site_dirs():
        listed = _records(site)
        for path in _walk(site):
            count += 1
            entry = listed.get(path)
            if entry is None:
                unrecorded.append(str(path.relative_to(site)))
            else:
                jobs.append((path, str(path.relative_to(site)), entry))
        for path, entry in listed.items():  # console scripts and the like, in the venv
            if not path.is_relative_to(site) and path.is_relative_to(prefix) and path.exists():
                jobs.append((path, os.path.relpath(path, site), entry))
    with ThreadPoolExecutor(_HASHERS) as pool:
        results = pool.map(lambda job: _matches(job[0], *job[2]), jobs)
        modified = [name for (_, name, _), ok in zip(jobs, results, strict=True) if not ok]
    return FileScan(
        files=count,
        modified=sorted(modified),
        unrecorded=sorted(unrecorded),
        seconds=round(time.perf_counter() - started, 3),
    )


def compare_with_commit(commit: str | None, root: Path, files: list[Path]) -> LockComparison:
    """`files` (inside the checkout `root`) against their versions at `commit`.

    A file absent from the commit differs; git unavailable or `root` no checkout
    (commit None) compares nothing and says why.
    """
    if commit is None:
        return LockComparison(None, why_not="not a git checkout (no commit recorded)")
    differing = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            committed = subprocess.run(  # noqa: S603 - fixed argv, no shell
                ["git", "show", f"{commit}:{rel}"],  # noqa: S607 - read-only, from PATH
                cwd=root,
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return LockComparison(None, why_not=f"git could not be run ({type(exc).__name__})")
        try:
            current = path.read_bytes()
        except OSError:
            current = None
        if committed.returncode != 0 or committed.stdout != current:
            differing.append(rel)
    return LockComparison(commit, differing=differing)
