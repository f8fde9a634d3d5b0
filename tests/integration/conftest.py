"""A real SeaweedFS for the session, started through `s3_service` like the CLI does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.common.s3 import S3Endpoint, s3_client
from tasks.common.settings import LocalStackConfig, Settings, load_settings
from tasks.localstack import identities
from tasks.localstack.stack import s3_service
from tests.ports import free_port


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(state_dir=tmp_path_factory.mktemp("s3") / "state")


@pytest.fixture(scope="session")
def s3_endpoint(s3_settings: Settings) -> Iterator[S3Endpoint]:
    with s3_service(s3_settings) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3(s3_endpoint: S3Endpoint):
    """Client with the pipeline identity (what the deploy stage gets)."""
    return s3_client(s3_endpoint)


@pytest.fixture(scope="session")
def admin_s3(s3_settings: Settings, s3_endpoint: S3Endpoint):
    return s3_client(identities.endpoint_at(s3_settings, s3_endpoint.url, identity="admin"))


@pytest.fixture(scope="session")
def bucket(s3_settings: Settings) -> str:
    return s3_settings.storage.bucket


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    """Settings for `local_up` with free ports, so a developer's own stack is never touched."""
    ports = LocalStackConfig(s3_port=free_port(), prefect_port=free_port(), mlflow_port=free_port())
    return load_settings(state_dir=tmp_path / "state", local=ports)
