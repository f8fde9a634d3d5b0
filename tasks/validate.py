"""Validate: run the dataset's pinned Great Expectations suite, keep the evidence.

The suite file is hash-pinned in the config because a loosened suite (wider
bounds, a dropped column check) is the quiet way for an insider to let bad data
through; with ``[trust] signers`` set it must also be signed by the data steward
(`tasks.checks.suite_signature`). The suite is parsed from the very bytes that were
hashed.

Evidence, whether the data passes or not, goes to
``<state>/runs/<run_id>/validation/``: the GX result JSON, a self-contained HTML page
of it (``validation.html``: inline CSS, no script, no external URL, readable offline;
see `tasks.checks.validation_page`) and GX's own Data Docs (whose pages load CSS and
JavaScript from CDNs, so they are blank offline), all scrubbed so that no cell value
is stored (see `tasks.checks.expectations`). Links point to ``validation.html``.
A suite is derived from trusted data with `tasks.checks.suite_builder`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.artifacts import create_markdown_artifact

from tasks.checks.expectations import run_suite
from tasks.checks.suite_signature import SuiteSignatureError, steward_arguments, verify_suite
from tasks.checks.validation_page import render_validation_page
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.files import read_capped, sha256_bytes, write_atomic, write_json
from tasks.common.gates import GateFailed, GateResult, check, failed, run_check, timed
from tasks.common.report import cell
from tasks.common.settings import DatasetConfig
from tasks.trust.signing import PublicKey

log = logging.getLogger(__name__)
_SUITE_MAX_BYTES = 16 * 1024 * 1024
_MAX_LISTED = 15  # failing expectations named in the detail
RESULT_FILE, DOCS_DIR = "validation_result.json", "data_docs"
PAGE_FILE = "validation.html"  # the self-contained page of the result: what links point to


@dataclass(frozen=True)
class ValidationOutput:
    """The validated dataset, the suite digest it was checked against, and the evidence."""

    dataset: Dataset
    suite_sha256: str
    result_path: Path  # the GX validation result (JSON)
    evidence_dir: Path  # result JSON, validation.html, data_docs/; the lead logs it to MLflow

    @property
    def page_path(self) -> Path:
        """The self-contained HTML page of the result (readable offline)."""
        return self.evidence_dir / PAGE_FILE


def evidence_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / "validation"


def check_suite_integrity(
    raw: bytes | None,
    *,
    expected: str,
    sig_raw: bytes | None = None,
    steward_keys: Mapping[str, PublicKey] | None = None,
    key_error: str = "",
) -> GateResult:
    """`validate.suite_integrity`: sha256 of the suite file equals `dataset.suite_sha256`
    and, in the governed mode (``steward_keys`` given: ``[trust] signers`` is set), the
    suite carries a valid signature by a ``dataset.profile_signers`` key
    (`tasks.checks.suite_signature`), so a trainer cannot rebuild and re-pin it.

    Args:
        raw: The suite file's bytes (None: missing, unreadable or too large).
        expected: The pinned sha256.
        sig_raw: ``<suite>.sig``'s bytes (None: no signature file).
        steward_keys: The data steward's keys by name; None when unpinned (the pin alone).
        key_error: Why the steward's keys could not be loaded (a failure if set).
    """
    name, threshold = "validate.suite_integrity", {"sha256": expected}
    governed = steward_keys is not None or bool(key_error)
    if governed:
        threshold["signed_by"] = "dataset.profile_signers"
    if raw is None:
        return failed(
            name,
            metrics={"readable": False},
            threshold=threshold,
            detail="suite file missing, unreadable or over 16 MiB; check dataset.suite",
        )
    digest = sha256_bytes(raw)
    if digest != expected:
        return check(
            name,
            metrics={"sha256": digest, "matched": False},
            threshold=threshold,
            ok=False,
            detail="suite differs from its pin: review the suite change, "
            "then re-pin dataset.suite_sha256 (sha256sum)",
        )
    if not governed:
        return check(
            name, metrics={"sha256": digest, "matched": True}, threshold=threshold, ok=True
        )
    try:
        if key_error:
            raise SuiteSignatureError(key_error)
        signer = verify_suite(raw, sig_raw, steward_keys or {})
    except SuiteSignatureError as exc:
        return check(
            name,
            metrics={"sha256": digest, "matched": True, "signed_by": None},
            threshold=threshold,
            ok=False,
            detail=f"{exc}. With [trust] signers set, the data steward signs the suite: "
            "`secure-pipeline suite DATA --out SUITE --key STEWARD.pem` (its public key in "
            "dataset.profile_signers), then re-pin dataset.suite_sha256",
        )
    return check(
        name,
        metrics={"sha256": digest, "matched": True, "signed_by": signer},
        threshold=threshold,
        ok=True,
    )


def check_columns(frame: pd.DataFrame, *, config: DatasetConfig) -> GateResult:
    """`validate.columns`: the table holds exactly the declared columns, usable as declared.

    Every column is the target, a numeric or categorical input, ignored, or declared
    PII (never a silent drop); numeric inputs hold numbers; an input whose missing
    policy is "refuse" and the target hold no missing value; the target has 2+ classes.
    """
    columns = [str(c) for c in frame.columns]
    numeric, categorical = config.inputs(columns)
    declared = {config.target, *numeric, *categorical, *config.ignored, *config.pii}
    undeclared = [c for c in columns if c not in declared]
    absent = [c for c in [config.target, *numeric, *categorical] if c not in frame.columns]
    present = [c for c in numeric if c in frame.columns]
    not_numeric = [c for c in present if not pd.api.types.is_numeric_dtype(frame[c])]
    refused = [
        c
        for c in [*numeric, *categorical]
        if c in frame.columns and config.missing_policy(c) == "refuse" and frame[c].isna().any()
    ]
    has_target = config.target in frame.columns
    target_missing = has_target and bool(frame[config.target].isna().any())
    classes = int(frame[config.target].nunique()) if has_target else 0
    problems = []
    if undeclared:
        problems.append(
            f"undeclared column(s) {undeclared[:10]}: add each to dataset.numeric, "
            "categorical, ignored or pii (`secure-pipeline init` infers them)"
        )
    if absent:
        problems.append(f"declared column(s) {absent[:10]} missing from the data")
    if not_numeric:
        problems.append(f"numeric column(s) {not_numeric[:10]} hold text: declare them categorical")
    if refused:
        problems.append(
            f"missing values in {refused[:10]}, whose policy is refuse: fix the export, or set "
            "dataset.missing.<column> to median, most_frequent or constant"
        )
    if target_missing:
        problems.append(f"the target {config.target!r} has missing values")
    if has_target and classes < 2:
        problems.append(f"the target {config.target!r} has {classes} class(es); 2 or more needed")
    ok = not problems
    return check(
        "validate.columns",
        metrics={
            "columns": len(columns),
            "numeric": len(numeric),
            "categorical": len(categorical),
            "undeclared": undeclared[:20],  # names (at most 20) and how many
            "undeclared_count": len(undeclared),
            "absent": absent[:20],
            "not_numeric": not_numeric,
            "refused_missing": refused,
            "target_missing": target_missing,
            "classes": classes,
        },
        threshold={"undeclared": 0, "refused_missing": 0, "min_classes": 2},
        ok=ok,
        detail="every column declared and usable" if ok else "; ".join(problems),
    )


def failing_expectations(result: dict[str, Any]) -> list[str]:
    """``type(column)`` of every expectation that did not pass, sorted."""
    return sorted(
        f"{o['expectation_config']['type']}"
        f"({o['expectation_config']['kwargs'].get('column', 'table')})"
        + (
            " [error: missing column?]"
            if (o.get("exception_info") or {}).get("raised_exception")
            else ""
        )
        for o in result.get("results", [])
        if o.get("success") is not True
    )


def check_expectations(
    result: dict[str, Any] | None, *, expected: int, error: str | None = None
) -> GateResult:
    """`validate.expectations`: every expectation of the suite evaluated and passed.

    Args:
        result: The GX validation result as a JSON dict (None if GX raised).
        expected: How many expectations the suite holds.
        error: Exception type raised by GX, if any.
    """
    name, threshold = "validate.expectations", {"max_failed": 0, "expectations": expected}
    if result is None:
        return failed(
            name,
            metrics={"evaluated": 0},
            threshold=threshold,
            detail=f"validation raised {error}; failing closed",
        )
    failing = Counter(failing_expectations(result))
    evaluated, n_failed = len(result["results"]), sum(failing.values())
    metrics = {
        "evaluated": evaluated,
        "successful": evaluated - n_failed,
        "failed": n_failed,
        "success_rate": (evaluated - n_failed) / evaluated if evaluated else 0.0,
    }
    ok = n_failed == 0 and evaluated == expected and result["success"] is True
    listed = sorted(failing)[:_MAX_LISTED]
    more = f" and {len(failing) - len(listed)} more" if len(failing) > len(listed) else ""
    detail = (
        ""
        if ok
        else f"failing: {', '.join(listed)}{more}; fix the data or its export (see "
        f"{PAGE_FILE} and {RESULT_FILE})"
        if n_failed
        else f"only {evaluated} of {expected} expectations evaluated; failing closed"
    )
    return check(name, metrics=metrics, threshold=threshold, ok=ok, detail=detail)


def validate(ctx: RunContext, dataset: Dataset) -> tuple[ValidationOutput, list[GateResult]]:
    """Check the suite's pin, then validate the dataset against it.

    The evidence (``validation_result.json``, ``validation.html`` and ``data_docs/``) is
    written to `evidence_dir` whether or not the data passes, so a blocked run keeps it.

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The dataset with the suite digest and evidence paths, and this stage's gate results.

    Raises:
        GateFailed: the suite was tampered with or the data failed an expectation.
    """
    ds, gates = ctx.settings.dataset, StageGates(ctx)
    columns = run_check("validate.columns", check_columns, dataset.frame, config=ds)
    try:
        raw: bytes | None = read_capped(ds.suite, max_bytes=_SUITE_MAX_BYTES, follow_symlinks=True)
    except OSError:
        raw = None
    integrity = run_check(
        "validate.suite_integrity",
        check_suite_integrity,
        raw,
        expected=ds.suite_sha256,
        **steward_arguments(ctx.settings, max_bytes=_SUITE_MAX_BYTES),
    )
    raw = gates.enforce_with(integrity, raw)  # the gate fails on an unreadable suite
    # The suite runs even when the columns gate fails, so a blocked run keeps its evidence;
    # both verdicts are reported together.
    result: dict[str, Any] | None = None
    expected, error = -1, None
    out_dir = evidence_dir(ctx)
    try:
        suite = json.loads(raw)
        expected = len(suite["expectations"])
        with timed("validate.expectations"):  # the suite's run, beside its verdict below
            result = run_suite(
                dataset.frame,
                suite,
                max_rows=ds.max_rows,
                docs_dir=out_dir / DOCS_DIR,
                run_name=ctx.run_id,
                batch_id=f"sha256-{dataset.sha256[:16]}",
            )
    except Exception as exc:  # noqa: BLE001 - a suite that cannot run is a failed gate
        error = type(exc).__name__
    result_path = out_dir / RESULT_FILE
    saved = result if result is not None else {"success": False, "error": error}
    write_json(result_path, saved)
    write_page(out_dir / PAGE_FILE, saved, dataset=dataset, run_id=ctx.run_id, expected=expected)
    gate = run_check(
        "validate.expectations", check_expectations, result, expected=expected, error=error
    )
    log.info("validation evidence written to %s", out_dir)
    gates.enforce(columns, gate)
    return (
        ValidationOutput(dataset, sha256_bytes(raw), result_path, out_dir),
        gates.results,
    )


def write_page(
    path: Path, result: dict[str, Any], *, dataset: Dataset, run_id: str, expected: int
) -> None:
    """Write `PAGE_FILE` from the result JSON; a failure is logged, never raised (the
    verdict does not depend on the HTML), and leaves no stale page behind."""
    try:
        page = render_validation_page(
            json.loads(json.dumps(result, default=str)),  # exactly what RESULT_FILE holds
            dataset=f"{dataset.uri} (sha256 {dataset.sha256[:16]}…, {dataset.rows} rows)",
            run_id=run_id,
            expected=expected if expected >= 0 else None,
        )
        write_atomic(path, page)
    except Exception as exc:  # noqa: BLE001 - evidence, not a gate
        log.warning("%s not written (%s); the JSON result is kept", PAGE_FILE, type(exc).__name__)
        path.unlink(missing_ok=True)


def summary_markdown(results: list[GateResult], out_dir: Path) -> str:
    """The "validation-summary" artifact: verdicts, counts, failing expectations, evidence."""
    lines = ["# Validation", "", "| gate | verdict | measured | threshold |", "|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.name} | {'passed' if r.passed else '**BLOCKED**'} | "
            f"{cell(r.metrics)} | {cell(r.threshold)} |"
        )
    try:
        saved = json.loads(read_capped(out_dir / RESULT_FILE, max_bytes=_SUITE_MAX_BYTES))
    except (OSError, ValueError):
        saved = {}
    failing = failing_expectations(saved) if "results" in saved else []
    lines += ["", f"Failing expectations: {len(failing)}"]
    lines += [f"- `{f}`" for f in failing[:50]] + (
        [f"- and {len(failing) - 50} more"] if len(failing) > 50 else []
    )
    page, docs = out_dir / PAGE_FILE, out_dir / DOCS_DIR
    lines += [
        "",
        f"Data Docs: `{page}` (self-contained, readable offline)"
        if page.is_file()
        else "Data Docs: not built",
        f"Result JSON: `{out_dir / RESULT_FILE}`",
    ]
    if docs.is_dir():
        lines.append(f"GX's own Data Docs site (needs internet for its CSS/JS): `{docs}/`")
    return "\n".join(lines)


@stage_task("validate")
def validate_task(ctx: RunContext, dataset: Dataset) -> tuple[ValidationOutput, list[GateResult]]:
    """Prefect task: check the suite pin and validate the dataset (see `validate`), and
    publish the "validation-summary" markdown artifact, blocked or not.

    Args:
        ctx: The run's context.
        dataset: The ingested dataset.

    Returns:
        The validation output and this stage's gate results.
    """
    try:
        out, results = validate(ctx, dataset)
    except GateFailed as exc:
        create_markdown_artifact(
            key="validation-summary",
            markdown=summary_markdown(exc.results, evidence_dir(ctx)),
            description=f"blocked by {exc.gate.name}",
        )
        raise
    create_markdown_artifact(
        key="validation-summary",
        markdown=summary_markdown(results, out.evidence_dir),
        description="all expectations passed",
    )
    return out, results
