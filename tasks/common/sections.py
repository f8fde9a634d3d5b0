"""The sections of the pipeline's config file, one class per ``[table]``
(`tasks.common.settings.Settings` puts them together, resolves paths and checks
waivers). Every field's default is the secure one; ``# FORK:`` marks the ones a team
is meant to set for its own data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    source: str
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    target: str  # the label column: any values (strings, integers), 2 or more classes
    # FORK: the columns of your table, each declared once (`secure-pipeline init` infers
    # them for review). Model inputs are `numeric` (imputed, scaled) and `categorical`
    # (strings or integer codes: imputed, one-hot; a value unseen in training counts as
    # none of the known ones). `ignored` columns are read and validated, never model
    # inputs (ids, timestamps). Any other column blocks the run (gate
    # `validate.columns`), never a silent drop. Both lists empty: every column but the
    # target, the PII and the ignored ones is numeric.
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)
    # Missing values, per input column: "median" / "most_frequent" / "constant" (0, or
    # "<missing>" for a category) impute them inside the model pipeline (so serving does
    # the same); "refuse" (the default of an unlisted column) blocks a run whose data
    # has any there.
    missing: dict[str, Literal["median", "most_frequent", "constant", "refuse"]] = Field(
        default_factory=dict
    )
    # A dataset name or path given at run time (a deployment parameter) must
    # resolve inside data_root. Default: the config file's directory.
    data_root: Path = Path(".")
    # Remote sources must start with one of these prefixes, e.g.
    # "s3://nightly-data/" or "https://data.example.org/exports/". Empty: none.
    allowed_sources: list[str] = Field(default_factory=list)
    ca_bundle: Path | None = None  # extra CA for https sources (None: system trust)
    suite: Path
    suite_sha256: str = Field(pattern=SHA256_PATTERN)
    reference_profile: Path
    # The profile must carry a valid signature (PROFILE.sig) by the pipeline's
    # own key or one of these public keys (PEM files).
    profile_signers: list[Path] = Field(default_factory=list)
    reference_profile_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    # Columns holding personal data, and what to do with them before training.
    # Any other column that looks like PII (by name or value) blocks the run.
    pii: dict[str, Literal["drop", "pseudonymize"]] = Field(default_factory=dict)
    max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_rows: int = Field(default=5_000_000, gt=0)
    max_columns: int = Field(default=2_000, gt=0)
    # Bound the time any scan of one line or one value takes (a 50 MB cell once kept
    # the PII scan busy for minutes). Raise them for tables with long free text.
    max_line_bytes: int = Field(default=1024 * 1024, gt=0)
    max_cell_chars: int = Field(default=64 * 1024, gt=0)

    @model_validator(mode="after")
    def _columns_declared_once(self) -> DatasetConfig:
        seen: dict[str, str] = {}
        for role in ("numeric", "categorical", "ignored", "pii"):
            for col in getattr(self, role):
                if col == self.target or col in seen:
                    first = "target" if col == self.target else seen[col]
                    raise ValueError(f"column {col!r} is declared as both {first} and {role}")
                seen[col] = role
        for col, policy in self.missing.items():
            if seen.get(col) not in ("numeric", "categorical"):
                raise ValueError(
                    f"missing.{col}: only numeric or categorical inputs have a missing policy"
                )
            if policy == "median" and seen[col] == "categorical":
                raise ValueError(f"missing.{col}: a category has no median (use most_frequent)")
        return self

    def inputs(self, columns: list[str]) -> tuple[list[str], list[str]]:
        """The model's (numeric, categorical) inputs, for a table with these `columns`.

        Declared lists are returned as they are; with none declared, every column
        but the target, the PII and the ignored ones is numeric.
        """
        if self.numeric or self.categorical:
            return list(self.numeric), list(self.categorical)
        skip = {self.target, *self.pii, *self.ignored}
        return [c for c in columns if c not in skip], []

    def missing_policy(self, column: str) -> str:
        return self.missing.get(column, "refuse")


class ScreenConfig(_Section):
    # Relative screens (tasks/checks/relative.py): a count blocks when it differs from
    # the reference's significantly (Fisher's exact test, Holm over each gate's family
    # at `alpha`: the chance a clean sample blocks that gate) AND materially (by at
    # least `min_share_shift` of the rows, and by the gate's max_* shift or
    # `min_relative_shift` of the reference share).
    alpha: float = Field(default=0.001, gt=0, lt=1)
    min_relative_shift: float = Field(default=0.25, ge=0)
    min_share_shift: float = Field(default=0.005, ge=0, le=1)
    max_label_shift: float = Field(default=0.05, ge=0, le=1)  # a class's share, absolute
    max_missing_shift: float = Field(default=0.05, ge=0, le=1)  # a column's missing rate
    max_category_shift: float = Field(default=0.05, ge=0, le=1)  # a category's share
    # Exact repeats beyond the reference's own repeat rate (share of rows).
    max_duplicate_rate: float = Field(default=0.02, ge=0, le=1)
    max_near_duplicate_rate: float = Field(default=0.05, ge=0, le=1)
    max_label_noise_excess: float = Field(default=0.05, ge=0, le=1)
    max_outlier_rate_excess: float = Field(default=0.04, ge=0, le=1)
    # Excess rows of a label-pure cluster at a value, as a share of all rows.
    max_backdoor_score: float = Field(default=0.01, ge=0, le=1)
    # Key for HMAC-SHA256 pseudonymisation; None: <state>/keys/pii-hmac.key (0600).
    pii_key_file: Path | None = None


Estimator = Literal[
    "logistic_regression", "dp_logistic_regression", "random_forest", "hist_gradient_boosting"
]


class ModelConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    # FORK: a new estimator is named here (`Estimator`) and built in tasks/models.py.
    estimator: Estimator = "logistic_regression"
    # Keyword arguments of the estimator (scikit-learn's names), checked when the config
    # loads: an unknown or ill-typed one is a configuration error. Parameters under
    # [model.params.<estimator>] apply to that estimator only, so one config can hold
    # settings for several and switch with SECURE_PIPELINE_MODEL__ESTIMATOR.
    params: dict[
        str, float | int | str | bool | dict[str, float | int | str | bool | None] | None
    ] = Field(default_factory=dict)
    # dp_logistic_regression only (diffprivlib): the privacy budget of one training run.
    dp_epsilon: float = Field(default=1.0, gt=0)
    # Bound on the L2 norm of a *scaled* training row (rows beyond it are clipped).
    # None: derived from the training data (its largest scaled row norm). That leaks
    # a little privacy (diffprivlib warns: the bound itself depends on the data); in
    # production set a fixed value from domain knowledge.
    dp_data_norm: float | None = Field(default=None, gt=0)
    seed: int = 42
    test_fraction: float = Field(default=0.25, gt=0, lt=1)

    @property
    def estimator_params(self) -> dict[str, Any]:
        """The parameters that apply to the selected estimator."""
        flat = {k: v for k, v in self.params.items() if not isinstance(v, dict)}
        return {**flat, **self.params.get(self.estimator, {})}  # type: ignore[dict-item]

    @model_validator(mode="after")
    def _params_fit_the_estimator(self) -> ModelConfig:
        from tasks.models import ESTIMATORS, validate_params  # sklearn: imported on demand

        nested = {k for k, v in self.params.items() if isinstance(v, dict)}
        unknown = nested - set(ESTIMATORS)
        if unknown:
            raise ValueError(f"model.params.{sorted(unknown)[0]}: no such estimator")
        for name in {self.estimator, *nested}:  # every section, not just the selected one
            validate_params(self.model_copy(update={"estimator": name}))
        return self


class EvaluateConfig(_Section):
    # Quality (evaluate.quality), relative: skill over the better trivial baseline on the
    # same test rows, (accuracy - baseline) / (1 - baseline) (tasks/checks/baselines.py),
    # and no regression against the champion beyond `max_regression` (accuracy points,
    # on top of a paired interval for the number of test rows; the same rule holds for
    # robust accuracy on the same attacked rows).
    min_skill: float = Field(default=0.2, ge=-1, le=1)
    max_regression: float = Field(default=0.02, ge=0, le=1)
    # Fixed floors, optional: unset (the default) is off; when set they hold beside the
    # relative rules (an absolute accuracy means nothing across tables).
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    # Evasion attack on the numeric inputs (categorical ones held fixed): "auto" is FGM
    # for models with loss gradients (linear) and ART's Square attack (black box, from
    # predicted probabilities) for the rest (trees, boosting).
    attack: Literal["auto", "fgm", "pgd", "square"] = "auto"
    attack_eps: float = Field(default=0.1, gt=0, lt=0.5)  # L-inf, std of each numeric input
    # Robustness (evaluate.adversarial), relative: clean accuracy on the attacked rows
    # minus robust accuracy on them may be at most this.
    max_robust_drop: float = Field(default=0.3, ge=0, le=1)
    min_robust_accuracy: float | None = Field(default=None, ge=0, le=1)  # optional floor
    attack_samples: int = Field(default=200, gt=0)  # test rows attacked (cost is flat)
    attack_iterations: int = Field(default=100, gt=0)  # queries per row (square), steps (pgd)
    # Certified robustness (evaluate.adversarial, tasks/checks/certified.py): a lower
    # bound beside the attack's upper bound, on the attacked rows. The tree verifier
    # stops after this many seconds (rows left count as not certified; linear models
    # are exact and free); the optional floor blocks below it (None: report only).
    certify_seconds: float = Field(default=10.0, ge=0.1, le=600)
    min_certified_accuracy: float | None = Field(default=None, ge=0, le=1)
    # Membership-inference advantage (TPR - FPR of ART's black-box attack), measured on
    # up to `membership_samples` members and as many non-members (cost is flat).
    max_membership_advantage: float = Field(default=0.25, ge=0, le=1)
    membership_samples: int = Field(default=1000, gt=0)
    # Membership at low false-positive rates (offline LiRA, tasks/checks/membership_lowfpr.py):
    # the gate also blocks when the Clopper-Pearson 95% lower bound of the share of members
    # singled out at 1% FPR exceeds this. `membership_references` reference models (even:
    # complementary halves of the scored rows), each fitted on about `membership_samples`
    # rows (cost is flat).
    max_membership_tpr_at_low_fpr: float = Field(default=0.15, ge=0, le=1)
    membership_references: int = Field(default=4, ge=2, le=64, multiple_of=2)
    # Backdoor probe: candidate triggers stamped on clean test rows; the largest share of
    # predictions that flip to one class, beyond the flips of a benign control value.
    max_backdoor_flip: float = Field(default=0.30, ge=0, le=1)
    backdoor_samples: int = Field(default=500, gt=0)
    # Extraction: agreement of a surrogate trained on `extraction_queries` label-only
    # queries with the model. Reported; a threshold blocks above it (None: report only).
    extraction_queries: int = Field(default=1000, gt=0)
    max_extraction_fidelity: float | None = Field(default=None, ge=0, le=1)
    # DP audit (evaluate.dp_audit, DP estimators only; tasks/checks/dp_audit.py): one
    # extra training run with `dp_audit_canaries` canaries (fewer: a weaker audit, the
    # most it can show falls: 5.4 for 1000, 4.7 for 500) on at most `dp_audit_rows`
    # training rows (its cost is flat beyond).
    dp_audit_canaries: int = Field(default=1000, gt=0, le=20_000)
    dp_audit_rows: int = Field(default=10_000, gt=0)
    # Settings of one estimator only, from sub-tables: [evaluate.random_forest]
    # min_skill = 0.6 overrides the flat value when model.estimator is random_forest
    # (as [model.params.<estimator>] does for parameters). `init` writes one per
    # estimator from what it measured.
    per_estimator: dict[str, dict[str, float | int | str | None]] = Field(
        default_factory=dict, exclude=True
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_estimator_tables(cls, data: Any) -> Any:
        """Sub-tables named like an estimator become `per_estimator` entries."""
        if not isinstance(data, dict):
            return data
        names = set(get_args(Estimator))
        nested = {k: v for k, v in data.items() if isinstance(v, dict) and k in names}
        if not nested:
            return data
        rest = {k: v for k, v in data.items() if k not in nested}
        return {**rest, "per_estimator": {**rest.get("per_estimator", {}), **nested}}

    @model_validator(mode="after")
    def _estimator_tables_are_settings(self) -> EvaluateConfig:
        names = set(get_args(Estimator))
        for name, values in self.per_estimator.items():
            if name not in names:
                raise ValueError(f"evaluate.{name}: no such estimator")
            for key in values:
                if key not in EVALUATE_KEYS:
                    raise ValueError(f"evaluate.{name}.{key}: no such evaluate setting")
            self.for_estimator(name)  # the merged values must validate
        return self

    def for_estimator(self, name: str) -> EvaluateConfig:
        """The effective settings for estimator `name`: its sub-table over the flat ones."""
        own = self.per_estimator.get(name)
        if not own:
            return self
        flat = self.model_dump(exclude={"per_estimator"})
        return EvaluateConfig.model_validate({**flat, **own})


EVALUATE_KEYS = frozenset(EvaluateConfig.model_fields) - {"per_estimator"}


class StorageConfig(_Section):
    bucket: str = Field(default="secure-models", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = "models"
    endpoint_url: str | None = None  # None: the embedded SeaweedFS over TLS
    region: str = "us-east-1"
    ca_bundle: Path | None = None
    # Production: a KMS key ARN wraps the data keys and is used for SSE-KMS.
    # None: a local master key file (0600) wraps them, and SSE is AES256.
    kms_key_id: str | None = None
    object_lock_days: int = Field(default=30, gt=0)


class TrustConfig(_Section):
    """Where consumers (`verify`, `fetch`) take their trust from: reviewed like code.

    ``signers``: public keys (PEM, P-256 or Ed25519) of the trainer, active and retired,
    pinned here, outside the state directory the trainer writes. With pins, releases
    are checked against them only (never the state dir's keyring), they are who counts
    as the trainer for the two-person rule, and the reference profile and the
    expectation suite (``<suite>.sig``) only against ``dataset.profile_signers`` (not the
    trainer's key). Empty (the
    bundled single-machine default): the state dir's keyring is the trust root.
    ``refuse_waivers``: consumers refuse a release whose provenance carries a waiver.
    """

    # FORK: pin your trainer's public key(s) here and keep this file under review.
    signers: list[Path] = Field(default_factory=list)
    refuse_waivers: bool = False


class LocalStackConfig(_Section):
    """Ports of the embedded services (all on 127.0.0.1)."""

    s3_port: int = Field(default=8333, ge=1024, le=55535)  # SeaweedFS also binds port + 10000
    prefect_port: int = Field(default=4200, ge=1024, le=65535)
    mlflow_port: int = Field(default=5000, ge=1024, le=65535)


class GovernanceConfig(_Section):
    """Separation of duties (`tasks.governance`). ``required_approvals = 0`` (the
    default): the trainer also promotes, as a single-machine pipeline does; N > 0: a
    release becomes champion only with N signed approvals from distinct keys listed
    in ``approvers`` (never the trainer's), moved by a key listed in ``promoters``."""

    # FORK: how many people must approve a release before it ships.
    required_approvals: int = Field(default=0, ge=0, le=16)
    approvers: list[Path] = Field(default_factory=list)  # public-key PEM files
    promoters: list[Path] = Field(default_factory=list)  # public-key PEM files
    # In a Prefect flow run, pause for the approvals (a form naming the release and
    # its waivers); on resume the signed approvals on file decide, never the click.
    pause_for_approval: bool = False
    pause_timeout_s: int = Field(default=3600, gt=0, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _enough_approvers(self) -> GovernanceConfig:
        if self.required_approvals > len(set(self.approvers)):
            raise ValueError(
                f"governance.required_approvals = {self.required_approvals} but "
                f"governance.approvers lists {len(set(self.approvers))} key(s): nobody could "
                "ever promote; list the approvers' public keys"
            )
        if self.required_approvals > 0 and not self.promoters:
            raise ValueError(
                "governance.required_approvals > 0 needs governance.promoters (the public "
                "keys that may move the champion)"
            )
        return self


class MonitoringConfig(_Section):
    """The monitoring flow (`flows.monitoring`): what it watches, how sure it must be
    before it alerts, where its metrics go.

    Drift is judged group by group (a reference bin, a category, the missing cells, the
    rows beyond the reference's range) with Fisher's exact test and Holm's correction
    over every group of every column, so a clean batch of any size alerts at most
    ``alpha`` of the time; a flagged group must also have moved materially."""

    # FORK: the batch a scheduled monitoring run reads (path or URI, as dataset.source).
    source: str | None = None
    schedule: str = "0 * * * *"  # cron of `serve`'s monitoring deployment (hourly)
    alpha: float = Field(default=0.01, gt=0, lt=1)  # false alarms of a clean batch
    min_shift: float = Field(default=0.05, ge=0, le=1)  # a group's share moved this much
    min_relative_shift: float = Field(default=0.5, ge=0)  # or this much of its reference share
    floor: float = Field(default=0.01, ge=0, le=1)  # and never less than this
    # The champion's accuracy on a labelled batch must not be significantly below this
    # (None: evaluate.min_accuracy, else the accuracy recorded when it was trained).
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    # A Prometheus Pushgateway (http://host:port); None: the textfile only.
    pushgateway: str | None = None
    push_timeout_s: float = Field(default=5.0, gt=0, le=60)
