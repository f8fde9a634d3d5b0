"""Trust material from a config's column roles: `suite`, `profile` and `refresh`.

`secure-pipeline init` infers the roles and writes the first suite and profile. When a
reviewer then moves a column between ``numeric``, ``categorical`` and ``ignored`` in
the config, the pinned suite and profile no longer match it; `refresh_dataset`
re-derives both from the trusted table with the same builders `init` uses (the
reference models the profile lists included, trained with the config's parameters),
writes them over the files the config names and re-pins their digests in the config's
own text, so its comments and layout survive. `suite_for` and `profile_for` are what the `suite`
and `profile` commands write, from the same roles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.checks.profile import build_profile, read_table, write_profile
from tasks.checks.reference_models import SECTION, fit_reference_models, reference_params
from tasks.checks.suite_builder import derive_suite, write_suite
from tasks.common.files import PUBLIC, write_atomic
from tasks.common.settings import DatasetConfig, Settings
from tasks.onboarding import InitError
from tasks.trust.signing import Signer

# A pin line as `render_config` writes it: key, quoted digest, perhaps a comment.
_PIN = r'^(?P<head>[ \t]*{key}[ \t]*=[ \t]*")(?P<value>[0-9a-fA-F]*)(?P<tail>"[^\n]*)$'


def suite_for(ds: DatasetConfig, frame: pd.DataFrame, *, notes: str) -> dict[str, Any]:
    """The expectation suite for `frame` under the config's roles (as validation sees
    the table: PII to drop already gone, pseudonymised PII present but unchecked).

    Raises:
        ValueError: a declared column is absent, a numeric one holds text, or a
            column that refuses missing values has some.
    """
    numeric, categorical = ds.inputs([str(c) for c in frame.columns])
    seen = frame.drop(columns=[c for c, a in ds.pii.items() if a == "drop" and c in frame])
    return derive_suite(
        seen,
        name=ds.name,
        target=ds.target,
        numeric=numeric,
        categorical=categorical,
        ignored=ds.ignored,
        missing={c: ds.missing_policy(c) for c in [*numeric, *categorical]},
        exclude=[c for c, a in ds.pii.items() if a == "pseudonymize"],
        notes=notes,
    )


def profile_for(ds: DatasetConfig, frame: pd.DataFrame) -> dict[str, Any]:
    """The reference profile of `frame` under the config's roles (unsigned).

    Raises:
        ValueError, KeyError: a declared column is absent or unusable.
    """
    numeric, categorical = ds.inputs([str(c) for c in frame.columns])
    return build_profile(
        frame,
        target=ds.target,
        numeric=numeric,
        categorical=categorical,
        exclude=[*ds.pii, *ds.ignored],
    )


def add_reference_models(
    profile: dict[str, Any], settings: Settings, frame: pd.DataFrame, profile_path: Path
) -> list[Path]:
    """Train the reference models (`tasks.checks.reference_models`) of `frame` with the
    config's parameters, write them next to `profile_path` (``NAME.reference.*.skops``,
    NAME: the profile's name without ``.profile.json``) and list them in `profile`
    (before it is signed). Returns the files written."""
    ds = settings.dataset
    name = profile_path.name.removesuffix(".json").removesuffix(".profile")
    profile[SECTION] = fit_reference_models(
        frame.drop(columns=[c for c, a in ds.pii.items() if a == "drop" and c in frame]),
        dataset=ds,
        params=reference_params(settings.model),
        name=name,
        out_dir=profile_path.parent,
        seed=settings.model.seed,
    )
    return [profile_path.parent / e["file"] for e in profile[SECTION].values()]


def repin(text: str, *, suite_sha256: str, profile_sha256: str) -> str:
    """`text` (a config) with both digests replaced on their own lines; a config without
    a ``reference_profile_sha256`` line gets one after ``reference_profile``.

    Raises:
        InitError: the config has no single pin line to replace.
    """
    text = _replace_pin(text, "suite_sha256", suite_sha256)
    try:
        return _replace_pin(text, "reference_profile_sha256", profile_sha256)
    except InitError:
        anchor = re.compile(r"^([ \t]*)reference_profile[ \t]*=[^\n]*$", re.MULTILINE)
        if len(anchor.findall(text)) != 1:
            raise
        return anchor.sub(
            lambda m: f'{m.group(0)}\n{m.group(1)}reference_profile_sha256 = "{profile_sha256}"',
            text,
        )


def _replace_pin(text: str, key: str, digest: str) -> str:
    pattern = re.compile(_PIN.format(key=key), re.MULTILINE)
    found = pattern.findall(text)
    if len(found) != 1:
        raise InitError(
            f'the config has {len(found)} `{key} = "..."` lines, not one: write the key '
            "once, on its own line, in [dataset]"
        )
    return pattern.sub(lambda m: f"{m.group('head')}{digest}{m.group('tail')}", text)


@dataclass(frozen=True)
class Refreshed:
    """What `refresh_dataset` wrote: the files and the digests now pinned."""

    config: Path
    suite: Path
    profile: Path
    suite_sha256: str
    profile_sha256: str
    expectations: int


def refresh_dataset(settings: Settings, *, data: Path | None, signer: Signer) -> Refreshed:
    """Re-derive the suite and the signed profile from the trusted table under the
    config's (edited) roles, write them over the configured files and re-pin both.

    Args:
        settings: Loaded from the config to refresh (its file is rewritten).
        data: The trusted table; None: the config's ``dataset.source``.
        signer: Signs the profile (the pipeline's key).

    Raises:
        InitError: no config file, a remote source without --data, an unreadable
            table, roles the table contradicts, or pins that cannot be replaced.
    """
    ds, config = settings.dataset, settings.config_file
    if config is None:
        raise InitError("refresh rewrites a config file: pass --config FILE")
    if data is None and "://" in ds.source:
        raise InitError(
            f"dataset.source {ds.source} is remote: pass --data with a local copy you trust"
        )
    table = (data or Path(ds.source)).expanduser().resolve()
    try:
        frame = read_table(table)
    except (OSError, ValueError) as exc:
        raise InitError(f"cannot read {table}: {exc}") from None
    text = Path(config).read_text(encoding="utf-8")
    repin(text, suite_sha256="0" * 64, profile_sha256="0" * 64)  # its pins are replaceable
    try:
        suite = suite_for(
            ds, frame, notes=f"derived by `secure-pipeline refresh` from {table.name}"
        )
        profile = profile_for(ds, frame)
    except (ValueError, KeyError) as exc:
        raise InitError(f"the config's roles do not fit {table.name}: {exc}") from None
    # Every check passed before anything is written; the config is written last, so an
    # interruption leaves old pins that block runs (fail closed), never unreviewed ones.
    suite_sha = write_suite(suite, ds.suite)
    add_reference_models(profile, settings, frame, ds.reference_profile)
    profile_sha = write_profile(profile, ds.reference_profile, signer=signer)
    repinned = repin(text, suite_sha256=suite_sha, profile_sha256=profile_sha)
    write_atomic(Path(config), repinned, mode=PUBLIC)
    return Refreshed(
        config=Path(config),
        suite=ds.suite,
        profile=ds.reference_profile,
        suite_sha256=suite_sha,
        profile_sha256=profile_sha,
        expectations=len(suite["expectations"]),
    )
