"""Ingest gates: source, size, format (by content, never unpickling), integrity."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks import ingest as ingest_mod
from tasks.common.context import RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.ingest import check_integrity, check_size, ingest, sniff_format

TINY_CSV = b"a,b,target\n1.5,2.5,0\n3.5,4.5,1\n5.5,6.5,1\n"


def variant(ctx: RunContext, **dataset: Any) -> RunContext:
    """The same context with some dataset settings changed (whole section copied)."""
    s = ctx.settings
    return RunContext(s.model_copy(update={"dataset": s.dataset.model_copy(update=dataset)}),
                      ctx.run_id)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def blocked(ctx: RunContext, source: str | None) -> GateResult:
    with pytest.raises(GateFailed) as info:
        ingest(ctx, source=source)
    return info.value.gate


def gate(results: list[GateResult], name: str) -> GateResult:
    return next(r for r in results if r.name == name)


class Payload:
    """Unpickling this creates `marker`: proof that a loader executed the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


# --- happy paths ---------------------------------------------------------------------------

def test_bundled_source_passes_with_config_pin(ctx: RunContext) -> None:
    dataset, results = ingest(ctx)
    assert [r.name for r in results] == ["ingest.source", "ingest.integrity", "ingest.format",
                                         "ingest.size"]
    assert all(r.passed for r in results)
    assert dataset.rows == 569 and dataset.format == "csv" and dataset.integrity == "config-pin"
    assert gate(results, "ingest.integrity").metrics["matched"] is True
    assert ctx.audit.verify().entries == 4  # every gate audited


def test_explicit_source_without_sidecar_has_no_pin(ctx: RunContext, tmp_path: Path) -> None:
    dataset, results = ingest(ctx, source=write(tmp_path / "new.csv", TINY_CSV))
    assert dataset.integrity == "none" and dataset.rows == 3
    assert dataset.sha256 == hashlib.sha256(TINY_CSV).hexdigest()
    assert "sidecar" in gate(results, "ingest.integrity").detail


def test_explicit_source_naming_the_configured_file_keeps_the_config_pin(ctx: RunContext) -> None:
    dataset, _ = ingest(ctx, source=ctx.settings.dataset.source)
    assert dataset.integrity == "config-pin"


def test_parquet_detected_by_content_whatever_the_name(ctx: RunContext, tmp_path: Path) -> None:
    buf = io.BytesIO()
    pd.read_csv(io.BytesIO(TINY_CSV)).to_parquet(buf)
    dataset, _ = ingest(ctx, source=write(tmp_path / "data.csv", buf.getvalue()))
    assert dataset.format == "parquet" and dataset.rows == 3
    dataset, _ = ingest(ctx, source=write(tmp_path / "data.parquet", TINY_CSV))
    assert dataset.format == "csv"


# --- ingest.source -------------------------------------------------------------------------

def test_missing_file_blocked(ctx: RunContext, tmp_path: Path) -> None:
    g = blocked(ctx, str(tmp_path / "nope.csv"))
    assert g.name == "ingest.source" and g.metrics["exists"] is False


def test_symlink_blocked(ctx: RunContext, tmp_path: Path) -> None:
    real = write(tmp_path / "real.csv", TINY_CSV)
    (tmp_path / "link.csv").symlink_to(real)
    g = blocked(ctx, str(tmp_path / "link.csv"))
    assert g.name == "ingest.source" and g.metrics["symlink"] is True and "symlink" in g.detail


def test_directory_blocked(ctx: RunContext, tmp_path: Path) -> None:
    g = blocked(ctx, str(tmp_path))
    assert g.name == "ingest.source" and g.metrics["regular_file"] is False


@pytest.mark.parametrize("uri", ["s3://bucket/data.csv", "https://example.org/data.csv"])
def test_remote_sources_not_supported_yet(ctx: RunContext, uri: str) -> None:
    g = blocked(ctx, uri)
    assert g.name == "ingest.source" and "not supported yet" in g.detail


@pytest.mark.parametrize("uri", ["ftp://host/data.csv", "file://otherhost/data.csv"])
def test_other_schemes_refused(ctx: RunContext, uri: str) -> None:
    assert blocked(ctx, uri).name == "ingest.source"


def test_file_uri_accepted(ctx: RunContext, tmp_path: Path) -> None:
    path = Path(write(tmp_path / "new.csv", TINY_CSV))
    dataset, _ = ingest(ctx, source=path.as_uri())
    assert dataset.rows == 3


# --- ingest.size ---------------------------------------------------------------------------

def test_byte_cap_checked_before_reading(ctx: RunContext, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_read(*_: Any, **__: Any) -> bytes:
        raise AssertionError("read despite the byte cap")

    monkeypatch.setattr(ingest_mod, "read_capped", no_read)
    g = blocked(variant(ctx, max_bytes=10), write(tmp_path / "d.csv", TINY_CSV))
    assert g.name == "ingest.size" and g.metrics["bytes"] == len(TINY_CSV)
    assert g.threshold["max_bytes"] == 10


def test_row_and_column_caps(ctx: RunContext, tmp_path: Path) -> None:
    source = write(tmp_path / "d.csv", TINY_CSV)
    g = blocked(variant(ctx, max_rows=2), source)
    assert g.name == "ingest.size" and g.metrics["rows"] == 3 and "rows" in g.detail
    g = blocked(variant(ctx, max_columns=2), source)
    assert g.name == "ingest.size" and g.metrics["columns"] == 3


def test_parquet_row_cap_read_from_metadata(ctx: RunContext, tmp_path: Path) -> None:
    buf = io.BytesIO()
    pd.DataFrame({"a": [0.0] * 1000, "target": [0] * 1000}).to_parquet(buf)
    g = blocked(variant(ctx, max_rows=10), write(tmp_path / "d.parquet", buf.getvalue()))
    assert g.name == "ingest.size" and g.metrics["rows"] == 1000


def test_check_size_pure() -> None:
    from tasks.common.settings import DatasetConfig
    limits = DatasetConfig.model_construct(max_bytes=100, max_rows=5, max_columns=3)
    assert check_size(n_bytes=100, rows=5, columns=3, limits=limits).passed
    assert not check_size(n_bytes=101, rows=None, columns=None, limits=limits).passed


# --- ingest.format -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["data.csv", "data.parquet", "model.pkl"])
def test_pickle_payload_refused_and_never_executed(ctx: RunContext, tmp_path: Path,
                                                   name: str) -> None:
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload is real: loading it runs code
    assert live.exists()
    marker = tmp_path / "marker"
    g = blocked(ctx, write(tmp_path / name, pickle.dumps(Payload(marker), protocol=4)))
    assert g.name == "ingest.format" and g.metrics["detected"] == "pickle"
    assert "pickle" in g.detail
    assert not marker.exists()


def test_protocol0_pickle_text_is_never_unpickled(ctx: RunContext, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    source = write(tmp_path / "data.csv", pickle.dumps(Payload(marker), protocol=0))
    with contextlib.suppress(GateFailed):  # text pickle is text: parsed as CSV at most
        ingest(ctx, source=source)
    assert not marker.exists()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.csv", TINY_CSV)
    return buf.getvalue()


@pytest.mark.parametrize(("data", "kind"), [
    (b"", "empty"),
    (random.Random(7).randbytes(4096), "binary"),
    (b"a,b\n1,2\x00\n", "binary"),
    ("a,b\ncaf\u00e9,1\n".encode("latin-1"), "binary"),
    (b"a,b\n1,\x07\n", "binary"),
    (gzip.compress(TINY_CSV), "gzip"),
    (_zip_bytes(), "zip"),
    (b"\x93NUMPY\x01\x00", "numpy"),
    (b"PAR1 truncated parquet", "csv"),
])
def test_sniff_format(data: bytes, kind: str) -> None:
    assert sniff_format(data) == kind


@pytest.mark.parametrize(("data", "kind"), [
    (b"", "empty"), (random.Random(7).randbytes(4096), "binary"), (_zip_bytes(), "zip"),
    (gzip.compress(TINY_CSV), "gzip")])
def test_refused_formats_blocked(ctx: RunContext, tmp_path: Path, data: bytes, kind: str) -> None:
    g = blocked(ctx, write(tmp_path / "data.csv", data))
    assert g.name == "ingest.format" and g.metrics["detected"] == kind and kind in g.detail


def test_header_only_csv_blocked(ctx: RunContext, tmp_path: Path) -> None:
    g = blocked(ctx, write(tmp_path / "d.csv", b"a,b,target\n"))
    assert g.name == "ingest.format" and g.metrics["rows"] == 0


def test_corrupt_parquet_blocked(ctx: RunContext, tmp_path: Path) -> None:
    g = blocked(ctx, write(tmp_path / "d.parquet", b"PAR1" + b"\x01" * 32 + b"PAR1"))
    assert g.name == "ingest.format" and g.metrics["parse_error"]


# --- ingest.integrity ----------------------------------------------------------------------

def test_config_pin_mismatch_blocked(ctx: RunContext) -> None:
    g = blocked(variant(ctx, sha256="1" * 64), None)
    assert g.name == "ingest.integrity" and g.metrics["pin"] == "config-pin"
    assert g.metrics["matched"] is False


def test_sidecar_match_passes(ctx: RunContext, tmp_path: Path) -> None:
    source = write(tmp_path / "new.csv", TINY_CSV)
    digest = hashlib.sha256(TINY_CSV).hexdigest()
    (tmp_path / "new.csv.sha256").write_text(f"{digest}  new.csv\n")
    dataset, results = ingest(ctx, source=source)
    assert dataset.integrity == "sidecar" and gate(results, "ingest.integrity").metrics["matched"]


def test_sidecar_mismatch_blocked(ctx: RunContext, tmp_path: Path) -> None:
    source = write(tmp_path / "new.csv", TINY_CSV)
    (tmp_path / "new.csv.sha256").write_text(f"{hashlib.sha256(b'x').hexdigest()}  new.csv\n")
    g = blocked(ctx, source)
    assert g.name == "ingest.integrity" and g.metrics == {
        "pin": "sidecar", "sha256": hashlib.sha256(TINY_CSV).hexdigest(),
        "expected": hashlib.sha256(b"x").hexdigest(), "matched": False}


@pytest.mark.parametrize("text", ["not a digest\n", "{d}  other.csv\n", "{d}  new.csv\n{d}  b\n"])
def test_malformed_sidecar_blocked(ctx: RunContext, tmp_path: Path, text: str) -> None:
    source = write(tmp_path / "new.csv", TINY_CSV)
    (tmp_path / "new.csv.sha256").write_text(text.format(d=hashlib.sha256(TINY_CSV).hexdigest()))
    g = blocked(ctx, source)
    assert g.name == "ingest.integrity" and g.metrics["pin"] == "sidecar-malformed"


def test_check_integrity_pure() -> None:
    assert check_integrity(digest="a" * 64, pin="a" * 64, kind="sidecar").passed
    assert not check_integrity(digest="a" * 64, pin="b" * 64, kind="config-pin").passed
    assert check_integrity(digest="a" * 64, pin=None, kind="none").passed


def test_file_swapped_after_check_is_refused(ctx: RunContext, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    source = write(tmp_path / "d.csv", TINY_CSV)
    real_lstat = os.lstat
    calls = {"n": 0}

    def swapping_lstat(path: Any) -> os.stat_result:
        st = real_lstat(path)
        calls["n"] += 1
        if calls["n"] == 2:  # after the source check: replace the file
            os.replace(write(tmp_path / "other.csv", TINY_CSV), source)  # new inode
        return st

    monkeypatch.setattr(ingest_mod.os, "lstat", swapping_lstat)
    g = blocked(ctx, source)
    assert g.name == "ingest.source" and "changed" in g.detail
