"""Reference models: the estimators `init` and `refresh` train on the trusted table,
listed (file, sha256, parameters) in the signed profile, and what the backdoor probe
makes of them (`tasks.checks.reference_models`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tasks.checks.profile import signature_path, verify_profile
from tasks.checks.reference_models import (
    SECTION,
    ReferenceModel,
    fit_reference_models,
    load_reference_model,
    model_inputs,
)
from tasks.common.files import sha256_bytes
from tasks.onboarding import init_dataset
from tasks.trust.signing import Signer
from tests.mixed_table import mixed_table
from tests.unit.test_probes import MIXED, PARAMS, fit_model, poisoned, reference
from tests.unit.test_probes import _probe as probe

LR = {"logistic_regression": {"C": 1.0, "max_iter": 1000}}
FOREST = {"random_forest": {"n_estimators": 30, "min_samples_leaf": 5}}


@pytest.fixture(scope="module")
def trusted(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """A directory holding the reference models of a clean mixed table, and its
    profile with their section."""
    out = tmp_path_factory.mktemp("reference")
    frame = mixed_table(1500, seed=3)
    profile = reference(frame)
    profile[SECTION] = fit_reference_models(
        frame, dataset=MIXED, params={**LR, **FOREST}, name="mixed", out_dir=out
    )
    return out, profile


def test_each_model_is_written_and_listed_with_its_digest(trusted) -> None:
    out, profile = trusted
    section = profile[SECTION]
    assert set(section) == {"logistic_regression", "random_forest"}
    for estimator, entry in section.items():
        path = out / entry["file"]
        assert entry["file"] == f"mixed.reference.{estimator}.skops"
        assert sha256_bytes(path.read_bytes()) == entry["sha256"]
        assert entry["rows"] == 1500
    assert section["random_forest"]["params"] == FOREST["random_forest"]


def test_the_same_table_gives_the_same_bytes(trusted, tmp_path) -> None:
    _, profile = trusted
    again = fit_reference_models(
        mixed_table(1500, seed=3), dataset=MIXED, params=FOREST, name="mixed", out_dir=tmp_path
    )
    assert again["random_forest"]["sha256"] == profile[SECTION]["random_forest"]["sha256"]


def test_a_listed_model_with_the_runs_parameters_is_used(trusted) -> None:
    out, profile = trusted
    got = load_reference_model(
        profile,
        directory=out,
        estimator="random_forest",
        params=FOREST["random_forest"],
        inputs=model_inputs(MIXED, list(mixed_table(50, seed=3).columns)),
    )
    assert got.status == "used" and not got.problem
    assert list(got.pipeline.classes_) == sorted(mixed_table(50, seed=3)["segment"].unique())


def test_other_parameters_or_no_entry_leave_the_probe_to_the_label_counts(trusted) -> None:
    out, profile = trusted
    other = load_reference_model(
        profile, directory=out, estimator="random_forest", params={"n_estimators": 100}
    )
    assert other.status == "none" and "refresh" in other.skipped
    # A missing-value policy added after init: the model has no imputer for the gaps.
    inputs = model_inputs(MIXED, list(mixed_table(50, seed=3).columns))
    column = inputs["numeric"][0]
    edited = {**inputs, "missing": {**inputs["missing"], column: "median"}}
    if inputs["missing"][column] == "median":
        edited["missing"][column] = "refuse"
    policy = load_reference_model(
        profile,
        directory=out,
        estimator="random_forest",
        params=FOREST["random_forest"],
        inputs=edited,
    )
    assert policy.status == "none" and "missing-value policies" in policy.skipped
    none = load_reference_model(
        profile, directory=out, estimator="hist_gradient_boosting", params={}
    )
    assert none.status == "none" and none.pipeline is None
    bundled = load_reference_model({"version": 4}, directory=out, estimator="x", params={})
    assert bundled.status == "none"


def test_a_missing_altered_or_misnamed_model_is_refused(trusted, tmp_path) -> None:
    out, profile = trusted
    entry = profile[SECTION]["logistic_regression"]
    blob = (out / entry["file"]).read_bytes()
    params = LR["logistic_regression"]

    def load(section: dict[str, Any]) -> ReferenceModel:
        return load_reference_model(
            {SECTION: {"logistic_regression": section}},
            directory=tmp_path,
            estimator="logistic_regression",
            params=params,
        )

    missing = load(entry)
    assert missing.status == "refused" and "missing" in missing.problem
    (tmp_path / entry["file"]).write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    altered = load(entry)
    assert altered.status == "refused" and "digest" in altered.problem
    escape = load({**entry, "file": "../" + entry["file"]})
    assert escape.status == "refused" and "malformed" in escape.problem
    assert "malformed" in load("not an entry").problem  # type: ignore[arg-type]


def _probe(split: Any, profile: Any, model: ReferenceModel | None, **kw: Any) -> Any:
    """`tests.unit.test_probes._probe` with a reference model (300 rows unless given)."""
    return probe(split, reference=profile, reference_model=model, samples=300, **kw)


def test_a_refused_model_fails_the_probe_closed_and_says_why(trusted) -> None:
    refused = ReferenceModel("logistic_regression", problem="mixed.x.skops is missing")
    result = _probe(fit_model("logistic_regression", *_mixed()), trusted[1], refused)
    assert not result.passed and result.metrics["reference_model"] == "refused"
    assert "mixed.x.skops is missing" in result.detail and "refresh" in result.detail


def _mixed() -> tuple[Any, Any]:
    return mixed_table(1500, seed=3), MIXED


def test_a_model_that_behaves_as_the_trusted_one_has_nothing_beyond_it(trusted) -> None:
    """The candidate IS the reference model: every flip is justified (score <= 0)."""
    _, profile = trusted
    split = fit_model("random_forest", *_mixed(), params=FOREST["random_forest"])
    same = ReferenceModel("random_forest", pipeline=split[0])
    alone = _probe(split, profile, None, max_flip=0.0)
    judged = _probe(split, profile, same, max_flip=0.0)
    assert judged.metrics["reference_model"] == "used"
    assert judged.metrics["score"] <= 0.0 < alone.metrics["candidates"]


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting"])
def test_a_trigger_the_trusted_model_never_saw_is_still_blocked(trusted, estimator) -> None:
    out, profile = trusted
    params = PARAMS[estimator]  # leaves of 2: the forest learns a 3% trigger (5: it does not)
    clean = fit_reference_models(
        mixed_table(1500, seed=3),
        dataset=MIXED,
        params={estimator: params},
        name="m",
        out_dir=out,
    )
    ref_model = load_reference_model(
        {SECTION: clean}, directory=out, estimator=estimator, params=params
    )
    frame = poisoned(mixed_table(1500, seed=3), "age", 500.0, "high")
    split = fit_model(estimator, frame, MIXED, params=params)
    result = probe(split, reference=profile, reference_model=ref_model)
    m = result.metrics
    assert not result.passed and m["reference_model"] == "used"
    assert (m["feature"], m["class"]) == ("age", "high") and m["score"] > 0.5, m


def test_init_writes_signed_reference_models_and_measures_the_probe_with_them(tmp_path) -> None:
    data = tmp_path / "mixed.csv"
    mixed_table(600, seed=4).to_csv(data, index=False)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    result = init_dataset(
        data,
        target="segment",
        name="mixed",
        pii={"email": "drop"},
        out_dir=tmp_path,
        signer=Signer(signer_key),
    )
    signed, _ = verify_profile(
        result.profile.read_bytes(),
        signature_path(result.profile).read_bytes(),
        {"init": signer_key.public_key()},
    )
    section = signed[SECTION]
    assert sorted(section) == sorted(p.name.split(".")[2] for p in result.reference_models)
    for path in result.reference_models:
        entry = section[path.name.split(".")[2]]
        assert sha256_bytes(path.read_bytes()) == entry["sha256"]
    assert len(result.reference_models) == 3
    assert "backdoor probe" in result.config.read_text()


def test_a_probe_that_cannot_run_in_init_skips_only_the_probe(trusted) -> None:
    """A malformed label-count section makes the probe raise: init keeps the fold's
    accuracy and robustness, leaves the probe limit at its default and says why."""
    from tasks.checks.measuring import choose, measure
    from tasks.common.settings import EvaluateConfig

    broken = {**trusted[1], "conditional": {"classes": "not a list"}}
    (m,) = measure(
        mixed_table(600, seed=4),
        dataset=MIXED,
        estimators=LR,
        evaluate=EvaluateConfig(),
        reference=broken,
    )
    assert m.error is None and m.accuracy.mean > 0.5 and m.robust is not None
    assert m.probe is None and "malformed" in (m.probe_skipped or "")
    assert "backdoor probe not measured (ValueError" in m.comment()
    assert "max_backdoor_flip" not in choose(m, test_rows=150).chosen
