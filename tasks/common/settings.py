"""One settings object: a TOML file describes a dataset and its policy;
environment variables (``SECURE_PIPELINE_<SECTION>__<KEY>``) override it.

Relative paths in the file are resolved against the file's own directory, so a
config works from any working directory. Secrets never live here: keys and
credentials are files with 0600 permissions under the state directory (or the
cloud's key service in production).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from tasks.common.catalog import BY_NAME, SAFE_RANGES
from tasks.common.errors import PipelineError
from tasks.common.sections import (  # noqa: F401 - re-exported: the config's sections
    SHA256_PATTERN,
    DatasetConfig,
    EvaluateConfig,
    GovernanceConfig,
    LocalStackConfig,
    ModelConfig,
    MonitoringConfig,
    ScreenConfig,
    StorageConfig,
    TrustConfig,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "data" / "breast_cancer.toml"


class ConfigError(PipelineError, ValueError):
    """Bad usage or configuration (CLI exit code 2)."""


class Settings(BaseSettings):
    """Everything a run needs to know, validated before anything starts."""

    model_config = SettingsConfigDict(
        env_prefix="SECURE_PIPELINE_", env_nested_delimiter="__", extra="forbid"
    )
    config_file: Path | None = None
    state_dir: Path = Path(".secure-pipeline")
    dataset: DatasetConfig
    screen: ScreenConfig = ScreenConfig()
    model: ModelConfig
    evaluate: EvaluateConfig = EvaluateConfig()
    storage: StorageConfig = StorageConfig()
    trust: TrustConfig = TrustConfig()
    local: LocalStackConfig = LocalStackConfig()
    governance: GovernanceConfig = GovernanceConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    mlflow_tracking_uri: str | None = None  # None: SQLite under the state dir
    mlflow_experiment: str = "secure-training"
    # Gate name -> why it may be weakened beyond its safe range (tasks/common/catalog.py
    # SAFE_RANGES). Shown in the run summary, report, signed provenance and audit log.
    waivers: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then SECURE_PIPELINE_* variables, then the file
        # named by the `config_file` argument (so the path travels with the call).
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = getattr(init_settings, "init_kwargs", {}).get("config_file")
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _weakened_gates_need_waivers(self) -> Settings:
        for gate, reason in self.waivers.items():
            if gate not in BY_NAME:
                raise ValueError(f"waivers.{gate}: no such gate")
            if len(reason.strip()) < 10:
                raise ValueError(f"waivers.{gate}: give the reason in words (10+ characters)")
        weakened = {w["gate"] for w in self.weakened}
        for w in self.weakened:
            if w["gate"] not in self.waivers:
                raise ValueError(
                    f"{w['setting']} = {w['value']} switches {w['gate']} (nearly) off (safe: "
                    f"{w['safe']}); keep it in range, or add a waiver: [waivers] "
                    f'"{w["gate"]}" = "why"'
                )
        # A waiver another estimator's sub-table needs ([evaluate.<estimator>], as init
        # writes them) may stay while this one runs: it is in force only when it is
        # used (`active_waivers`), so a release carries only what weakened its own run.
        used = weakened | {w["gate"] for w in self._weakened_by_other_estimators()}
        for gate in self.waivers:
            if gate not in used:
                raise ValueError(f"waivers.{gate}: nothing weakens that gate; remove the waiver")
        return self

    def _weakened_by_other_estimators(self) -> list[dict[str, Any]]:
        out = []
        for name in self.evaluate.per_estimator:
            if name == self.model.estimator:
                continue
            section = self.evaluate.for_estimator(name)
            for r in SAFE_RANGES:
                group, key = r.setting.split(".")
                if group == "evaluate" and not r.allows(getattr(section, key)):
                    out.append({"setting": f"evaluate.{name}.{key}", "gate": r.gate})
        return out

    @property
    def weakened(self) -> list[dict[str, Any]]:
        """Every setting beyond its safe range: setting, value, safe bound, gate."""
        out = []
        for r in SAFE_RANGES:
            section, key = r.setting.split(".")
            value = getattr(self.effective(section), key)
            if not r.allows(value):
                out.append({"setting": r.setting, "value": value, "safe": r.bound, "gate": r.gate})
        return out

    def effective(self, section: str) -> Any:
        """A config section as the run uses it: ``evaluate`` with the selected
        estimator's sub-table applied (`EvaluateConfig.for_estimator`)."""
        if section == "evaluate":
            return self.evaluate.for_estimator(self.model.estimator)
        return getattr(self, section)

    @property
    def active_waivers(self) -> list[dict[str, Any]]:
        """The waivers in force, each with what it weakens: for reports and provenance."""
        return [{**w, "reason": self.waivers[w["gate"]]} for w in self.weakened]

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        base = self.config_file.parent if self.config_file else Path.cwd()
        ds = self.dataset
        for field in ("suite", "reference_profile", "data_root", "ca_bundle"):
            value = getattr(ds, field)
            if value is not None and not value.is_absolute():
                setattr(ds, field, (base / value).resolve())
        ds.profile_signers = [
            p if p.is_absolute() else (base / p).resolve() for p in ds.profile_signers
        ]
        gov = self.governance
        gov.approvers = [p if p.is_absolute() else (base / p).resolve() for p in gov.approvers]
        gov.promoters = [p if p.is_absolute() else (base / p).resolve() for p in gov.promoters]
        self.trust.signers = [
            p if p.is_absolute() else (base / p).resolve() for p in self.trust.signers
        ]
        mon = self.monitoring
        if mon.source and "://" not in mon.source and not Path(mon.source).is_absolute():
            mon.source = str((base / mon.source).resolve())
        if "://" not in ds.source and not Path(ds.source).is_absolute():
            ds.source = str((base / ds.source).resolve())
        self.state_dir = self.state_dir.expanduser().resolve()
        return self

    # Derived locations: all state under one git-ignored directory.
    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit" / "audit.jsonl"

    @property
    def metrics_dir(self) -> Path:
        """Prometheus textfiles (one ``.prom`` per flow), node_exporter's convention."""
        return self.state_dir / "metrics"

    @property
    def monitor_dir(self) -> Path:
        """Each monitoring run's page (HTML) and report."""
        return self.state_dir / "monitor"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.state_dir / "mlartifacts").as_uri()

    @property
    def embedded_s3(self) -> bool:
        return self.storage.endpoint_url is None

    @property
    def sse(self) -> Literal["AES256", "aws:kms"]:
        """Server-side encryption of every upload: SSE-KMS with a KMS key, else SSE-S3."""
        return "aws:kms" if self.storage.kms_key_id else "AES256"

    def confined_to(self, data_root: Path) -> Settings:
        """The same settings with ingestion confined to `data_root` instead."""
        dataset = self.dataset.model_copy(update={"data_root": data_root.expanduser().resolve()})
        return self.model_copy(update={"dataset": dataset})


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the config file (``--config``, ``$SECURE_PIPELINE_CONFIG`` or the bundled one).

    Raises:
        ConfigError: the file is missing, is not TOML, or holds invalid values.
    """
    path = Path(config or os.environ.get("SECURE_PIPELINE_CONFIG") or DEFAULT_CONFIG)
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            tomllib.load(fh)  # fail early with a clear message on bad TOML
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 (byte offset {exc.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror})") from None
    try:
        return Settings(config_file=path, **overrides)
    except SettingsError as exc:  # e.g. a list-valued variable that is not JSON
        raise ConfigError(
            f"an environment override cannot be parsed ({exc}); list and table values "
            "of SECURE_PIPELINE_* variables are JSON, e.g. '[\"s3://bucket/prefix/\"]'"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]
            if err["loc"]
            else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration in {path}: {problems}") from None
