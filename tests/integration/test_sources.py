"""Remote sources against real local servers: S3 on the embedded SeaweedFS (through
`s3_service`, as a run does) and HTTPS on a TLS server started here with a
certificate from `tasks.localstack.tls`."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from tasks.common.context import RunContext
from tasks.common.gates import GateFailed, GateResult
from tasks.common.s3 import S3Endpoint, s3_client
from tasks.common.settings import LocalStackConfig, Settings, load_settings
from tasks.ingest import ingest
from tasks.localstack import identities, stack
from tasks.localstack.tls import TlsFiles, ensure_tls
from tasks.sources import FetchFailed, Remote, SourceRefused, TooLarge
from tasks.sources.remote import fetch_https, fetch_s3
from tests.conftest import BUNDLED_CSV, variant
from tests.integration.conftest import free_port

DATA_BUCKET = "nightly-data"
CSV = BUNDLED_CSV.read_bytes()
CAP = 64 * 1024  # max_bytes in the oversize tests


def blocked(ctx: RunContext, source: str, s3: Any = None) -> GateResult:
    with pytest.raises(GateFailed) as info:
        ingest(ctx, source=source, s3=s3)
    return info.value.gate


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --- S3 on SeaweedFS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_bucket(admin_s3: Any) -> str:
    if DATA_BUCKET not in [b["Name"] for b in admin_s3.list_buckets()["Buckets"]]:
        admin_s3.create_bucket(Bucket=DATA_BUCKET)
    return DATA_BUCKET


def put(client: Any, key: str, body: bytes, **kwargs: Any) -> None:
    client.put_object(Bucket=DATA_BUCKET, Key=key, Body=body, **kwargs)


def test_s3_fetch_verifies_the_sha256_checksum(s3: Any, admin_s3: Any, data_bucket: str) -> None:
    put(admin_s3, "exports/d.csv", CSV, ChecksumSHA256=sha256_b64(CSV))
    put(admin_s3, "exports/d.csv.sha256", f"{hashlib.sha256(CSV).hexdigest()}  d.csv\n".encode())
    fetched = fetch_s3(s3, Remote("s3", data_bucket, None, "/exports/d.csv"), max_bytes=len(CSV))
    assert fetched.data == CSV
    assert (fetched.checksum, fetched.checksum_algorithm) == ("verified", "sha256")
    assert fetched.sidecar == hashlib.sha256(CSV).hexdigest()


def test_s3_fetch_without_sha256_reports_what_was_checked(
    s3: Any, admin_s3: Any, data_bucket: str
) -> None:
    put(admin_s3, "exports/crc.csv", CSV, ChecksumAlgorithm="CRC32")
    fetched = fetch_s3(s3, Remote("s3", data_bucket, None, "/exports/crc.csv"), max_bytes=len(CSV))
    assert fetched.data == CSV and fetched.sidecar is None
    assert (fetched.checksum, fetched.checksum_algorithm) == ("verified", "crc32")


def test_oversized_s3_object_refused_before_download(
    s3_endpoint: S3Endpoint, admin_s3: Any, data_bucket: str
) -> None:
    put(admin_s3, "exports/big.csv", b"x" * (CAP + 1))
    client = s3_client(s3_endpoint)
    calls: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    with pytest.raises(TooLarge) as info:
        fetch_s3(client, Remote("s3", data_bucket, None, "/exports/big.csv"), max_bytes=CAP)
    assert info.value.n_bytes == CAP + 1 and info.value.measured == "head"
    assert calls == ["HeadObject"]  # no GetObject: not a byte of the body downloaded


def test_missing_s3_object_fails_cleanly(s3: Any, data_bucket: str) -> None:
    with pytest.raises(FetchFailed) as info:
        fetch_s3(s3, Remote("s3", data_bucket, None, "/exports/none.csv"), max_bytes=CAP)
    assert info.value.reason == "not_found"


@pytest.fixture(scope="module")
def kept_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A SeaweedFS left running by `local up`, reached as a run reaches it (`s3_service`)."""
    ports = LocalStackConfig(s3_port=free_port(), prefect_port=free_port(), mlflow_port=free_port())
    settings = load_settings(state_dir=tmp_path_factory.mktemp("kept") / "state", local=ports)
    stack.local_up(settings, ui=False)
    try:
        yield settings
    finally:
        stack.local_down(settings)


def test_ingest_s3_source_through_the_embedded_store(kept_up: Settings) -> None:
    url = stack.local_status(kept_up)["s3"]["url"]
    admin = s3_client(identities.endpoint_at(kept_up, url, identity="admin"))
    admin.create_bucket(Bucket=DATA_BUCKET)
    admin.put_object(
        Bucket=DATA_BUCKET, Key="exports/d.csv", Body=CSV, ChecksumSHA256=sha256_b64(CSV)
    )
    ctx = variant(RunContext(kept_up, "s3-run"), allowed_sources=[f"s3://{DATA_BUCKET}/exports/"])
    with stack.s3_service(kept_up) as endpoint:
        run_s3 = s3_client(endpoint)
    dataset, results = ingest(ctx, source=f"s3://{DATA_BUCKET}/exports/d.csv", s3=run_s3)
    assert dataset.rows == 569 and dataset.uri == f"s3://{DATA_BUCKET}/exports/d.csv"
    assert dataset.integrity == "none"
    integrity = next(r for r in results if r.name == "ingest.integrity")
    assert integrity.metrics["transport_checksum"] == "verified"
    source = next(r for r in results if r.name == "ingest.source")
    assert source.metrics == {"scheme": "s3", "allowed_prefix": f"s3://{DATA_BUCKET}/exports/"}
    g = blocked(variant(ctx, max_bytes=1000), f"s3://{DATA_BUCKET}/exports/d.csv", run_s3)
    assert g.name == "ingest.size" and g.metrics["bytes_measured_from"] == "head"
    g = blocked(ctx, f"s3://{DATA_BUCKET}/private/d.csv", run_s3)
    assert g.name == "ingest.source" and g.metrics["reason"] == "not_allowed"
    g = blocked(ctx, f"s3://{DATA_BUCKET}/exports/d.csv")  # no endpoint opened for the run
    assert g.name == "ingest.source" and g.metrics["fetch_error"] == "unreachable"


# --- HTTPS on a local TLS server -----------------------------------------------------------

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class TlsServer:
    port: int
    tls: TlsFiles
    routes: dict[str, Route]
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written per path

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"


def _reply(
    body: bytes,
    *,
    length: int | None = -1,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> Route:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if length is not None:
            h.send_header("Content-Length", str(len(body) if length == -1 else length))
        h.end_headers()
        h.wfile.write(body)

    return route


def _drip(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.end_headers()
    try:
        for _ in range(100):  # 5 s
            h.wfile.write(b"1,0\n")
            h.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


def _endless(
    server_sent: dict[str, int], key: str, *, chunked: bool, declared: int | None = None
) -> Route:
    """Stream until the client hangs up (at most 64 MiB); count what was sent."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"
        h.send_response(200)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        if declared is not None:
            h.send_header("Content-Length", str(declared))
        h.send_header("Connection", "close")
        h.end_headers()
        line = b"1.0,2.0,0\n" * 1638  # ~16 KiB
        server_sent[key] = 0
        try:
            while server_sent[key] < 64 * 2**20:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line) if chunked else line)
                server_sent[key] += len(line)
        except OSError:
            pass  # the client hung up: what we want

    return route


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tls = ensure_tls(tmp_path_factory.mktemp("tls-state"))
    routes: dict[str, Route] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
            else:
                route(self)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server = TlsServer(httpd.server_address[1], tls, routes)
    digest = hashlib.sha256(CSV).hexdigest()
    routes.update(
        {
            "/data/d.csv": _reply(CSV),
            "/data/d.csv.sha256": _reply(f"{digest}  d.csv\n".encode()),
            "/data/tampered.csv": _reply(CSV.replace(b"0.1184", b"0.1185", 1)),
            "/data/tampered.csv.sha256": _reply(f"{digest}  tampered.csv\n".encode()),
            "/data/declared-big.csv": _reply(b"a,target\n1,0\n", length=CAP + 1),
            "/data/no-length.csv": _endless(server.sent, "no-length", chunked=False),
            "/data/chunked.csv": _endless(server.sent, "chunked", chunked=True),
            "/data/lying.csv": _endless(server.sent, "lying", chunked=True, declared=100),
            "/data/gzip.csv": _reply(gzip.compress(CSV), headers={"Content-Encoding": "gzip"}),
            "/data/to-other-host.csv": _reply(
                b"", status=302, headers={"Location": server.url("/data/d.csv", host="localhost")}
            ),
            "/data/to-same-host.csv": _reply(b"", status=301, headers={"Location": "/data/d.csv"}),
            "/data/to-outside.csv": _reply(b"", status=307, headers={"Location": "/private/d.csv"}),
            "/private/d.csv": _reply(CSV),
            "/data/slow.csv": _drip,
        }
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def hctx(ctx: RunContext, https_server: TlsServer) -> RunContext:
    return variant(ctx, allowed_sources=[https_server.url("/data/")], ca_bundle=https_server.tls.ca)


def test_https_fetch_with_the_ca_and_sidecar(hctx: RunContext, https_server: TlsServer) -> None:
    dataset, results = ingest(hctx, source=https_server.url("/data/d.csv"))
    assert dataset.rows == 569 and dataset.integrity == "sidecar"
    assert dataset.uri == https_server.url("/data/d.csv")
    assert pd.read_csv(io.BytesIO(CSV)).equals(dataset.frame)
    assert next(r for r in results if r.name == "ingest.source").metrics[
        "allowed_prefix"
    ] == https_server.url("/data/")


def test_https_tampered_body_fails_its_sidecar(hctx: RunContext, https_server: TlsServer) -> None:
    g = blocked(hctx, https_server.url("/data/tampered.csv"))
    assert g.name == "ingest.integrity" and g.metrics["pin"] == "sidecar"
    assert g.metrics["matched"] is False


def test_https_without_the_ca_fails_tls_verification(
    hctx: RunContext, https_server: TlsServer
) -> None:
    g = blocked(variant(hctx, ca_bundle=None), https_server.url("/data/d.csv"))
    assert g.name == "ingest.source" and g.metrics["fetch_error"] == "tls"
    assert "dataset.ca_bundle" in g.detail


def test_https_declared_length_over_cap_refused_before_body(
    hctx: RunContext, https_server: TlsServer
) -> None:
    g = blocked(variant(hctx, max_bytes=CAP), https_server.url("/data/declared-big.csv"))
    assert g.name == "ingest.size" and g.metrics["bytes"] == CAP + 1
    assert g.metrics["bytes_measured_from"] == "content-length"


@pytest.mark.parametrize("path", ["no-length", "chunked", "lying"])
def test_https_body_over_cap_refused_mid_stream(
    hctx: RunContext, https_server: TlsServer, path: str
) -> None:
    """No Content-Length (close-delimited or chunked) or a false one (100, chunked body)."""
    g = blocked(variant(hctx, max_bytes=CAP), https_server.url(f"/data/{path}.csv"))
    assert g.name == "ingest.size" and g.metrics["bytes_measured_from"] == "stream"
    assert CAP < g.metrics["bytes"] <= CAP + 64 * 1024
    deadline = time.monotonic() + 5
    while https_server.sent.get(path, 0) < CAP and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the server notice the hang-up
    assert https_server.sent[path] < 64 * 2**20  # the server was stopped, not drained


def test_https_redirect_to_another_host_refused(hctx: RunContext, https_server: TlsServer) -> None:
    g = blocked(hctx, https_server.url("/data/to-other-host.csv"))
    assert g.name == "ingest.source" and g.metrics["reason"] == "redirect_other_host"
    assert g.metrics["redirect_host"] == "localhost"


def test_https_redirect_outside_the_allow_list_refused(
    hctx: RunContext, https_server: TlsServer
) -> None:
    g = blocked(hctx, https_server.url("/data/to-outside.csv"))
    assert g.name == "ingest.source" and g.metrics["reason"] == "redirect_not_allowed"


def test_https_same_host_redirect_inside_the_allow_list_followed(
    hctx: RunContext, https_server: TlsServer
) -> None:
    dataset, _ = ingest(hctx, source=https_server.url("/data/to-same-host.csv"))
    assert dataset.rows == 569


def test_https_compressed_body_refused(hctx: RunContext, https_server: TlsServer) -> None:
    g = blocked(hctx, https_server.url("/data/gzip.csv"))
    assert g.name == "ingest.source" and g.metrics["fetch_error"] == "encoding"


def test_https_download_deadline(https_server: TlsServer) -> None:
    """A server dripping bytes under the read timeout is cut off by the total deadline."""
    remote = Remote("https", "127.0.0.1", https_server.port, "/data/slow.csv")
    started = time.monotonic()
    with pytest.raises(FetchFailed) as info:
        fetch_https(
            remote,
            max_bytes=CAP,
            ca_bundle=https_server.tls.ca,
            allowed=[https_server.url("/data/")],
            deadline=0.5,
        )
    assert info.value.reason == "timeout" and time.monotonic() - started < 3


def test_https_redirect_refusal_is_a_source_refusal(https_server: TlsServer) -> None:
    remote = Remote("https", "127.0.0.1", https_server.port, "/data/to-other-host.csv")
    with pytest.raises(SourceRefused):
        fetch_https(
            remote,
            max_bytes=CAP,
            ca_bundle=https_server.tls.ca,
            allowed=[https_server.url("/data/")],
        )
