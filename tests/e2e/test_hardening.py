"""Attacks on the pipeline itself, through the `secure-pipeline` command: an insider
with the pipeline's own credentials, faults an operator meets, and bad input.

Each test reproduces one finding and requires the fixed behaviour. The insider and
fault tests that change state get their own stack (`hard`), so the shared one stays
clean for the other end-to-end tests.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from tests.conftest import BUNDLED_CSV
from tests.e2e.conftest import CLI, Pipeline, _env, free_port

pytestmark = pytest.mark.e2e
MODEL = "breast-cancer-classifier"


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack of its own, kept up, with two deployed versions."""
    state = tmp_path_factory.mktemp("hard") / "state"
    pipe = Pipeline(state_dir=state, env=_env(state))
    assert pipe.run("local", "up", timeout=180).returncode == 0
    try:
        for _ in range(2):
            code, report, err = pipe.train(state.parent)
            assert code == 0 and report["status"] == "deployed", err
        yield pipe
    finally:
        pipe.run("local", "down", timeout=120)


def clients(pipe: Pipeline) -> tuple[object, object, str]:
    """(pipeline client, auditor client, bucket) of the kept-up store."""
    from tasks.common.s3 import s3_client
    from tasks.localstack.stack import anchor_endpoint, s3_service

    settings = pipe.settings()
    with s3_service(settings) as endpoint:  # kept up: nothing is stopped on exit
        return (
            s3_client(endpoint),
            s3_client(anchor_endpoint(settings, endpoint)),
            settings.storage.bucket,
        )


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# --- 1. the audit trail cannot be erased --------------------------------------------------
def test_an_erased_or_emptied_log_fails_audit_verify(hard: Pipeline) -> None:
    log = hard.state_dir / "audit" / "audit.jsonl"
    original = log.read_bytes()
    try:
        log.write_bytes(b"")
        out = hard.run("audit", "verify")
        assert out.returncode == 1 and "missing or empty" in out.stderr, out.stderr
        log.unlink()
        out = hard.run("audit", "verify")
        assert out.returncode == 1 and "missing or empty" in out.stderr, out.stderr
        lines = original.decode().splitlines(keepends=True)
        log.write_text("".join(lines[:5]))  # a valid chain, shorter than the newest anchor
        out = hard.run("audit", "verify")
        assert out.returncode == 1 and "truncated" in out.stderr, out.stderr
    finally:
        log.write_bytes(original)
    assert hard.run("audit", "verify").returncode == 0


def test_anchors_cannot_be_hidden_or_rewritten_with_the_pipelines_credentials(
    hard: Pipeline,
) -> None:
    pipeline, auditor, bucket = clients(hard)
    keys = [
        o["Key"]
        for o in pipeline.list_objects_v2(Bucket=bucket, Prefix="audit-anchors/")["Contents"]
    ]
    assert keys
    for client in (pipeline, auditor):  # neither identity may put a delete marker
        with pytest.raises(ClientError, match="AccessDenied"):
            client.delete_object(Bucket=bucket, Key=keys[0])
    with pytest.raises(ClientError, match="AccessDenied"):  # nor may the pipeline rewrite one
        pipeline.put_object(Bucket=bucket, Key=keys[0], Body=b"{}", ServerSideEncryption="AES256")
    versions = pipeline.list_object_versions(Bucket=bucket, Prefix="audit-anchors/")
    assert not versions.get("DeleteMarkers") and len(versions["Versions"]) == len(keys)
    assert hard.run("audit", "verify").returncode == 0


# --- 2. a deleted key is never silently regenerated; rotation is explicit ------------------
def test_missing_keys_refuse_the_run_and_rotation_keeps_old_releases_verifiable(
    cold: Pipeline, tmp_path: Path
) -> None:
    code, first, err = cold.train(tmp_path)
    assert code == 0, err
    keys = cold.state_dir / "keys"
    ring = json.loads((keys / "keyring.json").read_text())
    audit = (cold.state_dir / "audit" / "audit.jsonl").read_text()
    assert '"keys.created"' in audit and ring["signing"]["active"] in audit

    for name in ("master.aes256", "signing.p256.pem"):
        saved = (keys / name).read_bytes()
        (keys / name).unlink()
        code, _, err = cold.train(tmp_path)
        assert code == 2 and "missing" in one_line(err) and "restore" in err, err
        (keys / name).write_bytes(saved)
        (keys / name).chmod(0o600)
    moved = tmp_path / "keys-backup"
    shutil.move(keys, moved)  # the whole directory, keyring included: the runs remain
    code, _, err = cold.train(tmp_path)
    assert code != 0 and "earlier runs" in err and not keys.exists(), err
    shutil.move(moved, keys)

    for kind in ("signing", "master"):
        out = cold.run("keys", "rotate", kind)
        assert out.returncode == 0, out.stderr
    ring2 = json.loads((keys / "keyring.json").read_text())
    assert ring2["signing"]["retired"] == [ring["signing"]["active"]]
    assert ring2["master"]["retired"] == [ring["master"]["active"]]
    assert '"keys.rotated"' in (cold.state_dir / "audit" / "audit.jsonl").read_text()
    old = cold.run("verify", first["deployment"]["uri"])  # signed and wrapped by retired keys
    assert old.returncode == 0, old.stderr
    code, second, err = cold.train(tmp_path)
    assert code == 0, err
    assert cold.run("verify", second["deployment"]["uri"]).returncode == 0
    assert cold.run("audit", "verify").returncode == 0


# --- 3. verify models:/NAME@champion trusts nothing the registry says ----------------------
def test_verify_champion_refuses_a_retargeted_tag_and_an_edited_mlflow_copy(
    hard: Pipeline,
) -> None:
    from tasks.common.tracking import mlflow_client

    settings = hard.settings()
    client = mlflow_client(settings)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    older = client.get_model_version(MODEL, str(int(champion.version) - 1))
    own = champion.tags["deployment_uri"]
    ref = f"models:/{MODEL}@champion"
    assert hard.run("verify", ref).returncode == 0
    client.set_model_version_tag(
        MODEL, champion.version, "deployment_uri", older.tags["deployment_uri"]
    )
    try:
        # @champion follows the signed record in the bucket, never the tag ...
        assert hard.run("verify", ref).returncode == 0
        # ... and a version reached through the tag must be that version's own release.
        out = hard.run("verify", f"models:/{MODEL}/{champion.version}")
        assert out.returncode == 1 and "FAIL release.binding" in out.stderr, out.stderr
    finally:
        client.set_model_version_tag(MODEL, champion.version, "deployment_uri", own)

    model_id = champion.model_id or champion.source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    skops = Path(location.removeprefix("file://")) / "model.skops"
    original = skops.read_bytes()
    skops.write_bytes(original + b"\0")
    try:
        out = hard.run("verify", ref)
        assert out.returncode == 1 and "FAIL mlflow.artifact" in out.stderr, out.stderr
        assert "model.skops" in out.stderr
    finally:
        skops.write_bytes(original)
    assert hard.run("verify", ref).returncode == 0


# --- 4. a config cannot switch gates off silently -------------------------------------------
@pytest.mark.parametrize(
    ("setting", "value", "gate"),
    [
        ("EVALUATE__MIN_ACCURACY", "0", "evaluate.quality"),
        ("EVALUATE__MIN_ROBUST_ACCURACY", "0", "evaluate.adversarial"),
        ("SCREEN__MAX_LABEL_SHIFT", "1.0", "screen.label_distribution"),
        ("SCREEN__MAX_DUPLICATE_RATE", "1.0", "screen.duplicates"),
        ("EVALUATE__MAX_MEMBERSHIP_ADVANTAGE", "1.0", "evaluate.membership_inference"),
    ],
)
def test_a_weakened_gate_without_a_waiver_is_a_usage_error(
    cold: Pipeline, setting: str, value: str, gate: str
) -> None:
    env = {**cold.env, f"SECURE_PIPELINE_{setting}": value}
    out = subprocess.run([CLI, "run"], env=env, capture_output=True, text=True, timeout=120)
    line = one_line(out.stderr)
    assert out.returncode == 2 and setting.lower().replace("__", ".") in line and gate in line


def test_a_waiver_is_shown_everywhere(hard: Pipeline, tmp_path: Path) -> None:
    reason = "pilot model; accuracy reviewed by the data owner"
    waived = {
        **hard.env,
        "SECURE_PIPELINE_EVALUATE__MIN_ACCURACY": "0.5",
        "SECURE_PIPELINE_WAIVERS": json.dumps({"evaluate.quality": reason}),
    }
    path = tmp_path / "r.json"
    out = subprocess.run(
        [CLI, "run", "--quiet", "--report", str(path)],
        env=waived,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "[WAIVED: evaluate.quality]" in one_line(out.stderr)
    report = json.loads(path.read_text())
    # A waiver is never self-granted: even with required_approvals = 0 the release waits
    # for an approval by a key other than the trainer's; the champion stays.
    assert report["status"] == "awaiting_approval", out.stderr
    assert report["approval"]["required_approvals"] == 1
    assert report["approval"]["waivers"] == ["evaluate.quality"]
    assert report["waivers"] == [
        {
            "setting": "evaluate.min_accuracy",
            "value": 0.5,
            "safe": ">= 0.75",
            "gate": "evaluate.quality",
            "reason": reason,
        }
    ]
    assert reason in (hard.state_dir / "audit" / "audit.jsonl").read_text()
    out = hard.run("verify", report["deployment"]["uri"])  # from the signed provenance
    assert out.returncode == 0 and "WAIVED evaluate.quality" in out.stderr, out.stderr
    assert reason in out.stderr
    # A consumer that refuses waived releases: the switch, or the config's default.
    uri = report["deployment"]["uri"]
    out = hard.run("verify", uri, "--no-waivers")
    assert out.returncode == 1 and "FAIL release.waivers" in out.stderr, out.stderr
    assert "evaluate.quality (evaluate.min_accuracy = 0.5)" in out.stderr
    refusing = {**hard.env, "SECURE_PIPELINE_TRUST__REFUSE_WAIVERS": "true"}
    fetched = tmp_path / "fetched"
    out = subprocess.run(
        [CLI, "fetch", uri, "--out", str(fetched)],
        env=refusing,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "FAIL release.waivers" in out.stderr, out.stderr
    assert not fetched.exists()


# --- 5. bounded input, and signals end commands cleanly -------------------------------------
def test_a_huge_cell_is_refused_at_ingestion_in_bounded_time(
    hard: Pipeline, tmp_path: Path
) -> None:
    frame = pd.read_csv(BUNDLED_CSV)
    path = tmp_path / "huge.csv"
    frame.to_csv(path, index=False)
    with path.open("a") as fh:  # one 50 MB cell on the last line
        fh.write("x" * (50 << 20) + "," + ",".join(["1"] * (len(frame.columns) - 1)) + "\n")
    started = time.monotonic()
    code, report, err = hard.train(tmp_path, "--data", str(path))
    assert code == 1 and report["blocked_by"] == "ingest.size", err
    gate = next(g for g in report["gates"] if g["name"] == "ingest.size")
    assert gate["metrics"]["line_bytes"] > 50 << 20
    assert time.monotonic() - started < 120


@pytest.mark.alone  # "within seconds": no parallel test worker beside it
def test_sigterm_stops_a_run_within_seconds_and_records_it(cold: Pipeline, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [CLI, "run", "--quiet", "--report", str(report)],
        env=cold.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = cold.state_dir / "seaweedfs.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.2)  # the run is under way once its store is up
    time.sleep(3)
    weed = int(lock.read_text())
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 15, "the command did not stop within seconds"
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in one_line(err)
    assert json.loads(report.read_text())["status"] == "interrupted"
    time.sleep(0.5)
    assert not Path(f"/proc/{weed}").exists(), "the store the command started is still running"
    last = json.loads((cold.state_dir / "audit" / "audit.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "run.end" and last["status"] == "interrupted"


# --- 6 and 7. a busy machine, and concurrent runs on one state dir --------------------------
@pytest.mark.alone  # four busy loops on 2 cores, not six
def test_a_cold_first_run_beside_four_busy_loops_deploys(cold: Pipeline, tmp_path: Path) -> None:
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        code, report, err = cold.train(tmp_path)
    finally:
        for loop in loops:
            loop.kill()
    assert code == 0 and report["status"] == "deployed", err


def test_four_concurrent_runs_share_one_state_dir(cold: Pipeline, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [CLI, "run", "--quiet", "--report", str(tmp_path / f"r{i}.json")],
            env=cold.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    versions = {
        json.loads((tmp_path / f"r{i}.json").read_text())["model"]["version"] for i in range(4)
    }
    assert versions == {"1", "2", "3", "4"}
    assert cold.run("audit", "verify").returncode == 0


# --- 8 and 9. a dead store, an interrupted deploy, a deleted artifact -----------------------
def test_an_unreachable_store_is_a_failure_that_says_so(cold: Pipeline, tmp_path: Path) -> None:
    assert cold.run("keys", "init").returncode == 0  # set up: nothing else needs the store
    env = {
        **cold.env,
        "SECURE_PIPELINE_STORAGE__ENDPOINT_URL": f"https://127.0.0.1:{free_port()}",
    }
    report = tmp_path / "r.json"
    out = subprocess.run(
        [CLI, "run", "--quiet", "--report", str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = one_line(out.stderr)
    assert out.returncode == 3 and "did not answer" in line and "not measured" in line, line
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and "StoreUnreachable" in data["error"]
    assert "deploy.bucket_posture" not in {g["name"] for g in data["gates"]}  # not made up


def test_an_orphan_is_reported_as_an_incomplete_release_and_the_next_run_deploys(
    hard: Pipeline, tmp_path: Path
) -> None:
    pipeline, _, bucket = clients(hard)
    prefix = f"models/{MODEL}/999"
    pipeline.put_object(
        Bucket=bucket, Key=f"{prefix}/model.skops.enc", Body=b"half", ServerSideEncryption="AES256"
    )
    out = hard.run("verify", f"s3://{bucket}/{prefix}/")
    assert out.returncode == 1 and "incomplete release" in out.stderr, out.stderr
    assert "ClientError" not in out.stderr
    out = hard.run("audit", "verify")
    assert out.returncode == 0 and "incomplete releases" in out.stderr and prefix in out.stderr
    code, _, err = hard.train(tmp_path)
    assert code == 0, err


def test_a_deleted_artifact_is_named_by_verify(hard: Pipeline, tmp_path: Path) -> None:
    """The trainer cannot delete a release object; the admin can, only by dropping the
    policy (what the README's security model says): verify and audit verify name it."""
    code, report, err = hard.train(tmp_path)
    assert code == 0, err
    pipeline, _, bucket = clients(hard)
    key = report["deployment"]["uri"].removeprefix(f"s3://{bucket}/").rsplit("/", 1)[0]
    key += "/model.skops.enc"
    with pytest.raises(ClientError, match="AccessDenied"):
        pipeline.delete_object(Bucket=bucket, Key=key)
    admin = admin_client(hard)
    policy = admin.get_bucket_policy(Bucket=bucket)["Policy"]
    admin.delete_bucket_policy(Bucket=bucket)
    marker = admin.delete_object(Bucket=bucket, Key=key)
    admin.put_bucket_policy(Bucket=bucket, Policy=policy)
    try:
        out = hard.run("verify", report["deployment"]["uri"])
        assert out.returncode == 1 and "delete marker" in out.stderr, out.stderr
        assert "ClientError" not in out.stderr
        out = hard.run("audit", "verify")
        assert out.returncode == 1 and f"{key} was deleted" in out.stderr, out.stderr
    finally:
        admin.delete_bucket_policy(Bucket=bucket)
        admin.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])
        admin.put_bucket_policy(Bucket=bucket, Policy=policy)
    assert hard.run("verify", report["deployment"]["uri"]).returncode == 0


def admin_client(pipe: Pipeline) -> Any:
    """The admin identity of the kept-up store (an insider holding the admin's file)."""
    from tasks.common.s3 import s3_client
    from tasks.localstack.stack import s3_service

    with s3_service(pipe.settings(), role="admin") as endpoint:
        return s3_client(endpoint)


# --- 10 and 11. bad configuration input -----------------------------------------------------
def test_non_utf8_toml_and_malformed_env_json_are_usage_errors(
    cold: Pipeline, tmp_path: Path
) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[dataset]\nname = "caf\xe9"\n')
    out = cold.run("run", "--config", str(bad))
    assert out.returncode == 2 and "UTF-8" in one_line(out.stderr)
    env = {**cold.env, "SECURE_PIPELINE_DATASET__ALLOWED_SOURCES": "[not json"}
    out = subprocess.run([CLI, "run"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "JSON" in one_line(out.stderr)
