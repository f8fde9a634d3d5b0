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

Cost: the environment is 1.4 GB in about 53,000 files. Hashing all of it costs 2.9 s
of CPU (8-10 s of wall time on two cores shared with three other busy jobs, load 9),
so verified files are remembered in ``<state>/cache/installed-files.json``, and a file
is hashed again unless its inode, size, mtime **and ctime** are those it had when it
was hashed and its RECORD line is unchanged. The cache is trusted only when its HMAC-
SHA256 verifies under a random key kept 0600 beside it (``installed-files.key``): a
cache that anyone able to write the state directory could forge would let a dropped
file through. Forging an entry needs that key, and whoever can read it can read the
signing key in the same state directory. A replayed old cache helps nobody: ctime
cannot be set by a user (every write, rename or chmod moves it to now), so a file
changed since it was verified never matches its old entry. An unreadable, forged or
foreign cache is ignored (everything hashed) and rewritten. With the cache warm a scan
costs 0.9 s of CPU (2.3 s of wall time at load 9): listing the files, reading the
RECORDs, one lstat per file.

**Committed lock.** `compare_with_commit` compares ``requirements.lock`` and
``requirements-dev.lock`` byte for byte with their versions at the commit the
provenance records (``git show COMMIT:PATH``). A pin changed in the lock and in the
environment together passes the version check; it does not pass this one until the
change is committed (reviewed). Outside a git checkout nothing is compared, and the
gate says so (the provenance still binds the lock file by digest).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import hmac
import json
import os
import secrets
import stat
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.common.files import write_atomic

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


Entry = tuple[str, str, int | None]  # RECORD's algorithm, urlsafe-base64 digest, size


def _records(site: str) -> dict[str, Entry]:
    """Every RECORD entry of the distributions in `site`: absolute path -> `Entry`
    (empty strings and None where RECORD gives none). Plain strings, not pathlib:
    53,000 paths through pathlib cost seconds of CPU."""
    listed: dict[str, Entry] = {}
    for name in os.listdir(site):
        if not name.endswith(".dist-info"):
            continue
        try:
            with open(os.path.join(site, name, "RECORD"), encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except OSError:  # a dist-info without RECORD: its files count as unrecorded
            continue
        for row in rows:
            if not row or not row[0]:
                continue
            algo, _, digest = (row[1] if len(row) > 1 else "").partition("=")
            size = int(row[2]) if len(row) > 2 and row[2].isdigit() else None
            listed[os.path.normpath(os.path.join(site, row[0]))] = (algo, digest, size)
    return listed


def _walk(site: str) -> list[str]:
    """Every file under `site`; a symlink (to a file or a directory) is one entry."""
    files: list[str] = []
    for top, dirs, names in os.walk(site, followlinks=False):
        files += [os.path.join(top, n) for n in names]
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        files += [os.path.join(top, d) for d in links]
        dirs[:] = [d for d in dirs if d not in links]
    return files


def _matches(path: str, entry: Entry) -> bool:
    """The file's content is what RECORD says (no hash in RECORD: it exists)."""
    algo, digest, size = entry
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return False
        if not algo:
            return True
        hasher = hashlib.new(algo)
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                hasher.update(block)
    except (OSError, ValueError):  # unreadable, or an algorithm hashlib does not know
        return False
    return base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode() == digest


Fingerprint = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns


def _fingerprint(path: str) -> Fingerprint | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Cache:
    """Files verified by an earlier scan, in an HMAC-authenticated JSON file."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.known: dict[str, list[Any]] = {}
        self.verified: dict[str, list[Any]] = {}
        if directory is None:
            return
        try:
            key = self._key()
            raw = (directory / "installed-files.json").read_bytes()
            doc = json.loads(raw)
            body = doc["entries"].encode()
            if hmac.compare_digest(doc["mac"], hmac.new(key, body, "sha256").hexdigest()):
                self.known = json.loads(body)
        except (OSError, ValueError, KeyError, TypeError):  # absent, forged, damaged
            self.known = {}

    def _key(self) -> bytes:
        if self.directory is None:
            raise FileNotFoundError("no cache directory")
        path = self.directory / "installed-files.key"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
            return key

    def hit(self, path: str, entry: Entry, fp: Fingerprint | None) -> bool:
        """`path` was verified with this fingerprint and this RECORD line."""
        return fp is not None and self.known.get(path) == [*fp, *entry]

    def remember(self, path: str, entry: Entry, fp: Fingerprint | None) -> None:
        if fp is not None:
            self.verified[path] = [*fp, *entry]

    def save(self) -> None:
        if self.directory is None or self.verified == self.known:  # nothing new to say
            return
        body = json.dumps(self.verified, sort_keys=True, separators=(",", ":"))
        with contextlib.suppress(OSError):  # no cache next time: slower, never weaker
            mac = hmac.new(self._key(), body.encode(), "sha256").hexdigest()
            write_atomic(
                self.directory / "installed-files.json",
                json.dumps({"entries": body, "mac": mac}).encode(),
            )


def scan_installed(
    sites: list[Path] | None = None, *, prefix: Path | None = None, cache: Path | None = None
) -> FileScan:
    """Check every file under the site-packages directories against the RECORDs.

    Args:
        sites: Directories to scan; default: this environment's (`site_dirs`).
        prefix: RECORD entries outside the sites are checked only under this
            directory (default: ``sys.prefix``, the venv).
        cache: Directory of the authenticated cache of verified files (see the
            module's notes); None: hash everything.
    """
    started = time.perf_counter()
    known = _Cache(cache)
    venv = os.path.realpath(prefix or sys.prefix) + os.sep
    unrecorded: list[str] = []
    to_hash: list[tuple[str, str, Entry, Fingerprint | None]] = []
    count = 0
    for site_path in sites if sites is not None else site_dirs():
        site = os.path.normpath(site_path)
        cut = len(site) + 1
        listed = _records(site)
        checks = []
        for path in _walk(site):
            count += 1
            entry = listed.get(path)
            if entry is None:
                unrecorded.append(path[cut:])
            else:
                checks.append((path, path[cut:], entry))
        for path, entry in listed.items():  # console scripts and the like, in the venv
            outside = not path.startswith(site + os.sep)
            if outside and path.startswith(venv) and os.path.lexists(path):
                checks.append((path, os.path.relpath(path, site), entry))
        for path, name, entry in checks:
            fp = _fingerprint(path)  # before reading: a later change moves ctime
            if known.hit(path, entry, fp):
                known.remember(path, entry, fp)
            else:
                to_hash.append((path, name, entry, fp))
    with ThreadPoolExecutor(_HASHERS) as pool:
        results = list(pool.map(lambda job: _matches(job[0], job[2]), to_hash))
    modified = []
    for (path, name, entry, fp), ok in zip(to_hash, results, strict=True):
        if ok:
            known.remember(path, entry, fp)
        else:
            modified.append(name)
    known.save()
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
