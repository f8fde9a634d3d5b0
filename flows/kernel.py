"""The run kernel both flows share: how a run starts, times its stages, ends and is
recorded. The flows (`flows.training`, `flows.monitoring`) only say which stages run.

A flow hands `execute` its body (the stages, in order) and how to record it in MLflow.
The kernel then guarantees, for every run of either flow:

* the audit log gets ``run.start`` before anything else and ``run.end`` after, and the
  chain's head is anchored in the object-locked bucket, blocked and crashed runs too;
* a gate that fails (`GateFailed`) ends the run with the flow's verdict (``blocked``
  for training, ``alert`` for monitoring) and a Failed-type Prefect state of that name
  (``Blocked`` / ``Alert``) whose message names the gate, the measured value and the
  threshold: no traceback;
* a crash ends ``failed`` with its cause in one line; SIGINT/SIGTERM end
  ``interrupted``, and the record of the run is written before the signal ends it
  (signals wait while the report, the audit entry and the MLflow record are written);
* the run's Prometheus metrics are written (`tasks.monitoring.metrics`: a textfile
  per flow, pushed to a Pushgateway when one is configured; never the verdict), the
  report is written (``--report``), and the run's Prefect artifacts are the gate
  table, the report, a link to its MLflow run and one to its security report page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import TagsContext
from prefect.exceptions import TerminationSignal
from prefect.states import Completed, Failed, State

from tasks.common import progress
from tasks.common.context import RunContext
from tasks.common.errors import explain, signal_number
from tasks.common.gates import GateFailed, GateResult, collecting_seconds
from tasks.common.outcome import run_url
from tasks.common.report import RunReport
from tasks.common.settings import PROJECT_ROOT, ConfigError, Settings, load_settings
from tasks.common.signals import deferred, raise_if_pending, remembered
from tasks.deploy import anchor_audit_task
from tasks.report.page import FILE as SECURITY_REPORT
from tasks.report.publish import signed_page, unsigned_page

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class FlowKind:
    """What differs between the flows' endings."""

    name: Literal["training", "monitoring"]  # artifact keys, metrics file, report title
    gate_status: Literal["blocked", "alert"]  # the report's status when a gate fails
    gate_state: str  # the Prefect state's name then
    successes: tuple[str, ...]  # statuses that end Completed with the report as result


TRAINING = FlowKind("training", "blocked", "Blocked", ("deployed",))
MONITORING = FlowKind("monitoring", "alert", "Alert", ("healthy",))


@dataclass
class Run:
    """One run while it executes: what the body adds to and the kernel records."""

    ctx: RunContext
    report: RunReport
    gates: list[GateResult] = field(default_factory=list)
    current: list[str] = field(default_factory=lambda: ["start"])  # named by a block
    anchor_client: S3Client | None = None  # the auditor's client, once the store is open

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time stage `name` into the report, say on the terminal that a long one still
        runs, and remember it as the running stage (the one a block or crash names).
        A signal whose exception was dropped on the way (see `tasks.common.signals`)
        stops the run here, before the stage starts."""
        raise_if_pending()
        self.current[:] = [name]
        with self.report.stage(name), progress.running(name):
            yield

    def finished(self, name: str, results: list[GateResult]) -> None:
        """Stage `name` passed `results`: keep them, print its line."""
        self.gates += results
        progress.finished(name, results, self.report.stages.get(name))


CONFIG_DIRS = "SECURE_PIPELINE_CONFIG_DIRS"


def config_dirs() -> list[Path]:
    """Where a deployment run may take its config from: the project's ``data/`` and
    the directories in ``SECURE_PIPELINE_CONFIG_DIRS`` (``serve`` sets its config's)."""
    extra = os.environ.get(CONFIG_DIRS, "")
    return [PROJECT_ROOT / "data", *(Path(p) for p in extra.split(os.pathsep) if p)]


def flow_settings(config: str | None, report_path: str | None, data_root: str | None) -> Settings:
    """The settings a flow run starts from: a deployment run's parameters confined
    (`deployment_config`), ingestion confined to `data_root` when the CLI set one.

    Raises:
        ConfigError: a refused parameter or config (the flow returns it as a state).
    """
    from prefect import runtime

    if runtime.deployment.id is not None:
        config = deployment_config(config, report_path, data_root)
    settings = load_settings(config)
    return settings.confined_to(Path(data_root)) if data_root is not None else settings


def deployment_config(
    config: str | None, report_path: str | None, data_root: str | None
) -> str | None:
    """A deployment run's parameters, confined: whoever can trigger a run chooses
    neither an output path nor a config outside the allow-listed directories.

    Raises:
        ConfigError: a parameter that only the operator at the shell may set.
    """
    if data_root is not None or report_path is not None:
        raise ConfigError(
            "data_root and report_path cannot be set on a deployment run (the report is in "
            "the state directory and the run's artifacts)"
        )
    if config is None:
        return None
    resolved = Path(config).expanduser().resolve()
    allowed = [d.expanduser().resolve() for d in config_dirs()]
    if resolved.suffix != ".toml" or not any(resolved.is_relative_to(d) for d in allowed):
        raise ConfigError(
            f"config {config} is not a .toml file in an allowed directory "
            f"({', '.join(str(d) for d in allowed)}; add one with {CONFIG_DIRS})"
        )
    return str(resolved)


class Verdict(GateFailed):
    """Raised by a body that runs every check and records each itself (the monitoring
    flow): its failed gates are already in ``run.gates`` and on the terminal."""


Body = Callable[[Run, contextlib.ExitStack], None]
Settle = Callable[[Run], None]  # after the verdict, before ``run.end`` (e.g. tag the registry)
Record = Callable[[Run], str | None]  # the run's record in MLflow: its run id, or None

INTERRUPTED_MLFLOW_SECONDS = 3.0


def execute(
    ctx: RunContext,
    kind: FlowKind,
    body: Body,
    record: Record,
    *,
    report_path: str | None,
    start: dict[str, Any],
    settle: Settle | None = None,
) -> dict[str, object] | State[Any]:
    """Run `body` inside the kernel's guarantees (see the module) and end the run.

    Args:
        ctx: The run's settings, id and audit log.
        kind: The flow's verdict names.
        body: The stages; it opens what it needs on the ExitStack it is given (closed
            before the run is recorded) and sets ``run.report.status`` when it passes.
        record: Writes the run to MLflow once the verdict is known (signals deferred).
        report_path: Where to write the JSON report (None: not written).
        start: The ``run.start`` audit entry's fields besides the run id.
        settle: Called with the verdict known, before ``run.end`` is audited.
    """
    settings = ctx.settings
    report = RunReport(flow_run_id=ctx.run_id, waivers=settings.active_waivers, flow=kind.name)
    ctx.audit.append("run.start", run_id=ctx.run_id, **start)
    run = Run(ctx=ctx, report=report)
    interrupted: BaseException | None = None
    mlflow_run: str | None = None
    lost: list[int] = []  # signals noted in the body whose exception never surfaced
    with untagged_tasks(), contextlib.ExitStack() as recording:
        with contextlib.ExitStack() as resources:
            try:
                with remembered() as lost, collecting_seconds(report.checks):
                    body(run, resources)
            except GateFailed as exc:
                report.status, report.blocked_by = kind.gate_status, exc.gate.name
                if not isinstance(exc, Verdict):
                    run.gates += exc.results
                    stage = run.current[0]
                    progress.finished(stage, exc.results, report.stages.get(stage))
            except Exception as exc:  # noqa: BLE001 - reported as "failed"; ends Failed below
                # Prefect's task engine, hit by a signal before its task run exists,
                # raises ValueError("Task run is not set") from the interruption.
                interrupted = signal_behind(exc)
                report.status, report.error = "failed", explain(exc)
            except (KeyboardInterrupt, TerminationSignal) as exc:  # SIGINT or SIGTERM
                interrupted = exc
            if interrupted is not None:
                name = signal.Signals(signal_number(interrupted)).name
                report.status = "interrupted"
                effect = "the champion did not move" if kind is TRAINING else "nothing changed"
                report.error = f"stopped by {name}; {effect}, rerun when ready"
            # From here the run writes down how it ended: a signal now waits for that.
            recording.enter_context(deferred(lambda: interrupted is not None))
            report.gates = [g.as_report() for g in run.gates]
            if settle is not None:
                settle(run)
            ctx.audit.append(
                "run.end", run_id=ctx.run_id, status=report.status, blocked_by=report.blocked_by
            )
            report.audit_anchor = anchor_audit_task(ctx, run.anchor_client)
            if interrupted is None:
                mlflow_run = record(run)
            elif "mlflow" in sys.modules:
                # A SIGTERM gives seconds, and MLflow cut off mid-write can hold SQLite's
                # lock for its busy timeout: the record of an interrupted run is bounded,
                # and one that never reached MLflow skips it (not worth the import). The
                # report, the audit log and Prefect hold the run's end either way.
                mlflow_run = bounded(lambda: record(run), INTERRUPTED_MLFLOW_SECONDS)
        _metrics(run, kind)
        if report_path:
            report.write(Path(report_path))
        _artifacts(run, kind, mlflow_run)
    if interrupted is not None:
        raise interrupted  # the signal still ends the command (after the record is written)
    if lost:  # it landed after the last stage began and was dropped: deliver it now
        signal.raise_signal(lost[0])
    if report.status == kind.gate_status:  # a verdict, not a crash: no traceback, its name
        return Failed(name=kind.gate_state, message=report.reason)
    if report.status == "awaiting_approval":  # a verdict: it waits for people
        return Completed(name="AwaitingApproval", message=report.reason)
    if report.status not in kind.successes:
        return Failed(message=report.reason)
    return report.model_dump()


def signal_behind(exc: BaseException) -> BaseException | None:
    """The SIGINT/SIGTERM interruption `exc` was raised while handling, if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (KeyboardInterrupt, TerminationSignal)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


@contextlib.contextmanager
def untagged_tasks() -> Iterator[None]:
    """The stages' task runs carry no tags; the flow run keeps them (dataset, model,
    estimator: what the UI filters on). Prefect asks its API for tag concurrency slots
    when every tagged task run starts: a round trip per stage, which took up to 2.5 s
    on a busy server (measured in the evaluate stage at 1M rows)."""
    with TagsContext(current_tags=set()):
        yield


def bounded(fn: Callable[[], str | None], seconds: float) -> str | None:
    """`fn()` on a daemon thread, given `seconds`: its result, or None if it took longer
    (the thread is abandoned; the command ends soon after, and SQLite's journal keeps
    MLflow's store consistent)."""
    result: list[str | None] = []
    worker = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    return result[0] if result else None


def _metrics(run: Run, kind: FlowKind) -> None:
    """The run's Prometheus metrics: the textfile, and the Pushgateway when configured.
    Never the run's verdict: where they went (or why not) is the report's ``metrics``
    entry and, on failure, one warning line in the run's log."""
    from tasks.monitoring.metrics import record_metrics

    report = run.report
    try:
        outcome = record_metrics(run.ctx.settings, report.model_dump(), flow=kind.name)
    except Exception as exc:  # noqa: BLE001 - metrics are never the verdict
        report.metrics = {"path": None, "pushed": None, "error": explain(exc)}
    else:
        report.metrics = {
            "path": str(outcome.path),
            "pushed": outcome.pushed,
            "error": outcome.error,
        }
    if report.metrics["error"]:
        logging.getLogger(__name__).warning("metrics: %s", report.metrics["error"])


def _artifacts(run: Run, kind: FlowKind, mlflow_run: str | None) -> None:
    """The run's Prefect artifacts: the gate table (short digests, thresholds in
    view), the markdown summary, a link to the MLflow run and, for a training run, a
    link to its security report page (the release's, else the unsigned one)."""
    report = run.report
    create_table_artifact(
        key=f"secure-{kind.name}-gates", table=report.gate_rows(), description=report.reason
    )
    create_markdown_artifact(
        key=f"secure-{kind.name}-report", markdown=report.markdown(), description=report.reason
    )
    url = run_url(run.ctx.settings, mlflow_run) if mlflow_run else None
    if url:
        create_link_artifact(
            key="mlflow-run", link=url, link_text="MLflow run", description="gates, report, model"
        )
    with contextlib.suppress(ValueError, OSError):  # no run directory: no page to link
        signed, unsigned = signed_page(run.ctx), unsigned_page(run.ctx)
        if kind is TRAINING and (signed.is_file() or unsigned.is_file()):
            create_link_artifact(
                key="security-report",
                link=(signed if signed.is_file() else unsigned).as_uri(),
                link_text="security report (HTML)",
                description="the gates the release was signed on; signed with it, and in "
                f"the MLflow run under release/{SECURITY_REPORT}"
                if signed.is_file()
                else "the run's gates (not signed: the run stopped before the sign stage); "
                f"in the MLflow run as {SECURITY_REPORT}",
            )
