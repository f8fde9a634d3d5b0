"""`secure-pipeline init` on a team table (numeric and categorical columns, missing
values, string labels, an id and an email), and the data gates of the config it
writes: clean resamples pass, each data attack is blocked by the gate meant for it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.common.settings import Settings, load_settings
from tasks.onboarding import infer_columns
from tests.conftest import data_gates
from tests.mixed_table import CATEGORICAL, MISSING, NUMERIC, mixed_table

CLI = str(Path(sys.executable).parent / "secure-pipeline")


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {"SECURE_PIPELINE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A trusted table, `init` run on it through the real command; its settings."""
    root = tmp_path_factory.mktemp("onboard")
    mixed_table(2000).to_csv(root / "customers.csv", index=False)
    state = root / "state"
    out = cli(
        "init",
        str(root / "customers.csv"),
        "--target",
        "segment",
        "--pii",
        "email=pseudonymize",
        state=state,
    )
    assert out.returncode == 0, out.stderr
    config = root / "customers.toml"
    assert out.stdout.strip() == f"secure-pipeline run --config {config}"
    return load_settings(config, state_dir=state), root


def test_init_infers_the_roles_and_pins_the_files(onboarded) -> None:
    settings, root = onboarded
    ds = settings.dataset
    assert ds.numeric == NUMERIC and ds.categorical == CATEGORICAL
    assert ds.ignored == ["customer_id"] and ds.pii == {"email": "pseudonymize"}
    assert ds.missing == {c: ("median" if c in NUMERIC else "most_frequent") for c in MISSING}
    assert (root / "customers.profile.json.sig").is_file()
    text = (root / "customers.toml").read_text()
    assert "looks like an id" in text  # why a column was left out, for the reviewer
    assert settings.model.estimator == "logistic_regression"


def test_init_refuses_undeclared_pii_naming_column_and_flag(tmp_path: Path) -> None:
    mixed_table(300).to_csv(tmp_path / "t.csv", index=False)
    out = cli("init", str(tmp_path / "t.csv"), "--target", "segment", state=tmp_path / "s")
    assert out.returncode == 2, out.stderr
    assert "email" in out.stderr and "--pii email=drop" in out.stderr
    assert "Traceback" not in out.stderr and not list(tmp_path.glob("*.toml"))


def test_inference_rules() -> None:
    frame = pd.DataFrame(
        {
            "id": range(100),
            "note": [f"free text {i}" for i in range(100)],
            "gone": [np.nan] * 100,
            "flag": [True, False] * 50,
            "status_code": [1, 2, 3, 4] * 25,
            "count": [i % 7 for i in range(100)],
            "y": ["a", "b"] * 50,
        }
    )
    roles = infer_columns(frame, target="y", pii={})
    assert roles.numeric == ["count"] and roles.categorical == ["flag", "status_code"]
    assert set(roles.ignored) == {"id", "note", "gone"} and roles.missing == {}


def test_dates_free_text_and_ids_are_recognised_by_content() -> None:
    """A date column with three values, a comment column, a string id: none is an input,
    and the config says what was measured (no value of the table)."""
    rng = np.random.default_rng(0)
    words = np.array(["late", "good", "price", "again", "never", "item", "ok", "box"])
    frame = pd.DataFrame(
        {
            "month": ["2013-04-01", "2013-05-01", "2013-06-01"] * 100,  # few values, yet dates
            "seen_at": pd.date_range("2013-04-01", periods=300, freq="h").strftime(
                "%Y-%m-%dT%H:%M:%S"
            ),
            "opened": pd.date_range("2013-04-01", periods=300).strftime("%d/%m/%Y"),
            "comment": [" ".join(rng.choice(words, size=rng.integers(4, 12))) for _ in range(300)],
            "sku": [f"SKU-{i:05d}" for i in range(300)],
            "city": rng.choice(["New York", "Paris", "Rome"], 300),  # two words: a category
            "store_type": rng.choice([1, 2, 3], 300),
            "year": rng.choice([2007, 2008, 2009], 300),  # few integers: still a measure
            "y": rng.choice(["a", "b"], 300),
        }
    )
    roles = infer_columns(frame, target="y", pii={})
    assert roles.categorical == ["city", "store_type"] and roles.numeric == ["year"]
    why = roles.ignored
    assert why["month"] == "parses as ISO dates in 100% of rows"
    assert why["seen_at"] == "parses as ISO timestamps in 100% of rows"
    assert why["opened"] == "parses as dates in 100% of rows"
    assert why["comment"].startswith("free text: median ") and "words, " in why["comment"]
    assert why["sku"] == "a distinct value in each of 300 rows: looks like an id"
    assert not any("SKU" in r or "2013" in r or "late" in r for r in why.values())


def test_text_that_is_mostly_not_dates_stays_a_category() -> None:
    """Below 90% of values parsing as dates, a column is not a date column."""
    values = ["2013-04-01"] * 20 + ["unknown", "pending", "n/a"] * 60  # 10% dates
    roles = infer_columns(pd.DataFrame({"when": values, "y": [0, 1] * 100}), target="y", pii={})
    assert roles.categorical == ["when"] and roles.ignored == {}


def _flip_within_one_class(f: pd.DataFrame) -> pd.DataFrame:
    low = f.index[f["segment"] == "low"]
    f.loc[low[: int(0.10 * len(f))], "segment"] = "medium"
    return f


def _unseen_category_surge(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.sample(frac=0.3, random_state=1).index, "region"] = "atlantis"
    return f


def _missing_surge(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.sample(frac=0.3, random_state=2).index, "income"] = np.nan
    return f


def _missing_where_refused(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.sample(n=5, random_state=3).index, "tenure"] = np.nan
    return f


def _backdoor(f: pd.DataFrame) -> pd.DataFrame:
    """6% of rows: a rare `tenure` (inside the suite's bounds) and the attacker's label."""
    hi, top = f["tenure"].quantile(0.99), f["tenure"].max()
    rows = f.sample(frac=0.06, random_state=4).index
    f.loc[rows, "tenure"] = hi + 0.1 * (top - hi)
    f.loc[rows, "segment"] = "low"
    return f


def _undeclared_pii(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(contact=[f"client{i}@example.org" for i in range(len(f))])


def _undeclared_column(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(score=np.arange(len(f)) % 5)


ATTACKS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], set[str]]] = {
    "label_flips_10pct_one_class": (
        _flip_within_one_class,
        {"screen.label_distribution", "screen.label_noise"},
    ),
    "undeclared_pii_column": (_undeclared_pii, {"screen.pii"}),
    "unseen_category_surge": (_unseen_category_surge, {"validate.expectations"}),
    "missing_value_surge": (_missing_surge, {"validate.expectations"}),
    "missing_where_refused": (_missing_where_refused, {"validate.columns"}),
    "undeclared_column": (_undeclared_column, {"validate.columns"}),
    "backdoor_trigger_numeric": (_backdoor, {"screen.backdoor"}),
}


@pytest.mark.parametrize("case", list(ATTACKS))
def test_data_attacks_on_a_team_table_are_blocked_by_their_gate(onboarded, tmp_path, case):
    settings, _ = onboarded
    make, expected = ATTACKS[case]
    path = tmp_path / f"{case}.csv"
    make(mixed_table(2000, seed=7)).to_csv(path, index=False)
    failing = data_gates(settings, path)
    assert failing and failing[0] in expected, failing


def test_clean_resamples_pass_the_data_gates(onboarded, tmp_path):
    settings, _ = onboarded
    for seed in (11, 12, 13):
        path = tmp_path / f"clean-{seed}.csv"
        mixed_table(2000, seed=seed).to_csv(path, index=False)
        assert data_gates(settings, path) == [], seed
