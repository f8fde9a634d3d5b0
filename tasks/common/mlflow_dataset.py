"""The training table as an MLflow dataset input, without MLflow's per-cell type scan.

MLflow's `PandasDataset` infers its schema by checking the Python type of every cell
(14 s for a million rows, longer than fitting the model). `TrainingDataset` reads the
column types from a sample and whether a column may be missing from the whole column
(one vectorised pass), so the logged schema says the same for any table size.
Imported only where a run logs to MLflow: it imports MLflow.
"""

from __future__ import annotations

from functools import cached_property

import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.models import infer_signature
from mlflow.types import ColSpec, Schema

TYPE_SAMPLE_ROWS = 10_000


def frame_schema(frame: pd.DataFrame, *, sample: int = TYPE_SAMPLE_ROWS) -> Schema:
    """Column types from the first `sample` rows; ``required`` from every row."""
    inferred = infer_signature(frame.head(sample)).inputs
    optional = frame.isna().any()
    return Schema(
        [
            ColSpec(type=col.type, name=col.name, required=not bool(optional[col.name]))
            for col in inferred.inputs
        ]
    )


class TrainingDataset(PandasDataset):
    @cached_property
    def schema(self) -> Schema | None:
        return frame_schema(self.df)
