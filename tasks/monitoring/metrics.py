"""Prometheus metrics of a run: a textfile per flow, and a push to a Pushgateway.

Every training and monitoring run ends by writing ``<metrics_dir>/secure_pipeline_<flow>.prom``
(node_exporter's textfile-collector convention; `write_to_textfile` renames a finished
file into place, so a scrape never sees half of one). With ``monitoring.pushgateway``
set, the same registry is pushed there too (one group per flow and model: a push
replaces the group's previous metrics, so gates and columns that disappeared go too).

A gateway that is down, refuses, times out or answers an error never fails the run:
the outcome's `error` says what happened in one line, the textfile is written anyway.
A metrics directory that cannot be written raises `OSError` for the caller to report.

``last_success_timestamp_seconds`` survives failed runs: it is read back from the
previous textfile (with prometheus_client's own parser) and written again, so
``time() - secure_pipeline_last_success_timestamp_seconds`` is the age of the last good
run, whichever of the two places Prometheus reads.
"""

from __future__ import annotations

import http.client
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from tasks.common.files import read_capped

if TYPE_CHECKING:
    from tasks.common.settings import Settings

Flow = Literal["training", "monitoring"]
PREFIX = "secure_pipeline_"
BASE_LABELS = ("flow", "model", "dataset")

# name (without the prefix) -> (extra labels, HELP text). The dashboard and the alert
# rules may use these names only (tests/integration/test_prometheus.py checks).
_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "last_run_timestamp_seconds": ((), "Unix time the last run of this flow ended."),
    "last_run_status": (
        ("status",),
        "1 for the status the last run ended with, 0 for the flow's other statuses.",
    ),
    "last_success_timestamp_seconds": (
        (),
        "Unix time of the last successful run (training: deployed or awaiting_approval; "
        "monitoring: healthy), carried over failed runs.",
    ),
    "gate_passed": (("gate",), "1 if the gate passed in the last run, 0 if it failed."),
    "gate_measured": (("gate", "metric"), "A numeric value a gate measured in the last run."),
    "gate_threshold": (("gate", "metric"), "A numeric threshold a gate held the run to."),
    "drift_psi": (("column",), "Population stability index of the column, batch vs reference."),
    "drift_moved": (
        ("column",),
        "1 if a group of the column moved significantly and materially, else 0.",
    ),
    "drift_p_adjusted": (
        ("column",),
        "Smallest Holm-adjusted p-value among the column's groups.",
    ),
    "drift_shift": (
        ("column",),
        "Share of the column's most-moved group in the batch minus in the reference.",
    ),
    "batch_rows": ((), "Rows in the batch the monitoring run read."),
    "accuracy": (
        ("kind",),
        "The champion's accuracy on the batch: measured (labels), estimated (no labels), "
        "and the floor it is held to.",
    ),
    "alert": ((), "1 when the last monitoring run ended in alert, else 0."),
}
METRIC_NAMES: tuple[str, ...] = tuple(PREFIX + name for name in _METRICS)

# FORK: a new run status goes here (and into RunReport / the monitoring report).
STATUSES: dict[Flow, tuple[str, ...]] = {
    "training": ("deployed", "awaiting_approval", "blocked", "failed", "interrupted"),
    "monitoring": ("healthy", "alert", "failed", "interrupted"),
}
SUCCESS: dict[Flow, frozenset[str]] = {
    "training": frozenset({"deployed", "awaiting_approval"}),
    "monitoring": frozenset({"healthy"}),
}
_Put = Callable[..., None]  # put(metric, value, **extra_labels)
_PREVIOUS_MAX_BYTES = 16 * 1024 * 1024  # a textfile is a few kB; never read a huge one


@dataclass(frozen=True)
class MetricsOutcome:
    """Where the metrics went: the textfile, and the push (None: no gateway set)."""

    path: Path
    pushed: bool | None
    error: str | None = None


def textfile_path(metrics_dir: Path, flow: Flow) -> Path:
    """The flow's textfile: ``secure_pipeline_<flow>.prom``."""
    return metrics_dir / f"{PREFIX}{flow}.prom"


def record_metrics(
    settings: Settings,
    report: Mapping[str, Any],
    *,
    flow: Flow,
    now: float | None = None,
) -> MetricsOutcome:
    """Write the run's metrics to the flow's textfile, then push them if a gateway is set.

    Args:
        settings: the pipeline settings (metrics_dir, model and dataset names, gateway).
        report: the run report as a dict (`RunReport.model_dump()` or the monitoring one).
        flow: which flow ran.
        now: the run's end time (Unix seconds); default the current time.

    Raises:
        OSError: the metrics directory or file cannot be written (a push never raises).
    """
    now = time.time() if now is None else now
    labels = {"flow": flow, "model": settings.model.name, "dataset": settings.dataset.name}
    path = textfile_path(settings.metrics_dir, flow)
    previous = previous_success(path, labels)
    registry = build_registry(report, flow=flow, labels=labels, now=now, previous=previous)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    mon = settings.monitoring
    if not mon.pushgateway:
        return MetricsOutcome(path=path, pushed=None)
    error = push(
        mon.pushgateway,
        registry,
        job=f"{PREFIX}{flow}",
        grouping_key={"model": settings.model.name},
        timeout=mon.push_timeout_s,
    )
    return MetricsOutcome(path=path, pushed=error is None, error=error)


def build_registry(
    report: Mapping[str, Any],
    *,
    flow: Flow,
    labels: Mapping[str, str],
    now: float,
    previous: float | None,
) -> CollectorRegistry:
    """A fresh registry (never the global one) holding the run's gauges."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(PREFIX + name, help_text, [*BASE_LABELS, *extra], registry=registry)
        for name, (extra, help_text) in _METRICS.items()
    }

    def put(name: str, value: float, **extra: str) -> None:
        gauges[name].labels(**labels, **extra).set(value)

    status = str(report.get("status", "failed"))
    put("last_run_timestamp_seconds", now)
    for known in dict.fromkeys((*STATUSES[flow], status)):
        put("last_run_status", 1.0 if known == status else 0.0, status=known)
    success = now if status in SUCCESS[flow] else previous
    if success is not None:
        put("last_success_timestamp_seconds", success)
    _gates(put, report.get("gates") or [])
    _monitor(put, report.get("monitor") or {})
    if flow == "monitoring":
        put("alert", 1.0 if status == "alert" else 0.0)
    return registry


def _gates(put: _Put, gates: Iterable[Mapping[str, Any]]) -> None:
    """gate_passed per gate (a name reported twice passes only if both passed), and
    every numeric value of its metrics and threshold."""
    passed: dict[str, bool] = {}
    for gate in gates:
        name = str(gate.get("name", "?"))
        passed[name] = passed.get(name, True) and bool(gate.get("passed"))
        for kind, values in (("gate_measured", "metrics"), ("gate_threshold", "threshold")):
            for metric, value in numeric_items(gate.get(values)):
                put(kind, value, gate=name, metric=metric)
    for name, ok in passed.items():
        put("gate_passed", 1.0 if ok else 0.0, gate=name)


def _monitor(put: _Put, monitor: Mapping[str, Any]) -> None:
    """Drift per column, the batch's rows and the accuracy of a monitoring report."""
    drift = monitor.get("drift") or {}
    for column, values in (drift.get("columns") or {}).items():
        for field in ("psi", "moved", "p_adjusted", "shift"):
            if (value := number(values.get(field))) is not None:
                put(f"drift_{field}", value, column=str(column))
    quality = monitor.get("quality") or {}
    rows = number(drift.get("rows"))
    if (rows := number(quality.get("rows")) if rows is None else rows) is not None:
        put("batch_rows", rows)
    for kind, key in (("measured", "accuracy"), ("estimated", "estimated_accuracy")):
        if (value := number(quality.get(key))) is not None:
            put("accuracy", value, kind=kind)
    if (floor := number(quality.get("floor"))) is not None:
        put("accuracy", floor, kind="floor")


def number(value: Any) -> float | None:
    """A gauge value for int, float and bool (True is 1); None for anything else."""
    if isinstance(value, bool | int | float):
        return float(value)
    return None


def numeric_items(values: Any) -> Iterable[tuple[str, float]]:
    """The numeric entries of a gate's metrics or threshold dict (others are text)."""
    if not isinstance(values, Mapping):
        return []
    return [(str(k), v) for k, raw in values.items() if (v := number(raw)) is not None]


def previous_success(path: Path, labels: Mapping[str, str]) -> float | None:
    """The last success time in the previous textfile for these labels, if any.

    A missing, unreadable or garbled file counts as no earlier success: the metric then
    starts again at the next successful run rather than failing this one.
    """
    try:
        text = read_capped(path, max_bytes=_PREVIOUS_MAX_BYTES).decode("utf-8")
        families = list(text_string_to_metric_families(text))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    name = PREFIX + "last_success_timestamp_seconds"
    for family in families:
        for sample in family.samples:
            if sample.name != name:
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                value = float(sample.value)
                return value if math.isfinite(value) else None
    return None


def push(
    gateway: str,
    registry: CollectorRegistry,
    *,
    job: str,
    grouping_key: Mapping[str, str],
    timeout: float,
) -> str | None:
    """PUT the registry to the Pushgateway; None when it took it, else why not (one line).

    Only http and https URLs without credentials are used: prometheus_client would put
    ``http://`` in front of any other scheme and push to whatever that parses as, and
    credentials in a URL end up in logs. The error names the gateway by scheme, host and
    port only.
    """
    parts = urlsplit(gateway)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            f"not pushed: monitoring.pushgateway must be an http(s)://host:port URL, "
            f"got scheme {parts.scheme or 'none'!r}"
        )
    if parts.username or parts.password:
        return "not pushed: monitoring.pushgateway carries credentials; they are not sent"
    try:
        port = parts.port
    except ValueError:
        return "not pushed: monitoring.pushgateway has an invalid port"
    where = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    try:
        push_to_gateway(
            gateway, job=job, registry=registry, grouping_key=dict(grouping_key), timeout=timeout
        )
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"not pushed to {where}: {one_line(exc)}"
    return None


def one_line(exc: BaseException) -> str:
    """The exception in one line: its type and message, whitespace collapsed."""
    reason = getattr(exc, "reason", None)  # URLError wraps the socket error
    text = str(reason if isinstance(reason, BaseException) else exc) or type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(text.split())}"[:300]
