"""`secure-pipeline approve`, `promote` and `rollback`: the two-person rule.

Each command acts with one person's key (``--key``, an ECDSA P-256 PEM file) and,
on the embedded store, that role's own S3 identity: ``approve`` the approver's
(which may write approvals only), ``promote`` and ``rollback`` the promoter's
(which may write the champion record only). The rules themselves live in
`tasks.governance`; this module parses, shows and reports. Exit codes: 0 done,
1 refused (the line says what is missing), 2 bad usage, configuration or key,
3 crashed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flows.cli.common import EXIT_BLOCKED, EXIT_OK, emit, say
from tasks.common import environment
from tasks.common.audit import AuditLog
from tasks.common.settings import Settings
from tasks.localstack import stack

KEY_HELP = "your private key (PEM, ECDSA P-256, 0600; see the README to make one)"


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The governance subcommands of the `secure-pipeline` parser."""
    approve = sub.add_parser(
        "approve", parents=[common], help="sign an approval of a verified release (approver)"
    )
    approve.add_argument("model_ref", metavar="MODEL_REF", help="models:/NAME/VERSION")
    approve.add_argument("--key", required=True, help=KEY_HELP)
    approve.add_argument("--reason", default="", help="why you approve (kept in the approval)")
    approve.set_defaults(func=cmd_approve)

    promote = sub.add_parser(
        "promote", parents=[common], help="make an approved release the champion (promoter)"
    )
    promote.add_argument("model_ref", metavar="MODEL_REF", help="models:/NAME/VERSION")
    promote.add_argument("--key", required=True, help=KEY_HELP)
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser(
        "rollback", parents=[common], help="make an earlier approved release the champion"
    )
    rollback.add_argument("name", metavar="NAME", help="the registered model name")
    rollback.add_argument("--to", required=True, metavar="VERSION", help="an earlier version")
    rollback.add_argument("--key", required=True, help=KEY_HELP)
    rollback.set_defaults(func=cmd_rollback)


@contextmanager
def _store(settings: Settings, role: str, act: str) -> Iterator[Any]:
    """The bucket as `role`'s S3 identity, for the length of the block; then, however
    the block ended, the audit chain's head anchored in the bucket as a run does
    (the auditor identity), so no approval, refusal or promotion stays unanchored."""
    environment.configure(settings)
    from tasks.common.s3 import s3_client

    with stack.s3_service(settings) as endpoint:
        try:
            yield s3_client(stack.role_endpoint(settings, endpoint, role))
        finally:
            _anchor(settings, endpoint, act)


def _anchor(settings: Settings, endpoint: Any, act: str) -> None:
    """Anchor the audit head through the auditor identity; a failure is said and
    audited (`audit verify` then reports the unanchored entries), never raised."""
    from tasks.common.anchors import anchor_head
    from tasks.common.s3 import s3_client

    if not settings.audit_path.exists():
        return  # nothing was ever logged here: nothing to anchor
    try:
        anchor_head(
            settings, s3_client(stack.anchor_endpoint(settings, endpoint)), run_id=f"cli:{act}"
        )
    except Exception as exc:  # noqa: BLE001 - the act's verdict stands; the gap is reported
        AuditLog(settings.audit_path).append(
            "audit.anchor_failed", run_id=f"cli:{act}", error=type(exc).__name__
        )
        say(
            f"could not anchor the audit log in the bucket ({type(exc).__name__}): "
            "`secure-pipeline audit verify` shows the unanchored entries"
        )


def _show(release: Any) -> None:
    """What the approver is asked to approve: the release, its gates and its waivers."""
    from tasks.trust import provenance

    gates = provenance.internal(release.verified.provenance).get("gates", [])
    say(f"release {release.uri} (models:/{release.name}/{release.version})")
    checks, passed = len(release.verified.checks), sum(bool(g["passed"]) for g in gates)
    say(f"  release record sha256 {release.sha256}, verified ({checks} checks)")
    say(f"  gates in the signed provenance: {passed}/{len(gates)} passed")
    for w in release.waivers:
        say(
            f"  WAIVED {w['gate']}: {w['setting']} = {w['value']} (safe {w['safe']}): {w['reason']}"
        )
    if not release.waivers:
        say("  waivers: none")


def _refuse(audit: AuditLog, event: str, message: str, **fields: Any) -> int:
    audit.append(event, reason=message, **fields)
    say(f"refused: {message}")
    return EXIT_BLOCKED


def _release(
    client: Any, settings: Settings, audit: AuditLog, event: str, ref: str, by: str
) -> Any:
    """The verified release MODEL_REF names, or None after a refusal (audited)."""
    from tasks.governance import approvals
    from tasks.trust.release import ReleaseError

    name, version = approvals.parse_ref(settings, ref)  # ConfigError: exit 2
    try:
        return approvals.inspect_release(client, settings, name, version)
    except ReleaseError as exc:
        _refuse(audit, event, str(exc), model=name, version=version, by=by)
        return None


def cmd_approve(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.common.s3 import ObjectExists
    from tasks.governance import approvals, roles

    signer = roles.load_private_key(args.key)
    audit = AuditLog(settings.audit_path)
    with _store(settings, "approver", "approve") as client:
        release = _release(
            client, settings, audit, "approval.refused", args.model_ref, signer.key_id
        )
        if release is None:
            return EXIT_BLOCKED
        _show(release)
        fields = {
            "model": release.name,
            "version": release.version,
            "by": signer.key_id,
            "release_sha256": release.sha256,
        }
        who = roles.short(signer.key_id)
        if signer.key_id in roles.trainer_keys(settings) or signer.key_id in release.signers:
            return _refuse(
                audit,
                "approval.refused",
                f"self-approval: key {who} is the trainer's (it signed this release); an "
                "approval must come from another person's key",
                **fields,
            )
        if signer.key_id not in roles.approvers(settings):
            return _refuse(
                audit,
                "approval.refused",
                f"key {who} is not listed in governance.approvers; list its public half "
                "(`openssl pkey -in KEY.pem -pubout`) in the config, reviewed like code",
                **fields,
            )
        try:
            key = approvals.write(client, settings, release, signer, args.reason)
        except ObjectExists:
            return _refuse(
                audit,
                "approval.refused",
                f"key {who} has already approved this release; one approval per key counts",
                **fields,
            )
        audit.append(
            "approval.granted",
            **fields,
            reason=args.reason,
            waivers=[w["gate"] for w in release.waivers],
        )
        found = approvals.collect(client, settings, release)
    need = approvals.needed(settings, release)
    say(
        f"approved models:/{release.name}/{release.version} with key {who}: "
        f"{len(found.key_ids)} of {need} approval(s) on file"
    )
    emit(f"s3://{settings.storage.bucket}/{key}")
    return EXIT_OK


def _promote(settings: Settings, ref: str, key: str, action: str) -> int:
    from tasks.governance import promotion, roles

    signer = roles.load_private_key(key)
    audit = AuditLog(settings.audit_path)
    with _store(settings, "promoter", action) as client:
        release = _release(
            client, settings, audit, f"champion.{action}_refused", ref, signer.key_id
        )
        if release is None:
            return EXIT_BLOCKED
        try:
            done = promotion.promote(client, settings, release, signer, action=action, audit=audit)
        except promotion.Refused as exc:
            say(f"refused: {exc}")
            return EXIT_BLOCKED
    if done.already:
        say(f"models:/{release.name}/{release.version} is already the champion (alias in step)")
    else:
        approved = ", ".join(roles.short(k) for k in done.approvals) or "none needed"
        say(
            f"champion of {release.name} is now version {release.version} "
            f"({action}, record version {done.record_version_id}; approved by: {approved})"
        )
    emit(release.uri)
    return EXIT_OK


def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    return _promote(settings, args.model_ref, args.key, "promote")


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    """Promote an earlier release of NAME under the same rule (approvals on file)."""
    from tasks.common.settings import ConfigError

    if not args.to.isdigit():
        raise ConfigError(f"--to {args.to}: expected a version number")
    return _promote(settings, f"models:/{args.name}/{args.to}", args.key, "rollback")
