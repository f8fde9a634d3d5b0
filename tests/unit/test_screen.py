"""The screen stage end to end on the bundled data: gate order, PII handling, detection
of each attack, and the calibration of ingest -> validate -> screen on clean resamples.
Pure checks are tested in test_poisoning.py, test_pii.py and test_profile.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.common.context import Dataset, RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.ingest import ingest
from tasks.screen import guard_pii
from tasks.screen import screen as screen_poisoning
from tasks.trust import keys
from tasks.validate import validate
from tests.conftest import PROJECT_ROOT, as_dataset, variant

GATES = [
    "screen.pii",
    "screen.profile_integrity",
    "screen.label_distribution",
    "screen.missingness",
    "screen.category_shares",
    "screen.label_noise",
    "screen.duplicates",
    "screen.near_duplicates",
    "screen.outliers",
    "screen.backdoor",
]
# The measured value of each gate and the settings field it is compared with (the
# relative gates also need significance: a clean resample stays well inside the effect).
MEASURE = {
    "screen.label_distribution": ("max_shift", "max_label_shift"),
    "screen.missingness": ("shift", "max_missing_shift"),
    "screen.label_noise": ("excess", "max_label_noise_excess"),
    "screen.duplicates": ("duplicate_rate", "max_duplicate_rate"),
    "screen.near_duplicates": ("excess", "max_near_duplicate_rate"),
    "screen.outliers": ("excess", "max_outlier_rate_excess"),
    "screen.backdoor": ("score", "max_backdoor_score"),
}


def screen(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Both screen steps as the flow runs them: PII guard, then the poisoning screens."""
    guarded, first = guard_pii(ctx, dataset)
    try:
        screened, rest = screen_poisoning(ctx, guarded)
    except GateFailed as exc:
        raise GateFailed(first + exc.results) from None
    return screened, first + rest


def blocked(ctx: RunContext, frame: pd.DataFrame) -> tuple[GateResult, dict[str, GateResult]]:
    """The first failed gate, and every result of the stage by name."""
    with pytest.raises(GateFailed) as info:
        screen(ctx, as_dataset(frame))
    return info.value.gate, {r.name: r for r in info.value.results}


def flip_labels(
    frame: pd.DataFrame, *, share: float, seed: int, src: int = 1, dst: int = 0
) -> pd.DataFrame:
    """Flip `share` of all rows from class `src` to class `dst`."""
    rows = (
        frame.index[frame["target"] == src]
        .to_series()
        .sample(n=round(share * len(frame)), random_state=seed)
    )
    return frame.assign(target=frame["target"].where(~frame.index.isin(rows), dst))


def duplicate_flood(
    frame: pd.DataFrame, *, share: float, seed: int, jitter: float = 0.0
) -> pd.DataFrame:
    """Append copies of existing rows until `share` of the result are copies; `jitter`
    multiplies each feature by 1 + N(0, jitter) so exact deduplication misses them."""
    extra = round(share * len(frame) / (1 - share))
    copies = frame.sample(n=extra, replace=True, random_state=seed)
    if jitter:
        feats = [c for c in frame.columns if c != "target"]
        noise = np.random.default_rng(seed).normal(0.0, jitter, size=(extra, len(feats)))
        copies[feats] = copies[feats] * (1 + noise)
    return pd.concat([frame, copies], ignore_index=True).sample(frac=1, random_state=seed)


def backdoor(
    frame: pd.DataFrame,
    profile: dict[str, Any],
    *,
    feature: str,
    share: float,
    label: int,
    seed: int,
) -> pd.DataFrame:
    """Stamp a trigger on `share` of the rows: a value just beyond the reference's 99th
    percentile (inside the observed range, so the validation suite's bounds pass) and
    the attacker's label."""
    q = profile["features"][feature]["quantiles"]
    rows = frame.sample(frac=share, random_state=seed).index
    out = frame.copy()
    out.loc[rows, feature] = q["q99"] + 0.1 * (q["q100"] - q["q99"])
    out.loc[rows, "target"] = label
    return out


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return json.loads((PROJECT_ROOT / "data" / "breast_cancer.profile.json").read_text())


# --- the bundled data ------------------------------------------------------------------------


def test_bundled_data_passes(ctx: RunContext, bundled: pd.DataFrame) -> None:
    dataset, results = screen(ctx, as_dataset(bundled))
    assert [r.name for r in results] == GATES
    assert all(r.passed for r in results) and dataset.frame is bundled
    by = {r.name: r for r in results}
    assert by["screen.label_distribution"].metrics["max_shift"] < 1e-12
    for name, (metric, _) in MEASURE.items():
        assert by[name].metrics[metric] == pytest.approx(0.0, abs=1e-12), name


def test_missing_target_fails_closed(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g, every = blocked(ctx, bundled.drop(columns=["target"]))
    assert g.name == "screen.label_distribution" and "raised KeyError" in g.detail
    assert all(not every[n].passed for n in MEASURE)  # nothing passes without the label


# --- detection -------------------------------------------------------------------------------


def test_label_flip_blocked(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g, every = blocked(ctx, flip_labels(bundled, share=0.10, seed=0))
    assert g.name == "screen.label_distribution"
    assert g.metrics["max_shift"] == pytest.approx(0.10, abs=0.002)
    assert g.threshold["max_label_shift"] == 0.05 and "label flipping" in g.detail
    assert g.metrics["class"] == "1" and g.metrics["p_adjusted"] <= 0.001
    noise = every["screen.label_noise"]
    assert not noise.passed and noise.metrics["excess"] > 0.08


def test_balanced_label_flip_blocked_by_label_noise(ctx: RunContext, bundled: pd.DataFrame) -> None:
    both = flip_labels(flip_labels(bundled, share=0.05, seed=1), share=0.05, seed=1, src=0, dst=1)
    g, every = blocked(ctx, both)
    assert every["screen.label_distribution"].passed  # the class shares barely move
    assert g.name == "screen.label_noise" and g.metrics["excess"] > 0.05


def test_duplicate_flood_blocked(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g, every = blocked(ctx, duplicate_flood(bundled, share=0.40, seed=0))
    assert g.name == "screen.duplicates"
    assert g.metrics["duplicate_rate"] == pytest.approx(0.40, abs=0.01)
    assert g.threshold == {"max_duplicate_rate": 0.02, "alpha": 0.001}
    assert not every["screen.near_duplicates"].passed


def test_jittered_flood_blocked_by_near_duplicates(ctx: RunContext, bundled: pd.DataFrame) -> None:
    g, every = blocked(ctx, duplicate_flood(bundled, share=0.40, seed=0, jitter=1e-3))
    assert every["screen.duplicates"].passed
    assert g.name == "screen.near_duplicates" and g.metrics["excess"] > 0.5


@pytest.mark.parametrize(
    ("feature", "label"),
    [("mean texture", 1), ("worst symmetry", 1), ("radius error", 0), ("worst area", 1)],
)
def test_backdoor_trigger_blocked(
    ctx: RunContext, bundled: pd.DataFrame, profile: dict[str, Any], feature: str, label: int
) -> None:
    poisoned = backdoor(bundled, profile, feature=feature, share=0.06, label=label, seed=0)
    _, every = blocked(ctx, poisoned)
    g = every["screen.backdoor"]
    assert not g.passed and g.metrics["feature"] == feature
    assert g.metrics["part"] in ("bin 20 of 20", "above the reference range", "most repeated value")
    assert g.metrics["score"] > 0.04 and g.metrics["p_adjusted"] <= 0.001
    assert every["screen.label_distribution"].passed  # the relabelling alone goes unseen


# --- PII -------------------------------------------------------------------------------------


def emails(n: int) -> list[str]:
    return [f"patient{i}@example.org" for i in range(n)]


def ssns(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [
        f"{a:03d}-{g:02d}-{s:04d}"
        for a, g, s in zip(
            rng.integers(1, 600, n), rng.integers(1, 99, n), rng.integers(1, 9999, n), strict=True
        )
    ]


def no_values_leak(ctx: RunContext, results: list[GateResult], values: list[str]) -> None:
    text = "".join(r.model_dump_json() for r in results)
    text += ctx.settings.audit_path.read_text()
    assert not any(v in text for v in values)


@pytest.mark.parametrize(
    ("column", "make", "kind", "by"),
    [
        ("email", emails, "email", ["name", "value"]),
        ("ssn", ssns, "national_id", ["name", "value"]),
        ("customer_ref", ssns, "national_id", ["value"]),  # found by its values alone
    ],
)
def test_undeclared_pii_blocked(
    ctx: RunContext, bundled: pd.DataFrame, column: str, make: Any, kind: str, by: list[str]
) -> None:
    values = make(len(bundled))
    with pytest.raises(GateFailed) as info:
        screen(ctx, as_dataset(bundled.assign(**{column: values})))
    g = info.value.gate
    assert g.name == "screen.pii" and [r.name for r in info.value.results] == GATES[:1]
    assert g.metrics["undeclared"] == [column]
    assert g.metrics["flagged"] == [{"column": column, "kinds": [kind], "by": by}]
    no_values_leak(ctx, info.value.results, values)


def test_declared_email_pseudonymized(ctx: RunContext, bundled: pd.DataFrame) -> None:
    keys.create(ctx.settings.keys_dir)
    values = emails(len(bundled))
    declared = variant(ctx, pii={"email": "pseudonymize", "phone": "drop"})
    dataset, results = screen(declared, as_dataset(bundled.assign(email=values)))
    assert all(r.passed for r in results) and [r.name for r in results] == GATES
    pii = results[0].metrics
    assert pii["pseudonymized"] == ["email"] and pii["declared_missing"] == ["phone"]
    out = dataset.frame["email"]
    assert out.str.fullmatch(r"[0-9a-f]{64}").all() and out.nunique() == len(bundled)
    assert not set(out) & set(values)
    no_values_leak(ctx, results, values)
    key = ctx.settings.keys_dir / "pii-hmac.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again, _ = screen(declared, as_dataset(bundled.assign(email=values)))
    assert again.frame["email"].tolist() == out.tolist()  # same key, same pseudonyms


def test_declared_email_dropped(ctx: RunContext, bundled: pd.DataFrame) -> None:
    values = emails(len(bundled))
    dataset, results = screen(
        variant(ctx, pii={"email": "drop"}), as_dataset(bundled.assign(email=values))
    )
    assert all(r.passed for r in results) and "email" not in dataset.frame.columns
    assert list(dataset.frame.columns) == list(bundled.columns)
    assert not (ctx.settings.keys_dir / "pii-hmac.key").exists()  # no key needed
    no_values_leak(ctx, results, values)


def test_configured_pii_key_file_used(
    ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path
) -> None:
    keys.create(ctx.settings.keys_dir)
    key_file = tmp_path / "pii.key"
    key_file.write_bytes(b"k" * 32)
    key_file.chmod(0o600)
    s = ctx.settings
    keyed = RunContext(
        s.model_copy(
            update={
                "dataset": s.dataset.model_copy(update={"pii": {"email": "pseudonymize"}}),
                "screen": s.screen.model_copy(update={"pii_key_file": key_file}),
            }
        ),
        ctx.run_id,
    )
    frame = bundled.assign(email=emails(len(bundled)))
    a, _ = screen(keyed, as_dataset(frame))
    b, _ = screen(variant(ctx, pii={"email": "pseudonymize"}), as_dataset(frame))
    assert (a.frame["email"] != b.frame["email"]).all()  # another key, other pseudonyms
    key_file.chmod(0o644)
    with pytest.raises(GateFailed) as info:
        screen(keyed, as_dataset(frame))
    assert info.value.gate.name == "screen.pii" and "KeyFileError" in info.value.gate.detail


# --- calibration: clean resamples pass every gate of ingest, validate and screen -------------


@pytest.mark.parametrize("seed", range(20))
def test_clean_resamples_pass_every_gate(
    ctx: RunContext, bundled: pd.DataFrame, tmp_path: Path, seed: int
) -> None:
    sample = bundled.sample(frac=0.95, random_state=seed)  # without replacement, shuffled
    path = tmp_path / f"resample-{seed}.csv"
    sample.to_csv(path, index=False)
    ctx = variant(ctx, data_root=tmp_path)
    dataset, r1 = ingest(ctx, source=str(path))
    validated, r2 = validate(ctx, dataset)
    _, r3 = screen(ctx, validated.dataset)
    assert all(r.passed for r in r1 + r2 + r3)
    assert [r.name for r in r3] == GATES
    limits = ctx.settings.screen
    for r in r3:
        if r.name in MEASURE:
            metric, field = MEASURE[r.name]
            assert r.metrics[metric] < getattr(limits, field) / 2, r.summary()  # well inside
