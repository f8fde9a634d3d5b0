"""Deploy stage: preflight the bucket, publish an immutable encrypted release (the
signed release directory of `tasks.sign`, the model encrypted; layout in
`tasks.trust.release`), verify the deployed copy as `fetch` would, and only then
move the MLflow alias ``champion``.

Nothing is ever overwritten (conditional writes), the release record is written
last so readers never see half a release, and a failure at any step leaves the
previous champion exactly where it was. The S3 client is the run's: the flow opens
the endpoint once and hands it to every stage that needs it.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.checks.bucket_posture import bucket_posture, check_bucket_posture
from tasks.common.anchors import anchor_head
from tasks.common.context import RunContext, StageGates, stage_task
from tasks.common.files import sha256_bytes
from tasks.common.gates import GateResult, check, run_check
from tasks.common.s3 import ObjectExists, put_immutable
from tasks.governance import promotion
from tasks.sign import SignedProvenance
from tasks.train import TrainedModel
from tasks.trust import provenance
from tasks.trust import release as rel
from tasks.trust.envelope import encrypt, key_provider
from tasks.trust.signing import RELEASE_TYPE, Signer, canonical_json

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# encrypted model, signature, provenance, SBOM, report, its page, release record
RELEASE_OBJECTS = 7


def check_no_overwrite(existing_key: str | None) -> GateResult:
    """`deploy.no_overwrite`: every object of the release was new (If-None-Match held)."""
    ok = existing_key is None
    return check(
        "deploy.no_overwrite",
        ok=ok,
        metrics={"objects_written": RELEASE_OBJECTS} if ok else {"existing_key": existing_key},
        threshold={"overwrites": 0},
        detail="every object written with If-None-Match"
        if ok
        else "releases are immutable; an object already exists there: use a new model "
        "version, prefix or bucket",
    )


def check_roundtrip(verified: rel.VerifiedRelease) -> GateResult:
    """`deploy.roundtrip`: the deployed copy was fetched, decrypted, verified and loaded."""
    failing = [f"{n}: {d}" for n, ok, d in verified.checks if not ok]
    return check(
        "deploy.roundtrip",
        ok=verified.ok,
        metrics={
            "checks_passed": sum(ok for _, ok, _ in verified.checks),
            "checks": len(verified.checks),
        },
        threshold={"all_checks": True},
        detail="; ".join(failing) or "fetched, decrypted and verified",
    )


def publish(
    ctx: RunContext, client: S3Client, *, model: TrainedModel, signed: SignedProvenance
) -> dict[str, Any]:
    """Write the encrypted model, the release directory's other files, then the signed
    release record, all conditionally.

    Raises:
        ObjectExists: one of the keys exists already (nothing after it is written).
    """
    settings, st = ctx.settings, ctx.settings.storage
    plaintext = (signed.directory / rel.MODEL).read_bytes()
    if sha256_bytes(plaintext) != model.sha256:
        raise rel.ReleaseError("model file changed after signing")
    context = rel.encryption_context(name=model.name, version=model.version, sha256=model.sha256)
    ciphertext = encrypt(plaintext, key_provider=key_provider(settings), context=context)
    base = rel.release_prefix(st.prefix, model.name, model.version)

    def put(key: str, body: bytes) -> str:
        return put_immutable(
            client, bucket=st.bucket, key=key, body=body, sse=settings.sse, kms_key_id=st.kms_key_id
        )

    art_key = f"{base}/{rel.ARTIFACT}"
    art_vid = put(art_key, ciphertext)
    files = {}
    for name in rel.PLAIN_FILES:
        body = (signed.directory / name).read_bytes()
        files[name] = {
            "key": f"{base}/{name}",
            "version_id": put(f"{base}/{name}", body),
            "sha256": sha256_bytes(body),
        }
    record = {
        "schema": rel.SCHEMA,
        "deployed_at": datetime.now(UTC).isoformat(),
        "flow_run_id": ctx.run_id,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "serving": provenance.internal(signed.payload)["serving"],  # labels, or probabilities
        "artifact": {
            "key": art_key,
            "version_id": art_vid,
            "sse": settings.sse,
            "size": len(ciphertext),
            "ciphertext_sha256": sha256_bytes(ciphertext),
        },
        "files": files,
        "encryption_context": context,
    }
    envelope = Signer.local(settings.keys_dir).sign(record, payload_type=RELEASE_TYPE)
    release_key = f"{base}/{rel.RELEASE}"
    release_vid = put(release_key, canonical_json(envelope))
    return {
        "uri": f"s3://{st.bucket}/{release_key}",
        "version_id": release_vid,
        "artifact_version_id": art_vid,
        "sse": settings.sse,
        "encryption_context": context,
    }


def deploy(
    ctx: RunContext,
    client: S3Client,
    *,
    model: TrainedModel,
    signed: SignedProvenance,
    promoter: S3Client | None = None,
) -> tuple[dict[str, Any], list[GateResult]]:
    """Preflight, publish, verify the deployed copy, then make it the champion, or
    leave it awaiting approval when the governance rules need one
    (`tasks.governance.promotion.on_deploy`; the deployment then holds
    ``awaiting_approval``: what it waits for).

    Args:
        ctx: The run's settings and identity.
        client: The run's S3 client (pipeline identity).
        promoter: The store as the promoter identity (writes the champion record);
            None: the run's client.
        model: The trained model that passed evaluation.
        signed: Its signed provenance manifest.

    Returns:
        The deployment record for the report, and this stage's gate results.

    Raises:
        GateFailed: the bucket is unfit, a release object exists, or the deployed
            copy does not verify; the champion alias has not moved.
    """
    settings, gates = ctx.settings, StageGates(ctx)
    posture = bucket_posture(client, bucket=settings.storage.bucket)
    gates.enforce(
        run_check("deploy.bucket_posture", check_bucket_posture, posture, sse=settings.sse)
    )
    deployment: dict[str, Any] = {}
    existing: str | None = None
    try:
        deployment = publish(ctx, client, model=model, signed=signed)
    except ObjectExists as exc:
        existing = str(exc)
    gates.enforce(run_check("deploy.no_overwrite", check_no_overwrite, existing))
    with tempfile.TemporaryDirectory(dir=ctx.run_dir) as workdir:
        verified = rel.verify_with_settings(
            client,
            settings,
            deployment["uri"],
            workdir=Path(workdir),
            expected={"name": model.name, "version": model.version},
        )
    gates.enforce(run_check("deploy.roundtrip", check_roundtrip, verified))
    waiting = promotion.on_deploy(settings, client, promoter or client, verified, audit=ctx.audit)
    if waiting is not None:
        deployment["awaiting_approval"] = waiting
    return deployment, gates.results


@stage_task("anchor-audit")
def anchor_audit_task(ctx: RunContext, client: S3Client | None) -> str | None:
    """Anchor the audit chain's head in the object-locked bucket (every run,
    blocked ones included: those are the entries an insider would hide).

    Args:
        ctx: The run's settings and identity.
        client: The run's S3 client; None when the store could not be reached.

    Returns:
        The anchor's URI, or None when the bucket could not be reached (the
        run's verdict stands; `secure-pipeline audit verify` reports the gap).
    """
    settings = ctx.settings
    try:
        if client is None:
            raise ConnectionError("no S3 endpoint for this run")
        key = anchor_head(settings, client, run_id=ctx.run_id)
    except Exception as exc:  # noqa: BLE001 - an unreachable bucket must not hide the verdict
        ctx.audit.append("audit.anchor_failed", run_id=ctx.run_id, error=type(exc).__name__)
        return None
    return f"s3://{settings.storage.bucket}/{key}"


# The Prefect task is the pure function itself, with the options every stage needs.
deploy_task = stage_task("deploy")(deploy)
