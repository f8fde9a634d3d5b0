"""Source rules without a network: local confinement, the remote allow-list, URI
normalisation, sidecars, and the component-wise open that a late symlink cannot fool."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import pytest

from tasks.sources import Located, Remote, SourceRefused, TooLarge, locate, same_source
from tasks.sources.local import read_local
from tasks.sources.remote import tls_context
from tasks.sources.rules import match_prefix, parse_remote, parse_sidecar

CSV = b"a,target\n1.0,0\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    (path / "d.csv").write_bytes(CSV)
    return path


def refused(source: str, root: Path, allowed: tuple[str, ...] = ()) -> SourceRefused:
    with pytest.raises(SourceRefused) as info:
        locate(source, root=root, allowed=allowed)
    return info.value


# --- local ---------------------------------------------------------------------------------


def test_relative_name_resolves_against_root(root: Path) -> None:
    loc = locate("d.csv", root=root, allowed=())
    assert loc == Located("file", str(root / "d.csv"), path=root / "d.csv", root=root)
    assert locate("d", root=root, allowed=()).path == root / "d.csv"  # bare dataset name


def test_traversal_refused_even_when_it_stays_inside(root: Path) -> None:
    (root / "sub").mkdir()
    assert refused("sub/../d.csv", root).reason == "traversal"
    assert refused("../root/d.csv", root).reason == "traversal"


def test_absolute_outside_refused_absolute_inside_accepted(root: Path, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(CSV)
    assert refused(str(tmp_path / "x.csv"), root).reason == "outside_root"
    assert refused("/etc/passwd", root).reason == "outside_root"
    assert locate(str(root / "d.csv"), root=root, allowed=()).uri == str(root / "d.csv")


def test_symlink_escapes_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.csv").write_bytes(CSV)
    (root / "file-link.csv").symlink_to(tmp_path / "out" / "x.csv")
    (root / "dir-link").symlink_to(tmp_path / "out")
    (root / "rel-link.csv").symlink_to("../out/x.csv")  # relative target, still outside
    for name in ("file-link.csv", "dir-link/x.csv", "rel-link.csv"):
        assert refused(name, root).reason == "symlink_escape", name


def test_symlinked_root_is_followed_once(root: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(root)
    loc = locate(str(tmp_path / "alias" / "d.csv"), root=tmp_path / "alias", allowed=())
    assert loc.path == root / "d.csv" and loc.root == root


def test_not_found_and_not_regular(root: Path) -> None:
    assert refused("nope.csv", root).reason == "not_found"
    (root / "dir").mkdir()
    assert refused("dir", root).reason == "not_regular"
    os.mkfifo(root / "fifo")
    assert refused("fifo", root).reason == "not_regular"


def test_file_uris(root: Path) -> None:
    assert locate((root / "d.csv").as_uri(), root=root, allowed=()).path == root / "d.csv"
    assert refused("file://host/d.csv", root).reason == "bad_uri"
    assert refused("d.csv\x00.txt", root).reason == "bad_uri"


def test_read_local_reads_file_and_sidecar(root: Path) -> None:
    digest = hashlib.sha256(CSV).hexdigest()
    (root / "d.csv.sha256").write_text(f"{digest}  d.csv\n")
    fetched = read_local(locate("d.csv", root=root, allowed=()), max_bytes=100)
    assert fetched.data == CSV and fetched.sidecar == digest
    assert fetched.checksum == "not-applicable"


def test_read_local_refuses_a_symlink_swapped_in_after_the_check(
    root: Path, tmp_path: Path
) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "d.csv").write_bytes(CSV)
    loc = locate("sub/d.csv", root=root, allowed=())
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "d.csv").write_bytes(b"evil,target\n1,0\n")
    (root / "sub").rename(root / "old")
    (root / "sub").symlink_to(tmp_path / "evil")  # the checked path now leads out
    with pytest.raises(SourceRefused) as info:
        read_local(loc, max_bytes=100)
    assert info.value.reason == "changed"


def test_read_local_sizes_before_reading(root: Path) -> None:
    with pytest.raises(TooLarge) as info:
        read_local(locate("d.csv", root=root, allowed=()), max_bytes=len(CSV) - 1)
    assert info.value.n_bytes == len(CSV) and info.value.measured == "stat"


# --- remote URIs and the allow-list --------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://nightly-data/exports/d.csv", Remote("s3", "nightly-data", None, "/exports/d.csv")),
        (
            "https://Data.Example.org/exports/d.csv",
            Remote("https", "data.example.org", 443, "/exports/d.csv"),
        ),
        (
            "https://data.example.org:8443/d.csv",
            Remote("https", "data.example.org", 8443, "/d.csv"),
        ),
    ],
)
def test_parse_remote_normalises(uri: str, expected: Remote) -> None:
    assert parse_remote(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "https://user:pw@data.example.org/d.csv",
        "https://data.example.org/d.csv?token=x",
        "https://data.example.org/d.csv#frag",
        "https://data.example.org/a/../d.csv",
        "https://data.example.org/a/%2e%2e/d.csv",
        "https://data.example.org/a%2fb.csv",
        "https://data.example.org/a\\b.csv",
        "https://data.example.org//d.csv",
        "https://data.example.org/",
        "s3://Bad_Bucket/d.csv",
        "s3://bucket",
        "https:///d.csv",
    ],
)
def test_parse_remote_refuses_tricks(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_remote(uri)


@pytest.mark.parametrize(
    ("uri", "allowed", "match"),
    [
        ("https://data.example.org/exports/d.csv", ["https://data.example.org/exports/"], True),
        ("https://data.example.org/exports/d.csv", ["https://data.example.org/exports"], True),
        ("https://data.example.org/exports-x/d.csv", ["https://data.example.org/exports"], False),
        ("https://data.example.org.evil.com/d.csv", ["https://data.example.org"], False),
        ("https://data.example.org:8443/d.csv", ["https://data.example.org/"], False),
        ("https://data.example.org/d.csv", ["https://data.example.org:443/"], True),
        ("s3://nightly-data/exports/d.csv", ["s3://nightly-data/"], True),
        ("s3://nightly-data-2/exports/d.csv", ["s3://nightly-data/"], False),
        ("s3://nightly-data/exports/d.csv", ["https://nightly-data/"], False),
        ("s3://nightly-data/exports/d.csv", ["not a uri", "s3://nightly-data/exports/d.csv"], True),
    ],
)
def test_allow_list_matches_scheme_host_port_and_path_segments(
    uri: str, allowed: list[str], match: bool
) -> None:
    assert (match_prefix(parse_remote(uri), allowed) is not None) is match


def test_remote_sources_need_the_allow_list(root: Path) -> None:
    uri = "s3://nightly-data/exports/d.csv"
    assert refused(uri, root).reason == "not_allowed"
    loc = locate(uri, root=root, allowed=["s3://nightly-data/exports/"])
    assert loc.scheme == "s3" and loc.prefix == "s3://nightly-data/exports/"
    assert (
        refused("https://h.example/d.csv?sig=1", root, ("https://h.example/",)).reason == "bad_uri"
    )


def test_plain_http_is_refused_even_if_listed(root: Path) -> None:
    assert (
        refused("http://h.example/d.csv", root, ("http://h.example/",)).reason == "insecure_scheme"
    )
    assert refused("HTTP://h.example/d.csv", root).reason == "insecure_scheme"


def test_same_source(root: Path) -> None:
    loc = locate("d.csv", root=root, allowed=())
    assert same_source(loc, str(root / "d.csv")) and same_source(loc, (root / "d.csv").as_uri())
    assert not same_source(loc, str(root / "other.csv"))
    remote = locate("https://H.example/d.csv", root=root, allowed=["https://h.example/"])
    assert same_source(remote, "https://h.example:443/d.csv")
    assert not same_source(remote, "https://h.example/e.csv")


# --- sidecars and TLS ----------------------------------------------------------------------


def test_parse_sidecar() -> None:
    d = "ab" * 32
    assert parse_sidecar(f"{d}  d.csv\n".encode(), "d.csv") == d
    assert parse_sidecar(f"{d.upper()} *d.csv\n".encode(), "d.csv") == d
    assert parse_sidecar(f"{d}\n".encode(), "d.csv") == d
    assert parse_sidecar(f"{d}  exports/d.csv\n".encode(), "d.csv") == d
    for bad in (f"{d}  e.csv", f"{d}  d.csv\n{d}  e.csv", "xyz  d.csv", f"{d} d.csv extra"):
        assert parse_sidecar(bad.encode(), "d.csv") == "", bad
    assert parse_sidecar(b"\xff" * 10, "d.csv") == ""


def test_tls_context_verifies_and_adds_the_extra_ca(tmp_path: Path) -> None:
    from tasks.localstack.tls import ensure_tls

    plain = tls_context(None)
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.minimum_version >= ssl.TLSVersion.TLSv1_2
    with_ca = tls_context(ensure_tls(tmp_path).ca)
    assert "secure-pipeline local CA" in str(with_ca.get_ca_certs())


def test_symlink_loops_are_refused_without_following_links_out(root: Path, tmp_path: Path) -> None:
    (root / "loop.csv").symlink_to("loop.csv")
    (root / "a.csv").symlink_to("b.csv")
    (root / "b.csv").symlink_to("a.csv")
    for name in ("loop.csv", "a.csv"):
        assert refused(name, root).reason == "symlink_loop", name
    (root / "sub").mkdir()
    (root / "sub" / "up.csv").symlink_to("../d.csv")  # '..' in a link that stays inside
    assert locate("sub/up.csv", root=root, allowed=()).path == root / "d.csv"
    (root / "sub" / "far.csv").symlink_to("../../x/../../etc/passwd")
    assert refused("sub/far.csv", root).reason == "symlink_escape"
