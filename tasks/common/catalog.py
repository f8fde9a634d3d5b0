"""Every gate of the pipeline, declared once: the single list a reader, the README
and the tests share.

A gate's name is ``<stage>.<check>`` (lowercase, stable: reports, MLflow tags and
the audit log use it). ``check`` names the function the stage runs for it, as
``module:function`` where the stage looks it up, so a test can make each check raise
and prove that the run is then blocked by that very gate. ``setting`` is the config
key holding the threshold (None: fixed in code).

A fork that adds a gate adds it here and to the README's gate table; a test fails
until both agree, and `StageGates.enforce` refuses a result for an undeclared gate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    name: str
    threat: str
    measured: str
    threshold: str  # the default, as the README states it
    check: str  # "module:function" the stage calls under run_check
    setting: str | None = None

    @property
    def stage(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def flow(self) -> str:
        """The flow that runs it: ``monitoring`` for ``monitor.*``, else ``training``."""
        return "monitoring" if self.stage == "monitor" else "training"


GATES: tuple[Gate, ...] = (
    Gate(
        "ingest.source",
        "path tricks, unexpected sources",
        "inside `data_root`, regular file, no symlink escape; remote prefix allow-listed",
        "local under data root; `s3://`/`https://` only if in `allowed_sources`",
        "tasks.ingest:check_source",
        "dataset.allowed_sources",
    ),
    Gate(
        "ingest.size",
        "resource exhaustion",
        "bytes (before reading), longest line (before parsing), rows, columns, longest cell",
        "512 MiB, 1 MiB lines, 5M rows, 2000 columns, 64 Ki-character cells",
        "tasks.ingest:check_size",
        "dataset.max_bytes",
    ),
    Gate(
        "ingest.integrity",
        "tampered or swapped data",
        "sha256",
        "config pin, or `<file>.sha256` sidecar, when present",
        "tasks.ingest:check_integrity",
        "dataset.sha256",
    ),
    Gate(
        "ingest.format",
        "malicious files (pickle payloads)",
        "format detected from content (magic bytes)",
        "CSV (strict UTF-8) or Parquet; never unpickled",
        "tasks.ingest:check_format",
    ),
    Gate(
        "ingest.formula_cells",
        "spreadsheet-formula injection",
        "text cells starting with `= + - @`",
        "0",
        "tasks.ingest:check_formula_cells",
    ),
    Gate(
        "screen.pii",
        "personal data reaching the model",
        "columns that look like PII by name or value (email, phone, SSN, card with Luhn, "
        "IBAN, IP, ...)",
        "none undeclared; declared ones dropped or HMAC-pseudonymised",
        "tasks.screen:check_and_handle_pii",
        "dataset.pii",
    ),
    Gate(
        "validate.suite_integrity",
        "loosened suite (insider)",
        "suite sha256; with `[trust] signers`, the signature in `SUITE.sig`",
        "pinned in config; signed by a `dataset.profile_signers` key",
        "tasks.validate:check_suite_integrity",
        "dataset.suite_sha256",
    ),
    Gate(
        "validate.columns",
        "silently dropped or misread columns",
        "columns not declared (numeric, categorical, ignored, PII), text in numeric inputs, "
        "missing values where refused, classes",
        "0 undeclared, 0 refused missing, 2+ classes",
        "tasks.validate:check_columns",
        "dataset.numeric",
    ),
    Gate(
        "validate.expectations",
        "schema attacks, corruption",
        "failed expectations (columns, types, nulls, ranges, labels, row count, distributions)",
        "none may fail",
        "tasks.validate:check_expectations",
    ),
    Gate(
        "screen.profile_integrity",
        "tampered reference profile",
        "DSSE signature of the profile; its inputs equal the config's",
        "signed by the pipeline key or a configured signer",
        "tasks.screen:check_profile_integrity",
        "dataset.profile_signers",
    ),
    Gate(
        "screen.label_distribution",
        "label flipping",
        "rows per class vs reference (Fisher, Holm); shift needed: 0.005 of rows and "
        "0.05 or a quarter of the class",
        "adjusted p 0.001",
        "tasks.screen:check_label_distribution",
        "screen.max_label_shift",
    ),
    Gate(
        "screen.missingness",
        "gaps tied to a class",
        "missing rate per input, over all rows and per class, vs reference (Fisher, Holm)",
        "0.05 or a quarter of the rate (adjusted p 0.001)",
        "tasks.screen:check_missingness",
        "screen.max_missing_shift",
    ),
    Gate(
        "screen.category_shares",
        "shifted or injected categories",
        "share of each category and of unseen ones per categorical input vs reference "
        "(Fisher, Holm)",
        "0.05 or a quarter of the share (adjusted p 0.001)",
        "tasks.screen:check_category_shares",
        "screen.max_category_shift",
    ),
    Gate(
        "screen.label_noise",
        "label flipping",
        "kNN neighbour disagreement minus the reference rate at the data's size, "
        "beyond its 99% noise",
        "0.05",
        "tasks.screen:check_label_noise",
        "screen.max_label_noise_excess",
    ),
    Gate(
        "screen.duplicates",
        "duplicate floods",
        "exact duplicate row rate minus the reference's own (one-sided Fisher)",
        "0.02 (adjusted p 0.001)",
        "tasks.screen:check_duplicates",
        "screen.max_duplicate_rate",
    ),
    Gate(
        "screen.near_duplicates",
        "jittered floods",
        "share of near-twin rows minus reference",
        "0.05",
        "tasks.screen:check_near_duplicates",
        "screen.max_near_duplicate_rate",
    ),
    Gate(
        "screen.outliers",
        "injected outliers",
        "worst feature's robust-z outlier rate minus reference",
        "0.04",
        "tasks.screen:check_outliers",
        "screen.max_outlier_rate_excess",
    ),
    Gate(
        "screen.backdoor",
        "backdoor triggers",
        "excess rows per (numeric bin or category, class), beyond the range, at an unseen "
        "category, per bin and at the most repeated value vs reference (Fisher, Holm)",
        "0.01 of rows (adjusted p 0.001)",
        "tasks.screen:check_backdoor",
        "screen.max_backdoor_score",
    ),
    Gate(
        "train.artifact_roundtrip",
        "unsafe or altered model artifact",
        "prediction mismatches after a safe reload",
        "0",
        "tasks.train:check_artifact_roundtrip",
    ),
    Gate(
        "evaluate.quality",
        "useless, sabotaged or regressed model",
        "skill over the better trivial baseline (majority class, label-share guessing) on the "
        "same test rows, (acc - base) / (1 - base); paired accuracy difference vs the verified "
        "champion on the same rows",
        "skill 0.2; regression 0.02 beyond the paired interval",
        "tasks.evaluate:check_quality",
        "evaluate.min_skill",
    ),
    Gate(
        "evaluate.adversarial",
        "evasion attacks",
        "accuracy drop (clean minus robust, same rows) under the worst of FGM and the exact "
        "corner (linear) or Square (trees), L-inf eps 0.1 std of numeric inputs; paired robust "
        "accuracy vs the champion; certified accuracy (lower bound) beside it",
        "0.30",
        "tasks.evaluate:check_adversarial",
        "evaluate.max_robust_drop",
    ),
    Gate(
        "evaluate.membership_inference",
        "membership inference, inversion",
        "advantage (TPR - FPR) of ART's black-box attack on up to 1000 members and "
        "non-members, its one-sided 95% lower bound; and TPR at 1% FPR of offline LiRA "
        "(4 reference models), its Clopper-Pearson 95% lower bound",
        "advantage 0.25; TPR at 1% FPR 0.15",
        "tasks.evaluate:check_membership_inference",
        "evaluate.max_membership_advantage",
    ),
    Gate(
        "evaluate.backdoor_probe",
        "backdoor triggers the model learned",
        "share of clean test rows flipped to one class by a stamped candidate trigger "
        "(repeated extreme value, a value from each reference bin's most label-anomalous "
        "band, rare category, category absent from the reference), beyond what the signed "
        "reference's label counts at that value justify (and beyond nearby values, and "
        "beyond what the same estimator trained on the trusted table flips, when the "
        "profile lists one); "
        'without label counts (profile v2/3): beyond a benign control, `reference: "none"`',
        "0.30",
        "tasks.evaluate:check_backdoor_probe",
        "evaluate.max_backdoor_flip",
    ),
    Gate(
        "evaluate.extraction_risk",
        "model theft by queries",
        "agreement of a surrogate trained on 1000 label-only queries",
        "reported (optional maximum)",
        "tasks.evaluate:check_extraction_risk",
        "evaluate.max_extraction_fidelity",
    ),
    Gate(
        "evaluate.dp_audit",
        "a broken DP setup (noise, norm bound) leaking beyond its budget",
        "DP estimators: empirical epsilon, a 95% lower bound from one extra training run "
        "with 1000 canaries each included with probability 1/2 (Steinke, Nasr, Jagielski "
        "2023); other estimators: not applicable",
        "the claimed `model.dp_epsilon`",
        "tasks.evaluate:check_dp_audit",
        "model.dp_epsilon",
    ),
    Gate(
        "sign.model_digest",
        "tampering between train and sign",
        "sha256 of the model file",
        "equals the trained one",
        "tasks.sign:check_model_digest",
    ),
    Gate(
        "sign.dependencies",
        "supply chain: a tampered environment",
        "installed packages vs the runtime and dev lock pins, every site-packages file "
        "vs its RECORD hash, the locks vs the recorded commit",
        "0 drifted, 0 unlisted, 0 modified or unrecorded files, locks as committed",
        "tasks.sign:check_environment",
    ),
    Gate(
        "sign.provenance",
        "unsigned or forged provenance",
        "SLSA provenance (DSSE), SBOM schema, OpenSSF model signature, all gates passed",
        "valid",
        "tasks.sign:check_provenance",
    ),
    Gate(
        "deploy.bucket_posture",
        "weak storage",
        "versioning, object lock, default SSE, policy",
        "all on",
        "tasks.deploy:check_bucket_posture",
    ),
    Gate(
        "deploy.no_overwrite",
        "overwriting a release",
        "conditional writes refused",
        "0 overwrites",
        "tasks.deploy:check_no_overwrite",
    ),
    Gate(
        "deploy.roundtrip",
        "broken or tampered deployment",
        "fetched, decrypted, verified, loaded",
        "all checks",
        "tasks.deploy:check_roundtrip",
    ),
    # The monitoring flow (flows/monitoring.py); its batch also passes ingest.*, pii.*
    # and screen.profile_integrity above.
    Gate(
        "monitor.integrity",
        "tampered, deleted or replaced deployed model; champion moved by hand",
        "the champion record, alias and release verify as `verify` checks them",
        "all checks pass",
        "tasks.monitor:check_integrity",
    ),
    Gate(
        "monitor.audit",
        "hidden or rewritten history",
        "audit chain, anchors, release version histories, bucket policy",
        "intact, anchored, 0 deleted or replaced",
        "tasks.monitor:check_audit",
    ),
    Gate(
        "monitor.drift",
        "data drift, pipeline breakage, poisoning in production",
        "per column and group (bin, category, missing, out of range): Fisher + Holm",
        "alpha 0.01 per batch, shift >= 0.05 or 0.5x reference, >= 0.01",
        "tasks.monitor:check_drift",
        "monitoring.alpha",
    ),
    Gate(
        "monitor.quality",
        "silent model decay",
        "accuracy on a labelled batch (one-sided binomial test); estimate without labels",
        "not significantly below the floor (evaluate.min_accuracy, else 0.9)",
        "tasks.monitor:check_quality",
        "monitoring.min_accuracy",
    ),
)

BY_NAME: dict[str, Gate] = {g.name: g for g in GATES}


@dataclass(frozen=True)
class SafeRange:
    """How far a setting may weaken its gate without a waiver: a floor may not go
    below ``bound`` (``at_least``), a ceiling not above it (``at_most``)."""

    setting: str  # "section.key"
    gate: str
    at_least: float | None = None
    at_most: float | None = None

    def allows(self, value: float | None) -> bool:
        if value is None:  # an optional fixed floor left unset: off, the relative rule holds
            return True
        return (self.at_least is None or value >= self.at_least) and (
            self.at_most is None or value <= self.at_most
        )

    @property
    def bound(self) -> str:
        return f">= {self.at_least}" if self.at_least is not None else f"<= {self.at_most}"


# Beyond these a setting switches its gate (nearly) off: the config must then carry a
# named waiver with a reason (``[waivers]``, gate -> reason), shown in the run summary,
# the report, the signed provenance and the audit log. FORK: tighten, never loosen.
SAFE_RANGES: tuple[SafeRange, ...] = (
    SafeRange("evaluate.min_skill", "evaluate.quality", at_least=0.1),
    SafeRange("evaluate.max_regression", "evaluate.quality", at_most=0.05),
    SafeRange("evaluate.max_robust_drop", "evaluate.adversarial", at_most=0.5),
    # The optional fixed floors, when set (unset is off: the relative rules above hold).
    SafeRange("evaluate.min_accuracy", "evaluate.quality", at_least=0.75),
    SafeRange("evaluate.min_robust_accuracy", "evaluate.adversarial", at_least=0.5),
    SafeRange("evaluate.attack_eps", "evaluate.adversarial", at_least=0.05),
    SafeRange("evaluate.attack_samples", "evaluate.adversarial", at_least=50),
    SafeRange("evaluate.attack_iterations", "evaluate.adversarial", at_least=20),
    SafeRange("evaluate.max_membership_advantage", "evaluate.membership_inference", at_most=0.35),
    SafeRange("evaluate.membership_samples", "evaluate.membership_inference", at_least=200),
    SafeRange(
        "evaluate.max_membership_tpr_at_low_fpr", "evaluate.membership_inference", at_most=0.3
    ),
    SafeRange("evaluate.membership_references", "evaluate.membership_inference", at_least=4),
    SafeRange("evaluate.max_backdoor_flip", "evaluate.backdoor_probe", at_most=0.5),
    SafeRange("evaluate.backdoor_samples", "evaluate.backdoor_probe", at_least=100),
    SafeRange("evaluate.dp_audit_canaries", "evaluate.dp_audit", at_least=500),
    SafeRange("screen.max_label_shift", "screen.label_distribution", at_most=0.10),
    # Shared by the relative screens: weakening one weakens each gate named here.
    *(
        SafeRange("screen.alpha", f"screen.{g}", at_least=1e-6)
        for g in ("label_distribution", "missingness", "category_shares", "duplicates", "backdoor")
    ),
    *(
        SafeRange("screen.min_relative_shift", f"screen.{g}", at_most=0.5)
        for g in ("label_distribution", "missingness", "category_shares", "backdoor")
    ),
    *(
        SafeRange("screen.min_share_shift", f"screen.{g}", at_most=0.02)
        for g in ("label_distribution", "missingness", "category_shares")
    ),
    SafeRange("screen.max_missing_shift", "screen.missingness", at_most=0.10),
    SafeRange("screen.max_category_shift", "screen.category_shares", at_most=0.10),
    SafeRange("screen.max_label_noise_excess", "screen.label_noise", at_most=0.10),
    SafeRange("screen.max_duplicate_rate", "screen.duplicates", at_most=0.05),
    SafeRange("screen.max_near_duplicate_rate", "screen.near_duplicates", at_most=0.10),
    SafeRange("screen.max_outlier_rate_excess", "screen.outliers", at_most=0.08),
    SafeRange("screen.max_backdoor_score", "screen.backdoor", at_most=0.04),
    # Monitoring: fewer alarms than this is a watchman asleep.
    SafeRange("monitoring.alpha", "monitor.drift", at_least=1e-4),
    SafeRange("monitoring.min_shift", "monitor.drift", at_most=0.15),
    SafeRange("monitoring.min_relative_shift", "monitor.drift", at_most=1.0),
    SafeRange("monitoring.floor", "monitor.drift", at_most=0.05),
    SafeRange("monitoring.min_accuracy", "monitor.quality", at_least=0.5),
)
