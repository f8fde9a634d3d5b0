"""The sign stage's supply-chain gate: installed packages must match the lock file."""

from __future__ import annotations

from pathlib import Path

from tasks.checks.supply_chain import check_dependencies, installed, pinned, sbom
from tasks.sign import LOCK_FILE

LOCK = """\
great-expectations==1.24.1 \\
    --hash=sha256:aa
scikit_learn==1.7.2 \\
    --hash=sha256:bb
    # via diffprivlib
"""


def test_pins_are_parsed_and_normalised() -> None:
    assert pinned(LOCK) == {"great-expectations": "1.24.1", "scikit-learn": "1.7.2"}


def test_matching_environment_passes(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK)
    env = {"great-expectations": "1.24.1", "scikit-learn": "1.7.2", "extra": "1"}
    assert check_dependencies(lock, present=env).passed


def test_drifted_or_missing_package_blocks(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK)
    result = check_dependencies(lock, present={"great-expectations": "1.24.2"})
    assert not result.passed
    assert result.metrics["packages"] == ["great-expectations", "scikit-learn"]


def test_empty_lock_fails_closed(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# nothing pinned\n")
    assert not check_dependencies(lock, present={}).passed


def test_this_environment_matches_the_project_lock() -> None:
    result = check_dependencies(LOCK_FILE)
    assert result.passed, result.summary()
    assert result.metrics["pinned"] > 100
    assert any(line.startswith("scikit-learn==") for line in sbom(installed()))
