"""What every stage receives and how it is declared: the run's settings, identity and
audit trail (`RunContext`), the gate collector that audits and fails closed
(`StageGates`), the Prefect task factory with the options every stage needs
(`stage_task`), and the dataset type that flows from ingestion to training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import pandas as pd
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from tasks.common.audit import AuditLog
from tasks.common.catalog import BY_NAME
from tasks.common.gates import GateFailed, GateResult
from tasks.common.report import short
from tasks.common.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _BlockIsNotACrash(logging.Filter):
    """A stage that blocks raises `GateFailed` out of its Prefect task, and Prefect logs
    every failed task with a traceback. A block is a verdict, not a fault: its record
    becomes one WARNING line naming the gate (the gate lines above it say the rest)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, GateFailed):
            record.msg, record.args = f"stage blocked by gate {exc.gate.name}", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("prefect.task_runs").addFilter(_BlockIsNotACrash())


def stage_task(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for a pipeline stage: never cached (a cached result would skip the
    stage's gates) and never persisted (results hold data and, for some, key handles)."""
    return task(name=name, cache_policy=NO_CACHE, persist_result=False, **options)


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    run_id: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.settings.audit_path)

    @property
    def run_dir(self) -> Path:
        """This run's working files (model copy, validation evidence), under the state dir."""
        if Path(self.run_id).name != self.run_id or self.run_id in ("", ".", ".."):
            raise ValueError("run id must be a plain name")  # it becomes a directory name
        return self.settings.state_dir / "runs" / self.run_id


def gate_line(result: GateResult) -> str:
    """The gate as one line of the run's log: gate, verdict, measured, threshold."""
    line = f"gate {result.name}: {'PASS' if result.passed else 'BLOCK'}; {result.explain()}"
    return short(line, 600)  # digests cut to 12 characters (the report has them whole)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow or task run (its lines show in the UI),
    else this module's logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


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
        undeclared = [r.name for r in new if r.name not in BY_NAME]
        if undeclared:  # a gate nobody declared would be missing from the docs and tests
            raise ValueError(
                f"undeclared gate(s) {undeclared}: add them to tasks/common/catalog.py"
            )
        audit, logger = self.ctx.audit, _run_logger()
        for r in new:
            logger.log(logging.INFO if r.passed else logging.WARNING, "%s", gate_line(r))
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

    def enforce_with(self, result: GateResult, value: T | None) -> T:
        """`enforce` one result of `run_check_with` and hand back the value it checked."""
        self.enforce(result)
        if value is None:  # a passed gate always carries its value; never go on without it
            raise RuntimeError(f"{result.name} passed without handing back what it checked")
        return value


@dataclass(frozen=True)
class Dataset:
    """A dataset that passed ingestion: the frame plus where it came from."""

    frame: pd.DataFrame
    uri: str
    sha256: str
    format: Literal["csv", "parquet"]
    integrity: Literal["config-pin", "sidecar", "none"]
    target: str
    # The reference profile once the screen stage has verified its signature (None
    # before): later stages read this dict, never the profile file again.
    reference_profile: Mapping[str, Any] | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)
