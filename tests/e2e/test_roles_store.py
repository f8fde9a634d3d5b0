"""Insiders holding one role's files, through the `secure-pipeline` command: the attacks
on the store and the trust roots, replayed, now fail.

One stack of its own with one deployed run; the tests run in file order and the last
two leave the audit trail failing on purpose (a rewritten head, a replaced release).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import Pipeline, _env

pytestmark = pytest.mark.e2e
MODEL = "breast-cancer-classifier"
CHAMPION = f"models:/{MODEL}@champion"


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, dict[str, Any]]]:
    """A kept-up stack with one deployed version, and that run's report."""
    state = tmp_path_factory.mktemp("roles") / "state"
    pipe = Pipeline(state_dir=state, env=_env(state))
    assert pipe.run("local", "up", timeout=180).returncode == 0
    try:
        code, report, err = pipe.train(state.parent)
        assert code == 0 and report["status"] == "deployed", err
        yield pipe, report
    finally:
        pipe.run("local", "down", timeout=120)


def client(pipe: Pipeline, role: str) -> Any:
    """The kept-up store as `role` (an insider holding that role's credential file)."""
    from tasks.common.s3 import s3_client
    from tasks.localstack.stack import s3_service

    with s3_service(pipe.settings(), role=role) as endpoint:
        return s3_client(endpoint)


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def pinned_config(tmp: Path, *pins: Path, **dataset: str) -> Path:
    """The bundled config, outside the repo, with [trust] signers (and dataset changes)."""
    text = (PROJECT_ROOT / "data" / "breast_cancer.toml").read_text()
    data = PROJECT_ROOT / "data"
    shutil.copy(data / "breast_cancer.csv", tmp)  # ingestion is confined to the config's dir
    text = text.replace(
        '"breast_cancer.profile-signer.pub"', f'"{data}/breast_cancer.profile-signer.pub"'
    )
    text = text.replace('"../expectations/', f'"{PROJECT_ROOT}/expectations/')
    text = text.replace('"breast_cancer.profile.json"', f'"{data / "breast_cancer.profile.json"}"')
    for key, value in dataset.items():
        head, _, rest = text.partition(f"\n{key} = ")
        text = f'{head}\n{key} = "{value}"\n{rest.partition(chr(10))[2]}'
    pins_toml = ", ".join(f'"{p}"' for p in pins)
    path = tmp / "pinned.toml"
    path.write_text(f"{text}\n[trust]\nsigners = [{pins_toml}]\n")
    return path


def attacker_release(pipe: Pipeline, report: dict[str, Any], version: str, *, spoof: bool) -> str:
    """The deployed release's files under a new version, with a release record signed by
    an attacker's key (its keyid the trainer's when `spoof`). Returns its URI and stores
    the attacker's public key PEM at <state>/../attacker-VERSION.pub."""
    from tasks.common.s3 import put_immutable
    from tasks.trust.signing import RELEASE_TYPE, Signer, canonical_json, verify

    trainer = client(pipe, "pipeline")
    bucket, key = report["deployment"]["uri"].removeprefix("s3://").split("/", 1)
    envelope = json.loads(trainer.get_object(Bucket=bucket, Key=key)["Body"].read())
    record = json.loads(base64.b64decode(envelope["payload"]))
    base, new_base = key.rsplit("/", 1)[0], f"models/{MODEL}/{version}"
    for entry in (record["artifact"], *record["files"].values()):
        body = trainer.get_object(Bucket=bucket, Key=entry["key"], VersionId=entry["version_id"])
        entry["key"] = entry["key"].replace(base, new_base)
        entry["version_id"] = put_immutable(
            trainer, bucket=bucket, key=entry["key"], body=body["Body"].read()
        )
    attacker = ec.generate_private_key(ec.SECP256R1())
    signed = Signer(attacker).sign(record, payload_type=RELEASE_TYPE)
    verify(signed, public_key=attacker.public_key(), payload_type=RELEASE_TYPE)
    if spoof:  # claim the trainer's key id: whoever replaced signing.pub is then trusted
        signed["signatures"][0]["keyid"] = envelope["signatures"][0]["keyid"]
    put_immutable(
        trainer, bucket=bucket, key=f"{new_base}/release.dsse.json", body=canonical_json(signed)
    )
    pem = attacker.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (pipe.state_dir.parent / f"attacker-{version}.pub").write_bytes(pem)
    return f"s3://{bucket}/{new_base}/release.dsse.json"


# --- the trust roots ------------------------------------------------------------------------
def test_unpinned_verify_says_its_trust_root_is_the_state_directory(roles, tmp_path) -> None:
    pipe, _ = roles
    out = pipe.run("verify", CHAMPION)
    assert out.returncode == 0, out.stderr
    assert "trust root: the state directory's keyring" in out.stderr


def test_an_attacker_key_listed_as_retired_fails_verify_when_keys_are_pinned(
    roles, tmp_path
) -> None:
    pipe, report = roles
    keys = pipe.state_dir / "keys"
    pin = tmp_path / "trainer.pub"  # the reader's own copy, taken before the attack
    shutil.copy(keys / "signing.pub", pin)
    uri = attacker_release(pipe, report, "9001", spoof=False)
    attacker_pub = (pipe.state_dir.parent / "attacker-9001.pub").read_bytes()
    saved = (keys / "keyring.json").read_bytes()
    ring = json.loads(saved)
    from tasks.trust.signing import key_id, load_public_pem

    kid = key_id(load_public_pem(attacker_pub, "attacker"))
    ring["signing"]["retired"].append(kid)
    (keys / "retired").mkdir(exist_ok=True, mode=0o700)
    (keys / "retired" / f"signing-{kid}.pub").write_bytes(attacker_pub)
    (keys / "keyring.json").write_text(json.dumps(ring))
    try:
        out = pipe.run("verify", uri)  # the attack on the unpinned default still works
        assert out.returncode == 0, out.stderr
        config = pinned_config(tmp_path, pin)
        for args in (("--config", str(config)), ("--trusted-keys", str(pin))):
            out = pipe.run("verify", uri, *args)
            assert out.returncode == 1 and "FAIL release.signature" in out.stderr, out.stderr
            assert "keyring is not consulted" in out.stderr
            out = pipe.run("verify", CHAMPION, *args)  # the genuine release still verifies
            assert out.returncode == 0 and "a key pinned by" in out.stderr, out.stderr
        out = pipe.run("fetch", uri, "--out", str(tmp_path / "f"), "--trusted-keys", str(pin))
        assert out.returncode == 1 and not (tmp_path / "f").exists(), out.stderr
    finally:
        (keys / "keyring.json").write_bytes(saved)


def test_a_replaced_signing_pub_fails_verify_when_keys_are_pinned(roles, tmp_path) -> None:
    pipe, report = roles
    keys = pipe.state_dir / "keys"
    pin = tmp_path / "trainer.pub"
    shutil.copy(keys / "signing.pub", pin)
    uri = attacker_release(pipe, report, "9002", spoof=True)
    saved = (keys / "signing.pub").read_bytes()
    (keys / "signing.pub").write_bytes((pipe.state_dir.parent / "attacker-9002.pub").read_bytes())
    try:
        out = pipe.run("verify", uri)  # unpinned: the swapped signing.pub is trusted
        assert "ok   release.signature" in out.stderr, out.stderr
        out = pipe.run("verify", uri, "--config", str(pinned_config(tmp_path, pin)))
        assert out.returncode == 1 and "FAIL release.signature" in out.stderr, out.stderr
    finally:
        (keys / "signing.pub").write_bytes(saved)


def test_missing_keys_or_signing_pub_is_a_usage_error(roles, tmp_path) -> None:
    pipe, _ = roles
    keys = pipe.state_dir / "keys"
    moved = tmp_path / "signing.pub"
    shutil.move(keys / "signing.pub", moved)
    try:
        out = pipe.run("verify", CHAMPION)
        assert out.returncode == 2 and "signing.pub is missing" in one_line(out.stderr)
        out = pipe.run("run", "--quiet")
        assert out.returncode == 2 and "signing.pub is missing" in one_line(out.stderr)
    finally:
        shutil.move(moved, keys / "signing.pub")
    shutil.move(keys, tmp_path / "keys")
    try:
        out = pipe.run("fetch", CHAMPION, "--out", str(tmp_path / "out"))
        assert out.returncode == 2 and "no keys directory" in one_line(out.stderr)
        out = pipe.run("run", "--quiet")
        assert out.returncode == 2 and "keys were removed" in one_line(out.stderr)
    finally:
        shutil.move(tmp_path / "keys", keys)


def steward(tmp: Path) -> tuple[Path, Path]:
    """A data steward's key pair made with openssl (private 0600, public beside it)."""
    import subprocess

    pem, pub = tmp / "steward.pem", tmp / "steward.pub"
    gen = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"]
    subprocess.run(["openssl", *gen, str(pem)], check=True, capture_output=True)
    pem.chmod(0o600)
    subprocess.run(
        ["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pub)],
        check=True,
        capture_output=True,
    )
    return pem, pub


def with_steward(config: Path, pub: Path) -> Path:
    """`config` with the steward's public key added to dataset.profile_signers."""
    text = config.read_text()
    head, _, rest = text.partition("\nprofile_signers = [")
    config.write_text(f'{head}\nprofile_signers = ["{pub}", {rest}')
    return config


def suite_pins(pipe: Pipeline, tmp: Path, name: str, *key: str) -> dict[str, str]:
    """`secure-pipeline suite` of the bundled table (signed with `key` if given): the
    dataset settings that pin it."""
    out = tmp / name
    made = pipe.run(
        "suite", str(PROJECT_ROOT / "data" / "breast_cancer.csv"), "--out", str(out), *key
    )
    assert made.returncode == 0, made.stderr
    return {"suite": str(out), "suite_sha256": hashlib.sha256(out.read_bytes()).hexdigest()}


def test_a_suite_rebuilt_by_the_trainer_blocks_the_run_when_keys_are_pinned(
    roles, tmp_path
) -> None:
    """The trainer rebuilds the expectation suite, signs it with its own key and
    re-pins it: with trust roots pinned only the data steward's signature counts."""
    pipe, _ = roles
    trainer_key = pipe.state_dir / "keys" / "signing.p256.pem"
    _, steward_pub = steward(tmp_path)
    pins = suite_pins(pipe, tmp_path, "rebuilt.json", "--key", str(trainer_key))
    config = with_steward(
        pinned_config(tmp_path, pipe.state_dir / "keys" / "signing.pub", **pins), steward_pub
    )
    code, report, err = pipe.train(tmp_path, "--config", str(config))
    assert code == 1 and report["status"] == "blocked", err
    failed = [g for g in report["gates"] if not g["passed"]]
    assert failed[0]["name"] == "validate.suite_integrity", failed
    assert "no valid signature by a dataset.profile_signers key" in failed[0]["detail"], failed
    assert failed[0]["threshold"]["signed_by"] == "dataset.profile_signers"


def test_a_profile_resigned_by_the_trainer_blocks_the_run_when_keys_are_pinned(
    roles, tmp_path
) -> None:
    """The trainer rebuilds the reference profile, signs it with its own key and re-pins
    it: with trust roots pinned only the data steward's key signs profiles. (The suite
    here is the steward's, signed with `suite --key`: it passes.)"""
    pipe, _ = roles
    profile = tmp_path / "poisoned.profile.json"
    made = pipe.run(
        "profile", str(PROJECT_ROOT / "data" / "breast_cancer.csv"), "--out", str(profile)
    )
    assert made.returncode == 0, made.stderr
    digest = hashlib.sha256(profile.read_bytes()).hexdigest()
    steward_pem, steward_pub = steward(tmp_path)
    pins = suite_pins(pipe, tmp_path, "steward.json", "--key", str(steward_pem))
    config = pinned_config(
        tmp_path,
        pipe.state_dir / "keys" / "signing.pub",
        reference_profile=str(profile),
        reference_profile_sha256=digest,
        **pins,
    )
    code, report, err = pipe.train(tmp_path, "--config", str(with_steward(config, steward_pub)))
    assert code == 1 and report["status"] == "blocked", err
    # Validation ran beside the screen and passed: its gates are in the audit log.
    log = (pipe.state_dir / "audit" / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in log]
    [suite_gate] = [
        e
        for e in entries
        if e.get("run_id") == report["flow_run_id"] and e.get("gate") == "validate.suite_integrity"
    ]
    assert suite_gate["passed"] and suite_gate["metrics"]["signed_by"] == "steward.pub"
    failed = [g for g in report["gates"] if not g["passed"]]
    assert failed[0]["name"] == "screen.profile_integrity", failed
    assert "no valid signature" in failed[0]["detail"], failed


# --- the store ------------------------------------------------------------------------------
def test_an_admin_rewriting_the_audit_head_is_caught_by_audit_verify(roles) -> None:
    """The attack: with the admin's file drop the anchor rules, delete every anchor
    version, write a new head as the auditor, restore the policy. Deleting compliance-
    locked anchors fails; the rewritten log no longer matches them."""
    pipe, _ = roles
    assert pipe.run("audit", "verify").returncode == 0
    admin, auditor = client(pipe, "admin"), client(pipe, "auditor")
    bucket = pipe.settings().storage.bucket
    policy = admin.get_bucket_policy(Bucket=bucket)["Policy"]
    dropped = [st for st in json.loads(policy)["Statement"] if st["Sid"] != "KeepAuditAnchors"]
    weakened = {**json.loads(policy), "Statement": dropped}
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(weakened))
    try:
        listed = admin.list_object_versions(Bucket=bucket, Prefix="audit-anchors/")["Versions"]
        for v in listed:
            with pytest.raises(ClientError, match="AccessDenied"):
                admin.delete_object(
                    Bucket=bucket,
                    Key=v["Key"],
                    VersionId=v["VersionId"],
                    BypassGovernanceRetention=True,
                )
        out = pipe.run("audit", "verify")  # a dropped rule left behind is named
        assert out.returncode == 1 and "KeepAuditAnchors is missing" in out.stderr, out.stderr
        log = pipe.state_dir / "audit" / "audit.jsonl"
        lines = log.read_text().splitlines(keepends=True)
        log.write_text("".join(lines[:-3]))  # the last run's end vanishes from the trail
        from tasks.common.anchors import anchor_head

        anchor_head(pipe.settings(), auditor, run_id="rewritten")
    finally:
        admin.put_bucket_policy(Bucket=bucket, Policy=policy)
    out = pipe.run("audit", "verify")
    assert out.returncode == 1 and "truncated" in out.stderr, out.stderr


def test_a_release_replaced_by_the_trainer_fails_verify_fetch_and_audit_verify(roles, tmp_path):
    """The attack: with the trainer's file, delete a live release and write it again
    with a newly signed record. The delete is refused; a new version over it (which S3
    cannot refuse) is named by every consumer."""
    from tasks.common.settings import load_settings
    from tasks.trust.signing import RELEASE_TYPE, Signer, canonical_json

    pipe, report = roles
    trainer = client(pipe, "pipeline")
    bucket, key = report["deployment"]["uri"].removeprefix("s3://").split("/", 1)
    base = key.rsplit("/", 1)[0]
    for name in ("release.dsse.json", "model.skops.enc"):
        with pytest.raises(ClientError, match="AccessDenied"):
            trainer.delete_object(Bucket=bucket, Key=f"{base}/{name}")
    envelope = json.loads(trainer.get_object(Bucket=bucket, Key=key)["Body"].read())
    record = json.loads(base64.b64decode(envelope["payload"]))
    art = record["artifact"]
    body = trainer.get_object(Bucket=bucket, Key=art["key"])["Body"].read()
    new = trainer.put_object(
        Bucket=bucket, Key=art["key"], Body=body, ServerSideEncryption="AES256"
    )
    art["version_id"] = new["VersionId"]
    signer = Signer.local(load_settings(state_dir=pipe.state_dir).keys_dir)
    trainer.put_object(
        Bucket=bucket,
        Key=key,
        Body=canonical_json(signer.sign(record, payload_type=RELEASE_TYPE)),
        ServerSideEncryption="AES256",
    )
    for command in (("verify", CHAMPION), ("fetch", CHAMPION, "--out", str(tmp_path / "f"))):
        out = pipe.run(*command)
        assert out.returncode == 1 and "FAIL release.versions" in out.stderr, out.stderr
        assert "model.skops.enc has 2 versions" in out.stderr
        assert "release.dsse.json has 2 versions" in out.stderr
    out = pipe.run("audit", "verify")
    assert out.returncode == 1 and "releases changed after release" in out.stderr
    assert f"{base}/model.skops.enc has 2 versions" in out.stderr
