"""One 0600 file per S3 identity and one for the server's secrets; a legacy
``credentials.json`` is split once, keeping the object-encryption key."""

from __future__ import annotations

import json

import pytest

from tasks.localstack import credentials
from tasks.localstack.processes import StackError


def test_each_role_has_its_own_private_file(settings) -> None:
    admin = credentials.role_keys(settings, "admin")
    base = settings.state_dir / "s3"
    files = sorted(p.name for p in (base / "roles").iterdir())
    assert files == sorted(f"{r}.json" for r in credentials.ROLES)
    for path in [*(base / "roles").iterdir(), base / "service.json"]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    pipeline = json.loads((base / "roles" / "pipeline.json").read_text())
    assert admin["secret_key"] not in json.dumps(pipeline)  # no role holds another's secret
    assert set(credentials.service_secrets(settings)) == set(credentials.SERVICE_SECRETS)
    assert credentials.role_keys(settings, "admin") == admin  # never regenerated


def test_a_legacy_file_is_split_once_keeping_every_secret(settings) -> None:
    base = settings.state_dir / "s3"
    base.mkdir(parents=True)
    legacy = {
        "admin": {"access_key": "A1", "secret_key": "a" * 20},
        "pipeline": {"access_key": "P1", "secret_key": "p" * 20},
        "service": {k: f"{k}-value" for k in credentials.SERVICE_SECRETS},
    }
    (base / "credentials.json").write_text(json.dumps(legacy))
    assert credentials.service_secrets(settings)["sse_key"] == "sse_key-value"
    assert credentials.role_keys(settings, "pipeline") == legacy["pipeline"]
    assert credentials.role_keys(settings, "admin") == legacy["admin"]
    assert not (base / "credentials.json").exists()
    assert credentials.role_keys(settings, "reader")["access_key"].startswith("SP")  # new role


def test_a_damaged_legacy_file_is_never_replaced(settings) -> None:
    base = settings.state_dir / "s3"
    base.mkdir(parents=True)
    (base / "credentials.json").write_text("{not json")
    with pytest.raises(StackError, match="Restore it from a backup"):
        credentials.service_secrets(settings)
    assert (base / "credentials.json").read_text() == "{not json"
    assert not (base / "service.json").exists()


def test_a_lost_service_file_beside_role_files_is_refused(settings) -> None:
    credentials.role_keys(settings, "pipeline")
    (settings.state_dir / "s3" / "service.json").unlink()
    with pytest.raises(StackError, match="encryption"):
        credentials.service_secrets(settings)
