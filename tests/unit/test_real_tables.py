"""The gates on real public tables (`tests.realtables`), with the config `init` writes.

(a) Clean data passes: N seeded 80% subsamples (``REAL_RESAMPLES``, default 3) of
    penguins, mpg, a 10k-row seeded sample of diamonds and hpc_data (4,331 rows) pass
    every PII, validation, screen and evaluate gate, for each of LR, RF and HGB.
(b) Each data attack of issue 17 is blocked by a gate meant for it
    (`tests.realattacks.EXPECTED_GATES`), for each estimator: the data gates are
    estimator-independent and run once per table and attack; the model is trained only
    when an evaluate gate could be the one expected.

The reference is made by `init` itself from the whole table (target and PII flags
only), through the stage-function adapter of `benchmarks.gate_margins`, without
Prefect, MLflow or S3; `benchmarks.gate_margins` measures the same on more draws.

    REAL_RESAMPLES=10 .venv/bin/python -m pytest tests/unit/test_real_tables.py -q
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.gate_margins import (
    ATTACK_BASE_SEED,
    ATTACK_SEED,
    ESTIMATORS,
    Reference,
    build_reference,
    data_gates,
    model_gates,
    reading,
)
from tests.realattacks import EXPECTED_GATES, attacks_for
from tests.realtables import SPECS, load, subsample

RESAMPLES = int(os.environ.get("REAL_RESAMPLES", "3"))
ROWS = {"penguins": None, "mpg": None, "diamonds": 10_000, "hpc_data": None}  # diamonds: a sample
CLEAN_SEEDS = [2000 + i for i in range(RESAMPLES)]  # not the benchmark's 1000+ draws

Gates = list[Any]


class Bed:
    """References, frames and gate results, each computed once per module: the data
    gates do not depend on the estimator, and several tests read the same run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._refs: dict[tuple[str, bool], Reference] = {}
        self._data: dict[tuple[str, str], tuple[Gates, Any]] = {}
        self._model: dict[tuple[str, str, str], Gates] = {}

    def table(self, name: str) -> Any:
        return load(name, rows=ROWS[name])

    def reference(self, name: str, *, missing: bool = False) -> Reference:
        key = (name, missing)
        if key not in self._refs:
            spec = SPECS[name]
            self._refs[key] = build_reference(
                self.table(name),
                spec,
                self.root / f"{name}{'-missing' if missing else ''}",
                missing=dict(spec.missing_policy) if missing else None,
            )
        return self._refs[key]

    def frame(self, name: str, case: str) -> Any:
        """The clean resample "clean-<seed>" or the attack <case> on the attack base."""
        table = self.table(name)
        if case.startswith("clean-"):
            return subsample(table, int(case.removeprefix("clean-")))
        return attacks_for(SPECS[name])[case](subsample(table, ATTACK_BASE_SEED), ATTACK_SEED)

    def ref_for(self, name: str, case: str) -> Reference:
        missing = case == "class_missingness" and bool(SPECS[name].missing_policy)
        return self.reference(name, missing=missing)

    def data(self, name: str, case: str) -> tuple[Gates, Any]:
        if (name, case) not in self._data:
            seed = int(case.removeprefix("clean-")) if case.startswith("clean-") else ATTACK_SEED
            self._data[name, case] = data_gates(
                self.ref_for(name, case), self.frame(name, case), seed=seed
            )
        return self._data[name, case]

    def model(self, name: str, case: str, estimator: str) -> Gates:
        if (name, case, estimator) not in self._model:
            _, dataset = self.data(name, case)
            assert dataset is not None, "the PII guard blocked: no dataset to train on"
            self._model[name, case, estimator] = model_gates(
                self.ref_for(name, case), dataset, estimator
            )
        return self._model[name, case, estimator]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Bed:
    return Bed(tmp_path_factory.mktemp("real-tables"))


def _explain(results: Gates) -> list[str]:
    out = []
    for r in results:
        if not r.passed:
            m = reading(r)
            out.append(f"{r.name}: measured {m['measured']} vs {m['bound']}={m['threshold']}")
    return out


# Known gaps, measured: a clean resample that a gate still blocks. Strict: the test
# fails as soon as the gap closes, so the mark is removed then. None left: diamonds
# passes for every estimator with what init measured on it (its waiver for the
# adversarial drop, the probe's limit from its clean folds, the forest's leaves of 5).
CLEAN_GAPS: dict[tuple[str, str], str] = {}
CLEAN_CASES = [
    pytest.param(
        t,
        e,
        id=f"{t}-{e}",
        marks=[pytest.mark.xfail(strict=True, reason=CLEAN_GAPS[t, e])]
        if (t, e) in CLEAN_GAPS
        else [],
    )
    for t in ROWS
    for e in ESTIMATORS
]


@pytest.mark.parametrize(("table", "estimator"), CLEAN_CASES)
def test_clean_resamples_pass_every_gate(bed: Bed, table: str, estimator: str) -> None:
    blocked = []
    for seed in CLEAN_SEEDS:
        case = f"clean-{seed}"
        gates, _ = bed.data(table, case)
        gates = gates + bed.model(table, case, estimator)
        blocked += [f"seed {seed}: {line}" for line in _explain(gates)]
    assert not blocked, "\n".join(blocked)


def _measured_blocks(results: Gates) -> list[str]:
    """Gates that blocked on a measurement: a check that raised fails closed, which is
    right for a run but proves nothing about detecting the attack."""
    return [r.name for r in results if not r.passed and not r.detail.startswith("check raised")]


# Attacks of the size that the gates cannot yet tell from chance on this table
# (a 1.5% trigger on 344 rows is 5 rows; the screens need about 30 label-pure rows where
# the reference cell holds a few; see tasks/checks/relative.py). Not strict: a model
# may happen to learn one and the probe catch it.
SMALL = "below the minimum detectable size on a table of a few hundred rows"
ATTACK_GAPS = {
    **{
        ("penguins", a): SMALL
        for a in (
            "minority_relabel",
            "trigger_rare_category",
            "trigger_extreme_value",
            "unseen_category_random",
            "unseen_category_one_label",
            "narrow_band",
        )
    },
    **{("mpg", a): SMALL for a in attacks_for(SPECS["mpg"])},
    ("diamonds", "minority_relabel"): "30% of the 3% class of an 8k-row sample (72 rows) "
    "is not significant at alpha 0.001 (blocked on the 54k-row table)",
    ("hpc_data", "minority_relabel"): "30% of the 6% class of a 3,465-row resample (63 "
    "rows, share 0.060 -> 0.042): adjusted p 0.0026 against alpha 0.001",
}
CASES = [
    pytest.param(
        t,
        a,
        id=f"{t}-{a}",
        marks=[pytest.mark.xfail(strict=False, reason=ATTACK_GAPS[t, a])]
        if (t, a) in ATTACK_GAPS
        else [],
    )
    for t in ROWS
    for a in attacks_for(SPECS[t])
]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(("table", "attack"), CASES)
def test_attack_is_blocked_by_its_gate(bed: Bed, table: str, attack: str, estimator: str) -> None:
    expected = set(EXPECTED_GATES[attack])
    gates, _ = bed.data(table, attack)
    blocking = _measured_blocks(gates)
    if not expected & set(blocking) and any(g.startswith("evaluate.") for g in expected):
        # Only a trigger the model learned is the probe's to catch: train for it.
        model = bed.model(table, attack, estimator)
        gates = gates + model
        blocking += _measured_blocks(model)
    assert expected & set(blocking), (
        f"{attack} on {table} ({estimator}) not blocked by {sorted(expected)}; "
        f"blocked by {blocking or 'nothing'}; readings: "
        + "; ".join(f"{r.name}={reading(r)['measured']}" for r in gates if r.name in expected)
    )


def test_init_writes_what_each_table_needs(bed: Bed) -> None:
    """What makes diamonds pass is init's measurement, said in the config: a waiver
    for the adversarial drop (diamonds only: the small tables need none) and a probe
    limit from the clean folds that never leaves the safe range (with the reference
    models init trained, listed in the signed profile, the default holds)."""
    diamonds = bed.reference("diamonds").settings
    assert set(diamonds.waivers) == {"evaluate.adversarial"}
    reason = diamonds.waivers["evaluate.adversarial"]
    assert reason.startswith("written by init:") and "logistic_regression loses" in reason
    lr = diamonds.evaluate.for_estimator("logistic_regression")
    assert 0.3 <= lr.max_backdoor_flip <= 0.5 and lr.max_robust_drop > 0.5
    listed = bed.reference("diamonds").profile["reference_models"]
    assert sorted(listed) == sorted(ESTIMATORS)
    assert diamonds.model.params["random_forest"]["min_samples_leaf"] == 5
    for small in ("penguins", "mpg"):
        settings = bed.reference(small).settings
        assert settings.waivers == {}
        for est in ESTIMATORS:
            assert settings.evaluate.for_estimator(est).max_robust_drop <= 0.5
