"""The command's own contract: exit codes and one readable line, never a traceback."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import EXIT_OK, EXIT_USAGE, main
from tasks.common.settings import ConfigError

CLI = str(Path(sys.executable).parent / "secure-pipeline")


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


def test_deployment_parameters_are_confined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can trigger a deployment run picks neither an output path nor a config
    outside the allow-listed directories (data/ and SECURE_PIPELINE_CONFIG_DIRS)."""
    from flows.kernel import CONFIG_DIRS
    from flows.kernel import deployment_config as _deployment_config
    from tasks.common.settings import PROJECT_ROOT

    bundled = PROJECT_ROOT / "data" / "breast_cancer.toml"
    assert _deployment_config(str(bundled), None, None) == str(bundled)
    assert _deployment_config(None, None, None) is None
    outside = tmp_path / "team.toml"
    outside.write_text(bundled.read_text())
    for config, report, root in [
        (str(outside), None, None),  # not allow-listed
        (str(bundled), str(tmp_path / "r.json"), None),  # a free output path
        (str(bundled), None, str(tmp_path)),  # a wider data root
        (str(PROJECT_ROOT / "data" / "breast_cancer.csv"), None, None),  # not a config
        (str(PROJECT_ROOT / "data" / ".." / ".." / "etc" / "x.toml"), None, None),
    ]:
        with pytest.raises(ConfigError):
            _deployment_config(config, report, root)
    monkeypatch.setenv(CONFIG_DIRS, str(tmp_path))  # `serve` allow-lists its config's dir
    assert _deployment_config(str(outside), None, None) == str(outside.resolve())


def test_run_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "blocked by a gate" in out and "--quiet" in out


def test_monitor_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["monitor", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "healthy" in out and "alert" in out and "--data" in out


def test_the_automations_are_valid_prefect_and_expect_the_blocked_and_alert_states() -> None:
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    from tasks.common.settings import PROJECT_ROOT

    data = yaml.safe_load((PROJECT_ROOT / "infra/prefect/automations.yaml").read_text())
    blocked, alert = [AutomationCore.model_validate(a) for a in data["automations"]]
    assert blocked.trigger.expect == {"prefect.flow-run.Blocked"}  # type: ignore[union-attr]
    assert alert.trigger.expect == {"prefect.flow-run.Alert"}  # type: ignore[union-attr]
    related = alert.trigger.match_related  # type: ignore[union-attr]
    assert related.get("prefect.resource.name") in ("secure-monitoring", ["secure-monitoring"])
    assert all(a.actions[0].type == "send-notification" for a in (blocked, alert))


def test_the_prefect_yaml_declares_both_flows_with_their_schedules() -> None:
    import yaml

    from tasks.common.settings import PROJECT_ROOT

    data = yaml.safe_load((PROJECT_ROOT / "infra/prefect/prefect.yaml").read_text())
    found = {d["entrypoint"]: d["schedules"][0]["cron"] for d in data["deployments"]}
    assert found == {
        "flows/training.py:secure_training": "0 2 * * *",
        "flows/monitoring.py:secure_monitoring": "0 * * * *",
    }
    for entry in found:  # each entrypoint names a flow that exists
        path, _, flow = entry.partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, flow).name.startswith("secure-")


# --- a closed output pipe (`| head -1`) is the reader's choice, never a failure -----------


def _closed_pipe() -> int:
    """The write end of a pipe whose reader has gone: a write gets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def test_stage_lines_stop_on_a_closed_pipe_and_the_stage_goes_on() -> None:
    from tasks.common import progress
    from tasks.common.gates import GateResult

    gate = GateResult(name="ingest.size", passed=True, metrics={}, threshold={}, detail="")
    with os.fdopen(_closed_pipe(), "w") as closed:
        progress.attach(closed)
        try:
            progress.finished("ingest", [gate], 0.1)  # no BrokenPipeError reaches the stage
            assert progress._out is None  # detached: later stages write nothing
        finally:
            progress.attach(None)
            with contextlib.suppress(BrokenPipeError):
                closed.close()


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_command_with_a_closed_output_keeps_its_exit_code(tmp_path: Path, closed: str) -> None:
    """`keys init | true`: the keys are made, the exit code is 0, no traceback."""
    env = {**os.environ, "SECURE_PIPELINE_STATE_DIR": str(tmp_path / "state")}
    fd = _closed_pipe()
    try:
        proc = subprocess.run(
            [CLI, "keys", "init"],
            env=env,
            stdout=fd if closed == "stdout" else subprocess.PIPE,
            stderr=fd if closed == "stderr" else subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(fd)
    assert proc.returncode == EXIT_OK
    assert (tmp_path / "state" / "keys" / "signing.pub").exists()
    shown = (proc.stderr if closed == "stdout" else proc.stdout) or b""
    assert b"Traceback" not in shown and b"BrokenPipe" not in shown
