"""Screen: guard personal data, then compare the data with its signed reference profile.

Two steps. `guard_pii` (``screen.pii``) runs right after ingestion: undeclared
PII-looking columns block; declared ones are dropped or pseudonymised before
validation, reports or models see them. `screen` runs after validation: the
profile's signature (``screen.profile_integrity``), then the poisoning screens,
each against the verified profile (see `tasks.checks.poisoning`): label_distribution,
label_noise, duplicates, near_duplicates, outliers, backdoor. Every check fails
closed, and all poisoning gates are reported together so one block shows them all.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.checks.pii import apply_pii, check_pii, pii_key, scan
from tasks.checks.poisoning import (
    NeighbourStats,
    check_backdoor,
    check_duplicates,
    check_label_distribution,
    check_label_noise,
    check_near_duplicates,
    check_outliers,
    label_shares,
    neighbour_stats,
)
from tasks.checks.profile import (
    MAX_PROFILE_BYTES,
    ProfileError,
    check_profile_integrity,
    signature_path,
    trusted_keys,
    verify_profile,
)
from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.files import read_capped
from tasks.common.gates import GateResult, run_check
from tasks.common.settings import ScreenConfig


def _read(path: Path) -> bytes | None:
    try:
        return read_capped(path, max_bytes=MAX_PROFILE_BYTES, follow_symlinks=True)
    except OSError:
        return None


def poisoning_gates(
    frame: pd.DataFrame, profile: dict[str, Any], *, limits: ScreenConfig, seed: int = 0
) -> list[GateResult]:
    """Every poisoning gate of the frame (PII already handled) against a verified profile.

    `seed` only matters above the profile's ``base_cap`` rows, where the neighbour
    statistics are sampled; the screen passes a fresh random seed so the sampled
    rows cannot be predicted by whoever prepared the data.
    """
    target = profile["target"]
    cache: dict[str, Any] = {}

    def content() -> pd.DataFrame:  # duplicates by content, not ids; KeyError fails closed
        if "content" not in cache:
            cache["content"] = frame[[*profile["features"], target]]
        return cache["content"]

    def nb() -> NeighbourStats:
        if "nb" not in cache:
            cache["nb"] = neighbour_stats(content(), profile, seed=seed)
        return cache["nb"]

    return [
        run_check(
            "screen.label_distribution",
            lambda: check_label_distribution(
                label_shares(frame[target]),
                profile["label_shares"],
                max_shift=limits.max_label_shift,
            ),
        ),
        run_check(
            "screen.label_noise",
            lambda: check_label_noise(nb(), profile, max_excess=limits.max_label_noise_excess),
        ),
        run_check(
            "screen.duplicates",
            lambda: check_duplicates(content(), max_rate=limits.max_duplicate_rate),
        ),
        run_check(
            "screen.near_duplicates",
            lambda: check_near_duplicates(nb(), profile, max_rate=limits.max_near_duplicate_rate),
        ),
        run_check(
            "screen.outliers",
            lambda: check_outliers(content(), profile, max_excess=limits.max_outlier_rate_excess),
        ),
        run_check(
            "screen.backdoor",
            lambda: check_backdoor(content(), profile, max_score=limits.max_backdoor_score),
        ),
    ]


def guard_pii(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Block undeclared personal data; drop or pseudonymise the declared columns.

    Runs right after ingestion, before validation, so that no later stage, report
    or Data Docs page ever holds a personal value.

    Raises:
        GateFailed: a column looks like PII (by name or by value) and is not declared.
    """
    s = ctx.settings
    ds, gates, frame = s.dataset, StageGates(ctx), dataset.frame
    handled: list[pd.DataFrame] = []

    def pii_gate() -> GateResult:
        result = check_pii(
            scan(frame), ds.pii, columns=[str(c) for c in frame.columns], target=dataset.target
        )
        if result.passed:
            needs_key = any(a == "pseudonymize" and c in frame.columns for c, a in ds.pii.items())
            key = pii_key(s.screen.pii_key_file, s.keys_dir) if needs_key else None
            handled.append(apply_pii(frame, ds.pii, key=key) if ds.pii else frame)
        return result

    gates.enforce(run_check("screen.pii", pii_gate))
    return dataclasses.replace(dataset, frame=handled[0]), gates.results


def screen(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Verify the reference profile, then screen the data for poisoning against it.

    Args:
        ctx: The run's context.
        dataset: The validated dataset (PII already handled by `guard_pii`).

    Returns:
        The dataset, and this stage's gate results.

    Raises:
        GateFailed: the profile is untrusted, or the data looks poisoned.
    """
    s = ctx.settings
    ds, gates = s.dataset, StageGates(ctx)
    raw, sig_raw = _read(ds.reference_profile), _read(signature_path(ds.reference_profile))
    try:
        keys, key_error = trusted_keys(s.keys_dir, ds.profile_signers), ""
    except ProfileError as exc:
        keys, key_error = None, str(exc)
    gates.enforce(
        run_check(
            "screen.profile_integrity",
            check_profile_integrity,
            raw,
            sig_raw,
            keys=keys,
            expected_sha256=ds.reference_profile_sha256,
            key_error=key_error,
        )
    )
    assert raw is not None and sig_raw is not None and keys is not None  # the gate passed
    profile, _ = verify_profile(raw, sig_raw, keys)
    gates.enforce(
        poisoning_gates(dataset.frame, profile, limits=s.screen, seed=secrets.randbelow(2**32))
    )
    return dataset, gates.results


@task(name="pii-guard", cache_policy=NO_CACHE, persist_result=False)  # cached = gates skipped
def pii_task(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Prefect task: block undeclared PII, handle declared PII (see `guard_pii`).

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The dataset with declared PII columns dropped or pseudonymised, and the gate results.
    """
    return guard_pii(ctx, dataset)


@task(name="screen", cache_policy=NO_CACHE, persist_result=False)  # cached = gates skipped
def screen_task(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Prefect task: screen the dataset for poisoning (see `screen`).

    Args:
        ctx: The run's context.
        dataset: The validated dataset.

    Returns:
        The dataset, and this stage's gate results.
    """
    return screen(ctx, dataset)
