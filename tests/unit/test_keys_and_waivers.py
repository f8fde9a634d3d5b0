"""The keyring (created once, refused when a key is missing, rotated with old keys
kept) and waivers (a gate weakened beyond its safe range needs one), as pure code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.common.settings import ConfigError, load_settings
from tasks.trust import envelope, keys, signing


def test_keys_are_created_once_and_a_missing_one_is_never_regenerated(tmp_path: Path) -> None:
    kd = tmp_path / "keys"
    with pytest.raises(keys.KeyFileError, match="keys init"):
        keys.require(kd)
    ring, created = keys.ensure_keys(kd, had_runs=lambda: False)
    assert created and keys.require(kd) == ring
    assert keys.ensure_keys(kd, had_runs=lambda: True) == (ring, False)
    with pytest.raises(keys.KeyFileError, match="already holds keys"):
        keys.create(kd)
    (kd / "master.aes256").unlink()
    with pytest.raises(keys.KeyFileError, match="restore it from your backup"):
        keys.ensure_keys(kd, had_runs=lambda: False)
    with pytest.raises(keys.KeyFileError, match="earlier runs"):
        keys.ensure_keys(tmp_path / "other", had_runs=lambda: True)
    assert not (tmp_path / "other").exists()


def test_a_swapped_key_file_is_not_the_recorded_one(tmp_path: Path) -> None:
    kd = tmp_path / "keys"
    keys.create(kd)
    (kd / keys.FILES["signing"]).unlink()
    (kd / keys.FILES["signing"]).write_bytes(b"\1" * 32)
    (kd / keys.FILES["signing"]).chmod(0o600)
    with pytest.raises(keys.KeyFileError, match="not the signing key"):
        signing.Signer.local(kd)


def test_rotation_keeps_what_earlier_releases_need(tmp_path: Path) -> None:
    kd = tmp_path / "keys"
    keys.create(kd)
    blob = envelope.encrypt(b"m", key_provider=envelope.local_master_key(kd), context={"a": "1"})
    statement = signing.Signer.local(kd).sign({"x": 1}, payload_type="t")
    old_master, new_master = keys.rotate(kd, "master")
    old_signing, _ = keys.rotate(kd, "signing")
    assert old_master != new_master and old_master.startswith("local-master-")
    decrypting = envelope.local_master_key(kd, purpose="decrypt")
    assert envelope.decrypt(blob, key_provider=decrypting, context={"a": "1"}) == b"m"
    with pytest.raises(envelope.EnvelopeError):  # a retired key never encrypts or is default
        envelope.decrypt(blob, key_provider=envelope.local_master_key(kd), context={"a": "1"})
    trusted = signing.trusted_keys(kd)
    assert old_signing in trusted
    assert signing.verify(statement, public_key=trusted, payload_type="t") == {"x": 1}
    with pytest.raises(signing.SignatureError, match="not signed by a key"):
        signing.verify(statement, public_key=signing.load_public_key(kd), payload_type="t")
    with pytest.raises(keys.KeyFileError, match="cannot be rotated"):
        keys.rotate(kd, "pii")


def test_weakening_a_gate_needs_a_named_waiver(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.min_accuracy = 0\.1 .*evaluate\.quality"):
        load_settings(state_dir=tmp_path, evaluate={"min_accuracy": 0.1})
    waived = load_settings(
        state_dir=tmp_path,
        evaluate={"min_accuracy": 0.1},
        waivers={"evaluate.quality": "a pilot, reviewed by the data owner"},
    )
    assert waived.active_waivers == [
        {
            "setting": "evaluate.min_accuracy",
            "value": 0.1,
            "safe": ">= 0.75",
            "gate": "evaluate.quality",
            "reason": "a pilot, reviewed by the data owner",
        }
    ]
    assert load_settings(state_dir=tmp_path, evaluate={"min_accuracy": 0.8}).active_waivers == []
    for waivers, message in (
        ({"evaluate.quality": "short"}, "reason in words"),
        ({"no.such_gate": "a long enough reason"}, "no such gate"),
        ({"screen.duplicates": "a long enough reason"}, "nothing weakens"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(state_dir=tmp_path, waivers=waivers)


def test_a_weakening_in_the_config_file_is_refused_too(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2] / "data"
    text = (data / "breast_cancer.toml").read_text()
    for name in ("breast_cancer.csv", "breast_cancer.profile.json", "breast_cancer.profile-"):
        text = text.replace(f'"{name}', f'"{data}/{name}')  # the copy lives elsewhere
    text = text.replace('"../expectations/', f'"{data.parent}/expectations/')
    config = tmp_path / "weak.toml"
    config.write_text(text.replace("max_duplicate_rate = 0.02", "max_duplicate_rate = 1.0"))
    with pytest.raises(
        ConfigError, match=r"screen\.max_duplicate_rate = 1\.0 .*screen\.duplicates"
    ):
        load_settings(config)
    config.write_text(text)
    assert load_settings(config).screen.max_duplicate_rate == 0.02  # the copy itself is valid


def test_a_legacy_ed25519_signing_key_is_rotated_to_p256_and_still_verifies(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    kd = tmp_path / "keys"
    keys.create(kd)
    old = Ed25519PrivateKey.generate()  # the layout of a state directory of an earlier version
    raw = old.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    (kd / keys.FILES["signing"]).unlink()
    (kd / keys.LEGACY_SIGNING).write_bytes(raw)
    (kd / keys.LEGACY_SIGNING).chmod(0o600)
    (kd / keys.PUBLIC_KEY).write_bytes(
        old.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ring = keys.load_keyring(kd)
    ring["signing"]["active"] = keys.signing_key_id(raw)
    (kd / keys.KEYRING).write_text(__import__("json").dumps(ring))
    statement = signing.Signer(old).sign({"x": 1}, payload_type="t")
    with pytest.raises(keys.KeyFileError, match="keys rotate signing"):
        signing.Signer.local(kd)
    retired, active = keys.rotate(kd, "signing")
    assert retired == ring["signing"]["active"] and not (kd / keys.LEGACY_SIGNING).exists()
    new = signing.Signer.local(kd)
    assert new.key_id == active and new.public_key.curve.name == "secp256r1"  # type: ignore[union-attr]
    trusted = signing.trusted_keys(kd)
    assert signing.verify(statement, public_key=trusted, payload_type="t") == {"x": 1}
    fresh = new.sign({"y": 2}, payload_type="t")
    assert signing.verify(fresh, public_key=trusted, payload_type="t") == {"y": 2}
