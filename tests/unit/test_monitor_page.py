"""The monitoring page (tasks/monitoring/page.py): one self-contained document, no script
and no URL, every data string inert, moved columns first, bounded in size."""

from __future__ import annotations

import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tasks.common.files import PRIVATE
from tasks.common.gates import GateResult, failed, passed
from tasks.monitoring import charts
from tasks.monitoring.page import CSP, MAX_CHARTS, MAX_LISTED, render_page, write_page
from tasks.monitoring.types import ColumnDrift, DriftReport, Group, QualityReport

HOSTILE = "<script>alert(1)</script>"
QUOTED = 'a"b\' onmouseover="x'
URLISH = "https://evil.example/x?a=1"
FACTS = {
    "model": "breast_cancer",
    "version": "7",
    "batch": f"file:///data/{HOSTILE}.csv",
    "rows": "400",
    "time": "2026-12-05T10:00:00Z",
    "run id": "3f2a9c1e-0000-4000-8000-000000000000",
}


def _bins(shift: float = 0.0, n: int = 8) -> list[Group]:
    """`n` numeric bins of equal reference share; `shift` moves share to the last bin."""
    ref = 1.0 / n
    groups = [Group(f"[{i}.0, {i + 1}.0)", ref, ref - shift / (n - 1)) for i in range(n - 1)]
    last = Group(f"[{n - 1}.0, {n}.0]", ref, ref + shift, 1e-6 if shift else 1.0, bool(shift))
    return [*groups, last]


def _column(
    name: str,
    *,
    moved: bool = False,
    kind: str = "numeric",
    psi: float = 0.01,
    groups: list[Group] | None = None,
) -> ColumnDrift:
    return ColumnDrift(
        column=name,
        kind=kind,  # type: ignore[arg-type]
        moved=moved,
        psi=psi,
        worst=f"{name}: 0.31 vs 0.05" if moved else "-",
        p_adjusted=1e-6 if moved else 0.9,
        shift=0.26 if moved else 0.01,
        groups=groups if groups is not None else _bins(0.26 if moved else 0.0),
    )


def _report(n_unmoved: int = 100) -> DriftReport:
    colour = [
        Group("'red'", 0.2, 0.1),
        Group("'blue'", 0.5, 0.4),
        Group("'green'", 0.3, 0.2),
        Group("unseen", 0.0, 0.3, 1e-9, True),
        Group("missing", 0.0, 0.0),
    ]
    label = [Group("'0'", 0.63, 0.6), Group("'1'", 0.37, 0.4)]
    unmoved = [_column(f"feature {i:04d}") for i in range(n_unmoved)]
    columns = [
        *unmoved[:3],  # the producer's order is not trusted: moved ones come first anyway
        _column(HOSTILE, moved=True, psi=0.4),
        _column(QUOTED, moved=True, psi=0.2),
        _column(URLISH, kind="categorical", moved=True, psi=0.3, groups=colour),
        _column("target", kind="label", groups=label),
        *unmoved[3:],
    ]
    return DriftReport(
        rows=400,
        reference_rows=569,
        alpha=0.01,
        threshold={"alpha": 0.01, "min_shift": 0.05},
        columns=columns,
    )


GATES: list[GateResult] = [
    passed("monitor.integrity", metrics={"verified": True}, detail="release v7 verifies"),
    passed("monitor.audit", metrics={"records": 12}),
    failed(
        "monitor.drift",
        metrics={"moved": 3},
        threshold={"alpha": 0.01},
        detail=f"columns moved: {HOSTILE}",
    ),
    passed("monitor.quality", metrics={"accuracy": 0.9412}, threshold={"min": 0.85}),
]
QUALITY = QualityReport(
    rows=400,
    labelled=True,
    accuracy=0.9412,
    estimated_accuracy=None,
    floor=0.85,
    method="accuracy on the batch's labels (one-sided binomial test against the floor)",
)


class _Doc(HTMLParser):
    """Tags, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        self.ids += [v for k, v in attrs if k == "id" and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Doc:
    doc = _Doc()
    doc.feed(page)
    doc.close()
    return doc


def assert_self_contained(page: str) -> _Doc:
    """No script, no URL anywhere, no event handler, the strict policy in place."""
    doc = parse(page)
    assert "script" not in doc.tags and "<script" not in page.lower()
    assert not {"img", "link", "iframe", "object", "embed", "a", "base", "form"} & set(doc.tags)
    assert "://" not in page and "url(" not in page.lower() and "@import" not in page.lower()
    assert not re.search(r"""=\s*["'][^"']*//""", page)  # raw attribute values
    for name, value in doc.attrs:
        assert "//" not in value and not name.startswith("on"), (name, value)
        assert name not in ("src", "href", "xlink:href", "srcset", "action")
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert CSP == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return doc


def test_page_is_self_contained_and_escapes_hostile_names() -> None:
    page = render_page(
        title=f"Monitoring of {HOSTILE}",
        status="alert",
        gates=GATES,
        drift=_report(),
        quality=QUALITY,
        facts=FACTS,
    )
    doc = assert_self_contained(page)
    text = " ".join(doc.text)
    # The hostile strings come out as text a reader sees, never as markup.
    assert HOSTILE in text and QUOTED in text and URLISH in text
    assert "&lt;script&gt;alert(1)&lt;&#47;script&gt;" in page
    assert "a&quot;b&#x27; onmouseover=&quot;x" in page
    assert 'id="status" class="badge alert">ALERT<' in page
    for key, value in FACTS.items():
        assert key in text and value in text
    # Verdicts first, then every gate in a table.
    assert re.search(r'id="verdict-integrity">.*?passed', page)
    assert "monitor.drift" in text and "moved=3" in text and "alpha=0.01" in text
    order = ['id="verdict-audit"', 'id="quality"', 'id="gates"', 'id="drift"']
    assert [page.index(o) for o in order] == sorted(page.index(o) for o in order)
    assert 'class="failed" data-gate="monitor.drift"' in page
    # Quality: measured accuracy against the floor, with the method in words.
    assert "measured accuracy 0.941" in text and "at or above the floor" in text
    assert "one-sided binomial test" in text


def test_moved_columns_come_first_with_a_chart_each() -> None:
    report = _report()
    page = render_page(
        title="m", status="alert", gates=GATES, drift=report, quality=QUALITY, facts=FACTS
    )
    assert_self_contained(page)
    cards = re.findall(r'id="col-(\d+)" data-moved="(true|false)"', page)
    assert [int(i) for i, _ in cards] == list(range(len(report.columns)))
    moved = [m for _, m in cards]
    assert moved[:3] == ["true"] * 3 and set(moved[3:]) == {"false"}
    # Largest psi first among the moved: hostile (0.4), the URL-like one (0.3), quoted (0.2).
    section = page[page.index('id="drift"') :]
    assert section.index(charts.esc(HOSTILE)) < section.index(charts.esc(URLISH))
    assert section.index(charts.esc(URLISH)) < section.index(charts.esc(QUOTED))
    assert "3 of 104 columns moved" in page
    assert page.count('<svg class="chart"') == MAX_CHARTS  # the rest are listed, not drawn
    assert 'id="more-columns"' in page and 'id="hidden"' not in page
    # Two colours and a legend in every chart; a flagged group in bold and named.
    assert page.count(f'fill="{charts.REFERENCE_COLOUR}"') > MAX_CHARTS
    assert page.count(">reference</text>") == MAX_CHARTS
    assert "\u2192 30.0% flagged</text>" in page  # the unseen category: 0% -> 30%


def test_groups_in_reading_order_and_capped() -> None:
    cats = [Group(f"'c{i}'", r, r) for i, r in enumerate([0.1, 0.3, 0.2])]
    column = _column("c", kind="categorical", groups=[Group("unseen", 0, 0.1), *cats])
    assert [g.label for g in charts.ordered(column)] == ["'c1'", "'c2'", "'c0'", "unseen"]
    numeric = _column("n", groups=list(reversed(_bins())))
    assert charts.ordered(numeric) == numeric.groups  # bins as the reference cut them
    many = [Group(f"'k{i}'", 1 / 100, 1 / 100, flagged=i == 99) for i in range(100)]
    bars = charts.capped(many)
    assert len(bars) == charts.MAX_GROUPS and bars[-1].label == "others (76 groups)"
    assert any(b.label == "'k99'" and b.flagged for b in bars)  # a flagged group stays visible
    assert sum(b.reference for b in bars) == pytest.approx(1.0)
    nan = float("nan")
    odd = _column("odd", psi=nan, groups=[Group("[0, 1)", nan, float("inf"), nan, True)])
    page = render_page(
        title="m",
        status="alert",
        gates=[],
        drift=DriftReport(rows=1, reference_rows=1, alpha=0.01, threshold={}, columns=[odd]),
        quality=None,
        facts={},
    )
    assert "psi <b>n/a</b>" in page and "0% \u2192 0% flagged" in page  # no NaN drawn
    svg = charts.group_chart(_column("wide", kind="categorical", groups=many))
    assert svg.count(f'fill="{charts.BATCH_COLOUR}"') == charts.MAX_GROUPS + 1  # + legend


def test_a_2000_column_report_gives_a_page_of_bounded_size() -> None:
    wide = [
        _column(
            f"c{i:05d} " + "x" * 200,
            moved=i % 3 == 0,
            psi=i / 2000,
            groups=[Group(f"'v{j}'", 1 / 40, 1 / 40) for j in range(40)],
        )
        for i in range(2000)
    ]
    report = DriftReport(rows=10**6, reference_rows=10**6, alpha=0.01, threshold={}, columns=wide)
    page = render_page(
        title="wide", status="alert", gates=GATES, drift=report, quality=QUALITY, facts=FACTS
    )
    assert_self_contained(page)
    size = len(page.encode())
    print(f"\n2,000 columns of 40 groups: {size / 1024:.0f} KiB")
    assert size < 1_000_000  # measured 0.6 MB; the caps, not the 2,000 columns, set it
    hidden = 2000 - MAX_CHARTS - MAX_LISTED
    assert f"{hidden} more columns" in page and "667 of 2000 columns moved" in page
    assert page.count('<svg class="chart"') == MAX_CHARTS


def test_without_a_batch_the_page_shows_the_verdicts_only() -> None:
    gates = [GATES[0], failed("monitor.audit", metrics={"broken_at": 4}, detail="re-anchor")]
    page = render_page(title="m", status="failed", gates=gates, drift=None, quality=None, facts={})
    doc = assert_self_contained(page)
    text = " ".join(" ".join(doc.text).split())
    assert 'class="badge fail">FAILED<' in page
    assert "Integrity: passed" in text and "Audit: FAILED" in text and "broken_at=4" in text
    assert "No batch was read" in text and "Not measured (no batch)" in text
    assert "<svg" not in page


def test_estimated_quality_and_missing_verdicts_are_named() -> None:
    estimate = QualityReport(
        rows=50,
        labelled=False,
        accuracy=None,
        estimated_accuracy=0.8,
        floor=0.85,
        method="average confidence (assumes the model stays calibrated on the batch)",
    )
    page = render_page(
        title="m", status="healthy", gates=[], drift=None, quality=estimate, facts={}
    )
    text = " ".join(" ".join(parse(page).text).split())
    assert "estimated accuracy 0.800" in text and "BELOW the floor" in text
    assert "not a measurement" in text and "assumes the model stays calibrated" in text
    assert "Integrity: not run" in text and "no gate ran" in text
    assert 'class="badge ok">HEALTHY<' in page
    odd = render_page(title="m", status="<x>", gates=[], drift=None, quality=None, facts={})
    assert 'class="badge fail">&lt;X&gt;<' in odd  # an unknown status looks like a failure


def test_write_page_names_by_time_and_run_and_stays_in_its_directory(tmp_path: Path) -> None:
    path = write_page(tmp_path / "pages", "3f2a9c1e-aaaa-bbbb", "<p>x</p>")
    assert re.fullmatch(r"\d{8}T\d{6}Z-3f2a9c1e\.html", path.name)
    assert path.parent == tmp_path / "pages" and path.read_text() == "<p>x</p>"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    odd = write_page(tmp_path, "../../x", "<p>y</p>", mode=PRIVATE)
    assert odd.parent == tmp_path and odd.name.endswith("-______x.html")
    assert stat.S_IMODE(odd.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
