"""A real run's security report, on the kept-up stack's first deployed run (no run of
its own): the page is in the release directory, named by digest in the SLSA
provenance and covered by the OpenSSF signature (the public `model_signing` verifies
a fetched release and refuses an edited page); the MLflow run keeps a copy and the
Prefect run links it; chromium (network off) shows every gate the release was signed
on. The screenshot goes to ``.secure-pipeline/test-artifacts/security-report.png``."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.browser import artifact_path, dump_dom, screenshot, visible_text
from tests.e2e.conftest import Pipeline
from tests.e2e.test_provenance import CHAMPION, _openssf_verify

pytestmark = pytest.mark.e2e
PAGE = "security-report.html"


def test_a_released_run_ships_its_signed_security_report(kept_up: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "release"
    fetched = kept_up.run("fetch", CHAMPION, "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    page = out / PAGE
    html = page.read_text(encoding="utf-8")
    print(f"\nsecurity report of a real run: {len(html.encode())} bytes")
    assert len(html.encode()) < 200_000
    assert "<script" not in html.lower() and not re.search(r"https?:|url\(|//", html)

    # Named by digest in the provenance, covered by the OpenSSF signature.
    envelope = json.loads((out / "provenance.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    made = {
        b["name"]: b["digest"]["sha256"] for b in statement["predicate"]["runDetails"]["byproducts"]
    }
    assert made[PAGE] == hashlib.sha256(page.read_bytes()).hexdigest()
    public_key = kept_up.state_dir / "keys" / "signing.pub"
    ok = _openssf_verify(out, public_key)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    (edited / PAGE).write_text(html.replace("PASSED", "PASSES"), encoding="utf-8")
    assert _openssf_verify(edited, public_key).returncode != 0

    # Every gate the release was signed on is on the page, in a browser with no network.
    gates = json.loads((out / "report.json").read_text())["gates"]
    text = visible_text(dump_dom(page.as_uri()))
    assert "PASSED" in text and "Membership inference" in text
    for gate in gates:
        assert gate["name"] in text, gate["name"]
    shot = screenshot(page.as_uri(), artifact_path("security-report.png"), width=1280, height=2600)
    assert shot.stat().st_size > 10_000

    # The MLflow run keeps a copy; the Prefect run links the run directory's page.
    flow_run_id = json.loads((out / "report.json").read_text())["flow_run_id"]
    from tasks.common.tracking import mlflow_client

    client = mlflow_client(kept_up.settings())
    run_id = statement["predicate"]["buildDefinition"]["internalParameters"]["model"][
        "mlflow_run_id"
    ]
    released = {a.path for a in client.list_artifacts(run_id, "release")}
    assert f"release/{PAGE}" in released
    artifacts = kept_up.prefect_api(
        "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    )
    (link,) = [a for a in artifacts if a["key"] == "security-report"]
    assert f"runs/{flow_run_id}/release/{PAGE}" in json.dumps(link["data"])


def test_a_blocked_run_leaves_its_unsigned_page(kept_up: Pipeline, tmp_path: Path) -> None:
    """Blocked at validation (an undeclared column): no release, but the run's page,
    in the run directory, in its MLflow run and linked from its Prefect run."""
    import pandas as pd

    from tests.conftest import BUNDLED_CSV

    frame = pd.read_csv(BUNDLED_CSV)
    frame["undeclared_note"] = "x"
    data = tmp_path / "extra.csv"
    frame.to_csv(data, index=False)
    report_path = tmp_path / "r.json"
    proc = kept_up.run("run", "--quiet", "--data", str(data), "--report", str(report_path))
    assert proc.returncode == 1, proc.stderr
    report = json.loads(report_path.read_text())
    run_dir = kept_up.state_dir / "runs" / report["flow_run_id"]
    assert not (run_dir / "release").exists()
    page = run_dir / PAGE
    text = visible_text(dump_dom(page.as_uri()))
    assert "BLOCKED" in text and "no: the run stopped before the sign stage" in text
    assert report["blocked_by"] in text and "PASSED" not in text

    from tasks.common.tracking import mlflow_client

    client = mlflow_client(kept_up.settings())
    settings = kept_up.settings()
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment is not None
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{report['flow_run_id']}'",
    )
    assert PAGE in {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts = kept_up.prefect_api(
        "POST",
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [report["flow_run_id"]]}}},
    )
    (link,) = [a for a in artifacts if a["key"] == "security-report"]
    assert f"runs/{report['flow_run_id']}/{PAGE}" in json.dumps(link["data"])
