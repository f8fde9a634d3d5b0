"""Pure building blocks: gates, audit chain, key files, signing, envelope, settings."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tasks.common.audit import AuditLog
from tasks.common.context import RunContext, StageGates
from tasks.common.files import write_new
from tasks.common.gates import GateFailed, GateResult, check, run_check
from tasks.common.settings import ConfigError, load_settings
from tasks.trust import envelope, keys, signing
from tasks.trust.keys import KeyFileError, read_secret


# --- gates -----------------------------------------------------------------
def test_run_check_fails_closed_on_exception() -> None:
    def boom() -> GateResult:
        raise ValueError("secret value 42 in message")

    result = run_check("ingest.format", boom)
    assert not result.passed
    assert "ValueError" in result.detail and "42" not in result.detail


def test_run_check_rejects_result_for_another_gate() -> None:
    result = run_check("a.b", lambda: check("c.d", ok=True, metrics={}, threshold={}))
    assert not result.passed


def test_stage_gates_audits_and_raises_with_all_results(ctx: RunContext) -> None:
    gates = StageGates(ctx)
    gates.enforce(check("screen.duplicates", ok=True, metrics={"v": 1}, threshold={"max": 2}))
    with pytest.raises(GateFailed) as info:
        gates.enforce(check("screen.outliers", ok=False, metrics={"v": 3}, threshold={"max": 2}))
    assert [r.name for r in info.value.results] == ["screen.duplicates", "screen.outliers"]
    assert info.value.gate.name == "screen.outliers"
    assert "measured v=3" in str(info.value) and "threshold max=2" in str(info.value)
    lines = ctx.settings.audit_path.read_text().splitlines()
    assert [json.loads(x)["gate"] for x in lines] == ["screen.duplicates", "screen.outliers"]


def test_stage_gates_refuse_an_undeclared_gate(ctx: RunContext) -> None:
    with pytest.raises(ValueError, match="undeclared gate"):
        StageGates(ctx).enforce(check("screen.made_up", ok=True, metrics={}, threshold={}))


def test_gate_failed_survives_pickling() -> None:
    import pickle

    exc = GateFailed([check("a.b", ok=False, metrics={}, threshold={})])
    clone = pickle.loads(pickle.dumps(exc))
    assert clone.gate.name == "a.b"


# --- audit chain -----------------------------------------------------------
def test_audit_chain_intact_then_edited_line_detected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.append("gate", n=i)
    assert log.verify().intact and log.verify().entries == 5
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    lines = log.path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["n"] = 99
    lines[2] = json.dumps(entry, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    status = log.verify()
    assert not status.intact and "line 3" in status.detail


def test_audit_chain_detects_deleted_and_reordered_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(4):
        log.append("gate", n=i)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2], lines[3]]) + "\n")
    assert not log.verify().intact
    log.path.write_text("\n".join([lines[1], lines[0], lines[2], lines[3]]) + "\n")
    assert not log.verify().intact


def test_audit_appends_read_only_the_tail_and_stay_linear(tmp_path: Path) -> None:
    """An append reads the last entry from the end of the file (entries longer than the
    read block included) and threads appending at once still make one linear chain."""
    from concurrent.futures import ThreadPoolExecutor

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("gate", detail="x" * 150_000)  # longer than two 64 KiB blocks
    head = log.append("gate", n=1)
    assert json.loads(log.path.read_text().splitlines()[-1])["hash"] == head
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: log.append("gate", n=i), range(40)))
    status = log.verify()
    assert status.intact and status.entries == 42, status.detail


# --- key files -------------------------------------------------------------
def test_key_file_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k"
    write_new(path, b"a" * 32)
    with pytest.raises(FileExistsError):
        write_new(path, b"b" * 32)
    assert read_secret(path) == b"a" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_new(path, b"x" * 32)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_secret(path)


# --- signing (DSSE) --------------------------------------------------------
def test_signature_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    keys.create(tmp_path)
    signer = signing.Signer.local(tmp_path)
    env = signer.sign({"model": "m", "sha256": "ab"}, payload_type=signing.PROVENANCE_TYPE)
    pub = signing.load_public_key(tmp_path)
    assert signing.verify(env, public_key=pub, payload_type=signing.PROVENANCE_TYPE)["model"] == "m"

    import base64

    forged = dict(env, payload=base64.b64encode(b'{"model":"evil","sha256":"ab"}').decode())
    with pytest.raises(signing.SignatureError, match="altered"):
        signing.verify(forged, public_key=pub, payload_type=signing.PROVENANCE_TYPE)
    with pytest.raises(signing.SignatureError, match="type"):
        signing.verify(env, public_key=pub, payload_type=signing.RELEASE_TYPE)


def test_signature_by_another_key_is_refused(tmp_path: Path) -> None:
    keys.create(tmp_path / "a")
    keys.create(tmp_path / "b")
    env = signing.Signer.local(tmp_path / "a").sign({"x": 1}, payload_type="t")
    other = signing.Signer.local(tmp_path / "b")
    with pytest.raises(signing.SignatureError, match="not signed by"):
        signing.verify(env, public_key=other.public_key, payload_type="t")


# --- envelope encryption ---------------------------------------------------
def test_envelope_round_trip_context_and_tamper(tmp_path: Path) -> None:
    keys.create(tmp_path)
    key = envelope.local_master_key(tmp_path)
    ctx = {"model_name": "m", "model_version": "1"}
    blob = envelope.encrypt(b"model bytes" * 100, key_provider=key, context=ctx)
    assert b"model bytes" not in blob
    assert envelope.decrypt(blob, key_provider=key, context=ctx) == b"model bytes" * 100
    with pytest.raises(envelope.EnvelopeError, match="model_version"):
        envelope.decrypt(blob, key_provider=key, context={**ctx, "model_version": "2"})
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x01
    with pytest.raises(envelope.EnvelopeError):
        envelope.decrypt(bytes(flipped), key_provider=key, context=ctx)


def test_envelope_many_frames_truncation_and_the_signing_suite(tmp_path: Path) -> None:
    keys.create(tmp_path)
    key = envelope.local_master_key(tmp_path)
    ctx = {"model_name": "m"}
    data = bytes(range(256)) * (3 * envelope.FRAME_LENGTH // 256 + 7)  # 4 frames
    blob = envelope.encrypt(data, key_provider=key, context=ctx)
    assert envelope.decrypt(blob, key_provider=key, context=ctx) == data
    for cut in (len(blob) - 1, len(blob) - envelope.FRAME_LENGTH, len(blob) // 2):
        with pytest.raises(envelope.EnvelopeError):  # a dropped tail or frame never decrypts
            envelope.decrypt(blob[:cut], key_provider=key, context=ctx)
    # Releases made with the SDK's default (ECDSA-signed) committing suite still decrypt.
    signed, header = envelope._CLIENT.encrypt(source=data, key_provider=key, encryption_context=ctx)
    assert header.algorithm != envelope.ALGORITHM
    assert envelope.decrypt(signed, key_provider=key, context=ctx) == data


def test_envelope_other_master_key_cannot_decrypt(tmp_path: Path) -> None:
    keys.create(tmp_path / "a")
    keys.create(tmp_path / "b")
    blob = envelope.encrypt(
        b"m", key_provider=envelope.local_master_key(tmp_path / "a"), context={"a": "1"}
    )
    with pytest.raises(envelope.EnvelopeError):
        envelope.decrypt(
            blob, key_provider=envelope.local_master_key(tmp_path / "b"), context={"a": "1"}
        )


# --- settings --------------------------------------------------------------
def test_settings_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURE_PIPELINE_EVALUATE__MIN_ACCURACY", "0.97")
    assert load_settings().evaluate.min_accuracy == 0.97


def test_settings_refuse_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[dataset]\nname = "x"\nsurprise = 1\n')
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_settings(unknown)


# --- deploy preflight -------------------------------------------------------
def test_bucket_posture_gate_names_what_is_missing() -> None:
    from tasks.checks.bucket_posture import check_bucket_posture

    good = {
        "exists": True,
        "versioning": "Enabled",
        "object_lock": True,
        "default_sse": "AES256",
        "denies_unencrypted_put": True,
        "denies_insecure_transport": True,
    }
    assert check_bucket_posture(good, sse="AES256").passed
    weak = {**good, "versioning": "Suspended", "denies_insecure_transport": False}
    result = check_bucket_posture(weak, sse="AES256")
    assert not result.passed
    assert "versioning" in result.detail and "denies_insecure_transport" in result.detail
    assert not check_bucket_posture(good, sse="aws:kms").passed  # KMS configured, AES256 found
