"""The embedded services: SeaweedFS (S3 over TLS) and, for the UIs, Prefect and MLflow.

`s3_service` gives a command an S3 endpoint for its lifetime: the external one
from the settings, the SeaweedFS that `local_up` left running, or one started
for the block. `local_up`, `local_down` and `local_status` keep services running
between commands, recorded in ``<state>/stack.json``. Secrets reach children
through the environment (readable only by the same user), never argv or logs.

This module only decides what runs when; the parts live beside it:
`seaweedfs` starts the object store, `identities` holds its identities,
secrets and endpoints, `ui_servers` starts Prefect and MLflow, and `processes` spawns, checks
and stops them all and keeps stack.json.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from tasks.common.s3 import S3Endpoint
from tasks.common.settings import Settings
from tasks.localstack import identities, processes, seaweedfs, ui_servers
from tasks.localstack.processes import StackError
from tasks.localstack.tls import tls_files

__all__ = [
    "StackError",
    "anchor_endpoint",
    "local_down",
    "local_status",
    "local_up",
    "prefect_api_url",
    "s3_service",
]


@contextmanager
def s3_service(settings: Settings, *, role: str = "pipeline") -> Iterator[S3Endpoint]:
    """Yield an S3 endpoint for the length of the block, as the identity of `role`.

    External S3 (``storage.endpoint_url`` set) is yielded as configured. Otherwise
    the embedded SeaweedFS: the one `local_up` left running, or one started now
    (free ports) and stopped on exit, even on exceptions. The deployment bucket is
    set up with the admin identity when the server starts, and by a training run
    (``pipeline``) on a kept-up server; a command of any other role never reads the
    admin's credentials. The endpoint carries `role`'s identity only.

    Raises:
        StackError: SeaweedFS is missing, cannot start, or is unhealthy.
    """
    if not settings.embedded_s3:
        yield S3Endpoint(
            url=str(settings.storage.endpoint_url),
            region=settings.storage.region,
            ca_bundle=settings.storage.ca_bundle,
            access_key=None,
            secret_key=None,
        )
        return
    entry = processes.read_services(settings).get("s3", {})
    if _running(settings, "s3", entry, role=role):
        endpoint = identities.endpoint_at(settings, entry["url"], identity=role)
        if role == "pipeline":
            seaweedfs.ensure_bucket(settings, endpoint)
        yield endpoint
        return
    child, endpoint, ports = seaweedfs.start(settings, s3_port=None)
    try:
        seaweedfs.ensure_bucket(settings, endpoint)
        yield identities.endpoint_at(settings, endpoint.url, identity=role)
    finally:
        seaweedfs.stop(child, ports)


def anchor_endpoint(settings: Settings, endpoint: S3Endpoint) -> S3Endpoint:
    """The identity that writes audit anchors: the embedded store's ``auditor`` (which
    the bucket policy lets write anchors but never delete or hide them). For external
    S3, the configured credentials: give them the same policy (see the README)."""
    if not settings.embedded_s3:
        return endpoint
    return identities.endpoint_at(settings, endpoint.url, identity="auditor")


def role_endpoint(settings: Settings, endpoint: S3Endpoint, role: str) -> S3Endpoint:
    """The store as ``role`` ("approver", "promoter", "reader", "auditor"; "pipeline"
    is the trainer). On the embedded store each role has its own S3 identity; for
    external S3, the configured credentials (give each role its own in production)."""
    if not settings.embedded_s3:
        return endpoint
    return identities.endpoint_at(settings, endpoint.url, identity=role)


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
    services = processes.read_services(settings)
    started: list[int] = []  # stopped again if anything fails: all or nothing
    try:
        if not _running(settings, "s3", services.get("s3")):
            child, endpoint, ports = seaweedfs.start(settings, s3_port=settings.local.s3_port)
            started.append(child.pid)
            log_path = processes.log_file(settings, "seaweedfs")
            services["s3"] = {
                **processes.record(child, url=endpoint.url, log_path=log_path),
                "ports": ports,
            }
            seaweedfs.ensure_bucket(settings, endpoint)
        if ui:
            pending = []  # both start before either is waited for: they boot in parallel
            for name in ui_servers.NAMES:
                if not _running(settings, name, services.get(name)):
                    child, url = ui_servers.start(settings, name)
                    started.append(child.pid)
                    pending.append((name, child, url))
            for name, child, url in pending:
                log_path = processes.log_file(settings, name)
                processes.wait_until_healthy(
                    name,
                    partial(ui_servers.healthy, name, url),
                    child,
                    log_path,
                    ui_servers.START_TIMEOUT,
                )
                services[name] = processes.record(child, url=url, log_path=log_path)
    except BaseException:
        processes.terminate(started)
        raise
    processes.write_services(settings, services)
    return local_status(settings)


def local_down(settings: Settings) -> dict[str, Any]:
    """Stop every recorded service that is still ours (cmdline and start time match).

    Returns:
        Per service: ``{"stopped": bool, "pid": int}``.
    """
    services = processes.read_services(settings)
    ours = {name: e for name, e in services.items() if isinstance(e, dict) and processes.is_ours(e)}
    processes.terminate([int(e["pid"]) for e in ours.values()])
    if "s3" in ours:
        seaweedfs.remove_grpc_sockets(ours["s3"].get("ports", {}))
    processes.forget_services(settings)
    return {
        name: {"stopped": name in ours, "pid": e.get("pid") if isinstance(e, dict) else None}
        for name, e in services.items()
    }


def local_status(settings: Settings) -> dict[str, Any]:
    """Per service (s3, prefect, mlflow): ``{"running", "url", "pid"}``; s3 adds ``ca_bundle``."""
    services = processes.read_services(settings)
    status: dict[str, Any] = {}
    for name in ("s3", *ui_servers.NAMES):
        entry = services.get(name)
        status[name] = {
            "running": _running(settings, name, entry),
            "url": entry["url"] if entry else None,
            "pid": entry["pid"] if entry else None,
        }
    if status["s3"]["url"]:
        status["s3"]["ca_bundle"] = str(tls_files(settings.state_dir).ca)
    return status


def prefect_api_url(settings: Settings) -> str | None:
    """``http://127.0.0.1:PORT/api`` if the kept-up Prefect server is healthy, else None."""
    entry = processes.read_services(settings).get("prefect", {})
    return f"{entry['url']}/api" if _running(settings, "prefect", entry) else None


def _running(
    settings: Settings, name: str, entry: dict[str, Any] | None, *, role: str = "pipeline"
) -> bool:
    """The recorded process is still ours and answers its health check (S3: as `role`)."""
    if not entry or not processes.is_ours(entry):
        return False
    if name == "s3":
        return identities.healthy(identities.endpoint_at(settings, entry["url"], identity=role))
    return ui_servers.healthy(name, entry["url"])
