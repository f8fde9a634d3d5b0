"""The production services, started on loopback for the scale test: PostgreSQL, a
Prefect server and an MLflow tracking server on it, a Prefect process worker.

Each is started the way an operator starts it (the same commands and settings,
README "Scaling out"), on ports from `tests.ports.free_port`, with telemetry off,
and stopped with its whole process group. Secrets (the database password, the S3
keys) reach the servers through their environment, never their argv.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.common.environment import TELEMETRY_OFF
from tasks.localstack.processes import spawn, terminate, wait_until_healthy
from tests.ports import free_port

BIN = Path(sys.executable).parent
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
DEBIAN_PG = Path("/usr/lib/postgresql")  # Debian's packages: <version>/bin, not on PATH
INSTALL_POSTGRES = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install them with "
    "`make postgres` (apt-get install postgresql, as root) or `pip install pgserver`"
)
START_TIMEOUT = 180.0  # a Prefect or MLflow server on a busy 2-core machine


def postgres_bin_dir() -> Path:
    """Where PostgreSQL's server binaries are: on PATH, in Debian's
    /usr/lib/postgresql/<version>/bin, or in the `pgserver` wheel. Fails (never
    skips) naming what to install when there are none."""
    found = [shutil.which(tool) for tool in PG_TOOLS]
    if all(found):
        return Path(str(found[0])).resolve().parent
    debian = sorted(DEBIAN_PG.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    try:
        import pgserver  # type: ignore[import-not-found]  # optional: not in the lock files
    except ImportError:
        pytest.fail(INSTALL_POSTGRES)
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with password (SCRAM) login."""

    port: int
    password: str = field(repr=False)
    user: str = "pipeline"

    def url(self, database: str, driver: str = "postgresql") -> str:
        """A SQLAlchemy URL of `database`, e.g. ``postgresql+asyncpg://...``."""
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def execute(self, database: str, *statements: str) -> None:
        """Run `statements` in `database`, each in its own transaction (autocommit)."""
        for sql in statements:
            self.rows(database, sql)

    def rows(
        self, database: str, sql: str, params: tuple[object, ...] = ()
    ) -> list[tuple[object, ...]]:
        """Run one statement with bound `params` in `database`; its rows, if any."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=database,
        )  # fmt: skip
        try:
            conn.autocommit = True  # CREATE DATABASE refuses a transaction
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A fresh cluster for the block. PostgreSQL refuses to run as root: as root the
    cluster runs as the ``postgres`` user (Debian's package creates it)."""
    bindir = postgres_bin_dir()
    run_as: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="scale-pg-"))  # not under pytest's 0700 root dirs
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                f"running as root needs a `postgres` user to run the cluster; {INSTALL_POSTGRES}"
            )
        os.chown(home, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    cluster = Postgres(port=free_port(), password=secrets.token_urlsafe(24))
    data, log, pwfile = home / "data", home / "postgres.log", home / "pw"
    pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        pwfile.touch(mode=0o600)
        pwfile.write_text(cluster.password)
        if run_as:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        _pg([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", cluster.user,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])  # fmt: skip
        pwfile.unlink()
        options = f"-h 127.0.0.1 -p {cluster.port} -k {home} -c fsync=off"
        _pg([*pg_ctl, "-o", options, "-l", str(log), "-w", "-t", "60", "start"], log)
        yield cluster
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def _pg(argv: list[str], log: Path | None = None) -> None:
    """Run a PostgreSQL tool; fail the test with its output (and the server log) if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        tool = next(Path(a).name for a in argv if Path(a).name in PG_TOOLS)
        server_log = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        pytest.fail(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}{server_log}")


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without any pipeline, Prefect, MLflow or AWS
    setting (a developer's shell must not leak in), telemetry off, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_PIPELINE_", "PREFECT_", "MLFLOW_", "AWS_"))
    }
    return {**env, **TELEMETRY_OFF, **extra}


@dataclass
class Service:
    """A started server or worker: its process group is stopped on exit."""

    name: str
    child: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def wait(self, healthy: Callable[[], bool]) -> None:
        wait_until_healthy(self.name, healthy, self.child, self.log, START_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def started(name: str, argv: list[str], env: dict[str, str], logs: Path, cwd: Path,
            url: str = "") -> Iterator[Service]:  # fmt: skip
    """`argv` detached in its own session for the block, output in ``logs/<name>.log``."""
    log = logs / f"{name}.log"
    child = spawn(argv, env=env, log_path=log, cwd=cwd)
    try:
        yield Service(name=name, child=child, log=log, url=url)
    finally:
        begun = time.monotonic()
        terminate([child.pid])
        print(f"{name} stopped in {time.monotonic() - begun:.1f} s")


def answers(url: str) -> Callable[[], bool]:
    """A health check: `url` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def prefect_server_argv(port: int) -> list[str]:
    return [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]


def mlflow_server_argv(port: int) -> list[str]:
    # Backend store and artifact destination come from MLFLOW_BACKEND_STORE_URI and
    # MLFLOW_ARTIFACTS_DESTINATION: the database password stays out of argv.
    return [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]  # fmt: skip


def api(method: str, url: str, body: object = None) -> Any:
    """One REST call answered as JSON; retries 503 (a busy server) a few times."""
    for attempt in range(6):
        resp = httpx.request(method, url, json=body, timeout=30)
        if resp.status_code != 503:
            break
        time.sleep(0.5 * 2**attempt)
    assert resp.status_code < 300, f"{method} {url}: {resp.status_code} {resp.text[:500]}"
    return resp.json() if resp.content else None
