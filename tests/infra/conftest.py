"""The Terraform stack of infra/terraform applied to moto in server mode, once per module.

moto stands in for AWS because these are AWS-only code paths (KMS, IAM, S3 object lock
and bucket policies as AWS stores them). The real configuration is copied as it is; a
Terraform override file (``moto_override.tf``) only points the provider at moto, so
nothing in infra/terraform is changed for the test. Terraform and its provider are taken
from this machine (``TERRAFORM``, ``TF_PLUGIN_DIR``), never downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TF_SOURCE = REPO / "infra" / "terraform"
REGION = "us-east-1"

OVERRIDE = """\
# Written by tests/infra/conftest.py: the provider pointed at moto, nothing else changed.
provider "aws" {{
  region                      = "{region}"
  access_key                  = "testing"
  secret_key                  = "testing"
  s3_use_path_style           = true
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {{
    iam = "{url}"
    kms = "{url}"
    s3  = "{url}"
    sts = "{url}"
  }}
}}
"""


@dataclass(frozen=True)
class Stack:
    """A Terraform working copy applied to one moto server."""

    url: str
    workdir: Path
    terraform: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run terraform in the working copy; a non-zero exit fails the test with its output."""
        done = subprocess.run(
            [self.terraform, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"terraform {args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def apply(self, *targets: str) -> None:
        """Apply the configuration (only ``targets`` and what they depend on, if given)."""
        chosen = [f"-target={t}" for t in targets]
        self.run("apply", "-auto-approve", "-input=false", "-lock=false", "-no-color", *chosen)

    def outputs(self) -> dict[str, Any]:
        raw = json.loads(self.run("output", "-json", "-no-color").stdout)
        return {k: v["value"] for k, v in raw.items()}


def _terraform() -> tuple[str, Path]:
    """The terraform binary and the provider directory, or skip (fail where required)."""
    exe = shutil.which(os.environ.get("TERRAFORM", "terraform"))
    plugins = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
    missing = []
    if exe is None:
        missing.append("Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install)")
    if not (plugins / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        missing.append(
            f"the hashicorp/aws 5.x provider under TF_PLUGIN_DIR={plugins} "
            "(`terraform providers mirror DIR` on a connected machine)"
        )
    if missing:
        message = "apply-to-moto skipped: install " + " and ".join(missing)
        if os.environ.get("INFRA_REQUIRE_TERRAFORM") == "1":  # CI: the image ships both
            pytest.fail(message)
        pytest.skip(message)
    assert exe is not None
    return exe, plugins


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def aws_env(moto_url: str) -> Iterator[dict[str, str]]:
    """Credentials and endpoints every AWS client of this process (boto3, the AWS
    Encryption SDK) takes: moto's, for the length of the module."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_KMS": moto_url,
        "AWS_ENDPOINT_URL_STS": moto_url,
        "AWS_ENDPOINT_URL_IAM": moto_url,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(key, raising=False)
        yield env


@pytest.fixture(scope="module")
def stack(
    moto_url: str, aws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    """infra/terraform copied, pointed at moto, initialised offline and applied."""
    terraform, plugins = _terraform()
    workdir = tmp_path_factory.mktemp("terraform")
    for source in [*TF_SOURCE.glob("*.tf"), TF_SOURCE / ".terraform.lock.hcl"]:
        shutil.copy2(source, workdir / source.name)
    (workdir / "moto_override.tf").write_text(OVERRIDE.format(region=REGION, url=moto_url))
    cli_config = workdir / "offline.tfrc"
    cli_config.write_text("")  # no credentials helpers, no network mirrors
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",  # no version check against checkpoint.hashicorp.com
        "TF_VAR_bucket_name": "secure-models-test",
        "TF_VAR_force_destroy": "true",
        **aws_env,
    }
    found = Stack(url=moto_url, workdir=workdir, terraform=terraform, env=env)
    found.run("init", "-input=false", f"-plugin-dir={plugins}", "-no-color")
    found.apply()
    return found
