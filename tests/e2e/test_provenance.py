"""A deployed release checked the way a consumer checks it: `fetch`, then the public
`model_signing` command with the pipeline's public key, the CycloneDX schema and the
SLSA statement, without any code of this project in the verifying path."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import CLI, Pipeline

pytestmark = pytest.mark.e2e
MODEL_SIGNING = str(Path(CLI).with_name("model_signing"))
CHAMPION = "models:/breast-cancer-classifier@champion"
RELEASE_FILES = {
    "model.skops",
    "model.sig",
    "provenance.dsse.json",
    "sbom.cdx.json",
    "report.json",
    "security-report.html",
}


def _openssf_verify(directory: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            MODEL_SIGNING,
            "verify",
            "key",
            str(directory),
            "--signature",
            str(directory / "model.sig"),
            "--public_key",
            str(public_key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fetched_release_verifies_with_the_public_tools(kept_up: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "release"
    fetched = kept_up.run("fetch", CHAMPION, "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert {p.name for p in out.iterdir()} == RELEASE_FILES
    public_key = kept_up.state_dir / "keys" / "signing.pub"

    ok = _openssf_verify(out, public_key)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # The SLSA statement: its subject is the model file, by sha256.
    envelope = json.loads((out / "provenance.dsse.json").read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    model_sha = hashlib.sha256((out / "model.skops").read_bytes()).hexdigest()
    assert statement["subject"] == [{"name": "model.skops", "digest": {"sha256": model_sha}}]
    byproducts = {
        b["name"]: b["digest"]["sha256"] for b in statement["predicate"]["runDetails"]["byproducts"]
    }
    assert (
        byproducts["sbom.cdx.json"]
        == hashlib.sha256((out / "sbom.cdx.json").read_bytes()).hexdigest()
    )
    deps = {d["name"] for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert {"dataset", "requirements.lock", "code"} <= deps

    # The SBOM is valid CycloneDX (the library's schema validator, not our code).
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sbom = (out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    names = {c["name"] for c in json.loads(sbom)["components"]}
    assert "scikit-learn" in names and "pytest" not in names

    # One changed byte in any file, or a file added, and the public verifier says no.
    for name in ("model.skops", "report.json", "sbom.cdx.json"):
        copy = tmp_path / f"tampered-{name}"
        shutil.copytree(out, copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        bad = _openssf_verify(copy, public_key)
        assert bad.returncode != 0 and "mismatch" in (bad.stdout + bad.stderr).lower(), name
    extra = tmp_path / "extra"
    shutil.copytree(out, extra)
    (extra / "notes.txt").write_text("added after signing")
    assert _openssf_verify(extra, public_key).returncode != 0


def test_fetch_writes_nothing_unless_everything_verifies(kept_up: Pipeline, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    refused = kept_up.run("fetch", CHAMPION, "--out", str(taken))
    assert refused.returncode == 2 and "not an empty directory" in refused.stderr
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    verify = kept_up.run("verify", CHAMPION)
    assert verify.returncode == 0, verify.stderr
    assert "gates in the signed provenance:" in verify.stderr
    assert "waivers in the signed provenance: none" in verify.stderr

    out = tmp_path / "never"
    missing = kept_up.run("fetch", "s3://secure-models/models/nope/1/", "--out", str(out))
    assert missing.returncode == 1 and not out.exists()
    assert not list(tmp_path.glob(".never.partial-*"))


def test_two_identical_runs_release_the_same_model_bytes(kept_up: Pipeline, tmp_path: Path) -> None:
    first_code, first, err = kept_up.train(tmp_path)
    assert first_code == 0, err
    second_code, second, err = kept_up.train(tmp_path)
    assert second_code == 0, err
    assert first["model"]["version"] != second["model"]["version"]
    assert first["model"]["sha256"] == second["model"]["sha256"]
