"""Models and columns by configuration: checked when the config loads (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.common.settings import ConfigError, load_settings
from tasks.models import ESTIMATORS, build_pipeline

CLI = str(Path(sys.executable).parent / "secure-pipeline")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"logistic_regression": {"n_estimators": 10}},
            "unexpected keyword argument 'n_estimators'",
        ),
        ({"logistic_regression": {"C": "strong"}}, "'C' parameter of LogisticRegression"),
        ({"logistic_regression": {"max_iter": -1}}, "'max_iter' parameter"),
        ({"xgboost": {"depth": 3}}, "model.params.xgboost: no such estimator"),
    ],
)
def test_bad_model_params_are_configuration_errors(tmp_path, params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(state_dir=tmp_path, model={"name": "m", "params": params})


def test_each_estimator_gets_its_own_section_and_every_section_is_checked(tmp_path) -> None:
    params = {"random_forest": {"n_estimators": 50}, "logistic_regression": {"C": 0.5}}
    s = load_settings(state_dir=tmp_path, model={"name": "m", "params": params})
    assert s.model.estimator_params["C"] == 0.5
    rf = s.model.model_copy(update={"estimator": "random_forest"})
    assert rf.estimator_params["n_estimators"] == 50 and "C" not in rf.estimator_params
    bad = {"random_forest": {"n_estimators": "many"}}  # not selected, still refused
    with pytest.raises(ConfigError, match="n_estimators"):
        load_settings(state_dir=tmp_path, model={"name": "m", "params": bad})


def test_every_estimator_builds_from_the_bundled_config(tmp_path) -> None:
    s = load_settings(state_dir=tmp_path)
    for name in ESTIMATORS:
        pipe = build_pipeline(s.model.model_copy(update={"estimator": name}), s.dataset, ["a"])
        assert [n for n, _ in pipe.steps] == ["prep", "model"]


def test_cli_exits_2_on_a_bad_parameter_before_anything_runs(tmp_path) -> None:
    env = {
        "SECURE_PIPELINE_STATE_DIR": str(tmp_path / "state"),
        "SECURE_PIPELINE_MODEL__ESTIMATOR": "random_forest",
        "SECURE_PIPELINE_MODEL__PARAMS": '{"random_forest": {"n_trees": 10}}',
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([CLI, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "n_trees" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "state").exists()  # nothing ran, nothing was created


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"numeric": ["a"], "categorical": ["a"]}, "declared as both numeric and categorical"),
        ({"numeric": ["target"]}, "declared as both target and numeric"),
        ({"categorical": ["c"], "missing": {"c": "median"}}, "a category has no median"),
        ({"ignored": ["c"], "missing": {"c": "median"}}, "only numeric or categorical inputs"),
    ],
)
def test_column_roles_are_declared_once(tmp_path, dataset, message) -> None:
    base = load_settings(state_dir=tmp_path).dataset.model_dump()
    with pytest.raises(ConfigError, match=message):
        load_settings(state_dir=tmp_path, dataset={**base, **dataset})
