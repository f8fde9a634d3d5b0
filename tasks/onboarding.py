"""`secure-pipeline init`: from a trusted table to a reviewed, pinned configuration.

From one table the data owner trusts, `init_dataset` writes next to it (or to
``--out``) everything a run needs: ``NAME.toml`` (columns declared by role, missing
policies, model, thresholds), ``NAME.suite.json`` (the expectation suite derived from
the table), ``NAME.reference.ESTIMATOR.skops`` (each estimator trained on the table:
the backdoor probe's clean comparison, `tasks.checks.reference_models`) and
``NAME.profile.json`` + ``.sig`` (the reference profile, listing the models' digests,
signed with the pipeline's key), with the suite's and the profile's digests pinned in
the config.

Column roles are *inferred for review*, never silently applied at run time: the run
only ever uses what the config declares. Inference rules (`infer_columns`):

* numbers are numeric inputs, except an integer column with a distinct value per row
  (an id: ignored) and an integer column of few codes named like a code
  (``*_code``, ``*_type``, ...: categorical);
* text is read for what it holds (`tasks.checks.column_kinds`): dates and timestamps
  (90% or more of the values parse as dates), free text (a median of 3 words or more,
  half the values distinct) and ids (a distinct value in every row) are ignored, with
  the measured reason in the config; other text and booleans with few distinct values
  are categorical, text with many is ignored;
* a column that is entirely missing is ignored;
* an input with missing values is imputed (median for numbers, most frequent category
  for text); one without any refuses them (a gap later blocks the run).

A column that looks like personal data must be declared with ``--pii COL=drop`` or
``--pii COL=pseudonymize``; `init` refuses until each one is.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.checks.column_kinds import date_reason, id_reason, text_reason
from tasks.checks.measuring import Measured, choose, measure
from tasks.checks.pii import check_pii, scan
from tasks.checks.profile import build_profile, profile_text, read_table, write_profile
from tasks.checks.reference_models import SECTION, fit_reference_models, load_reference_model
from tasks.checks.suite_builder import derive_suite, write_suite
from tasks.common.errors import PipelineError
from tasks.common.files import PUBLIC, write_atomic
from tasks.common.settings import DatasetConfig, ModelConfig
from tasks.init_config import INIT_EVALUATE, INIT_PARAMS, render_config
from tasks.trust.signing import Signer

MAX_CATEGORIES = 50  # more distinct text values than this (or than half the rows): ignored
CODE_NAME = re.compile(r"(^|_)(code|type|kind|class|category|cat|group|level)s?$", re.IGNORECASE)
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class InitError(PipelineError, ValueError):
    """`init` cannot write a configuration for this table (CLI exit code 2)."""


@dataclass
class Columns:
    """Inferred roles, each with why (written as comments into the config)."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # column -> why
    missing: dict[str, str] = field(default_factory=dict)  # column -> policy


def infer_columns(frame: pd.DataFrame, *, target: str, pii: dict[str, str]) -> Columns:
    """Roles and missing policies for every column but the target and the PII.

    Args:
        frame: The trusted table.
        target: The label column (no role).
        pii: Declared personal-data columns (no role: dropped or pseudonymised).

    Returns:
        The roles, with the reason for every ignored column (what was measured,
        never a value of the table).
    """
    out = Columns()
    rows = len(frame)
    for col in (str(c) for c in frame.columns):
        if col == target or col in pii:
            continue
        s = frame[col]
        if s.isna().all():
            out.ignored[col] = "entirely missing"
            continue
        kind, why = _role(col, s, rows)
        if kind == "ignored":
            out.ignored[col] = why
            continue
        (out.numeric if kind == "numeric" else out.categorical).append(col)
        if s.isna().any():
            out.missing[col] = "median" if kind == "numeric" else "most_frequent"
    return out


def _role(col: str, s: pd.Series, rows: int) -> tuple[str, str]:
    """("numeric" | "categorical" | "ignored", why) for one column with values."""
    if pd.api.types.is_bool_dtype(s):
        return "categorical", ""
    if pd.api.types.is_datetime64_any_dtype(s):
        return "ignored", "a date/time column (by its type)"
    distinct = int(s.nunique(dropna=True))
    if pd.api.types.is_numeric_dtype(s):
        why = id_reason(s) if distinct == rows else None
        if why:
            return "ignored", why
        whole = pd.api.types.is_integer_dtype(s) or bool((s.dropna() == s.dropna().round()).all())
        # Integer codes stay categories when named like codes; other numbers are measures.
        code = whole and distinct <= 20 and CODE_NAME.search(col)
        return ("categorical" if code else "numeric"), ""
    # Text: by content first (dates, prose, ids), then by how many values it has.
    why = date_reason(s) or text_reason(s) or id_reason(s)
    if why:
        return "ignored", why
    if distinct <= min(MAX_CATEGORIES, max(rows // 2, 2)):
        return "categorical", ""
    share = distinct / max(int(s.notna().sum()), 1)
    return "ignored", (
        f"text with {distinct} distinct values ({share:.0%} of rows): too many for categories"
    )


def roles_config(target: str, columns: Columns) -> DatasetConfig:
    """The inferred roles as the `DatasetConfig` the model builders read (unvalidated:
    only the target, the inputs and their missing policies)."""
    return DatasetConfig.model_construct(
        target=target,
        numeric=list(columns.numeric),
        categorical=list(columns.categorical),
        ignored=list(columns.ignored),
        pii={},
        missing=dict(columns.missing),
    )


def measure_baselines(
    frame: pd.DataFrame, *, dataset: DatasetConfig, reference: Any = None, directory: Path
) -> list[Measured]:
    """Cross-validate each estimator `init` configures on the trusted table and choose
    its evaluate settings (`tasks.checks.measuring`): init's measuring step.
    `reference`: the table's signed reference profile (a dict), for the backdoor probe,
    with the reference models it lists in `directory`."""
    model = ModelConfig.model_construct()  # defaults: seed and test fraction
    seed, fraction = model.model_fields["seed"].default, model.model_fields["test_fraction"].default
    rows = int(frame[dataset.target].notna().sum())
    trusted = {
        name: load_reference_model(reference, directory=directory, estimator=name, params=p)
        for name, p in INIT_PARAMS.items()
    }
    measured = measure(
        frame,
        dataset=dataset,
        estimators=INIT_PARAMS,
        evaluate=INIT_EVALUATE,
        seed=seed,
        reference=reference,
        reference_models=trusted,
    )
    return [choose(m, test_rows=round(fraction * rows)) for m in measured]


def parse_pii(items: list[str]) -> dict[str, str]:
    """``["email=drop", ...]`` -> ``{"email": "drop"}``."""
    out: dict[str, str] = {}
    for item in items:
        col, sep, action = item.rpartition("=")
        if not sep or not col or action not in ("drop", "pseudonymize"):
            raise InitError(f"--pii {item}: give COLUMN=drop or COLUMN=pseudonymize")
        out[col] = action
    return out


@dataclass(frozen=True)
class InitResult:
    config: Path
    suite: Path
    profile: Path
    columns: Columns
    reference_models: list[Path] = field(default_factory=list)


def init_dataset(
    data: Path,
    *,
    target: str,
    name: str | None,
    pii: dict[str, str],
    out_dir: Path | None,
    signer: Signer,
    force: bool = False,
    measure_models: bool = True,
) -> InitResult:
    """Write NAME.toml, NAME.suite.json and the signed NAME.profile.json for `data`.

    With `measure_models`, each estimator's quality and robustness are measured on the
    table (`measure_baselines`) and the evaluate settings derived from them are written
    in the config beside what was measured.

    Raises:
        InitError: bad arguments, an undeclared PII-looking column, or files that
            exist already (without `force`).
    """
    data = data.expanduser().resolve()
    name = name or re.sub(r"[^a-z0-9_-]+", "_", data.stem.lower()).strip("_-") or "dataset"
    if not NAME.match(name):
        raise InitError(f"--name {name!r}: use lowercase letters, digits, '_' or '-'")
    out_dir = (out_dir or data.parent).expanduser().resolve()
    try:
        frame = read_table(data)
    except (OSError, ValueError) as exc:
        raise InitError(f"cannot read {data}: {exc}") from None
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        raise InitError(f"--target {target!r} is not a column of {data.name}")
    unknown = [c for c in pii if c not in columns]
    if unknown:
        raise InitError(f"--pii names column(s) not in the table: {', '.join(unknown)}")
    result = check_pii(scan(frame), pii, columns=columns, target=target)
    if not result.passed:
        flagged = result.metrics["undeclared"]
        hint = " ".join(f"--pii {c}=drop" for c in flagged)
        raise InitError(
            f"{result.detail.split(';')[0]}; declare them: add {hint} (or =pseudonymize "
            "to keep a keyed pseudonym for joins)"
            if flagged
            else result.detail
        )
    paths = {k: out_dir / f"{name}.{k}" for k in ("toml", "suite.json", "profile.json")}
    models = [out_dir / f"{name}.reference.{e}.skops" for e in INIT_PARAMS if measure_models]
    existing = [p for p in [*paths.values(), *models] if p.exists()]
    if existing and not force:
        raise InitError(f"{existing[0]} exists; pass --force to overwrite")
    roles = infer_columns(frame, target=target, pii=pii)
    if not roles.numeric and not roles.categorical:
        raise InitError("no usable input column: every column is the target, PII or ignored")
    # What validation will see: declared PII already handled (dropped ones are gone).
    seen = frame.drop(columns=[c for c, a in pii.items() if a == "drop"])
    suite = derive_suite(
        seen,
        name=name,
        target=target,
        numeric=roles.numeric,
        categorical=roles.categorical,
        ignored=list(roles.ignored),
        missing=roles.missing,
        exclude=[c for c, a in pii.items() if a == "pseudonymize"],
        notes=f"derived by `secure-pipeline init` from {data.name}",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    suite_sha = write_suite(suite, paths["suite.json"])
    profile = build_profile(
        frame,
        target=target,
        numeric=roles.numeric,
        categorical=roles.categorical,
        exclude=[*pii, *roles.ignored],
    )
    dataset = roles_config(target, roles)
    if measure_models:  # listed in the profile, so its signature covers them
        profile[SECTION] = fit_reference_models(
            seen, dataset=dataset, params=INIT_PARAMS, name=name, out_dir=out_dir
        )
    profile_sha = write_profile(profile, paths["profile.json"], signer=signer)
    reference = json.loads(profile_text(profile))  # the signed text, as a run reads it
    measured = (
        measure_baselines(seen, dataset=dataset, reference=reference, directory=out_dir)
        if measure_models
        else None
    )
    rel = os.path.relpath(data, out_dir)
    text = render_config(
        name=name,
        source=rel,
        data_root=os.path.relpath(data.parent, out_dir),
        target=target,
        columns=roles,
        pii=pii,
        suite=paths["suite.json"].name,
        suite_sha256=suite_sha,
        profile=paths["profile.json"].name,
        profile_sha256=profile_sha,
        measured=measured,
    )
    write_atomic(paths["toml"], text, mode=PUBLIC)
    return InitResult(paths["toml"], paths["suite.json"], paths["profile.json"], roles, models)
