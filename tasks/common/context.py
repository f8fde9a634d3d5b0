"""What every stage receives: the run's settings, identity and audit trail,
plus the dataset type that flows between the data stages and training."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from tasks.common.audit import AuditLog
from tasks.common.gates import GateFailed, GateResult
from tasks.common.settings import Settings


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    run_id: str

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.settings.audit_path)


@dataclass
class StageGates:
    """Collects one stage's gate results, audits each, and fails closed.

    Call `enforce` after each group of checks whose failure makes the rest
    meaningless; the raised `GateFailed` carries every result of the stage so
    far, so the report shows what passed before the block.
    """

    ctx: RunContext
    results: list[GateResult] = field(default_factory=list)

    def enforce(self, *results: GateResult | Iterable[GateResult]) -> None:
        new: list[GateResult] = []
        for item in results:
            new.extend([item] if isinstance(item, GateResult) else item)
        audit = self.ctx.audit
        for r in new:
            audit.append(
                "gate",
                run_id=self.ctx.run_id,
                gate=r.name,
                passed=r.passed,
                metrics=r.metrics,
                threshold=r.threshold,
                detail=r.detail,
            )
        self.results.extend(new)
        if not all(r.passed for r in new):
            raise GateFailed(self.results)


@dataclass(frozen=True)
class Dataset:
    """A dataset that passed ingestion: the frame plus where it came from."""

    frame: pd.DataFrame
    uri: str
    sha256: str
    format: Literal["csv", "parquet"]
    integrity: Literal["config-pin", "sidecar", "none"]
    target: str

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def features(self) -> list[str]:
        """Numeric columns but the target (the model's inputs by default)."""
        numeric = self.frame.select_dtypes("number").columns
        return [c for c in numeric if c != self.target]
