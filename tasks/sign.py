"""Sign stage: a provenance manifest that binds the model to everything that made it.

The manifest names the digests of the data, the suite, the reference profile,
the lock file and every model file, the hyperparameters and every gate result
so far, and is signed (DSSE, Ed25519). Deploy and `verify` refuse a model
whose manifest does not verify against the pipeline's own public key.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.checks.supply_chain import DEPENDENCIES, check_dependencies, sbom
from tasks.common.context import Dataset, RunContext, StageGates, stage_task
from tasks.common.files import sha256_file
from tasks.common.gates import GateResult, check, run_check
from tasks.common.settings import PROJECT_ROOT
from tasks.train import TrainedModel
from tasks.trust.signing import PROVENANCE_TYPE, Signer, load_public_key, verify

LOCK_FILE = PROJECT_ROOT / "requirements.lock"


@dataclass(frozen=True)
class SignedProvenance:
    payload: dict[str, Any]
    envelope: dict[str, Any]


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


def build_provenance(
    ctx: RunContext,
    *,
    dataset: Dataset,
    model: TrainedModel,
    suite_sha256: str,
    gates: list[GateResult],
) -> dict[str, Any]:
    ds = ctx.settings.dataset
    return {
        "schema": "secure-pipeline/provenance/v1",
        "created_at": datetime.now(UTC).isoformat(),
        "flow_run_id": ctx.run_id,
        "code": {"git_commit": git_commit(), "lock_file_sha256": sha256_file(LOCK_FILE)},
        "sbom": sbom(),  # every installed package, name==version
        "dataset": {
            "uri": dataset.uri,
            "sha256": dataset.sha256,
            "rows": dataset.rows,
            "integrity": dataset.integrity,
        },
        "suite": {"name": ds.suite.name, "sha256": suite_sha256},
        "reference_profile": {
            "name": ds.reference_profile.name,
            "sha256": sha256_file(ds.reference_profile),
        },
        "model": {
            "name": model.name,
            "version": model.version,
            "mlflow_run_id": model.mlflow_run_id,
            "sha256": model.sha256,
            "files": model.files,
            "params": model.params,
            "inputs": list(model.x_train.columns),
            "classes": [str(c) for c in model.pipeline.classes_],
            # A differentially private model's budget; None: not trained with DP.
            "dp_epsilon": model.params.get("dp_epsilon"),
        },
        "serving": serving_policy(gates),
        "gates": [g.as_report() for g in gates],
        "waivers": ctx.settings.active_waivers,
    }


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


def check_provenance(
    ctx: RunContext, envelope: dict[str, Any], payload: dict[str, Any]
) -> GateResult:
    """The statement verifies with the public key on disk and says what we signed."""
    public_key = load_public_key(ctx.settings.keys_dir)
    verified = verify(envelope, public_key=public_key, payload_type=PROVENANCE_TYPE)
    gates_ok = all(g["passed"] for g in payload["gates"])
    return check(
        "sign.provenance",
        ok=verified == payload and gates_ok,
        metrics={
            "signature_valid": verified == payload,
            "gates_recorded": len(payload["gates"]),
            "all_gates_passed": gates_ok,
        },
        threshold={"signature_valid": True, "all_gates_passed": True},
        detail="" if gates_ok else "a failed gate must never be signed",
    )


def sign(
    ctx: RunContext,
    *,
    dataset: Dataset,
    model: TrainedModel,
    suite_sha256: str,
    gates: list[GateResult],
) -> tuple[SignedProvenance, list[GateResult]]:
    """Sign the provenance manifest of a model that passed every gate.

    Args:
        ctx: The run's settings and identity.
        dataset: The ingested dataset.
        model: The trained, registered model.
        suite_sha256: Digest of the expectation suite that validated the data.
        gates: Every gate result of the earlier stages (all passed).

    Returns:
        The signed provenance, and this stage's gate results.

    Raises:
        GateFailed: the model file changed, the environment drifted from the lock, or
            the statement does not verify.
    """
    stage = StageGates(ctx)
    stage.enforce(
        run_check("sign.model_digest", check_model_digest, model),
        run_check(DEPENDENCIES, check_dependencies, LOCK_FILE),
    )
    payload = build_provenance(
        ctx, dataset=dataset, model=model, suite_sha256=suite_sha256, gates=gates + stage.results
    )
    envelope = Signer.local(ctx.settings.keys_dir).sign(payload, payload_type=PROVENANCE_TYPE)
    stage.enforce(run_check("sign.provenance", check_provenance, ctx, envelope, payload))
    return SignedProvenance(payload=payload, envelope=envelope), stage.results


# The Prefect task is the pure function itself, with the options every stage needs.
sign_task = stage_task("sign")(sign)
