"""The sign stage's supply-chain gate (installed packages vs the two lock files) and the
CycloneDX SBOM of the runtime set."""

from __future__ import annotations

import ensurepip
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tasks.checks import supply_chain
from tasks.checks.supply_chain import (
    DEPENDENCIES,
    SbomError,
    check_dependencies,
    cyclonedx_sbom,
    installed,
    pinned,
    runtime_packages,
    validate_sbom,
)
from tasks.common.errors import PipelineError
from tasks.common.gates import run_check
from tasks.common.settings import PROJECT_ROOT

LOCK_FILE = PROJECT_ROOT / "requirements.lock"
DEV_LOCK_FILE = PROJECT_ROOT / "requirements-dev.lock"

LOCK = """\
great-expectations==1.24.1 \\
    --hash=sha256:aa
scikit_learn==1.7.2 \\
    --hash=sha256:bb
    # via diffprivlib
"""
DEV_LOCK = """\
pytest==9.0.1 \\
    --hash=sha256:cc
ruff==0.14.0 \\
    --hash=sha256:dd
"""
RUNTIME = {"great-expectations": "1.24.1", "scikit-learn": "1.7.2"}


@pytest.fixture
def locks(tmp_path: Path) -> tuple[Path, Path]:
    lock, dev = tmp_path / "requirements.lock", tmp_path / "requirements-dev.lock"
    lock.write_text(LOCK)
    dev.write_text(DEV_LOCK)
    return lock, dev


@pytest.fixture(scope="module")
def real_sbom() -> bytes:
    return cyclonedx_sbom(LOCK_FILE, root_name="secure-ml-pipeline", root_version="0.1.0")


def test_pins_are_parsed_and_normalised() -> None:
    assert pinned(LOCK) == {"great-expectations": "1.24.1", "scikit-learn": "1.7.2"}


def test_runtime_set_alone_passes(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    result = check_dependencies(lock, dev, present=RUNTIME)
    assert result.passed, result.summary()
    assert result.metrics == {
        "pinned": 2,
        "drifted": 0,
        "unlisted": 0,
        "dev_installed": 0,
        "drifted_packages": [],
        "unlisted_packages": [],
    }
    assert result.threshold == {"drifted": 0, "unlisted": 0}
    assert result.detail == ""


def test_drifted_or_missing_runtime_package_blocks(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    result = check_dependencies(lock, dev, present={"great-expectations": "1.24.2"})
    assert not result.passed
    assert result.metrics["drifted"] == 2
    assert result.metrics["drifted_packages"] == ["great-expectations", "scikit-learn"]
    assert "make clean install" in result.detail
    assert "who changed the environment" in result.detail


def test_unlisted_package_blocks(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    result = check_dependencies(lock, dev, present={**RUNTIME, "Evil_Pkg": "6.6.6"})
    assert not result.passed
    assert result.metrics["unlisted"] == 1
    assert result.metrics["unlisted_packages"] == ["evil-pkg"]
    assert result.metrics["drifted"] == 0
    assert "re-lock, or uninstall it" in result.detail


def test_offending_names_are_capped_at_20(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    stray = {f"stray-{i:02d}": "1" for i in range(25)}
    result = check_dependencies(lock, dev, present={**RUNTIME, **stray})
    assert result.metrics["unlisted"] == 25
    assert result.metrics["unlisted_packages"] == sorted(stray)[:20]


def test_dev_tools_are_allowed_and_counted(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    result = check_dependencies(lock, dev, present={**RUNTIME, "pytest": "9.0.1"})
    assert result.passed, result.summary()
    assert result.metrics["dev_installed"] == 1
    assert "production image has none" in result.detail


def test_dev_tool_at_another_version_is_drift(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    result = check_dependencies(lock, dev, present={**RUNTIME, "ruff": "0.15.0"})
    assert not result.passed
    assert result.metrics["drifted_packages"] == ["ruff"]
    assert result.metrics["unlisted"] == 0


def test_without_the_dev_lock_a_dev_tool_is_unlisted(locks: tuple[Path, Path]) -> None:
    lock, _ = locks
    result = check_dependencies(lock, present={**RUNTIME, "pytest": "9.0.1"})
    assert not result.passed
    assert result.metrics["unlisted_packages"] == ["pytest"]


def test_the_project_itself_is_exempt(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    assert check_dependencies(lock, dev, present={**RUNTIME, "secure_ml_pipeline": "9"}).passed


def test_pip_is_exempt_only_at_the_version_venv_bootstraps(locks: tuple[Path, Path]) -> None:
    lock, dev = locks
    assert check_dependencies(lock, dev, present={**RUNTIME, "pip": ensurepip.version()}).passed
    upgraded = check_dependencies(lock, dev, present={**RUNTIME, "pip": "0.0.1"})
    assert upgraded.metrics["unlisted_packages"] == ["pip"]


def test_empty_lock_fails_closed(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# nothing pinned\n")
    result = check_dependencies(lock, present={})
    assert not result.passed
    assert "pins no package" in result.detail


def test_a_missing_dev_lock_fails_closed(locks: tuple[Path, Path], tmp_path: Path) -> None:
    lock, _ = locks
    result = run_check(DEPENDENCIES, check_dependencies, lock, tmp_path / "absent.lock")
    assert not result.passed
    assert "failing closed" in result.detail


def test_this_environment_matches_the_project_locks() -> None:
    result = check_dependencies(LOCK_FILE, DEV_LOCK_FILE)
    assert result.passed, result.summary()
    assert result.metrics["pinned"] > 100
    assert result.metrics["dev_installed"] > 0  # the tests run with the dev tools


def test_runtime_packages_are_the_installed_runtime_pins(locks: tuple[Path, Path]) -> None:
    lock, _ = locks
    present = {"scikit-learn": "1.7.3", "pytest": "9.0.1"}
    assert runtime_packages(lock, present=present) == {"scikit-learn": "1.7.3"}
    real = runtime_packages(LOCK_FILE)
    assert real["scikit-learn"] == pinned(LOCK_FILE.read_text())["scikit-learn"]
    assert "pytest" not in real
    assert set(real) <= set(installed())


def test_sbom_of_this_environment_is_valid_cyclonedx(real_sbom: bytes) -> None:
    validate_sbom(real_sbom)
    doc = json.loads(real_sbom)
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")
    assert "timestamp" not in doc["metadata"]
    root = doc["metadata"]["component"]
    assert (root["type"], root["name"], root["version"]) == (
        "application",
        "secure-ml-pipeline",
        "0.1.0",
    )
    tools = {tool["name"] for tool in doc["metadata"]["tools"]["components"]}
    assert tools == {"secure-ml-pipeline", "cyclonedx-python-lib"}
    components = {c["name"]: c for c in doc["components"]}
    version = pinned(LOCK_FILE.read_text())["scikit-learn"]
    purl = f"pkg:pypi/scikit-learn@{version}"
    assert components["scikit-learn"] == {
        "bom-ref": purl,
        "name": "scikit-learn",
        "purl": purl,
        "type": "library",
        "version": version,
    }
    assert set(components) == set(runtime_packages(LOCK_FILE))
    assert "pytest" not in components and "ruff" not in components  # dev tools
    assert [c["name"] for c in doc["components"]] == sorted(components)
    deps = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    assert deps[root["bom-ref"]] == {c["bom-ref"] for c in doc["components"]}
    assert f"pkg:pypi/numpy@{components['numpy']['version']}" in deps[purl]  # Requires-Dist


def test_sbom_is_deterministic(real_sbom: bytes, locks: tuple[Path, Path]) -> None:
    again = cyclonedx_sbom(LOCK_FILE, root_name="secure-ml-pipeline", root_version="0.1.0")
    assert again == real_sbom
    lock, _ = locks

    def serial(present: dict[str, str]) -> str:
        doc = cyclonedx_sbom(lock, root_name="app", root_version="1", present=present)
        return str(json.loads(doc)["serialNumber"])

    assert serial(RUNTIME) == serial(dict(RUNTIME))
    assert serial(RUNTIME) != serial({**RUNTIME, "scikit-learn": "1.7.3"})  # from the content


def _break(doc: dict[str, Any], how: str) -> None:
    if how == "component without a name":
        del doc["components"][0]["name"]
    elif how == "bad specVersion":
        doc["specVersion"] = "9.9"
    elif how == "unknown property":
        doc["components"][0]["colour"] = "red"
    elif how == "unknown licence":
        doc["components"][0]["licenses"] = [{"license": {"id": "No-Such-Licence"}}]


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("component without a name", "$.components[0]: 'name' is a required property"),
        ("bad specVersion", "$.specVersion: '9.9', expected '1.6'"),
        ("unknown property", "$.components[0]: Additional properties are not allowed"),
        ("unknown licence", "$.components[0].licenses: "),  # via the bundled SPDX schema
    ],
)
def test_a_broken_sbom_is_rejected(how: str, error: str, locks: tuple[Path, Path]) -> None:
    lock, _ = locks
    doc = json.loads(cyclonedx_sbom(lock, root_name="app", root_version="1", present=RUNTIME))
    _break(doc, how)
    with pytest.raises(SbomError) as caught:
        validate_sbom(json.dumps(doc).encode())
    assert str(caught.value).startswith("the SBOM is not valid CycloneDX 1.6: ")
    assert error in str(caught.value)
    assert isinstance(caught.value, PipelineError) and isinstance(caught.value, ValueError)


def test_not_json_is_rejected() -> None:
    with pytest.raises(SbomError, match="not UTF-8 JSON"):
        validate_sbom(b"\xff{")


def test_validation_needs_no_network(real_sbom: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate_sbom touched the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    supply_chain._validator.cache_clear()  # load the schema files under the block too
    validate_sbom(real_sbom)
    doc = json.loads(real_sbom)
    doc["components"][0]["licenses"] = [{"license": {"id": "Apache-2.0"}}]  # a $ref to SPDX
    validate_sbom(json.dumps(doc).encode())
    doc["components"][0]["licenses"] = [{"license": {"id": "No-Such-Licence"}}]
    with pytest.raises(SbomError):
        validate_sbom(json.dumps(doc).encode())
