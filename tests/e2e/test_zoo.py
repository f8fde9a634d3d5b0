"""A team table from CSV to a deployed, verified model with `init` + `run` and no
code edit, for every model of the zoo (switched by one environment variable)."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from tasks.models import DP_ESTIMATORS as DP
from tests.e2e.conftest import Pipeline
from tests.mixed_table import mixed_table

pytestmark = pytest.mark.e2e

# Estimator -> the extra environment it needs. DP at epsilon 5 reaches ~0.81 accuracy
# and ~0.77 robust accuracy here, under the 0.90 and 0.80 default floors: both are
# lowered knowingly (within their safe ranges, so no waiver).
ZOO = {
    "logistic_regression": {},
    "random_forest": {},
    "hist_gradient_boosting": {},
    # A DP model is much less accurate than the champion the others left under
    # customers-classifier: under that name it is a regression (see the test below).
    "dp_logistic_regression": {
        "SECURE_PIPELINE_MODEL__NAME": "customers-dp-classifier",
        "SECURE_PIPELINE_MODEL__DP_EPSILON": "5",
        "SECURE_PIPELINE_EVALUATE__MIN_ACCURACY": "0.75",
        "SECURE_PIPELINE_EVALUATE__MIN_ROBUST_ACCURACY": "0.65",
    },
}


@pytest.fixture(scope="module")
def config(kept_up: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    mixed_table(5000).to_csv(root / "customers.csv", index=False)
    out = kept_up.run(
        "init", str(root / "customers.csv"), "--target", "segment", "--pii", "email=drop"
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.split("--config", 1)[1].strip())


@pytest.mark.parametrize("estimator", list(ZOO))
def test_init_then_run_deploys_each_estimator(
    kept_up: Pipeline, config: Path, tmp_path: Path, estimator: str
) -> None:
    env = {**kept_up.env, "SECURE_PIPELINE_MODEL__ESTIMATOR": estimator, **ZOO[estimator]}
    pipe = dataclasses.replace(kept_up, env=env)
    code, report, err = pipe.train(tmp_path, "--config", str(config))
    assert code == 0, err
    assert report["status"] == "deployed", report.get("blocked_by")
    gates = {g["name"]: g for g in report["gates"]}
    assert all(g["passed"] for g in gates.values())
    assert gates["evaluate.adversarial"]["metrics"]["attacks"] == (
        "fgm+corner" if "logistic" in estimator else "square"
    )
    name, version = report["model"]["name"], report["model"]["version"]
    verified = pipe.run("verify", "--config", str(config), f"models:/{name}/{version}")
    assert verified.returncode == 0, verified.stderr
    # No --config: the reference names the model, MLflow's copy is looked up by that name
    # (not the default config's model), and the fetched release is the signed one.
    alone = pipe.run("verify", f"models:/{name}@champion")
    assert alone.returncode == 0, alone.stderr
    assert "ok   mlflow.artifact: MLflow's copy holds exactly the signed files" in alone.stderr
    fetched = pipe.run("fetch", f"models:/{name}@champion", "--out", str(tmp_path / "r"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "r" / "model.skops").is_file()
    if estimator in DP:  # its claimed epsilon is audited, and the bound is signed
        audit = gates["evaluate.dp_audit"]["metrics"]
        assert audit["applies"] and audit["epsilon_audited"] <= audit["epsilon_claimed"] == 5.0
        envelope = json.loads((tmp_path / "r" / "provenance.dsse.json").read_text())
        statement = json.loads(base64.b64decode(envelope["payload"]))
        signed = statement["predicate"]["buildDefinition"]["internalParameters"]["model"]
        assert signed["dp_epsilon"] == 5.0
        assert signed["dp_epsilon_audited"] == audit["epsilon_audited"]
    else:
        assert gates["evaluate.dp_audit"]["metrics"] == {"applies": False}


def test_a_weaker_model_does_not_replace_the_champion(
    kept_up: Pipeline, config: Path, tmp_path: Path
) -> None:
    """The DP model under the champion's own name: blocked by evaluate.quality, which
    compares it with the verified champion on the same test rows; the champion stays."""
    env = {
        **kept_up.env,
        **ZOO["dp_logistic_regression"],
        "SECURE_PIPELINE_MODEL__ESTIMATOR": "dp_logistic_regression",
        "SECURE_PIPELINE_MODEL__NAME": "customers-classifier",
    }
    pipe = dataclasses.replace(kept_up, env=env)
    code, report, _ = pipe.train(tmp_path, "--config", str(config))
    assert code == 1
    assert report["blocked_by"] == "evaluate.quality"
    quality = next(g for g in report["gates"] if g["name"] == "evaluate.quality")
    assert quality["metrics"]["accuracy_vs_champion"] < -quality["threshold"]["max_regression"]
    assert "champion" in quality["detail"]
    after = pipe.run("verify", "models:/customers-classifier@champion")
    assert after.returncode == 0, after.stderr  # the champion is intact and verifies
