"""MLflow on SQLite under the state directory: log, register, alias, and the loader trap."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tasks.common.files import sha256_file
from tasks.common.tracking import configure_mlflow, mlflow_client
from tasks.models import PIP_REQUIREMENTS
from tasks.trust.modelio import load_model_file

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"
pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _restore_mlflow_uri(monkeypatch):
    # mlflow.set_tracking_uri also rewrites $MLFLOW_TRACKING_URI: undo it afterwards.
    before = os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    yield
    mlflow.set_tracking_uri(before)
    mlflow.set_registry_uri(before)


def test_log_register_alias_and_safe_load(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # MLflow's fallbacks would write ./mlruns and ./mlflow.db here
    frame = pd.read_csv(CSV)
    x, y = frame.drop(columns="target"), frame["target"]
    model = Pipeline(
        [("scaler", StandardScaler()), ("model", LogisticRegression(max_iter=1000))]
    ).fit(x, y)
    experiment_id = configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="integration") as run:
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("accuracy", float(model.score(x, y)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name="integration-model",
        )
    client = mlflow_client(settings)
    assert client.get_run(run.info.run_id).data.params == {"C": "1.0"}
    version = str(info.registered_model_version)
    assert client.get_model_version("integration-model", version).run_id == run.info.run_id

    client.set_registered_model_alias("integration-model", "champion", version)
    champion = client.get_model_version_by_alias("integration-model", "champion")
    assert str(champion.version) == version  # an int from the SQLite store, a str elsewhere
    aliases = client.get_registered_model("integration-model").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": version}

    # The champion's file loads through modelio (digest pinned, allow-list pinned)...
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri="models:/integration-model@champion",
            dst_path=str(tmp_path / "dl"),
            tracking_uri=settings.tracking_uri,
        )
    )
    skops_file = local / "model.skops"
    loaded = load_model_file(skops_file, expected_sha256=sha256_file(skops_file))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # ...while MLflow's own loader, which trusts the artifact's type list, is disabled.
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.sklearn.load_model("models:/integration-model@champion")

    client.delete_registered_model_alias("integration-model", "champion")
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("integration-model", "champion")
    assert (settings.state_dir / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
