"""A synthetic team table for the tests: numeric and categorical columns (strings and
integer codes), ~5% missing values, an id, an email column (PII) and string labels
with 3 classes. Deterministic for a seed; every model of the zoo learns it well."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.common.settings import DatasetConfig

LABELS = ("low", "medium", "high")
NUMERIC = ["income", "age", "balance", "tenure"]
CATEGORICAL = ["region", "plan", "channel_code"]
MISSING = {"income": "median", "balance": "median", "region": "most_frequent"}


def mixed_config(**changes: object) -> DatasetConfig:
    """The [dataset] section `init` writes for this table (placeholder file paths)."""
    return DatasetConfig.model_validate(
        {
            "name": "customers",
            "source": "customers.csv",
            "target": "segment",
            "numeric": NUMERIC,
            "categorical": CATEGORICAL,
            "ignored": ["customer_id"],
            "pii": {"email": "pseudonymize"},
            "missing": MISSING,
            "suite": "customers.suite.json",
            "suite_sha256": "0" * 64,
            "reference_profile": "customers.profile.json",
            **changes,
        }
    )


def mixed_table(rows: int = 2000, *, seed: int = 0) -> pd.DataFrame:
    """The table: each class has its own centre in the numeric inputs and its own mix
    of plans (well separated: every model of the zoo reaches 0.9+ accuracy)."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(3, rows, p=[0.4, 0.35, 0.25])
    label = np.array(LABELS)[cls]
    plan_p = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6]])
    plan = np.array(["basic", "plus", "pro"])[
        (rng.random(rows)[:, None] > plan_p[cls].cumsum(1)).sum(1)
    ]
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(100_000, 100_000 + rows),
            "email": [f"user{i}@example.com" for i in range(rows)],
            "income": (rng.normal(40_000, 6_000, rows) + 18_000 * cls).round(2),
            "age": rng.integers(18, 80, rows).astype(float),
            "balance": (rng.gamma(9.0, 200.0, rows) + 1_800 * cls).round(2),
            "tenure": (rng.normal(3, 1.2, rows) + 2.5 * cls).round(3),
            "region": rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1]),
            "plan": plan,
            "channel_code": rng.choice([1, 2, 3], rows),
            "segment": label,
        }
    )
    for col in MISSING:  # ~5% missing at random in the columns that may have gaps
        frame.loc[rng.random(rows) < 0.05, col] = np.nan
    return frame
