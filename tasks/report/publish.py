"""Where a run's security report page comes from and goes.

A signed run's page is written by the sign stage into the release directory
(`tasks.sign`: the signature and provenance cover it). A run that stopped before
signing (blocked, crashed, interrupted) still gets its page, ``<run>/security-report.html``
beside the release that never was, not signed, with the run's status: the record of
what blocked it. Both go to the run's MLflow record and the Prefect run links them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.common.files import sha256_file, write_atomic
from tasks.common.gates import GateResult
from tasks.report.page import FILE, render_security_report

if TYPE_CHECKING:
    from tasks.common.context import RunContext

log = logging.getLogger(__name__)


def run_page(
    ctx: RunContext,
    gates: Sequence[GateResult],
    model: Any | None,
    *,
    status: str | None = None,
) -> str:
    """The page of run `ctx` from its `gates` and its trained `model` (a
    `tasks.train.TrainedModel`, or None when training never finished). `status`: the
    run's status when it did not reach the sign stage (None: the release's page)."""
    settings = ctx.settings
    config = settings.config_file
    described = (
        {"name": model.name, "version": model.version, "sha256": model.sha256}
        if model is not None
        else {"name": settings.model.name, "version": "(not registered)", "sha256": None}
    )
    return render_security_report(
        run_id=ctx.run_id,
        model=described,
        estimator=settings.model.estimator,
        gates=gates,
        waivers=settings.active_waivers,
        config={"name": config.name, "sha256": sha256_file(config)} if config else None,
        dp_epsilon=model.params.get("dp_epsilon") if model is not None else None,
        status=status,
    )


def unsigned_page(ctx: RunContext) -> Path:
    """Where the page of a run that was not signed goes."""
    return ctx.run_dir / FILE


def signed_page(ctx: RunContext) -> Path:
    """Where the sign stage writes the release's page."""
    return ctx.run_dir / "release" / FILE


def write_unsigned(
    ctx: RunContext, gates: Sequence[GateResult], model: Any | None, *, status: str
) -> Path | None:
    """Write the page of a run that stopped before signing; never raises (the
    verdict stands without its page: a failure is logged and audited)."""
    try:
        path = unsigned_page(ctx)
        write_atomic(path, run_page(ctx, gates, model, status=status).encode())
    except Exception as exc:  # noqa: BLE001 - a page is never the verdict
        error = str(exc)[:200] if isinstance(exc, OSError) else type(exc).__name__
        log.warning("the security report page was not written (%s)", error)
        ctx.audit.append("report.page_failed", run_id=ctx.run_id, error=error)
        return None
    return path
