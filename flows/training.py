"""The secure training flow: composition only. Each stage lives in tasks/.

    ingest -> PII guard -> validate -> screen -> train -> evaluate -> sign -> deploy

The flow loads the settings once and hands them to every stage in a `RunContext`;
it opens the S3 endpoint once (the embedded store is started for the length of the
run if nothing keeps it up) and hands its client to the stages that need it. A
stage that finds a problem raises GateFailed; the flow then stops, writes a report
naming the gate, and ends Failed so the Prefect UI shows it. The previous champion
stays deployed: nothing is published before every gate has passed and the deployed
copy has been verified.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal
from prefect.futures import wait

from tasks.common.anchors import bucket_has_history
from tasks.common.context import Dataset, RunContext
from tasks.common.errors import explain, signal_number
from tasks.common.gates import GateFailed, GateResult
from tasks.common.report import RunReport
from tasks.common.s3 import s3_client
from tasks.common.settings import ConfigError, Settings, load_settings
from tasks.common.tracking import ModelRegistry
from tasks.deploy import anchor_audit_task, deploy_task
from tasks.evaluate import evaluate_task
from tasks.ingest import ingest_task
from tasks.localstack.stack import anchor_endpoint, s3_service
from tasks.screen import pii_task, screen_task
from tasks.sign import sign_task
from tasks.train import TrainedModel, train_task
from tasks.trust.keys import ensure_keys, key_ids
from tasks.validate import ValidationOutput, validate_task

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class RunNotDeployed(RuntimeError):
    """Marks the flow run Failed in Prefect; the report says why."""


@flow(name="secure-training", log_prints=False)
def secure_training(
    config: str | None = None,
    data: str | None = None,
    report_path: str | None = None,
    data_root: str | None = None,
) -> dict[str, object]:
    """Train, attack, sign and deploy one model, failing closed at every gate.

    Args:
        config: Pipeline config file (TOML); default: the bundled dataset's.
        data: Dataset name or path overriding the configured source (new data);
            it must resolve inside ``dataset.data_root``.
        report_path: Where to write the JSON run report.
        data_root: Confine `data` to this directory instead of ``dataset.data_root``.
            Set by the CLI for a path the operator typed at the shell; a deployment
            run refuses it, so whoever can trigger a run cannot widen the root.
    """
    settings = load_settings(config)
    if data_root is not None:
        if runtime.deployment.id is not None:
            raise ConfigError("data_root cannot be set on a deployment run")
        settings = settings.confined_to(Path(data_root))
    return run_pipeline(settings, data=data, report_path=report_path)


def _validate_and_screen(
    ctx: RunContext, dataset: Dataset, report: RunReport
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
        with report.stage("validate"):
            validated, gates = validate_task(ctx, dataset)  # GateFailed: the run stops here
    finally:
        wait([screening])
    screened, more = screening.result()
    return validated, screened, gates + more


def run_pipeline(
    settings: Settings, *, data: str | None = None, report_path: str | None = None
) -> dict[str, object]:
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
    gates: list[GateResult] = []
    model: TrainedModel | None = None
    interrupted: BaseException | None = None
    client: S3Client | None = None
    anchor_client: S3Client | None = None
    with contextlib.ExitStack() as resources:
        try:
            endpoint = resources.enter_context(s3_service(settings))
            client = s3_client(endpoint)
            anchor_client = s3_client(anchor_endpoint(settings, endpoint))
            keyring, created = ensure_keys(
                settings.keys_dir,
                had_runs=lambda: had_audit or bucket_has_history(settings, client),
            )
            if created:  # the first run of a new state directory
                ctx.audit.append("keys.created", run_id=ctx.run_id, keys=key_ids(keyring))
            with report.stage("ingest"):
                dataset, g = ingest_task(ctx, source=data, s3=client)
            gates += g
            report.dataset = {
                "uri": dataset.uri,
                "sha256": dataset.sha256,
                "rows": dataset.rows,
                "integrity": dataset.integrity,
            }
            with report.stage("pii"):  # before anything copies a personal value
                dataset, g = pii_task(ctx, dataset)
            gates += g
            validated, screened, g = _validate_and_screen(ctx, dataset, report)
            gates += g
            with report.stage("train"):
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
            with report.stage("evaluate"):
                _, g = evaluate_task(ctx, model)
            gates += g
            with report.stage("sign"):
                signed, g = sign_task(
                    ctx,
                    dataset=screened,
                    model=model,
                    suite_sha256=validated.suite_sha256,
                    gates=gates,
                )
            gates += g
            with report.stage("deploy"):
                report.deployment, g = deploy_task(ctx, client, model=model, signed=signed)
            gates += g
            report.status = "deployed"
        except GateFailed as exc:
            gates += exc.results
            report.status, report.blocked_by = "blocked", exc.gate.name
        except Exception as exc:  # noqa: BLE001 - reported as "failed"; the run ends Failed below
            report.status, report.error = "failed", explain(exc)
        except (KeyboardInterrupt, TerminationSignal) as exc:  # SIGINT or SIGTERM
            name = signal.Signals(signal_number(exc)).name
            report.status, interrupted = "interrupted", exc
            report.error = f"stopped by {name}; the champion did not move, rerun when ready"
        report.gates = [g.as_report() for g in gates]
        if model is not None and report.status != "deployed":
            try:  # nobody should promote a version that did not ship
                ModelRegistry.for_settings(settings).mark(model.version, status=report.status)
            except Exception as exc:  # noqa: BLE001 - the verdict and report matter more
                ctx.audit.append("registry.tag_failed", run_id=ctx.run_id, error=type(exc).__name__)
        ctx.audit.append(
            "run.end", run_id=ctx.run_id, status=report.status, blocked_by=report.blocked_by
        )
        report.audit_anchor = anchor_audit_task(ctx, anchor_client)
    if report_path:
        report.write(Path(report_path))
    create_markdown_artifact(
        key="secure-training-report", markdown=report.markdown(), description=report.reason
    )
    if interrupted is not None:
        raise interrupted  # the signal still ends the command (after the record is written)
    if report.status != "deployed":
        raise RunNotDeployed(report.reason)
    return report.model_dump()
