"""The monitoring flow's stages and their gates (`flows.monitoring` composes them).

* ``monitor.integrity``: the champion named by the signed champion record (and the
  MLflow alias beside it) verifies as ``secure-pipeline verify models:/NAME@champion``
  checks it: signatures, digests, encryption context, approvals, and the version
  history of every release object (an object replaced, deleted or superseded fails).
  The verified model is loaded (safely, from the verified bytes) for the quality check.
* ``monitor.audit``: the audit chain, its anchors in the object-locked bucket, the
  releases' version histories and the bucket policy, as ``audit verify``.
* ``monitor.drift``: every column of the batch against the signed reference profile
  (`tasks.monitoring.drift`: calibrated for the batch's size).
* ``monitor.quality``: the champion on the batch (`tasks.monitoring.quality`).

Each stage audits and logs its gates like every stage (`StageGates`) but does not stop
the run at a failure: monitoring reports everything it can see, and the flow raises the
verdict at the end. Every check runs under `run_check`: a check that raises is a failed
gate, never a pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.common.context import RunContext, StageGates
from tasks.common.errors import PipelineError
from tasks.common.gates import GateFailed, GateResult, check, failed, run_check
from tasks.common.settings import Settings


@dataclass
class Watched:
    """What the stages saw, for the flow's page, report and MLflow record."""

    champion: dict[str, Any] = field(default_factory=dict)
    pipeline: Any = None  # the champion's verified model, loaded
    drift: Any = None  # tasks.monitoring.types.DriftReport
    quality: Any = None  # tasks.monitoring.types.QualityReport
    page: Path | None = None  # the run's HTML page, once written


def record(ctx: RunContext, *results: GateResult) -> list[GateResult]:
    """Audit and log `results` as every stage does, without stopping at a failure."""
    gates = StageGates(ctx)
    with contextlib.suppress(GateFailed):
        gates.enforce(list(results))
    return gates.results


# -- monitor.integrity --------------------------------------------------------------


def check_integrity(settings: Settings, endpoint: Any, workdir: Path, seen: Watched) -> GateResult:
    """``monitor.integrity`` (see the module); fills ``seen.champion`` and
    ``seen.pipeline`` when the champion verifies."""
    from tasks.common.tracking import CHAMPION
    from tasks.trust import release
    from tasks.trust.consumer import verify_reference
    from tasks.trust.modelio import load_model_bytes

    name = settings.model.name
    ref = f"models:/{name}@{CHAMPION}"
    threshold = {"champion": ref, "failed_checks": 0}
    if not settings.trust.signers and not settings.keys_dir.is_dir():
        return failed(
            "monitor.integrity",
            threshold=threshold,
            detail=f"no champion: nothing was ever deployed from {settings.state_dir} (no "
            "keys); run `secure-pipeline run` first, or pin the trainer's key in [trust] signers",
        )
    try:
        result = verify_reference(settings, ref, workdir, endpoint=endpoint).result
    except PipelineError as exc:  # an unusable trust root or reference: said, fails closed
        return failed("monitor.integrity", threshold=threshold, detail=f"{ref}: {exc}")
    metrics = {
        "checks": len(result.checks),
        "failed_checks": sum(not ok for _, ok, _ in result.checks),
    }
    if not result.ok:
        first = result.failure
        none_yet = any(w in first for w in ("no champion", "no signed champion record"))
        hint = (
            "no champion has been deployed yet: run `secure-pipeline run` first"
            if none_yet
            else "find who changed it (`secure-pipeline audit verify`), then roll back "
            "(`secure-pipeline rollback`) or redeploy"
        )
        return failed(
            "monitor.integrity",
            metrics=metrics,
            threshold=threshold,
            detail=f"{ref} does not verify ({first}); {hint}",
        )
    model = result.model
    version = str(model.get("version"))
    seen.champion = {"name": name, "version": version, "uri": result.uri}
    body = (workdir / release.MODEL).read_bytes()
    seen.pipeline = load_model_bytes(body, expected_sha256=model["sha256"])
    return check(
        "monitor.integrity",
        metrics=metrics,
        threshold=threshold,
        ok=True,
        detail=f"models:/{name}/{version} ({result.uri}): {len(result.checks)} checks pass",
    )


def integrity(ctx: RunContext, endpoint: Any, workdir: Path, seen: Watched) -> list[GateResult]:
    result = run_check("monitor.integrity", check_integrity, ctx.settings, endpoint, workdir, seen)
    if not result.passed:
        seen.champion, seen.pipeline = {}, None  # only a verified champion is measured
    return record(ctx, result)


# -- monitor.audit ------------------------------------------------------------------


def check_audit(settings: Settings, endpoint: Any) -> GateResult:
    """``monitor.audit`` (see the module)."""
    from tasks.common.audit_check import audit_findings

    found = audit_findings(settings, endpoint)
    metrics = {
        "chain_intact": found.chain_intact,
        "anchored": found.anchored,
        "deleted": len(found.deleted),
        "replaced": len(found.replaced),
        "policy_drift": len(found.policy_drift),
    }
    threshold = {"chain_intact": True, "anchored": True, "deleted": 0, "replaced": 0}
    detail = (
        found.anchors
        if found.ok
        else f"{found.problem()}; `secure-pipeline audit verify` lists every finding"
    )
    return check("monitor.audit", metrics=metrics, threshold=threshold, ok=found.ok, detail=detail)


def audit(ctx: RunContext, endpoint: Any) -> list[GateResult]:
    return record(ctx, run_check("monitor.audit", check_audit, ctx.settings, endpoint))


# -- monitor.drift ------------------------------------------------------------------


def lacking_inputs(settings: Settings, columns: list[str]) -> list[str]:
    """Declared model inputs the batch does not have (none declared: none lacking)."""
    numeric, categorical = settings.dataset.inputs([str(c) for c in columns])
    present = {str(c) for c in columns}
    return [c for c in (*numeric, *categorical) if c not in present]


def check_drift(
    settings: Settings, frame: pd.DataFrame, profile: dict[str, Any], seen: Watched
) -> GateResult:
    """``monitor.drift``: the batch against the verified profile; fills ``seen.drift``."""
    from tasks.monitoring.drift import drift_gate, measure_drift

    lacking = lacking_inputs(settings, [str(c) for c in frame.columns])
    if lacking:
        return failed(
            "monitor.drift",
            metrics={"lacking_inputs": len(lacking)},
            threshold={"lacking_inputs": 0},
            detail=f"the batch lacks model inputs {lacking[:10]}: it is not the data the "
            "champion was trained for (check the batch's source)",
        )
    mon = settings.monitoring
    try:
        seen.drift = measure_drift(
            frame,
            profile,
            alpha=mon.alpha,
            min_shift=mon.min_shift,
            min_relative_shift=mon.min_relative_shift,
            floor=mon.floor,
        )
    except PipelineError as exc:  # a profile or batch it cannot compare: said, fails closed
        return failed("monitor.drift", detail=str(exc))
    return drift_gate(seen.drift)


def drift(ctx: RunContext, frame: pd.DataFrame, seen: Watched) -> tuple[list[GateResult], Any]:
    """The profile's own gate (``screen.profile_integrity``: signed, unchanged, the
    config's inputs), then ``monitor.drift``. Returns the results and the profile."""
    from tasks.screen import reference_profile

    result, profile = reference_profile(ctx, list(frame.columns))
    results = [result]
    if profile is not None:
        results.append(run_check("monitor.drift", check_drift, ctx.settings, frame, profile, seen))
    return record(ctx, *results), profile


# -- monitor.quality ----------------------------------------------------------------


def accuracy_floor(settings: Settings) -> float:
    """The accuracy the champion must keep: ``monitoring.min_accuracy``, else
    ``evaluate.min_accuracy``, else 0.9."""
    for value in (settings.monitoring.min_accuracy, settings.effective("evaluate").min_accuracy):
        if value is not None:
            return float(value)
    return 0.9


def check_quality(
    settings: Settings, frame: pd.DataFrame, profile: dict[str, Any], seen: Watched
) -> GateResult:
    """``monitor.quality``: the verified champion on the batch; fills ``seen.quality``."""
    from tasks.monitoring.quality import measure_quality, quality_gate

    alpha = settings.monitoring.alpha
    seen.quality = measure_quality(
        seen.pipeline, frame, profile, floor=accuracy_floor(settings), alpha=alpha
    )
    return quality_gate(seen.quality, alpha)


def quality(
    ctx: RunContext, frame: pd.DataFrame, profile: dict[str, Any], seen: Watched
) -> list[GateResult]:
    return record(
        ctx, run_check("monitor.quality", check_quality, ctx.settings, frame, profile, seen)
    )
