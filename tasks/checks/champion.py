"""The current champion, loaded only through the trust path, for the evaluate gates
to compare a candidate with (``evaluate.quality``, ``evaluate.adversarial``).

Where the champion is: `champion_ref`, the one place that knows: the signed champion
record in the bucket (`tasks.governance.champion_record`), checked against the MLflow
alias ``champion`` (a view of it: an alias moved by hand fails closed). The release it
names is verified exactly as ``secure-pipeline verify models:/NAME@champion`` does
(`tasks.trust.release.verify_release`: the signed release record bound to that name
and version, the SLSA provenance, the artifact's version, digest and encryption
context, the OpenSSF signature) and the model is loaded from the verified plaintext
with the pinned skops type allow-list (`tasks.trust.modelio.load_model_bytes`, digest
checked again). Never MLflow's loader, never pickle.

Outcomes (`Champion.status`):

- ``none``: no champion yet (the alias is not set), or one the candidate cannot be
  compared with (other inputs, input roles or classes: a new policy); the comparison
  is skipped and recorded with its reason.
- ``loaded``: verified and loaded; the gates compare on the same rows.
- ``unverified``: the alias exists but its release cannot be found, verified or
  loaded; both gates fail closed (the detail names the failed check).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError
from sklearn.pipeline import Pipeline

from tasks.common.errors import StoreUnreachable
from tasks.common.tracking import CHAMPION, mlflow_client

if TYPE_CHECKING:
    from tasks.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    status: Literal["none", "loaded", "unverified"]
    reason: str  # why none / unverified, or what was loaded
    version: str | None = None
    pipeline: Pipeline | None = None
    estimator: str | None = None

    @property
    def label(self) -> str:
        """What the metrics record: the version compared with, or ``none``."""
        return f"version {self.version}" if self.status == "loaded" else self.status


NO_CHAMPION = Champion("none", "no champion was given")


def champion_ref(settings: Settings, client: Any) -> tuple[str, str, str] | None:
    """(name, version, release URI) of the current champion, None without one.

    The only lookup of where the champion lives: the signed record in the bucket
    (signature checked against the promoters' keys), which the MLflow alias must agree
    with.

    Args:
        client: An S3 client that may read the bucket.

    Raises:
        LookupError: an alias without a record (set by hand, or by an earlier version:
            promote it; with ``required_approvals = 0`` such an alias still counts until
            the first record is written), or an alias that names another version than
            the record.
        RecordError: the record is not signed by a promoter.
    """
    from tasks.governance import champion_record

    name = settings.model.name
    alias = alias_version(settings, name)
    current = champion_record.read(client, settings, name)
    if current.payload is None:
        if alias is None:
            return None
        if settings.governance.required_approvals == 0:
            # A state directory from before champion records: the alias (which the
            # trainer moved itself then) is the champion until the next deploy writes
            # the first record; `verify` still refuses it.
            uri = mlflow_client(settings).get_model_version(name, alias).tags.get("deployment_uri")
            if not uri:
                raise LookupError(
                    f"models:/{name}@{CHAMPION} (version {alias}) names no deployment"
                )
            log.warning("no champion record for %s yet: comparing with the alias", name)
            return name, alias, str(uri)
        raise LookupError(
            f"models:/{name}@{CHAMPION} (version {alias}) has no signed champion record in "
            "the bucket (an alias set by hand, or by an earlier version): promote it with "
            f"`secure-pipeline promote models:/{name}/{alias} --key KEY`"
        )
    if alias != current.version:
        raise LookupError(
            f"the MLflow alias {CHAMPION} names version {alias}, the signed champion record "
            f"version {current.version}: an alias moved outside `secure-pipeline promote`"
        )
    return name, str(current.version), str(current.release_uri)


def alias_version(settings: Settings, name: str) -> str | None:
    """The version MLflow's alias ``champion`` names (None: unregistered or unset)."""
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client(settings).get_registered_model(name)
    except MlflowException:
        return None  # the name was never registered: no champion
    version = (getattr(model, "aliases", None) or {}).get(CHAMPION)
    return None if version is None else str(version)


def comparable(champion: Pipeline, candidate: Pipeline) -> str | None:
    """Why the two pipelines cannot be compared on the same rows (None: they can)."""
    try:
        mine, theirs = _inputs(candidate), _inputs(champion)
    except (AttributeError, KeyError, TypeError, ValueError):
        return "the champion is not a pipeline of tasks/models.py"
    if set(mine) != set(theirs):
        added, gone = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        return f"other inputs (new: {added[:5]}, gone: {gone[:5]})"
    if mine != theirs:
        moved = sorted(c for c in mine if mine[c] != theirs[c])
        return f"other input roles ({', '.join(moved[:5])})"
    if [str(c) for c in champion.classes_] != [str(c) for c in candidate.classes_]:
        return "other classes"
    return None


def _inputs(pipeline: Pipeline) -> dict[str, str]:
    """Input column -> its branch kind (``num`` / ``cat``) in the ``prep`` step."""
    prep = pipeline.named_steps["prep"]
    return {
        str(c): name.split("_", 1)[0]
        for name, _, cols in prep.transformers_
        if name != "remainder"
        for c in cols
    }


def _estimator_of(release_model: dict[str, Any], pipeline: Pipeline) -> str:
    """The champion's estimator name: signed in its provenance (``params``)."""
    signed = (release_model.get("params") or {}).get("estimator")
    if isinstance(signed, str):
        return signed
    from tasks.models import GRADIENT_MODELS

    linear = type(pipeline.named_steps["model"]).__name__ == "LogisticRegression"
    return sorted(GRADIENT_MODELS)[0] if linear else "random_forest"  # decides the attack only


def load_champion(settings: Settings, s3: Any, *, candidate: Pipeline) -> Champion:
    """The current champion, verified and loaded, or why not (see the module).

    Args:
        s3: An S3 client of the run; None opens the configured endpoint if needed.
        candidate: The pipeline it will be compared with (for `comparable`).
    """
    import contextlib

    from tasks.common.s3 import s3_client
    from tasks.localstack.stack import s3_service

    with contextlib.ExitStack() as stack:
        try:
            client = s3 if s3 is not None else s3_client(stack.enter_context(s3_service(settings)))
            ref = champion_ref(settings, client)
        except BotoCoreError as exc:  # no answer at all: a failure of the run, not a verdict
            raise StoreUnreachable(
                f"the object store did not answer ({type(exc).__name__}), so the champion "
                "was not measured: check that it runs (`secure-pipeline local status`), "
                "storage.endpoint_url and its credentials"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a champion that cannot be found fails closed
            return Champion("unverified", f"the champion cannot be looked up: {_why(exc)}")
        if ref is None:
            return Champion("none", "no champion yet")
        name, version, uri = ref
        try:
            pipeline, model = _verified_model(settings, client, name=name, version=version, uri=uri)
        except Exception as exc:  # noqa: BLE001 - anything short of verified fails closed
            return Champion("unverified", f"models:/{name}@{CHAMPION} {_why(exc)}", version)
    reason = comparable(pipeline, candidate)
    if reason is not None:
        return Champion("none", f"version {version} is not comparable: {reason}", version)
    return Champion(
        "loaded", f"version {version}, verified", version, pipeline, _estimator_of(model, pipeline)
    )


def _why(exc: Exception) -> str:
    from tasks.common.errors import PipelineError

    return str(exc) if isinstance(exc, PipelineError | LookupError) else type(exc).__name__


def _verified_model(
    settings: Settings, s3: Any, *, name: str, version: str, uri: str
) -> tuple[Pipeline, dict[str, Any]]:
    """Verify the release at `uri` as `verify` does, then load its model safely.

    Raises:
        ReleaseError: a check failed (its name and detail in the message).
    """
    from tasks.trust import release
    from tasks.trust.modelio import load_model_bytes

    with tempfile.TemporaryDirectory(prefix="champ-") as tmp:
        result = release.verify_with_settings(
            s3, settings, uri, workdir=Path(tmp), expected={"name": name, "version": version}
        )
        if not result.ok:
            raise release.ReleaseError(f"does not verify ({result.failure})")
        body = (Path(tmp) / release.MODEL).read_bytes()
    pipeline = load_model_bytes(body, expected_sha256=result.model["sha256"])
    if not isinstance(pipeline, Pipeline):
        raise release.ReleaseError("the champion's model file holds no pipeline")
    return pipeline, result.model
