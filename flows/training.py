"""The secure training flow: composition only. Each stage lives in tasks/.

    ingest -> PII guard -> validate -> screen -> train -> evaluate -> sign -> deploy

The flow loads the settings once and hands them to every stage in a `RunContext`;
it opens the S3 endpoint once (the embedded store is started for the length of the
run if nothing keeps it up) and hands its client to the stages that need it. A
stage that finds a problem raises GateFailed; the flow then stops, writes a report
naming the gate, and ends in a Failed-type state named ``Blocked`` (its message names
the gate, the measured value and the threshold; no traceback), while a crash ends
``Failed`` with its cause. Every gate is a line in the run's log, and the run's
artifacts are the gate table, the report and a link to its MLflow run. The previous champion
stays deployed: nothing is published before every gate has passed and the deployed
copy has been verified.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, runtime
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from tasks.common import progress
from tasks.common.anchors import bucket_has_history
from tasks.common.context import Dataset, RunContext
from tasks.common.errors import explain, signal_number
from tasks.common.gates import GateFailed, GateResult
from tasks.common.report import RunReport
from tasks.common.s3 import s3_client
from tasks.common.settings import PROJECT_ROOT, ConfigError, Settings, load_settings
from tasks.common.signals import deferred
from tasks.common.tracking import ModelRegistry, record_outcome, run_url
from tasks.deploy import anchor_audit_task, deploy_task
from tasks.evaluate import evaluate_task
from tasks.governance.pause import wait_for_approval
from tasks.ingest import ingest_task
from tasks.localstack.stack import anchor_endpoint, role_endpoint, s3_service
from tasks.screen import pii_task, screen_task
from tasks.sign import SignedProvenance, sign_task
from tasks.train import TrainedModel, train_task
from tasks.trust.keys import ensure_keys, key_ids
from tasks.validate import ValidationOutput, validate_task

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONFIG_DIRS = "SECURE_PIPELINE_CONFIG_DIRS"


@flow(name="secure-training", log_prints=False)
def secure_training(
    config: str | None = None,
    data: str | None = None,
    report_path: str | None = None,
    data_root: str | None = None,
) -> dict[str, object] | State[Any]:
    """Train, attack, sign and deploy one model, failing closed at every gate.

    Args:
        config: Pipeline config file (TOML); default: the bundled dataset's.
        data: Dataset name or path overriding the configured source (new data);
            it must resolve inside ``dataset.data_root``.
        report_path: Where to write the JSON run report.
        data_root: Confine `data` to this directory instead of ``dataset.data_root``.
            Set by the CLI for a path the operator typed at the shell; a deployment
            run refuses it, so whoever can trigger a run cannot widen the root.

    On a deployment run (the Run form, a schedule, an automation) `config` must be a
    ``.toml`` inside `config_dirs` and `report_path` is refused.
    """
    try:
        if runtime.deployment.id is not None:
            config = _deployment_config(config, report_path, data_root)
        settings = load_settings(config)
        if data_root is not None:
            settings = settings.confined_to(Path(data_root))
    except ConfigError as exc:  # a refused parameter or config: said, never a traceback
        return Failed(message=f"refused: {exc}")
    return run_pipeline(settings, data=data, report_path=report_path)


@contextlib.contextmanager
def _stage(report: RunReport, name: str, current: list[str]) -> Iterator[None]:
    """Time stage `name` into the report, say on the terminal that a long one still
    runs, and remember it as the running stage (the one a block or crash names)."""
    current[:] = [name]
    with report.stage(name), progress.running(name):
        yield


def config_dirs() -> list[Path]:
    """Where a deployment run may take its config from: the project's ``data/`` and
    the directories in ``SECURE_PIPELINE_CONFIG_DIRS`` (``serve`` sets its config's)."""
    extra = os.environ.get(CONFIG_DIRS, "")
    return [PROJECT_ROOT / "data", *(Path(p) for p in extra.split(os.pathsep) if p)]


def _deployment_config(
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


def run_tags(settings: Settings) -> list[str]:
    """The flow run's tags in Prefect: which data, model and estimator it trains."""
    return [
        f"dataset:{settings.dataset.name}",
        f"model:{settings.model.name}",
        f"estimator:{settings.model.estimator}",
    ]


def _validate_and_screen(
    ctx: RunContext, dataset: Dataset, report: RunReport, current: list[str]
) -> tuple[ValidationOutput, Dataset, list[GateResult]]:
    """Validation and the poisoning screens side by side: the screens on a worker
    thread, validation here (where a signal interrupts it at once). Both only read the
    same frame, and the expectation suite (mostly Python) and the screens (mostly
    NumPy) overlap well (1M rows: 11.9 s in turn, about 8 s together).

    Whatever happens here (a block, a crash, SIGTERM), the screens are waited for, so
    their audit entries always come before the run's end. The verdicts keep their
    order: a validation block is the run's verdict even when the screens would also
    block; the screens' gates count only once validation passed (an audit entry of a
    screen that ran beside a blocked validation stays in the log, as it ran)."""
    started = time.perf_counter()
    screening = screen_task.submit(ctx, dataset)
    screening.add_done_callback(
        lambda _: report.stages.__setitem__("screen", round(time.perf_counter() - started, 3))
    )
    try:
        with _stage(report, "validate", current):
            validated, gates = validate_task(ctx, dataset)  # GateFailed: the run stops here
        progress.finished("validate", gates, report.stages["validate"])
        current[:] = ["screen"]
    finally:
        wait([screening])
    screened, more = screening.result()
    progress.finished("screen", more, report.stages.get("screen"))
    return validated, screened, gates + more


def run_pipeline(
    settings: Settings, *, data: str | None = None, report_path: str | None = None
) -> dict[str, object] | State[Any]:
    """The flow's body: every stage in order, inside a Prefect flow run."""
    ctx = RunContext(settings=settings, run_id=str(runtime.flow_run.id or uuid.uuid4()))
    report = RunReport(flow_run_id=ctx.run_id, waivers=settings.active_waivers)
    had_audit = settings.audit_path.exists() and settings.audit_path.stat().st_size > 0
    ctx.audit.append(
        "run.start",
        run_id=ctx.run_id,
        config=str(settings.config_file),
        data=data or settings.dataset.source,
        waivers=settings.active_waivers,
    )
    with contextlib.ExitStack() as recording:
        return _stages_and_record(ctx, report, had_audit, data, report_path, recording)


def _stages_and_record(
    ctx: RunContext,
    report: RunReport,
    had_audit: bool,
    data: str | None,
    report_path: str | None,
    recording: contextlib.ExitStack,
) -> dict[str, object] | State[Any]:
    """The stages in order, then the record of how the run ended (signals held)."""
    settings = ctx.settings
    gates: list[GateResult] = []
    current: list[str] = ["start"]  # the stage running now (named by a block)
    model: TrainedModel | None = None
    signed: SignedProvenance | None = None
    mlflow_run: str | None = None
    interrupted: BaseException | None = None
    client: S3Client | None = None
    anchor_client: S3Client | None = None
    promoter_client: S3Client | None = None
    with contextlib.ExitStack() as resources:
        try:
            endpoint = resources.enter_context(s3_service(settings))
            client = s3_client(endpoint)
            anchor_client = s3_client(anchor_endpoint(settings, endpoint))
            promoter_client = s3_client(role_endpoint(settings, endpoint, "promoter"))
            keyring, created = ensure_keys(
                settings.keys_dir,
                had_runs=lambda: had_audit or bucket_has_history(settings, client),
            )
            if created:  # the first run of a new state directory
                ctx.audit.append("keys.created", run_id=ctx.run_id, keys=key_ids(keyring))
            with _stage(report, "ingest", current):
                dataset, g = ingest_task(ctx, source=data, s3=client)
            gates += g
            progress.finished("ingest", g, report.stages["ingest"])
            report.dataset = {
                "uri": dataset.uri,
                "sha256": dataset.sha256,
                "rows": dataset.rows,
                "integrity": dataset.integrity,
            }
            with _stage(report, "pii", current):  # before anything copies a personal value
                dataset, g = pii_task(ctx, dataset)
            gates += g
            progress.finished("pii", g, report.stages["pii"])
            validated, screened, g = _validate_and_screen(ctx, dataset, report, current)
            gates += g
            with _stage(report, "train", current):
                model, g = train_task(
                    ctx,
                    screened,
                    suite_sha256=validated.suite_sha256,
                    evidence={"validation": validated.evidence_dir},
                )
            gates += g
            report.model = {
                "name": model.name,
                "version": model.version,
                "mlflow_run_id": model.mlflow_run_id,
                "sha256": model.sha256,
            }
            progress.finished("train", g, report.stages["train"])
            with _stage(report, "evaluate", current):
                _, g = evaluate_task(ctx, model, client, screened.reference_profile)
            gates += g
            progress.finished("evaluate", g, report.stages["evaluate"])
            with _stage(report, "sign", current):
                signed, g = sign_task(
                    ctx,
                    dataset=screened,
                    model=model,
                    suite_sha256=validated.suite_sha256,
                    gates=gates,
                )
            gates += g
            progress.finished("sign", g, report.stages["sign"])
            with _stage(report, "deploy", current):
                report.deployment, g = deploy_task(
                    ctx, client, model=model, signed=signed, promoter=promoter_client
                )
            gates += g
            progress.finished("deploy", g, report.stages["deploy"])
            report.approval = report.deployment.pop("awaiting_approval", None)
            report.status = "deployed" if report.approval is None else "awaiting_approval"
            if report.approval is not None and settings.governance.pause_for_approval:
                report.approval["note"] = wait_for_approval(ctx, client, report.approval)
        except GateFailed as exc:
            gates += exc.results
            report.status, report.blocked_by = "blocked", exc.gate.name
            progress.finished(current[0], exc.results, report.stages.get(current[0]))
        except Exception as exc:  # noqa: BLE001 - reported as "failed"; the run ends Failed below
            # Prefect's task engine, hit by a signal before its task run exists, raises
            # ValueError("Task run is not set") from the interruption: still a signal.
            interrupted = _signal_behind(exc)
            report.status, report.error = "failed", explain(exc)
        except (KeyboardInterrupt, TerminationSignal) as exc:  # SIGINT or SIGTERM
            interrupted = exc
        if interrupted is not None:
            name = signal.Signals(signal_number(interrupted)).name
            report.status = "interrupted"
            report.error = f"stopped by {name}; the champion did not move, rerun when ready"
        # From here the run writes down how it ended: a signal now waits for that.
        recording.enter_context(deferred(lambda: interrupted is not None))
        report.gates = [g.as_report() for g in gates]
        if model is not None and report.status not in ("deployed", "awaiting_approval"):
            try:  # nobody should promote a version that did not ship
                ModelRegistry.for_settings(settings).mark(model.version, status=report.status)
            except Exception as exc:  # noqa: BLE001 - the verdict and report matter more
                ctx.audit.append("registry.tag_failed", run_id=ctx.run_id, error=type(exc).__name__)
        ctx.audit.append(
            "run.end", run_id=ctx.run_id, status=report.status, blocked_by=report.blocked_by
        )
        report.audit_anchor = anchor_audit_task(ctx, anchor_client)

        def outcome() -> str | None:
            return record_outcome(
                settings,
                report,
                flow_run_id=ctx.run_id,
                model_run_id=model.mlflow_run_id if model is not None else None,
                model_version=model.version if model is not None else None,
                release_dir=signed.directory if signed is not None else None,
            )

        if interrupted is None:
            mlflow_run = outcome()
        elif "mlflow" in sys.modules:
            # A SIGTERM gives seconds, and MLflow cut off mid-write can hold SQLite's lock
            # for its busy timeout: its record of an interrupted run is bounded, and an
            # interrupted run that never reached MLflow skips it (not worth the import).
            # The report, the audit log and Prefect hold the run's end either way.
            mlflow_run = _bounded(outcome, INTERRUPTED_MLFLOW_SECONDS)
    if report_path:
        report.write(Path(report_path))
    _artifacts(settings, report, mlflow_run)
    if interrupted is not None:
        raise interrupted  # the signal still ends the command (after the record is written)
    if report.status == "blocked":  # a verdict, not a crash: no traceback, its own name
        return Failed(name="Blocked", message=report.reason)
    if report.status == "awaiting_approval":  # a verdict: it waits for people
        return Completed(name="AwaitingApproval", message=report.reason)
    if report.status != "deployed":
        return Failed(message=report.reason)
    return report.model_dump()


INTERRUPTED_MLFLOW_SECONDS = 3.0


def _signal_behind(exc: BaseException) -> BaseException | None:
    """The SIGINT/SIGTERM interruption `exc` was raised while handling, if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (KeyboardInterrupt, TerminationSignal)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _bounded(fn: Callable[[], str | None], seconds: float) -> str | None:
    """`fn()` on a daemon thread, given `seconds`: its result, or None if it took longer
    (the thread is abandoned; the command ends soon after, and SQLite's journal keeps
    MLflow's store consistent)."""
    result: list[str | None] = []
    worker = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    return result[0] if result else None


def _artifacts(settings: Settings, report: RunReport, mlflow_run: str | None) -> None:
    """The run's Prefect artifacts: the gate table (short digests, thresholds in
    view), the markdown summary, and a link to the MLflow run."""
    create_table_artifact(
        key="secure-training-gates", table=report.gate_rows(), description=report.reason
    )
    create_markdown_artifact(
        key="secure-training-report", markdown=report.markdown(), description=report.reason
    )
    url = run_url(settings, mlflow_run) if mlflow_run else None
    if url:
        create_link_artifact(
            key="mlflow-run", link=url, link_text="MLflow run", description="gates, report, model"
        )
