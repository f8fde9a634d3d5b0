"""The run metrics: the textfile parses with Prometheus's own parser and carries every
gate, drift column and status; the last success survives failed runs; a gateway that
is down, slow, erroring or misconfigured never fails the run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks.common.report import RunReport
from tasks.common.settings import Settings
from tasks.monitoring.metrics import METRIC_NAMES, MetricsOutcome, record_metrics

T0 = 1_700_000_000.0

TRAINING_GATES = [
    {
        "name": "validate.expectations",
        "passed": True,
        "metrics": {"failed_expectations": 0, "rows": 569, "suite": "abc"},
        "threshold": {"max_failed": 0},
        "detail": "all expectations met",
    },
    {
        "name": "evaluate.quality",
        "passed": True,
        "metrics": {"accuracy": 0.96, "skill": 0.9, "regressed": False},
        "threshold": {"min_skill": 0.2, "max_regression": 0.02, "min_accuracy": None},
        "detail": "ok",
    },
]


def training_report(status: str = "deployed") -> dict[str, Any]:
    return RunReport(status=status, flow_run_id="run-1", gates=TRAINING_GATES).model_dump()  # type: ignore[arg-type]


def monitoring_report(status: str = "alert") -> dict[str, Any]:
    moved = status == "alert"
    return {
        "status": status,
        "flow_run_id": "mon-1",
        "gates": [
            {
                "name": "monitor.drift",
                "passed": not moved,
                "metrics": {"moved_columns": 1 if moved else 0, "worst_psi": 0.41},
                "threshold": {"alpha": 0.01, "min_shift": 0.05},
                "detail": "mean radius moved",
            },
            {
                "name": "monitor.integrity",
                "passed": True,
                "metrics": {"verified": True},
                "threshold": {},
                "detail": "champion verifies",
            },
        ],
        "monitor": {
            "drift": {
                "rows": 200,
                "reference_rows": 569,
                "alpha": 0.01,
                "threshold": {"alpha": 0.01},
                "moved": ["mean radius"] if moved else [],
                "columns": {
                    "mean radius": {
                        "kind": "numeric",
                        "moved": moved,
                        "psi": 0.41,
                        "worst": "above 28.1: 0.2 vs 0.0",
                        "p_adjusted": 1e-9,
                        "shift": 0.2,
                    },
                    "target": {
                        "kind": "label",
                        "moved": False,
                        "psi": 0.01,
                        "worst": "'1': 0.6 vs 0.63",
                        "p_adjusted": 0.8,
                        "shift": -0.03,
                    },
                },
            },
            "quality": {
                "rows": 200,
                "labelled": True,
                "accuracy": 0.91,
                "estimated_accuracy": 0.93,
                "floor": 0.9,
                "method": "labels",
            },
        },
    }


def samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a textfile, keyed by name and its labels (minus the base ones)."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            extra = {k: v for k, v in s.labels.items() if k not in ("flow", "model", "dataset")}
            out[(s.name, frozenset(extra.items()))] = s.value
    return out


def value(path: Path, name: str, **labels: str) -> float | None:
    return samples(path).get((f"secure_pipeline_{name}", frozenset(labels.items())))


def with_gateway(settings: Settings, url: str, timeout: float = 2.0) -> Settings:
    mon = settings.monitoring.model_copy(update={"pushgateway": url, "push_timeout_s": timeout})
    return settings.model_copy(update={"monitoring": mon})


def test_training_report_holds_every_gate_and_the_status(settings: Settings) -> None:
    out = record_metrics(settings, training_report(), flow="training", now=T0)
    assert out == MetricsOutcome(
        path=settings.metrics_dir / "secure_pipeline_training.prom", pushed=None
    )
    families = {f.name: f for f in text_string_to_metric_families(out.path.read_text())}
    assert set(families) <= set(METRIC_NAMES)
    assert all(f.documentation and f.type == "gauge" for f in families.values())
    for s in families["secure_pipeline_gate_passed"].samples:
        assert s.labels["flow"] == "training"
        assert s.labels["model"] == settings.model.name
        assert s.labels["dataset"] == settings.dataset.name
    p = out.path
    assert value(p, "last_run_timestamp_seconds") == T0
    assert value(p, "last_success_timestamp_seconds") == T0
    assert value(p, "last_run_status", status="deployed") == 1
    assert value(p, "last_run_status", status="blocked") == 0
    assert value(p, "gate_passed", gate="validate.expectations") == 1
    assert value(p, "gate_passed", gate="evaluate.quality") == 1
    assert value(p, "gate_measured", gate="validate.expectations", metric="rows") == 569
    assert value(p, "gate_measured", gate="evaluate.quality", metric="accuracy") == 0.96
    assert value(p, "gate_measured", gate="evaluate.quality", metric="regressed") == 0
    assert value(p, "gate_threshold", gate="evaluate.quality", metric="min_skill") == 0.2
    # Text and None are not numbers: left out, never a crash.
    assert value(p, "gate_measured", gate="validate.expectations", metric="suite") is None
    assert value(p, "gate_threshold", gate="evaluate.quality", metric="min_accuracy") is None
    assert not families["secure_pipeline_alert"].samples  # a monitoring metric only
    assert not families["secure_pipeline_drift_psi"].samples


def test_monitoring_report_holds_drift_quality_and_the_alert(settings: Settings) -> None:
    p = record_metrics(settings, monitoring_report("alert"), flow="monitoring", now=T0).path
    assert p.name == "secure_pipeline_monitoring.prom"
    assert value(p, "alert") == 1
    assert value(p, "last_run_status", status="alert") == 1
    assert value(p, "last_run_status", status="healthy") == 0
    assert value(p, "last_success_timestamp_seconds") is None  # never healthy yet
    assert value(p, "gate_passed", gate="monitor.drift") == 0
    assert value(p, "gate_passed", gate="monitor.integrity") == 1
    assert value(p, "gate_measured", gate="monitor.integrity", metric="verified") == 1
    assert value(p, "gate_threshold", gate="monitor.drift", metric="alpha") == 0.01
    assert value(p, "drift_psi", column="mean radius") == 0.41
    assert value(p, "drift_moved", column="mean radius") == 1
    assert value(p, "drift_moved", column="target") == 0
    assert value(p, "drift_p_adjusted", column="mean radius") == 1e-9
    assert value(p, "drift_shift", column="target") == -0.03
    assert value(p, "batch_rows") == 200
    assert value(p, "accuracy", kind="measured") == 0.91
    assert value(p, "accuracy", kind="estimated") == 0.93
    assert value(p, "accuracy", kind="floor") == 0.9


def test_no_drift_and_no_quality_is_fine(settings: Settings) -> None:
    report = {"status": "failed", "gates": [], "monitor": {"drift": None, "quality": None}}
    p = record_metrics(settings, report, flow="monitoring", now=T0).path
    assert value(p, "last_run_status", status="failed") == 1
    assert value(p, "alert") == 0
    assert value(p, "batch_rows") is None


def test_last_success_is_carried_over_failed_runs(settings: Settings) -> None:
    record_metrics(settings, monitoring_report("healthy"), flow="monitoring", now=T0)
    record_metrics(settings, training_report("blocked"), flow="training", now=T0 + 5)
    p = record_metrics(settings, monitoring_report("alert"), flow="monitoring", now=T0 + 60).path
    assert value(p, "last_run_timestamp_seconds") == T0 + 60
    assert value(p, "last_success_timestamp_seconds") == T0
    p = record_metrics(settings, {"status": "failed"}, flow="monitoring", now=T0 + 120).path
    assert value(p, "last_success_timestamp_seconds") == T0  # carried twice
    p = record_metrics(settings, monitoring_report("healthy"), flow="monitoring", now=T0 + 180).path
    assert value(p, "last_success_timestamp_seconds") == T0 + 180
    # Each flow has its own file: the blocked training run never succeeded.
    t = settings.metrics_dir / "secure_pipeline_training.prom"
    assert value(t, "last_success_timestamp_seconds") is None
    p = record_metrics(settings, training_report("awaiting_approval"), flow="training", now=T0 + 9)
    assert value(p.path, "last_success_timestamp_seconds") == T0 + 9


def test_a_garbled_previous_file_counts_as_no_success(settings: Settings) -> None:
    path = settings.metrics_dir / "secure_pipeline_monitoring.prom"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe not { a metric file\n")
    p = record_metrics(settings, monitoring_report("alert"), flow="monitoring", now=T0).path
    assert value(p, "last_success_timestamp_seconds") is None
    assert value(p, "alert") == 1


def test_another_models_success_is_not_carried(settings: Settings) -> None:
    record_metrics(settings, monitoring_report("healthy"), flow="monitoring", now=T0)
    other = settings.model_copy(
        update={"model": settings.model.model_copy(update={"name": "other-model"})}
    )
    p = record_metrics(other, monitoring_report("alert"), flow="monitoring", now=T0 + 1).path
    assert value(p, "last_success_timestamp_seconds") is None


def test_an_unwritable_metrics_dir_raises_oserror(settings: Settings) -> None:
    settings.metrics_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.metrics_dir.write_text("a file where the directory should be")
    with pytest.raises(OSError):
        record_metrics(settings, training_report(), flow="training", now=T0)


# --- the Pushgateway, when it is not there or not well ----------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends


def test_an_unreachable_gateway_is_an_error_not_a_raise(settings: Settings) -> None:
    s = with_gateway(settings, f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    out = record_metrics(s, monitoring_report(), flow="monitoring", now=T0)
    assert time.monotonic() - started < 5
    assert out.pushed is False
    assert out.error is not None and "refused" in out.error.lower()
    assert "\n" not in out.error and out.error.startswith("not pushed to http://127.0.0.1:")
    assert value(out.path, "alert") == 1  # the textfile is written all the same


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://127.0.0.1:9091", "http(s)://host:port"),
        ("file:///etc/passwd", "http(s)://host:port"),
        ("127.0.0.1:9091", "http(s)://host:port"),
        ("http://127.0.0.1:notaport", "invalid port"),
        ("http://user:hunter2@127.0.0.1:9091", "credentials"),
    ],
)
def test_a_bad_gateway_url_is_an_error_not_a_raise(settings: Settings, url: str, says: str) -> None:
    out = record_metrics(with_gateway(settings, url), training_report(), flow="training", now=T0)
    assert out.pushed is False
    assert out.error is not None and says in out.error
    assert "hunter2" not in out.error
    assert out.path.exists()


class _Failing(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_error(500, "store full")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_gateway_answering_an_error_is_reported(settings: Settings, failing_gateway: str) -> None:
    out = record_metrics(
        with_gateway(settings, failing_gateway), training_report(), flow="training", now=T0
    )
    assert out.pushed is False
    assert out.error is not None and "500" in out.error
    assert out.path.exists()


def test_a_silent_gateway_times_out(settings: Settings) -> None:
    with socket.socket() as listener:  # the kernel accepts; nobody ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        out = record_metrics(
            with_gateway(settings, url, timeout=0.5), training_report(), flow="training", now=T0
        )
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 5
    assert out.pushed is False
    assert out.error is not None and "timed out" in out.error
    assert out.path.exists()
