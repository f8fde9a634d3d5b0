"""The source vocabulary and its pure rules, shared by `tasks.sources` and its
local and remote readers. It is a module of its own so that they can all import it
without importing one another; there is no I/O here.

* `SourceRefused`, `TooLarge`, `FetchFailed`: the refusals. Their texts never quote
  file contents or URL query strings, because they end up in reports.
* `Remote`, `Located`, `Fetched`: a parsed URI, a source that passed the rules, what
  was read from it.
* `parse_remote`, `match_prefix`: URI normalisation and the allow-list match.
* `parse_sidecar`: the ``<file>.sha256`` / ``<uri>.sha256`` pin (sha256sum format).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

Scheme = Literal["file", "s3", "https"]
Checksum = Literal["verified", "mismatch", "absent", "composite", "not-applicable"]
SIDECAR_MAX_BYTES = 4096
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENCODED_SEPARATORS = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


class SourceRefused(Exception):
    """The source breaks a rule (`ingest.source`); ``reason`` is a stable keyword."""

    def __init__(self, reason: str, detail: str, **metrics: Any):
        super().__init__(detail)
        self.reason, self.detail, self.metrics = reason, detail, {"reason": reason, **metrics}


class TooLarge(Exception):
    """More than the byte cap (`ingest.size`); ``measured`` says how it was known."""

    def __init__(self, n_bytes: int, measured: str):
        super().__init__(f"{n_bytes} bytes ({measured})")
        self.n_bytes, self.measured = n_bytes, measured


class FetchFailed(Exception):
    """The source could not be read (network, server, permissions); no data in the text."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Remote:
    """A parsed ``s3://`` or ``https://`` URI (``host`` is the bucket for s3)."""

    scheme: Literal["s3", "https"]
    host: str
    port: int | None
    path: str  # starts with "/"

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port not in (None, 443) else ""
        return f"{self.scheme}://{host}{port}{self.path}"

    @property
    def key(self) -> str:
        return self.path[1:]


@dataclass(frozen=True)
class Located:
    """A source that passed the rules: where to read it from."""

    scheme: Scheme
    uri: str  # real path for files, normalised URI for remote sources
    path: Path | None = None  # file: real path, inside root
    root: Path | None = None  # file: real data root
    remote: Remote | None = None
    prefix: str | None = None  # remote: the allow-list entry that matched


@dataclass(frozen=True)
class Fetched:
    """The bytes, the sidecar digest (None: absent, "": malformed/unreadable), the checksum."""

    data: bytes
    sidecar: str | None
    checksum: Checksum = "not-applicable"
    checksum_algorithm: str | None = None


def parse_remote(uri: str, *, prefix: bool = False) -> Remote:
    """Parse and normalise an ``s3://`` or ``https://`` URI (``prefix``: may end in "/").

    Raises:
        ValueError: credentials, query, fragment, dot or encoded-separator segments,
            a bad bucket name, or no object path.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("s3", "https"):
        raise ValueError("scheme must be s3 or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URI are refused")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise ValueError("query strings and fragments are refused")
    path = parts.path or "/"
    if "\\" in path or _ENCODED_SEPARATORS.search(path):
        raise ValueError("backslashes and encoded dots/slashes are refused in the path")
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        raise ValueError("'.', '..' and empty segments are refused in the path")
    if not prefix and (not segments or segments[-1] == ""):
        raise ValueError("the URI names no object")
    host = (parts.hostname or "").lower()
    if scheme == "s3":
        if not _BUCKET.match(parts.netloc):
            raise ValueError("invalid bucket name")
        return Remote("s3", parts.netloc, None, path)
    if not host:
        raise ValueError("no host")
    return Remote("https", host, parts.port or 443, path)


def match_prefix(remote: Remote, allowed: Sequence[str]) -> str | None:
    """The first allow-list entry covering `remote`, on path-segment boundaries."""
    for entry in allowed:
        try:
            pre = parse_remote(entry, prefix=True)
        except ValueError:
            continue  # a malformed entry allows nothing
        if (pre.scheme, pre.host, pre.port) != (remote.scheme, remote.host, remote.port):
            continue
        if pre.path.endswith("/"):
            if remote.path.startswith(pre.path):
                return entry
        elif remote.path == pre.path or remote.path.startswith(pre.path + "/"):
            return entry
    return None


def parse_sidecar(raw: bytes, name: str) -> str:
    """The digest of a sha256sum line vouching for `name`; "" if malformed."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return ""
    entries = [line.split() for line in text.splitlines() if line.strip()]
    if len(raw) > SIDECAR_MAX_BYTES or len(entries) != 1 or len(entries[0]) > 2:
        return ""
    digest, *named = entries[0]
    if named and named[0].lstrip("*").rsplit("/", 1)[-1] != name:
        return ""  # it vouches for another file
    return digest.lower() if _SHA256.match(digest.lower()) else ""
