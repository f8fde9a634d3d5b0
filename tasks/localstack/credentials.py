"""Where the embedded store's secrets live: one 0600 file per role, one for the server.

Each S3 identity (one per role: ``admin``, ``pipeline`` (the trainer), ``auditor``,
``approver``, ``promoter``, ``reader``) has its own file, ``<state>/s3/roles/ROLE.json``,
and a command reads only the file of the identity its duty needs: a copy of one
role's file gives that role's access and nothing else. The server's own secrets (the
JWT keys that close filer and volume HTTP, and the key that encrypts stored objects,
whose loss loses the data) are in ``<state>/s3/service.json``, read only by the code
that starts ``weed``.

# FORK: on a shared machine give each file to the OS user of its role (chown) and
# run each role's commands as that user; the layout already keeps them apart.

Earlier versions kept everything in one ``<state>/s3/credentials.json``; `migrate`
splits it once, under a lock, and removes it only after every new file has been
written and read back equal (the encryption key is never lost on the way).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.common.files import write_atomic, write_new
from tasks.common.settings import Settings
from tasks.localstack.processes import StackError

log = logging.getLogger(__name__)

ROLES = ("admin", "pipeline", "auditor", "approver", "promoter", "reader")
SERVICE_SECRETS = (
    "jwt_volume_write",
    "jwt_volume_read",
    "jwt_filer_write",
    "jwt_filer_read",
    "sse_key",
)
LEGACY = "credentials.json"  # everything in one file, before roles had their own


def s3_dir(settings: Settings) -> Path:
    return settings.state_dir / "s3"


def role_file(settings: Settings, role: str) -> Path:
    """``<state>/s3/roles/ROLE.json``: that identity's access and secret key (0600)."""
    if role not in ROLES:
        raise ValueError(f"no such S3 identity: {role}")
    return s3_dir(settings) / "roles" / f"{role}.json"


def service_file(settings: Settings) -> Path:
    """``<state>/s3/service.json``: the server's JWT keys and object-encryption key."""
    return s3_dir(settings) / "service.json"


def role_keys(settings: Settings, role: str) -> dict[str, str]:
    """The access and secret key of one identity, from its own file only (created,
    with every other missing one, on first use).

    Raises:
        StackError: the file is damaged.
    """
    path = role_file(settings, role)
    if not path.is_file():
        ensure(settings)
    keys = _read(path, ("access_key", "secret_key"))
    return {"access_key": keys["access_key"], "secret_key": keys["secret_key"]}


def service_secrets(settings: Settings) -> dict[str, str]:
    """The server's secrets (only for starting ``weed``).

    Raises:
        StackError: the file is damaged: restore it, it holds the encryption key.
    """
    path = service_file(settings)
    if not path.is_file():
        ensure(settings)
    return _read(path, SERVICE_SECRETS)


def all_role_keys(settings: Settings) -> dict[str, dict[str, str]]:
    """Every identity's keys: only the server's identities file needs them all."""
    return {role: role_keys(settings, role) for role in ROLES}


def ensure(settings: Settings) -> None:
    """Create what is missing: the split of a legacy file, a new role's file, or, for
    a new state dir, every file. Existing secrets are never replaced. Serialised by a
    lock, so concurrent first commands agree on one set of secrets."""
    base = s3_dir(settings)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(base / ".credentials.lock"):
        legacy = base / LEGACY
        if legacy.is_file():
            migrate(settings, legacy)
        if not service_file(settings).is_file():
            if any(role_file(settings, r).is_file() for r in ROLES):
                raise StackError(
                    f"{service_file(settings)} is missing but role credentials exist: restore "
                    "it from a backup (it holds the key of the stored objects' encryption)"
                )
            write_new(
                service_file(settings),
                _dump({k: secrets.token_hex(32) for k in SERVICE_SECRETS}),
            )
            log.info("generated the S3 server's secrets in %s", service_file(settings))
        for role in ROLES:
            if not role_file(settings, role).is_file():
                write_new(role_file(settings, role), _dump(_new_identity()))


def migrate(settings: Settings, legacy: Path) -> None:
    """Split a legacy ``credentials.json`` into per-role files and ``service.json``;
    remove it only once each new file reads back equal to what it held.

    Raises:
        StackError: it is damaged, or disagrees with files already split from it.
    """
    try:
        old: dict[str, Any] = json.loads(legacy.read_text())
        service = {k: str(old["service"][k]) for k in SERVICE_SECRETS}
    except (ValueError, KeyError, TypeError):
        raise StackError(
            f"{legacy} is damaged. Restore it from a backup: it holds the key of the stored "
            "objects' encryption"
        ) from None
    wanted: dict[Path, dict[str, str]] = {service_file(settings): service}
    for role in ROLES:
        keys = old.get(role)
        if isinstance(keys, dict) and all(isinstance(keys.get(k), str) for k in _ROLE_FIELDS):
            wanted[role_file(settings, role)] = {k: keys[k] for k in _ROLE_FIELDS}
    for path, content in wanted.items():
        if not path.is_file():
            write_atomic(path, _dump(content))
        if json.loads(path.read_text()) != content:
            raise StackError(
                f"{path} and {legacy} disagree: restore one of them from a backup (the "
                "object-encryption key must not change)"
            )
    os.remove(legacy)
    log.info("split %s into per-role files under %s", legacy, legacy.parent / "roles")


_ROLE_FIELDS = ("access_key", "secret_key")


def _read(path: Path, fields: tuple[str, ...]) -> dict[str, str]:
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; restricting it to 0600", path)
        path.chmod(0o600)
    try:
        data = json.loads(path.read_text())
        if all(isinstance(data[k], str) for k in fields):
            return {k: data[k] for k in fields}
    except (ValueError, KeyError, TypeError):
        pass
    raise StackError(f"{path} is damaged. Restore it from a backup")


def _dump(content: dict[str, str]) -> bytes:
    return json.dumps(content, indent=2).encode()


def _new_identity() -> dict[str, str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return {
        "access_key": "SP" + "".join(secrets.choice(alphabet) for _ in range(18)),
        "secret_key": secrets.token_urlsafe(30),
    }


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
