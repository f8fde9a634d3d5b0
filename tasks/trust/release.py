"""The layout of a release in the bucket, and how to verify one.

A release of model NAME version V lives under ``<prefix>/NAME/V/``, one object per
file of the signed release directory (`tasks.sign`), the model encrypted:

    model.skops.enc        the skops file, envelope-encrypted (context bound to
                           name, version and digest), stored with SSE
    model.sig              OpenSSF model signature of the directory
    provenance.dsse.json   SLSA provenance v1 (DSSE)
    sbom.cdx.json          CycloneDX SBOM of the training environment
    report.json            the gate results the release was signed on
    security-report.html   the same as a page people read (`tasks.report`); a
                           release made before the page existed has none
    release.dsse.json      written last: signed pointer to the exact object
                           versions above; a release without it is incomplete

Every object is written with If-None-Match, so a release is never overwritten;
`verify_release` also refuses an artifact whose current version is not the
released one, and any object of the release whose version history holds another
version or a delete marker (`tasks.trust.versions`: a release replaced in place, even
with a newly signed record, is named). After every
digest and signature of ours, it rebuilds the release directory and checks the
OpenSSF signature over it, exactly as a consumer's ``model_signing verify`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.common.errors import PipelineError
from tasks.common.files import sha256_bytes
from tasks.common.s3 import get_bytes
from tasks.trust import modelsig
from tasks.trust import provenance as slsa
from tasks.trust.envelope import EnvelopeError, decrypt, key_provider
from tasks.trust.modelio import load_model_bytes
from tasks.trust.signing import IN_TOTO_TYPE, RELEASE_TYPE, SignatureError, verify
from tasks.trust.versions import APPROVALS, CHAMPION_RECORD, check_release_versions

if TYPE_CHECKING:
    from tasks.common.settings import Settings

SCHEMA = "secure-pipeline/release/v2"
MODEL = "model.skops"
ARTIFACT = "model.skops.enc"
PROVENANCE = "provenance.dsse.json"
SBOM = "sbom.cdx.json"
REPORT = "report.json"
SECURITY_REPORT = "security-report.html"
SIGNATURE = modelsig.SIGNATURE
# stored as they are (with SSE)
PLAIN_FILES = (SIGNATURE, PROVENANCE, SBOM, REPORT, SECURITY_REPORT)
OPTIONAL_FILES = (SECURITY_REPORT,)  # absent from releases made before it existed
RELEASE = "release.dsse.json"
OBJECTS = (ARTIFACT, *PLAIN_FILES, RELEASE)  # every object of a release, the record last


class ReleaseError(PipelineError, ValueError):
    """A release is missing, incomplete, altered, or not ours."""


def release_prefix(prefix: str, name: str, version: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), name, version) if p)


def encryption_context(*, name: str, version: str, sha256: str) -> dict[str, str]:
    return {
        "model_name": name,
        "model_version": version,
        "model_sha256": sha256,
        "purpose": "secure-pipeline-model",
    }


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/.../V/[release.dsse.json]`` -> (bucket, release key)."""
    if not uri.startswith("s3://"):
        raise ReleaseError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ReleaseError(f"expected s3://BUCKET/KEY, got {uri}")
    if not key.endswith(RELEASE):
        key = key.rstrip("/") + "/" + RELEASE
    return bucket, key


def layout_ok(files: dict[str, Any], base: str) -> bool:
    """The signed record's plain files are this release's own: every required one,
    perhaps the optional ones, nothing else, each under the release's prefix `base`."""
    required = set(PLAIN_FILES) - set(OPTIONAL_FILES)
    return required <= set(files) <= set(PLAIN_FILES) and all(
        files[n]["key"] == f"{base}/{n}" for n in files
    )


def byproducts_ok(made: dict[str, str], stored: dict[str, str]) -> bool:
    """The SBOM, the gate report and (when either side has it) the security report
    page are stored with the digests the provenance names (`made`: name -> sha256 in
    the provenance; `stored`: name -> sha256 of the release's plain files). A page
    the provenance names but the release lacks, or the reverse, is refused."""
    names = {SBOM, REPORT} | ({SECURITY_REPORT} & (set(made) | set(stored)))
    return all(n in stored and made.get(n) == stored[n] for n in names)


@dataclass
class VerifiedRelease:
    uri: str
    release: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # the SLSA statement
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    @property
    def failure(self) -> str:
        """The first failed check as ``name: detail`` (what a refusal names)."""
        name, _, detail = next((c for c in self.checks if not c[1]), ("no check ran", False, ""))
        return f"{name}: {detail}"

    @property
    def model(self) -> dict[str, Any]:
        """What the provenance records about the model (name, version, files, params)."""
        return dict(slsa.internal(self.provenance).get("model", {})) if self.provenance else {}


def describe_absent(client: Any, *, bucket: str, key: str, version_id: str | None = None) -> str:
    """What the bucket says about an object that could not be read: deleted (a delete
    marker hides it), never stored, or its released version gone."""
    try:
        page = client.list_object_versions(Bucket=bucket, Prefix=key)
    except Exception as exc:  # noqa: BLE001 - the finding is what matters
        return f"it cannot be read and its versions cannot be listed ({type(exc).__name__})"
    versions = {v["VersionId"] for v in page.get("Versions", []) if v["Key"] == key}
    marker = next(
        (m for m in page.get("DeleteMarkers", []) if m["Key"] == key and m.get("IsLatest")), None
    )
    if marker is not None:
        kept = "is still stored" if version_id in versions else "is gone"
        return (
            f"it was deleted: a delete marker ({marker['LastModified']:%Y-%m-%d %H:%M} UTC) hides "
            f"it and the released version {kept}; find who deleted it, then remove the marker"
        )
    if not versions:
        return "no such object was ever stored there"
    if version_id is not None and version_id not in versions:
        return "the released version of it is gone"
    return "it exists but could not be read"


def describe_missing_release(client: Any, *, bucket: str, release_key: str) -> str:
    """Why a release record is missing: an interrupted deploy (objects without a record,
    never a release), a deleted record, or no release at all."""
    base = release_key.rsplit("/", 1)[0]
    found = describe_absent(client, bucket=bucket, key=release_key)
    if not found.startswith("no such object"):
        return f"the release record: {found}"
    try:
        page = client.list_object_versions(Bucket=bucket, Prefix=f"{base}/")
    except Exception as exc:  # noqa: BLE001
        return f"no release record, and the prefix cannot be listed ({type(exc).__name__})"
    present = sorted({v["Key"].rsplit("/", 1)[-1] for v in page.get("Versions", [])})
    if present:
        return (
            f"incomplete release: {', '.join(present)} without a release record (a deploy "
            "stopped before it finished); it was never released and nothing points at it"
        )
    return "no release there: check the model name and version"


def scan_releases(client: Any, *, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """Release prefixes that are incomplete (objects without a release record: a deploy
    that stopped; never released) and those whose release objects were hidden by a
    delete marker (an insider's move). Returns (incomplete, deleted)."""
    objects: dict[str, set[str]] = {}
    hidden: set[str] = set()
    root = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=root):
        for v in page.get("Versions", []):
            base, _, name = v["Key"].rpartition("/")
            if name == CHAMPION_RECORD or f"/{APPROVALS}/" in f"{base}/":
                continue  # the governance roles' records, not releases
            objects.setdefault(base, set()).add(name)
        for m in page.get("DeleteMarkers", []):
            if m.get("IsLatest"):
                hidden.add(m["Key"].rpartition("/")[0])
    # Only release directories (``.../NAME/VERSION``) can be incomplete; the champion
    # record and approvals (tasks.governance) sit beside them.
    incomplete = sorted(
        b for b, names in objects.items() if RELEASE not in names and b.rpartition("/")[2].isdigit()
    )
    return incomplete, sorted(hidden)


def verify_release(
    client: Any,
    *,
    bucket: str,
    release_key: str,
    public_key: Any,
    key_provider: Any,
    max_bytes: int,
    workdir: Path,
    expected: dict[str, str] | None = None,
    signer: str = "the pipeline's key",
) -> VerifiedRelease:
    """Fetch, check signatures and digests, decrypt and safely load a release.

    Args:
        public_key: The pipeline's public keys by id (`signing.trusted_keys`).
        workdir: An empty directory: the release directory is rebuilt here (the model
            decrypted) for the OpenSSF signature check; `fetch` keeps it.
        expected: The model name and version the caller reached this release by (a
            registry alias, a tag): the signed release must be that model's own.
        signer: Whose keys `public_key` holds, for the report (`tasks.trust.roots`).

    Returns the checks done; stops at the first that fails (later ones would
    read data that is no longer trustworthy).
    """
    result = VerifiedRelease(uri=f"s3://{bucket}/{release_key}")

    def step(name: str, ok: bool, detail: str = "") -> None:
        result.checks.append((name, ok, detail))
        if not ok:
            raise ReleaseError(f"{name}: {detail}")

    try:
        try:
            raw = get_bytes(client, bucket=bucket, key=release_key, max_bytes=1 << 20)
        except Exception:  # noqa: BLE001 - absent or unreadable: say what the bucket shows
            step(
                "release.present",
                False,
                describe_missing_release(client, bucket=bucket, release_key=release_key),
            )
        try:
            rel = verify(json.loads(raw), public_key=public_key, payload_type=RELEASE_TYPE)
        except SignatureError as exc:
            step("release.signature", False, f"{exc}; trusted here: {signer}")
        step("release.signature", True, f"signed by {signer}")
        result.release = rel
        step(
            "release.schema",
            rel.get("schema") == SCHEMA,
            f"a {SCHEMA} release"
            if rel.get("schema") == SCHEMA
            else f"release schema {rel.get('schema')!r} was made by an earlier version of the "
            "pipeline (no SLSA provenance, no OpenSSF signature): retrain to re-release it",
        )
        base = release_key.rsplit("/", 1)[0]
        art, files = rel["artifact"], rel["files"]
        names = [n for n in PLAIN_FILES if n in files]  # the signed record lists them
        own = art["key"] == f"{base}/{ARTIFACT}" and layout_ok(files, base)
        step("release.layout", own, "the release points at objects of its own prefix")
        if expected is not None:
            signed = {k: str(rel["model"][k]) for k in ("name", "version")}
            step(
                "release.binding",
                signed == expected,
                f"the release is {expected['name']} version {expected['version']}'s own"
                if signed == expected
                else f"the release is signed for {signed['name']} version {signed['version']}, "
                f"not {expected['name']} version {expected['version']}: the registry points at "
                "another release (an edited tag or alias)",
            )

        plain: dict[str, bytes] = {}
        for name in names:
            body = get_bytes(
                client,
                bucket=bucket,
                key=files[name]["key"],
                version_id=files[name]["version_id"],
                max_bytes=1 << 24,
            )
            if sha256_bytes(body) != files[name]["sha256"]:
                step("release.files", False, f"{name} does not match its digest in the release")
            plain[name] = body
        step("release.files", True, f"{', '.join(names)} match the release's digests")
        statement = slsa.check_statement(
            verify(json.loads(plain[PROVENANCE]), public_key=public_key, payload_type=IN_TOTO_TYPE)
        )
        result.provenance = statement
        step("provenance.signature", True, f"SLSA provenance v1 signed by {signer}")
        model = result.model
        subject = slsa.subject_digests(statement).get(MODEL)
        step(
            "provenance.subject",
            subject == rel["model"]["sha256"] == model.get("sha256")
            and model.get("version") == rel["model"]["version"],
            "the provenance's subject is the released model",
        )
        made = slsa.byproduct_digests(statement)
        step(
            "provenance.byproducts",
            byproducts_ok(made, {n: sha256_bytes(body) for n, body in plain.items()}),
            "the SBOM, the gate report (and its page) are the ones the provenance names",
        )

        try:
            head = client.head_object(Bucket=bucket, Key=art["key"])
        except Exception:  # noqa: BLE001 - say what the bucket shows instead
            found = describe_absent(
                client, bucket=bucket, key=art["key"], version_id=art["version_id"]
            )
            step("artifact.current_version", False, f"the model artifact: {found}")
        step(
            "artifact.current_version",
            head.get("VersionId") == art["version_id"],
            "the artifact's current version is the released one"
            if head.get("VersionId") == art["version_id"]
            else "the artifact was overwritten after release",
        )
        step(
            "release.versions",
            *check_release_versions(client, bucket=bucket, release_key=release_key, record=rel),
        )
        step(
            "artifact.sse",
            head.get("ServerSideEncryption") == art["sse"],
            f"stored with server-side encryption {head.get('ServerSideEncryption')}",
        )
        ciphertext = get_bytes(
            client, bucket=bucket, key=art["key"], version_id=art["version_id"], max_bytes=max_bytes
        )
        step(
            "artifact.digest",
            sha256_bytes(ciphertext) == art["ciphertext_sha256"],
            "ciphertext matches the digest in the release",
        )
        context = encryption_context(
            name=model["name"], version=model["version"], sha256=model["sha256"]
        )
        step(
            "artifact.context",
            rel["encryption_context"] == context,
            "encryption context is bound to this model's name, version and digest",
        )
        plaintext = decrypt(ciphertext, key_provider=key_provider, context=context)
        step("artifact.decrypt", True, "envelope decrypted with the expected context")
        load_model_bytes(plaintext, expected_sha256=model["sha256"])
        step(
            "model.load",
            True,
            "digest matches the signed provenance; loaded with the pinned type allow-list",
        )
        for name, body in {MODEL: plaintext, **plain}.items():
            (workdir / name).write_bytes(body)
        kid = modelsig.verify_directory(workdir, public_key)
        step("model.signature", True, f"OpenSSF model signature (model.sig) by key {kid[:16]}")
    except ReleaseError:
        pass
    except Exception as exc:  # noqa: BLE001 - anything unexpected is a failed verification
        known = (SignatureError, EnvelopeError, slsa.ProvenanceError, modelsig.ModelSignatureError)
        detail = str(exc) if isinstance(exc, known) else f"{type(exc).__name__} while verifying"
        result.checks.append(("release.integrity", False, detail))
    return result


def verify_with_settings(
    client: Any,
    settings: Settings,
    uri: str,
    *,
    workdir: Path,
    expected: dict[str, str] | None = None,
) -> VerifiedRelease:
    """`verify_release` of the release at `uri` with the keys and limits of `settings`
    (its trust root: the pinned keys, else the keyring; its decrypting key provider,
    its size cap)."""
    from tasks.trust.roots import trust_root

    bucket, key = parse_s3_uri(uri)
    root = trust_root(settings)  # pinned keys when [trust] signers lists them
    return verify_release(
        client,
        bucket=bucket,
        release_key=key,
        public_key=root.keys,
        signer=root.signer,
        key_provider=key_provider(settings, purpose="decrypt"),
        max_bytes=settings.dataset.max_bytes,
        workdir=workdir,
        expected=expected,
    )
