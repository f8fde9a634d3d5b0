"""Deploy stage: preflight the bucket, publish an immutable encrypted release,
verify the deployed copy, and only then move the MLflow alias ``champion``.

Nothing is ever overwritten (conditional writes), the release record is written
last so readers never see half a release, and a failure at any step leaves the
previous champion exactly where it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.checks.bucket_posture import bucket_posture, check_bucket_posture
from tasks.common.anchors import anchor_head
from tasks.common.context import RunContext, StageGates
from tasks.common.files import sha256_bytes
from tasks.common.gates import GateResult, check, failed, passed, run_check
from tasks.common.s3 import ObjectExists, put_immutable, s3_client
from tasks.common.settings import Settings
from tasks.common.tracking import mlflow_client
from tasks.localstack.stack import s3_service
from tasks.sign import SignedProvenance
from tasks.train import TrainedModel
from tasks.trust import release as rel
from tasks.trust.envelope import encrypt, kms_master_key, local_master_key
from tasks.trust.signing import RELEASE_TYPE, Signer, canonical_json, load_public_key

CHAMPION = "champion"


def key_provider(settings: Settings) -> Any:
    if settings.storage.kms_key_id:
        return kms_master_key(settings.storage.kms_key_id, region=settings.storage.region)
    return local_master_key(settings.keys_dir)


def publish(
    ctx: RunContext, client: Any, *, model: TrainedModel, signed: SignedProvenance
) -> dict[str, Any]:
    """Write artifact, provenance, then the signed release record, all conditionally."""
    st = ctx.settings.storage
    plaintext = model.skops_path.read_bytes()
    if sha256_bytes(plaintext) != model.sha256:
        raise rel.ReleaseError("model file changed after signing")
    context = rel.encryption_context(name=model.name, version=model.version, sha256=model.sha256)
    ciphertext = encrypt(plaintext, key_provider=key_provider(ctx.settings), context=context)
    base = rel.release_prefix(st.prefix, model.name, model.version)
    sse = "aws:kms" if st.kms_key_id else "AES256"

    def put(key: str, body: bytes) -> str:
        return put_immutable(
            client, bucket=st.bucket, key=key, body=body, sse=sse, kms_key_id=st.kms_key_id
        )

    art_key, prov_key = f"{base}/{rel.ARTIFACT}", f"{base}/{rel.PROVENANCE}"
    art_vid = put(art_key, ciphertext)
    prov_body = canonical_json(signed.envelope)
    prov_vid = put(prov_key, prov_body)
    record = {
        "schema": "secure-pipeline/release/v1",
        "deployed_at": datetime.now(UTC).isoformat(),
        "flow_run_id": ctx.run_id,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "artifact": {
            "key": art_key,
            "version_id": art_vid,
            "sse": sse,
            "size": len(ciphertext),
            "ciphertext_sha256": sha256_bytes(ciphertext),
        },
        "provenance": {
            "key": prov_key,
            "version_id": prov_vid,
            "sha256": sha256_bytes(prov_body),
        },
        "encryption_context": context,
    }
    envelope = Signer.local(ctx.settings.keys_dir).sign(record, payload_type=RELEASE_TYPE)
    release_key = f"{base}/{rel.RELEASE}"
    release_vid = put(release_key, canonical_json(envelope))
    return {
        "uri": f"s3://{st.bucket}/{release_key}",
        "version_id": release_vid,
        "artifact_version_id": art_vid,
        "sse": sse,
        "encryption_context": context,
    }


def move_champion(settings: Settings, *, model: TrainedModel, deployment_uri: str) -> None:
    client = mlflow_client(settings)
    client.set_model_version_tag(model.name, model.version, "deployment_uri", deployment_uri)
    client.set_model_version_tag(model.name, model.version, "gate_status", "deployed")
    client.set_registered_model_alias(model.name, CHAMPION, model.version)


def mark_version(settings: Settings, *, model: TrainedModel, status: str) -> None:
    """Tag a registered version that did not ship, so nobody promotes it by hand."""
    client = mlflow_client(settings)
    client.set_model_version_tag(model.name, model.version, "gate_status", status)


def deploy(
    ctx: RunContext, *, model: TrainedModel, signed: SignedProvenance
) -> tuple[dict[str, Any], list[GateResult]]:
    settings, gates = ctx.settings, StageGates(ctx)
    sse = "aws:kms" if settings.storage.kms_key_id else "AES256"
    with s3_service(settings) as endpoint:
        client = s3_client(endpoint)
        posture = bucket_posture(client, bucket=settings.storage.bucket)
        gates.enforce(run_check("deploy.bucket_posture", check_bucket_posture, posture, sse=sse))
        try:
            deployment = publish(ctx, client, model=model, signed=signed)
        except ObjectExists as exc:
            gates.enforce(
                failed(
                    "deploy.no_overwrite",
                    metrics={"existing_key": str(exc)},
                    threshold={"overwrites": 0},
                    detail="releases are immutable; an object already exists "
                    "there: use a new model version, prefix or bucket",
                )
            )
        gates.enforce(
            passed(
                "deploy.no_overwrite",
                metrics={"objects_written": 3},
                threshold={"overwrites": 0},
                detail="every object written with If-None-Match",
            )
        )
        bucket, release_key = rel.parse_s3_uri(deployment["uri"])
        verified = rel.verify_release(
            client,
            bucket=bucket,
            release_key=release_key,
            public_key=load_public_key(settings.keys_dir),
            key_provider=key_provider(settings),
            max_bytes=settings.dataset.max_bytes,
        )
        failing = [f"{n}: {d}" for n, ok, d in verified.checks if not ok]
        gates.enforce(
            check(
                "deploy.roundtrip",
                ok=verified.ok,
                metrics={
                    "checks_passed": sum(ok for _, ok, _ in verified.checks),
                    "checks": len(verified.checks),
                },
                threshold={"all_checks": True},
                detail="; ".join(failing) or "fetched, decrypted and verified",
            )
        )
    move_champion(settings, model=model, deployment_uri=deployment["uri"])
    return deployment, gates.results


@task(name="anchor-audit", cache_policy=NO_CACHE, persist_result=False)
def anchor_audit_task(ctx: RunContext) -> str | None:
    """Anchor the audit chain's head in the object-locked bucket (every run,
    blocked ones included: those are the entries an insider would hide).

    Returns:
        The anchor's URI, or None when the bucket could not be reached (the
        run's verdict stands; `secure-pipeline audit verify` reports the gap).
    """
    settings = ctx.settings
    try:
        with s3_service(settings) as endpoint:
            key = anchor_head(settings, s3_client(endpoint), run_id=ctx.run_id)
    except Exception as exc:  # noqa: BLE001 - an unreachable bucket must not hide the verdict
        ctx.audit.append("audit.anchor_failed", run_id=ctx.run_id, error=type(exc).__name__)
        return None
    return f"s3://{settings.storage.bucket}/{key}"


@task(name="deploy", cache_policy=NO_CACHE, persist_result=False)
def deploy_task(
    ctx: RunContext, *, model: TrainedModel, signed: SignedProvenance
) -> tuple[dict[str, Any], list[GateResult]]:
    """Publish the signed, encrypted model and make it the champion once verified.

    Args:
        ctx: The run's settings and identity.
        model: The trained model that passed evaluation.
        signed: Its signed provenance manifest.
    """
    return deploy(ctx, model=model, signed=signed)
