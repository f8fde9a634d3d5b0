"""Screen: compare the data with its trusted reference profile to catch poisoning.

Label flips move the class shares; duplicate floods (one of the cheapest ways to
weight a training set) raise the exact-duplicate rate. The reference profile is
hash-pinned in the config, like the suite, so it cannot be quietly re-baselined.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.gates import GateResult, check, failed, run_check
from tasks.ingest import read_capped

_PROFILE_MAX_BYTES = 16 * 1024 * 1024
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
PROFILE_VERSION = 1


def label_key(value: object) -> str:
    """JSON key of a class label; 1 and 1.0 are the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value.item() if hasattr(value, "item") else value)


def label_shares(labels: pd.Series) -> dict[str, float]:
    """Share of each class (missing labels count as their own class)."""
    counts = labels.map(label_key, na_action="ignore").fillna("<missing>").value_counts()
    return {str(k): float(v) / len(labels) for k, v in counts.items()}


def duplicate_rate(frame: pd.DataFrame) -> float:
    """Share of rows that exactly repeat an earlier row (all columns, label included)."""
    return float(frame.duplicated(keep="first").sum()) / len(frame) if len(frame) else 0.0


def build_profile(frame: pd.DataFrame, *, target: str) -> dict[str, Any]:
    """The reference profile of a trusted dataset: sizes, label shares, duplicates, features.

    Write it with ``json.dump(profile, fh, indent=2, sort_keys=True)`` and pin its sha256
    in ``dataset.reference_profile_sha256``.
    """
    features = [c for c in frame.columns if c != target]
    stats = {}
    for col in features:
        values = pd.to_numeric(frame[col], errors="raise").astype("float64")
        qs = values.quantile(list(QUANTILES))
        stats[col] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                      "quantiles": {f"q{round(q * 100):02d}": float(v) for q, v in qs.items()}}
    return {"version": PROFILE_VERSION, "rows": len(frame), "columns": list(frame.columns),
            "target": target, "label_shares": label_shares(frame[target]),
            "duplicate_rate": duplicate_rate(frame), "features": stats}


def check_profile_integrity(raw: bytes | None, *, expected: str) -> GateResult:
    """`screen.profile_integrity`: sha256 of the profile equals `reference_profile_sha256`."""
    name, threshold = "screen.profile_integrity", {"sha256": expected}
    if raw is None:
        return failed(name, metrics={"readable": False}, threshold=threshold,
                      detail="reference profile missing, unreadable or over 16 MiB; "
                             "check dataset.reference_profile")
    digest = hashlib.sha256(raw).hexdigest()
    ok = digest == expected
    return check(name, metrics={"sha256": digest, "matched": ok}, threshold=threshold, ok=ok,
                 detail="" if ok else "profile differs from its pin: review the change, then "
                                      "re-pin dataset.reference_profile_sha256 (sha256sum)")


def check_label_distribution(observed: dict[str, float], reference: dict[str, float], *,
                             max_shift: float) -> GateResult:
    """`screen.label_distribution`: max over classes of |share - reference share| <= max_shift.

    A class absent from the reference counts as a full shift (1.0): a new label
    value is never drift, it is a different dataset.
    """
    new = set(observed) - set(reference)
    shifts = [abs(observed.get(k, 0.0) - reference[k]) for k in reference]
    shift = 1.0 if new else max(shifts, default=1.0)
    metrics = {"max_shift": shift, "classes": len(observed), "reference_classes": len(reference),
               "unknown_classes": len(new)}
    ok = shift <= max_shift
    detail = ("" if ok else
              f"{len(new)} label value(s) absent from the reference; check the label column"
              if new else "class shares moved from the reference: possible label flipping; "
                          "inspect recent label changes before training")
    return check("screen.label_distribution", metrics=metrics, ok=ok, detail=detail,
                 threshold={"max_label_shift": max_shift})


def check_duplicates(frame: pd.DataFrame, *, max_rate: float) -> GateResult:
    """`screen.duplicates`: share of exact duplicate rows <= max_rate."""
    rate = duplicate_rate(frame)
    ok = rate <= max_rate
    return check("screen.duplicates", ok=ok,
                 metrics={"duplicate_rows": round(rate * len(frame)), "rows": len(frame),
                          "duplicate_rate": rate},
                 threshold={"max_duplicate_rate": max_rate},
                 detail="" if ok else "too many repeated rows: possible duplicate flooding; "
                                      "deduplicate the source or find where rows repeat")


def screen(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Check the reference profile's pin, then screen labels and duplicates against it.

    Args:
        ctx: The run's context.
        dataset: The validated dataset.

    Returns:
        The dataset (unchanged) and this stage's gate results.

    Raises:
        GateFailed: the profile was tampered with or the data looks poisoned.
    """
    ds, limits, gates = ctx.settings.dataset, ctx.settings.screen, StageGates(ctx)
    try:
        raw: bytes | None = read_capped(ds.reference_profile, max_bytes=_PROFILE_MAX_BYTES,
                                        follow_symlinks=True)
    except OSError:
        raw = None
    gates.enforce(run_check("screen.profile_integrity", check_profile_integrity, raw,
                            expected=ds.reference_profile_sha256))
    assert raw is not None  # the integrity gate passed
    frame = dataset.frame
    gates.enforce(
        run_check("screen.label_distribution",
                  lambda: check_label_distribution(label_shares(frame[dataset.target]),
                                                   json.loads(raw)["label_shares"],
                                                   max_shift=limits.max_label_shift)),
        run_check("screen.duplicates", check_duplicates, frame,
                  max_rate=limits.max_duplicate_rate),
    )
    return dataset, gates.results


@task(name="screen", cache_policy=NO_CACHE, persist_result=False)  # cached = gates skipped
def screen_task(ctx: RunContext, dataset: Dataset) -> tuple[Dataset, list[GateResult]]:
    """Prefect task: screen the dataset against its reference profile (see `screen`).

    Args:
        ctx: The run's context.
        dataset: The validated dataset.

    Returns:
        The dataset and this stage's gate results.
    """
    return screen(ctx, dataset)
