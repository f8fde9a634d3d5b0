"""Real public tables as a test bed for the gates: loaders, specs and clean resampling,
as pure seeded functions.

The tables (vendored byte-identical under ``tests/data/real/``, see its README.md):

* ``penguins`` (palmerpenguins, 344 rows): 3 string species, 2 categorical and 5
  numeric inputs, gaps in 5 inputs;
* ``mpg`` (ggplot2, 234 rows): 7 string classes, 38 models in one column, 9 exact
  repeated rows;
* ``diamonds`` (ggplot2, 53,940 rows): 5 string cuts (Fair 3%), integer, float and
  categorical inputs, 146 exact repeats, plus the tester's four extra columns (an id, a
  date, a short free text and an e-mail) derived here, seeded, so that the committed
  file stays the original;
* ``breast_cancer`` (the bundled ``data/breast_cancer.csv``): 30 numeric inputs, 0/1.

The data attacks on them are in `tests.realattacks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.sources.content import parse

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parent / "data" / "real"
BUNDLED_CSV = ROOT / "data" / "breast_cancer.csv"


@dataclass(frozen=True)
class TableSpec:
    """What a user knows about a table: the label, the personal-data flags they pass to
    `init`, and the roles a reviewer of the written config would accept; plus the columns
    each attack targets (chosen once here so every caller attacks the same thing)."""

    name: str
    target: str
    pii: dict[str, str] = field(default_factory=dict)  # --pii COL=drop|pseudonymize
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    # Attack columns. missing_column: a numeric input whose config allows gaps (policy
    # median); `missing_policy` is what the test config adds when `init` set none.
    missing_column: str = ""
    missing_policy: dict[str, str] = field(default_factory=dict)
    tail_column: str = ""  # extreme-value trigger
    band_column: str = ""  # narrow band and single value (a float column: distinct values)
    category_column: str = ""  # unseen category ("" for a table without categories)

    @property
    def init_args(self) -> list[str]:
        """The arguments a user passes to `secure-pipeline init` after the data path."""
        args = ["--target", self.target]
        for col, action in self.pii.items():
            args += ["--pii", f"{col}={action}"]
        return args


SPECS: dict[str, TableSpec] = {
    "penguins": TableSpec(
        name="penguins",
        target="species",
        numeric=("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"),
        categorical=("island", "sex"),
        missing_column="body_mass_g",  # init already gives it "median" (2 gaps)
        tail_column="flipper_length_mm",
        band_column="bill_length_mm",
        category_column="island",
    ),
    "mpg": TableSpec(
        name="mpg",
        target="class",
        numeric=("displ", "year", "cyl", "cty", "hwy"),
        categorical=("manufacturer", "model", "trans", "drv", "fl"),
        missing_column="displ",
        missing_policy={"displ": "median"},  # no gap in the table: init sets no policy
        tail_column="hwy",
        band_column="displ",
        category_column="trans",
    ),
    "diamonds": TableSpec(
        name="diamonds",
        target="cut",
        pii={"email": "drop"},
        numeric=("carat", "depth", "table", "price", "x", "y", "z"),
        categorical=("color", "clarity"),
        ignored=("listing_id", "listed_on", "note"),
        missing_column="carat",
        missing_policy={"carat": "median"},
        tail_column="depth",
        band_column="carat",
        category_column="clarity",
    ),
    "hpc_data": TableSpec(
        name="hpc_data",
        target="class",
        numeric=("compounds", "input_fields", "iterations", "num_pending", "hour"),
        categorical=("protocol", "day"),
        missing_column="compounds",
        missing_policy={"compounds": "median"},  # no gap in the table: init sets no policy
        tail_column="compounds",
        band_column="hour",
        category_column="protocol",
    ),
    "breast_cancer": TableSpec(
        name="breast_cancer",
        target="target",
        missing_column="mean radius",
        missing_policy={"mean radius": "median"},
        tail_column="worst texture",
        band_column="mean texture",
    ),
}
# The three tables, and a fourth with enough rows (4,331) and a small class (6%)
# for its 1.5% triggers to be measurable, as on diamonds.
REAL = ("penguins", "mpg", "diamonds", "hpc_data")


# --- loading and writing ------------------------------------------------------------------


def read_csv_as_ingested(data: bytes) -> pd.DataFrame:
    """CSV bytes parsed exactly as the ingest stage parses them (`parse`), so dtypes
    (text, integers turned float by a gap) are what a run sees."""
    frame, _, _ = parse(data, "csv", max_rows=10_000_000, max_columns=10_000)
    if frame is None:  # only Parquet over a cap yields None
        raise ValueError("unparsable CSV")
    return frame


def as_ingested(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` after a round trip through CSV, as a run would read the file it wrote."""
    return read_csv_as_ingested(frame.to_csv(index=False).encode())


def _diamond_extras(rows: int, seed: int = 17) -> pd.DataFrame:
    """The tester's four extra columns for diamonds, deterministic for `seed`: a distinct
    integer id, a listing date over three years, a short free-text note (built from word
    lists: no digits, so it cannot look like a phone or a card) and an e-mail."""
    rng = np.random.default_rng(seed)
    ids = 700_000 + rng.permutation(rows)
    start = np.datetime64("2021-01-01")
    days = rng.integers(0, 3 * 365, rows)
    dates = (start + days.astype("timedelta64[D]")).astype(str)
    adjectives = np.array(["bright", "cloudy", "sharp", "warm", "cool", "classic", "modern"])
    nouns = np.array(["setting", "polish", "facet", "girdle", "table", "sparkle", "band"])
    extras = np.array(["gift box", "appraisal", "resized", "engraved", "no papers", "returned"])
    note = [
        f"{a} {n}, {e}"
        for a, n, e in zip(
            adjectives[rng.integers(0, len(adjectives), rows)],
            nouns[rng.integers(0, len(nouns), rows)],
            extras[rng.integers(0, len(extras), rows)],
            strict=True,
        )
    ]
    users = rng.integers(0, 40_000, rows)  # buyers repeat, as customers do
    emails = [f"buyer{u}@example.com" for u in users]
    return pd.DataFrame({"listing_id": ids, "listed_on": dates, "note": note, "email": emails})


def load(name: str, *, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The table `name` as ingestion reads it (diamonds with the tester's extra columns).

    `rows`: a seeded sample of that many rows without replacement (e.g. 10k diamonds),
    in the table's order; None: every row.
    """
    if name == "breast_cancer":
        frame = read_csv_as_ingested(BUNDLED_CSV.read_bytes())
    elif name in REAL:
        frame = read_csv_as_ingested((DATA_DIR / f"{name}.csv").read_bytes())
        if name == "diamonds":
            extras = _diamond_extras(len(frame))
            frame = pd.concat([extras[["listing_id", "listed_on"]], frame], axis=1)
            frame = frame.assign(note=extras["note"], email=extras["email"])
    else:
        raise KeyError(f"no table {name!r}; known: {', '.join(SPECS)}")
    if rows is not None and rows < len(frame):
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), rows, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
    return frame


def write_table(frame: pd.DataFrame, directory: Path, name: str) -> Path:
    """Write `frame` as ``directory/name.csv`` (no index) and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


# --- clean resampling ---------------------------------------------------------------------


def subsample(frame: pd.DataFrame, seed: int, *, share: float = 0.8) -> pd.DataFrame:
    """A clean resample: `share` of the rows, without replacement, in the table's order.

    No row is repeated that the table does not repeat itself, so the repeat rate stays
    the table's own (mpg's 9 clean repeats stay about 4%)."""
    n = round(share * len(frame))
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), n, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def bootstrap(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A bootstrap resample (as many rows, with replacement). About 37% of its rows repeat
    another: a stress case for the duplicate screens, not a model of fresh data."""
    rows = np.random.default_rng(seed).integers(0, len(frame), len(frame))
    return frame.iloc[rows].reset_index(drop=True)
