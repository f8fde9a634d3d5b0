"""The command's own contract: exit codes and one readable line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import EXIT_OK, EXIT_USAGE, main


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURE_PIPELINE_STATE_DIR", str(tmp_path / "state"))


def test_missing_config_is_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "nope.toml")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("configuration error") and len(err.strip().splitlines()) == 1


def test_bad_env_override_is_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECURE_PIPELINE_EVALUATE__MIN_ACCURACY", "lots")
    assert main(["audit", "verify"]) == EXIT_USAGE
    assert "evaluate.min_accuracy" in capsys.readouterr().err


def test_verify_without_keys_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "s3://secure-models/models/m/1/"]) == EXIT_USAGE  # set up first
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "keys init" in err


def test_verify_rejects_a_non_s3_ref(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "file:///etc/passwd"]) == EXIT_USAGE


def test_audit_verify_on_fresh_state(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == EXIT_OK
    assert "no audit log yet" in capsys.readouterr().err


def test_unknown_command_is_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["deploy-everything"])
    assert info.value.code == EXIT_USAGE
