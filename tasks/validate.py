"""Validate: run the dataset's pinned Great Expectations suite.

The suite file is hash-pinned in the config because a loosened suite (wider
bounds, a dropped column check) is the quiet way for an insider to let bad data
through. The suite is parsed from the very bytes that were hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.gates import GateResult, check, failed, run_check
from tasks.ingest import read_capped

log = logging.getLogger(__name__)
_SUITE_MAX_BYTES = 16 * 1024 * 1024
_ROW_COUNT = "expect_table_row_count_to_be_between"
_MAX_LISTED = 15  # failing expectations named in the detail


@dataclass(frozen=True)
class ValidationOutput:
    """The validated dataset, the suite digest it was checked against, and the GX result file."""

    dataset: Dataset
    suite_sha256: str
    result_path: Path


def check_suite_integrity(raw: bytes | None, *, expected: str) -> GateResult:
    """`validate.suite_integrity`: sha256 of the suite file equals `dataset.suite_sha256`."""
    name, threshold = "validate.suite_integrity", {"sha256": expected}
    if raw is None:
        return failed(name, metrics={"readable": False}, threshold=threshold,
                      detail="suite file missing, unreadable or over 16 MiB; check dataset.suite")
    digest = hashlib.sha256(raw).hexdigest()
    ok = digest == expected
    return check(name, metrics={"sha256": digest, "matched": ok}, threshold=threshold, ok=ok,
                 detail="" if ok else "suite differs from its pin: review the suite change, "
                                      "then re-pin dataset.suite_sha256 (sha256sum)")


def check_expectations(result: dict[str, Any] | None, *, expected: int,
                       error: str | None = None) -> GateResult:
    """`validate.expectations`: every expectation of the suite evaluated and passed.

    Args:
        result: The GX validation result as a JSON dict (None if GX raised).
        expected: How many expectations the suite holds.
        error: Exception type raised by GX, if any.
    """
    name, threshold = "validate.expectations", {"max_failed": 0, "expectations": expected}
    if result is None:
        return failed(name, metrics={"evaluated": 0}, threshold=threshold,
                      detail=f"validation raised {error}; failing closed")
    outcomes = result["results"]
    failing = Counter(
        f"{o['expectation_config']['type']}"
        f"({o['expectation_config']['kwargs'].get('column', 'table')})"
        + (" [error: missing column?]" if (o.get("exception_info") or {}).get("raised_exception")
           else "")
        for o in outcomes if o["success"] is not True)
    evaluated, n_failed = len(outcomes), sum(failing.values())
    metrics = {"evaluated": evaluated, "successful": evaluated - n_failed, "failed": n_failed,
               "success_rate": (evaluated - n_failed) / evaluated if evaluated else 0.0}
    ok = n_failed == 0 and evaluated == expected and result["success"] is True
    listed = sorted(failing)[:_MAX_LISTED]
    more = f" and {len(failing) - len(listed)} more" if len(failing) > len(listed) else ""
    detail = ("" if ok else
              f"failing: {', '.join(listed)}{more}; fix the data or its export (see "
              "validation_result.json)" if n_failed else
              f"only {evaluated} of {expected} expectations evaluated; failing closed")
    return check(name, metrics=metrics, threshold=threshold, ok=ok, detail=detail)


def run_suite(frame: pd.DataFrame, suite: dict[str, Any], *, max_rows: int) -> dict[str, Any]:
    """Validate `frame` against a suite dict in an ephemeral GX context; returns the JSON result.

    The row-count maximum is tightened to `max_rows` (never loosened), and
    exception messages are scrubbed from the result because they can quote data.
    """
    import great_expectations as gx  # ~2-3 s: imported only when a run gets this far
    from great_expectations.data_context.types.base import ProgressBarsConfig

    expectations = [dict(e, kwargs=dict(e.get("kwargs", {}))) for e in suite["expectations"]]
    for exp in expectations:
        if exp["type"] == _ROW_COUNT:
            exp["kwargs"]["max_value"] = min(exp["kwargs"].get("max_value") or max_rows, max_rows)
    uid = uuid.uuid4().hex[:12]
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no stderr bars
    gx_suite = context.suites.add(gx.ExpectationSuite(
        **{**suite, "name": f"{suite['name']}-{uid}", "expectations": expectations}))
    batch = (context.data_sources.add_pandas(f"pandas-{uid}")
             .add_dataframe_asset(f"asset-{uid}")
             .add_batch_definition_whole_dataframe(f"batch-{uid}")
             .get_batch(batch_parameters={"dataframe": frame}))
    # BASIC with no partial lists: counts only, no cell values in the stored result.
    result = batch.validate(gx_suite, result_format={"result_format": "BASIC",
                                                     "partial_unexpected_count": 0})
    out: dict[str, Any] = result.to_json_dict()
    for outcome in out["results"]:
        for info in (outcome.get("exception_info") or {}).values():
            if isinstance(info, dict) and info.get("raised_exception"):
                info.update(exception_message="(scrubbed)", exception_traceback="(scrubbed)")
    return out


def _write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, sort_keys=True, default=str)


def validate(ctx: RunContext, dataset: Dataset) -> tuple[ValidationOutput, list[GateResult]]:
    """Check the suite's pin, then validate the dataset against it.

    The GX result is written to ``<state>/runs/<run_id>/validation_result.json``
    whether or not the data passes, so a blocked run keeps its evidence.

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The dataset with the suite digest and result path, and this stage's gate results.

    Raises:
        GateFailed: the suite was tampered with or the data failed an expectation.
    """
    ds, gates = ctx.settings.dataset, StageGates(ctx)
    try:
        raw: bytes | None = read_capped(ds.suite, max_bytes=_SUITE_MAX_BYTES,
                                        follow_symlinks=True)
    except OSError:
        raw = None
    gates.enforce(run_check("validate.suite_integrity", check_suite_integrity, raw,
                            expected=ds.suite_sha256))
    assert raw is not None  # the integrity gate passed
    result: dict[str, Any] | None = None
    expected, error = -1, None
    try:
        suite = json.loads(raw)
        expected = len(suite["expectations"])
        result = run_suite(dataset.frame, suite, max_rows=ds.max_rows)
    except Exception as exc:  # noqa: BLE001 - a suite that cannot run is a failed gate
        error = type(exc).__name__
    result_path = ctx.settings.state_dir / "runs" / ctx.run_id / "validation_result.json"
    _write_result(result_path, result if result is not None else {"success": False,
                                                                   "error": error})
    gate = run_check("validate.expectations", check_expectations, result, expected=expected,
                     error=error)
    log.info("validation result written to %s", result_path)
    gates.enforce(gate)
    return ValidationOutput(dataset, hashlib.sha256(raw).hexdigest(), result_path), gates.results


@task(name="validate", cache_policy=NO_CACHE, persist_result=False)  # cached = gates skipped
def validate_task(ctx: RunContext, dataset: Dataset) -> tuple[ValidationOutput, list[GateResult]]:
    """Prefect task: check the suite pin and validate the dataset (see `validate`).

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The validation output and this stage's gate results.
    """
    return validate(ctx, dataset)
