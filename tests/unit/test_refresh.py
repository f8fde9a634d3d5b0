"""`secure-pipeline refresh`: after a reviewer moves a column between roles in the config
`init` wrote, the suite and the signed profile are re-derived from the trusted table
and re-pinned in the config's own text; the table then passes the data gates again."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.checks.reference_models import load_reference_model
from tasks.common.settings import load_settings
from tests.conftest import data_gates
from tests.mixed_table import mixed_table

CLI = str(Path(sys.executable).parent / "secure-pipeline")


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {"SECURE_PIPELINE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=180)


def move(text: str, column: str, *, to: str) -> str:
    """The config with `column` taken out of its role list and put in `to`'s."""
    text = text.replace(f'    "{column}",\n', "", 1)
    return re.sub(rf"^{to} = \[\n", f'{to} = [\n    "{column}",\n', text, count=1, flags=re.M)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory after one `init` on a small team table (init measures three models:
    made once, copied for each test)."""
    root = tmp_path_factory.mktemp("init")
    table = root / "customers.csv"
    mixed_table(600).to_csv(table, index=False)
    out = cli(
        "init", str(table), "--target", "segment", "--pii", "email=drop", state=root / "state"
    )
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def onboarded(initialised: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(config, table, state): a fresh copy of the initialised directory."""
    root = tmp_path / "copy"
    shutil.copytree(initialised, root)  # config paths are relative: the copy stands alone
    return root / "customers.toml", root / "customers.csv", root / "state"


def test_refresh_rederives_and_repins_after_a_role_moves(onboarded) -> None:
    config, table, state = onboarded
    config.write_text(move(config.read_text(), "tenure", to="ignored"))
    stale = load_settings(config, state_dir=state)
    assert sorted(stale.dataset.ignored) == ["customer_id", "tenure"]
    assert data_gates(stale, table)  # the old profile's inputs no longer match the config

    out = cli("refresh", "--config", str(config), state=state)
    assert out.returncode == 0, out.stderr
    suite, profile = (
        config.with_name("customers.suite.json"),
        config.with_name("customers.profile.json"),
    )
    assert out.stdout.splitlines() == [
        f'suite_sha256 = "{sha(suite)}"',
        f'reference_profile_sha256 = "{sha(profile)}"',
    ]
    text = config.read_text()
    assert out.stdout.splitlines()[0] in text and out.stdout.splitlines()[1] in text
    assert "REVIEW IT" in text and "looks like an id" in text  # comments survive
    settings = load_settings(config, state_dir=state)
    assert settings.dataset.suite_sha256 == sha(suite)
    columns = {e["kwargs"].get("column") for e in json.loads(suite.read_text())["expectations"]}
    assert "tenure" not in columns  # only in the column set now
    assert data_gates(settings, table) == []  # ingest, PII, validate, screen: all pass
    audit = (state / "audit" / "audit.jsonl").read_text()
    assert '"dataset.refreshed"' in audit and sha(suite) in audit
    # The reference models are retrained under the new roles and listed anew.
    listed = json.loads(profile.read_text())["reference_models"]
    assert sorted(listed) == ["hist_gradient_boosting", "logistic_regression", "random_forest"]
    for estimator, entry in listed.items():
        trusted = load_reference_model(
            json.loads(profile.read_text()),
            directory=config.parent,
            estimator=estimator,
            params=settings.model.model_copy(update={"estimator": estimator}).estimator_params,
        )
        assert trusted.status == "used", trusted
        assert "tenure" not in trusted.pipeline.feature_names_in_
        assert entry["file"] == f"customers.reference.{estimator}.skops"


def test_refresh_refuses_roles_the_table_contradicts(onboarded) -> None:
    config, table, state = onboarded
    before = {p.name: p.read_bytes() for p in config.parent.glob("customers.*")}
    config.write_text(move(config.read_text(), "region", to="numeric"))  # text as a number
    out = cli("refresh", "--config", str(config), "--data", str(table), state=state)
    assert out.returncode == 2
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and "do not fit customers.csv" in line
    assert "numeric column 'region' holds text: declare it categorical" in line
    assert "north" not in line  # no cell value in the message
    assert "Traceback" not in out.stderr
    after = {p.name: p.read_bytes() for p in config.parent.glob("customers.*")}
    del before["customers.toml"], after["customers.toml"]
    assert after == before  # nothing re-derived, nothing re-pinned


def test_repin_replaces_only_the_pin_lines() -> None:
    from tasks.onboarding import InitError
    from tasks.refresh import repin

    a, b = "a" * 64, "b" * 64
    text = (
        '[dataset]\n# suite_sha256 = "old" in a comment stays\n'
        'suite_sha256 = "' + "0" * 64 + '"  # reviewed 2026-01-02\n'
        'reference_profile = "p.json"\n'
    )
    out = repin(text, suite_sha256=a, profile_sha256=b)
    assert out == (
        '[dataset]\n# suite_sha256 = "old" in a comment stays\n'
        f'suite_sha256 = "{a}"  # reviewed 2026-01-02\n'
        f'reference_profile = "p.json"\nreference_profile_sha256 = "{b}"\n'
    )
    with pytest.raises(InitError, match=re.escape('2 `suite_sha256 = "..."` lines')):
        repin(out + f'suite_sha256 = "{a}"\n', suite_sha256=a, profile_sha256=b)


def test_suite_and_profile_print_their_pins_like_refresh(onboarded, tmp_path: Path) -> None:
    config, table, state = onboarded
    for command, key in (("suite", "suite_sha256"), ("profile", "reference_profile_sha256")):
        out_file = tmp_path / f"made.{command}.json"
        made = cli(
            command, str(table), "--config", str(config), "--out", str(out_file), state=state
        )
        assert made.returncode == 0, made.stderr
        assert made.stdout == f'{key} = "{sha(out_file)}"\n'  # ready to paste
    out_file = tmp_path / "steward.profile.json"
    made = cli(
        "profile",
        str(table),
        "--config",
        str(config),
        "--out",
        str(out_file),
        "--reference-models",
        state=state,
    )
    assert made.returncode == 0, made.stderr
    listed = json.loads(out_file.read_text())["reference_models"]
    assert {e["sha256"] for e in listed.values()} == {
        sha(tmp_path / f"steward.reference.{e}.skops") for e in listed
    }
    assert "steward.reference." in made.stderr
    missing = cli(
        "suite",
        str(tmp_path / "nope.csv"),
        "--config",
        str(config),
        "--out",
        str(tmp_path / "x.json"),
        state=state,
    )
    assert missing.returncode == 2 and missing.stdout == ""


def test_refresh_needs_a_named_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import EXIT_USAGE, main

    monkeypatch.setenv("SECURE_PIPELINE_STATE_DIR", str(tmp_path / "state"))
    assert main(["refresh"]) == EXIT_USAGE  # the bundled config is never rewritten
    assert "--config FILE" in capsys.readouterr().err
