"""Ingest: fetch one dataset safely and turn it into a `Dataset`.

The source is checked before anything is read (local files confined to the data
root, remote ones allow-listed; see `tasks.sources`), sized before the
download, read once, hashed, checked against the pin that applies, and only then
parsed from memory. The format is decided by content, never by extension; only
UTF-8 CSV and Parquet are parsed, so pickle, joblib, numpy and archive payloads
are refused without calling any loader that could execute code. Text cells that
a spreadsheet would run as formulas block the data too.

The five gates' checks are in `tasks.checks.ingestion`; where the bytes come from and
what they are, in `tasks.sources`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NoReturn, cast

from tasks import sources
from tasks.checks.ingestion import (
    check_format,
    check_formula_cells,
    check_integrity,
    check_size,
    check_source,
)
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.files import sha256_bytes
from tasks.common.gates import GateFailed, GateResult, failed, run_check
from tasks.sources.content import (
    longest_cell,
    longest_line,
    parse,
    sniff_format,
)
from tasks.sources.content import parse_error as parser_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Integrity = Literal["config-pin", "sidecar", "none"]


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

    def size(*, rows: int | None, columns: int | None, cells: int | None) -> GateResult:
        return run_check(
            "ingest.size",
            check_size,
            n_bytes=len(data),
            rows=rows,
            columns=columns,
            limits=ds,
            line_bytes=line_bytes,
            cell_chars=cells,
        )

    if line_bytes is not None and line_bytes > ds.max_line_bytes:  # refused before parsing
        gates.enforce(size(rows=None, columns=None, cells=None))
    frame, rows, columns, error, cells = None, None, None, None, None
    if kind in ("csv", "parquet"):
        try:
            frame, rows, columns = parse(
                data, kind, max_rows=ds.max_rows, max_columns=ds.max_columns
            )
            cells = None if frame is None else longest_cell(frame)
        except Exception as exc:  # noqa: BLE001 - any parser error refuses the file
            frame, rows, columns, error = None, None, None, parser_error(exc)
    gates.enforce(
        run_check(
            "ingest.format",
            check_format,
            kind=kind,
            rows=rows,
            columns=columns,
            parse_error=error,
            data=data,
        )
    )
    sized = size(rows=rows, columns=columns, cells=cells)
    if frame is None:
        _block(gates, sized if not sized.passed else failed("ingest.size", detail="not parsed"))
    gates.enforce(sized)
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
