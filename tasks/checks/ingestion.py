"""The ingest stage's checks: pure functions from what was read to a `GateResult`.

* ``ingest.source``: local file inside the data root, or remote source allow-listed;
* ``ingest.size``: byte, line, row, column and cell caps;
* ``ingest.integrity``: the sha256 against the pin that applies, and the store's checksum;
* ``ingest.format``: UTF-8 CSV or Parquet by content, never anything that unpickles;
* ``ingest.formula_cells``: no spreadsheet-formula injection.

Each says, when it refuses, what was measured and what to do; the stage that runs them
in order is `tasks.ingest`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tasks import sources
from tasks.common.gates import GateResult, check, failed
from tasks.common.settings import DatasetConfig
from tasks.sources.content import control_byte, encoding_error, formula_cells

_LISTED = 20


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
            detail=f"content looks like {kind} but does not parse"
            + (f" ({parse_error})" if parse_error else "")
            + ": fix or re-export the file (one header row, every row with its fields, "
            "unique column names)",
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
