"""SLSA provenance v1 of a release, as an in-toto Statement.

The statement's subject is the model file and its sha256; the build definition names
the flow, its parameters, the config's digest and everything the build consumed
(dataset, expectation suite, reference profile, lock file, code commit); the run
details name the Prefect flow run and the files the build produced beside the model
(the CycloneDX SBOM and the gate report, by digest). The pipeline signs it as a DSSE
envelope (payload type ``application/vnd.in-toto+json``, see `tasks.trust.signing`),
so any in-toto or SLSA verifier reads it with the pipeline's public key.

The shape is checked with the in-toto attestation library's own Statement and SLSA
Provenance v1 message types: a misspelt field is an error, not a silent extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

from tasks.common.errors import PipelineError

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# URIs that name this project's build (no host: they identify, they are not fetched).
# FORK: a fork that changes what a build means (stages, gates) bumps the version.
BUILD_TYPE = "urn:secure-ml-pipeline:build-type:prefect-training:v1"
BUILDER_ID = "urn:secure-ml-pipeline:builder:prefect"


class ProvenanceError(PipelineError, ValueError):
    """A provenance statement is malformed or does not describe the release."""


def resource(name: str, sha256: str | None = None, **fields: Any) -> dict[str, Any]:
    """An in-toto ResourceDescriptor: a name, a sha256 digest and optional fields."""
    out: dict[str, Any] = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
    if sha256:
        out["digest"] = {"sha256": sha256}
    return out


def statement(
    *,
    subject: Mapping[str, str],
    external: dict[str, Any],
    internal: dict[str, Any],
    dependencies: list[dict[str, Any]],
    invocation_id: str,
    started: str,
    finished: str,
    builder_version: dict[str, str],
    byproducts: list[dict[str, Any]],
) -> dict[str, Any]:
    """The statement as JSON, after the library checked its shape.

    Args:
        subject: File name -> sha256 of each released model file.
        external: What the user chose (flow, parameters, config digest).
        internal: What the pipeline set (model settings, waivers, serving policy).
        dependencies: Resource descriptors of every input (`resource`).
        invocation_id: The Prefect flow run id.
        started, finished: RFC 3339 times of the build.
        builder_version: Versions of the builder's parts.
        byproducts: Files produced beside the model (SBOM, gate report).
    """
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": internal,
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": builder_version},
            "metadata": {
                "invocationId": invocation_id,
                "startedOn": started,
                "finishedOn": finished,
            },
            "byproducts": byproducts,
        },
    }
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": digest}} for name, digest in sorted(subject.items())
        ],
        "predicateType": SLSA_PROVENANCE,
        "predicate": predicate,
    }
    # The JSON as written (protobuf's Struct would turn every integer into a float).
    return check_statement(body)


def check_statement(body: Mapping[str, Any]) -> dict[str, Any]:
    """Parse a signed statement back with the library; return it as a dict.

    Raises:
        ProvenanceError: not an in-toto Statement v1 carrying SLSA provenance v1.
    """
    if body.get("_type") != STATEMENT_TYPE or body.get("predicateType") != SLSA_PROVENANCE:
        raise ProvenanceError("not an in-toto Statement of SLSA provenance v1")
    try:
        parsed = json_format.ParseDict(dict(body), Statement([], "", {}).pb)
        Statement.copy_from_pb(parsed).validate()
        for s in parsed.subject:
            ResourceDescriptor.copy_from_pb(s).validate()
        json_format.ParseDict(dict(body["predicate"]), provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, TypeError, KeyError) as exc:
        raise ProvenanceError(f"malformed provenance statement: {exc}") from None
    return dict(body)


def subject_digests(body: Mapping[str, Any]) -> dict[str, str]:
    """File name -> sha256 of every subject."""
    return {s["name"]: s["digest"]["sha256"] for s in body["subject"]}


def byproduct_digests(body: Mapping[str, Any]) -> dict[str, str]:
    """File name -> sha256 of every byproduct (SBOM, gate report)."""
    return {
        b["name"]: b["digest"]["sha256"]
        for b in body["predicate"]["runDetails"].get("byproducts", [])
        if "digest" in b
    }


def internal(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the pipeline recorded about the model, its waivers and its gates."""
    out: dict[str, Any] = body["predicate"]["buildDefinition"]["internalParameters"]
    return out
