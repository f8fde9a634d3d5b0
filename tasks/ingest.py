"""Ingest: fetch one dataset safely and turn it into a `Dataset`.

The source is checked before anything is read (local files confined to the data
root, remote ones allow-listed; see `tasks.sources`), sized before the
download, read once, hashed, checked against the pin that applies, and only then
parsed from memory. The format is decided by content, never by extension; only
UTF-8 CSV and Parquet are parsed, so pickle, joblib, numpy and archive payloads
are refused without calling any loader that could execute code. Text cells that
a spreadsheet would run as formulas block the data too.

Longer than most stage modules (about 370 lines) because its five gates keep their
checks here, each with the remediation text a user reads when it refuses; where the
bytes come from and what they are live in `tasks.sources`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

import pandas as pd

from tasks import sources
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.files import sha256_bytes
from tasks.common.gates import GateFailed, GateResult, check, failed, run_check
from tasks.common.settings import DatasetConfig
from tasks.sources.content import (
    control_byte,
    encoding_error,
    formula_cells,
    longest_cell,
    longest_line,
    parse,
    sniff_format,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_LISTED = 20
Integrity = Literal["config-pin", "sidecar", "none"]


def check_source(
    located: sources.Located | sources.SourceRefused | sources.FetchFailed,
    *,
    root: str,
    allowed: list[str],
) -> GateResult:
    """`ingest.source`: local file inside the data root, or remote source allow-listed;
    then readable (a `FetchFailed` is reported here too)."""
    threshold = {"data_root": root, "allowed_sources": allowed, "schemes": ["file", "s3", "https"]}
    if isinstance(located, sources.SourceRefused):
        return failed(
            "ingest.source", metrics=located.metrics, threshold=threshold, detail=located.detail
        )
    if isinstance(located, sources.FetchFailed):
        return failed(
            "ingest.source",
            metrics={"fetch_error": located.reason},
            threshold=threshold,
            detail=located.detail,
        )
    metrics = (
        {"scheme": "file", "inside_root": True}
        if located.scheme == "file"
        else {"scheme": located.scheme, "allowed_prefix": located.prefix}
    )
    return check("ingest.source", metrics=metrics, threshold=threshold, ok=True)


def check_size(
    *,
    n_bytes: int,
    rows: int | None,
    columns: int | None,
    limits: DatasetConfig,
    measured: str = "content",
    line_bytes: int | None = None,
    cell_chars: int | None = None,
) -> GateResult:
    """`ingest.size`: byte cap (checked before reading), longest-line cap (before
    parsing CSV), row, column and longest-cell caps (after parsing). The line and cell
    caps bound the time every later scan of a value takes (PII, formulas)."""
    caps = {
        "bytes": limits.max_bytes,
        "rows": limits.max_rows,
        "columns": limits.max_columns,
        "line_bytes": limits.max_line_bytes,
        "cell_chars": limits.max_cell_chars,
    }
    values = {
        "bytes": n_bytes,
        "rows": rows,
        "columns": columns,
        "line_bytes": line_bytes,
        "cell_chars": cell_chars,
    }
    over = [k for k, cap in caps.items() if (v := values[k]) is not None and v > cap]
    how = f" (bytes known from {measured})" if "bytes" in over else ""
    detail = (
        f"{', '.join(over)} over the cap{how}; split the data or raise dataset.max_{over[0]}"
        if over
        else ""
    )
    return check(
        "ingest.size",
        metrics={**values, "bytes_measured_from": measured},
        ok=not over,
        detail=detail,
        threshold={f"max_{k}": cap for k, cap in caps.items()},
    )


def check_format(
    *, kind: str, rows: int | None, columns: int | None, parse_error: str | None, data: bytes = b""
) -> GateResult:
    """`ingest.format`: UTF-8 CSV or Parquet by content, parsed, with a header and >= 1 row."""
    name, threshold = (
        "ingest.format",
        {"allowed": ["csv", "parquet"], "encoding": "utf-8", "min_rows": 1},
    )
    if kind == "bad-encoding":
        where = encoding_error(data) or {}
        return failed(
            name,
            metrics={"detected": kind, **where},
            threshold=threshold,
            detail=f"text is not valid UTF-8 at byte offset {where.get('offset')} "
            f"(line {where.get('line')}); expected UTF-8: re-export as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)",
        )
    if kind == "binary":
        at = control_byte(data)
        return failed(
            name,
            metrics={"detected": kind, "offset": at},
            threshold=threshold,
            detail=f"content detected as binary (control byte at offset {at}); only "
            "UTF-8 CSV or Parquet is accepted: export the data as CSV/Parquet",
        )
    if kind not in ("csv", "parquet"):
        return failed(
            name,
            metrics={"detected": kind},
            threshold=threshold,
            detail=f"content detected as {kind}; only UTF-8 CSV or Parquet is accepted "
            "(never pickle/joblib): export the data as CSV or Parquet",
        )
    if parse_error is not None or rows is None or columns is None:
        return failed(
            name,
            metrics={"detected": kind, "parse_error": parse_error},
            threshold=threshold,
            detail=f"content looks like {kind} but does not parse; re-export it",
        )
    ok = rows >= 1 and columns >= 1
    return check(
        name,
        metrics={"detected": kind, "rows": rows, "columns": columns},
        threshold=threshold,
        ok=ok,
        detail="" if ok else "no data rows under a header; check the export",
    )


def check_integrity(
    *,
    digest: str,
    pin: str | None,
    kind: str,
    checksum: sources.Checksum = "not-applicable",
    algorithm: str | None = None,
) -> GateResult:
    """`ingest.integrity`: sha256 equals the pin that applies (if one does), and the
    store's own checksum (s3) matched when it had one."""
    metrics: dict[str, Any] = {
        "pin": kind,
        "sha256": digest,
        "expected": pin,
        "matched": None if pin is None else digest == pin,
        "transport_checksum": checksum,
        "transport_algorithm": algorithm,
    }
    threshold = {"sha256_must_match_pin": kind != "none", "transport_checksum_must_match": True}
    if checksum == "mismatch":
        return failed(
            "ingest.integrity",
            metrics=metrics,
            threshold=threshold,
            detail=f"the bytes received do not match the object's stored "
            f"{algorithm or ''} checksum: corrupted in storage or transit; "
            "re-run or re-upload",
        )
    if kind == "sidecar-malformed":
        return failed(
            "ingest.integrity",
            metrics=metrics,
            threshold=threshold,
            detail="the .sha256 sidecar is malformed or unreadable: write one line "
            "'<sha256>  <file name>' (sha256sum output)",
        )
    if pin is None:
        return check(
            "ingest.integrity",
            metrics=metrics,
            threshold=threshold,
            ok=True,
            detail="no pin applies; add a <file>.sha256 sidecar to pin this data",
        )
    ok = digest == pin
    return check(
        "ingest.integrity",
        metrics=metrics,
        threshold=threshold,
        ok=ok,
        detail=""
        if ok
        else f"data does not match its {kind}: the data changed; "
        "verify where it came from before re-pinning",
    )


def check_formula_cells(frame: pd.DataFrame) -> GateResult:
    """`ingest.formula_cells`: no spreadsheet-formula injection in text cells or the header."""
    count, columns, header = formula_cells(frame)
    metrics = {
        "cells": count,
        "columns": [c[:64] for c in columns[:_LISTED]],
        "header_positions": header[:_LISTED],
    }
    ok = count == 0 and not header
    return check(
        "ingest.formula_cells",
        metrics=metrics,
        threshold={"max_formula_cells": 0},
        ok=ok,
        detail=""
        if ok
        else f"{count} text cell(s) in {len(columns)} column(s) and {len(header)} header "
        "cell(s) start with =, +, -, @, tab or CR and are not numbers (spreadsheet "
        "formula injection); remove them or quote them at the source",
    )


def _block(gates: StageGates, result: GateResult) -> NoReturn:
    gates.enforce(result)  # raises for a failed result
    raise GateFailed(gates.results)


def _fetch(
    ctx: RunContext, gates: StageGates, located: sources.Located, s3: S3Client | None
) -> sources.Fetched:
    ds = ctx.settings.dataset
    try:
        return sources.fetch(located, limits=ds, s3=s3)
    except sources.TooLarge as exc:  # refused before (or while) downloading
        _block(
            gates,
            run_check(
                "ingest.size",
                check_size,
                n_bytes=exc.n_bytes,
                rows=None,
                columns=None,
                limits=ds,
                measured=exc.measured,
            ),
        )
    except (sources.SourceRefused, sources.FetchFailed) as exc:  # a redirect, a changed path,
        _block(
            gates,
            check_source(
                exc,
                root=str(ds.data_root),  # a server or network error
                allowed=ds.allowed_sources,
            ),
        )


def ingest(
    ctx: RunContext, *, source: str | None = None, s3: S3Client | None = None
) -> tuple[Dataset, list[GateResult]]:
    """Check, fetch once, pin-verify and parse the dataset.

    Args:
        ctx: The run's context.
        source: A dataset name or path (resolved inside ``dataset.data_root``), or an
            allow-listed ``s3://`` / ``https://`` URI. None reads ``dataset.source``.
            The config pin applies when the source is the configured one; any other
            is pinned by its ``.sha256`` sidecar, if present.
        s3: The run's S3 client (``s3://`` sources only).

    Returns:
        The parsed dataset and this stage's gate results.

    Raises:
        GateFailed: a gate blocked the data.
    """
    ds, gates = ctx.settings.dataset, StageGates(ctx)
    uri = ds.source if source is None else source
    located: sources.Located | sources.SourceRefused
    try:
        located = sources.locate(uri, root=ds.data_root, allowed=ds.allowed_sources)
    except sources.SourceRefused as exc:
        located = exc
    except Exception as exc:  # noqa: BLE001 - fail closed
        located = sources.SourceRefused(
            "error", f"resolving the source raised {type(exc).__name__}; failing closed"
        )
    gates.enforce(
        run_check(
            "ingest.source",
            check_source,
            located,
            root=str(ds.data_root),
            allowed=ds.allowed_sources,
        )
    )
    if not isinstance(located, sources.Located):  # unreachable unless the gate misjudged
        _block(gates, failed("ingest.source", detail="the source was refused; failing closed"))
    fetched = _fetch(ctx, gates, located, s3)
    data = fetched.data
    digest = sha256_bytes(data)
    pin, pin_kind = (
        (ds.sha256, "config-pin")
        if ds.sha256 and sources.same_source(located, ds.source)
        else (None, "none")
    )
    if pin is None and fetched.sidecar is not None:
        pin, pin_kind = (
            (fetched.sidecar, "sidecar") if fetched.sidecar else (None, "sidecar-malformed")
        )
    gates.enforce(
        run_check(
            "ingest.integrity",
            check_integrity,
            digest=digest,
            pin=pin,
            kind=pin_kind,
            checksum=fetched.checksum,
            algorithm=fetched.checksum_algorithm,
        )
    )
    kind = sniff_format(data)
    line_bytes = longest_line(data) if kind == "csv" else None
    if line_bytes is not None and line_bytes > ds.max_line_bytes:  # refused before parsing
        gates.enforce(
            run_check(
                "ingest.size",
                check_size,
                n_bytes=len(data),
                rows=None,
                columns=None,
                limits=ds,
                line_bytes=line_bytes,
            )
        )
    frame, rows, columns, parse_error = None, None, None, None
    if kind in ("csv", "parquet"):
        try:
            frame, rows, columns = parse(
                data, kind, max_rows=ds.max_rows, max_columns=ds.max_columns
            )
        except Exception as exc:  # noqa: BLE001 - any parser error refuses the file
            parse_error = type(exc).__name__
    gates.enforce(
        run_check(
            "ingest.format",
            check_format,
            kind=kind,
            rows=rows,
            columns=columns,
            parse_error=parse_error,
            data=data,
        )
    )
    size = run_check(
        "ingest.size",
        check_size,
        n_bytes=len(data),
        rows=rows,
        columns=columns,
        limits=ds,
        line_bytes=line_bytes,
        cell_chars=None if frame is None else longest_cell(frame),
    )
    if frame is None:
        _block(gates, size if not size.passed else failed("ingest.size", detail="not parsed"))
    gates.enforce(size)
    gates.enforce(run_check("ingest.formula_cells", check_formula_cells, frame))
    return Dataset(
        frame=frame,
        uri=located.uri,
        sha256=digest,
        format="parquet" if kind == "parquet" else "csv",
        integrity=cast(Integrity, pin_kind),
        target=ds.target,
    ), gates.results


# The Prefect task is the pure function itself, with the options every stage needs.
ingest_task = stage_task("ingest")(ingest)
