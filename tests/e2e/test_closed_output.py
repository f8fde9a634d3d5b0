"""`secure-pipeline run 2>&1 | head -1`: the reader goes away after the first stage
line. The run's work never depends on its terminal, so it still deploys and exits 0;
a closed pipe is never taken for a gate's failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import CLI, Pipeline


def test_a_run_whose_output_pipe_closes_early_still_deploys(
    kept_up: Pipeline, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen(  # the terminal lines go to stderr: both into one pipe
        [CLI, "run", "--report", str(report)],
        env=kept_up.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # `head -1` exits: every later line hits EPIPE
    assert proc.wait(timeout=300) == 0
    assert first.startswith(b"  ingest")
    outcome = json.loads(report.read_text())
    assert outcome["status"] == "deployed", outcome.get("error")
    assert "BrokenPipe" not in json.dumps(outcome)
