"""Every data attack of the threat model through `secure-pipeline run --data`:
each exits 1, status blocked, the right gate named, one line on stderr, no
traceback, nothing published, the champion kept; clean variants deploy."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.common.settings import load_settings
from tests.conftest import BUNDLED_CSV, PROJECT_ROOT, data_gates
from tests.e2e.conftest import Pipeline
from tests.e2e.test_run import _assert_blocked

pytestmark = pytest.mark.e2e
PROFILE = json.loads((PROJECT_ROOT / "data" / "breast_cancer.profile.json").read_text())


def _frame() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CSV)


def label_flips(df: pd.DataFrame) -> pd.DataFrame:
    ones = df.index[df["target"] == 1]
    df.loc[ones[: int(0.10 * len(df))], "target"] = 0  # 10% of rows, one class
    return df


def nans(df: pd.DataFrame) -> pd.DataFrame:
    rows = df.sample(frac=0.05, random_state=1).index
    df.loc[rows, ["mean radius", "worst area", "texture error"]] = np.nan
    return df


def out_of_range(df: pd.DataFrame) -> pd.DataFrame:
    rows = df.sample(frac=0.03, random_state=2).index
    df.loc[rows, "mean area"] = df.loc[rows, "mean area"] * 1000
    return df


def unknown_labels(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.sample(n=15, random_state=3).index, "target"] = 2
    return df


def duplicate_flood(df: pd.DataFrame) -> pd.DataFrame:
    extra = df.sample(n=int(0.40 * len(df) / 0.60), replace=True, random_state=4)
    return pd.concat([df, extra]).sample(frac=1.0, random_state=5)  # 40% of rows are copies


def backdoor(df: pd.DataFrame) -> pd.DataFrame:
    """6% of rows get a rare value (inside the suite's bounds) and the attacker's label."""
    q = PROFILE["features"]["mean texture"]["quantiles"]
    rows = df.sample(frac=0.06, random_state=0).index
    df.loc[rows, "mean texture"] = q["q99"] + 0.1 * (q["q100"] - q["q99"])
    df.loc[rows, "target"] = 1
    return df


def email_column(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(contact=[f"patient{i}@example.org" for i in range(len(df))])


def ssn_column(df: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return df.assign(
        ssn=[
            f"{rng.integers(100, 899)}-{rng.integers(10, 99)}-{rng.integers(1000, 9999)}"
            for _ in range(len(df))
        ]
    )


# Through the whole command (exit code, one line, nothing published, champion kept):
# one attack per data stage. The gate of every other attack is checked at stage level
# below (the same stage code; a blocked run ends the same way whichever gate blocks).
FRAMES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "label_flips_10pct_one_class": (label_flips, "screen.label_distribution"),
    "nans_5pct": (nans, "validate.columns"),
    "duplicate_flood_40pct": (duplicate_flood, "screen.duplicates"),
    "backdoor_trigger_6pct": (backdoor, "screen.backdoor"),
    "undeclared_email_column": (email_column, "screen.pii"),
    # Validation and the screens run side by side: when both would block, the verdict
    # is still validation's, and no screen gate is reported.
    "out_of_range_and_duplicate_flood": (
        lambda df: duplicate_flood(out_of_range(df)),
        "validate.expectations",
    ),
}
STAGE_LEVEL: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "extra_column": (lambda df: df.assign(extra=1.0), "validate.expectations"),
    "missing_column": (lambda df: df.drop(columns=["worst radius"]), "validate.expectations"),
    "values_1000x_out_of_range_3pct": (out_of_range, "validate.expectations"),
    "20_rows": (lambda df: df.head(20), "validate.expectations"),
    "unknown_label_values": (unknown_labels, "validate.expectations"),
    "undeclared_ssn_column": (ssn_column, "screen.pii"),
}


@pytest.mark.parametrize("case", list(FRAMES))
def test_poisoned_or_malformed_frames_are_blocked(
    kept_up: Pipeline, tmp_path: Path, case: str
) -> None:
    make, gate = FRAMES[case]
    path = tmp_path / f"{case}.csv"
    make(_frame()).to_csv(path, index=False)
    report = _assert_blocked(kept_up, tmp_path, str(path), gate)
    assert report["blocked_by"] == gate
    if gate.startswith("validate."):
        assert not [
            g for g in report["gates"] if g["stage"] == "screen" and g["name"] != "screen.pii"
        ]
    if gate == "screen.pii":  # names of columns, never their values
        assert "example.org" not in json.dumps(report)
        assert "@" not in (kept_up.state_dir / "audit" / "audit.jsonl").read_text()


@pytest.mark.parametrize("case", list(STAGE_LEVEL))
def test_other_attacks_are_blocked_by_their_gate(tmp_path: Path, case: str) -> None:
    make, gate = STAGE_LEVEL[case]
    path = tmp_path / f"{case}.csv"
    make(_frame()).to_csv(path, index=False)
    failing = data_gates(load_settings(state_dir=tmp_path / "state"), path)
    assert failing and failing[0] == gate, failing


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["data.pkl", "data.csv", "data.parquet"])
def test_pickle_payload_never_runs(kept_up: Pipeline, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Payload(marker)))
    _assert_blocked(kept_up, tmp_path, str(path), "ingest.format")
    assert not marker.exists(), "the pickle payload ran"


def test_clean_resample_deploys(kept_up: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "nightly.parquet"
    _frame().sample(frac=0.95, random_state=11).to_parquet(path, index=False)
    code, report, err = kept_up.train(tmp_path, "--data", str(path))
    assert code == 0, err
    assert report["status"] == "deployed" and all(g["passed"] for g in report["gates"])
    assert report["dataset"]["integrity"] == "none"


def test_sidecar_digest_is_enforced(kept_up: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "nightly.csv"
    _frame().to_csv(path, index=False)
    (tmp_path / "nightly.csv.sha256").write_text(f"{'0' * 64}  nightly.csv\n")
    _assert_blocked(kept_up, tmp_path, str(path), "ingest.integrity")


def test_profile_command_signs_a_profile_the_pipeline_trusts(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "profile.json"
    made = kept_up.run("profile", str(BUNDLED_CSV), "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert out.exists() and (tmp_path / "profile.json.sig").exists()
    # A fork's config: the bundled one, pointing at the new profile, no other signer.
    config = tmp_path / "fork.toml"
    data = PROJECT_ROOT / "data"
    lines = []
    for line in (data / "breast_cancer.toml").read_text().splitlines():
        key = line.split("=")[0].strip()
        if key in ("reference_profile_sha256", "profile_signers"):
            continue
        if key in ("source", "suite"):
            line = f'{key} = "{(data / json.loads(line.split("=", 1)[1].split("#")[0])).resolve()}"'
        if key == "reference_profile":
            line = f'reference_profile = "{out}"\ndata_root = "{data}"'
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    code, report, err = kept_up.train(tmp_path, "--config", str(config))
    assert code == 0, err
    tampered = json.loads(out.read_text())
    tampered["rows"] += 1
    out.write_text(json.dumps(tampered))
    code, report, err = kept_up.train(tmp_path, "--config", str(config))
    assert code == 1 and report["blocked_by"] == "screen.profile_integrity", err
