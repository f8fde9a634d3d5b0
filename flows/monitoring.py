"""The monitoring flow: composition only, on the same run kernel as training.

    champion (monitor.integrity) -> audit (monitor.audit)
        -> [a batch] ingest -> PII guard -> drift (monitor.drift) -> quality (monitor.quality)

It watches what training shipped. ``monitor.integrity``: the champion named by the
signed champion record (and MLflow's alias beside it) verifies as `verify` checks it:
signatures, digests, the encryption context, and the version history of every release
object (replaced, deleted or superseded objects fail). ``monitor.audit``: the audit
chain and its anchors, as `audit verify`. With a batch of new data (``--data``, or
``monitoring.source`` on a schedule) the batch passes the same ingestion and PII gates
as training data, then ``monitor.drift`` compares every column with the signed
reference profile and ``monitor.quality`` measures the champion on it (accuracy with
labels, a confidence-based estimate without).

Unlike training, monitoring runs every check it can and reports them all: a tampered
champion does not hide a drifted batch. Any failed gate ends the run ``alert`` (exit 1)
in a Failed-type state named ``Alert`` whose message names the first one; a batch the
ingestion or PII gates refuse ends it there. Each run writes an HTML page of the drift
(`tasks.monitoring.page`), a Prefect link artifact to it, an MLflow run in the
``<experiment>-monitoring`` experiment with the page attached, and Prometheus metrics.
Nothing is written to the bucket but the audit anchor: monitoring only reads.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, runtime
from prefect.states import Failed, State

from flows.kernel import MONITORING, Run, Verdict, execute, flow_settings
from tasks import monitor
from tasks.common.context import RunContext
from tasks.common.s3 import s3_client
from tasks.common.settings import ConfigError, Settings
from tasks.localstack.stack import anchor_endpoint, s3_service
from tasks.monitor import Watched


@flow(name="secure-monitoring", log_prints=False)
def secure_monitoring(
    config: str | None = None,
    data: str | None = None,
    report_path: str | None = None,
    data_root: str | None = None,
) -> dict[str, object] | State[Any]:
    """Check the deployed champion, the audit trail and (given one) a batch of new data.

    Args:
        config: Pipeline config file (TOML); default: the bundled dataset's.
        data: The batch (path or URI); default ``monitoring.source`` (none: no batch,
            integrity and audit only).
        report_path: Where to write the JSON run report.
        data_root: Confine `data` to this directory (set by the CLI for a typed path).

    A deployment run (a schedule) takes its config as training's do (``.toml`` inside
    the allowed directories) and refuses `report_path` and `data_root`.
    """
    try:
        settings = flow_settings(config, report_path, data_root)
    except ConfigError as exc:
        return Failed(message=f"refused: {exc}")
    data = data or settings.monitoring.source
    return run_monitoring(settings, data=data, report_path=report_path)


def run_monitoring(
    settings: Settings, *, data: str | None, report_path: str | None
) -> dict[str, object] | State[Any]:
    """The flow's body inside a Prefect flow run and the run kernel."""
    ctx = RunContext(settings=settings, run_id=str(runtime.flow_run.id or uuid.uuid4()))
    seen = Watched()
    return execute(
        ctx,
        MONITORING,
        lambda run, resources: _stages(run, resources, seen, data),
        lambda run: _record(run, seen),
        report_path=report_path,
        start={"flow": "monitoring", "config": str(settings.config_file), "data": data},
        settle=lambda run: _settle(run, seen),
    )


def _stages(run: Run, resources: contextlib.ExitStack, seen: Watched, data: str | None) -> None:
    ctx = run.ctx
    settings = ctx.settings
    endpoint = resources.enter_context(s3_service(settings, role="reader"))
    run.anchor_client = s3_client(anchor_endpoint(settings, endpoint))
    workdir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="monitor-")))
    with run.stage("champion"):
        results = monitor.integrity(ctx, endpoint, workdir, seen)
    run.finished("champion", results)
    with run.stage("audit"):
        results = monitor.audit(ctx, endpoint)
    run.finished("audit", results)
    if data is not None:
        _batch(run, seen, data, endpoint)
    bad = [g for g in run.gates if not g.passed]
    run.report.status = "alert" if bad else "healthy"
    if bad:
        raise Verdict(run.gates)


def _batch(run: Run, seen: Watched, data: str, endpoint: Any) -> None:
    """The batch: ingestion and PII gates (a refusal stops here), then drift and quality."""
    from tasks.ingest import ingest_task
    from tasks.screen import pii_task

    ctx, report = run.ctx, run.report
    with run.stage("ingest"):
        dataset, g = ingest_task(ctx, source=data, s3=s3_client(endpoint))
    run.finished("ingest", g)
    report.dataset = {
        "uri": dataset.uri,
        "sha256": dataset.sha256,
        "rows": dataset.rows,
        "integrity": dataset.integrity,
    }
    with run.stage("pii"):
        dataset, g = pii_task(ctx, dataset)
    run.finished("pii", g)
    with run.stage("drift"):
        results, profile = monitor.drift(ctx, dataset.frame, seen)
    run.finished("drift", results)
    if seen.pipeline is None or profile is None:
        return  # no verified champion or profile (their gates say why): nothing to measure
    with run.stage("quality"):
        results = monitor.quality(ctx, dataset.frame, profile, seen)
    run.finished("quality", results)


def _settle(run: Run, seen: Watched) -> None:
    """The report's monitoring section and the page, once every check has run."""
    from tasks.monitoring.page import render_page, write_page

    report = run.report
    report.monitor = {
        "champion": seen.champion or None,
        "drift": seen.drift.as_report() if seen.drift is not None else None,
        "quality": vars(seen.quality) if seen.quality is not None else None,
    }
    facts = {
        "model": run.ctx.settings.model.name,
        "champion": f"version {seen.champion['version']}" if seen.champion else "not verified",
        "batch": str((report.dataset or {}).get("uri", "none")),
        "rows": str((report.dataset or {}).get("rows", 0)),
        "run": run.ctx.run_id,
    }
    try:
        html = render_page(
            title=f"Monitoring {run.ctx.settings.model.name}",
            status=report.status,
            gates=run.gates,
            drift=seen.drift,
            quality=seen.quality,
            facts=facts,
        )
        seen.page = write_page(run.ctx.settings.monitor_dir, run.ctx.run_id, html)
    except Exception as exc:  # noqa: BLE001 - the verdict stands without its picture
        # Called after the verdict, outside the kernel's catch: a page that cannot be
        # drawn or written is audited, never a crash of the run.
        error = str(exc)[:200] if isinstance(exc, OSError) else type(exc).__name__
        run.ctx.audit.append("monitor.page_failed", run_id=run.ctx.run_id, error=error)
        return
    report.monitor["page"] = str(seen.page)


def _record(run: Run, seen: Watched) -> str | None:
    """The run in MLflow (its own experiment, the page attached) and a Prefect link."""
    from prefect.artifacts import create_link_artifact

    from tasks.common.outcome import record_outcome

    settings = run.ctx.settings
    monitored = settings.model_copy(
        update={"mlflow_experiment": f"{settings.mlflow_experiment}-monitoring"}
    )
    mlflow_run = record_outcome(
        monitored,
        run.report,
        flow_run_id=run.ctx.run_id,
        model_run_id=None,
        model_version=None,
        release_dir=None,
        files=[seen.page] if seen.page is not None else [],
    )
    if seen.page is not None:
        create_link_artifact(
            key="monitoring-page",
            link=seen.page.as_uri(),
            link_text="drift, integrity and audit (HTML)",
            description=run.report.reason,
        )
    return mlflow_run
