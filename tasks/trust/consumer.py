"""What a consumer of a release checks before trusting it: `verify`, `fetch` and the
monitoring flow's ``monitor.integrity`` gate all call `verify_reference`.

``models:/NAME@champion`` follows the signed champion record in the bucket (never the
registry): its signature, the MLflow alias beside it and the approvals it rests on are
checks of their own (`tasks.governance.check`). Any other reference (``s3://`` URI of
a release, ``models:/NAME/VERSION``) is resolved, then verified the same way: the
release's signatures, digests, encryption context and version history (an object
replaced, deleted or added afterwards fails), and MLflow's copy of the model files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.common.settings import ConfigError, Settings
from tasks.localstack import stack

if TYPE_CHECKING:
    from tasks.common.s3 import S3Endpoint


@dataclass
class Verification:
    """A verified (or not) release, with the approvals it rests on and whose keys were
    trusted (`root` says so in words)."""

    result: Any  # tasks.trust.release.VerifiedRelease
    approved: list[Any] = field(default_factory=list)
    root: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.result.ok)


def verify_reference(
    settings: Settings,
    model_ref: str,
    workdir: Path,
    *,
    trusted_keys: list[str] | None = None,
    refuse_waivers: bool = False,
    endpoint: S3Endpoint | None = None,
) -> Verification:
    """Resolve `model_ref`, then verify the release it names (rebuilt in `workdir`)
    against the consumer's trust root, as the read-only ``reader`` identity (on
    `endpoint`, a store the caller holds open; None: opened for the call).

    Raises:
        ConfigError: a reference that names no release, or an unusable trust root.
    """
    from tasks.common.s3 import s3_client
    from tasks.common.tracking import CHAMPION
    from tasks.governance import check as governed
    from tasks.trust import release
    from tasks.trust.envelope import key_provider
    from tasks.trust.roots import trust_root

    root = trust_root(settings, trusted_keys)
    uri, expected = model_ref, None
    champion = model_ref.startswith("models:/") and model_ref.endswith(f"@{CHAMPION}")
    if model_ref.startswith("models:/") and not champion:
        from tasks.common.registry import ModelRegistry

        # The registry only says where to look: all is checked.
        name, version, uri = ModelRegistry.resolve(settings, model_ref)
        expected = {"name": name, "version": version}
    with contextlib.ExitStack() as opened:
        if endpoint is None:
            endpoint = opened.enter_context(stack.s3_service(settings, role="reader"))
        client = s3_client(stack.role_endpoint(settings, endpoint, "reader"))
        pre: list[tuple[str, bool, str]] = []
        record = None
        approved: list[Any] = []
        if champion:
            name = model_ref.removeprefix("models:/").rpartition("@")[0]
            record, pre = governed.record_checks(client, settings, name)
            if record is None:
                return Verification(
                    release.VerifiedRelease(uri=model_ref, checks=pre), [], root.detail
                )
            uri = str(record.release_uri)
            expected = {"name": name, "version": str(record.version)}
        try:
            bucket, key = release.parse_s3_uri(uri)
        except release.ReleaseError as exc:
            raise ConfigError(str(exc)) from None
        result = release.verify_release(
            client,
            bucket=bucket,
            release_key=key,
            public_key=root.keys,
            key_provider=key_provider(settings, purpose="decrypt"),
            max_bytes=settings.dataset.max_bytes,
            workdir=workdir,
            expected=expected,
            signer=root.signer,
        )
        if record is not None and result.ok:
            more, approved = governed.approval_checks(client, settings, result, record)
            pre += more
        result.checks[:0] = pre
    if expected is not None and result.ok:
        from tasks.common.registry import ModelRegistry
        from tasks.common.tracking import mlflow_client

        # The model the reference names, which verify_release has just checked is the
        # signed release's own: never the config's model (verify needs no --config).
        registry = ModelRegistry(mlflow_client(settings), expected["name"])
        result.checks.append(
            registry.check_files(
                expected["version"],
                signed=result.model["files"],
                model_sha256=str(result.release["model"]["sha256"]),
            )
        )
    if result.ok and (refuse_waivers or settings.trust.refuse_waivers):
        from tasks.trust.roots import waiver_check

        result.checks.append(waiver_check(result.provenance))
    return Verification(result, approved, root.detail)
