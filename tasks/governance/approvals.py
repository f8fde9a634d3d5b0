"""Signed approvals of a release, and the release facts they are bound to.

An approval is a DSSE statement (payload type `APPROVAL_TYPE`) signed by an
approver's key, stored at
``<prefix>/<NAME>/approvals/<release-sha256>/<key-id>.dsse.json`` (written once,
If-None-Match, by the store's approver identity). It names the model and version,
the release record's sha256 (the digest of the signed ``release.dsse.json`` as
stored) and the waivers the signed provenance carries, which the approver was
shown: an approval of one release never counts for another, nor for the same
release with other waivers.

`collect` reads every approval on file for a release and keeps only those that
hold: signed by a key listed in ``governance.approvers``, stored under that key's own
id, bound to this release and its waivers, and not by the trainer (a key pinned by
``[trust] signers``, else of the pipeline's keyring, or the one that signed the
release: `roles.trainer_keys`). Each key counts once.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.common.files import sha256_bytes
from tasks.common.s3 import ObjectExists, get_bytes, put_immutable
from tasks.common.settings import ConfigError, Settings
from tasks.governance import roles
from tasks.trust import release as rel
from tasks.trust.signing import PublicKey, SignatureError, Signer, canonical_json, verify

APPROVAL_TYPE = "application/vnd.secure-pipeline.approval+json"
SCHEMA = "secure-pipeline/approval/v1"
MAX_BYTES = 1 << 16


@dataclass
class Release:
    """A verified release and what an approval binds: its record's digest and waivers."""

    name: str
    version: str
    uri: str
    sha256: str  # of release.dsse.json as stored
    version_id: str  # of release.dsse.json
    waivers: list[dict[str, Any]]
    signers: set[str]  # key ids that signed the release record
    verified: rel.VerifiedRelease


@dataclass
class Approval:
    key_id: str
    key: str  # S3 key
    version_id: str
    sha256: str
    reason: str
    approved_at: str

    def ref(self) -> dict[str, str]:
        """How the champion record names it."""
        return {
            "key_id": self.key_id,
            "key": self.key,
            "version_id": self.version_id,
            "sha256": self.sha256,
        }


@dataclass
class Found:
    """The approvals on file for one release: those that count, and why others do not."""

    valid: list[Approval] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def key_ids(self) -> list[str]:
        return sorted({a.key_id for a in self.valid})


def model_root(settings: Settings, name: str) -> str:
    """``<prefix>/<NAME>``: where a model's releases, approvals and champion record live."""
    return "/".join(p for p in (settings.storage.prefix.strip("/"), name) if p)


def approvals_prefix(settings: Settings, name: str, release_sha256: str) -> str:
    return f"{model_root(settings, name)}/approvals/{release_sha256}/"


def parse_ref(settings: Settings, ref: str) -> tuple[str, str]:
    """``models:/NAME/VERSION`` (or ``NAME/VERSION``) -> (name, version). The release
    is looked up where the bucket's layout puts it, never where a registry tag points.

    Raises:
        ConfigError: not a reference to one version.
    """
    body = ref.removeprefix("models:/")
    name, _, version = body.partition("/")
    if not name or not version.isdigit() or "@" in body:
        raise ConfigError(f"{ref}: expected models:/NAME/VERSION (one released version)")
    return name, version


def inspect_release(client: Any, settings: Settings, name: str, version: str) -> Release:
    """Verify the release of `name` `version` as `verify` does and return its facts.

    Raises:
        ConfigError: there is no release there (nothing to approve or promote).
        rel.ReleaseError: it exists but does not verify (the failed check named).
    """
    import tempfile

    bucket = settings.storage.bucket
    key = f"{rel.release_prefix(settings.storage.prefix, name, version)}/{rel.RELEASE}"
    uri = f"s3://{bucket}/{key}"
    try:
        client.head_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - say what the bucket shows
        why = rel.describe_missing_release(client, bucket=bucket, release_key=key)
        raise ConfigError(f"models:/{name}/{version}: no release to act on ({why})") from None
    with tempfile.TemporaryDirectory(prefix="govern-") as tmp:
        verified = rel.verify_with_settings(
            client, settings, uri, workdir=Path(tmp), expected={"name": name, "version": version}
        )
    if not verified.ok:
        raise rel.ReleaseError(f"{uri} does not verify ({verified.failure})")
    return facts(client, verified)


def facts(client: Any, verified: rel.VerifiedRelease) -> Release:
    """What an approval binds of a release `verify_release` has just passed: the
    digest of its record as stored (read back and compared with what was verified),
    its waivers and its signers.

    Raises:
        rel.ReleaseError: the record changed between the two reads.
    """
    from tasks.trust import provenance

    bucket, key = rel.parse_s3_uri(verified.uri)
    head = client.head_object(Bucket=bucket, Key=key)
    raw = get_bytes(client, bucket=bucket, key=key, version_id=head.get("VersionId"))
    envelope = json.loads(raw)
    signed = json.loads(base64.b64decode(envelope["payload"]))
    if signed != verified.release:  # the bytes digested are the ones verified
        raise rel.ReleaseError(f"{verified.uri} changed while it was verified")
    return Release(
        name=str(signed["model"]["name"]),
        version=str(signed["model"]["version"]),
        uri=verified.uri,
        sha256=sha256_bytes(raw),
        version_id=str(head.get("VersionId") or "null"),
        waivers=list(provenance.internal(verified.provenance).get("waivers", [])),
        signers={str(s.get("keyid")) for s in envelope.get("signatures", [])},
        verified=verified,
    )


def statement(release: Release, *, approver: str, reason: str) -> dict[str, Any]:
    """The approval's payload: what exactly the approver said yes to."""
    return {
        "schema": SCHEMA,
        "model": {"name": release.name, "version": release.version},
        "release": {"uri": release.uri, "sha256": release.sha256},
        "waivers": release.waivers,
        "approver": approver,
        "reason": reason,
        "approved_at": datetime.now(UTC).isoformat(),
    }


def write(client: Any, settings: Settings, release: Release, signer: Signer, reason: str) -> str:
    """Sign and store an approval; returns its S3 key.

    Written once (If-None-Match). A file already under this key's name that is not
    its valid approval of this release (a copy or an edit left by someone with the
    approver identity) would lock the approver out: it is replaced, conditionally on
    being the file just checked, and stays readable as an older version.

    Raises:
        ObjectExists: this key has already approved this release.
    """
    envelope = signer.sign(
        statement(release, approver=signer.key_id, reason=reason), payload_type=APPROVAL_TYPE
    )
    key = approvals_prefix(settings, release.name, release.sha256) + f"{signer.key_id}.dsse.json"
    body, bucket = canonical_json(envelope), settings.storage.bucket
    try:
        put_immutable(
            client,
            bucket=bucket,
            key=key,
            body=body,
            sse=settings.sse,
            kms_key_id=settings.storage.kms_key_id,
        )
        return key
    except ObjectExists:
        head = client.head_object(Bucket=bucket, Key=key)
        raw = get_bytes(client, bucket=bucket, key=key, version_id=head.get("VersionId"))
        try:
            check(
                raw,
                stored_as=key.rsplit("/", 1)[-1],
                release=release,
                approvers={signer.key_id: signer.public_key},
                trainer=set(),
            )
        except SignatureError:
            pass  # not a valid approval by this key: replace it below
        else:
            raise
    kms = settings.storage.kms_key_id
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ServerSideEncryption=settings.sse,
        IfMatch=head["ETag"],
        **({"SSEKMSKeyId": kms} if kms else {}),
    )
    return key


def check(
    raw: bytes,
    *,
    stored_as: str,
    release: Release,
    approvers: dict[str, PublicKey],
    trainer: set[str],
) -> tuple[str, dict[str, Any]]:
    """Verify one approval's bytes for `release`; returns (key id, payload).

    Raises:
        SignatureError: why it does not count (the reason names the key).
    """
    try:
        envelope = json.loads(raw)
        kids = [str(s.get("keyid")) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureError(f"{stored_as}: not a signed approval") from None
    kid = kids[0] if len(kids) == 1 else ""
    who = roles.short(kid) if kid else "?"
    if kid in trainer or kid in release.signers:
        raise SignatureError(f"key {who}: self-approval (the trainer's key signed the release)")
    if kid not in approvers:
        raise SignatureError(f"key {who}: not listed in governance.approvers")
    try:
        payload = verify(envelope, public_key=approvers[kid], payload_type=APPROVAL_TYPE)
    except SignatureError as exc:
        raise SignatureError(f"key {who} ({stored_as}): {exc}") from None
    if stored_as != f"{kid}.dsse.json":
        raise SignatureError(f"key {who}: stored under another key's name ({stored_as})")
    if payload.get("schema") != SCHEMA or payload.get("approver") != kid:
        raise SignatureError(f"key {who}: not an approval of this schema by this key")
    bound = payload.get("release", {}).get("sha256") == release.sha256 and payload.get("model") == {
        "name": release.name,
        "version": release.version,
    }
    if not bound:
        raise SignatureError(f"key {who}: the approval is for another release")
    if payload.get("waivers") != release.waivers:
        raise SignatureError(f"key {who}: approved other waivers than the release carries")
    return kid, payload


def collect(client: Any, settings: Settings, release: Release) -> Found:
    """Every approval on file for `release`, sorted into those that count and not."""
    bucket, prefix = (
        settings.storage.bucket,
        approvals_prefix(settings, release.name, release.sha256),
    )
    listed = roles.approvers(settings)
    trainer = set(roles.trainer_keys(settings))
    found = Found()
    seen: set[str] = set()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            name = key.rsplit("/", 1)[-1]
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                vid = str(head.get("VersionId") or "null")
                raw = get_bytes(client, bucket=bucket, key=key, version_id=vid, max_bytes=MAX_BYTES)
                kid, payload = check(
                    raw, stored_as=name, release=release, approvers=listed, trainer=trainer
                )
            except SignatureError as exc:
                found.refused.append(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - unreadable never counts
                found.refused.append(f"{name}: cannot be read ({type(exc).__name__})")
                continue
            if kid in seen:
                found.refused.append(f"key {roles.short(kid)}: already counted once")
                continue
            seen.add(kid)
            found.valid.append(
                Approval(
                    kid,
                    key,
                    vid,
                    sha256_bytes(raw),
                    str(payload.get("reason", "")),
                    str(payload.get("approved_at", "")),
                )
            )
    return found


def recheck(client: Any, settings: Settings, release: Release, refs: list[dict[str, str]]) -> Found:
    """The approvals a champion record names, each re-read at its stored version and
    verified again (a record cannot cite an approval that does not hold)."""
    listed = roles.approvers(settings)
    trainer = set(roles.trainer_keys(settings))
    found = Found()
    for ref in refs:
        try:
            raw = get_bytes(
                client,
                bucket=settings.storage.bucket,
                key=ref["key"],
                version_id=ref["version_id"],
                max_bytes=MAX_BYTES,
            )
            if sha256_bytes(raw) != ref["sha256"]:
                raise SignatureError(f"{ref['key']}: differs from the approval the record names")
            if not ref["key"].startswith(approvals_prefix(settings, release.name, release.sha256)):
                raise SignatureError(f"{ref['key']}: not an approval of this release")
            kid, payload = check(
                raw,
                stored_as=ref["key"].rsplit("/", 1)[-1],
                release=release,
                approvers=listed,
                trainer=trainer,
            )
        except SignatureError as exc:
            found.refused.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001
            found.refused.append(f"{ref.get('key')}: cannot be read ({type(exc).__name__})")
            continue
        if kid not in {a.key_id for a in found.valid}:
            found.valid.append(
                Approval(
                    kid,
                    ref["key"],
                    ref["version_id"],
                    ref["sha256"],
                    str(payload.get("reason", "")),
                    str(payload.get("approved_at", "")),
                )
            )
    return found


def needed(settings: Settings, release: Release) -> int:
    """Approvals this release needs: ``required_approvals``, and at least one (by a key
    other than the trainer's) when it carries a waiver: a waiver is never self-granted."""
    n = settings.governance.required_approvals
    return max(n, 1) if release.waivers else n
