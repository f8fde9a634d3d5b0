"""The embedded object store against a real SeaweedFS: TLS, credentials, policy,
immutability, persistence, isolation, and the local up/status/down life cycle."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from contextlib import suppress
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, SSLError

from tasks.checks.bucket_posture import bucket_posture
from tasks.common.s3 import (
    ObjectExists,
    ObjectTooLarge,
    S3Endpoint,
    get_bytes,
    put_immutable,
    s3_client,
)
from tasks.common.settings import Settings, load_settings
from tasks.localstack import identities, processes, seaweedfs, stack
from tasks.localstack.bucket import ensure_deploy_bucket
from tasks.localstack.stack import StackError, local_down, local_status, local_up, s3_service
from tasks.localstack.tls import ensure_tls

pytestmark = pytest.mark.integration

ALL_GOOD = {
    "exists": True,
    "versioning": "Enabled",
    "object_lock": True,
    "default_sse": "AES256",
    "denies_unencrypted_put": True,
    "denies_insecure_transport": True,
}


def _key() -> str:
    return f"tests/{uuid.uuid4().hex}"


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _client(endpoint, **changes):
    fields = {**endpoint.__dict__, **changes}
    return s3_client(S3Endpoint(**fields))


# --- bucket posture and policy enforcement ------------------------------------------------


def test_posture_all_good_for_the_pipeline_identity(s3, bucket):
    posture = bucket_posture(s3, bucket=bucket)
    assert {k: posture[k] for k in ALL_GOOD} == ALL_GOOD
    assert posture["object_lock_retention"] == {"Mode": "GOVERNANCE", "Days": 30}


def test_posture_of_a_missing_bucket_is_all_bad(s3):
    posture = bucket_posture(s3, bucket="no-such-bucket-here")
    assert posture["exists"] is False and posture["object_lock"] is False
    assert posture["default_sse"] is None and posture["denies_unencrypted_put"] is False


def test_unencrypted_put_is_refused_by_the_policy(s3, admin_s3, bucket):
    for client in (s3, admin_s3):  # the deny applies to every identity
        with pytest.raises(ClientError) as exc:
            client.put_object(Bucket=bucket, Key=_key(), Body=b"plain")
        assert _code(exc) == "AccessDenied"


def test_sse_put_over_tls_succeeds(s3, bucket):
    key = _key()
    s3.put_object(Bucket=bucket, Key=key, Body=b"secret", ServerSideEncryption="AES256")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_plain_http_endpoint_never_gets_the_transport_deny(tmp_path):
    """Measured on SeaweedFS: that deny over plain http locked even the admin out for good."""
    settings = load_settings(state_dir=tmp_path / "state")
    (settings.state_dir / "seaweedfs").mkdir(parents=True)
    ports = seaweedfs.weed_ports(None)
    argv = [
        a
        for a in seaweedfs.weed_argv(settings, processes.BIN_DIR / "weed", ports)
        if not a.startswith(("-s3.cert.file", "-s3.key.file"))
    ]
    child = processes.spawn(
        argv,
        env={**os.environ, **identities.weed_secrets(settings)},
        log_path=tmp_path / "weed.log",
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{ports['s3']}"
    try:
        admin = s3_client(identities.endpoint_at(settings, url, identity="admin"))
        processes.wait_until_healthy(
            "weed over http", lambda: _answers(admin), child, tmp_path / "weed.log", 30
        )
        ensure_deploy_bucket(admin, bucket="plain", object_lock_days=1)
        posture = bucket_posture(admin, bucket="plain")
        assert posture["denies_unencrypted_put"] and posture["object_lock"]
        assert posture["denies_insecure_transport"] is False
        admin.put_object(Bucket="plain", Key="k", Body=b"v", ServerSideEncryption="AES256")
    finally:
        seaweedfs.stop(child, ports)


def _answers(client) -> bool:
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def test_ensure_deploy_bucket_is_idempotent(s3, s3_settings, s3_endpoint, bucket):
    seaweedfs.ensure_bucket(s3_settings, s3_endpoint)
    seaweedfs.ensure_bucket(s3_settings, s3_endpoint)
    posture = bucket_posture(s3, bucket=bucket)
    assert {k: posture[k] for k in ALL_GOOD} == ALL_GOOD


# --- immutable writes and reads -------------------------------------------------------------


def test_put_immutable_never_overwrites(s3, bucket):
    key = _key()
    version = put_immutable(
        s3, bucket=bucket, key=key, body=b"original", metadata={"model": "demo"}
    )
    with pytest.raises(ObjectExists):
        put_immutable(s3, bucket=bucket, key=key, body=b"replacement")
    assert get_bytes(s3, bucket=bucket, key=key) == b"original"
    assert get_bytes(s3, bucket=bucket, key=key, version_id=version) == b"original"
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert [v["VersionId"] for v in versions] == [version]
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == {"model": "demo"}


def test_wrong_checksum_is_refused(s3, bucket):
    key = _key()
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=b"these bytes",
            ServerSideEncryption="AES256",
            ChecksumSHA256=wrong,
        )
    assert _code(exc) == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_get_bytes_refuses_objects_over_the_limit(s3, bucket):
    key = _key()
    put_immutable(s3, bucket=bucket, key=key, body=b"0123456789")
    with pytest.raises(ObjectTooLarge):
        get_bytes(s3, bucket=bucket, key=key, max_bytes=9)
    assert get_bytes(s3, bucket=bucket, key=key, max_bytes=10) == b"0123456789"


# --- transport and authentication -----------------------------------------------------------


def test_plain_http_is_not_served(s3_endpoint, bucket):
    client = _client(s3_endpoint, url=s3_endpoint.url.replace("https://", "http://"))
    with pytest.raises(BotoCoreError):
        client.list_objects_v2(Bucket=bucket)


def test_wrong_ca_and_system_trust_are_refused(s3_endpoint, bucket, tmp_path):
    other_ca = ensure_tls(tmp_path).ca
    for client in (_client(s3_endpoint, ca_bundle=other_ca), _client(s3_endpoint, ca_bundle=None)):
        with pytest.raises(SSLError):
            client.list_objects_v2(Bucket=bucket)


def test_wrong_secret_key_is_refused(s3_endpoint, bucket):
    client = _client(s3_endpoint, secret_key="not-the-secret")
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket=bucket)
    assert _code(exc) == "SignatureDoesNotMatch"


def test_anonymous_requests_are_refused(s3_endpoint, bucket):
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.url,
        region_name=s3_endpoint.region,
        verify=str(s3_endpoint.ca_bundle),
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket=bucket)
    assert _code(exc) == "AccessDenied"


# --- least privilege ----------------------------------------------------------------------


def test_pipeline_identity_cannot_weaken_the_bucket(s3, bucket):
    attempts = {
        "put policy": lambda: s3.put_bucket_policy(
            Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": []})
        ),
        "delete policy": lambda: s3.delete_bucket_policy(Bucket=bucket),
        "delete encryption": lambda: s3.delete_bucket_encryption(Bucket=bucket),
        "shorten lock": lambda: s3.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
            },
        ),
        "delete bucket": lambda: s3.delete_bucket(Bucket=bucket),
        "create bucket": lambda: s3.create_bucket(Bucket=f"rogue-{uuid.uuid4().hex[:8]}"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ClientError) as exc:
            attempt()
        assert _code(exc) == "AccessDenied", name
    assert bucket_posture(s3, bucket=bucket)["denies_insecure_transport"] is True


def test_pipeline_identity_cannot_delete_a_locked_version(s3, bucket):
    key = _key()
    version = put_immutable(s3, bucket=bucket, key=key, body=b"release")
    assert s3.get_object_retention(Bucket=bucket, Key=key)["Retention"]["Mode"] == "GOVERNANCE"
    for bypass in (False, True):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(
                Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=bypass
            )
        assert _code(exc) == "AccessDenied"
    assert get_bytes(s3, bucket=bucket, key=key, version_id=version) == b"release"


def test_secrets_stay_out_of_logs_and_argv(s3_settings, s3, bucket):
    put_immutable(s3, bucket=bucket, key=_key(), body=b"x")
    s3_dir = s3_settings.state_dir / "s3"
    assert not (s3_dir / "credentials.json").exists()  # one file per role, one for the server
    values = [
        *(json.loads(p.read_text())["secret_key"] for p in (s3_dir / "roles").glob("*.json")),
        *json.loads((s3_dir / "service.json").read_text()).values(),
    ]
    assert len(values) == len(identities.IDENTITIES) + 5
    for path in (s3_settings.state_dir / "logs").iterdir():
        text = path.read_text(errors="replace")
        assert not any(v in text for v in values), path
    for path in s3_dir.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    assert not any(v.encode() in c for v in values for c in _cmdlines())


def _cmdlines() -> list[bytes]:
    """Every process's argv; processes of a parallel test worker may exit while we read."""
    out = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with suppress(OSError):
            out.append(path.read_bytes())
    return out


# --- persistence and isolation --------------------------------------------------------------


def test_restart_keeps_data_and_settings(tmp_path):
    settings = load_settings(state_dir=tmp_path / "state")
    with s3_service(settings) as endpoint:
        version = put_immutable(
            s3_client(endpoint),
            bucket=settings.storage.bucket,
            key="kept",
            body=b"survives restarts",
        )
        pid = seaweedfs.read_lock_pid(settings)
    assert processes.proc_identity(pid) is None, "the on-demand server outlived its block"
    with s3_service(settings) as endpoint:
        client = s3_client(endpoint)
        assert (
            get_bytes(client, bucket=settings.storage.bucket, key="kept", version_id=version)
            == b"survives restarts"
        )
        posture = bucket_posture(client, bucket=settings.storage.bucket)
        assert {k: posture[k] for k in ALL_GOOD} == ALL_GOOD


def test_two_stacks_run_side_by_side(s3, s3_endpoint, bucket, tmp_path):
    settings = load_settings(state_dir=tmp_path / "state")
    with s3_service(settings) as other:
        assert other.url != s3_endpoint.url and other.ca_bundle != s3_endpoint.ca_bundle
        other_s3 = s3_client(other)
        put_immutable(other_s3, bucket=bucket, key="only-in-other", body=b"b")
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key="only-in-other")
        with pytest.raises(SSLError):  # each stack trusts only its own CA
            _client(s3_endpoint, ca_bundle=other.ca_bundle).list_buckets()
        assert s3.list_buckets()["Buckets"] and other_s3.list_buckets()["Buckets"]
    s3.list_buckets()  # the session's stack is untouched


def test_a_second_server_on_the_same_state_dir_queues_then_gives_up(
    s3_settings, s3_endpoint, monkeypatch
):
    monkeypatch.setattr(seaweedfs, "QUEUE_TIMEOUT", 1.0)
    with pytest.raises(StackError, match="was busy for 1 s"):
        seaweedfs.start(s3_settings, s3_port=None)


def test_missing_weed_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(seaweedfs, "BIN_DIR", tmp_path)
    with (
        pytest.raises(StackError, match="SeaweedFS binary not found"),
        s3_service(load_settings(state_dir=tmp_path / "state")),
    ):
        pass


# --- local up / status / down ----------------------------------------------------------------


def _get_status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_local_up_status_down_round_trip(local_settings: Settings):
    status = local_up(local_settings, ui=False)
    s3_entry = status["s3"]
    assert s3_entry["running"] and s3_entry["url"].endswith(f":{local_settings.local.s3_port}")
    assert not status["prefect"]["running"] and not status["mlflow"]["running"]
    try:
        assert local_up(local_settings, ui=False)["s3"]["pid"] == s3_entry["pid"]  # idempotent
        with s3_service(local_settings) as endpoint:  # reuses the kept-up server
            assert endpoint.url == s3_entry["url"]
            put_immutable(
                s3_client(endpoint), bucket=local_settings.storage.bucket, key="k", body=b"v"
            )
        assert local_status(local_settings)["s3"] == s3_entry  # still up after the block
        # Internal surfaces need JWTs: no bypass of S3 policies through the filer.
        ports = json.loads((local_settings.state_dir / "stack.json").read_text())["services"]["s3"][
            "ports"
        ]
        base = f"http://127.0.0.1:{ports['filer']}/buckets/{local_settings.storage.bucket}"
        assert _get_status(f"{base}/k") == 401
        assert _get_status(f"{base}/") == 401
    finally:
        down = local_down(local_settings)
    assert down["s3"] == {"stopped": True, "pid": s3_entry["pid"]}
    assert processes.proc_identity(s3_entry["pid"]) is None
    assert not local_status(local_settings)["s3"]["running"]
    assert not (local_settings.state_dir / "stack.json").exists()
    assert processes.port_free(local_settings.local.s3_port)


def test_local_up_with_ui(local_settings: Settings):
    try:
        status = local_up(local_settings, ui=True)
        assert all(status[name]["running"] for name in ("s3", "prefect", "mlflow"))
        api = stack.prefect_api_url(local_settings)
        assert api == f"http://127.0.0.1:{local_settings.local.prefect_port}/api"
        assert _get_status(f"{api}/health") == 200
        assert _get_status(f"{status['mlflow']['url']}/health") == 200
    finally:
        local_down(local_settings)
    for name in ("s3", "prefect", "mlflow"):
        pid = status[name]["pid"]
        assert processes.proc_identity(pid) is None
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # no worker of the group survives
    assert stack.prefect_api_url(local_settings) is None


def test_local_up_refuses_a_busy_port(local_settings: Settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", local_settings.local.s3_port))
        sock.listen()
        with pytest.raises(
            StackError, match=f"port {local_settings.local.s3_port}.*SECURE_PIPELINE_LOCAL__S3_PORT"
        ):
            local_up(local_settings, ui=False)
    assert local_status(local_settings)["s3"]["running"] is False


def test_local_down_never_signals_a_process_that_is_not_ours(local_settings: Settings):
    fake = {"pid": os.getpid(), "cmdline": "weed mini", "start": "0", "url": "https://x"}
    local_settings.state_dir.mkdir(parents=True)
    (local_settings.state_dir / "stack.json").write_text(json.dumps({"services": {"s3": fake}}))
    assert local_down(local_settings) == {"s3": {"stopped": False, "pid": os.getpid()}}
