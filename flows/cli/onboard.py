"""Onboarding a dataset: `secure-pipeline init`, `suite`, `profile` and `refresh`
derive the trust material (expectation suite, signed reference profile) from a table
the data owner trusts."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        f"wrote {result.config}, {result.suite.name} and {result.profile.name} (+ .sig): "
        f"{len(cols.numeric)} numeric, {len(cols.categorical)} categorical, "
        f"{len(cols.ignored)} ignored column(s), {len(cols.missing)} imputed; review the "
        "config, then run:"
    )
    emit(f"secure-pipeline run --config {result.config}")
    return EXIT_OK


def cmd_suite(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.checks.profile import read_table
    from tasks.checks.suite_builder import derive_suite, write_suite

    ds = settings.dataset
    try:
        frame = read_table(Path(args.data).expanduser().resolve())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {args.data}: {exc}") from None
    numeric, categorical = ds.inputs([str(c) for c in frame.columns])
    seen = frame.drop(columns=[c for c, a in ds.pii.items() if a == "drop" and c in frame])
    suite = derive_suite(
        seen,
        name=ds.name,
        target=ds.target,
        numeric=numeric,
        categorical=categorical,
        ignored=ds.ignored,
        missing={c: ds.missing_policy(c) for c in [*numeric, *categorical]},
        exclude=[c for c, a in ds.pii.items() if a == "pseudonymize"],
        notes=args.notes or f"derived from {Path(args.data).name}",
    )
    out = Path(args.out).expanduser().resolve()
    digest = write_suite(suite, out)
    say(f"wrote {out} ({len(suite['expectations'])} expectations); review it, then pin:")
    emit(f'suite_sha256 = "{digest}"')
    return EXIT_OK


def cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.checks.profile import build_profile, read_table, write_profile

    ds = settings.dataset
    out = Path(args.out).expanduser().resolve()
    try:
        frame = read_table(Path(args.data).expanduser().resolve())  # read once
        numeric, categorical = ds.inputs([str(c) for c in frame.columns])
        profile = build_profile(
            frame,
            target=ds.target,
            numeric=numeric,
            categorical=categorical,
            exclude=[*ds.pii, *ds.ignored],
        )
        digest = write_profile(profile, out, signer=pipeline_signer(settings))
    except (OSError, ValueError, KeyError) as exc:
        say(f"cannot profile {args.data}: {type(exc).__name__}: {exc}")
        return EXIT_USAGE
    say(
        f"wrote {out} and {out}.sig (signed by {settings.keys_dir / 'signing.pub'}); "
        f"sha256 {digest}: set dataset.reference_profile and, optionally, "
        "dataset.reference_profile_sha256 in your config"
    )
    return EXIT_OK
