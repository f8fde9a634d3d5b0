"""Screen: guard personal data, then compare the data with its signed reference profile.

Two steps. `guard_pii` (``screen.pii``) runs right after ingestion: undeclared
PII-looking columns block; declared ones are dropped or pseudonymised before
validation, reports or models see them. `screen` runs after validation: the
profile's signature, and that it describes the configured inputs
(``screen.profile_integrity``), then the poisoning screens, each against the
verified profile (numeric and categorical inputs, any label type): label_distribution,
missingness, category_shares, duplicates and backdoor compare counts with the
reference's, calibrated for both sample sizes (`tasks.checks.relative`); label_noise,
near_duplicates and outliers compare neighbour and robust-z statistics
(`tasks.checks.poisoning`). Every check fails closed, and all poisoning gates are
reported together so one block shows them all.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.checks.pii import apply_pii, check_pii, pii_key, scan
from tasks.checks.poisoning import (
    NeighbourStats,
    check_label_noise,
    check_near_duplicates,
    check_outliers,
    content_columns,
    neighbour_stats,
)
from tasks.checks.profile import (
    MAX_PROFILE_BYTES,
    ProfileError,
    check_profile_integrity,
    signature_path,
    trusted_keys,
)
from tasks.checks.relative import (
    Counts,
    check_backdoor,
    check_category_shares,
    check_duplicates,
    check_label_distribution,
    check_missingness,
)
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.files import read_capped
from tasks.common.gates import GateResult, run_check, run_check_with
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

    The screens read the profile's inputs and the label only (version 3: its numeric
    and categorical inputs; version 2: its numeric features), never ids or PII.
    `seed` only matters above the profile's ``base_cap`` rows, where the neighbour
    statistics are sampled; the screen passes a fresh random seed so the sampled
    rows cannot be predicted by whoever prepared the data.
    """
    cache: dict[str, Any] = {}

    def content() -> pd.DataFrame:  # duplicates by content, not ids; KeyError fails closed
        if "content" not in cache:
            cache["content"] = frame[content_columns(profile)]
        return cache["content"]

    def nb() -> NeighbourStats:
        if "nb" not in cache:
            cache["nb"] = neighbour_stats(content(), profile, seed=seed, keys=counts.keys)
        return cache["nb"]

    # Shared by the relative screens; its converted label and category columns also
    # by the neighbour statistics (each string column is converted once).
    counts = Counts(frame, profile, seed=seed)
    relative = {
        "alpha": limits.alpha,
        "min_relative": limits.min_relative_shift,
        "floor": limits.min_share_shift,
    }
    return [
        run_check(
            "screen.label_distribution",
            lambda: check_label_distribution(
                counts, profile, max_shift=limits.max_label_shift, **relative
            ),
        ),
        run_check(
            "screen.missingness",
            lambda: check_missingness(
                counts, profile, max_shift=limits.max_missing_shift, **relative
            ),
        ),
        run_check(
            "screen.category_shares",
            lambda: check_category_shares(
                counts, profile, max_shift=limits.max_category_shift, **relative
            ),
        ),
        run_check(
            "screen.label_noise",
            lambda: check_label_noise(
                nb(), profile, max_excess=limits.max_label_noise_excess, rows=len(frame)
            ),
        ),
        run_check(
            "screen.duplicates",
            lambda: check_duplicates(
                content(), profile, max_rate=limits.max_duplicate_rate, alpha=limits.alpha
            ),
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
            lambda: check_backdoor(
                counts,
                profile,
                max_score=limits.max_backdoor_score,
                alpha=limits.alpha,
                min_relative=limits.min_relative_shift,
            ),
        ),
    ]


def check_and_handle_pii(
    frame: pd.DataFrame, *, declared: Mapping[str, str], target: str, key: Callable[[], bytes]
) -> tuple[GateResult, pd.DataFrame]:
    """`screen.pii`: no undeclared PII-looking column; the declared ones dropped or
    pseudonymised (with `key`, read only when a column needs it). Returns the result
    and the handled frame (`run_check_with` hands it on only if the gate passed)."""
    result = check_pii(
        scan(frame), declared, columns=[str(c) for c in frame.columns], target=target
    )
    if not result.passed or not declared:
        return result, frame
    needs_key = any(a == "pseudonymize" and c in frame.columns for c, a in declared.items())
    return result, apply_pii(frame, declared, key=key() if needs_key else None)


def guard_pii(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Block undeclared personal data; drop or pseudonymise the declared columns.

    Runs right after ingestion, before validation, so that no later stage, report
    or Data Docs page ever holds a personal value.

    Raises:
        GateFailed: a column looks like PII (by name or by value) and is not declared.
    """
    s, gates = ctx.settings, StageGates(ctx)
    result, frame = run_check_with(
        "screen.pii",
        check_and_handle_pii,
        dataset.frame,
        declared=s.dataset.pii,
        target=dataset.target,
        key=lambda: pii_key(s.screen.pii_key_file, s.keys_dir),
    )
    handled = gates.enforce_with(result, frame)
    return dataclasses.replace(dataset, frame=handled), gates.results


def reference_profile(
    ctx: RunContext, columns: list[Any]
) -> tuple[GateResult, dict[str, Any] | None]:
    """``screen.profile_integrity`` and the verified profile (None unless it passed):
    signed by a trusted key, unchanged, pinned if pinned, and describing exactly the
    config's inputs for a table with these `columns`. The screen and the monitoring
    flow's drift check compare data with it."""
    s = ctx.settings
    ds = s.dataset
    raw, sig_raw = _read(ds.reference_profile), _read(signature_path(ds.reference_profile))
    try:
        # Trust roots pinned: the data steward signs the profile, never the trainer.
        keys = trusted_keys(s.keys_dir, ds.profile_signers, trainer=not s.trust.signers)
        key_error = ""
    except ProfileError as exc:
        keys, key_error = None, str(exc)
    return run_check_with(
        "screen.profile_integrity",
        check_profile_integrity,
        raw,
        sig_raw,
        keys=keys,
        expected_sha256=ds.reference_profile_sha256,
        key_error=key_error,
        inputs=ds.inputs([str(c) for c in columns]),
    )


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
    gates = StageGates(ctx)
    profile = gates.enforce_with(*reference_profile(ctx, list(dataset.frame.columns)))
    gates.enforce(
        poisoning_gates(dataset.frame, profile, limits=s.screen, seed=secrets.randbelow(2**32))
    )
    # The verified profile travels on: the backdoor probe reads its label counts.
    return dataclasses.replace(dataset, reference_profile=profile), gates.results


# The Prefect task is the pure function itself, with the options every stage needs.
pii_task = stage_task("pii-guard")(guard_pii)


screen_task = stage_task("screen")(screen)
