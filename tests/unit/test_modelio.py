"""modelio: digest before parsing, pinned allow-list, never run a payload."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from tasks.common.files import sha256_bytes, sha256_file
from tasks.trust.modelio import (
    TRUSTED_TYPES,
    ModelIntegrityError,
    UntrustedModelError,
    dumps_model,
    load_model_bytes,
    load_model_file,
)

CSV = Path(__file__).resolve().parents[2] / "data" / "breast_cancer.csv"


class Payload(BaseEstimator, TransformerMixin):
    """Stands in for a malicious estimator: rebuilding it writes a marker file."""

    def __init__(self, marker: str = ""):
        self.marker = marker

    def fit(self, x, y=None):
        return self

    def transform(self, x):
        return x

    def __setstate__(self, state):
        Path(state["marker"]).write_text("payload ran")
        self.__dict__.update(state)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(CSV)
    return frame.drop(columns="target"), frame["target"]


@pytest.fixture(scope="module")
def pipeline(data) -> Pipeline:
    x, y = data
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("model", LogisticRegression(random_state=42, max_iter=1000)),
        ]
    ).fit(x, y)


def test_trusted_types_are_exactly_what_the_project_pipelines_need(pipeline, data):
    # The plain pipeline needs nothing beyond skops' defaults ...
    assert sio.get_untrusted_types(data=dumps_model(pipeline)) == []
    # ... and the differentially private one exactly the pinned diffprivlib types.
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.models import LogisticRegression as DPLogisticRegression

    dp = Pipeline(
        [
            ("scaler", StandardScaler()),
            (
                "model",
                DPLogisticRegression(
                    epsilon=1.0, data_norm=5.0, random_state=42, accountant=BudgetAccountant()
                ),
            ),
        ]
    ).fit(*data)
    assert sorted(sio.get_untrusted_types(data=dumps_model(dp))) == sorted(TRUSTED_TYPES)


def test_round_trip_predicts_identically(pipeline, data, tmp_path):
    x, _ = data
    blob = dumps_model(pipeline)
    loaded = load_model_bytes(blob, expected_sha256=sha256_bytes(blob))
    assert isinstance(loaded, Pipeline)
    np.testing.assert_array_equal(loaded.predict(x), pipeline.predict(x))
    path = tmp_path / "model.skops"
    path.write_bytes(blob)
    assert sha256_file(path) == sha256_bytes(blob) == hashlib.sha256(blob).hexdigest()
    from_file = load_model_file(path, expected_sha256=sha256_file(path).upper())
    np.testing.assert_array_equal(from_file.predict(x), pipeline.predict(x))


def test_refuses_digest_mismatch(pipeline):
    blob = bytearray(dumps_model(pipeline))
    digest = sha256_bytes(bytes(blob))
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(ModelIntegrityError, match="digest"):
        load_model_bytes(bytes(blob), expected_sha256=digest)
    with pytest.raises(ModelIntegrityError, match="not a hex sha256"):
        load_model_bytes(bytes(blob), expected_sha256="abc")


def test_digest_is_checked_before_parsing():
    garbage = b"not a zip file at all"
    # With its own digest the bytes reach the parser, which rejects them...
    with pytest.raises(zipfile.BadZipFile):
        load_model_bytes(garbage, expected_sha256=sha256_bytes(garbage))
    # ...with another digest they never get that far.
    with pytest.raises(ModelIntegrityError, match="digest"):
        load_model_bytes(garbage, expected_sha256="0" * 64)


def test_refuses_untrusted_custom_class_without_running_it(data, tmp_path):
    x, y = data
    marker = tmp_path / "marker"
    evil = Pipeline(
        [
            ("payload", Payload(marker=str(marker))),
            ("scaler", StandardScaler()),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    ).fit(x, y)
    blob = dumps_model(evil)
    with pytest.raises(UntrustedModelError) as err:
        load_model_bytes(blob, expected_sha256=sha256_bytes(blob))
    assert any(t.endswith("Payload") for t in err.value.types)
    assert not marker.exists()
    # Control: trusting the file's own type list (MLflow's way) runs the payload.
    sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    assert marker.read_text() == "payload ran"


def test_refuses_function_transformer_of_os_system():
    evil = Pipeline([("f", FunctionTransformer(os.system))])
    blob = dumps_model(evil)
    with pytest.raises(UntrustedModelError, match="system") as err:
        load_model_bytes(blob, expected_sha256=sha256_bytes(blob))
    assert isinstance(err.value, ModelIntegrityError)


def test_refuses_a_file_that_is_not_an_estimator():
    blob = sio.dumps({"coef": np.zeros(3)})
    with pytest.raises(ModelIntegrityError, match="estimator"):
        load_model_bytes(blob, expected_sha256=sha256_bytes(blob))
