"""A consumer decrypts a release with the public `aws-encryption-cli`, without this project.

Every aws-encryption-sdk-cli release requires aws-encryption-sdk<4 and the project pins
4.x, so the CLI gets a venv of its own: the hash-pinned tools/esdk-cli/requirements.lock,
then the tools/esdk-cli plugin (`provider=secure-pipeline`: the local raw AES master keys).
The venv is built once per lock, plugin and Python, under the git-ignored
``.secure-pipeline/tools/`` (measured: 9 s to build, then 0.2-0.5 s per CLI call).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.trust import envelope, keys
from tasks.trust.release import encryption_context
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

TOOL = PROJECT_ROOT / "tools" / "esdk-cli"
SOURCES = ("requirements.lock", "pyproject.toml", "secure_pipeline_esdk/__init__.py")
MULTI_FRAME = 3 * envelope.FRAME_LENGTH + 1000
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _run(*cmd: str | Path) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR:")] or lines or ["no output"]
        step = " ".join(Path(str(c)).name for c in cmd[:6])
        raise RuntimeError(f"{step} ... exited {done.returncode}: {errors[-1]}")


def _build(venv: Path, work: Path) -> None:
    _run(sys.executable, "-m", "venv", venv)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--quiet")
    _run(*pip, "--require-hashes", "--no-deps", "-r", TOOL / "requirements.lock")
    # A copy, so the build leaves nothing in the work tree; setuptools comes from the lock.
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    plugin = shutil.copytree(TOOL, work / "esdk-cli", ignore=ignore)
    _run(*pip, "--no-deps", "--no-build-isolation", "--no-index", plugin)
    _run(venv / "bin" / "aws-encryption-cli", "--version")


@pytest.fixture(scope="session")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    digest = hashlib.sha256(sys.version.encode())
    for name in SOURCES:
        digest.update((TOOL / name).read_bytes())
    tools = PROJECT_ROOT / ".secure-pipeline" / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    venv = tools / f"esdk-cli-venv-{digest.hexdigest()[:16]}"
    with (tools / "esdk-cli-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions: one builds, all use it
        if not (venv / ".complete").exists():
            for old in tools.glob("esdk-cli-venv-*"):
                shutil.rmtree(old)
            try:
                _build(venv, tmp_path_factory.mktemp("esdk-cli"))
            except (OSError, RuntimeError) as exc:
                pytest.fail(f"cannot build the aws-encryption-cli venv: {exc}", pytrace=False)
            (venv / ".complete").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_"))}

    def run(
        *args: str | Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(venv / "bin" / "aws-encryption-cli"), *map(str, args)]
        return subprocess.run(
            cmd, capture_output=True, text=True, env={**env, **(extra_env or {})}, check=False
        )

    return run


def _decrypt(
    cli: Cli,
    work: Path,
    blob: bytes,
    wrapping: list[str],
    context: dict[str, str],
    mode: str = "--decrypt",
):
    """The README's command on `blob`: (result, plaintext or None, metadata record)."""
    src, out, meta = work / "model.skops.enc", work / "model.skops", work / "metadata.json"
    src.write_bytes(blob)
    for stale in (out, meta):
        stale.unlink(missing_ok=True)
    result = cli(
        mode,
        *("--input", src, "--output", out, "--metadata-output", meta, "--overwrite-metadata"),
        *("--wrapping-keys", *wrapping),
        *("--commitment-policy", "require-encrypt-require-decrypt"),
        *("--max-encrypted-data-keys", "1"),
        *("--encryption-context", *(f"{k}={v}" for k, v in context.items())),
    )
    record = json.loads(meta.read_text()) if meta.exists() and meta.read_text() else {}
    return result, (out.read_bytes() if out.exists() else None), record


@pytest.fixture
def keyring(tmp_path: Path) -> tuple[Path, str]:
    kd = tmp_path / "state" / "keys"
    return kd, keys.create(kd)["master"]["active"]


def _release(kd: Path, size: int) -> tuple[bytes, bytes, dict[str, str]]:
    plaintext = os.urandom(size)
    context = encryption_context(
        name="iris", version="7", sha256=hashlib.sha256(plaintext).hexdigest()
    )
    blob = envelope.encrypt(plaintext, key_provider=envelope.local_master_key(kd), context=context)
    return plaintext, blob, context


def _local(key_ids: list[str], kd: Path) -> list[str]:
    return ["provider=secure-pipeline", *(f"key={k}" for k in key_ids), f"keys-dir={kd}"]


@pytest.mark.parametrize(
    ("size", "mode"),
    [(1000, "--decrypt"), (MULTI_FRAME, "--decrypt"), (MULTI_FRAME, "--decrypt-unsigned")],
    ids=["one-frame", "multi-frame", "multi-frame-unsigned"],
)
def test_cli_decrypts_a_release(cli: Cli, keyring, tmp_path: Path, size: int, mode: str) -> None:
    kd, key_id = keyring
    plaintext, blob, context = _release(kd, size)
    result, out, record = _decrypt(cli, tmp_path, blob, _local([key_id], kd), context, mode)
    assert result.returncode == 0, result.stderr
    assert out == plaintext
    header = record["header"]
    assert header["algorithm"] == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
    assert header["frame_length"] == envelope.FRAME_LENGTH
    assert header["encryption_context"] == context


def test_cli_skips_another_context_but_exits_zero(cli: Cli, keyring, tmp_path: Path) -> None:
    """The CLI deletes the output and records "skipped", yet exits 0 (aws-encryption-sdk-cli
    4.3.0): a consumer must check that the output exists."""
    kd, key_id = keyring
    _, blob, context = _release(kd, 1000)
    wrong = {**context, "model_version": "8"}
    result, out, record = _decrypt(cli, tmp_path, blob, _local([key_id], kd), wrong)
    assert out is None
    assert record["skipped"] is True
    assert record["missing_encryption_context_pairs"] == [["model_version", "8"]]
    assert result.returncode == 0  # if this changes, update the README's advice


def test_cli_refuses_a_tampered_last_frame(cli: Cli, keyring, tmp_path: Path) -> None:
    """Earlier frames were already written out; the CLI removes them on failure."""
    kd, key_id = keyring
    _, blob, context = _release(kd, MULTI_FRAME)
    tampered = bytearray(blob)
    tampered[-100] ^= 1
    result, out, _ = _decrypt(cli, tmp_path, bytes(tampered), _local([key_id], kd), context)
    assert result.returncode != 0
    assert out is None
    assert "InvalidTag" in result.stderr


def test_cli_decrypts_with_a_retired_key(cli: Cli, keyring, tmp_path: Path) -> None:
    kd, old = keyring
    plaintext, blob, context = _release(kd, 1000)
    _, new = keys.rotate(kd, "master")
    result, out, _ = _decrypt(cli, tmp_path, blob, _local([new, old], kd), context)
    assert result.returncode == 0, result.stderr
    assert out == plaintext
    result, out, _ = _decrypt(cli, tmp_path, blob, _local([new], kd), context)
    assert result.returncode != 0
    assert out is None


def test_plugin_refuses_a_widely_readable_key(cli: Cli, keyring, tmp_path: Path) -> None:
    kd, key_id = keyring
    _, blob, context = _release(kd, 1000)
    (kd / keys.FILES["master"]).chmod(0o640)
    result, out, _ = _decrypt(cli, tmp_path, blob, _local([key_id], kd), context)
    assert result.returncode != 0
    assert out is None
    assert "has mode 640: chmod 600" in result.stderr


@pytest.mark.moto
def test_cli_decrypts_a_kms_release(cli: Cli, tmp_path: Path, monkeypatch) -> None:
    """The README's AWS command (provider=aws-kms, the key ARN, discovery off). moto stands
    in for KMS, an AWS-only service; the CLI reaches it through AWS_ENDPOINT_URL_KMS."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {
            "AWS_ENDPOINT_URL_KMS": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        kms = boto3.client("kms", region_name="us-east-1")
        arn = kms.create_key(Description="esdk-cli test")["KeyMetadata"]["Arn"]
        plaintext = os.urandom(MULTI_FRAME)
        context = encryption_context(name="iris", version="7", sha256="ab" * 32)
        provider = envelope.kms_master_key(arn, region="us-east-1")
        blob = envelope.encrypt(plaintext, key_provider=provider, context=context)
        src, out = tmp_path / "model.skops.enc", tmp_path / "model.skops"
        src.write_bytes(blob)
        result = cli(
            "--decrypt",
            *("--input", src, "--output", out, "--metadata-output", tmp_path / "meta.json"),
            *("--wrapping-keys", "provider=aws-kms", f"key={arn}", "discovery=false"),
            *("--commitment-policy", "require-encrypt-require-decrypt"),
            *("--max-encrypted-data-keys", "1"),
            *("--encryption-context", *(f"{k}={v}" for k, v in context.items())),
            extra_env=aws,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == plaintext
