"""A bench target and its verdict, with a margin.

A target holds only if it still holds on a busier or slower machine than the one that
measured it, so `make bench` asks for a margin (10% by default): a ratio bound of 1.25
must be met at 1.25 / 1.1 = 1.14; a throughput floor of 0.30 at 0.33; "flat within
10%" at 10% / 1.1 = 9.1%. A run taken beside other work (``--loaded``) may fall inside
the margin but not past the bound.
"""

from __future__ import annotations

from typing import NamedTuple

MARGIN = 0.10


class Target(NamedTuple):
    what: str
    measured: float
    op: str  # "<=", ">=", "within" (|measured - 1| <= bound) or "=" (counts)
    bound: float

    def met(self, margin: float = 0.0) -> bool:
        if self.op == "<=":
            return self.measured <= self.bound / (1 + margin)
        if self.op == ">=":
            return self.measured >= self.bound * (1 + margin)
        if self.op == "within":
            return abs(self.measured - 1) <= self.bound / (1 + margin)
        return self.measured == self.bound

    def needed(self, margin: float) -> str:
        """The bound with the margin applied, as the table shows it."""
        if self.op == "<=":
            return f"<= {self.bound / (1 + margin):.3g}"
        if self.op == ">=":
            return f">= {self.bound * (1 + margin):.3g}"
        if self.op == "within":
            low, high = 1 - self.bound / (1 + margin), 1 + self.bound / (1 + margin)
            return f"{low:.3g} - {high:.3g}"
        return f"= {self.bound:g}"

    @property
    def bound_text(self) -> str:
        if self.op == "within":
            return f"{1 - self.bound:.3g} - {1 + self.bound:.3g}"
        return f"{self.op} {self.bound:g}"

    def verdict(self, margin: float) -> str:
        if self.met(margin):
            return "met"
        return "met, inside the margin" if self.met() else "MISSED"


def table(targets: list[Target], margin: float) -> list[str]:
    """Markdown rows: every target, its bound, the bound with the margin, the verdict."""
    lines = [
        f"| target | measured | bound | with {margin:.0%} margin | |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.what} | {t.measured:.2f} | {t.bound_text} | {t.needed(margin)} | "
        f"{t.verdict(margin)} |"
        for t in targets
    ]
    return lines


def passed(targets: list[Target], margin: float, *, loaded: bool) -> bool:
    """Every target met with the margin; beside other work (`loaded`), at the bound."""
    return all(t.met(0.0 if loaded else margin) for t in targets)
