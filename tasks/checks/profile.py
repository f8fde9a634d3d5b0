"""The trusted reference profile: build it from trusted data, sign it, verify it.

The screen compares every run's data with this profile, so whoever can edit it can
re-baseline the screen to hide poisoning. It is therefore a signed statement: the
profile JSON sits next to ``<profile>.sig``, a DSSE envelope whose payload is the
profile itself, signed by the pipeline's own key (``secure-pipeline profile``) or
by a data owner's key listed in ``dataset.profile_signers`` (signed offline; only
the public key is shipped). The file's parsed content must equal the signed
payload. ``dataset.reference_profile_sha256`` is an optional extra pin.

Version 4 (written now) is version 3 plus ``"conditional"``: the reference's rows
per class for each numeric bin and each category, missing cells per class, and each
numeric input's most repeated value's row count (counts only: see
`tasks.checks.conditional`). The relative screens compare with those counts
(`tasks.checks.relative`); screen.missingness and screen.backdoor fail closed on an
older profile, asking for it to be rebuilt. Versions 2 (numeric inputs only) and 3
are still verified. A version 3 profile holds, besides the version 2 fields::

    "inputs": {"numeric": [...], "categorical": [...]}   # the model's inputs, in order
    "features": {numeric column: statistics}            # as version 2, NaN-safe
    "categorical": {column: {"shares": {category: share of all rows},
                             "missing_rate": r,
                             "tails": {rare category: {label: share of all rows}}}}
    "missing_rates": {input column: share of missing values}

Version 4 adds ``conditional`` (label counts by input value, `tasks.checks.conditional`)
and ``label_noise_half`` (``{"rows": n, "rate": r}``: the label-noise rate of a seeded
half of the reference, so the screen can scale the rate to the data's size).

Category keys are strings (an integer code 3 is "3"). Only categories (needed to
encode them) are stored as values; numeric cells appear only as quantiles.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.checks.conditional import build_conditional
from tasks.checks.poisoning import (
    PARAMS,
    category_keys,
    content_columns,
    duplicate_rate,
    feature_values,
    label_keys,
    label_shares,
    neighbour_stats,
    outlier_rate,
    profile_inputs,
    tail_label_shares,
    tail_masks,
)
from tasks.common.errors import PipelineError
from tasks.common.files import PUBLIC, read_capped, sha256_bytes, write_atomic
from tasks.common.gates import GateResult, check, failed
from tasks.sources.content import sniff_format
from tasks.trust.signing import (
    PublicKey,
    SignatureError,
    Signer,
    key_id,
    load_public_key,
    load_public_pem,
    verify,
)
from tasks.trust.signing import trusted_keys as pipeline_keys

PROFILE_TYPE = "application/vnd.secure-pipeline.profile+json"
PROFILE_VERSION = 4  # what build_profile writes
SUPPORTED_VERSIONS = (2, 3, 4)  # what verification accepts (2: numeric inputs only)
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
MAX_PROFILE_BYTES = 16 * 1024 * 1024


class ProfileError(PipelineError, ValueError):
    """The profile or its signature is missing, malformed or not trusted."""


def _f(x: float) -> float:
    return 0.0 if not np.isfinite(x) else float(x)  # JSON has no NaN; a 1-row std is 0


def _feature_stats(
    values: np.ndarray, labels: pd.Series, params: Mapping[str, Any]
) -> dict[str, Any]:
    s = pd.Series(values)
    median = _f(s.median())
    qs = s.quantile(list(QUANTILES))
    lo, hi = (_f(s.quantile(q)) for q in params["tail_quantiles"])
    st: dict[str, Any] = {
        "mean": _f(s.mean()),
        "std": _f(s.std(ddof=1)),
        "median": median,
        "mad": _f((s - median).abs().median()),
        "tail_low": lo,
        "tail_high": hi,
        "quantiles": {f"q{round(q * 100):02d}": _f(v) for q, v in qs.items()},
    }
    st["outlier_rate"] = outlier_rate(values, st, z=params["outlier_z"])
    st["tails"] = {t: tail_label_shares(m, labels) for t, m in tail_masks(values, st).items()}
    return st


def _categorical_stats(
    frame: pd.DataFrame, col: str, labels: pd.Series, params: Mapping[str, Any]
) -> dict[str, Any]:
    keys = category_keys(frame[col])
    n = len(keys)
    counts = keys.value_counts()
    if len(counts) > params["max_categories"]:
        raise ProfileError(
            f"categorical column {col!r} has {len(counts)} distinct values (over "
            f"{params['max_categories']}): an id or free text? declare it ignored"
        )
    rare = [str(k) for k, v in counts.items() if v / n < params["rare_share"]]
    return {
        "shares": {str(k): float(v) / n for k, v in counts.items()},
        "missing_rate": float(keys.isna().sum()) / n,
        "tails": {c: tail_label_shares((keys == c).to_numpy(), labels) for c in rare},
    }


def _resolve_inputs(
    frame: pd.DataFrame,
    target: str,
    numeric: Iterable[str] | None,
    categorical: Iterable[str] | None,
    exclude: Iterable[str],
) -> tuple[list[str], list[str]]:
    cats = list(categorical or [])
    skip = {target, *exclude, *cats}
    nums = [c for c in frame.columns if c not in skip] if numeric is None else list(numeric)
    declared = [*nums, *cats]
    if len(set(declared)) != len(declared) or target in declared:
        raise ProfileError("an input is declared twice, or is the target")
    if not declared:
        raise ProfileError("no input columns to profile")
    absent = [c for c in [*declared, target] if c not in frame.columns]
    if absent:
        raise ProfileError(f"declared column(s) {absent[:10]} not in the data")
    return nums, cats


def build_profile(
    frame: pd.DataFrame,
    *,
    target: str,
    numeric: Iterable[str] | None = None,
    categorical: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> dict[str, Any]:
    """The version 4 reference profile of a trusted dataset (deterministic up to 50k rows).

    Args:
        frame: The trusted data.
        target: Label column (any hashable values, 2 or more classes).
        numeric: Numeric inputs. None: every column but the target, `categorical`
            and `exclude` (each must then be numeric: text is never profiled silently).
        categorical: Categorical inputs (strings or integer codes).
        exclude: Columns that are not inputs when `numeric` is None (PII, ignored ones).

    Write it with `write_profile` (signed) or ``json.dumps(p, indent=2, sort_keys=True)``.

    Raises:
        ProfileError: a declared column is absent, declared twice, or a categorical
            column has more than ``max_categories`` distinct values.
        ValueError: a numeric input holds text.
    """
    nums, cats = _resolve_inputs(frame, target, numeric, categorical, exclude)
    labels = label_keys(frame[target])
    params = dict(PARAMS)
    stats = {c: _feature_stats(feature_values(frame, c), labels, params) for c in nums}
    n = len(frame)
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "rows": n,
        "columns": [str(c) for c in frame.columns],
        "target": target,
        "inputs": {"numeric": nums, "categorical": cats},
        "params": params,
        "label_shares": label_shares(frame[target]),
        "features": stats,
        "categorical": {c: _categorical_stats(frame, c, labels, params) for c in cats},
        "missing_rates": {c: float(frame[c].isna().sum()) / n if n else 0.0 for c in nums + cats},
    }
    profile["conditional"] = build_conditional(frame, target=target, numeric=nums, categorical=cats)
    content = frame[content_columns(profile)]
    profile["duplicate_rate"] = duplicate_rate(content)
    nb = neighbour_stats(content, profile, seed=0)
    profile["label_noise_rate"] = nb.label_noise_rate
    if n >= 100:  # the rate of a seeded half: the screen scales by rows (check_label_noise)
        half = content.iloc[np.sort(np.random.default_rng(0).permutation(n)[: n // 2])]
        rate = neighbour_stats(half, profile, seed=0).label_noise_rate
        profile["label_noise_half"] = {"rows": len(half), "rate": rate}
    profile["near_duplicate_rate"] = nb.near_duplicate_rate
    return profile


def profile_text(profile: Mapping[str, Any]) -> str:
    return json.dumps(profile, indent=2, sort_keys=True, allow_nan=False) + "\n"


def signature_path(profile_path: Path) -> Path:
    return profile_path.with_name(profile_path.name + ".sig")


def write_profile(profile: Mapping[str, Any], out: Path, *, signer: Signer) -> str:
    """Write the profile and ``<out>.sig``; return the profile file's sha256."""
    text = profile_text(profile)
    envelope = signer.sign(json.loads(text), payload_type=PROFILE_TYPE)
    write_atomic(out, text, mode=PUBLIC)
    write_atomic(signature_path(out), json.dumps(envelope, indent=2) + "\n", mode=PUBLIC)
    return sha256_bytes(text.encode())


def read_table(path: Path, *, max_bytes: int = 1024**3) -> pd.DataFrame:
    """A CSV or Parquet file, the format decided by content (never unpickled)."""
    data = read_capped(path, max_bytes=max_bytes, follow_symlinks=True)
    kind = sniff_format(data)
    if kind == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    if kind == "csv":
        return pd.read_csv(io.StringIO(data.decode("utf-8-sig")))
    raise ProfileError(f"{path.name}: content is {kind}, not CSV or Parquet")


def build_and_sign_profile(
    data: Path,
    *,
    target: str,
    out: Path,
    signer: Signer,
    numeric: Iterable[str] | None = None,
    categorical: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """`secure-pipeline profile DATA --out PROFILE`: profile trusted data and sign it.

    Args:
        data: Trusted CSV or Parquet file.
        target: Label column.
        out: Profile path; the signature goes to ``<out>.sig``.
        signer: Usually ``Signer.local(settings.keys_dir)``.
        numeric, categorical: The inputs (``settings.dataset.inputs(columns)``);
            numeric None: every column but the target, categorical and `exclude`.
        exclude: Columns that are not inputs (declared PII and ignored columns).

    Returns:
        The sha256 of the written profile (for the optional pin).
    """
    frame = read_table(data)
    profile = build_profile(
        frame, target=target, numeric=numeric, categorical=categorical, exclude=exclude
    )
    return write_profile(profile, out, signer=signer)


def load_signer_key(path: Path) -> PublicKey:
    """A profile signer's PEM public key (ECDSA P-256 or Ed25519)."""
    try:
        return load_public_pem(read_capped(path, max_bytes=64 * 1024, follow_symlinks=True), "")
    except SignatureError:
        raise ProfileError(
            f"profile signer {path.name} is neither an ECDSA P-256 nor an Ed25519 public key"
        ) from None


def trusted_keys(
    keys_dir: Path, signers: Iterable[Path], *, trainer: bool = True
) -> dict[str, PublicKey]:
    """The pipeline's own public key (if it has one yet) and the configured signers.

    Args:
        trainer: Whether the trainer's own key may sign the profile. False when trust
            roots are pinned (``[trust] signers``): then only the data steward's keys
            (``dataset.profile_signers``) count, so a trainer cannot rebuild, re-sign
            and re-pin the profile from poisoned data.

    Raises:
        ProfileError: a configured signer file is missing or not a P-256 or Ed25519 PEM key.
    """
    keys: dict[str, PublicKey] = {}
    if trainer and (keys_dir / "signing.pub").is_file():
        for kid, key in pipeline_keys(keys_dir).items():
            keys["pipeline" if key == load_public_key(keys_dir) else f"pipeline-{kid[:16]}"] = key
    for path in signers:
        try:
            keys[path.name] = load_signer_key(path)
        except (OSError, ValueError) as exc:
            raise ProfileError(
                f"profile signer {path.name} unreadable ({type(exc).__name__})"
            ) from None
    return keys


def verify_profile(
    raw: bytes, sig_raw: bytes, keys: Mapping[str, PublicKey]
) -> tuple[dict[str, Any], str]:
    """Return (profile, signer name) if a trusted key signed exactly this profile.

    Raises:
        ProfileError: malformed envelope, no trusted signature, or the file differs
            from the signed payload.
    """
    try:
        envelope = json.loads(sig_raw)
        content = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProfileError("profile or signature is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise ProfileError("signature file is not a DSSE envelope")
    for name, key in keys.items():
        try:
            payload = verify(envelope, public_key=key, payload_type=PROFILE_TYPE)
        except SignatureError:
            continue
        if payload != content:
            raise ProfileError(
                f"profile file differs from what {name} signed: it was edited after signing"
            )
        return payload, name
    raise ProfileError(
        "no valid signature by a trusted key (the pipeline's key or dataset.profile_signers; "
        "with [trust] signers pinned, dataset.profile_signers only: the data steward signs)"
    )


def input_mismatch(
    profile: Mapping[str, Any], numeric: Iterable[str], categorical: Iterable[str]
) -> str:
    """How the profile's inputs differ from the declared ones ("" if they do not)."""
    have_num, have_cat = (set(x) for x in profile_inputs(profile))
    want_num, want_cat = set(numeric), set(categorical)
    problems = [
        f"{what}: {sorted(cols)[:10]}"
        for what, cols in (
            ("not in the profile", (want_num | want_cat) - (have_num | have_cat)),
            ("in the profile but not inputs", (have_num | have_cat) - (want_num | want_cat)),
            ("profiled as numeric, declared categorical", have_num & want_cat),
            ("profiled as categorical, declared numeric", have_cat & want_num),
        )
        if cols
    ]
    return "; ".join(problems)


def check_profile_integrity(
    raw: bytes | None,
    sig_raw: bytes | None,
    *,
    keys: Mapping[str, PublicKey] | None,
    expected_sha256: str | None,
    key_error: str = "",
    inputs: tuple[Iterable[str], Iterable[str]] | None = None,
) -> tuple[GateResult, dict[str, Any]]:
    """`screen.profile_integrity`: signed by a trusted key, unchanged, and pinned if pinned.

    Returns the result and the verified profile, so it is parsed and verified once
    (`run_check_with` hands the profile on only if the gate passed).

    Args:
        raw: The profile file's bytes (None: missing or unreadable).
        sig_raw: The ``.sig`` file's bytes (None: missing or unreadable).
        keys: Trusted public keys by name (None: they could not be loaded, see key_error).
        expected_sha256: The optional pin.
        inputs: The config's (numeric, categorical) inputs for this data: the profile
            must describe exactly these (else a column would go unscreened).
    """
    name = "screen.profile_integrity"
    threshold = {"signed_by": sorted(keys or {}), "sha256": expected_sha256}
    if raw is None or sig_raw is None:
        what = "reference profile" if raw is None else "its signature (PROFILE.sig)"
        return (
            failed(
                name,
                metrics={"readable": raw is not None, "signed": False},
                threshold=threshold,
                detail=f"{what} missing, unreadable or over 16 MiB; sign the profile "
                "with `secure-pipeline profile`",
            ),
            {},
        )
    digest = sha256_bytes(raw)
    metrics: dict[str, Any] = {
        "sha256": digest,
        "signed": False,
        "signer": None,
        "pin_matched": None if expected_sha256 is None else digest == expected_sha256,
    }
    if keys is None:
        return (failed(name, metrics=metrics, threshold=threshold, detail=key_error), {})
    try:
        profile, signer = verify_profile(raw, sig_raw, keys)
    except ProfileError as exc:
        return (failed(name, metrics=metrics, threshold=threshold, detail=str(exc)), {})
    metrics.update(
        signed=True,
        signer=signer,
        signer_key_id=key_id(keys[signer])[:16],
        version=profile.get("version"),
    )
    if profile.get("version") not in SUPPORTED_VERSIONS:
        return (
            failed(
                name,
                metrics=metrics,
                threshold=threshold,
                detail=f"profile version is not one of {list(SUPPORTED_VERSIONS)}; rebuild it",
            ),
            {},
        )
    mismatch = "" if inputs is None else input_mismatch(profile, *inputs)
    if inputs is not None:
        metrics["inputs_match"] = not mismatch
    if mismatch:
        return (
            failed(
                name,
                metrics=metrics,
                threshold=threshold,
                detail=f"the profile describes other inputs than the config ({mismatch}): "
                "rebuild it from trusted data with `secure-pipeline profile`",
            ),
            {},
        )
    ok = metrics["pin_matched"] is not False
    return (
        check(
            name,
            metrics=metrics,
            threshold=threshold,
            ok=ok,
            detail=""
            if ok
            else "profile differs from dataset.reference_profile_sha256: "
            "re-pin after review, or remove the pin",
        ),
        profile,
    )
