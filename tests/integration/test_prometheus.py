"""The run metrics against a real Prometheus and Pushgateway (Debian's, installed by
`make prometheus`): pushed reports read back with PromQL, the repo's alert rules fire,
promtool accepts the rules (and their unit tests, infra/monitoring/alerts_test.yml), the
example config and the textfile, and every query of the Grafana dashboard names exported
metrics only and evaluates on that Prometheus.

Both servers run on free 127.0.0.1 ports with their storage in a temporary directory
(scrape and rule evaluation every second), started once for the module and killed
on teardown."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tasks.common.settings import Settings, load_settings
from tasks.monitoring.metrics import METRIC_NAMES, record_metrics
from tests.ports import free_port
from tests.unit.test_metrics import monitoring_report, training_report

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "infra" / "monitoring"
PROMETHEUS = Path("/usr/bin/prometheus")
PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")
PROMTOOL = Path("/usr/bin/promtool")
DAY = 24 * 3600.0
T = TypeVar("T")
# No proxy, ever: the servers are on loopback and the tests have no network.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def require(binary: Path) -> str:
    """Every test here needs the Debian packages: missing, it fails (never skips)."""
    if not binary.exists():
        pytest.fail(f"{binary} missing: run `make prometheus` (apt-get, as root)", pytrace=False)
    return str(binary)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with _HTTP.open(url, timeout=timeout) as resp:
        return json.load(resp)


def eventually(probe: Callable[[], T | None], *, within: float, what: str) -> T:
    """Call `probe` until it returns something (not None), or fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {within:.0f} s", pytrace=False)
        time.sleep(0.25)


@dataclass
class Servers:
    prometheus: str
    pushgateway: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; fails the test on a PromQL error."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            body = get_json(url)
        except urllib.error.HTTPError as exc:  # 400: bad query, with Prometheus's reason
            pytest.fail(f"{promql!r}: {exc.read().decode(errors='replace')}", pytrace=False)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query_range(self, promql: str) -> list[dict[str, Any]]:
        now = time.time()
        params = {"query": promql, "start": now - 60, "end": now, "step": 1}
        url = f"{self.prometheus}/api/v1/query_range?" + urllib.parse.urlencode(params)
        try:
            body = get_json(url)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{promql!r}: {exc.read().decode(errors='replace')}", pytrace=False)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def one(self, promql: str, *, within: float = 15) -> float:
        """The single value of `promql`, once Prometheus has scraped it."""
        found = eventually(lambda: self.query(promql) or None, within=within, what=promql)
        assert len(found) == 1, found
        return float(found[0]["value"][1])


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited: {log.read_text()[-600:]}", pytrace=False)
        try:
            with _HTTP.open(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not ready in 20 s: {log.read_text()[-600:]}", pytrace=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    prometheus, pushgateway = require(PROMETHEUS), require(PUSHGATEWAY)
    tmp = tmp_path_factory.mktemp("prometheus")
    gw = f"127.0.0.1:{free_port()}"
    prom = f"127.0.0.1:{free_port()}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MONITORING / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [gw]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        gw_cmd = [
            pushgateway,
            f"--web.listen-address={gw}",
            f"--persistence.file={tmp / 'pushgateway.data'}",
        ]
        procs.append(_start(gw_cmd, tmp / "pushgateway.log"))
        prom_cmd = [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address={prom}",
        ]
        procs.append(_start(prom_cmd, tmp / "prometheus.log"))
        _wait_ready(f"http://{gw}", procs[0], tmp / "pushgateway.log")
        _wait_ready(f"http://{prom}", procs[1], tmp / "prometheus.log")
        yield Servers(prometheus=f"http://{prom}", pushgateway=f"http://{gw}")
    finally:
        for proc in procs:
            _stop(proc)


@dataclass
class Pushed:
    settings: Settings
    now: float


@pytest.fixture(scope="module")
def pushed(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """A training run that deployed 9 days ago, a blocked one now, a drift alert now."""
    base = load_settings(state_dir=tmp_path_factory.mktemp("metrics") / "state")
    mon = base.monitoring.model_copy(update={"pushgateway": servers.pushgateway})
    settings = base.model_copy(update={"monitoring": mon})
    now = time.time()
    blocked = training_report("blocked")
    blocked["gates"][1] = {**blocked["gates"][1], "passed": False}
    for report, flow, at in (
        (training_report("deployed"), "training", now - 9 * DAY),
        (blocked, "training", now),
        (monitoring_report("alert"), "monitoring", now),
    ):
        out = record_metrics(settings, report, flow=flow, now=at)  # type: ignore[arg-type]
        assert (out.pushed, out.error) == (True, None)
    return Pushed(settings=settings, now=now)


def test_pushed_runs_read_back_with_promql(servers: Servers, pushed: Pushed) -> None:
    model = pushed.settings.model.name
    sel = f'model="{model}", dataset="{pushed.settings.dataset.name}"'
    assert servers.one(f'secure_pipeline_alert{{{sel}, job="secure_pipeline_monitoring"}}') == 1
    assert servers.one(f'secure_pipeline_drift_psi{{{sel}, column="mean radius"}}') == 0.41
    assert servers.one(f'secure_pipeline_drift_moved{{{sel}, column="target"}}') == 0
    assert servers.one(f'secure_pipeline_accuracy{{{sel}, kind="estimated"}}') == 0.93
    assert servers.one(f"secure_pipeline_batch_rows{{{sel}}}") == 200
    training = f'{sel}, flow="training", job="secure_pipeline_training"'
    assert servers.one(f'secure_pipeline_last_run_status{{{training}, status="blocked"}}') == 1
    assert servers.one(f'secure_pipeline_gate_passed{{{training}, gate="evaluate.quality"}}') == 0
    measured = f'secure_pipeline_gate_measured{{{training}, gate="validate.expectations"}}'
    assert servers.one(measured + ' and {metric="rows"}') == 569
    # The second push replaced the first (one group per flow and model), and the success
    # of 9 days ago was carried into it.
    assert servers.one(f"secure_pipeline_last_run_timestamp_seconds{{{training}}}") == (
        pytest.approx(pushed.now, abs=1e-3)
    )
    age = servers.one(f"time() - secure_pipeline_last_success_timestamp_seconds{{{training}}}")
    assert 9 * DAY - 5 < age < 9 * DAY + 60
    # Monitoring never succeeded here: no success time at all (not a zero).
    assert servers.query('secure_pipeline_last_success_timestamp_seconds{flow="monitoring"}') == []


def _alerts(servers: Servers) -> dict[str, set[str]]:
    """Alert name -> the states of its alerts (pending, firing)."""
    body = get_json(f"{servers.prometheus}/api/v1/alerts")
    states: dict[str, set[str]] = {}
    for alert in body["data"]["alerts"]:
        states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
    return states


def test_the_alert_rules_fire(servers: Servers, pushed: Pushed) -> None:
    expected = {
        "SecurePipelineDrift",
        "SecurePipelineMonitoringAlert",
        "SecurePipelineGateFailed",
        "SecurePipelineTrainingNotSucceeded",
    }

    def firing() -> dict[str, set[str]] | None:
        states = _alerts(servers)
        return states if all("firing" in states.get(a, ()) for a in expected) else None

    states = eventually(firing, within=20, what=f"alerts {sorted(expected)} firing")
    # The drift alert names the column that moved, and only that one.
    drift = servers.query('ALERTS{alertname="SecurePipelineDrift", alertstate="firing"}')
    assert [a["metric"]["column"] for a in drift] == ["mean radius"]
    # What did not happen does not fire: monitoring ran just now, and it has no success
    # time to be late against; never succeeding waits its `for` of hours (pending).
    assert "SecurePipelineMonitoringStale" not in states
    assert "SecurePipelineMonitoringNotSucceeded" not in states
    assert states.get("SecurePipelineNeverSucceeded") == {"pending"}


def test_promtool_checks_rules_config_and_textfile(pushed: Pushed) -> None:
    promtool = require(PROMTOOL)
    for args in (
        ["check", "rules", str(MONITORING / "alerts.yml")],
        ["check", "config", str(MONITORING / "prometheus.yml")],
        ["test", "rules", str(MONITORING / "alerts_test.yml")],  # each rule, fires and not
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
    for flow in ("training", "monitoring"):
        text = (pushed.settings.metrics_dir / f"secure_pipeline_{flow}.prom").read_text()
        done = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, bool]]:
    """(expression, instant) of every panel target, template variables filled in."""
    board = json.loads((MONITORING / "dashboard.json").read_text())
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    out = []
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"].replace("$model", variables["model"]["allValue"])
            assert "$" not in expr, expr
            out.append((expr, bool(target.get("instant"))))
    return out


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bsecure_pipeline_[a-z_]+\b", expr))


def test_dashboard_and_rules_name_exported_metrics_only() -> None:
    board = json.loads((MONITORING / "dashboard.json").read_text())
    variables = [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    exprs = [e for e, _ in _dashboard_exprs()] + _rule_exprs() + variables
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used <= set(METRIC_NAMES), used - set(METRIC_NAMES)
    # The panels the dashboard promises: drift, gates, last successes, alerts, accuracy.
    queries = " ".join(e for e, _ in _dashboard_exprs())
    for needed in (
        "secure_pipeline_drift_psi",
        "secure_pipeline_drift_moved",
        "secure_pipeline_gate_passed",
        "time() - max by (model) (secure_pipeline_last_success_timestamp_seconds",
        "secure_pipeline_alert",
        "secure_pipeline_accuracy",
    ):
        assert needed in queries, needed


def test_every_dashboard_query_evaluates(servers: Servers, pushed: Pushed) -> None:
    servers.one('secure_pipeline_alert{job="secure_pipeline_monitoring"}')  # scraped
    empty = []
    for expr, instant in _dashboard_exprs():
        result = servers.query(expr) if instant else servers.query_range(expr)
        if not result:
            empty.append(expr)
    # With a drift alert, a blocked training run and a success 9 days ago pushed, only
    # the monitoring flow's "since the last success" panel has nothing to show.
    assert len(empty) == 1 and 'flow="monitoring"' in empty[0], empty
    moved = servers.query(next(e for e, _ in _dashboard_exprs() if "drift_shift" in e))
    assert [r["metric"]["column"] for r in moved] == ["mean radius"]
