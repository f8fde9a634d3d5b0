"""Sign stage: the release directory, its SLSA provenance and its OpenSSF signature.

The stage writes the directory a consumer will fetch, ``<run>/release/``:

    model.skops            the trained model (what was evaluated, byte for byte)
    sbom.cdx.json          CycloneDX SBOM of the runtime packages that trained it
    report.json            every gate result so far (ingest to sign)
    security-report.html   the same gates as a self-contained page people read
                           (`tasks.report`): verdicts, ROC, accuracy vs eps, ...
    provenance.dsse.json   SLSA provenance v1 (in-toto Statement, DSSE, P-256): the
                           model's digest, the flow, its parameters and run, the
                           config, data, suite, profile and lock digests, the
                           SBOM's, the report's and the page's digests, the waivers
    model.sig              OpenSSF model signature over all of the above

Gate ``sign.provenance`` re-verifies all of it before anything is deployed; deploy
and `verify` check it again on the deployed copy, before any model is loaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.checks.installed_files import compare_with_commit, scan_installed
from tasks.checks.supply_chain import (
    DEPENDENCIES,
    check_dependencies,
    cyclonedx_sbom,
    validate_sbom,
)
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.errors import PipelineError
from tasks.common.files import sha256_bytes, sha256_file, write_atomic
from tasks.common.gates import GateResult, check, failed, run_check, timed
from tasks.common.settings import PROJECT_ROOT
from tasks.report import page as security_page
from tasks.report.publish import run_page
from tasks.train import TrainedModel
from tasks.trust import modelsig
from tasks.trust import provenance as slsa
from tasks.trust.signing import IN_TOTO_TYPE, Signer, canonical_json, load_public_key, verify

LOCK_FILE = PROJECT_ROOT / "requirements.lock"  # the runtime set
DEV_LOCK_FILE = PROJECT_ROOT / "requirements-dev.lock"  # test and lint tools
PROJECT = "secure-ml-pipeline"
FLOW = "secure-training"
# The files of a release directory (and of its objects in the bucket).
MODEL_FILE = "model.skops"
SBOM_FILE = "sbom.cdx.json"
REPORT_FILE = "report.json"
SECURITY_REPORT_FILE = security_page.FILE  # "security-report.html"
PROVENANCE_FILE = "provenance.dsse.json"
SIGNATURE_FILE = modelsig.SIGNATURE


@dataclass(frozen=True)
class SignedProvenance:
    payload: dict[str, Any]  # the SLSA provenance statement
    envelope: dict[str, Any]  # its DSSE envelope
    directory: Path  # the signed release directory


def git_commit() -> str | None:
    """The code version, when the project runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - read-only, from PATH
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def check_environment(cache: Path | None = None) -> GateResult:
    """`sign.dependencies` on this environment: names and versions against the locks,
    every installed file against its RECORD (`cache`: the directory of the
    authenticated cache of verified files), the locks against the recorded commit."""
    return check_dependencies(
        LOCK_FILE,
        DEV_LOCK_FILE,
        files=scan_installed(cache=cache),
        lock=compare_with_commit(git_commit(), PROJECT_ROOT, [LOCK_FILE, DEV_LOCK_FILE]),
    )


def gate_report(ctx: RunContext, model: TrainedModel, gates: list[GateResult]) -> bytes:
    """``report.json``: the gate results the release was signed on."""
    body = {
        "schema": "secure-pipeline/gate-report/v1",
        "flow_run_id": ctx.run_id,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "gates": [g.as_report() for g in gates],
        "waivers": ctx.settings.active_waivers,
    }
    return (json.dumps(body, indent=2, sort_keys=True, default=str) + "\n").encode()


def security_report(ctx: RunContext, model: TrainedModel, gates: list[GateResult]) -> bytes:
    """``security-report.html``: the gate results the release was signed on, as a
    self-contained page (`tasks.report.page`). A page that cannot be drawn fails the
    stage closed at ``sign.provenance`` (a ValueError), never signs a release without it."""
    try:
        return run_page(ctx, gates, model).encode()
    except Exception as exc:  # noqa: BLE001 - named by type: a message may quote data
        what = type(exc).__name__
        raise ValueError(f"the security report page could not be drawn ({what})") from None


def build_provenance(
    ctx: RunContext,
    *,
    dataset: Dataset,
    model: TrainedModel,
    suite_sha256: str,
    gates: list[GateResult],
    byproducts: dict[str, bytes],
) -> dict[str, Any]:
    """The SLSA provenance statement of `model` (see `tasks.trust.provenance`)."""
    s, ds = ctx.settings, ctx.settings.dataset
    config = s.config_file
    commit = git_commit()
    dependencies = [
        slsa.resource("dataset", dataset.sha256, uri=dataset.uri),
        slsa.resource(f"suite:{ds.suite.name}", suite_sha256),
        slsa.resource(
            f"reference_profile:{ds.reference_profile.name}", sha256_file(ds.reference_profile)
        ),
        slsa.resource(LOCK_FILE.name, sha256_file(LOCK_FILE)),
        {"name": "code", **({"digest": {"gitCommit": commit}} if commit else {})},
    ]
    media = {
        SBOM_FILE: "application/vnd.cyclonedx+json",
        REPORT_FILE: "application/json",
        SECURITY_REPORT_FILE: "text/html",
    }
    return slsa.statement(
        subject={MODEL_FILE: model.sha256},
        external={
            "flow": FLOW,
            "parameters": {"config": config.name if config else None, "data": dataset.uri},
            "config": {
                "name": config.name if config else None,
                "sha256": sha256_file(config) if config else None,
            },
        },
        internal={
            "model": {
                "name": model.name,
                "version": model.version,
                "mlflow_run_id": model.mlflow_run_id,
                "sha256": model.sha256,
                "files": model.files,  # every file of the MLflow model directory
                "params": model.params,
                "inputs": list(model.x_train.columns),
                "classes": [str(c) for c in model.pipeline.classes_],
                # A differentially private model's budget; None: not trained with DP.
                "dp_epsilon": model.params.get("dp_epsilon"),
                # Its audited epsilon (evaluate.dp_audit: a 95% lower bound from one
                # canary run, never above the claim in a release); None: no audit.
                "dp_epsilon_audited": next(
                    (
                        g.metrics.get("epsilon_audited")
                        for g in gates
                        if g.name == "evaluate.dp_audit"
                    ),
                    None,
                ),
            },
            "dataset": {"rows": dataset.rows, "integrity": dataset.integrity},
            "serving": serving_policy(gates),
            "gates": [{"name": g.name, "passed": g.passed} for g in gates],
            "waivers": s.active_waivers,
        },
        dependencies=dependencies,
        invocation_id=ctx.run_id,
        started=ctx.started_at.isoformat(),
        finished=datetime.now(UTC).isoformat(),
        builder_version={d: _version(d) for d in (PROJECT, "prefect", "mlflow", "scikit-learn")},
        byproducts=[
            slsa.resource(name, sha256_bytes(body), mediaType=media[name])
            for name, body in byproducts.items()
        ],
    )


def serving_policy(gates: list[GateResult]) -> dict[str, Any]:
    """What the model's server should return, as the evaluate stage recommended it
    (``evaluate.extraction_risk``): "labels" only, or "probabilities" too."""
    for g in gates:
        if g.name == "evaluate.extraction_risk" and "recommended_output" in g.metrics:
            return {
                "output": g.metrics["recommended_output"],
                "why": g.metrics.get("output_reason"),
            }
    return {"output": "labels", "why": "no extraction measurement: the safe default"}


def check_model_digest(model: TrainedModel) -> GateResult:
    """`sign.model_digest`: the model file about to be signed is the one that was trained."""
    measured = sha256_file(model.skops_path)
    ok = measured == model.sha256
    return check(
        "sign.model_digest",
        ok=ok,
        metrics={"sha256": measured},
        threshold={"sha256": model.sha256},
        detail="the model file is the trained one"
        if ok
        else "the model file changed between training and signing; "
        "treat the state directory as compromised",
    )


def check_provenance(ctx: RunContext, signed: SignedProvenance, model: TrainedModel) -> GateResult:
    """The release directory verifies as a consumer will check it: the provenance
    with the public key on disk, its subject is the trained model, every gate
    passed, the SBOM is valid CycloneDX, and the OpenSSF signature covers every file."""
    public_key = load_public_key(ctx.settings.keys_dir)
    verified = verify(signed.envelope, public_key=public_key, payload_type=IN_TOTO_TYPE)
    gates = slsa.internal(signed.payload)["gates"]
    gates_ok = bool(gates) and all(g["passed"] for g in gates)
    subject_ok = slsa.subject_digests(verified).get(MODEL_FILE) == model.sha256
    try:
        validate_sbom((signed.directory / SBOM_FILE).read_bytes())
        sbom_ok = True
    except ValueError:
        sbom_ok = False
    try:
        modelsig.verify_directory(signed.directory, {"active": public_key})
        sig_ok = True
    except modelsig.ModelSignatureError:
        sig_ok = False
    metrics = {
        "signature_valid": verified == signed.payload,
        "subject_is_model": subject_ok,
        "gates_recorded": len(gates),
        "all_gates_passed": gates_ok,
        "sbom_valid": sbom_ok,
        "model_signature_valid": sig_ok,
    }
    ok = all(v for k, v in metrics.items() if k != "gates_recorded")
    return check(
        "sign.provenance",
        ok=ok,
        metrics=metrics,
        threshold={k: True for k in metrics if k != "gates_recorded"},
        detail="provenance, SBOM and model signature verify"
        if ok
        else "a failed gate must never be signed"
        if not gates_ok
        else "the signed release directory does not verify: treat the state directory "
        "as compromised",
    )


def write_release(
    ctx: RunContext,
    *,
    dataset: Dataset,
    model: TrainedModel,
    suite_sha256: str,
    gates: list[GateResult],
) -> SignedProvenance:
    """Write and sign ``<run>/release/`` (see the module docstring); the model file
    is read once and checked against the trained digest before it is copied."""
    out = ctx.run_dir / "release"
    shutil.rmtree(out, ignore_errors=True)  # a retried stage never signs stale files
    out.mkdir(parents=True, mode=0o700)
    body = model.skops_path.read_bytes()
    if sha256_bytes(body) != model.sha256:
        raise slsa.ProvenanceError("the model file changed after training")
    write_atomic(out / MODEL_FILE, body)
    byproducts = {
        SBOM_FILE: cyclonedx_sbom(LOCK_FILE, root_name=PROJECT, root_version=_version(PROJECT)),
        REPORT_FILE: gate_report(ctx, model, gates),
        SECURITY_REPORT_FILE: security_report(ctx, model, gates),
    }
    for name, data in byproducts.items():
        write_atomic(out / name, data)
    payload = build_provenance(
        ctx,
        dataset=dataset,
        model=model,
        suite_sha256=suite_sha256,
        gates=gates,
        byproducts=byproducts,
    )
    envelope = Signer.local(ctx.settings.keys_dir).sign(payload, payload_type=IN_TOTO_TYPE)
    write_atomic(out / PROVENANCE_FILE, canonical_json(envelope))
    modelsig.sign_directory(out, ctx.settings.keys_dir)  # last: it covers every file
    return SignedProvenance(payload=payload, envelope=envelope, directory=out)


def sign(
    ctx: RunContext,
    *,
    dataset: Dataset,
    model: TrainedModel,
    suite_sha256: str,
    gates: list[GateResult],
) -> tuple[SignedProvenance, list[GateResult]]:
    """Sign the release of a model that passed every gate.

    Args:
        ctx: The run's settings and identity.
        dataset: The ingested dataset.
        model: The trained, registered model.
        suite_sha256: Digest of the expectation suite that validated the data.
        gates: Every gate result of the earlier stages (all passed).

    Returns:
        The signed release directory and provenance, and this stage's gate results.

    Raises:
        GateFailed: the model file changed, the environment drifted from the lock, or
            the release does not verify.
    """
    stage = StageGates(ctx)
    stage.enforce(
        run_check("sign.model_digest", check_model_digest, model),
        run_check(DEPENDENCIES, check_environment, ctx.settings.state_dir / "cache"),
    )
    try:
        with timed("sign.provenance"):  # writing the release; checked below, same gate
            signed = write_release(
                ctx,
                dataset=dataset,
                model=model,
                suite_sha256=suite_sha256,
                gates=gates + stage.results,
            )
    except (PipelineError, OSError, ValueError) as exc:  # fails closed at this stage's gate
        stage.enforce(
            failed(
                "sign.provenance",
                metrics={"error": type(exc).__name__},
                threshold={"signed": True},
                detail=f"the release could not be signed: {str(exc)[:300]}",
            )
        )
        raise  # not reached: enforce raised
    stage.enforce(run_check("sign.provenance", check_provenance, ctx, signed, model))
    return signed, stage.results


# The Prefect task is the pure function itself, with the options every stage needs.
sign_task = stage_task("sign")(sign)
