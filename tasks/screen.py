"""Screen: guard personal data, then compare the data with its signed reference profile.

Order: the profile's signature (``screen.profile_integrity``), the PII guard
(``screen.pii``: undeclared PII-looking columns block; declared ones are dropped
or pseudonymised before anything else sees them), then the poisoning screens,
each against the verified profile (see `tasks.poisoning`): label_distribution,
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

from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.gates import GateResult, run_check
from tasks.common.settings import ScreenConfig
from tasks.ingest import read_capped
from tasks.pii import apply_pii, check_pii, pii_key, scan
from tasks.poisoning import (
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
from tasks.profile import (
    MAX_PROFILE_BYTES,
    ProfileError,
    check_profile_integrity,
    signature_path,
    trusted_keys,
    verify_profile,
)


def _read(path: Path) -> bytes | None:
    try:
        return read_capped(path, max_bytes=MAX_PROFILE_BYTES, follow_symlinks=True)
    except OSError:
        return None


def poisoning_gates(frame: pd.DataFrame, profile: dict[str, Any], *, limits: ScreenConfig,
                    seed: int = 0) -> list[GateResult]:
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
        run_check("screen.label_distribution",
                  lambda: check_label_distribution(label_shares(frame[target]),
                                                   profile["label_shares"],
                                                   max_shift=limits.max_label_shift)),
        run_check("screen.label_noise", lambda: check_label_noise(
            nb(), profile, max_excess=limits.max_label_noise_excess)),
        run_check("screen.duplicates", lambda: check_duplicates(
            content(), max_rate=limits.max_duplicate_rate)),
        run_check("screen.near_duplicates", lambda: check_near_duplicates(
            nb(), profile, max_rate=limits.max_near_duplicate_rate)),
        run_check("screen.outliers", lambda: check_outliers(
            content(), profile, max_excess=limits.max_outlier_rate_excess)),
        run_check("screen.backdoor", lambda: check_backdoor(
            content(), profile, max_score=limits.max_backdoor_score)),
    ]


def screen(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Verify the profile, guard PII, then screen for poisoning.

    Args:
        ctx: The run's context.
        dataset: The validated dataset.

    Returns:
        The dataset with declared PII columns dropped or pseudonymised, and this
        stage's gate results.

    Raises:
        GateFailed: the profile is untrusted, undeclared PII was found, or the
            data looks poisoned.
    """
    s = ctx.settings
    ds, limits, gates = s.dataset, s.screen, StageGates(ctx)
    raw, sig_raw = _read(ds.reference_profile), _read(signature_path(ds.reference_profile))
    try:
        keys, key_error = trusted_keys(s.keys_dir, ds.profile_signers), ""
    except ProfileError as exc:
        keys, key_error = None, str(exc)
    gates.enforce(run_check("screen.profile_integrity", check_profile_integrity, raw, sig_raw,
                            keys=keys, expected_sha256=ds.reference_profile_sha256,
                            key_error=key_error))
    assert raw is not None and sig_raw is not None and keys is not None  # the gate passed
    profile, _ = verify_profile(raw, sig_raw, keys)

    frame = dataset.frame
    handled: list[pd.DataFrame] = []

    def pii_gate() -> GateResult:
        result = check_pii(scan(frame), ds.pii, columns=[str(c) for c in frame.columns],
                           target=dataset.target)
        if result.passed:
            needs_key = any(a == "pseudonymize" and c in frame.columns for c, a in ds.pii.items())
            key = pii_key(limits.pii_key_file, s.keys_dir) if needs_key else None
            handled.append(apply_pii(frame, ds.pii, key=key) if ds.pii else frame)
        return result

    gates.enforce(run_check("screen.pii", pii_gate))
    clean = handled[0]
    gates.enforce(poisoning_gates(clean, profile, limits=limits,
                                  seed=secrets.randbelow(2**32)))
    return dataclasses.replace(dataset, frame=clean), gates.results


@task(name="screen", cache_policy=NO_CACHE, persist_result=False)  # cached = gates skipped
def screen_task(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Prefect task: guard PII and screen the dataset for poisoning (see `screen`).

    Args:
        ctx: The run's context.
        dataset: The validated dataset.

    Returns:
        The dataset with PII handled, and this stage's gate results.
    """
    return screen(ctx, dataset)
