"""The relative evaluate rules: skill over trivial baselines, no regression against the
champion (paired, same rows), the accuracy drop under attack; per-estimator settings;
their safe ranges and waivers; what `init` measures and writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.checks.adversarial import ADVERSARIAL, attack_rows, check_adversarial
from tasks.checks.baselines import paired_difference, skill, trivial_baselines
from tasks.checks.champion import Champion, champion_ref, comparable, load_champion
from tasks.checks.measuring import Measured, Spread, choose
from tasks.common.settings import ConfigError, EvaluateConfig, GovernanceConfig, load_settings
from tasks.evaluate import QUALITY, check_quality, evaluate_checks
from tasks.init_config import render_config
from tasks.onboarding import Columns
from tests.mixed_table import mixed_table
from tests.unit.test_probes import MIXED, fit_model


@pytest.fixture(scope="module")
def good():
    return fit_model("logistic_regression", mixed_table(600, seed=3), MIXED)


@pytest.fixture(scope="module")
def shuffled():
    """Trained on shuffled labels: no better than guessing."""
    frame = mixed_table(600, seed=3)
    frame["segment"] = frame["segment"].sample(frac=1, random_state=1).to_numpy()
    return fit_model("logistic_regression", frame, MIXED)


def test_baselines_and_skill() -> None:
    y_train = pd.Series(["a"] * 6 + ["b"] * 3 + ["c"])
    y_test = pd.Series(["a"] * 5 + ["b"] * 5)
    base = trivial_baselines(y_train, y_test)
    assert base["majority"] == 0.5
    assert base["stratified"] == pytest.approx(0.6 * 0.5 + 0.3 * 0.5)
    assert base["baseline"] == 0.5
    assert skill(0.75, 0.5) == 0.5 and skill(0.5, 0.5) == 0.0 and skill(0.4, 0.5) < 0


def test_paired_difference_counts_discordant_rows_only() -> None:
    same = np.ones(100, dtype=bool)
    assert paired_difference(same, same) == (0.0, pytest.approx(0.01))
    worse = same.copy()
    worse[:10] = False
    diff, half = paired_difference(worse, same)
    assert diff == pytest.approx(-0.1)
    assert 0.05 < half < 0.1  # 2.576 * sqrt(0.09 / 100) + 1/100
    many = np.tile(worse, 100)
    assert paired_difference(many, np.tile(same, 100))[1] < half / 5  # narrows with rows


def test_quality_passes_on_skill_and_blocks_a_useless_model(good, shuffled) -> None:
    pipe, _, x_test, y_train, y_test = good
    ok = check_quality(pipeline=pipe, x=x_test, y=y_test, min_skill=0.2, y_train=y_train)
    assert ok.passed and ok.metrics["skill"] > 0.8 and ok.metrics["champion"] == "none"
    assert ok.metrics["champion_reason"] == "no champion was given"
    pipe, _, x_test, y_train, y_test = shuffled
    bad = check_quality(pipeline=pipe, x=x_test, y=y_test, min_skill=0.2, y_train=y_train)
    assert not bad.passed and bad.metrics["skill"] < 0.2
    assert "below evaluate.min_skill = 0.2" in bad.detail
    assert f"majority class {bad.metrics['majority_accuracy']:.3f}" in bad.detail
    assert bad.threshold == {"min_skill": 0.2, "max_regression": 0.02}


def test_fixed_floor_is_off_by_default_and_holds_when_set(good) -> None:
    pipe, _, x_test, y_train, y_test = good
    cfg = EvaluateConfig()
    assert cfg.min_accuracy is None and cfg.min_robust_accuracy is None
    floor = check_quality(pipeline=pipe, x=x_test, y=y_test, min_accuracy=0.999, y_train=y_train)
    assert not floor.passed and "fixed floor evaluate.min_accuracy = 0.999" in floor.detail


def test_champion_regression_is_blocked_on_the_same_rows(good, shuffled) -> None:
    pipe, _, x_test, y_train, y_test = good
    weak = shuffled[0]
    champ = Champion("loaded", "test", "7", pipe, "logistic_regression")
    blocked = check_quality(
        pipeline=weak, x=x_test, y=y_test, min_skill=-1.0, y_train=y_train, champion=champ
    )
    assert not blocked.passed
    assert blocked.metrics["champion"] == "version 7"
    assert blocked.metrics["accuracy_vs_champion"] < -0.3
    assert "below the champion's (version 7)" in blocked.detail
    assert "evaluate.max_regression = 0.02" in blocked.detail
    same = check_quality(pipeline=pipe, x=x_test, y=y_test, y_train=y_train, champion=champ)
    assert same.passed and same.metrics["accuracy_vs_champion"] == 0.0
    assert "no regression against the champion" in same.detail
    # The other way round: a better candidate than its champion passes.
    weak_champ = Champion("loaded", "test", "6", weak, "logistic_regression")
    assert check_quality(
        pipeline=pipe, x=x_test, y=y_test, y_train=y_train, champion=weak_champ
    ).passed


def test_unverified_champion_fails_closed_and_none_passes(good) -> None:
    pipe, x_train, x_test, y_train, y_test = good
    bad = Champion("unverified", "models:/m@champion does not verify (artifact.digest: x)", "3")
    q = check_quality(pipeline=pipe, x=x_test, y=y_test, y_train=y_train, champion=bad)
    assert not q.passed and "artifact.digest" in q.detail and "failing closed" in q.detail
    x_att, y_att = attack_rows(x_test, y_test, samples=50, seed=0)
    kw = {"pipeline": pipe, "estimator": "logistic_regression", "x_train": x_train}
    a = check_adversarial(**kw, x=x_att, y=y_att, config=EvaluateConfig(), seed=0, champion=bad)
    assert not a.passed and "failing closed" in a.detail
    new = Champion("none", "version 2 is not comparable: other classes", "2")
    q = check_quality(pipeline=pipe, x=x_test, y=y_test, y_train=y_train, champion=new)
    assert q.passed and q.metrics["champion"] == "none"
    assert q.metrics["champion_reason"].endswith("other classes")


def test_comparable_needs_same_inputs_roles_and_classes(good) -> None:
    pipe = good[0]
    assert comparable(pipe, pipe) is None
    frame = mixed_table(300, seed=4).drop(columns=["age"])
    fewer = MIXED.model_copy(update={"numeric": [c for c in MIXED.numeric if c != "age"]})
    other = fit_model("logistic_regression", frame, fewer)[0]
    assert "other inputs" in (comparable(other, pipe) or "")
    frame = mixed_table(300, seed=4)
    frame["segment"] = frame["segment"].where(frame["segment"] != frame["segment"].iloc[0], "x")
    assert comparable(fit_model("logistic_regression", frame, MIXED)[0], pipe) == "other classes"


def test_adversarial_drop_rule_and_champion_robustness(good) -> None:
    pipe, x_train, x_test, _, y_test = good
    x_att, y_att = attack_rows(x_test, y_test, samples=100, seed=0)
    kw = {"pipeline": pipe, "estimator": "logistic_regression", "x_train": x_train}
    ok = check_adversarial(**kw, x=x_att, y=y_att, config=EvaluateConfig(), seed=0)
    assert ok.passed and ok.threshold == {"max_robust_drop": 0.3, "max_regression": 0.02}
    assert ok.metrics["accuracy_drop"] == pytest.approx(
        ok.metrics["clean_accuracy"] - ok.metrics["robust_accuracy"]
    )
    tight = EvaluateConfig(max_robust_drop=0.0, attack_eps=0.45)
    blocked = check_adversarial(**kw, x=x_att, y=y_att, config=tight, seed=0)
    assert not blocked.passed and "> evaluate.max_robust_drop = 0.0" in blocked.detail
    assert "from " in blocked.detail and "train with more regularisation" in blocked.detail
    champ = Champion("loaded", "test", "5", pipe, "logistic_regression")
    same = check_adversarial(
        **kw, x=x_att, y=y_att, config=EvaluateConfig(), seed=0, champion=champ
    )
    assert same.passed and same.metrics["robust_vs_champion"] == 0.0
    assert same.metrics["champion_robust_accuracy"] == same.metrics["robust_accuracy"]


def test_per_estimator_settings_override_the_flat_ones(tmp_path: Path) -> None:
    cfg = EvaluateConfig.model_validate(
        {"min_skill": 0.3, "random_forest": {"min_skill": 0.6, "max_robust_drop": 0.1}}
    )
    assert cfg.min_skill == 0.3 and cfg.for_estimator("logistic_regression") is cfg
    rf = cfg.for_estimator("random_forest")
    assert (rf.min_skill, rf.max_robust_drop, rf.max_regression) == (0.6, 0.1, 0.02)
    with pytest.raises(ValueError, match=r"evaluate\.random_forest\.min_skil: no such"):
        EvaluateConfig.model_validate({"random_forest": {"min_skil": 0.6}})
    with pytest.raises(ValueError, match="less than or equal to 1"):
        EvaluateConfig.model_validate({"random_forest": {"max_robust_drop": 2}})
    # evaluate_checks applies the estimator's own values.
    pipe, x_train, x_test, y_train, y_test = fit_model(
        "logistic_regression", mixed_table(300, seed=5), MIXED
    )
    own = EvaluateConfig.model_validate({"logistic_regression": {"min_skill": 0.99}})
    results = evaluate_checks(
        own,
        pipeline=pipe,
        estimator="logistic_regression",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        seed=0,
    )
    assert results[0].name == QUALITY and results[0].threshold["min_skill"] == 0.99
    assert results[1].name == ADVERSARIAL


def test_safe_ranges_apply_to_the_effective_values(tmp_path: Path) -> None:
    # A weak sub-table of another estimator does not weaken this run...
    s = load_settings(state_dir=tmp_path, evaluate={"random_forest": {"min_skill": 0.0}})
    assert s.active_waivers == []
    # ...the selected estimator's does, and needs a waiver.
    with pytest.raises(ConfigError, match=r"evaluate\.min_skill = 0\.0 .*evaluate\.quality"):
        load_settings(state_dir=tmp_path, evaluate={"logistic_regression": {"min_skill": 0.0}})
    waived = load_settings(
        state_dir=tmp_path,
        evaluate={"logistic_regression": {"max_robust_drop": 0.7}},
        waivers={"evaluate.adversarial": "fragile by design; accepted by the data owner"},
    )
    assert waived.active_waivers[0]["setting"] == "evaluate.max_robust_drop"
    with pytest.raises(ConfigError, match=r"evaluate\.max_regression = 0\.1 "):
        load_settings(state_dir=tmp_path, evaluate={"max_regression": 0.1})
    # The optional floors unset are not a weakening; set low they still need a waiver.
    assert load_settings(state_dir=tmp_path).weakened == []


def test_choose_derives_settings_from_the_cv_spread() -> None:
    m = Measured(
        "logistic_regression",
        344,
        344,
        5,
        Spread(0.985, 0.012),
        0.44,
        0.36,
        Spread(0.973, 0.02),
        Spread(0.97, 0.01),
        Spread(0.015, 0.01),
        "fgm",
        68,
    )
    choose(m, test_rows=86)
    assert 0.85 < m.chosen["min_skill"] <= 0.973 - 3.74 * 0.02  # t(0.99, 4 df) sd below
    assert 0.05 <= m.chosen["max_robust_drop"] <= 0.1
    fragile = Measured(
        "logistic_regression",
        20000,
        53940,
        5,
        Spread(0.65, 0.01),
        0.40,
        0.29,
        Spread(0.42, 0.01),
        Spread(0.11, 0.02),
        Spread(0.54, 0.03),
        "fgm",
        200,
    )
    choose(fragile, test_rows=13485)
    # Beyond the safe range: the measured need, under a waiver init writes (which makes
    # each release of this estimator need an approver), never a setting clean runs fail.
    assert fragile.chosen["max_robust_drop"] == 0.68  # 0.54 + 3.75 * 0.03, rounded up
    assert "exceeds the safe maximum 0.5" in fragile.notes[0]
    assert "logistic_regression loses 0.54" in fragile.waivers["evaluate.adversarial"]
    # The probe: the default unless the clean folds need more, never beyond 0.5.
    assert "max_backdoor_flip" not in fragile.chosen
    fragile.probe = Spread(0.37, 0.04)
    choose(fragile, test_rows=13485)
    assert fragile.chosen["max_backdoor_flip"] == 0.5
    assert any("will be blocked by evaluate.backdoor_probe" in n for n in fragile.notes)
    fragile.probe = Spread(0.17, 0.085)
    choose(fragile, test_rows=13485)
    assert fragile.chosen["max_backdoor_flip"] == 0.49
    fragile.probe, fragile.chosen = Spread(0.02, 0.01), {}
    choose(fragile, test_rows=13485)
    assert "max_backdoor_flip" not in fragile.chosen  # 0.02 + 3.75 * 0.01: the default holds


def test_init_waiver_loads_for_every_estimator_and_binds_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = Measured(
        "hist_gradient_boosting",
        1000,
        1000,
        5,
        Spread(0.78, 0.01),
        0.4,
        0.29,
        Spread(0.63, 0.02),
        Spread(0.25, 0.04),
        Spread(0.55, 0.03),
        "square",
        200,
    )
    choose(m, test_rows=250)
    assert m.waivers, "a drop beyond the safe range comes with init's waiver"
    waivers = {"evaluate.adversarial": "written by init: " + m.waivers["evaluate.adversarial"]}
    evaluate = {"hist_gradient_boosting": dict(m.chosen)}
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__ESTIMATOR", "hist_gradient_boosting")
    hgb = load_settings(state_dir=tmp_path, evaluate=evaluate, waivers=waivers)
    assert [w["gate"] for w in hgb.active_waivers] == ["evaluate.adversarial"]
    # Another estimator runs under the same config: the waiver stays, not in force.
    monkeypatch.setenv("SECURE_PIPELINE_MODEL__ESTIMATOR", "logistic_regression")
    lr = load_settings(state_dir=tmp_path, evaluate=evaluate, waivers=waivers)
    assert lr.active_waivers == []
    # A waiver nothing uses, for any estimator, is still refused.
    with pytest.raises(ConfigError, match="nothing weakens that gate"):
        load_settings(state_dir=tmp_path, waivers=waivers)


def test_render_config_writes_measured_values_and_sections(tmp_path: Path) -> None:
    m = Measured(
        "random_forest",
        344,
        344,
        5,
        Spread(0.988, 0.012),
        0.442,
        0.364,
        Spread(0.979, 0.022),
        Spread(0.974, 0.016),
        Spread(0.014, 0.014),
        "square",
        68,
    )
    choose(m, test_rows=86)
    text = render_config(
        name="t",
        source="t.csv",
        data_root=".",
        target="y",
        columns=Columns(numeric=["a"]),
        pii={},
        suite="t.suite.json",
        suite_sha256="0" * 64,
        profile="t.profile.json",
        profile_sha256="0" * 64,
        measured=[m],
    )
    assert "5-fold stratified CV, seed 42, 344 of 344 rows" in text
    assert "# measured by init: accuracy 0.988 ± 0.012, majority 0.442" in text
    assert f"[evaluate.random_forest]\nmin_skill = {m.chosen['min_skill']}" in text
    assert "min_accuracy" not in text.split("[evaluate]")[1].split("#")[0]


@pytest.mark.integration
def test_champion_lookup_follows_the_signed_record(tmp_path: Path) -> None:
    """The champion is the signed record in the bucket; an MLflow alias alone (set by
    hand) is no champion, and the evaluate gates then fail closed."""
    from tasks.common.s3 import s3_client
    from tasks.common.tracking import mlflow_client
    from tasks.localstack.stack import s3_service

    settings = load_settings(state_dir=tmp_path)
    with s3_service(settings) as endpoint:
        s3 = s3_client(endpoint)
        assert champion_ref(settings, s3) is None  # never registered
        client = mlflow_client(settings)
        name = settings.model.name
        client.create_registered_model(name)
        first = str(client.create_model_version(name, source=str(tmp_path)).version)
        assert champion_ref(settings, s3) is None  # registered, no alias yet
        client.set_registered_model_alias(name, "champion", first)
        with pytest.raises(LookupError, match="names no deployment"):
            champion_ref(settings, s3)  # an alias without a deployment: an edited registry
        # A state directory from before champion records, no approvals required: the
        # alias and its deployment tag still name the champion, until the first record.
        uri = "s3://secure-models/models/x/1/release.dsse.json"
        client.set_model_version_tag(name, first, "deployment_uri", uri)
        assert champion_ref(settings, s3) == (name, first, uri)
        # With approvals required an alias alone is no champion: the gates fail closed.
        governed = settings.model_copy(
            update={
                "governance": GovernanceConfig(
                    required_approvals=1,
                    approvers=[tmp_path / "a.pub"],
                    promoters=[tmp_path / "p.pub"],
                )
            }
        )
        with pytest.raises(LookupError, match="no signed champion record"):
            champion_ref(governed, s3)
        lost = load_champion(governed, s3, candidate=None)  # type: ignore[arg-type]
        assert lost.status == "unverified" and "no signed champion record" in lost.reason

    class NoBucket:  # the bucket cannot be read: the champion is not verified
        def head_object(self, **kw):
            raise OSError("gone")

    gone = load_champion(settings, NoBucket(), candidate=None)  # type: ignore[arg-type]
    assert gone.status == "unverified"  # no bucket: never a pass
