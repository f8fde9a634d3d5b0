"""Every pipeline run as an MLflow run a reader of the MLflow UI can follow.

`record_outcome` writes it, blocked runs included: the train stage's run when training
ran, else a run of its own, named ``<dataset>-<model>-<UTC time>`` (`mlflow_run_name`),
with the gates' verdicts and metrics, the stage times, the run report and the signed
release's evidence (or, for a monitoring run, its page). It never raises: the verdict
matters more than its record. `run_url` links a run in the MLflow UI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tasks.common.registry import ModelRegistry
from tasks.common.settings import Settings
from tasks.common.tracking import configure_mlflow, mlflow_client, redact_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tasks.common.report import RunReport

log = logging.getLogger(__name__)


# The signed release's evidence that record_outcome copies to MLflow (tasks/sign.py
# names them; the model file is logged with the model already, its signature is not
# needed to read the run).
RELEASE_ARTIFACTS = ("provenance.dsse.json", "sbom.cdx.json", "report.json", "security-report.html")
# MLflow run status per pipeline status (anything else, "blocked" too: FAILED).
RUN_STATUS = {
    "deployed": "FINISHED",
    "awaiting_approval": "FINISHED",
    "healthy": "FINISHED",
    "interrupted": "KILLED",
}
# While the outcome is recorded, an MLflow server that does not answer costs seconds, not
# MLflow's default of 7 retries with exponential backoff and a 120 s timeout per
# request (minutes). Variables the user set win.
QUICK_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_KEY_CHARS = re.compile(r"[^\w./ :-]")


def mlflow_run_name(settings: Settings, when: datetime | None = None) -> str:
    """``<dataset>-<model>-<UTC YYYYmmdd-HHMMSS>``: what the MLflow UI lists a run as."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return f"{settings.dataset.name}-{settings.model.name}-{when:%Y%m%d-%H%M%S}"


def mlflow_run_tags(settings: Settings, flow_run_id: str) -> dict[str, str]:
    """The tags that find a pipeline's MLflow run: its Prefect flow run, data and model."""
    return {
        "prefect.flow_run_id": flow_run_id,
        "dataset": settings.dataset.name,
        "model": settings.model.name,
        "estimator": settings.model.estimator,
    }


def gate_verdicts(report: RunReport) -> dict[str, str]:
    """Gate name -> ``passed``, ``failed`` or ``waived`` (passed under a waiver)."""
    waived = {str(w.get("gate")) for w in report.waivers}
    verdicts = {}
    for g in report.gates:
        name = str(g["name"])
        if not g.get("passed"):
            verdicts[name] = "failed"
        elif g.get("waived") or name in waived:
            verdicts[name] = "waived"
        else:
            verdicts[name] = "passed"
    return verdicts


def outcome_summary(report: RunReport) -> str:
    """One or two human sentences: the verdict, how many gates passed, which failed or
    were waived, and where the model went."""
    head = {
        "deployed": "Deployed",
        "awaiting_approval": "Awaiting approval",
        "blocked": f"Blocked by {report.blocked_by}",
        "healthy": "Healthy",
        "alert": f"Alert from {report.blocked_by}",
        "interrupted": "Interrupted",
    }.get(report.status, "Failed")
    text = f"{head}: {_gate_summary(report)}"
    if report.status in ("deployed", "awaiting_approval") and report.deployment:
        text += f"; deployed to {report.deployment.get('uri')}"
    text += "."
    if report.status in ("failed", "interrupted") and report.error:
        text += f" {report.error}"
    return text if len(text) <= 1000 else text[:999] + "…"


def _gate_summary(report: RunReport) -> str:
    """``N of M gates passed`` and the names of the failed and the waived ones."""
    verdicts = gate_verdicts(report)
    failed = [n for n, v in verdicts.items() if v == "failed"]
    waived = [n for n, v in verdicts.items() if v == "waived"]
    parts = [f"{len(verdicts) - len(failed)} of {len(verdicts)} gates passed"]
    if failed:
        parts.append("failed: " + ", ".join(failed))
    if waived:
        parts.append("waived: " + ", ".join(waived))
    return "; ".join(parts)


def record_outcome(
    settings: Settings,
    report: RunReport,
    *,
    flow_run_id: str,
    model_run_id: str | None,
    model_version: str | None,
    release_dir: Path | None,
    files: Sequence[Path] = (),
) -> str | None:
    """Write the run's outcome to MLflow; call it once, at the end of every run.

    Into the train stage's run `model_run_id` when training ran, else into a new run
    of the experiment (named by `mlflow_run_name`, tagged by `mlflow_run_tags`, with
    the dataset's uri, sha256 and rows as params when ingestion got that far). Logged:
    every gate's numeric, finite metrics as ``<gate>.<metric>`` (a key the run already
    has, such as evaluate's, is not logged twice), ``stage.<name>.seconds``, the tags
    ``status``, ``blocked_by``, ``gate.<gate>`` (passed/failed/waived), the run's
    description, the report as ``run_report.json`` and, from `release_dir`, the signed
    release's evidence under ``release/``, and `files` (a monitoring run's page) at the
    run's root. The run ends FINISHED when deployed, KILLED
    when interrupted, FAILED otherwise. The registered `model_version` gets
    `outcome_summary` as its description.

    Returns:
        The id of the MLflow run written to, or None when MLflow did not answer (a
        warning is logged; nothing is raised).
    """
    run_id: str | None = None  # set once MLflow took a first write
    status = RUN_STATUS.get(report.status, "FAILED")
    try:
        with _quick_http():
            client = mlflow_client(settings)
            if model_run_id is None:
                experiment_id = configure_mlflow(settings)
                run_id = _create_run(client, settings, report, experiment_id, flow_run_id)
            else:
                client.set_tag(model_run_id, "prefect.flow_run_id", flow_run_id)
                run_id = model_run_id
            _log_outcome(client, run_id, report, release_dir, new=model_run_id is None)
            for path in files:
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, status=status)
    except Exception as exc:  # noqa: BLE001 - the verdict and the report matter more
        log.warning(
            "MLflow did not record the run's outcome (%s at %s): the run report has it",
            type(exc).__name__,
            redact_uri(settings.tracking_uri),
        )
        if run_id is not None:  # a part is there: at least do not leave it RUNNING
            with contextlib.suppress(Exception), _quick_http():
                client.set_terminated(run_id, status=status)
    if model_version is not None and run_id is not None:  # None: MLflow did not answer
        try:
            with _quick_http():
                ModelRegistry.for_settings(settings).describe(
                    model_version, outcome_summary(report)
                )
        except Exception as exc:  # noqa: BLE001 - a description is a courtesy
            log.warning(
                "MLflow did not take version %s's description (%s)",
                model_version,
                type(exc).__name__,
            )
    return run_id


# The MLflow 3 UI opens in its GenAI view unless the page says otherwise (its toggle is
# stored per browser); the classic view of runs, metrics and models is this one.
CLASSIC_VIEW = "?workflowType=machine_learning"


def run_url(settings: Settings, run_id: str) -> str | None:
    """The MLflow UI page of run `run_id`, or None when there is no UI to link to.

    A tracking server (``http(s)://``) serves its own UI; any other store that is not
    Databricks (SQLite, the default, or a database) is the one the MLflow UI of
    ``secure-pipeline local up`` serves on ``local.mlflow_port``.
    """
    uri = settings.tracking_uri
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        base = redact_uri(uri).rstrip("/")
    elif scheme.startswith("databricks") or uri.startswith("databricks") or scheme == "uc":
        return None
    else:
        base = f"http://127.0.0.1:{settings.local.mlflow_port}"
    try:
        with _quick_http():
            experiment_id = mlflow_client(settings).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the UI redirects a bare run page to its experiment
        return f"{base}/#/runs/{run_id}{CLASSIC_VIEW}"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{CLASSIC_VIEW}"


@contextmanager
def _quick_http() -> Iterator[None]:
    """`QUICK_HTTP` for MLflow's REST client while open (it reads them per request).

    They are process variables: the outcome is recorded after every stage has ended,
    when nothing else in the process talks to MLflow.
    """
    saved = {key: os.environ.get(key) for key in QUICK_HTTP}
    os.environ.update({k: v for k, v in QUICK_HTTP.items() if saved[k] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def _create_run(
    client: MlflowClient,
    settings: Settings,
    report: RunReport,
    experiment_id: str,
    flow_run_id: str,
) -> str:
    """A run for a pipeline run that never reached training (its train run is absent)."""
    from mlflow.entities import Param
    from mlflow.tracking.context.registry import resolve_tags

    tags = resolve_tags(mlflow_run_tags(settings, flow_run_id))  # user, source, as fluent runs
    run = client.create_run(experiment_id, run_name=mlflow_run_name(settings), tags=tags)
    run_id = str(run.info.run_id)
    dataset = report.dataset or {}
    params = {
        f"dataset.{k}": redact_uri(str(dataset[k])) if k == "uri" else str(dataset[k])
        for k in ("uri", "sha256", "rows", "integrity")
        if dataset.get(k) is not None
    }
    if params:
        client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
    return run_id


def _log_outcome(
    client: MlflowClient, run_id: str, report: RunReport, release_dir: Path | None, *, new: bool
) -> None:
    """Metrics, tags and artifacts of the outcome into run `run_id`."""
    from mlflow.entities import Metric, RunTag

    logged = set() if new else set(client.get_run(run_id).data.metrics)
    now = int(time.time() * 1000)
    values = {**_gate_metrics(report), **_stage_metrics(report)}
    metrics = [Metric(k, v, now, 0) for k, v in values.items() if k not in logged]
    tags = {
        "status": report.status,
        **({"blocked_by": report.blocked_by} if report.blocked_by else {}),
        **{_metric_key(f"gate.{name}"): v for name, v in gate_verdicts(report).items()},
        **(
            {"deployment.uri": str(report.deployment["uri"])}
            if report.deployment and report.deployment.get("uri")
            else {}
        ),
        # The run's description in the MLflow UI.
        "mlflow.note.content": _note(report),
    }
    run_tags = [RunTag(k, v[:8000]) for k, v in tags.items()]
    # One batch in practice (MLflow's limits per batch: 1000 metrics, 100 tags).
    for i in range(max(-(-len(metrics) // 1000), -(-len(run_tags) // 100))):
        some_metrics, some_tags = (
            metrics[i * 1000 : (i + 1) * 1000],
            run_tags[i * 100 : (i + 1) * 100],
        )
        client.log_batch(run_id, metrics=some_metrics, tags=some_tags)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run_report.json"
        path.write_text(_report_json(report), encoding="utf-8")
        client.log_artifact(run_id, str(path))
    if release_dir is not None:
        for name in RELEASE_ARTIFACTS:
            if (release_dir / name).is_file():
                client.log_artifact(run_id, str(release_dir / name), artifact_path="release")


def _gate_metrics(report: RunReport) -> dict[str, float]:
    out = {}
    for g in report.gates:
        for key, value in (g.get("metrics") or {}).items():
            number = _finite(value)
            if number is not None:
                out[_metric_key(f"{g['name']}.{key}")] = number
    return out


def _stage_metrics(report: RunReport) -> dict[str, float]:
    out = {}
    for name, seconds in report.stages.items():
        number = _finite(seconds)
        if number is not None:
            out[_metric_key(f"stage.{name}.seconds")] = number
    return out


def _finite(value: Any) -> float | None:
    """`value` as a float if it is a finite number (not a bool, not text), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _metric_key(key: str) -> str:
    """A key MLflow accepts: word characters, ``. / - :`` and spaces, no ``..``."""
    return _KEY_CHARS.sub("_", key).replace("..", "._")[:250]


def _note(report: RunReport) -> str:
    """The run's description (markdown): the verdict line, the gates, the flow run."""
    try:
        reason = report.reason  # for a block: the gate, measured value and threshold
    except Exception:  # noqa: BLE001 - a report without its failed gate still describes
        reason = outcome_summary(report)
    return (
        f"**{report.status}**: {reason}\n\n{_gate_summary(report)}.\n\n"
        f"Prefect flow run `{report.flow_run_id}`"
    )


def _report_json(report: RunReport) -> str:
    """The report as the flow writes it (its fields hold no secrets: remote dataset URIs
    carry no credentials or query, see tasks/sources/rules.py; still redacted here)."""
    data = report.model_dump()
    if isinstance(data.get("dataset"), dict) and data["dataset"].get("uri"):
        data["dataset"]["uri"] = redact_uri(str(data["dataset"]["uri"]))
    return json.dumps(data, indent=2, default=str) + "\n"
