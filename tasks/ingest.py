"""Ingest: read one local data file safely and turn it into a `Dataset`.

The file is checked before it is read (scheme, no symlink, regular file, byte
cap), read once, hashed, checked against the pin that applies, and only then
parsed from memory. The format is decided by content, never by extension; only
CSV and Parquet are parsed, so pickle, joblib, numpy and archive payloads are
refused without calling any loader that could execute code.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal, NoReturn, cast
from urllib.parse import urlparse

import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.context import Dataset, RunContext, StageGates
from tasks.common.gates import GateFailed, GateResult, check, failed, run_check
from tasks.common.settings import DatasetConfig

# Formats refused by name; matched before the text test so the detail is precise.
_MAGIC = ((b"\x80", "pickle"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"),
          (b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x93NUMPY", "numpy"))
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not in any text table
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIDECAR_MAX_BYTES = 4096
Integrity = Literal["config-pin", "sidecar", "none"]


def _scheme(source: str) -> str:
    return urlparse(source).scheme.lower() if "://" in source else "file"


def local_path(source: str) -> Path:
    """Absolute path of a plain path or ``file://`` URI; symlinks are NOT resolved."""
    raw = urlparse(source).path if "://" in source else source
    return Path(os.path.abspath(Path(raw).expanduser()))


def check_source(source: str) -> GateResult:
    """`ingest.source`: allowed scheme, exists, regular file, not a symlink (lstat)."""
    name, threshold = "ingest.source", {"schemes": ["file"], "symlink_allowed": False}
    scheme = _scheme(source)
    if scheme == "file" and urlparse(source).netloc not in ("", "localhost"):
        return failed(name, metrics={"scheme": scheme, "remote_host": True}, threshold=threshold,
                      detail="file:// URI names a remote host; pass a local path")
    if scheme != "file":
        soon = scheme in ("s3", "https")
        return failed(name, metrics={"scheme": scheme}, threshold=threshold,
                      detail=f"{scheme}:// sources are {'not supported yet' if soon else 'refused'}"
                             "; copy the file locally (with a .sha256 sidecar) and pass its path")
    try:
        st = os.lstat(local_path(source))
    except FileNotFoundError:
        return failed(name, metrics={"scheme": scheme, "exists": False}, threshold=threshold,
                      detail="source file not found; check --data or dataset.source")
    symlink, regular = stat.S_ISLNK(st.st_mode), stat.S_ISREG(st.st_mode)
    detail = ("source is a symlink; pass the real file's path" if symlink else
              "" if regular else "source is not a regular file; pass a data file")
    return check(name, metrics={"scheme": scheme, "exists": True, "symlink": symlink,
                                "regular_file": regular},
                 threshold=threshold, ok=regular and not symlink, detail=detail)


def check_size(*, n_bytes: int, rows: int | None, columns: int | None,
               limits: DatasetConfig) -> GateResult:
    """`ingest.size`: byte cap (checked before reading), row and column caps (after parsing)."""
    caps = {"bytes": limits.max_bytes, "rows": limits.max_rows, "columns": limits.max_columns}
    measured = {"bytes": n_bytes, "rows": rows, "columns": columns}
    over = [k for k, cap in caps.items() if (v := measured[k]) is not None and v > cap]
    detail = (f"{', '.join(over)} over the cap; split the data or raise dataset.max_{over[0]}"
              if over else "")
    return check("ingest.size", metrics=measured, ok=not over, detail=detail,
                 threshold={f"max_{k}": cap for k, cap in caps.items()})


def sniff_format(data: bytes) -> str:
    """Name the content kind from its bytes alone: "parquet", "csv", or why it is refused."""
    if not data:
        return "empty"
    if len(data) >= 12 and data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        return "parquet"
    kind = next((k for magic, k in _MAGIC if data.startswith(magic)), None)
    if kind:
        return kind
    try:
        data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return "binary"
    return "binary" if _CONTROL.search(data) else "csv"


def check_format(*, kind: str, rows: int | None, columns: int | None,
                 parse_error: str | None) -> GateResult:
    """`ingest.format`: CSV or Parquet by content, parsed, with a header and >= 1 row."""
    name, threshold = "ingest.format", {"allowed": ["csv", "parquet"], "min_rows": 1}
    if kind not in ("csv", "parquet"):
        return failed(name, metrics={"detected": kind}, threshold=threshold,
                      detail=f"content detected as {kind}; only CSV or Parquet is accepted "
                             "(never pickle/joblib): export the data as CSV or Parquet")
    if parse_error is not None or rows is None or columns is None:
        return failed(name, metrics={"detected": kind, "parse_error": parse_error},
                      threshold=threshold,
                      detail=f"content looks like {kind} but does not parse; re-export it")
    ok = rows >= 1 and columns >= 1
    return check(name, metrics={"detected": kind, "rows": rows, "columns": columns},
                 threshold=threshold, ok=ok,
                 detail="" if ok else "no data rows under a header; check the export")


def check_integrity(*, digest: str, pin: str | None, kind: str) -> GateResult:
    """`ingest.integrity`: sha256 of the bytes equals the pin that applies, if one does."""
    metrics: dict[str, Any] = {"pin": kind, "sha256": digest, "expected": pin,
                               "matched": None if pin is None else digest == pin}
    threshold = {"sha256_must_match_pin": kind != "none"}
    if kind == "sidecar-malformed":
        return failed("ingest.integrity", metrics=metrics, threshold=threshold,
                      detail="the .sha256 sidecar is malformed: write one line "
                             "'<sha256>  <file name>' (sha256sum output)")
    if pin is None:
        return check("ingest.integrity", metrics=metrics, threshold=threshold, ok=True,
                     detail="no pin applies; add a <file>.sha256 sidecar to pin this data")
    ok = digest == pin
    return check("ingest.integrity", metrics=metrics, threshold=threshold, ok=ok,
                 detail="" if ok else f"file does not match its {kind}: the data changed; "
                                      "verify where it came from before re-pinning")


def read_capped(path: Path, *, max_bytes: int, expect: os.stat_result | None = None,
                follow_symlinks: bool = False) -> bytes:
    """Read a regular file, not through a final symlink, refusing more than `max_bytes`.

    `follow_symlinks` is for hash-pinned files (suite, profile) only: their digest
    matters, not their path (config maps are often mounted as symlinks).

    Raises:
        OSError: it cannot be opened, is not `expect` (swapped since checked),
            is not a regular file, or is larger than the cap.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)  # NONBLOCK: a FIFO swapped in must not hang the run
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        same = expect is None or (st.st_dev, st.st_ino) == (expect.st_dev, expect.st_ino)
        if not (same and stat.S_ISREG(st.st_mode)):
            raise OSError("file changed after it was checked")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError("file is larger than the cap")
    return data


def read_sidecar(path: Path) -> str | None:
    """The digest in ``<file>.sha256`` (sha256sum format): None if absent, "" if malformed."""
    sidecar = path.with_name(path.name + ".sha256")
    if not os.path.lexists(sidecar):
        return None
    try:
        text = read_capped(sidecar, max_bytes=_SIDECAR_MAX_BYTES).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return ""
    entries = [line.split() for line in text.splitlines() if line.strip()]
    if len(entries) != 1 or len(entries[0]) > 2:
        return ""
    digest, *named = entries[0]
    if named and Path(named[0].lstrip("*")).name != path.name:
        return ""  # it vouches for another file
    return digest.lower() if _SHA256.match(digest.lower()) else ""


def parse(data: bytes, kind: str, *, limits: DatasetConfig) -> tuple[pd.DataFrame | None, int, int]:
    """Parse CSV or Parquet from memory into (frame, rows, columns).

    At most ``max_rows + 1`` CSV rows are materialised; Parquet over a cap is not
    materialised at all (frame None) because compressed data can inflate far
    beyond its byte size.
    """
    if kind == "parquet":
        pfile = pq.ParquetFile(io.BytesIO(data))
        rows, columns = pfile.metadata.num_rows, pfile.metadata.num_columns
        if rows > limits.max_rows or columns > limits.max_columns:
            return None, rows, columns
        frame = pfile.read().to_pandas()
    else:
        frame = pd.read_csv(io.StringIO(data.decode("utf-8-sig")), nrows=limits.max_rows + 1)
    return frame, len(frame), len(frame.columns)


def _block(gates: StageGates, result: GateResult) -> NoReturn:
    gates.enforce(result)  # raises for a failed result
    raise GateFailed(gates.results)


def ingest(ctx: RunContext, *, source: str | None = None) -> tuple[Dataset, list[GateResult]]:
    """Check, read once, pin-verify and parse the dataset file.

    Args:
        ctx: The run's context.
        source: A local path given at run time (``--data``). None reads the
            configured ``dataset.source``, whose config pin then applies; any
            other file is pinned only by its ``<file>.sha256`` sidecar, if present.

    Returns:
        The parsed dataset and this stage's gate results.

    Raises:
        GateFailed: a gate blocked the file.
    """
    ds, gates = ctx.settings.dataset, StageGates(ctx)
    uri = ds.source if source is None else source
    gates.enforce(run_check("ingest.source", check_source, uri))
    path = local_path(uri)
    changed = failed("ingest.source", threshold={"unchanged_since_check": True},
                     detail="the file changed or vanished while being read; re-run")
    try:
        st = os.lstat(path)
    except OSError:
        _block(gates, changed)
    size = run_check("ingest.size", check_size, n_bytes=st.st_size, rows=None, columns=None,
                     limits=ds)
    if not size.passed:
        _block(gates, size)  # refused before a single byte is read
    try:
        data = read_capped(path, max_bytes=ds.max_bytes, expect=st)
    except OSError:
        _block(gates, changed)
    digest = hashlib.sha256(data).hexdigest()
    # The config pin vouches for the configured file only (also when --data names it).
    pin, pin_kind = ((ds.sha256, "config-pin") if ds.sha256 and path == local_path(ds.source)
                     else (None, "none"))
    if pin is None and (sidecar := read_sidecar(path)) is not None:
        pin, pin_kind = (sidecar, "sidecar") if sidecar else (None, "sidecar-malformed")
    gates.enforce(run_check("ingest.integrity", check_integrity, digest=digest, pin=pin,
                            kind=pin_kind))
    kind = sniff_format(data)
    frame, rows, columns, parse_error = None, None, None, None
    if kind in ("csv", "parquet"):
        try:
            frame, rows, columns = parse(data, kind, limits=ds)
        except Exception as exc:  # noqa: BLE001 - any parser error refuses the file
            parse_error = type(exc).__name__
    gates.enforce(run_check("ingest.format", check_format, kind=kind, rows=rows,
                            columns=columns, parse_error=parse_error))
    size = run_check("ingest.size", check_size, n_bytes=len(data), rows=rows, columns=columns,
                     limits=ds)
    if frame is None:
        _block(gates, size if not size.passed else failed("ingest.size", detail="not parsed"))
    gates.enforce(size)
    return Dataset(frame=frame, uri=str(path), sha256=digest,
                   format="parquet" if kind == "parquet" else "csv",
                   integrity=cast(Integrity, pin_kind), target=ds.target), gates.results


@task(name="ingest", cache_policy=NO_CACHE, persist_result=False)  # a cached result skips gates
def ingest_task(ctx: RunContext, *, source: str | None = None) -> tuple[Dataset, list[GateResult]]:
    """Prefect task: check, read and parse the dataset file (see `ingest`).

    Args:
        ctx: The run's context.
        source: Local path from ``--data``; None uses the configured source.

    Returns:
        The dataset and this stage's gate results.
    """
    return ingest(ctx, source=source)
