"""MLflow at the edge: the tracking set-up, and the only writer of the model registry.

MLflow falls back to ``sqlite:///<cwd>/mlflow.db`` and ``./mlruns`` when it is not
told otherwise, which would scatter run data wherever the command happened to start.
Every stage that talks to MLflow calls `configure_mlflow` first, so the tracking
store, the registry and the artifact root all come from the settings (by default
under the state directory). Nothing here runs at import time.

The registry's only writer is `tasks.common.registry.ModelRegistry`; a run's record in
MLflow is `tasks.common.outcome.record_outcome`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from tasks.common.settings import ConfigError, Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


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
            A tracking server (``http(s)://``) decides where artifacts go itself
            (its ``--artifacts-destination``): a path on this machine would mean
            nothing to the server or to another worker.

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
    root = artifact_location(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=root, tags=EXPERIMENT_TAGS)
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
    if root is not None and experiment.artifact_location.rstrip("/") != root.rstrip("/"):
        log.warning("MLflow experiment %r stores artifacts outside the configured root", name)
    return str(experiment.experiment_id)


def artifact_location(settings: Settings) -> str | None:
    """Where a new experiment keeps its artifacts: ``settings.artifact_root`` for a
    store this process opens itself (SQLite, a database URL), None (the server's
    choice) for a tracking server."""
    if urlsplit(settings.tracking_uri).scheme in ("http", "https"):
        return None
    return settings.artifact_root


def redact_uri(uri: str) -> str:
    """Drop credentials and query strings (presigned URLs carry signatures)."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
