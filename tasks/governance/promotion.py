"""Moving the champion: the two-person rule, the lock, the record, then the alias.

`shortfall` is the rule in one place: a release becomes champion only with
``required_approvals`` valid approvals from distinct listed approver keys, none the
trainer's; a release that carries a waiver needs at least one, whatever
``required_approvals`` says. `promote` checks the promoter's key, takes the lock,
reads the current record, applies the rule to the approvals on file, writes the
new record conditionally and only then moves the MLflow alias (a view of the
record). Every promotion, rollback and refusal is an audit entry.

Concurrency: one promotion per model at a time on this machine (a non-blocking
``flock`` on ``<state>/locks/champion-<NAME>.lock``: a second one is refused at
once), and across machines the record's conditional write (`ChampionMoved`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.common.audit import AuditLog
from tasks.common.errors import PipelineError
from tasks.common.settings import Settings
from tasks.governance import approvals, champion_record, roles
from tasks.governance.approvals import Found, Release
from tasks.trust.signing import Signer

DEPLOY_WAIT = 300.0  # s a run waits for another run's promotion of the same model
DONE = {"promote": "promoted", "rollback": "rolled_back", "deploy": "deployed"}


class Refused(PipelineError, RuntimeError):
    """The champion did not move: the message names what is missing (exit 1)."""


@dataclass
class Promoted:
    version: str
    record_version_id: str
    approvals: list[str]  # key ids
    already: bool = False


def shortfall(settings: Settings, release: Release, found: Found) -> str | None:
    """What `release` lacks to become champion (None: nothing)."""
    need = approvals.needed(settings, release)
    have = len(found.key_ids)
    if have >= need:
        return None
    why = (
        f"it carries waivers ({', '.join(w['gate'] for w in release.waivers)}): a waiver is "
        "never self-granted, so at least one approval by a key other than the trainer's"
        if release.waivers and need > settings.governance.required_approvals
        else f"governance.required_approvals = {settings.governance.required_approvals}"
    )
    counted = ", ".join(roles.short(k) for k in found.key_ids) or "none"
    refused = f"; not counted: {'; '.join(found.refused)}" if found.refused else ""
    return (
        f"models:/{release.name}/{release.version} has {have} of {need} approval(s) from "
        f"distinct listed approvers ({why}); counted: {counted}{refused}. Ask an approver: "
        f"`secure-pipeline approve models:/{release.name}/{release.version} --key KEY`"
    )


def lock_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "locks" / f"champion-{name}.lock"


@contextlib.contextmanager
def champion_lock(settings: Settings, name: str, *, wait: float = 0) -> Iterator[None]:
    """Hold the model's promotion lock; if another holds it, wait up to `wait` seconds
    (a run's own promotion: concurrent runs take turns), then refuse."""
    path = lock_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
            raise Refused(
                f"another promotion of {name} is running (it holds {path}); nothing was "
                "changed: wait for it, then check `verify models:/NAME@champion`"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def check_promoter(settings: Settings, signer: Signer, release: Release | None = None) -> None:
    """The key may sign the champion record.

    Raises:
        Refused: not a listed promoter, or the trainer's key while approvals are required.
    """
    trainer = set(roles.trainer_keys(settings)) | (release.signers if release else set())
    required = settings.governance.required_approvals
    if signer.key_id in trainer and required > 0:
        raise Refused(
            f"key {roles.short(signer.key_id)} is the trainer's: with governance."
            f"required_approvals = {required} the trainer cannot promote"
        )
    if signer.key_id not in roles.promoters(settings):
        raise Refused(
            f"key {roles.short(signer.key_id)} is not listed in governance.promoters"
            + (
                " (with required_approvals = 0 the trainer's key also promotes)"
                if not required
                else ""
            )
        )


def promote(
    client: Any,
    settings: Settings,
    release: Release,
    signer: Signer,
    *,
    action: str = "promote",
    audit: AuditLog | None = None,
    wait: float = 0,
) -> Promoted:
    """Make `release` the champion (see the module).

    Args:
        client: The store as the promoter identity.
        release: The verified release (`approvals.inspect_release`).
        signer: The promoter's key (checked here).
        action: ``promote``, ``rollback`` or ``deploy`` (recorded).
        wait: Seconds to wait for another promotion's lock (0: refuse at once).

    Raises:
        Refused: the key may not promote, approvals are missing, or another promotion
            holds the lock or moved the champion first. Nothing changed.
    """
    audit = audit or AuditLog(settings.audit_path)
    base = {"model": release.name, "version": release.version, "release_sha256": release.sha256}
    try:
        check_promoter(settings, signer, release)
        with champion_lock(settings, release.name, wait=wait):
            current = champion_record.read(client, settings, release.name)
            found = approvals.collect(client, settings, release)
            missing = shortfall(settings, release, found)
            if missing:
                raise Refused(missing)
            if action == "rollback" and not _earlier(release.version, current.version):
                raise Refused(
                    f"version {release.version} is not earlier than the champion "
                    f"({current.version or 'none'}): use `secure-pipeline promote`"
                )
            if current.payload and current.payload["release"]["sha256"] == release.sha256:
                sync_alias(settings, release)  # a record ahead of its view: catch up
                return Promoted(release.version, str(current.version_id), found.key_ids, True)
            payload = champion_record.statement(
                release,
                approvals=found.valid,
                promoter=signer.key_id,
                action=action,
                previous=current,
                required=settings.governance.required_approvals,
            )
            try:
                vid = champion_record.write(client, settings, payload, signer, replaces=current)
            except champion_record.ChampionMoved as exc:
                raise Refused(str(exc)) from None
            sync_alias(settings, release)
    except Refused as exc:
        audit.append(f"champion.{action}_refused", **base, by=signer.key_id, reason=str(exc))
        raise
    audit.append(
        f"champion.{DONE.get(action, action)}",
        **base,
        by=signer.key_id,
        approvals=found.key_ids,
        previous=current.version,
        record_version_id=vid,
    )
    return Promoted(release.version, vid, found.key_ids)


def _earlier(version: str, champion: str | None) -> bool:
    return champion is not None and int(version) < int(champion)


def sync_alias(settings: Settings, release: Release) -> None:
    """The MLflow alias ``champion``, a view of the record: tag and move it."""
    from tasks.common.registry import ModelRegistry
    from tasks.common.tracking import mlflow_client

    ModelRegistry(mlflow_client(settings), release.name).promote(
        release.version, deployment_uri=release.uri
    )


def on_deploy(
    settings: Settings, client: Any, promoter: Any, verified: Any, *, audit: AuditLog
) -> dict[str, Any] | None:
    """After a deployed release verified: make it champion when no approval is needed
    (``required_approvals = 0`` and no waiver: the trainer's key promotes, as before
    roles), else leave the champion where it is and say what the release waits for.

    Args:
        client: The run's store (pipeline identity), to read the release.
        promoter: The store as the promoter identity, to write the record.
        verified: The deployed copy's `VerifiedRelease`.

    Returns:
        None when the champion moved, else what the release awaits (for the report).
    """
    from tasks.common.registry import ModelRegistry
    from tasks.common.tracking import mlflow_client

    release = approvals.facts(client, verified)
    need = approvals.needed(settings, release)
    if need == 0:
        promote(
            promoter,
            settings,
            release,
            Signer.local(settings.keys_dir),
            action="deploy",
            audit=audit,
        )
        return None
    registry = ModelRegistry(mlflow_client(settings), release.name)
    registry.tag(
        release.version, {"deployment_uri": release.uri, "gate_status": "awaiting_approval"}
    )
    ref = f"models:/{release.name}/{release.version}"
    waiting = {
        "model": release.name,
        "version": release.version,
        "release": release.uri,
        "release_sha256": release.sha256,
        "required_approvals": need,
        "waivers": [w["gate"] for w in release.waivers],
        "approve": f"secure-pipeline approve {ref} --key APPROVER_KEY",
        "promote": f"secure-pipeline promote {ref} --key PROMOTER_KEY",
    }
    audit.append(
        "champion.awaiting_approval",
        model=release.name,
        version=release.version,
        release_sha256=release.sha256,
        required=need,
        waivers=waiting["waivers"],
    )
    return waiting
