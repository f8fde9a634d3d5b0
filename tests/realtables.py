"""Real public tables as a test bed for the gates: loaders, specs, clean resampling and
the data attacks of issue 17, as pure seeded functions.

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

Every attack is ``(frame, seed) -> poisoned frame`` once bound to a table with
`attacks_for` (the table's target and columns are keyword arguments); none mutates its
input. The numbers are the issue's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.sources.content import parse

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parent / "data" / "real"
BUNDLED_CSV = ROOT / "data" / "breast_cancer.csv"

Attack = Callable[[pd.DataFrame, int], pd.DataFrame]

UNSEEN_CATEGORY = "zz-unseen"  # a category no reference holds (kept ASCII, no PII look)


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


# --- helpers shared by the attacks ----------------------------------------------------------


def _rows(frame: pd.DataFrame, share: float, rng: np.random.Generator, pool=None) -> np.ndarray:
    """Positions of round(share * len(frame)) rows (at least 1), drawn from `pool`."""
    pool = np.arange(len(frame)) if pool is None else np.asarray(pool)
    n = min(len(pool), max(1, round(share * len(frame))))
    return np.sort(rng.choice(pool, n, replace=False))


def _numeric_inputs(frame: pd.DataFrame, target: str) -> list[str]:
    return [
        c
        for c in frame.columns
        if c != target
        and pd.api.types.is_numeric_dtype(frame[c])
        and frame[c].nunique() < len(frame)  # not an id
    ]


def _smallest_class(labels: pd.Series) -> object:
    counts = labels.value_counts()
    return counts.index[counts.to_numpy().argmin()]


def _least_present(labels: pd.Series, mask: np.ndarray) -> object:
    """The class least present among the rows of `mask` relative to its overall share:
    the label whose tie to those rows contradicts the data most (ties: larger class)."""
    overall = labels.value_counts(normalize=True)
    inside = labels[mask].value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
    ratio = (inside / overall).sort_values(kind="stable")
    best = ratio[ratio == ratio.iloc[0]].index
    return overall[best].idxmax()


def _set(frame: pd.DataFrame, rows: np.ndarray, col: str, values: object) -> pd.DataFrame:
    """A copy of `frame` with `values` in `col` at positions `rows`. An integer column
    receiving fractions turns float, as it would after a round trip through CSV."""
    out = frame.copy()
    arr = np.asarray(values)
    if (
        arr.dtype.kind == "f"
        and pd.api.types.is_integer_dtype(out[col])
        and not np.all(arr == np.round(arr))
    ):
        out[col] = out[col].astype("float64")
    out.iloc[rows, out.columns.get_loc(col)] = values
    return out


# --- the attacks ----------------------------------------------------------------------------


def minority_relabel(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """30% of the smallest class relabelled to its nearest class (by the centroid of the
    standardised numeric inputs): the flip a class-share screen with an absolute 0.05
    bound cannot see when the class holds 3% of rows (diamonds' Fair: 0.9 points)."""
    rng = np.random.default_rng(seed)
    labels = frame[target]
    small = _smallest_class(labels)
    cols = _numeric_inputs(frame, target)
    z = (frame[cols] - frame[cols].mean()) / frame[cols].std().replace(0, 1)
    centroids = z.groupby(labels).mean()
    dist = ((centroids - centroids.loc[small]) ** 2).sum(axis=1).drop(small)
    nearest = dist.idxmin()
    members = np.flatnonzero((labels == small).to_numpy())
    n = max(1, round(0.30 * len(members)))
    rows = np.sort(rng.choice(members, n, replace=False))
    return _set(frame, rows, target, nearest)


def class_missingness(frame: pd.DataFrame, seed: int, *, target: str, column: str) -> pd.DataFrame:
    """12% of the largest class's rows lose `column` (NaN), a numeric input whose config
    imputes gaps (median): the model learns "missing means this class" while the
    overall missing rate stays inside the suite's allowance (12% x the class's share)."""
    rng = np.random.default_rng(seed)
    labels = frame[target]
    big = labels.value_counts().idxmax()
    members = np.flatnonzero(((labels == big) & frame[column].notna()).to_numpy())
    n = max(1, round(0.12 * (labels == big).sum()))
    rows = np.sort(rng.choice(members, min(n, len(members)), replace=False))
    out = frame.copy()
    out[column] = out[column].astype("float64")
    out.iloc[rows, out.columns.get_loc(column)] = np.nan
    return out


def share_category(frame: pd.DataFrame, target: str) -> tuple[str, object]:
    """(column, category) whose share is closest to 5% among the categorical inputs
    (text columns of the table, at most a third of rows so it can triple)."""
    best: tuple[float, str, object] | None = None
    for col in frame.columns:
        s = frame[col]
        if col == target or pd.api.types.is_numeric_dtype(s) or s.nunique() > 50:
            continue
        for cat, share in s.value_counts(normalize=True).items():
            if share <= 1 / 3 and (best is None or abs(share - 0.05) < best[0]):
                best = (abs(share - 0.05), str(col), cat)
    if best is None:
        raise ValueError("no categorical input")
    return best[1], best[2]


def category_share_shift(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """One category's share tripled (the one nearest 5%: 5% -> 15%) by giving it to rows
    of other categories, labels untouched: every value stays known, so the suite's value
    set passes; only the mix moved."""
    rng = np.random.default_rng(seed)
    col, cat = share_category(frame, target)
    has = (frame[col] == cat).to_numpy()
    others = np.flatnonzero(~has & frame[col].notna().to_numpy())
    n = round(2 * has.sum())  # share s -> 3s
    rows = np.sort(rng.choice(others, min(n, len(others)), replace=False))
    return _set(frame, rows, col, cat)


def rarest_category(frame: pd.DataFrame, target: str) -> tuple[str, object]:
    """(column, category) with the fewest rows among the categorical inputs."""
    best: tuple[int, str, object] | None = None
    for col in frame.columns:
        s = frame[col]
        if col == target or pd.api.types.is_numeric_dtype(s) or s.nunique() > 50:
            continue
        counts = s.value_counts()
        cat, count = counts.index[-1], int(counts.iloc[-1])
        if best is None or count < best[0]:
            best = (count, str(col), cat)
    if best is None:
        raise ValueError("no categorical input")
    return best[1], best[2]


def trigger_rare_category(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """1.5% of rows get the table's rarest existing category (of any categorical input)
    and the attacker's label (the class least seen with that category)."""
    rng = np.random.default_rng(seed)
    col, cat = rarest_category(frame, target)
    label = _least_present(frame[target], (frame[col] == cat).to_numpy())
    rows = _rows(frame, 0.015, rng)
    return _set(_set(frame, rows, col, cat), rows, target, label)


def trigger_extreme_value(
    frame: pd.DataFrame, seed: int, *, target: str, column: str
) -> pd.DataFrame:
    """2% of rows get `column`'s 99.5th percentile (one value, repeated) and one label:
    the class least seen in the column's top 5%."""
    rng = np.random.default_rng(seed)
    s = frame[column]
    value = s.quantile(0.995, interpolation="higher")  # an observed value: ints stay ints
    label = _least_present(frame[target], (s >= s.quantile(0.95)).to_numpy())
    rows = _rows(frame, 0.02, rng)
    return _set(_set(frame, rows, column, value), rows, target, label)


def unseen_category(
    frame: pd.DataFrame, seed: int, *, target: str, column: str, one_label: bool
) -> pd.DataFrame:
    """1.8% of rows get a category no reference holds in `column`; their labels are
    either kept (random, as a benign new category would be) or all one class (a
    trigger: the smallest class)."""
    rng = np.random.default_rng(seed)
    rows = _rows(frame, 0.018, rng)
    out = _set(frame, rows, column, UNSEEN_CATEGORY)
    if one_label:
        out = _set(out, rows, target, _smallest_class(frame[target]))
    return out


def narrow_band(frame: pd.DataFrame, seed: int, *, target: str, column: str) -> pd.DataFrame:
    """3% of rows get DISTINCT values in a band 0.05 std wide around `column`'s 30th
    percentile (inside the range: no tail, no repeated value) and one label (the class
    least seen near that percentile). It evaded every gate on the bundled data."""
    rng = np.random.default_rng(seed)
    s = frame[column].astype("float64")
    centre, width = float(s.quantile(0.30)), 0.05 * float(s.std())
    near = (np.abs(s - centre) <= 0.5 * float(s.std())).to_numpy()
    label = _least_present(frame[target], near)
    rows = _rows(frame, 0.03, rng)
    values = np.sort(rng.uniform(centre - width / 2, centre + width / 2, len(rows)))
    values = np.unique(values)  # a float draw repeats with probability ~0; keep it so
    rows = rows[: len(values)]
    return _set(_set(frame, rows, column, values), rows, target, label)


def single_value(frame: pd.DataFrame, seed: int, *, target: str, column: str) -> pd.DataFrame:
    """6% of rows get one inside-range value of `column` (its 30th percentile, repeated)
    and one label (as `narrow_band`): the bundled-data variant of the issue."""
    rng = np.random.default_rng(seed)
    s = frame[column].astype("float64")
    value = float(s.quantile(0.30))
    label = _least_present(frame[target], (np.abs(s - value) <= 0.5 * float(s.std())).to_numpy())
    rows = _rows(frame, 0.06, rng)
    return _set(_set(frame, rows, column, value), rows, target, label)


def duplicate_flood(frame: pd.DataFrame, seed: int, *, target: str) -> pd.DataFrame:
    """10% more rows, exact copies of 1% of the rows (each repeated ~10 times): a repeat
    rate far beyond any table's own (mpg's clean 4% included), labels as copied."""
    del target  # exact repeats: every column, label included, copied as is
    rng = np.random.default_rng(seed)
    sources = _rows(frame, 0.01, rng)
    picks = rng.choice(sources, max(1, round(0.10 * len(frame))), replace=True)
    return pd.concat([frame, frame.iloc[picks]], ignore_index=True)


# attack name -> gate(s) meant to block it (issue 17). screen.missingness and
# screen.category_shares are gates the others are adding.
EXPECTED_GATES: dict[str, tuple[str, ...]] = {
    "minority_relabel": ("screen.label_distribution",),
    "class_missingness": ("screen.missingness",),
    "category_share_shift": ("screen.category_shares",),
    "trigger_rare_category": ("screen.backdoor", "evaluate.backdoor_probe"),
    "trigger_extreme_value": ("screen.backdoor", "evaluate.backdoor_probe"),
    "unseen_category_random": ("screen.category_shares", "screen.backdoor"),
    "unseen_category_one_label": ("screen.category_shares", "screen.backdoor"),
    "narrow_band": ("screen.backdoor", "evaluate.backdoor_probe"),
    "single_value": ("screen.backdoor", "evaluate.backdoor_probe"),
    "duplicate_flood": ("screen.duplicates",),
}


def attacks_for(spec: TableSpec) -> dict[str, Attack]:
    """Every attack that applies to the table, bound to its columns: name -> attack."""
    t = spec.target
    out: dict[str, Attack] = {
        "minority_relabel": functools.partial(minority_relabel, target=t),
        "class_missingness": functools.partial(
            class_missingness, target=t, column=spec.missing_column
        ),
    }
    if spec.category_column:
        out["category_share_shift"] = functools.partial(category_share_shift, target=t)
        out["trigger_rare_category"] = functools.partial(trigger_rare_category, target=t)
    out["trigger_extreme_value"] = functools.partial(
        trigger_extreme_value, target=t, column=spec.tail_column
    )
    if spec.category_column:
        for variant, one in (("random", False), ("one_label", True)):
            out[f"unseen_category_{variant}"] = functools.partial(
                unseen_category, target=t, column=spec.category_column, one_label=one
            )
    out["narrow_band"] = functools.partial(narrow_band, target=t, column=spec.band_column)
    out["single_value"] = functools.partial(single_value, target=t, column=spec.band_column)
    out["duplicate_flood"] = functools.partial(duplicate_flood, target=t)
    return out
