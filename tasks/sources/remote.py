"""Fetching the ``s3://`` and ``https://`` sources that `tasks.sources.locate`
matched against ``dataset.allowed_sources``, each with its ``.sha256`` sidecar, under
the byte cap (the rules are listed in `tasks.sources`). botocore and httpx are
imported inside the functions, so a run on local files never loads them.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from tasks.sources.rules import (
    SIDECAR_MAX_BYTES,
    Checksum,
    Fetched,
    FetchFailed,
    Remote,
    SourceRefused,
    TooLarge,
    match_prefix,
    parse_remote,
    parse_sidecar,
)

if TYPE_CHECKING:
    import httpx
    from mypy_boto3_s3 import S3Client

MAX_REDIRECTS = 5
HTTP_CONNECT_TIMEOUT, HTTP_READ_TIMEOUT, HTTP_DEADLINE = 10.0, 30.0, 600.0
_REDIRECTS = (301, 302, 303, 307, 308)
_S3_MISSING = ("NoSuchKey", "404", "NotFound")


# --- s3 ------------------------------------------------------------------------------------


def fetch_s3(client: S3Client, remote: Remote, *, max_bytes: int) -> Fetched:
    """HEAD (size, ETag) -> refuse over the cap -> GET that very version with
    ``ChecksumMode=ENABLED`` -> compare the stored full-object checksum (SHA-256, else
    CRC32 or SHA-1, the SDK's upload defaults) with the bytes received."""
    from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

    bucket, key = remote.host, remote.key
    try:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        raise _s3_failure(exc, "HEAD") from None
    except BotoCoreError as exc:
        raise FetchFailed("unreachable", f"S3 unreachable ({type(exc).__name__})") from None
    if head["ContentLength"] > max_bytes:
        raise TooLarge(head["ContentLength"], "head")  # nothing downloaded
    kwargs: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "ChecksumMode": "ENABLED",
        "IfMatch": head["ETag"],
    }
    if head.get("VersionId") not in (None, "null"):
        kwargs["VersionId"] = head["VersionId"]
    buf = bytearray()
    try:
        resp = client.get_object(**kwargs)
        with resp["Body"] as body:
            # Read to the empty chunk: botocore validates its checksum only there.
            while chunk := body.read(1 << 20):
                buf += chunk
                if len(buf) > max_bytes:
                    raise TooLarge(len(buf), "stream")
    except FlexibleChecksumError:  # botocore's own check failed while reading
        return Fetched(b"", _s3_sidecar(client, bucket, key), "mismatch")
    except ClientError as exc:
        raise _s3_failure(exc, "GET") from None
    except BotoCoreError as exc:
        raise FetchFailed("unreachable", f"S3 read failed ({type(exc).__name__})") from None
    data = bytes(buf)
    checksum, algorithm = _compare_checksum(resp, data)
    return Fetched(data, _s3_sidecar(client, bucket, key), checksum, algorithm)


def _compare_checksum(resp: Any, data: bytes) -> tuple[Checksum, str | None]:
    stored = {alg: resp.get(f"Checksum{alg}") for alg in ("SHA256", "CRC32", "SHA1")}
    if any(v and "-" in v for v in stored.values()) or resp.get("ChecksumType") == "COMPOSITE":
        return "composite", None  # multipart: a checksum of part checksums
    for alg, value in stored.items():
        if value:
            digest = (
                hashlib.sha256(data).digest()
                if alg == "SHA256"
                else hashlib.sha1(data).digest()  # noqa: S324 - the store's own checksum
                if alg == "SHA1"
                else zlib.crc32(data).to_bytes(4, "big")
            )
            ok = base64.b64encode(digest).decode() == value
            return ("verified" if ok else "mismatch"), alg.lower()
    return "absent", None


def _s3_sidecar(client: S3Client, bucket: str, key: str) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        resp = client.get_object(Bucket=bucket, Key=key + ".sha256")
    except ClientError as exc:
        return None if _s3_code(exc) in _S3_MISSING else ""
    except BotoCoreError:
        return ""
    with resp["Body"] as body:
        raw = body.read(SIDECAR_MAX_BYTES + 1)
    return parse_sidecar(raw, key.rsplit("/", 1)[-1])


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _s3_failure(exc: Any, verb: str) -> FetchFailed:
    code = _s3_code(exc)
    if code in _S3_MISSING:
        return FetchFailed("not_found", "no such S3 object; check the URI")
    if code in ("PreconditionFailed", "412"):
        return FetchFailed("changed", "the S3 object changed while being read; re-run")
    return FetchFailed(
        "denied" if code in ("AccessDenied", "403") else "error",
        f"S3 refused the {verb} ({code}); check the pipeline's permissions",
    )


# --- https ---------------------------------------------------------------------------------


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """System trust plus `ca_bundle`, TLS 1.2 or newer, hostname checked."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle is not None:
        ctx.load_verify_locations(cafile=str(ca_bundle))
    return ctx


def fetch_https(
    remote: Remote,
    *,
    max_bytes: int,
    ca_bundle: Path | None,
    allowed: Sequence[str],
    deadline: float = HTTP_DEADLINE,
) -> Fetched:
    """GET the URI and its ``.sha256`` sidecar: verified TLS, no proxies or netrc from the
    environment, uncompressed bodies only, same-host allow-listed redirects only."""
    import httpx

    timeout = httpx.Timeout(HTTP_CONNECT_TIMEOUT, read=HTTP_READ_TIMEOUT)
    headers = {"Accept-Encoding": "identity", "User-Agent": "secure-pipeline"}
    try:
        with httpx.Client(
            verify=tls_context(ca_bundle),
            trust_env=False,
            timeout=timeout,
            follow_redirects=False,
            headers=headers,
        ) as client:
            stop = time.monotonic() + deadline
            data = _get(client, remote, max_bytes=max_bytes, allowed=allowed, stop=stop)
            if data is None:  # only the sidecar request may answer "missing"
                raise FetchFailed("http_status", "the server answered without a body")
            side = Remote(remote.scheme, remote.host, remote.port, remote.path + ".sha256")
            try:
                raw = _get(
                    client,
                    side,
                    max_bytes=SIDECAR_MAX_BYTES,
                    allowed=allowed,
                    stop=stop,
                    missing_ok=True,
                )
            except (FetchFailed, TooLarge, SourceRefused):
                raw = b""
    except httpx.HTTPError as exc:
        raise _http_failure(exc) from None
    name = remote.path.rsplit("/", 1)[-1]
    return Fetched(data, None if raw is None else parse_sidecar(raw, name))


def _get(
    client: httpx.Client,
    remote: Remote,
    *,
    max_bytes: int,
    allowed: Sequence[str],
    stop: float,
    missing_ok: bool = False,
) -> bytes | None:
    current = remote
    for _ in range(MAX_REDIRECTS + 1):
        with client.stream("GET", current.uri) as resp:
            if resp.status_code in _REDIRECTS:
                current = _redirect_target(current, resp.headers.get("location"), allowed)
                continue
            if missing_ok and resp.status_code in (404, 410):
                return None
            if resp.status_code != 200:
                raise FetchFailed("http_status", f"the server answered HTTP {resp.status_code}")
            if resp.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
                raise FetchFailed(
                    "encoding",
                    "the server sent a compressed body despite "
                    "Accept-Encoding: identity; refused (decompression bombs)",
                )
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(int(declared), "content-length")
            buf = bytearray()
            for chunk in resp.iter_raw():
                buf += chunk
                if len(buf) > max_bytes:
                    raise TooLarge(len(buf), "stream")
                if time.monotonic() > stop:
                    raise FetchFailed("timeout", "the download exceeded its time limit")
            return bytes(buf)
    raise FetchFailed("redirects", f"more than {MAX_REDIRECTS} redirects")


def _redirect_target(current: Remote, location: str | None, allowed: Sequence[str]) -> Remote:
    if not location:
        raise FetchFailed("http_status", "a redirect without a Location header")
    try:
        target = parse_remote(urljoin(current.uri, location))
    except ValueError as exc:
        raise SourceRefused(
            "redirect_refused", f"redirect to a refused URI: {exc}", scheme="https"
        ) from None
    if (target.scheme, target.host, target.port) != (current.scheme, current.host, current.port):
        raise SourceRefused(
            "redirect_other_host",
            "the server redirected to another host or "
            "scheme; refused: allow-list and use the final URI",
            scheme="https",
            redirect_host=target.host,
        )
    if match_prefix(target, allowed) is None:
        raise SourceRefused(
            "redirect_not_allowed",
            "the server redirected outside dataset.allowed_sources; refused",
            scheme="https",
        )
    return target


def _http_failure(exc: Exception) -> FetchFailed:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return FetchFailed(
                "tls",
                "TLS verification failed: the server's certificate is "
                "not trusted for this host; set dataset.ca_bundle to its CA",
            )
        cause = cause.__cause__ or cause.__context__
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return FetchFailed("timeout", f"the server timed out ({type(exc).__name__})")
    return FetchFailed("network", f"https fetch failed ({type(exc).__name__})")
