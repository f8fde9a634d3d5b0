"""`secure-pipeline verify`, `fetch` and `audit verify`: check what was released and
the audit chain, against the bucket."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import EXIT_BLOCKED, EXIT_OK, emit, say, write_report
from tasks.common import environment
from tasks.common.errors import explain
from tasks.common.settings import ConfigError, Settings
from tasks.localstack import stack


def _verified(
    settings: Settings, model_ref: str, workdir: Path, args: argparse.Namespace
) -> tuple[Any, list[Any]]:
    """Resolve MODEL_REF, then verify the release it names (rebuilt in `workdir`) against
    the consumer's trust root, as the read-only ``reader`` identity.

    ``models:/NAME@champion`` follows the signed champion record in the bucket (never
    the registry): its signature, the MLflow alias beside it and the approvals it rests
    on are checks of their own (`tasks.governance.check`)."""
    from tasks.trust.roots import trust_root

    root = trust_root(settings, getattr(args, "trusted_keys", None))  # before any service
    environment.configure(settings)
    from tasks.common.s3 import s3_client
    from tasks.common.tracking import CHAMPION
    from tasks.governance import check as governed
    from tasks.trust import release
    from tasks.trust.envelope import key_provider

    uri, expected = model_ref, None
    champion = model_ref.startswith("models:/") and model_ref.endswith(f"@{CHAMPION}")
    if model_ref.startswith("models:/") and not champion:
        from tasks.common.registry import ModelRegistry

        # The registry only says where to look: all is checked.
        name, version, uri = ModelRegistry.resolve(settings, model_ref)
        expected = {"name": name, "version": version}
    say(root.detail)
    with stack.s3_service(settings, role="reader") as endpoint:
        client = s3_client(endpoint)
        pre: list[tuple[str, bool, str]] = []
        record = None
        approved: list[Any] = []
        if champion:
            name = model_ref.removeprefix("models:/").rpartition("@")[0]
            record, pre = governed.record_checks(client, settings, name)
            if record is None:
                return release.VerifiedRelease(uri=model_ref, checks=pre), []
            uri = str(record.release_uri)
            expected = {"name": name, "version": str(record.version)}
        try:
            bucket, key = release.parse_s3_uri(uri)
        except release.ReleaseError as exc:
            raise ConfigError(str(exc)) from None
        result = release.verify_release(
            client,
            bucket=bucket,
            release_key=key,
            public_key=root.keys,
            key_provider=key_provider(settings, purpose="decrypt"),
            max_bytes=settings.dataset.max_bytes,
            workdir=workdir,
            expected=expected,
            signer=root.signer,
        )
        if record is not None and result.ok:
            more, approved = governed.approval_checks(client, settings, result, record)
            pre += more
        result.checks[:0] = pre
    if expected is not None and result.ok:
        from tasks.common.registry import ModelRegistry
        from tasks.common.tracking import mlflow_client

        # The model the reference names, which verify_release has just checked is the
        # signed release's own: never the config's model (verify needs no --config).
        registry = ModelRegistry(mlflow_client(settings), expected["name"])
        result.checks.append(
            registry.check_files(
                expected["version"],
                signed=result.model["files"],
                model_sha256=str(result.release["model"]["sha256"]),
            )
        )
    if result.ok and (getattr(args, "no_waivers", False) or settings.trust.refuse_waivers):
        from tasks.trust.roots import waiver_check

        result.checks.append(waiver_check(result.provenance))
    return result, approved


def _print_verification(result: Any, approved: list[Any]) -> None:
    """Every check, then what the provenance says: the waivers and the gates."""
    from tasks.trust import provenance

    for name, ok, detail in result.checks:
        say(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    for a in approved:
        say(
            f"APPROVED by key {a.key_id[:16]} at {a.approved_at}: {a.reason or '(no reason given)'}"
        )
    recorded = provenance.internal(result.provenance) if result.provenance else {}
    for w in recorded.get("waivers", []):
        say(f"WAIVED {w['gate']}: {w['setting']} = {w['value']} (safe {w['safe']}): {w['reason']}")
    gates = recorded.get("gates", [])
    if gates:
        passed = sum(bool(g["passed"]) for g in gates)
        say(f"gates in the signed provenance: {passed}/{len(gates)} passed")
    if not recorded.get("waivers") and gates:
        say("waivers in the signed provenance: none")


def _verification_report(result: Any, approved: list[Any]) -> dict[str, Any]:
    return {
        "approvals": [
            {"key_id": a.key_id, "approved_at": a.approved_at, "reason": a.reason} for a in approved
        ],
        "uri": result.uri,
        "verified": result.ok,
        "checks": [{"name": n, "passed": ok, "detail": d} for n, ok, d in result.checks],
        "model": result.release.get("model"),
        "provenance": result.provenance or None,
    }


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="verify-") as workdir:
        result, approved = _verified(settings, args.model_ref, Path(workdir), args)
    _print_verification(result, approved)
    write_report(args.report, _verification_report(result, approved))
    say(f"verified {result.uri}" if result.ok else f"NOT verified: {result.uri}")
    return EXIT_OK if result.ok else EXIT_BLOCKED


def cmd_fetch(settings: Settings, args: argparse.Namespace) -> int:
    """Verify, decrypt and write the release directory to --out (nothing on failure)."""
    import shutil
    import tempfile

    out = Path(args.out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty directory: choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result, approved = _verified(settings, args.model_ref, staging, args)
        _print_verification(result, approved)
        if not result.ok:
            say(f"NOT verified: {result.uri}; nothing written to {out}")
            return EXIT_BLOCKED
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    emit(str(out))
    pinned = [*(args.trusted_keys or []), *settings.trust.signers]
    say(
        f"fetched {result.uri} into {out}: "
        f"{', '.join(sorted(p.name for p in out.iterdir()))}; check it without this project: "
        f"model_signing verify key {out} --signature {out}/model.sig --public_key "
        f"{pinned[0] if pinned else settings.keys_dir / 'signing.pub'}"
    )
    return EXIT_OK


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.common.audit import AuditLog

    status = AuditLog(settings.audit_path).verify()
    say(f"audit log {settings.audit_path}: {status.detail}; head {status.head[:16]}")
    if not status.intact:
        return EXIT_BLOCKED
    # Always against the bucket: a deleted or emptied log is exactly what anchors catch.
    environment.configure(settings)
    from tasks.common.anchors import check_anchors
    from tasks.common.s3 import s3_client
    from tasks.trust.release import OBJECTS, scan_releases
    from tasks.trust.versions import scan_release_histories

    st, drift, replaced = settings.storage, [], []
    try:
        with stack.s3_service(settings, role="reader") as endpoint:
            client = s3_client(endpoint)
            anchored, detail = check_anchors(settings, client)
            incomplete, deleted = scan_releases(client, bucket=st.bucket, prefix=st.prefix)
            replaced = scan_release_histories(
                client, bucket=st.bucket, prefix=st.prefix, names=OBJECTS
            )
            if settings.embedded_s3:
                from tasks.localstack.bucket import policy_drift
                from tasks.localstack.seaweedfs import expected_policy

                drift = policy_drift(
                    client, bucket=st.bucket, expected=expected_policy(settings, endpoint.url)
                )
    except Exception as exc:  # noqa: BLE001 - unverifiable anchors are a failed verification
        anchored, detail, incomplete, deleted = False, f"cannot read them ({explain(exc)})", [], []
    say(f"anchors in s3://{st.bucket}: {detail}")
    if incomplete:
        say(
            f"incomplete releases (a deploy stopped before its release record; never "
            f"released, nothing points at them): {', '.join(incomplete)}"
        )
    if deleted:
        say(f"release objects hidden by delete markers: {', '.join(deleted)}")
    if replaced:
        say(f"releases changed after release: {'; '.join(replaced)}")
    if drift:
        say(
            f"the bucket policy is not the one the pipeline sets ({', '.join(drift)}): someone "
            "with the admin identity changed it; find who, then restart the store to restore it"
        )
    ok = anchored and not deleted and not replaced and not drift
    return EXIT_OK if ok else EXIT_BLOCKED
