"""The whole flow through the `secure-pipeline` command, as a user runs it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BUNDLED_CSV
from tests.e2e.conftest import CLI, Pipeline

pytestmark = pytest.mark.e2e
STAGES = {"ingest", "validate", "screen", "train", "evaluate", "sign", "deploy"}


def test_cold_run_deploys_then_verifies(cold: Pipeline, tmp_path: Path) -> None:
    code, report, err = cold.train(tmp_path)
    assert code == 0, err
    assert report["status"] == "deployed" and report["blocked_by"] is None
    assert {g["stage"] for g in report["gates"]} == STAGES
    assert all(g["passed"] for g in report["gates"])
    assert report["dataset"]["rows"] == 569 and report["dataset"]["integrity"] == "config-pin"
    assert report["deployment"]["sse"] == "AES256"
    assert report["deployment"]["encryption_context"]["model_sha256"] == report["model"]["sha256"]
    assert err.strip().startswith("deployed s3://"), err
    assert set(report["stages"]) == STAGES | {"pii"}  # seconds per stage, every stage timed
    assert all(seconds > 0 for seconds in report["stages"].values())
    # ... and what each stage's time is made of: every gate's check, the screens' too
    # (they run on a worker thread), the suite's run and the evaluate stage's steps.
    gates = {g["name"] for g in report["gates"]}
    assert gates <= set(report["checks"]), gates - set(report["checks"])
    assert {"evaluate.champion", "evaluate.mlflow"} <= set(report["checks"])
    assert report["checks"]["validate.expectations"] > 0

    verified = cold.run("verify", report["deployment"]["uri"])
    assert verified.returncode == 0, verified.stderr
    champion = cold.run("verify", "models:/breast-cancer-classifier@champion")
    assert champion.returncode == 0, champion.stderr
    # required_approvals = 0: the trainer's key signed the champion record, no approval.
    trainer = json.loads((cold.state_dir / "keys" / "keyring.json").read_text())
    assert f"signed by promoter key {trainer['signing']['active'][:16]} (deploy" in champion.stderr
    assert "ok   champion.approvals: 0 valid approval(s) of 0 needed" in champion.stderr
    audit = cold.run("audit", "verify")
    assert audit.returncode == 0 and "incomplete" not in audit.stderr, audit.stderr
    assert cold.champion() == report["model"]["version"]


def _variant(tmp: Path, name: str, frame: pd.DataFrame) -> str:
    path = tmp / name
    frame.to_csv(path, index=False)
    return str(path)


def _assert_blocked(pipe: Pipeline, tmp: Path, data: str, gate: str) -> dict:
    champion, objects = pipe.champion(), pipe.bucket_keys("models/")
    anchors = pipe.bucket_keys("audit-anchors/")
    code, report, err = pipe.train(tmp, "--data", data)
    assert code == 1, err
    failing = [g["name"] for g in report["gates"] if not g["passed"]]
    assert report["status"] == "blocked" and gate in failing, (report.get("blocked_by"), failing)
    assert report["blocked_by"] == failing[0]
    assert report["deployment"] is None
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"blocked by {report['blocked_by']}: measured ")
    assert pipe.champion() == champion, "the previous champion must stay"
    assert pipe.bucket_keys("models/") == objects, "a blocked run must not publish anything"
    assert len(pipe.bucket_keys("audit-anchors/")) == len(anchors) + 1, "audit head not anchored"
    return report


def test_label_flip_is_blocked_and_champion_kept(kept_up: Pipeline, tmp_path: Path) -> None:
    frame = pd.read_csv(BUNDLED_CSV)
    ones = frame.index[frame["target"] == 1]
    frame.loc[ones[: int(0.10 * len(frame))], "target"] = 0  # 10% of rows, one class
    report = _assert_blocked(
        kept_up, tmp_path, _variant(tmp_path, "flip.csv", frame), "screen.label_distribution"
    )
    gate = next(g for g in report["gates"] if g["name"] == "screen.label_distribution")
    assert gate["metrics"] and gate["threshold"]
    assert kept_up.run("verify", "models:/breast-cancer-classifier@champion").returncode == 0


@pytest.mark.parametrize(
    ("case", "gate"),
    [
        ("extra_column", "validate.expectations"),
        ("missing_column", "validate.expectations"),
        ("strings_in_numeric", "validate.expectations"),
        ("pickle_named_csv", "ingest.format"),
        ("empty", "ingest.format"),
        ("random_bytes", "ingest.format"),
        ("missing_file", "ingest.source"),
    ],
)
def test_bad_input_is_blocked(kept_up: Pipeline, tmp_path: Path, case: str, gate: str) -> None:
    frame = pd.read_csv(BUNDLED_CSV)
    marker = tmp_path / "payload-ran"
    if case == "extra_column":
        data = _variant(tmp_path, "x.csv", frame.assign(extra=1.0))
    elif case == "missing_column":
        data = _variant(tmp_path, "x.csv", frame.drop(columns=["mean radius"]))
    elif case == "strings_in_numeric":
        frame["mean area"] = frame["mean area"].astype(str)
        frame.loc[:20, "mean area"] = "lots"
        data = _variant(tmp_path, "x.csv", frame)
    elif case == "pickle_named_csv":
        data = str(tmp_path / "x.csv")
        Path(data).write_bytes(pickle.dumps(_Payload(marker)))
    elif case == "empty":
        data = str(tmp_path / "x.csv")
        Path(data).write_bytes(b"")
    elif case == "random_bytes":
        data = str(tmp_path / "x.csv")
        Path(data).write_bytes(bytes(range(256)) * 64)
    else:
        data = str(tmp_path / "does-not-exist.csv")
    _assert_blocked(kept_up, tmp_path, data, gate)
    assert not marker.exists(), "the pickle payload ran"


class _Payload:
    """Unpickling this creates a marker file: proof that input was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def edit_fourth_audit_line(log: Path) -> str:
    """Flip ``passed`` in the log's 4th entry (its hash no longer matches); return the
    original text, to put back."""
    original = log.read_text()
    lines = original.splitlines()
    entry = json.loads(lines[3])
    entry["passed"] = not entry.get("passed")
    lines[3] = json.dumps(entry, sort_keys=True)
    log.write_text("\n".join(lines) + "\n")
    return original


def test_tampered_deployment_fails_verify(cold: Pipeline, tmp_path: Path) -> None:
    """On a state of its own: a replaced release object stays in the bucket's version
    history for good (no identity may delete it), so `audit verify` on a shared stack
    would fail for every later test."""
    from tasks.common.s3 import s3_client
    from tasks.localstack.stack import s3_service

    code, report, err = cold.train(tmp_path)
    assert code == 0, err
    uri = report["deployment"]["uri"]
    assert cold.run("verify", uri).returncode == 0
    # An edited audit line: the monitoring flow alerts from monitor.audit (the champion
    # itself still verifies). This state is the test's own, so the line is put back and
    # the anchor written meanwhile may stay.
    log = cold.state_dir / "audit" / "audit.jsonl"
    original = edit_fourth_audit_line(log)
    out = cold.run("monitor", "--quiet")  # no batch: integrity and audit only
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("alert from monitor.audit") and "line 4" in out.stderr
    log.write_text(original)
    settings = cold.settings()
    key = uri.split("/", 3)[3].rsplit("/", 1)[0] + "/model.skops.enc"
    with s3_service(settings) as endpoint:  # an insider with write access
        client = s3_client(endpoint)
        body = bytearray(client.get_object(Bucket=settings.storage.bucket, Key=key)["Body"].read())
        body[len(body) // 2] ^= 0x01
        client.put_object(
            Bucket=settings.storage.bucket, Key=key, Body=bytes(body), ServerSideEncryption="AES256"
        )
    out = cold.run("verify", uri, "--report", str(tmp_path / "v.json"))
    assert out.returncode == 1, out.stderr
    checks = json.loads((tmp_path / "v.json").read_text())["checks"]
    assert any(c["name"] == "artifact.current_version" and not c["passed"] for c in checks)
    # The monitoring flow sees it too, from the champion's side.
    out = cold.run("monitor", "--report", str(tmp_path / "m.json"))
    assert out.returncode == 1, out.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["status"] == "alert" and report["blocked_by"] == "monitor.integrity", report
    assert "does not verify" in out.stderr.strip().splitlines()[-1], out.stderr


def test_edited_audit_line_fails_audit_verify(kept_up: Pipeline) -> None:
    assert kept_up.run("audit", "verify").returncode == 0
    log = kept_up.state_dir / "audit" / "audit.jsonl"
    original = edit_fourth_audit_line(log)
    try:
        out = kept_up.run("audit", "verify")
        assert out.returncode == 1 and "line 4" in out.stderr, out.stderr
    finally:
        log.write_text(original)


def test_bad_config_is_usage_error(kept_up: Pipeline, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset]\nname = 'x'\n")
    out = kept_up.run("run", "--config", str(bad))
    assert out.returncode == 2 and "configuration error" in out.stderr
    assert kept_up.run("run", "--no-such-flag").returncode == 2


def test_rewritten_audit_chain_fails_against_bucket_anchors(kept_up: Pipeline) -> None:
    """An insider who rewrites the log *and* recomputes every hash still gets
    caught: the heads anchored in the object-locked bucket no longer match."""
    from tasks.common.audit import GENESIS, _digest

    log = kept_up.state_dir / "audit" / "audit.jsonl"
    original = log.read_text()
    entries = [json.loads(line) for line in original.splitlines()]
    entries[3]["passed"] = not entries[3].get("passed")
    prev = GENESIS
    for entry in entries:
        entry.pop("hash")
        entry["prev"] = prev
        entry["hash"] = prev = _digest(entry)
    log.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    try:
        out = kept_up.run("audit", "verify")
        assert "chain intact" in out.stderr  # the local chain alone looks fine
        assert out.returncode == 1 and "rewritten" in out.stderr, out.stderr
    finally:
        log.write_text(original)
    assert kept_up.run("audit", "verify").returncode == 0


def test_serve_registers_the_scheduled_deployment(kept_up: Pipeline) -> None:
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        [CLI, "serve", "--cron", "15 3 * * *"],
        env=kept_up.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A busy machine: serve imports the flows, then registers its deployments one
        # after the other (monitoring a moment after nightly): wait for both.
        deadline, found, watch = time.monotonic() + 180, [], []
        while time.monotonic() < deadline and not (found and watch):
            time.sleep(2)
            deployments = kept_up.prefect_api("POST", "/deployments/filter", {})
            found = [d for d in deployments if d["name"] == "nightly"]
            watch = [d for d in deployments if d["name"] == "monitoring"]
        assert found, "the deployment was not registered"
        assert watch, "the monitoring deployment was not registered"
        schedules = [s["schedule"].get("cron") for s in found[0]["schedules"]]
        assert schedules == ["15 3 * * *"]
        assert found[0]["global_concurrency_limit"]["limit"] == 1  # one training at a time
        assert found[0]["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert [s["schedule"].get("cron") for s in watch[0]["schedules"]] == ["0 * * * *"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
