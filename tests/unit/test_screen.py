"""Screen gates (profile pin, label shift, duplicates) and the calibration of the
ingest -> validate -> screen chain on clean resamples and on poisoned data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.common.context import Dataset, RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.ingest import ingest
from tasks.screen import (
    build_profile,
    check_duplicates,
    check_label_distribution,
    check_profile_integrity,
    label_shares,
    screen,
)
from tasks.validate import validate
from tests.conftest import BUNDLED_CSV


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CSV)


def as_dataset(frame: pd.DataFrame) -> Dataset:
    return Dataset(frame=frame, uri="memory", sha256="0" * 64, format="csv",
                   integrity="none", target="target")


def variant(ctx: RunContext, **dataset: Any) -> RunContext:
    s = ctx.settings
    return RunContext(s.model_copy(update={"dataset": s.dataset.model_copy(update=dataset)}),
                      ctx.run_id)


def blocked(ctx: RunContext, frame: pd.DataFrame) -> GateResult:
    with pytest.raises(GateFailed) as info:
        screen(ctx, as_dataset(frame))
    return info.value.gate


def flip_labels(frame: pd.DataFrame, *, share: float, seed: int) -> pd.DataFrame:
    """Flip `share` of all rows from class 1 to class 0."""
    ones = frame.index[frame["target"] == 1].to_series().sample(n=round(share * len(frame)),
                                                                random_state=seed)
    return frame.assign(target=frame["target"].where(~frame.index.isin(ones), 0))


def duplicate_flood(frame: pd.DataFrame, *, share: float, seed: int) -> pd.DataFrame:
    """Append copies of existing rows until `share` of the result are duplicates."""
    extra = round(share * len(frame) / (1 - share))
    copies = frame.sample(n=extra, replace=True, random_state=seed)
    return pd.concat([frame, copies], ignore_index=True).sample(frac=1, random_state=seed)


# --- the bundled profile ---------------------------------------------------------------------

def test_bundled_profile_is_what_build_profile_writes(ctx: RunContext,
                                                      bundled: pd.DataFrame) -> None:
    text = json.dumps(build_profile(bundled, target="target"), indent=2, sort_keys=True) + "\n"
    assert text == ctx.settings.dataset.reference_profile.read_text()
    profile = json.loads(text)
    assert profile["rows"] == 569 and len(profile["features"]) == 30
    assert set(profile["label_shares"]) == {"0", "1"} and profile["duplicate_rate"] == 0.0
    assert set(profile["features"]["mean radius"]) == {"mean", "std", "quantiles"}


def test_build_profile_tiny() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 3.0], "target": [0, 1, 1, 1]})
    profile = build_profile(frame, target="target")
    assert profile["label_shares"] == {"0": 0.25, "1": 0.75}
    assert profile["features"]["x"]["quantiles"]["q00"] == 1.0
    assert profile["features"]["x"]["quantiles"]["q100"] == 3.0
    assert profile["duplicate_rate"] == 0.25 and profile["columns"] == ["x", "target"]


def test_label_keys_are_type_independent() -> None:
    assert label_shares(pd.Series([1.0, 0.0])) == label_shares(pd.Series([1, 0]))


# --- screen.profile_integrity --------------------------------------------------------------

def test_bundled_data_passes(ctx: RunContext, bundled: pd.DataFrame) -> None:
    dataset, results = screen(ctx, as_dataset(bundled))
    assert [r.name for r in results] == ["screen.profile_integrity",
                                         "screen.label_distribution", "screen.duplicates"]
    assert all(r.passed for r in results) and dataset.frame is bundled
    assert results[1].metrics["max_shift"] < 1e-12
    assert results[2].metrics["duplicate_rate"] == 0.0


def test_tampered_profile_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    profile = json.loads(ctx.settings.dataset.reference_profile.read_text())
    profile["label_shares"] = {"0": 0.5, "1": 0.5}  # re-baselined to hide a flip
    copy = tmp_path / "profile.json"
    copy.write_text(json.dumps(profile))
    g = blocked(variant(ctx, reference_profile=copy), bundled)
    assert g.name == "screen.profile_integrity" and g.metrics["matched"] is False


def test_missing_profile_blocked(ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path) -> None:
    g = blocked(variant(ctx, reference_profile=tmp_path / "absent.json"), bundled)
    assert g.name == "screen.profile_integrity" and g.metrics["readable"] is False


def test_check_profile_integrity_pure() -> None:
    assert check_profile_integrity(b"p", expected=hashlib.sha256(b"p").hexdigest()).passed
    assert not check_profile_integrity(b"q", expected=hashlib.sha256(b"p").hexdigest()).passed


# --- screen.label_distribution -------------------------------------------------------------

def test_label_flip_blocked(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = blocked(ctx, flip_labels(bundled, share=0.10, seed=0))
    assert g.name == "screen.label_distribution"
    assert g.metrics["max_shift"] == pytest.approx(0.10, abs=0.002)
    assert g.threshold == {"max_label_shift": 0.05} and "label flipping" in g.detail


def test_label_distribution_pure() -> None:
    ref = {"0": 0.4, "1": 0.6}
    assert check_label_distribution({"0": 0.42, "1": 0.58}, ref, max_shift=0.05).passed
    assert not check_label_distribution({"0": 0.5, "1": 0.5}, ref, max_shift=0.05).passed
    new = check_label_distribution({"0": 0.4, "1": 0.59, "2": 0.01}, ref, max_shift=0.05)
    assert not new.passed and new.metrics["max_shift"] == 1.0
    assert new.metrics["unknown_classes"] == 1
    gone = check_label_distribution({"1": 1.0}, ref, max_shift=0.05)
    assert not gone.passed and gone.metrics["max_shift"] == pytest.approx(0.4)


def test_missing_target_fails_closed(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = blocked(ctx, bundled.drop(columns=["target"]))
    assert g.name == "screen.label_distribution" and "raised KeyError" in g.detail


# --- screen.duplicates ---------------------------------------------------------------------

def test_duplicate_flood_blocked(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g = blocked(ctx, duplicate_flood(bundled, share=0.40, seed=0))
    assert g.name == "screen.duplicates"
    assert g.metrics["duplicate_rate"] == pytest.approx(0.40, abs=0.01)
    assert g.threshold == {"max_duplicate_rate": 0.02}


def test_duplicates_pure() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 1.0], "target": [0, 1, 1, 0]})
    g = check_duplicates(frame, max_rate=0.25)
    assert g.passed and g.metrics == {"duplicate_rows": 1, "rows": 4, "duplicate_rate": 0.25}
    assert not check_duplicates(frame, max_rate=0.2).passed
    relabelled = frame.assign(target=[0, 1, 1, 1])  # same features, other label: not exact
    assert check_duplicates(relabelled, max_rate=0.0).passed


# --- calibration: clean resamples pass every gate of ingest, validate and screen -------------

@pytest.mark.parametrize("seed", range(20))
def test_clean_resamples_pass_every_gate(ctx: RunContext, bundled: pd.DataFrame,
                                         tmp_path: Path, seed: int) -> None:
    sample = bundled.sample(frac=0.95, random_state=seed)  # without replacement, shuffled
    path = tmp_path / f"resample-{seed}.csv"
    sample.to_csv(path, index=False)
    dataset, r1 = ingest(ctx, source=str(path))
    validated, r2 = validate(ctx, dataset)
    _, r3 = screen(ctx, validated.dataset)
    assert all(r.passed for r in r1 + r2 + r3)
    shift = next(r for r in r3 if r.name == "screen.label_distribution").metrics["max_shift"]
    assert shift < ctx.settings.screen.max_label_shift / 2  # well inside the threshold
