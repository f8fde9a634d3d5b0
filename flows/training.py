"""The secure training flow: composition only. Each stage lives in tasks/.

    ingest -> PII guard -> validate -> screen -> train -> evaluate -> sign -> deploy

The flow loads the settings once and hands them to every stage in a `RunContext`;
it opens the S3 endpoint once (the embedded store is started for the length of the
run if nothing keeps it up) and hands its client to the stages that need it. A
stage that finds a problem raises GateFailed; the run kernel (`flows.kernel`, shared
with the monitoring flow) then stops the run, writes a report naming the gate, and
ends it in a Failed-type state named ``Blocked`` (its message names the gate, the
measured value and the threshold; no traceback), while a crash ends ``Failed`` with
its cause. Every gate is a line in the run's log, and the run's artifacts are the
gate table, the report, a link to its MLflow run and one to its security report page
(`tasks.report`). The previous champion stays
deployed: nothing is published before every gate has passed and the deployed copy
has been verified.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from prefect import flow, runtime
from prefect.futures import wait
from prefect.states import Failed, State

from flows.kernel import TRAINING, Run, execute, flow_settings
from tasks.common import progress
from tasks.common.anchors import bucket_has_history
from tasks.common.audit import AuditLog
from tasks.common.context import Dataset, RunContext
from tasks.common.gates import GateResult
from tasks.common.outcome import record_outcome
from tasks.common.registry import ModelRegistry
from tasks.common.s3 import s3_client
from tasks.common.settings import ConfigError, Settings
from tasks.deploy import deploy_task
from tasks.evaluate import evaluate_task
from tasks.governance.pause import wait_for_approval
from tasks.ingest import ingest_task
from tasks.localstack.stack import anchor_endpoint, role_endpoint, s3_service
from tasks.report.publish import write_unsigned
from tasks.screen import pii_task, screen_task
from tasks.sign import SignedProvenance, sign_task
from tasks.train import TrainedModel, train_task
from tasks.trust.keys import ensure_keys, key_ids
from tasks.validate import ValidationOutput, validate_task


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
        settings = flow_settings(config, report_path, data_root)
    except ConfigError as exc:  # a refused parameter or config: said, never a traceback
        return Failed(message=f"refused: {exc}")
    return run_pipeline(settings, data=data, report_path=report_path)


def run_tags(settings: Settings) -> list[str]:
    """The flow run's tags in Prefect: which data, model and estimator it trains."""
    return [
        f"dataset:{settings.dataset.name}",
        f"model:{settings.model.name}",
        f"estimator:{settings.model.estimator}",
    ]


def _validate_and_screen(
    run: Run, dataset: Dataset
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
    ctx, report = run.ctx, run.report
    started = time.perf_counter()
    screening = screen_task.submit(ctx, dataset)
    screening.add_done_callback(
        lambda _: report.stages.__setitem__("screen", round(time.perf_counter() - started, 3))
    )
    try:
        with run.stage("validate"):
            validated, gates = validate_task(ctx, dataset)  # GateFailed: the run stops here
        progress.finished("validate", gates, report.stages["validate"])
        run.current[:] = ["screen"]
    finally:
        wait([screening])
    screened, more = screening.result()
    progress.finished("screen", more, report.stages.get("screen"))
    return validated, screened, gates + more


def run_pipeline(
    settings: Settings, *, data: str | None = None, report_path: str | None = None
) -> dict[str, object] | State[Any]:
    """The flow's body: every stage in order, inside a Prefect flow run and the run
    kernel (`flows.kernel`: audit, verdicts, signals, report, artifacts)."""
    ctx = RunContext(settings=settings, run_id=str(runtime.flow_run.id or uuid.uuid4()))
    # Keys were made here once (a monitoring run before the first training leaves audit
    # entries and an anchor, but never keys): their absence now means they were removed.
    had_audit = AuditLog(settings.audit_path).recorded("keys.created")
    made = _Made()
    return execute(
        ctx,
        TRAINING,
        lambda run, resources: _stages(run, resources, made, had_audit, data),
        lambda run: _record(run, made),
        report_path=report_path,
        start={
            "config": str(settings.config_file),
            "data": data or settings.dataset.source,
            "waivers": settings.active_waivers,
        },
        settle=lambda run: _settle(run, made),
    )


@dataclass
class _Made:
    """What the stages produced so far (for the registry tag and the MLflow record)."""

    model: TrainedModel | None = None
    signed: SignedProvenance | None = None


def _stages(
    run: Run, resources: contextlib.ExitStack, made: _Made, had_audit: bool, data: str | None
) -> None:
    """The stages in order; a GateFailed or crash ends them (the kernel records it)."""
    ctx, report = run.ctx, run.report
    settings = ctx.settings
    endpoint = resources.enter_context(s3_service(settings))
    client = s3_client(endpoint)
    run.anchor_client = s3_client(anchor_endpoint(settings, endpoint))
    promoter_client = s3_client(role_endpoint(settings, endpoint, "promoter"))
    keyring, created = ensure_keys(
        settings.keys_dir,
        had_runs=lambda: had_audit or bucket_has_history(settings, client),
    )
    if created:  # the first run of a new state directory
        ctx.audit.append("keys.created", run_id=ctx.run_id, keys=key_ids(keyring))
    with run.stage("ingest"):
        dataset, g = ingest_task(ctx, source=data, s3=client)
    run.finished("ingest", g)
    report.dataset = {
        "uri": dataset.uri,
        "sha256": dataset.sha256,
        "rows": dataset.rows,
        "integrity": dataset.integrity,
    }
    with run.stage("pii"):  # before anything copies a personal value
        dataset, g = pii_task(ctx, dataset)
    run.finished("pii", g)
    validated, screened, g = _validate_and_screen(run, dataset)
    run.gates += g
    with run.stage("train"):
        made.model, g = train_task(
            ctx,
            screened,
            suite_sha256=validated.suite_sha256,
            evidence={"validation": validated.evidence_dir},
        )
    model = made.model
    report.model = {
        "name": model.name,
        "version": model.version,
        "mlflow_run_id": model.mlflow_run_id,
        "sha256": model.sha256,
    }
    run.finished("train", g)
    with run.stage("evaluate"):
        _, g = evaluate_task(ctx, model, client, screened.reference_profile)
    run.finished("evaluate", g)
    with run.stage("sign"):
        made.signed, g = sign_task(
            ctx,
            dataset=screened,
            model=model,
            suite_sha256=validated.suite_sha256,
            gates=run.gates,
        )
    run.finished("sign", g)
    with run.stage("deploy"):
        report.deployment, g = deploy_task(
            ctx, client, model=model, signed=made.signed, promoter=promoter_client
        )
    run.finished("deploy", g)
    report.approval = report.deployment.pop("awaiting_approval", None)
    report.status = "deployed" if report.approval is None else "awaiting_approval"
    if report.approval is not None and settings.governance.pause_for_approval:
        report.approval["note"] = wait_for_approval(ctx, client, report.approval)


def _settle(run: Run, made: _Made) -> None:
    """Nobody should promote a version that did not ship: tag it with the verdict."""
    if made.model is None or run.report.status in ("deployed", "awaiting_approval"):
        return
    try:
        ModelRegistry.for_settings(run.ctx.settings).mark(
            made.model.version, status=run.report.status
        )
    except Exception as exc:  # noqa: BLE001 - the verdict and report matter more
        run.ctx.audit.append("registry.tag_failed", run_id=run.ctx.run_id, error=type(exc).__name__)


def _record(run: Run, made: _Made) -> str | None:
    # A run that stopped before signing still leaves its security report page (not
    # signed); a signed run's page is in its release directory, logged with it.
    page = (
        write_unsigned(run.ctx, run.gates, made.model, status=run.report.status)
        if made.signed is None
        else None
    )
    return record_outcome(
        run.ctx.settings,
        run.report,
        flow_run_id=run.ctx.run_id,
        model_run_id=made.model.mlflow_run_id if made.model is not None else None,
        model_version=made.model.version if made.model is not None else None,
        release_dir=made.signed.directory if made.signed is not None else None,
        files=[page] if page is not None else [],
    )
