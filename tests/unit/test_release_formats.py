"""The release's formats, checked with the libraries that define them: the SLSA
statement (in-toto attestation's message types), the DSSE envelope signed with the
pipeline's P-256 key, and the OpenSSF model signature of the release directory."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tasks.trust import keys, modelsig, provenance, signing

DIGEST = "ab" * 32


def _statement(**changes: object) -> dict:
    fields: dict = {
        "subject": {"model.skops": DIGEST},
        "external": {"flow": "secure-training", "parameters": {"config": "c.toml"}},
        "internal": {"model": {"name": "m", "max_iter": 1000}, "gates": [], "waivers": []},
        "dependencies": [provenance.resource("dataset", "cd" * 32, uri="file:///d.csv")],
        "invocation_id": "run-1",
        "started": "2026-12-01T10:00:00+00:00",
        "finished": "2026-12-01T10:00:02+00:00",
        "builder_version": {"secure-ml-pipeline": "0.1.0"},
        "byproducts": [provenance.resource("sbom.cdx.json", "ef" * 32)],
    }
    fields.update(changes)
    return provenance.statement(**fields)


def test_the_statement_is_slsa_v1_and_keeps_its_numbers() -> None:
    body = _statement()
    assert body["_type"] == "https://in-toto.io/Statement/v1"
    assert body["predicateType"] == "https://slsa.dev/provenance/v1"
    assert provenance.subject_digests(body) == {"model.skops": DIGEST}
    assert provenance.byproduct_digests(body) == {"sbom.cdx.json": "ef" * 32}
    assert provenance.internal(body)["model"]["max_iter"] == 1000  # an int, not 1000.0
    assert provenance.check_statement(json.loads(json.dumps(body))) == body


@pytest.mark.parametrize(
    "edit",
    [
        lambda b: b["predicate"]["buildDefinition"].update(extra=1),  # not an SLSA field
        lambda b: b.update(predicateType="https://slsa.dev/provenance/v0.2"),
        lambda b: b.update(subject=[]),
        lambda b: b["predicate"]["runDetails"]["metadata"].update(startedOn="yesterday"),
    ],
)
def test_a_statement_off_the_spec_is_refused(edit) -> None:  # type: ignore[no-untyped-def]
    body = _statement()
    edit(body)
    with pytest.raises(provenance.ProvenanceError):
        provenance.check_statement(body)


def test_new_keys_are_p256_and_sign_dsse_any_verifier_checks(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes, serialization

    kd = tmp_path / "keys"
    keys.create(kd)
    signer = signing.Signer.local(kd)
    assert isinstance(signer.public_key, ec.EllipticCurvePublicKey)
    assert signer.public_key.curve.name == "secp256r1"
    envelope = signer.sign(_statement(), payload_type=signing.IN_TOTO_TYPE)
    # DSSE by the spec, with nothing of ours: PAE over type and body, ECDSA SHA-256.
    body = base64.b64decode(envelope["payload"])
    pae = b"DSSEv1 %d %s %d %s" % (
        len(signing.IN_TOTO_TYPE),
        signing.IN_TOTO_TYPE.encode(),
        len(body),
        body,
    )
    public = serialization.load_pem_public_key((kd / keys.PUBLIC_KEY).read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        base64.b64decode(envelope["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256())
    )
    assert envelope["signatures"][0]["keyid"] == signer.key_id
    verified = signing.verify(
        envelope, public_key=signing.trusted_keys(kd), payload_type=signing.IN_TOTO_TYPE
    )
    assert verified == _statement() | {"predicate": verified["predicate"]}


def test_the_model_signature_covers_every_file_and_only_our_keys(tmp_path: Path) -> None:
    kd = tmp_path / "keys"
    keys.create(kd)
    release = tmp_path / "release"
    release.mkdir()
    (release / "model.skops").write_bytes(b"model bytes" * 100)
    (release / "report.json").write_text("{}")
    modelsig.sign_directory(release, kd)
    trusted = signing.trusted_keys(kd)
    assert modelsig.verify_directory(release, trusted) == keys.load_keyring(kd)["signing"]["active"]

    (release / "report.json").write_text("{ }")
    with pytest.raises(modelsig.ModelSignatureError, match="mismatch"):
        modelsig.verify_directory(release, trusted)
    (release / "report.json").write_text("{}")
    (release / "added.txt").write_text("x")
    with pytest.raises(modelsig.ModelSignatureError, match="Extra files"):
        modelsig.verify_directory(release, trusted)
    (release / "added.txt").unlink()

    other = tmp_path / "other"
    keys.create(other)  # a key the pipeline never held
    with pytest.raises(modelsig.ModelSignatureError):
        modelsig.verify_directory(release, signing.trusted_keys(other))
    keys.rotate(kd, "signing")  # after a rotation, the retired key still verifies
    assert modelsig.verify_directory(release, signing.trusted_keys(kd))
