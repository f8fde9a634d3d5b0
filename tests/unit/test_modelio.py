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
    TRUSTED_BY_ESTIMATOR,
    TRUSTED_PREPROCESSING,
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


@pytest.mark.parametrize("estimator", sorted(TRUSTED_BY_ESTIMATOR))
def test_each_estimators_trusted_types_are_exactly_what_its_pipeline_needs(estimator):
    """Every model of the zoo, on a mixed table (imputers, one-hot), holds exactly the
    types pinned for it: no more (the pin would hide a new type), no fewer (stale)."""
    from tasks.common.settings import ModelConfig
    from tasks.models import build_pipeline
    from tests.mixed_table import CATEGORICAL, NUMERIC, mixed_config, mixed_table

    frame = mixed_table(400)
    cols = [*NUMERIC, *CATEGORICAL]
    ds = mixed_config()
    small = {"random_forest": {"n_estimators": 5}, "hist_gradient_boosting": {"max_iter": 5}}
    config = ModelConfig(name="m", estimator=estimator, dp_data_norm=5.0, params=small)
    fitted = build_pipeline(config, ds, cols).fit(frame[cols], frame["segment"])
    blob = dumps_model(fitted)
    pinned = {*TRUSTED_PREPROCESSING, *TRUSTED_BY_ESTIMATOR[estimator]}
    assert sorted(sio.get_untrusted_types(data=blob)) == sorted(pinned)
    loaded = load_model_bytes(blob, expected_sha256=sha256_bytes(blob))
    np.testing.assert_array_equal(loaded.predict(frame[cols]), fitted.predict(frame[cols]))


def test_a_tree_type_is_refused_when_not_pinned(monkeypatch, data):
    """The loader trusts the pinned list only: unpinned, a forest's trees are refused."""
    from sklearn.ensemble import RandomForestClassifier

    import tasks.trust.modelio as modelio

    x, y = data
    blob = dumps_model(RandomForestClassifier(n_estimators=2, random_state=0).fit(x, y))
    monkeypatch.setattr(modelio, "TRUSTED_TYPES", ())
    with pytest.raises(UntrustedModelError, match=r"sklearn\.tree\._tree\.Tree"):
        load_model_bytes(blob, expected_sha256=sha256_bytes(blob))


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
