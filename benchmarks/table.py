"""The bench's synthetic team table: 16 numeric and 4 categorical inputs (text and an
integer code), ~3% missing values in five inputs, an id, an email column (personal
data) and a string label with 3 classes. Deterministic for a seed; written in chunks
so a million rows never sit in memory twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LABELS = np.array(["low", "medium", "high"])
NUMERIC = [f"x{i:02d}" for i in range(16)]
CATEGORICAL = ["region", "plan", "device", "channel_code"]
IMPUTED = ["x00", "x03", "x07", "x11", "region"]
CHUNK = 250_000


def _chunk(rows: int, start: int, rng: np.random.Generator) -> pd.DataFrame:
    cls = rng.choice(3, rows, p=[0.45, 0.35, 0.2])
    centres = np.linspace(-1.0, 1.0, len(NUMERIC))
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(start, start + rows) + 1_000_000,
            "email": [f"user{i}@example.com" for i in range(start, start + rows)],
        }
    )
    noise = rng.normal(0.0, 1.0, (rows, len(NUMERIC))).clip(-3.5, 3.5)  # bounded, like real fields
    values = noise + 1.5 * cls[:, None] * centres[None, :]
    for j, col in enumerate(NUMERIC):
        frame[col] = (values[:, j] * (10.0 ** (j % 4)) + 50.0 * j).round(4)
    plan_p = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6]])[cls].cumsum(1)
    frame["region"] = rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1])
    frame["plan"] = np.array(["basic", "plus", "pro"])[(rng.random(rows)[:, None] > plan_p).sum(1)]
    frame["device"] = rng.choice(["ios", "android", "web", "tv", "kiosk", "other"], rows)
    frame["channel_code"] = rng.choice([1, 2, 3, 4, 5], rows)
    frame["segment"] = LABELS[cls]
    for col in IMPUTED:  # missing at random in the inputs that may have gaps
        frame[col] = frame[col].mask(rng.random(rows) < 0.03)
    return frame


def write_table(path: Path, rows: int, *, seed: int) -> Path:
    """Write `rows` rows of the table to `path` (CSV) and return it."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as out:
        for start in range(0, rows, CHUNK):
            part = _chunk(min(CHUNK, rows - start), start, rng)
            part.to_csv(out, index=False, header=start == 0, float_format="%.6g")
    return path
