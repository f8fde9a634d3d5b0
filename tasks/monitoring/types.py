"""What a monitoring run measures, in one shape for the gate, the report, the metrics
and the page (`tasks.monitoring.drift` fills it; `metrics` and `page` read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ColumnKind = Literal["numeric", "categorical", "label"]


@dataclass(frozen=True)
class Group:
    """One group a column's rows are counted in: a reference bin, a category, the rows
    beyond the reference range, an unseen category, the missing cells."""

    label: str  # e.g. "[12.1, 13.4)", "above 28.1", "'red'", "unseen", "missing"
    reference: float  # share of the reference's rows in this group
    batch: float  # share of the batch's rows in this group
    p_adjusted: float = 1.0  # Holm-adjusted p of the group's comparison
    flagged: bool = False  # significant and material


@dataclass(frozen=True)
class ColumnDrift:
    """One column of the batch against the reference (the label is a column too)."""

    column: str
    kind: ColumnKind
    moved: bool  # some group of the column is flagged
    psi: float  # population stability index over the groups (reported, smoothed)
    worst: str  # the group that moved most, in words ("[17.9, 28.1]: 0.31 vs 0.05")
    p_adjusted: float  # the smallest Holm-adjusted p among the column's groups
    shift: float  # the worst group's share in the batch minus in the reference
    groups: list[Group] = field(default_factory=list)


@dataclass(frozen=True)
class DriftReport:
    """Every column of one batch; `columns` lists the moved ones first."""

    rows: int  # rows in the batch
    reference_rows: int
    alpha: float  # family-wise false-alarm rate of a clean batch (any size)
    threshold: dict[str, float]  # alpha and the materiality floors, as the gate shows them
    columns: list[ColumnDrift] = field(default_factory=list)

    @property
    def moved(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.moved]

    def as_report(self) -> dict[str, Any]:
        """JSON-ready, groups left out (the page and the metrics read the object)."""
        return {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "alpha": self.alpha,
            "threshold": self.threshold,
            "moved": [c.column for c in self.moved],
            "columns": {
                c.column: {k: v for k, v in asdict(c).items() if k not in ("column", "groups")}
                for c in self.columns
            },
        }


@dataclass(frozen=True)
class QualityReport:
    """The champion on the batch: measured with labels, estimated without."""

    rows: int
    labelled: bool
    accuracy: float | None  # on the batch's labels (None without labels)
    estimated_accuracy: float | None  # confidence-based estimate (no labels needed)
    floor: float  # the accuracy floor the champion was held to
    method: str  # how it was measured or estimated, with its assumptions, in words
