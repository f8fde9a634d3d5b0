"""What a column holds, read from its content: dates and timestamps, free text, ids.

`secure-pipeline init` uses these to leave such columns out of the model inputs and to
say why in the config it writes. A reason states what was measured (shares, word
counts, distinct values), never a value of the table: the config is reviewed and
committed, and a cell may hold personal data.
"""

from __future__ import annotations

import re

import pandas as pd

SAMPLE = 2000  # values read per column: shares are stable well before that
DATE_SHARE = 0.90  # at least this share of values parse as dates: a date column
TEXT_WORDS = 3  # median words per value from which text is prose, not a category
TEXT_DISTINCT = 0.5  # ... when at least this share of its values are distinct
ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}"  # 2013-04-01
    r"([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"  # [T12:30[:00.5][Z]]
)
# 01/04/2013, 1.4.2013, 2013/04/01 (day or month first: only "a date" matters here).
OTHER_DATE = re.compile(r"^(\d{1,2}[/.]\d{1,2}[/.](\d{4}|\d{2})|\d{4}/\d{1,2}/\d{1,2})$")


def _sample(series: pd.Series) -> pd.Series:
    values = series.dropna()
    if len(values) > SAMPLE:  # a fixed sample: the same table gives the same reasons
        values = values.sample(n=SAMPLE, random_state=0)
    return values.astype(str).str.strip()


def _pct(share: float) -> str:
    # Only every row is 100%: 99.6% rounded would claim it, so it says 99%.
    return "100%" if share == 1 else f"{min(round(share * 100), 99)}%"


def date_reason(series: pd.Series) -> str | None:
    """Why `series` (text) is a date or timestamp column, or None when it is not.

    A value counts when its shape is a date (ISO 8601, or day/month/year with ``/`` or
    ``.``) and it names a real day (2013-02-30 does not).
    """
    values = _sample(series)
    if values.empty:
        return None
    iso = values[values.str.match(ISO_DATE)]
    iso_ok = int(pd.to_datetime(iso, format="ISO8601", errors="coerce", utc=True).notna().sum())
    other = values[values.str.match(OTHER_DATE)]
    other_ok = int(pd.to_datetime(other, format="mixed", errors="coerce").notna().sum())
    share = (iso_ok + other_ok) / len(values)
    if share < DATE_SHARE:
        return None
    timed = int(iso.str.contains(r"[ T]\d{2}:", regex=True).sum())
    what = "timestamps" if timed > len(values) / 2 else "dates"
    style = "ISO " if iso_ok >= other_ok else ""
    return f"parses as {style}{what} in {_pct(share)} of rows"


def text_reason(series: pd.Series) -> str | None:
    """Why `series` (text) is free text (prose, comments, addresses), or None."""
    values = _sample(series)
    if values.empty:
        return None
    words = values.str.split().str.len()
    median = float(words.median())
    distinct = values.nunique() / len(values)
    if median < TEXT_WORDS or distinct < TEXT_DISTINCT:
        return None
    return f"free text: median {median:g} words, {_pct(distinct)} distinct"


def id_reason(series: pd.Series) -> str | None:
    """Why `series` looks like an identifier (a distinct value in every row), or None."""
    values = series.dropna()
    if len(values) < 2 or values.nunique() != len(values):
        return None
    if pd.api.types.is_numeric_dtype(values):
        whole = pd.api.types.is_integer_dtype(values) or bool((values == values.round()).all())
        if not whole:
            return None  # distinct measurements are normal for a continuous input
        return f"a distinct integer in each of {len(values)} rows: looks like an id"
    return f"a distinct value in each of {len(values)} rows: looks like an id"
