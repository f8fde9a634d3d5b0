"""The installed-files half of `sign.dependencies`, on a small site-packages of its own,
and the lock comparison against a commit of a throwaway git repository."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from tasks.checks.installed_files import compare_with_commit, scan_installed
from tasks.checks.supply_chain import check_dependencies

LOCK = "demo==1.0 \\\n    --hash=sha256:00\n"


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site-packages with one distribution, as pip leaves it (bytecode recorded)."""
    site = tmp_path / "site-packages"
    files = {
        "demo/__init__.py": b"VALUE = 1\n",
        "demo/__pycache__/__init__.cpython-311.pyc": b"\x00bytecode",
        "demo.pth": b"./demo\n",
    }
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    info = site / "demo-1.0.dist-info"
    info.mkdir()
    rows = [f"{rel},{_digest(data)},{len(data)}" for rel, data in files.items()]
    (info / "RECORD").write_text("\n".join([*rows, "demo-1.0.dist-info/RECORD,,"]) + "\n")
    return site


def test_a_clean_site_passes(site: Path) -> None:
    scan = scan_installed([site], prefix=site)
    assert scan.files == 4 and scan.modified == [] and scan.unrecorded == []


def test_dropped_pth_module_and_bytecode_are_unrecorded(site: Path) -> None:
    (site / "evil.pth").write_text("import evil\n")
    (site / "evil.py").write_text("pass\n")
    (site / "__pycache__").mkdir()
    (site / "__pycache__" / "evil.cpython-311.pyc").write_bytes(b"\x00")
    (site / "linked").symlink_to(site / "demo")  # a link counts, and is not followed
    scan = scan_installed([site], prefix=site)
    assert scan.unrecorded == [
        "__pycache__/evil.cpython-311.pyc",
        "evil.pth",
        "evil.py",
        "linked",
    ]


def test_an_edited_module_or_bytecode_is_modified(site: Path) -> None:
    (site / "demo" / "__init__.py").write_bytes(b"VALUE = 2\n")  # same size, other hash
    (site / "demo" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\x01bytecode")
    scan = scan_installed([site], prefix=site)
    assert scan.modified == ["demo/__init__.py", "demo/__pycache__/__init__.cpython-311.pyc"]


def test_the_gate_names_the_pth_and_blocks(site: Path, tmp_path: Path) -> None:
    (site / "evil.pth").write_text("import evil\n")
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK)
    result = check_dependencies(
        lock, present={"demo": "1.0"}, files=scan_installed([site], prefix=site)
    )
    assert not result.passed and "evil.pth" in result.detail
    assert result.metrics["files_unrecorded"] == 1
    assert result.threshold["files_unrecorded"] == 0


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_a_lock_changed_after_the_commit_blocks(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    lock, dev = repo / "requirements.lock", repo / "requirements-dev.lock"
    lock.write_text(LOCK)
    dev.write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "lock")
    commit = _git(repo, "rev-parse", "HEAD")
    assert compare_with_commit(commit, repo, [lock, dev]).differing == []
    lock.write_text(LOCK.replace("1.0", "1.1"))  # the pin and the venv changed together
    found = compare_with_commit(commit, repo, [lock, dev])
    assert found.commit == commit and found.differing == ["requirements.lock"]
    result = check_dependencies(lock, present={"demo": "1.1"}, lock=found)
    assert not result.passed and "differ(s) from the recorded commit" in result.detail
    not_git = compare_with_commit(None, repo, [lock])
    assert not_git.commit is None and "not a git checkout" in not_git.why_not


def test_the_cache_skips_nothing_changed_and_is_never_trusted_unsigned(
    site: Path, tmp_path: Path
) -> None:
    import json

    cache = tmp_path / "cache"
    assert scan_installed([site], prefix=site, cache=cache).modified == []
    doc = json.loads((cache / "installed-files.json").read_text())
    assert (
        len(json.loads(doc["entries"])) == 4
        and (cache / "installed-files.key").stat().st_mode & 0o077 == 0
    )
    module = site / "demo" / "__init__.py"
    module.write_bytes(b"VALUE = 2\n")  # same size; its ctime moves, so the entry misses
    assert scan_installed([site], prefix=site, cache=cache).modified == ["demo/__init__.py"]
    # A forged cache (an entry for the edited file, the MAC not redone) is ignored.
    entries = json.loads(doc["entries"])
    st = module.stat()
    entries[str(module)][:4] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    doc["entries"] = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    (cache / "installed-files.json").write_text(json.dumps(doc))
    assert scan_installed([site], prefix=site, cache=cache).modified == ["demo/__init__.py"]
