"""Shared fixtures. The environment is set before any test module imports
Prefect or MLflow: telemetry off, and all state in a throwaway directory."""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tasks.common.environment import TELEMETRY_OFF

_SESSION_STATE = Path(tempfile.mkdtemp(prefix="secure-pipeline-tests-"))
os.environ.update(TELEMETRY_OFF)
os.environ["PREFECT_HOME"] = str(_SESSION_STATE / "prefect")
os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] = "false"
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_STATE / 'mlflow.db'}"
for _var in list(os.environ):
    if _var.startswith("SECURE_PIPELINE_") or _var == "PREFECT_API_URL":
        del os.environ[_var]  # a developer's shell must not leak into the tests
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the cores: OpenMP (boosting) spinning on every core in each worker
    # measured 32 s for 12 s of one real-table model's gates beside two busy loops; the
    # suite's HGB tests took 166 s for 3 resamples. One thread per worker (and per run
    # it starts), as the README advises for a busy machine; the bench keeps the default.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tasks.common.context import Dataset, RunContext  # noqa: E402
from tasks.common.settings import Settings, load_settings  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CSV = PROJECT_ROOT / "data" / "breast_cancer.csv"

ALONE = "alone"  # the marker of tests no parallel worker may run beside


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALONE}: measures time or loads the machine on purpose: under pytest-xdist, "
        "no other worker runs a test meanwhile",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under pytest-xdist, every test holds a shared lock while it runs (setup,
    call, teardown) and an ``alone`` test an exclusive one, so a timing or
    busy-machine test never has a parallel neighbour. The turnstile lock makes
    a waiting ``alone`` test go first: the other workers do not start new tests
    in the meantime. Serial runs take no lock."""
    basetemp = item.config.option.basetemp
    if not os.environ.get("PYTEST_XDIST_WORKER") or not basetemp:
        yield
        return
    run_dir = Path(basetemp).parent  # shared by all workers of this run
    with ExitStack() as locks:
        turnstile, tests = (
            locks.enter_context(open(run_dir / name, "a+b"))
            for name in ("alone-turnstile.lock", "alone-tests.lock")
        )
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        alone = item.get_closest_marker(ALONE) is not None
        fcntl.flock(tests, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The bundled configuration with its state in a fresh directory."""
    return load_settings(state_dir=tmp_path / "state")


@pytest.fixture
def ctx(settings: Settings) -> RunContext:
    return RunContext(settings=settings, run_id="test-run")


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    """The bundled dataset (one copy per test module)."""
    return pd.read_csv(BUNDLED_CSV)


def as_dataset(frame: pd.DataFrame) -> Dataset:
    """A frame as if ingestion had accepted it."""
    return Dataset(
        frame=frame, uri="memory", sha256="0" * 64, format="csv", integrity="none", target="target"
    )


def variant(ctx: RunContext, **dataset: Any) -> RunContext:
    """The same context with some dataset settings changed."""
    s = ctx.settings
    return RunContext(
        s.model_copy(update={"dataset": s.dataset.model_copy(update=dataset)}), ctx.run_id
    )


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API for in-process flow runs (about 10 s, once per session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True, scope="module")
def _restore_mlflow_uri() -> Iterator[None]:
    """mlflow.set_tracking_uri also rewrites $MLFLOW_TRACKING_URI: undo it after each module."""
    before = os.environ["MLFLOW_TRACKING_URI"]
    yield
    os.environ["MLFLOW_TRACKING_URI"] = before
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)


def bundled_dataset() -> Dataset:
    """The bundled CSV as ingestion accepts it (with its real sha256)."""
    import hashlib

    return Dataset(
        frame=pd.read_csv(BUNDLED_CSV),
        uri=str(BUNDLED_CSV),
        sha256=hashlib.sha256(BUNDLED_CSV.read_bytes()).hexdigest(),
        format="csv",
        integrity="none",
        target="target",
    )


def data_gates(settings: Settings, path: Path) -> list[str]:
    """Ingest, PII guard, validate and screen `path` as a run does, without the
    services; the names of the failing gates, first the one that blocked."""
    from tasks.common.gates import GateFailed
    from tasks.ingest import ingest
    from tasks.screen import guard_pii, screen
    from tasks.validate import validate

    ctx = RunContext(settings.confined_to(path.parent), run_id=f"t-{path.stem}")
    try:
        dataset, _ = ingest(ctx, source=str(path))
        dataset, _ = guard_pii(ctx, dataset)
        out, _ = validate(ctx, dataset)
        screen(ctx, out.dataset)
    except GateFailed as exc:
        return [r.name for r in exc.results if not r.passed]
    return []
