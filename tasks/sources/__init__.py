"""Where a dataset's bytes come from: `locate` applies the source rules to a path,
dataset name or URI, and `fetch` reads what passed them. This is the entry point;
the parts live in `tasks.sources.rules` (refusals, records, URI and sidecar
parsing), `tasks.sources.local`, `tasks.sources.remote` (s3, https) and, for
what the bytes are, `tasks.sources.content`.

* Local files resolve (realpath) inside ``dataset.data_root``: ``..``, absolute
  paths elsewhere and symlinks leading out are refused. The file is then opened
  one path component at a time with ``O_NOFOLLOW`` from the root, so a symlink
  swapped in after the check cannot redirect the read.
* ``s3://`` and ``https://`` sources must match a ``dataset.allowed_sources``
  prefix (same scheme, host/bucket and port; path prefix on segment boundaries).
  S3 objects are sized by HEAD before the download, and the checksum the store
  keeps (SHA-256; else CRC32 or SHA-1) is compared with the bytes received. HTTPS
  bodies are capped while they stream, TLS is verified (system trust plus
  ``dataset.ca_bundle``), no proxy or netrc is taken from the environment, and
  redirects never leave the host or the allow-list.
* Next to the data, ``<file>.sha256`` / ``<uri>.sha256`` (sha256sum format) pins
  it. An absent sidecar is no pin; one that cannot be read or parsed blocks.

Refusals raise `SourceRefused`, `TooLarge` or `FetchFailed`; their texts never
quote file contents or URL query strings, because they end up in reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from tasks.sources.local import locate_local, read_local
from tasks.sources.remote import fetch_https, fetch_s3
from tasks.sources.rules import (
    Checksum,
    Fetched,
    FetchFailed,
    Located,
    Remote,
    SourceRefused,
    TooLarge,
    match_prefix,
    parse_remote,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tasks.common.settings import DatasetConfig

__all__ = [
    "Checksum",
    "FetchFailed",
    "Fetched",
    "Located",
    "Remote",
    "SourceRefused",
    "TooLarge",
    "fetch",
    "locate",
    "same_source",
]


def locate(source: str, *, root: Path, allowed: Sequence[str]) -> Located:
    """Apply the source rules to a path, dataset name or URI.

    Raises:
        SourceRefused: with a reason among traversal, outside_root, symlink_escape,
            not_found, not_regular, not_allowed, insecure_scheme, unsupported_scheme,
            bad_uri.
    """
    if "\x00" in source:
        raise SourceRefused("bad_uri", "the source contains a NUL byte")
    scheme = source.split("://", 1)[0].lower() if "://" in source else "file"
    if scheme == "file":
        if "://" in source:
            parts = urlsplit(source)
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise SourceRefused(
                    "bad_uri",
                    "file:// URIs must name a local path (no host, query or fragment)",
                    scheme="file",
                )
            source = unquote(parts.path)
        return locate_local(source, root)
    if scheme == "http":
        raise SourceRefused(
            "insecure_scheme",
            "plain http:// is refused: serve the data over "
            "https:// and add its prefix to dataset.allowed_sources",
            scheme="http",
        )
    if scheme != "s3" and scheme != "https":
        raise SourceRefused(
            "unsupported_scheme",
            f"{scheme}:// sources are not supported: use a local path, s3:// or https://",
            scheme=scheme,
        )
    try:
        remote = parse_remote(source)
    except ValueError as exc:
        raise SourceRefused("bad_uri", f"malformed {scheme}:// URI: {exc}", scheme=scheme) from None
    prefix = match_prefix(remote, allowed)
    if prefix is None:
        raise SourceRefused(
            "not_allowed",
            f"{remote.uri} matches no dataset.allowed_sources "
            "prefix; add one (e.g. "
            f"{remote.scheme}://{remote.host}/exports/) to allow it",
            scheme=scheme,
            allowed_prefix=None,
        )
    return Located(remote.scheme, remote.uri, remote=remote, prefix=prefix)


def same_source(located: Located, configured: str) -> bool:
    """True when `located` is the configured ``dataset.source`` (so its config pin applies)."""
    if located.scheme == "file":
        raw = unquote(urlsplit(configured).path) if configured.startswith("file://") else configured
        return "://" not in raw and located.uri == os.path.realpath(raw)
    try:
        return parse_remote(configured).uri == located.uri
    except ValueError:
        return False


def fetch(located: Located, *, limits: DatasetConfig, s3: S3Client | None = None) -> Fetched:
    """Read a located source under ``dataset.max_bytes`` (see the module docstring).

    Args:
        located: What `locate` accepted.
        limits: The dataset settings (byte cap, CA bundle, allow-list for redirects).
        s3: The run's S3 client, for ``s3://`` sources (the caller owns its endpoint).

    Raises:
        SourceRefused, TooLarge, FetchFailed.
    """
    if located.scheme == "file":
        return read_local(located, max_bytes=limits.max_bytes)
    if located.remote is None:
        raise FetchFailed("error", "a remote source without its parsed URI; failing closed")
    if located.scheme == "s3":
        if s3 is None:
            raise FetchFailed("unreachable", "no S3 endpoint was opened for this run")
        return fetch_s3(s3, located.remote, max_bytes=limits.max_bytes)
    return fetch_https(
        located.remote,
        max_bytes=limits.max_bytes,
        ca_bundle=limits.ca_bundle,
        allowed=limits.allowed_sources,
    )
