"""Ingest gates: source (confinement, allow-list), size, format (by content, never
unpickling; strict UTF-8), integrity, formula cells."""

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

from tasks.checks.ingestion import check_formula_cells, check_integrity, check_size
from tasks.common.context import RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.ingest import ingest
from tasks.sources.content import formula_cells, sniff_format
from tests.conftest import variant

TINY_CSV = b"a,b,target\n1.5,2.5,0\n3.5,4.5,1\n5.5,6.5,1\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def rctx(ctx: RunContext, root: Path) -> RunContext:
    """The bundled settings with the data root moved to a fresh directory."""
    return variant(ctx, data_root=root)


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
    assert [r.name for r in results] == [
        "ingest.source",
        "ingest.integrity",
        "ingest.format",
        "ingest.size",
        "ingest.formula_cells",
    ]
    assert all(r.passed for r in results)
    assert dataset.rows == 569 and dataset.format == "csv" and dataset.integrity == "config-pin"
    assert gate(results, "ingest.integrity").metrics["matched"] is True
    assert gate(results, "ingest.source").metrics == {"scheme": "file", "inside_root": True}
    assert ctx.audit.verify().entries == 5  # every gate audited


@pytest.mark.parametrize("name", ["breast_cancer.csv", "breast_cancer", "./breast_cancer.csv"])
def test_dataset_name_resolves_in_data_root_and_keeps_config_pin(
    ctx: RunContext, name: str
) -> None:
    dataset, _ = ingest(ctx, source=name)
    assert dataset.integrity == "config-pin" and dataset.uri == ctx.settings.dataset.source


def test_explicit_source_without_sidecar_has_no_pin(rctx: RunContext, root: Path) -> None:
    dataset, results = ingest(rctx, source=write(root / "new.csv", TINY_CSV))
    assert dataset.integrity == "none" and dataset.rows == 3
    assert dataset.sha256 == hashlib.sha256(TINY_CSV).hexdigest()
    assert "sidecar" in gate(results, "ingest.integrity").detail


def test_parquet_detected_by_content_whatever_the_name(rctx: RunContext, root: Path) -> None:
    buf = io.BytesIO()
    pd.read_csv(io.BytesIO(TINY_CSV)).to_parquet(buf)
    dataset, _ = ingest(rctx, source=write(root / "data.csv", buf.getvalue()))
    assert dataset.format == "parquet" and dataset.rows == 3
    dataset, _ = ingest(rctx, source=write(root / "data.parquet", TINY_CSV))
    assert dataset.format == "csv"


def test_utf8_bom_is_not_part_of_the_header(rctx: RunContext, root: Path) -> None:
    dataset, _ = ingest(rctx, source=write(root / "bom.csv", b"\xef\xbb\xbf" + TINY_CSV))
    assert list(dataset.frame.columns) == ["a", "b", "target"]


def test_file_uri_accepted(rctx: RunContext, root: Path) -> None:
    dataset, _ = ingest(rctx, source=Path(write(root / "new.csv", TINY_CSV)).as_uri())
    assert dataset.rows == 3


def test_symlink_resolving_inside_root_is_read(rctx: RunContext, root: Path) -> None:
    (root / "exports").mkdir()
    write(root / "exports" / "real.csv", TINY_CSV)
    (root / "current.csv").symlink_to(root / "exports" / "real.csv")
    dataset, _ = ingest(rctx, source="current.csv")
    assert dataset.uri == str(root / "exports" / "real.csv") and dataset.rows == 3


# --- ingest.source -------------------------------------------------------------------------


def test_missing_file_blocked(rctx: RunContext, root: Path) -> None:
    g = blocked(rctx, str(root / "nope.csv"))
    assert g.name == "ingest.source" and g.metrics["reason"] == "not_found"


def test_directory_blocked(rctx: RunContext, root: Path) -> None:
    (root / "dir").mkdir()
    g = blocked(rctx, "dir")
    assert g.name == "ingest.source" and g.metrics["reason"] == "not_regular"


def test_traversal_blocked(rctx: RunContext, root: Path) -> None:
    write(root.parent / "x.csv", TINY_CSV)  # exists, one level up
    for source in ("../x.csv", str(root / ".." / "x.csv"), "sub/../../x.csv"):
        g = blocked(rctx, source)
        assert g.name == "ingest.source" and g.metrics["reason"] == "traversal", source
        assert ".." in g.detail


def test_absolute_path_outside_root_blocked(rctx: RunContext, tmp_path: Path) -> None:
    g = blocked(rctx, write(tmp_path / "outside.csv", TINY_CSV))
    assert g.name == "ingest.source" and g.metrics["reason"] == "outside_root"
    assert "data_root" in g.detail and g.threshold["data_root"] == str(
        rctx.settings.dataset.data_root
    )


def test_symlink_out_of_root_blocked(rctx: RunContext, root: Path, tmp_path: Path) -> None:
    (root / "link.csv").symlink_to(write(tmp_path / "outside.csv", TINY_CSV))
    g = blocked(rctx, "link.csv")
    assert g.name == "ingest.source" and g.metrics["reason"] == "symlink_escape"
    assert "symlink" in g.detail


def test_symlinked_directory_inside_root_pointing_out_blocked(
    rctx: RunContext, root: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "elsewhere" / "d.csv", TINY_CSV)
    (root / "exports").symlink_to(tmp_path / "elsewhere")
    for source in ("exports/d.csv", str(root / "exports" / "d.csv")):
        g = blocked(rctx, source)
        assert g.name == "ingest.source" and g.metrics["reason"] == "symlink_escape", source


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://nightly-data/data.csv", "not_allowed"),
        ("https://data.example.org/exports/data.csv", "not_allowed"),
        ("http://data.example.org/exports/data.csv", "insecure_scheme"),
        ("ftp://host/data.csv", "unsupported_scheme"),
        ("file://otherhost/data.csv", "bad_uri"),
    ],
)
def test_remote_and_odd_sources_refused(ctx: RunContext, uri: str, reason: str) -> None:
    g = blocked(ctx, uri)
    assert g.name == "ingest.source" and g.metrics["reason"] == reason


def test_http_refused_even_when_allow_listed(ctx: RunContext) -> None:
    allowing = variant(ctx, allowed_sources=["http://data.example.org/"])
    g = blocked(allowing, "http://data.example.org/data.csv")
    assert g.metrics["reason"] == "insecure_scheme" and "https" in g.detail


def test_allow_list_is_on_path_segments(ctx: RunContext) -> None:
    allowing = variant(ctx, allowed_sources=["s3://nightly-data/exports"])
    g = blocked(allowing, "s3://nightly-data/exports-private/data.csv")
    assert g.metrics["reason"] == "not_allowed"
    assert g.threshold["allowed_sources"] == ["s3://nightly-data/exports"]


# --- ingest.size ---------------------------------------------------------------------------


def test_byte_cap_checked_before_reading(rctx: RunContext, root: Path) -> None:
    g = blocked(variant(rctx, max_bytes=10), write(root / "d.csv", TINY_CSV))
    assert g.name == "ingest.size" and g.metrics["bytes"] == len(TINY_CSV)
    assert g.metrics["bytes_measured_from"] == "stat"  # fstat of the open file, no read
    assert g.threshold["max_bytes"] == 10


def test_row_and_column_caps(rctx: RunContext, root: Path) -> None:
    source = write(root / "d.csv", TINY_CSV)
    g = blocked(variant(rctx, max_rows=2), source)
    assert g.name == "ingest.size" and g.metrics["rows"] == 3 and "rows" in g.detail
    g = blocked(variant(rctx, max_columns=2), source)
    assert g.name == "ingest.size" and g.metrics["columns"] == 3


def test_parquet_row_cap_read_from_metadata(rctx: RunContext, root: Path) -> None:
    buf = io.BytesIO()
    pd.DataFrame({"a": [0.0] * 1000, "target": [0] * 1000}).to_parquet(buf)
    g = blocked(variant(rctx, max_rows=10), write(root / "d.parquet", buf.getvalue()))
    assert g.name == "ingest.size" and g.metrics["rows"] == 1000


def test_check_size_pure() -> None:
    from tasks.common.settings import DatasetConfig

    limits = DatasetConfig.model_construct(max_bytes=100, max_rows=5, max_columns=3)
    assert check_size(n_bytes=100, rows=5, columns=3, limits=limits).passed
    assert not check_size(n_bytes=101, rows=None, columns=None, limits=limits).passed


# --- ingest.format -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.csv", "data.parquet", "model.pkl"])
def test_pickle_payload_refused_and_never_executed(rctx: RunContext, root: Path, name: str) -> None:
    live = root / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload is real: loading it runs code
    assert live.exists()
    marker = root / "marker"
    g = blocked(rctx, write(root / name, pickle.dumps(Payload(marker), protocol=4)))
    assert g.name == "ingest.format" and g.metrics["detected"] == "pickle"
    assert "pickle" in g.detail
    assert not marker.exists()


def test_protocol0_pickle_text_is_never_unpickled(rctx: RunContext, root: Path) -> None:
    marker = root / "marker"
    source = write(root / "data.csv", pickle.dumps(Payload(marker), protocol=0))
    with contextlib.suppress(GateFailed):  # text pickle is text: parsed as CSV at most
        ingest(rctx, source=source)
    assert not marker.exists()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.csv", TINY_CSV)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (random.Random(7).randbytes(4096), "binary"),
        (b"a,b\n1,2\x00\n", "binary"),
        ("a,b\ncaf\u00e9,1\n".encode("latin-1"), "bad-encoding"),
        ("a,b\ncaf\u00e9,1\n".encode("utf-16"), "utf-16"),
        ("\ufeffa,b\ncaf\u00e9,1\n".encode(), "csv"),
        (b"a,b\n1,\x07\n", "binary"),
        (gzip.compress(TINY_CSV, mtime=0), "gzip"),
        (_zip_bytes(), "zip"),
        (b"\x93NUMPY\x01\x00", "numpy"),
        (b"PAR1 truncated parquet", "csv"),
    ],
)
def test_sniff_format(data: bytes, kind: str) -> None:
    assert sniff_format(data) == kind


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (random.Random(7).randbytes(4096), "binary"),
        (_zip_bytes(), "zip"),
        (gzip.compress(TINY_CSV, mtime=0), "gzip"),
        ("a\n\u00e9\n".encode("utf-16"), "utf-16"),
    ],
)
def test_refused_formats_blocked(rctx: RunContext, root: Path, data: bytes, kind: str) -> None:
    g = blocked(rctx, write(root / "data.csv", data))
    assert g.name == "ingest.format" and g.metrics["detected"] == kind and kind in g.detail


def test_bad_encoding_names_offset_line_and_expected_encoding(rctx: RunContext, root: Path) -> None:
    data = "a,b,target\n1.5,x,0\n2.5,caf\u00e9,1\n".encode("cp1252")
    g = blocked(rctx, write(root / "d.csv", data))
    offset = data.index(b"\xe9")
    assert g.name == "ingest.format" and g.metrics == {
        "detected": "bad-encoding",
        "offset": offset,
        "line": 3,
        "expected": "utf-8",
    }
    assert f"byte offset {offset}" in g.detail and "line 3" in g.detail
    assert "expected UTF-8" in g.detail and "caf" not in g.model_dump_json()


def test_header_only_csv_blocked(rctx: RunContext, root: Path) -> None:
    g = blocked(rctx, write(root / "d.csv", b"a,b,target\n"))
    assert g.name == "ingest.format" and g.metrics["rows"] == 0


def test_corrupt_parquet_blocked(rctx: RunContext, root: Path) -> None:
    g = blocked(rctx, write(root / "d.parquet", b"PAR1" + b"\x01" * 32 + b"PAR1"))
    assert g.name == "ingest.format" and g.metrics["parse_error"]


# --- ingest.formula_cells ------------------------------------------------------------------

FORMULA_CSV = (
    b"a,note,code,target\n"
    b'1.5,=HYPERLINK("http://x"),ok,0\n'
    b"-2.5,fine,@SUM(A1),1\n"
    b"3.5,+cmd|' /C calc'!A0,-1.5,1\n"
    b"4.5,\tcmd,+7,0\n"
)


def test_formula_cells_blocked_with_count_and_columns_only(rctx: RunContext, root: Path) -> None:
    g = blocked(rctx, write(root / "d.csv", FORMULA_CSV))
    assert g.name == "ingest.formula_cells"
    assert g.metrics == {"cells": 4, "columns": ["note", "code"], "header_positions": []}
    assert g.threshold == {"max_formula_cells": 0}
    dumped = g.model_dump_json()
    assert "HYPERLINK" not in dumped and "SUM" not in dumped and "calc" not in dumped


def test_numbers_in_text_columns_are_not_formulas() -> None:
    frame = pd.DataFrame(
        {
            "code": ["-1.5", "+3", "abc", "-", "1,5%", " -2e3", None],
            "x": [-1.0, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    assert formula_cells(frame) == (0, [], [])
    assert check_formula_cells(frame).passed


@pytest.mark.parametrize("cell", ["=1+1", "@A1", "-2+3", "+A1", "\t=1", "\r=1", "  =1", "--1"])
def test_each_formula_trigger_is_flagged(cell: str) -> None:
    frame = pd.DataFrame({"text": ["a", cell], "n": [1, -2]})
    assert formula_cells(frame) == (1, ["text"], [])


def test_formula_in_header_is_flagged_by_position() -> None:
    frame = pd.DataFrame({"a": [1.0], "=cmd()": [2.0]})
    g = check_formula_cells(frame)
    assert not g.passed and g.metrics["header_positions"] == [1] and g.metrics["cells"] == 0


# --- ingest.integrity ----------------------------------------------------------------------


def test_config_pin_mismatch_blocked(ctx: RunContext) -> None:
    g = blocked(variant(ctx, sha256="1" * 64), None)
    assert g.name == "ingest.integrity" and g.metrics["pin"] == "config-pin"
    assert g.metrics["matched"] is False


def test_sidecar_match_passes(rctx: RunContext, root: Path) -> None:
    source = write(root / "new.csv", TINY_CSV)
    digest = hashlib.sha256(TINY_CSV).hexdigest()
    (root / "new.csv.sha256").write_text(f"{digest}  new.csv\n")
    dataset, results = ingest(rctx, source=source)
    assert dataset.integrity == "sidecar" and gate(results, "ingest.integrity").metrics["matched"]


def test_sidecar_mismatch_blocked(rctx: RunContext, root: Path) -> None:
    source = write(root / "new.csv", TINY_CSV)
    (root / "new.csv.sha256").write_text(f"{hashlib.sha256(b'x').hexdigest()}  new.csv\n")
    g = blocked(rctx, source)
    assert g.name == "ingest.integrity" and g.metrics == {
        "pin": "sidecar",
        "sha256": hashlib.sha256(TINY_CSV).hexdigest(),
        "expected": hashlib.sha256(b"x").hexdigest(),
        "matched": False,
        "transport_checksum": "not-applicable",
        "transport_algorithm": None,
    }


@pytest.mark.parametrize("text", ["not a digest\n", "{d}  other.csv\n", "{d}  new.csv\n{d}  b\n"])
def test_malformed_sidecar_blocked(rctx: RunContext, root: Path, text: str) -> None:
    source = write(root / "new.csv", TINY_CSV)
    (root / "new.csv.sha256").write_text(text.format(d=hashlib.sha256(TINY_CSV).hexdigest()))
    g = blocked(rctx, source)
    assert g.name == "ingest.integrity" and g.metrics["pin"] == "sidecar-malformed"


def test_symlinked_sidecar_is_not_trusted(rctx: RunContext, root: Path, tmp_path: Path) -> None:
    source = write(root / "new.csv", TINY_CSV)
    real = tmp_path / "elsewhere.sha256"
    real.write_text(f"{hashlib.sha256(TINY_CSV).hexdigest()}  new.csv\n")
    os.symlink(real, root / "new.csv.sha256")
    g = blocked(rctx, source)
    assert g.name == "ingest.integrity" and g.metrics["pin"] == "sidecar-malformed"


def test_check_integrity_pure() -> None:
    assert check_integrity(digest="a" * 64, pin="a" * 64, kind="sidecar").passed
    assert not check_integrity(digest="a" * 64, pin="b" * 64, kind="config-pin").passed
    assert check_integrity(digest="a" * 64, pin=None, kind="none").passed
    assert check_integrity(digest="a" * 64, pin=None, kind="none", checksum="verified").passed
    bad = check_integrity(digest="a" * 64, pin=None, kind="none", checksum="mismatch")
    assert not bad.passed and "checksum" in bad.detail


def test_a_long_line_is_refused_before_parsing_and_a_long_cell_after(
    rctx: RunContext, root: Path
) -> None:
    capped = variant(rctx, max_line_bytes=1000, max_cell_chars=300)
    long_line = write(root / "line.csv", b"a,target\n" + b"x" * 2000 + b",1\nb,0\n")
    g = blocked(capped, long_line)
    assert g.name == "ingest.size" and g.metrics["line_bytes"] == 2002
    assert g.metrics["rows"] is None, "refused before parsing"
    assert g.threshold["max_line_bytes"] == 1000 and "line_bytes" in g.detail
    cell = '"' + "\n".join(["y" * 50] * 10) + '"'  # 509 characters over short lines
    long_cell = write(root / "cell.csv", f"a,target\n{cell},1\nb,0\n".encode())
    g = blocked(capped, long_cell)
    assert g.name == "ingest.size" and g.metrics["cell_chars"] == 509
    dataset, results = ingest(variant(capped, max_cell_chars=509), source=long_cell)
    assert gate(results, "ingest.size").metrics["cell_chars"] == 509 and dataset.rows == 2


def test_parquet_decimals_arrive_as_floats(rctx: RunContext, root: Path) -> None:
    """A DECIMAL column (common in warehouse exports) is float64, not Python Decimal
    objects, which Great Expectations would convert one by one through the stack."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    values = [decimal.Decimal("1.2500"), decimal.Decimal("-3.0001"), None]
    table = pa.table({"price": pa.array(values, pa.decimal128(9, 4)), "target": [0, 1, 0]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    dataset, _ = ingest(rctx, source=write(root / "d.parquet", buf.getvalue()))
    price = dataset.frame["price"]
    assert price.dtype == "float64"
    assert price.iloc[0] == 1.25 and price.iloc[1] == -3.0001 and pd.isna(price.iloc[2])
