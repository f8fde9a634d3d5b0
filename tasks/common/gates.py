"""A gate is data: a small typed result produced by a pure check.

Every check fails closed: an exception raised inside a check becomes a failed
gate (never a pass), and `StageGates.enforce` turns any failed gate into
`GateFailed`, which the flow reports as ``blocked``.

Every gate is declared once, in `GATES` (tasks/common/catalog.py): name, stage, the
threat it answers, what it measures, its default threshold and the check function
its stage runs. The README's gate table is tested against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Where `timed` adds each check's wall seconds while a run collects them (the run
# report's ``checks``). A task submitted to a worker thread gets a copy of the context,
# which holds the same dict, so the screens running beside validation are counted too.
_SECONDS: ContextVar[dict[str, float] | None] = ContextVar("check_seconds", default=None)


@contextmanager
def collecting_seconds(seconds: dict[str, float]) -> Iterator[dict[str, float]]:
    """Add the seconds of every check timed inside this block to `seconds` (by name)."""
    token = _SECONDS.set(seconds)
    try:
        yield seconds
    finally:
        _SECONDS.reset(token)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Add the block's wall seconds to check `name` when a run collects them."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = _SECONDS.get()
        if seconds is not None:
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - started, 3)


class GateResult(BaseModel):
    """Outcome of one named security check (`<stage>.<check>`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    metrics: dict[str, Any] = Field(default_factory=dict)
    threshold: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""

    @property
    def stage(self) -> str:
        return self.name.split(".", 1)[0]

    def explain(self) -> str:
        """Measured value, threshold and what to do, in one line."""
        parts = []
        if self.metrics:
            parts.append("measured " + _fmt(self.metrics))
        if self.threshold:
            parts.append("threshold " + _fmt(self.threshold))
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts)

    def summary(self) -> str:
        """One readable line: gate, verdict, measured value, threshold, reason."""
        return f"{self.name} {'passed' if self.passed else 'BLOCKED'}: {self.explain()}"

    def as_report(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage, **self.model_dump()}


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}"
        if isinstance(v, float)
        else f"{k}=<{len(v)} points>"  # a `_curve` (the report draws it), not for a log line
        if isinstance(v, list) and k.endswith("_curve")
        else f"{k}={v}"
        for k, v in values.items()
    )


def passed(
    name: str,
    *,
    metrics: dict[str, Any] | None = None,
    threshold: dict[str, Any] | None = None,
    detail: str = "",
) -> GateResult:
    return check(name, ok=True, metrics=metrics or {}, threshold=threshold or {}, detail=detail)


def failed(
    name: str,
    *,
    metrics: dict[str, Any] | None = None,
    threshold: dict[str, Any] | None = None,
    detail: str = "",
) -> GateResult:
    return check(name, ok=False, metrics=metrics or {}, threshold=threshold or {}, detail=detail)


def check(
    name: str, *, metrics: dict[str, Any], threshold: dict[str, Any], ok: bool, detail: str = ""
) -> GateResult:
    """Build a result from a comparison already made by the caller."""
    return GateResult(
        name=name, passed=bool(ok), metrics=metrics, threshold=threshold, detail=detail
    )


def run_check(name: str, fn: Callable[..., GateResult], /, *args: Any, **kwargs: Any) -> GateResult:
    """Run a check so that it fails closed: any exception is a failed gate.

    The exception's type is reported, not its message, because messages can
    carry data values (and Prefect persists failed-task exceptions).
    """
    result, _ = run_check_with(name, lambda: (fn(*args, **kwargs), None))
    return result


def run_check_with(
    name: str, fn: Callable[..., tuple[GateResult, T]], /, *args: Any, **kwargs: Any
) -> tuple[GateResult, T | None]:
    """`run_check` for a check that also hands back what it verified or produced
    (the verified profile, the PII-handled frame): ``fn`` returns ``(result, value)``.

    Returns:
        The result, and the value only if the gate passed (else None).
    """
    try:
        with timed(name):
            result, value = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        return failed(name, detail=f"check raised {type(exc).__name__}; failing closed"), None
    if not isinstance(result, GateResult) or result.name != name:
        return failed(name, detail="check returned no result for this gate; failing closed"), None
    return result, (value if result.passed else None)


class GateFailed(Exception):
    """Raised by a stage when one of its gates fails; carries the stage's results."""

    def __init__(self, results: Sequence[GateResult]):
        self.results = list(results)
        self.gate = next(r for r in self.results if not r.passed)
        super().__init__(self.gate.summary())

    def __reduce__(self) -> tuple[type[GateFailed], tuple[list[GateResult]]]:
        return (GateFailed, (self.results,))  # picklable: Prefect persists task exceptions
