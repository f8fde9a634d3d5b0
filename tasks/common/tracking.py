"""MLflow at the edge: the tracking set-up, and the only writer of the model registry.

MLflow falls back to ``sqlite:///<cwd>/mlflow.db`` and ``./mlruns`` when it is not
told otherwise, which would scatter run data wherever the command happened to start.
Every stage that talks to MLflow calls `configure_mlflow` first, so the tracking
store, the registry and the artifact root all come from the settings (by default
under the state directory). Nothing here runs at import time.

`ModelRegistry` performs every registry change (register a version, tag it, describe
it, move the ``champion`` alias), with an explicit client. The registry is a *view*
for people and tools: nothing in the trust path reads it without checking the signed
release it points at.

`record_outcome` makes every pipeline run an MLflow run a reader of the MLflow UI can
follow, blocked ones included: the train stage's run when training ran, else a run of
its own, named ``<dataset>-<model>-<UTC time>`` (`mlflow_run_name`), with the gates'
verdicts and metrics, the stage times, the run report and the signed release's
evidence. It never raises: the verdict matters more than its record.
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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tasks.common.files import hash_tree
from tasks.common.settings import ConfigError, Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tasks.common.gates import GateResult
    from tasks.common.report import RunReport

log = logging.getLogger(__name__)
CHAMPION = "champion"
# MLflow 3's UI opens an experiment on the view its kind names (the other kind,
# ``genai_development``, opens on an empty traces overview): this one holds runs.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}


def mlflow_client(settings: Settings) -> MlflowClient:
    """A client bound to the configured tracking store and registry (no globals)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store and get or create the experiment.

    Args:
        settings: Run settings; `tracking_uri` (SQLite under the state directory
            unless configured) and `artifact_root` decide where runs and models go.

    Returns:
        The experiment id.

    Raises:
        ConfigError: the experiment exists but was deleted (restore or rename it).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    # Progress bars on stderr say nothing a log reader needs; the user's choice wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if settings.tracking_uri.startswith("sqlite:"):
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Explicit URIs win over MLFLOW_TRACKING_URI from a developer's shell.
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = mlflow_client(settings)
    name = settings.mlflow_experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=settings.artifact_root, tags=EXPERIMENT_TAGS
            )
        except MlflowException:  # created meanwhile by a concurrent run
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ConfigError(
            f"MLflow experiment {name!r} is deleted; restore it or set mlflow_experiment"
        )
    for key, value in EXPERIMENT_TAGS.items():
        if key not in experiment.tags:  # an older experiment; a kind someone chose stays
            client.set_experiment_tag(experiment.experiment_id, key, value)
    if experiment.artifact_location.rstrip("/") != settings.artifact_root.rstrip("/"):
        log.warning("MLflow experiment %r stores artifacts outside the configured root", name)
    return str(experiment.experiment_id)


def redact_uri(uri: str) -> str:
    """Drop credentials and query strings (presigned URLs carry signatures)."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ModelRegistry:
    """Every change to one registered model: versions, their tags, the champion alias.

    Tags a version carries: ``model_sha256``; ``gate_status`` (``candidate`` after
    training, then ``deployed``, ``blocked`` or ``failed``); ``blocked_by``; one tag per
    evaluate gate (``passed``/``failed``); ``deployment_uri`` once deployed.
    """

    def __init__(self, client: MlflowClient, name: str):
        self.client, self.name = client, name

    @classmethod
    def for_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(mlflow_client(settings), settings.model.name)

    @classmethod
    def resolve(cls, settings: Settings, ref: str) -> tuple[str, str, str]:
        """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, version, the
        deployment URI its tag names). Only a pointer: `verify` checks what it finds.

        Raises:
            ConfigError: the reference is malformed, unknown, or was never deployed.
        """
        from mlflow.exceptions import MlflowException

        client = mlflow_client(settings)
        name, _, alias = ref.removeprefix("models:/").partition("@")
        try:
            if alias:
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, version = name.partition("/")
                mv = client.get_model_version(name, version)
        except MlflowException as exc:
            raise ConfigError(f"{ref} is not in the registry ({exc.error_code})") from None
        uri = mv.tags.get("deployment_uri")
        if not uri:
            raise ConfigError(f"{ref} has no deployment_uri tag: it was never deployed")
        return name, str(mv.version), str(uri)

    def check_files(
        self, version: str, *, signed: Mapping[str, str], model_sha256: str | None = None
    ) -> tuple[str, bool, str]:
        """MLflow's copy of `version` holds exactly the files the provenance signed
        (a model file edited in the artifact store fails), and the signed file list's
        skops model is the released model (`model_sha256`): a `verify` check."""
        import mlflow

        if model_sha256 is not None:
            skops = {k: v for k, v in signed.items() if k.endswith(".skops")}
            if list(skops.values()) != [model_sha256]:
                return (
                    "mlflow.artifact",
                    False,
                    "the signed file list's model "
                    f"({', '.join(f'{k} {v[:12]}' for k, v in skops.items()) or 'none'}) is not "
                    f"the released model ({model_sha256[:12]}): the registry holds another model",
                )
        try:
            mv = self.client.get_model_version(self.name, version)
            # The SQLite store keeps the logged model in the version's source only.
            model_id = mv.model_id or str(mv.source).removeprefix("models:/")
            if not model_id.startswith("m-"):
                raise LookupError("the version names no logged model")
            location = self.client.get_logged_model(model_id).artifact_location
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=tmp, tracking_uri=self.client.tracking_uri
                )
                found = hash_tree(Path(local))
        except Exception as exc:  # noqa: BLE001 - unreadable is not verified
            return "mlflow.artifact", False, f"MLflow's copy cannot be read ({type(exc).__name__})"
        changed = sorted(k for k in {*found, *signed} if found.get(k) != signed.get(k))
        if changed:
            return (
                "mlflow.artifact",
                False,
                f"MLflow's copy differs from the signed provenance: {', '.join(changed[:5])}; "
                "do not serve it from MLflow, find who can write the artifact store",
            )
        return "mlflow.artifact", True, "MLflow's copy holds exactly the signed files"

    def register(self, *, model_id: str, run_id: str) -> str:
        """Register the logged model `model_id` of run `run_id` as a new version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = self.client.create_model_version(
            name=self.name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id
        )
        return str(version.version)

    def describe(self, version: str, text: str) -> None:
        """The version's description in the registry UI (a human summary, e.g.
        `outcome_summary`): what became of it, in words."""
        self.client.update_model_version(self.name, version, description=text)

    def tag(self, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)

    def record_gates(self, version: str, results: Iterable[GateResult]) -> None:
        """One tag per gate; a failed gate also marks the version blocked by it."""
        results = list(results)
        self.tag(version, {r.name: "passed" if r.passed else "failed" for r in results})
        blocked = next((r for r in results if not r.passed), None)
        if blocked is not None:
            self.mark(version, status="blocked", blocked_by=blocked.name)

    def mark(self, version: str, *, status: str, blocked_by: str | None = None) -> None:
        """Set ``gate_status`` (and ``blocked_by``), so nobody promotes a version by hand."""
        self.tag(
            version, {"gate_status": status, **({"blocked_by": blocked_by} if blocked_by else {})}
        )

    def promote(self, version: str, *, deployment_uri: str) -> None:
        """Record the verified deployment, then move the champion alias to `version`."""
        self.tag(version, {"deployment_uri": deployment_uri, "gate_status": "deployed"})
        self.client.set_registered_model_alias(self.name, CHAMPION, version)


# The signed release's evidence that record_outcome copies to MLflow (tasks/sign.py
# names them; the model file is logged with the model already, its signature is not
# needed to read the run).
RELEASE_ARTIFACTS = ("provenance.dsse.json", "sbom.cdx.json", "report.json")
# MLflow run status per pipeline status (anything else, "blocked" too: FAILED).
RUN_STATUS = {"deployed": "FINISHED", "awaiting_approval": "FINISHED", "interrupted": "KILLED"}
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
) -> str | None:
    """Write the run's outcome to MLflow; call it once, at the end of every run.

    Into the train stage's run `model_run_id` when training ran, else into a new run
    of the experiment (named by `mlflow_run_name`, tagged by `mlflow_run_tags`, with
    the dataset's uri, sha256 and rows as params when ingestion got that far). Logged:
    every gate's numeric, finite metrics as ``<gate>.<metric>`` (a key the run already
    has, such as evaluate's, is not logged twice), ``stage.<name>.seconds``, the tags
    ``status``, ``blocked_by``, ``gate.<gate>`` (passed/failed/waived), the run's
    description, the report as ``run_report.json`` and, from `release_dir`, the signed
    release's evidence under ``release/``. The run ends FINISHED when deployed, KILLED
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
