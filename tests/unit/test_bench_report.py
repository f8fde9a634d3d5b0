"""`make bench`'s verdicts: a target counts only with its margin, a loaded run may use
the margin but not pass the bound, and the tables show medians with their spread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_report as report
from benchmarks.verdict import Target, passed


@pytest.mark.parametrize(
    ("target", "quiet", "loaded"),
    [
        (Target("wall", 1.12, "<=", 1.25), True, True),  # 1.12 <= 1.25 / 1.1 = 1.136
        (Target("wall", 1.20, "<=", 1.25), False, True),  # inside the margin
        (Target("wall", 1.30, "<=", 1.25), False, False),
        (Target("crypto", 0.34, ">=", 0.30), True, True),  # 0.34 >= 0.33
        (Target("crypto", 0.31, ">=", 0.30), False, True),
        (Target("flat", 1.08, "within", 0.10), True, True),  # |0.08| <= 0.0909
        (Target("flat", 0.905, "within", 0.10), False, True),
        (Target("flat", 1.12, "within", 0.10), False, False),
        (Target("count", 0, "=", 0), True, True),
        (Target("count", 1, "=", 0), False, False),
    ],
)
def test_a_target_holds_with_its_margin_or_only_at_its_bound(
    target: Target, quiet: bool, loaded: bool
) -> None:
    assert target.met(0.1) is quiet
    assert target.met() is loaded
    assert passed([target], 0.1, loaded=False) is quiet
    assert passed([target], 0.1, loaded=True) is loaded
    word = target.verdict(0.1)
    assert word == ("met" if quiet else "met, inside the margin" if loaded else "MISSED")


def _run(wall: float, *, secure: bool, evaluate: float = 1.0) -> dict[str, Any]:
    run: dict[str, Any] = {"wall": wall, "peak_mb": 1000.0 if secure else 900.0}
    if secure:
        run["stages"] = {s: 1.0 for s in report.STAGES} | {"evaluate": evaluate}
        run["checks"] = {"evaluate.quality": 0.2, "screen.label_noise": 0.5}
    else:
        run["stages"] = {t: 1.0 for t in report.PLAIN_TASKS}
    return run


def test_the_summary_takes_medians_shows_the_spread_and_judges_the_ratios(
    tmp_path: Path,
) -> None:
    results = {
        "runs": {
            "100": {
                "plain": [_run(w, secure=False) for w in (10, 11, 30)],
                "secure": [_run(w, secure=True) for w in (12, 13, 14)],
            },
            "1000": {
                "plain": [_run(w, secure=False) for w in (20, 21, 22)],
                "secure": [_run(w, secure=True, evaluate=1.2) for w in (26, 27, 60)],
            },
        },
        "crypto": {"raw_mb_s": 1000.0, "release_mb_s": 700.0},
        "load": {"start": [0.1, 0.2, 0.3], "end": [1.0, 0.5, 0.4]},
    }
    summary = report.summarise(results, 3)
    large = summary["sizes"]["1000"]
    assert large["secure_wall"] == {"median": 27, "min": 26, "max": 60}  # an outlier is shown
    assert large["wall_ratio"] == pytest.approx(27 / 21)
    checks = report.targets(summary, "100", "1000")
    verdicts = [t.verdict(0.1) for t in checks]
    # 1000 rows: 1.29 > 1.25; 100 rows: 1.18 <= 1.5 / 1.1; RSS 1.11; evaluate 1.2 / 1.0;
    # encryption 0.7.
    assert verdicts == ["MISSED", "met", "met", "MISSED", "met"]
    text = report.markdown(summary, checks, margin=0.1, loaded=False)
    assert "27.0 s (26.0-60.0)" in text and "[0.1, 0.2, 0.3]" in text
    assert "| evaluate.quality | 0.20 | 0.20 |" in text
    assert "with 10% margin" in text and "<= 1.14" in text
    report.chart(summary, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
