"""Onboarding a dataset: `secure-pipeline init`, `suite`, `profile` and `refresh`
derive the trust material (expectation suite, signed reference profile) from a table
the data owner trusts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import EXIT_OK, EXIT_USAGE, emit, pipeline_signer, say
from tasks.common.settings import ConfigError, Settings


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.onboarding import InitError, init_dataset, parse_pii

    try:
        result = init_dataset(
            Path(args.data),
            target=args.target,
            name=args.name,
            pii=parse_pii(args.pii),
            out_dir=Path(args.out) if args.out else None,
            signer=pipeline_signer(settings),
            force=args.force,
        )
    except InitError as exc:
        raise ConfigError(str(exc)) from None
    cols = result.columns
    say(
        f"wrote {result.config}, {result.suite.name}, {len(result.reference_models)} "
        f"reference model(s) and {result.profile.name} (+ .sig): "
        f"{len(cols.numeric)} numeric, {len(cols.categorical)} categorical, "
        f"{len(cols.ignored)} ignored column(s), {len(cols.missing)} imputed; review the "
        "config, then run:"
    )
    emit(f"secure-pipeline run --config {result.config}")
    return EXIT_OK


def cmd_suite(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.checks.profile import read_table
    from tasks.checks.suite_builder import write_suite
    from tasks.refresh import suite_for

    try:
        frame = read_table(Path(args.data).expanduser().resolve())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {args.data}: {exc}") from None
    try:
        suite = suite_for(
            settings.dataset, frame, notes=args.notes or f"derived from {Path(args.data).name}"
        )
    except (ValueError, KeyError) as exc:  # roles the table contradicts: the config's fix
        raise ConfigError(f"the config's roles do not fit {Path(args.data).name}: {exc}") from None
    out = Path(args.out).expanduser().resolve()
    steward = _steward(args)  # a bad key refuses before anything is written
    digest = write_suite(suite, out)
    if steward is not None:
        from tasks.checks.suite_signature import sign_suite

        sign_suite(out, steward)
        say(f"signed {out} as the data steward (key {steward.key_id[:16]}): {out}.sig")
    say(f"wrote {out} ({len(suite['expectations'])} expectations); review it, then pin:")
    emit(pin_line("suite_sha256", digest))
    return EXIT_OK


def cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.checks.profile import read_table, write_profile
    from tasks.refresh import add_reference_models, profile_for

    out = Path(args.out).expanduser().resolve()
    steward = _steward(args)
    try:
        frame = read_table(Path(args.data).expanduser().resolve())  # read once
        profile = profile_for(settings.dataset, frame)
        signer = steward or pipeline_signer(settings)
        models = (
            add_reference_models(profile, settings, frame, out) if args.reference_models else []
        )
        digest = write_profile(profile, out, signer=signer)
    except (OSError, ValueError, KeyError) as exc:
        say(f"cannot profile {args.data}: {type(exc).__name__}: {exc}")
        return EXIT_USAGE
    by = (
        f"the data steward's key {steward.key_id[:16]}"
        if steward
        else settings.keys_dir / "signing.pub"
    )
    if models:
        say(f"wrote the reference models {', '.join(p.name for p in models)}, listed in {out.name}")
    say(
        f"wrote {out} and {out}.sig (signed by {by}); review "
        "it, then set dataset.reference_profile to it and pin:"
    )
    emit(pin_line("reference_profile_sha256", digest))
    return EXIT_OK


def cmd_refresh(settings: Settings, args: argparse.Namespace) -> int:
    """Re-derive the suite and the signed profile under the config's edited roles, write
    them over the configured files and re-pin both digests in the config (audited)."""
    from tasks.common.audit import AuditLog
    from tasks.onboarding import InitError
    from tasks.refresh import refresh_dataset

    if not args.config:  # never the bundled config by default: refresh rewrites it
        raise ConfigError("refresh rewrites the config it re-pins: name it with --config FILE")
    try:
        done = refresh_dataset(
            settings,
            data=Path(args.data) if args.data else None,
            signer=pipeline_signer(settings),
        )
    except InitError as exc:
        raise ConfigError(str(exc)) from None
    # New pins are new trust material, like a rotated key: the audit chain records them.
    AuditLog(settings.audit_path).append(
        "dataset.refreshed",
        config=str(done.config),
        suite_sha256=done.suite_sha256,
        reference_profile_sha256=done.profile_sha256,
    )
    say(
        f"wrote {done.suite} ({done.expectations} expectations), the reference models and "
        f"{done.profile} (+ .sig) "
        f"from the roles in {done.config}, and pinned them there:"
    )
    emit(pin_line("suite_sha256", done.suite_sha256))
    emit(pin_line("reference_profile_sha256", done.profile_sha256))
    return EXIT_OK


def _steward(args: argparse.Namespace) -> Any:
    """The data steward's signer from ``--key`` (None without it).

    Raises:
        ConfigError: the key is missing, not 0600, or not an ECDSA P-256 private key.
    """
    if not getattr(args, "key", None):
        return None
    from tasks.governance.roles import load_private_key

    return load_private_key(args.key)


def pin_line(key: str, digest: str) -> str:
    """``key = "<hex>"``: one digest as the config pins it, ready to paste."""
    return f'{key} = "{digest}"'
