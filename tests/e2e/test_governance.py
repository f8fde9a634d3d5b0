"""The two-person rule through the `secure-pipeline` command: approvals, promotion,
rollback and the champion record, on one stack of its own with two governed runs.

The rule: ``required_approvals = 2``; approvers A (PKCS#8 key) and B (SEC1 key) and
the trainer's own public key are listed (so that self-approval is refused by the
rule, not by the list); P is the promoter. Version 1 is a clean release, version 2
carries a waiver. Tests run in file order and build on each other (pytest keeps it).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.common.audit import AuditLog
from tests.e2e.conftest import CLI, Pipeline, _env

pytestmark = pytest.mark.e2e
MODEL = "breast-cancer-classifier"
V1, V2 = f"models:/{MODEL}/1", f"models:/{MODEL}/2"
CHAMPION = f"models:/{MODEL}@champion"
WAIVER = {"evaluate.quality": "pilot model; accuracy reviewed by the data owner"}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _key(keys: Path, name: str, *gen: str) -> Path:
    """A private key made with openssl (0600) and its public half beside it."""
    pem = keys / f"{name}.pem"
    _openssl(*gen, "-out", str(pem))
    pem.chmod(0o600)
    _openssl("pkey", "-in", str(pem), "-pubout", "-out", str(keys / f"{name}.pub"))
    return pem


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("role-keys")
    p256 = ("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    out = {n: _key(d, n, *p256) for n in ("a", "p", "stranger")}
    out["b"] = _key(d, "b", "ecparam", "-name", "prime256v1", "-genkey", "-noout")  # SEC1
    out["p384"] = _key(
        d, "p384", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"
    )
    out["broken"] = d / "broken.pem"
    out["broken"].write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    out["broken"].chmod(0o600)
    return out


@pytest.fixture(scope="module")
def gov(keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A kept-up stack, governed, with version 1 (clean) and 2 (waived) awaiting approval."""
    state = tmp_path_factory.mktemp("gov") / "state"
    pipe = Pipeline(state_dir=state, env=_env(state))
    assert pipe.run("keys", "init").returncode == 0
    trainer_pub = state / "keys" / "signing.pub"
    pipe.env.update(
        {
            "SECURE_PIPELINE_GOVERNANCE__REQUIRED_APPROVALS": "2",
            "SECURE_PIPELINE_GOVERNANCE__APPROVERS": json.dumps(
                [
                    str(keys["a"].with_suffix(".pub")),
                    str(keys["b"].with_suffix(".pub")),
                    str(trainer_pub),
                ]
            ),
            "SECURE_PIPELINE_GOVERNANCE__PROMOTERS": json.dumps(
                [str(keys["p"].with_suffix(".pub"))]
            ),
        }
    )
    assert pipe.run("local", "up", timeout=240).returncode == 0  # Prefect server: the pause
    try:
        code, report, err = pipe.train(state.parent)
        assert code == 0 and report["status"] == "awaiting_approval", err
        _paused_waived_run(pipe, state.parent / "report-1.json")
        yield pipe
    finally:
        pipe.run("local", "down", timeout=120)


def _paused_waived_run(pipe: Pipeline, report: Path) -> None:
    """Version 2, waived, with ``pause_for_approval``: the flow run pauses; it is
    resumed through Prefect's API with no approval on file and stays awaiting."""
    import httpx

    api = f"http://127.0.0.1:{pipe.env['SECURE_PIPELINE_LOCAL__PREFECT_PORT']}/api"
    env = {
        **pipe.env,
        "SECURE_PIPELINE_WAIVERS": json.dumps(WAIVER),
        "SECURE_PIPELINE_EVALUATE__MIN_ACCURACY": "0.5",
        "SECURE_PIPELINE_GOVERNANCE__PAUSE_FOR_APPROVAL": "true",
    }
    proc = subprocess.Popen(
        [CLI, "run", "--quiet", "--report", str(report)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, paused = time.monotonic() + 400, []
        query = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
        while not paused and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(3)
            paused = httpx.post(f"{api}/flow_runs/filter", json=query, timeout=30).json()
        assert paused, "the run never paused"
        run_id = paused[0]["id"]
        form = {"release": "approved, trust me", "waivers": "none", "note": "clicked"}
        resumed = httpx.post(
            f"{api}/flow_runs/{run_id}/resume", json={"run_input": form}, timeout=30
        )
        assert resumed.status_code < 300, resumed.text
        err = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(report.read_text())
    assert data["status"] == "awaiting_approval" and data["model"]["version"] == "2"
    assert data["approval"]["note"].startswith("resumed without the signed approvals it needs")
    final = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
    assert final["type"] == "COMPLETED" and final["name"] == "AwaitingApproval"
    assert "awaiting approval" in final["message"] and "evaluate.quality" in final["message"]


def _record(pipe: Pipeline) -> list[str]:
    """Every version of the champion record in the bucket."""
    return pipe.bucket_keys(f"models/{MODEL}/champion.dsse.json")


def _audit(pipe: Pipeline) -> list[dict[str, Any]]:
    path = pipe.state_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _refused(pipe: Pipeline, *args: str, code: int = 1, says: str) -> str:
    """Run a command that must be refused; the champion and the chain stay as they were
    (the chain only grows by the refusal's own entry, and still verifies)."""
    before, champion, chain = _record(pipe), pipe.champion(), _audit(pipe)
    out = pipe.run(*args)
    assert out.returncode == code, out.stderr
    assert says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert _record(pipe) == before and pipe.champion() == champion
    after = _audit(pipe)
    assert after[: len(chain)] == chain and len(after) - len(chain) <= 1
    assert not any(
        e["event"].startswith("champion.promot") and "refused" not in e["event"]
        for e in after[len(chain) :]
    )
    assert AuditLog(pipe.state_dir / "audit" / "audit.jsonl").verify().intact
    return out.stderr


def test_a_governed_run_awaits_approval(gov: Pipeline) -> None:
    report = json.loads(sorted(gov.state_dir.parent.glob("report-*.json"))[0].read_text())
    assert report["approval"]["required_approvals"] == 2
    assert report["approval"]["approve"].startswith(f"secure-pipeline approve {V1}")
    assert gov.champion() is None and _record(gov) == []
    waived = json.loads(sorted(gov.state_dir.parent.glob("report-*.json"))[1].read_text())
    assert waived["approval"]["waivers"] == ["evaluate.quality"]
    out = gov.run("verify", CHAMPION)
    assert out.returncode == 1 and "FAIL champion.record: no signed champion record" in out.stderr


def test_bad_keys_are_usage_errors_naming_the_cause(gov: Pipeline, keys: dict[str, Path]) -> None:
    _refused(gov, "approve", V1, "--key", str(keys["p384"]), code=2, says="curve secp384r1")
    _refused(
        gov,
        "approve",
        V1,
        "--key",
        str(keys["broken"]),
        code=2,
        says=f"{keys['broken']} is not a PEM private key",
    )
    _refused(
        gov,
        "approve",
        V1,
        "--key",
        str(keys["a"].with_suffix(".pub")),
        code=2,
        says="holds a public key",
    )
    _refused(
        gov,
        "approve",
        f"models:/{MODEL}/9",
        "--key",
        str(keys["a"]),
        code=2,
        says="no release to act on",
    )


def test_self_approval_and_an_unlisted_key_are_refused(
    gov: Pipeline, keys: dict[str, Path]
) -> None:
    trainer = gov.state_dir / "keys" / "signing.p256.pem"
    _refused(gov, "approve", V1, "--key", str(trainer), says="self-approval")
    _refused(
        gov,
        "approve",
        V1,
        "--key",
        str(keys["stranger"]),
        says="not listed in governance.approvers",
    )
    assert gov.bucket_keys(f"models/{MODEL}/approvals/") == []
    events = [e["event"] for e in _audit(gov)[-2:]]
    assert events == ["approval.refused", "approval.refused"]


def test_one_key_counts_once(gov: Pipeline, keys: dict[str, Path]) -> None:
    out = gov.run("approve", V1, "--key", str(keys["a"]), "--reason", "gates read")
    assert out.returncode == 0 and "1 of 2 approval(s) on file" in out.stderr, out.stderr
    assert "waivers: none" in out.stderr
    _refused(gov, "approve", V1, "--key", str(keys["a"]), says="already approved")
    # A's approval copied by hand under B's name still counts once.
    approval = out.stdout.strip()
    b_id = _key_id(keys["b"])
    _copy(gov, approval, approval.rsplit("/", 1)[0] + f"/{b_id}.dsse.json")
    _refused(gov, "promote", V1, "--key", str(keys["p"]), says="has 1 of 2 approval(s)")


def test_approvals_of_another_release_or_edited_are_refused(
    gov: Pipeline, keys: dict[str, Path]
) -> None:
    a_id = _key_id(keys["a"])
    [a_v1] = [k for k in _approvals(gov, "1") if k.endswith(f"{a_id}.dsse.json")]
    v2_dir = _approvals_dir(gov, "2")
    _copy(gov, a_v1, f"{v2_dir}/{a_id}.dsse.json")  # A's approval of v1, filed under v2
    edited = json.loads(_read(gov, a_v1))
    payload = json.loads(base64.b64decode(edited["payload"]))
    payload["reason"] = "edited by hand"
    edited["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    _put(gov, f"{v2_dir}/{_key_id(keys['stranger'])}.dsse.json", json.dumps(edited).encode())
    err = _refused(gov, "promote", V2, "--key", str(keys["p"]), says="has 0 of 2 approval(s)")
    assert "the approval is for another release" in err
    assert "the statement was altered" in err  # the edited copy


def test_a_waived_release_needs_an_approval_whatever_the_rule(gov: Pipeline) -> None:
    trainer = gov.state_dir / "keys" / "signing.p256.pem"
    saved = dict(gov.env)
    gov.env["SECURE_PIPELINE_GOVERNANCE__REQUIRED_APPROVALS"] = "0"
    try:
        _refused(gov, "promote", V2, "--key", str(trainer), says="a waiver is never self-granted")
    finally:
        gov.env = saved


def test_two_approvals_promote_and_verify_names_the_approvers(
    gov: Pipeline, keys: dict[str, Path]
) -> None:
    out = gov.run("approve", V2, "--key", str(keys["b"]), "--reason", "second pair of eyes")
    assert out.returncode == 0 and "WAIVED evaluate.quality" in out.stderr, out.stderr
    # A's slot under v2 holds the copied v1 approval: A's own replaces it.
    out = gov.run("approve", V2, "--key", str(keys["a"]), "--reason", "waiver reviewed")
    assert out.returncode == 0 and "2 of 2 approval(s) on file" in out.stderr, out.stderr
    _refused(gov, "promote", V2, "--key", str(keys["a"]), says="not listed in governance.promoters")
    out = gov.run("promote", V2, "--key", str(keys["p"]))
    assert out.returncode == 0, out.stderr
    assert "champion of breast-cancer-classifier is now version 2" in out.stderr
    assert gov.champion() == "2" and len(_record(gov)) == 1
    verify = gov.run("verify", CHAMPION)
    assert verify.returncode == 0, verify.stderr
    assert "ok   champion.approvals: 2 valid approval(s) of 2 needed" in verify.stderr
    assert "APPROVED by key" in verify.stderr and "second pair of eyes" in verify.stderr
    assert "WAIVED evaluate.quality" in verify.stderr
    assert _audit(gov)[-1]["event"] == "champion.promoted"
    fetched = gov.run("fetch", CHAMPION, "--out", str(gov.state_dir.parent / "fetched"))
    assert fetched.returncode == 0, fetched.stderr


def test_rollback_needs_an_approved_release(gov: Pipeline, keys: dict[str, Path]) -> None:
    # v1 has A's approval and, under B's name, a copy of A's: one valid approval.
    _refused(
        gov, "rollback", MODEL, "--to", "1", "--key", str(keys["p"]), says="has 1 of 2 approval(s)"
    )
    assert gov.run("approve", V1, "--key", str(keys["b"])).returncode == 0
    out = gov.run("rollback", MODEL, "--to", "1", "--key", str(keys["p"]))
    assert out.returncode == 0, out.stderr
    assert gov.champion() == "1" and len(_record(gov)) == 2
    assert _audit(gov)[-1]["event"] == "champion.rolled_back"
    assert gov.run("verify", CHAMPION).returncode == 0


def test_governance_acts_are_anchored_in_the_bucket(gov: Pipeline) -> None:
    """Approvals, refusals, promotions and rollbacks anchor the audit head (auditor
    identity) as a run does: `audit verify` finds every entry anchored."""
    last = _audit(gov)[-1]
    assert last["event"] == "champion.rolled_back"
    out = gov.run("audit", "verify")
    assert out.returncode == 0, out.stderr
    assert f"(newest: entry {last['seq']})" in out.stderr, out.stderr
    assert "not anchored" not in out.stderr
    anchors = [k.split("@")[0] for k in gov.bucket_keys("audit-anchors/")]
    assert f"audit-anchors/{last['seq']:010d}-{last['hash']}.json" in anchors


def test_promotion_while_another_holds_the_lock_is_refused(
    gov: Pipeline, keys: dict[str, Path]
) -> None:
    import fcntl

    lock = gov.state_dir / "locks" / f"champion-{MODEL}.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        _refused(gov, "promote", V2, "--key", str(keys["p"]), says="another promotion")


def test_a_stale_record_write_loses(gov: Pipeline, keys: dict[str, Path]) -> None:
    """Across machines the record's write is conditional: a promotion that read an
    older record cannot overwrite the newer one."""
    from tasks.governance import champion_record, roles

    settings, before = _settings(gov), _record(gov)
    client = _client(gov, "promoter")
    current = champion_record.read(client, settings, MODEL)
    assert current.version == "1"
    stale = champion_record.Current(etag='"0123456789abcdef0123456789abcdef"')
    with pytest.raises(champion_record.ChampionMoved):
        champion_record.write(
            client,
            settings,
            dict(current.payload or {}),
            roles.load_private_key(keys["p"]),
            replaces=stale,
        )
    assert _record(gov) == before


def test_an_alias_moved_by_hand_fails_verify(gov: Pipeline) -> None:
    from tasks.common.tracking import mlflow_client

    client = mlflow_client(gov.settings())
    client.set_registered_model_alias(MODEL, "champion", "2")
    try:
        out = gov.run("verify", CHAMPION)
        assert out.returncode == 1, out.stderr
        assert "FAIL champion.alias: MLflow's alias champion names version 2" in out.stderr
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")
    assert gov.run("verify", CHAMPION).returncode == 0


def test_pinned_trainer_keys_ignore_the_state_keyring(
    gov: Pipeline, keys: dict[str, Path], tmp_path: Path
) -> None:
    """With ``[trust] signers`` the pins are the trainer (who may promote while
    ``required_approvals = 0``), not a key the trainer adds to the state keyring."""
    from tasks.trust.keys import retired_path

    kd = gov.state_dir / "keys"
    pin = tmp_path / "trainer.pub"  # the reviewed copy, taken before the keyring is edited
    pin.write_bytes((kd / "signing.pub").read_bytes())
    saved, saved_env = (kd / "keyring.json").read_bytes(), dict(gov.env)
    ring, kid = json.loads(saved), _key_id(keys["stranger"])
    ring["signing"]["retired"].append(kid)
    retired = retired_path(kd, "signing", kid)
    retired.parent.mkdir(exist_ok=True, mode=0o700)
    retired.write_bytes(keys["stranger"].with_suffix(".pub").read_bytes())
    (kd / "keyring.json").write_text(json.dumps(ring))
    gov.env["SECURE_PIPELINE_GOVERNANCE__REQUIRED_APPROVALS"] = "0"
    try:
        # Unpinned, the key added to the keyring counts as the trainer, so it promotes.
        out = gov.run("promote", V1, "--key", str(keys["stranger"]))
        assert out.returncode == 0 and "already the champion" in out.stderr, out.stderr
        gov.env["SECURE_PIPELINE_TRUST__SIGNERS"] = json.dumps([str(pin)])
        _refused(
            gov,
            "promote",
            V1,
            "--key",
            str(keys["stranger"]),
            says="not listed in governance.promoters",
        )
        out = gov.run("verify", CHAMPION)  # the record, signed by P, still verifies
        assert out.returncode == 0 and "a key pinned by [trust] signers" in out.stderr, out.stderr
    finally:
        gov.env = saved_env
        (kd / "keyring.json").write_bytes(saved)
        retired.unlink()


def test_approving_a_release_that_fails_verification_is_refused(
    gov: Pipeline, keys: dict[str, Path]
) -> None:
    """Version 2 exists, but its model object was given a new version after release
    (which the store cannot refuse the trainer's identity): approve exits 1, audited."""
    from tasks.trust.release import release_prefix

    settings = gov.settings()
    bucket = settings.storage.bucket
    base = release_prefix(settings.storage.prefix, MODEL, "2")
    trainer, champion = _client(gov, "pipeline"), gov.champion()
    key = f"{base}/model.skops.enc"
    body = trainer.get_object(Bucket=bucket, Key=key)["Body"].read()
    trainer.put_object(Bucket=bucket, Key=key, Body=body + b"x", ServerSideEncryption="AES256")
    err = _refused(gov, "approve", V2, "--key", str(keys["stranger"]), says="does not verify")
    assert "artifact.current_version: the artifact was overwritten after release" in err, err
    last = _audit(gov)[-1]
    assert last["event"] == "approval.refused" and "does not verify" in last["reason"]
    assert gov.champion() == champion  # (version 1 when the module runs in order)


def _settings(pipe: Pipeline) -> Any:
    """The settings the CLI sees, the governance section (from the env) included."""
    from tasks.common.settings import GovernanceConfig

    env = pipe.env
    gov = GovernanceConfig(
        required_approvals=int(env["SECURE_PIPELINE_GOVERNANCE__REQUIRED_APPROVALS"]),
        approvers=json.loads(env["SECURE_PIPELINE_GOVERNANCE__APPROVERS"]),
        promoters=json.loads(env["SECURE_PIPELINE_GOVERNANCE__PROMOTERS"]),
    )
    return pipe.settings().model_copy(update={"governance": gov})


def _key_id(pem: Path) -> str:
    from tasks.governance import roles

    return roles.load_private_key(pem).key_id


def _approvals_dir(pipe: Pipeline, version: str) -> str:
    from tasks.governance import approvals

    raw = _read(pipe, f"models/{MODEL}/{version}/release.dsse.json")
    return approvals.approvals_prefix(pipe.settings(), MODEL, _sha256(raw)).rstrip("/")


def _approvals(pipe: Pipeline, version: str) -> list[str]:
    return [k.split("@")[0] for k in pipe.bucket_keys(_approvals_dir(pipe, version) + "/")]


def _sha256(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


def _client(pipe: Pipeline, role: str) -> Any:
    from tasks.common.s3 import s3_client
    from tasks.localstack.identities import endpoint_at
    from tasks.localstack.processes import read_services
    from tasks.localstack.stack import role_endpoint

    settings = pipe.settings()
    url = read_services(settings)["s3"]["url"]
    return s3_client(role_endpoint(settings, endpoint_at(settings, url), role))


def _read(pipe: Pipeline, key: str) -> bytes:
    key = key.removeprefix(f"s3://{pipe.settings().storage.bucket}/")
    body = _client(pipe, "reader").get_object(Bucket=pipe.settings().storage.bucket, Key=key)
    return bytes(body["Body"].read())


def _put(pipe: Pipeline, key: str, body: bytes) -> None:
    """Write as the approver identity (what an approver could do by hand)."""
    key = key.removeprefix(f"s3://{pipe.settings().storage.bucket}/")
    _client(pipe, "approver").put_object(
        Bucket=pipe.settings().storage.bucket, Key=key, Body=body, ServerSideEncryption="AES256"
    )


def _copy(pipe: Pipeline, src: str, dst: str) -> None:
    _put(pipe, dst, _read(pipe, src))
