"""`secure-pipeline verify`, `fetch` and `audit verify`: check what was released and
the audit chain, against the bucket."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import EXIT_BLOCKED, EXIT_OK, emit, say, write_report
from tasks.common import environment
from tasks.common.settings import ConfigError, Settings


def _verified(
    settings: Settings, model_ref: str, workdir: Path, args: argparse.Namespace
) -> tuple[Any, list[Any]]:
    """`tasks.trust.consumer.verify_reference` with the command's trust options."""
    from tasks.trust.consumer import verify_reference
    from tasks.trust.roots import trust_root

    trust_root(settings, getattr(args, "trusted_keys", None))  # a bad root: before any service
    environment.configure(settings)
    checked = verify_reference(
        settings,
        model_ref,
        workdir,
        trusted_keys=getattr(args, "trusted_keys", None),
        refuse_waivers=getattr(args, "no_waivers", False),
    )
    say(checked.root)
    return checked.result, checked.approved


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
    from tasks.common.audit_check import audit_findings

    environment.configure(settings)
    found = audit_findings(settings)
    for line in found.lines(settings):
        say(line)
    return EXIT_OK if found.ok else EXIT_BLOCKED
