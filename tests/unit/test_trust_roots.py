"""Consumers' trust roots, waiver refusal, the signed file list's model, and the
version-history comparison of a release (the store side is tested end to end)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tasks.common.registry import ModelRegistry
from tasks.common.settings import ConfigError
from tasks.trust import keys
from tasks.trust.roots import trust_root, waiver_check
from tasks.trust.versions import version_problems


def _pub(path: Path, curve: ec.EllipticCurve | None = None) -> Path:
    key = ec.generate_private_key(curve or ec.SECP256R1()).public_key()
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_pins_win_over_the_keyring_and_the_keyring_is_named_when_unpinned(
    settings, tmp_path
) -> None:
    keys.create(settings.keys_dir)
    root = trust_root(settings)
    assert root.source == "state directory" and "state directory's keyring" in root.detail
    pin = _pub(tmp_path / "trainer.pub")
    pinned = settings.model_copy(
        update={"trust": settings.trust.model_copy(update={"signers": [pin]})}
    )
    root = trust_root(pinned)
    assert root.source == "[trust] signers" and len(root.keys) == 1
    assert keys.public_keys_pem(settings.keys_dir).keys().isdisjoint(root.keys)
    mine = trust_root(pinned, [str(_pub(tmp_path / "mine.pub"))])
    assert mine.source == "--trusted-keys" and mine.keys.keys().isdisjoint(root.keys)


def test_unusable_pins_and_missing_keys_are_usage_errors(settings, tmp_path) -> None:
    with pytest.raises(ConfigError, match="no keys directory"):
        trust_root(settings)
    settings.keys_dir.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"signing\.pub is missing"):
        trust_root(settings)
    with pytest.raises(ConfigError, match="cannot be read"):
        trust_root(settings, [str(tmp_path / "absent.pub")])
    with pytest.raises(ConfigError, match="neither an ECDSA P-256"):
        trust_root(settings, [str(_pub(tmp_path / "p384.pub", ec.SECP384R1()))])


def test_a_waived_release_is_refused_naming_its_waivers() -> None:
    from tasks.trust import provenance as slsa

    statement: dict = {"predicate": {"buildDefinition": {"internalParameters": {}}}}
    assert slsa.internal(statement) == {}  # the shape `waivers_of` reads
    statement["predicate"]["buildDefinition"]["internalParameters"] = {
        "waivers": [{"gate": "evaluate.quality", "setting": "evaluate.min_accuracy", "value": 0.5}]
    }
    name, ok, detail = waiver_check(statement)
    assert name == "release.waivers" and not ok
    assert "evaluate.quality (evaluate.min_accuracy = 0.5)" in detail
    assert waiver_check({})[1] is True


def test_the_signed_file_lists_model_must_be_the_released_model() -> None:
    registry = ModelRegistry(None, "m")  # type: ignore[arg-type]  # refused before any call
    name, ok, detail = registry.check_files(
        "1", signed={"model.skops": "a" * 64, "MLmodel": "c" * 64}, model_sha256="b" * 64
    )
    assert name == "mlflow.artifact" and not ok and "not the released model" in detail


def test_version_history_names_replaced_hidden_and_added_objects() -> None:
    t = datetime(2026, 12, 5, tzinfo=UTC)

    def v(vid: str) -> dict:
        return {"VersionId": vid, "LastModified": t}

    history = {
        "model.skops.enc": {"Versions": [v("2"), v("1")], "DeleteMarkers": []},
        "report.json": {"Versions": [v("r")], "DeleteMarkers": [v("m")]},
        "release.dsse.json": {"Versions": [v("x")], "DeleteMarkers": []},
        "extra.bin": {"Versions": [v("e")], "DeleteMarkers": []},
    }
    expected = {"model.skops.enc": "1", "report.json": "r", "release.dsse.json": None}
    found = version_problems(history, expected)
    assert any(p.startswith("model.skops.enc has 2 versions") for p in found)
    assert any(p.startswith("report.json was deleted") for p in found)
    assert any(p.startswith("extra.bin is not part of the signed release") for p in found)
    assert not any(p.startswith("release.dsse.json") for p in found)
    clean = {k: h for k, h in history.items() if k == "release.dsse.json"}
    assert version_problems(clean, {"release.dsse.json": None}) == []


def test_a_missing_signing_pub_is_a_key_error_not_a_crash(settings) -> None:
    keys.create(settings.keys_dir)
    (settings.keys_dir / keys.PUBLIC_KEY).unlink()
    with pytest.raises(keys.KeyFileError, match="is missing"):
        keys.require(settings.keys_dir)
