"""Real public tables from CSV to a deployed model with `init` + `run`, the real command,
for LR, RF and HGB: the config `init` writes is used as written (the user gives only
the target and the PII flags of `tests.realtables.SPECS`), the model switched by one
environment variable. One kept-up store for the session, one `init` per table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.e2e.conftest import Pipeline
from tests.realtables import SPECS, load, write_table

pytestmark = pytest.mark.e2e

TABLES = ("penguins", "mpg")
ESTIMATORS = ("logistic_regression", "random_forest", "hist_gradient_boosting")


@pytest.fixture(scope="module")
def configs(kept_up: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`secure-pipeline init` on each table (its own directory): the config it wrote."""
    out: dict[str, Path] = {}
    for name in TABLES:
        data = write_table(load(name), tmp_path_factory.mktemp(name), name)
        done = kept_up.run("init", str(data), *SPECS[name].init_args)
        assert done.returncode == 0, done.stderr
        out[name] = Path(done.stdout.split("--config", 1)[1].strip())
    return out


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("table", TABLES)
def test_init_then_run_deploys(
    kept_up: Pipeline, configs: dict[str, Path], tmp_path: Path, table: str, estimator: str
) -> None:
    pipe = dataclasses.replace(
        kept_up,
        env={
            **kept_up.env,
            "SECURE_PIPELINE_MODEL__ESTIMATOR": estimator,
            # One model name per estimator: each is compared with its own champion (a
            # weaker estimator under another's name is a regression, and blocked).
            "SECURE_PIPELINE_MODEL__NAME": f"{table}-{estimator.replace('_', '-')}",
        },
    )
    code, report, err = pipe.train(tmp_path, "--config", str(configs[table]))
    blocked = [
        f"{g['name']}: {g['metrics']} vs {g['threshold']}"
        for g in report.get("gates", [])
        if not g["passed"]
    ]
    assert report.get("status") == "deployed", (report.get("blocked_by"), blocked, err[-2000:])
    assert code == 0
    # The backdoor probe compared the model with the reference model `init` trained on
    # the trusted table (listed in the signed profile, read through the model loader).
    probe = next(g for g in report["gates"] if g["name"] == "evaluate.backdoor_probe")
    assert probe["metrics"]["reference_model"] == "used", probe
