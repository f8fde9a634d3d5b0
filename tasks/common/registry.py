"""The only writer of MLflow's model registry.

`ModelRegistry` performs every registry change (register a version, tag it, describe
it, move the ``champion`` alias), with an explicit client. The registry is a *view*
for people and tools: nothing in the trust path reads it without checking the signed
release it points at.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.common.files import hash_tree
from tasks.common.settings import ConfigError, Settings
from tasks.common.tracking import CHAMPION, mlflow_client

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tasks.common.gates import GateResult

log = logging.getLogger(__name__)


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
