"""The monitoring page in headless chromium (network off): it draws the verdict, the
charts' two colours and text, from file:// with nothing else to load. One chromium
start; the PNG goes to ``.secure-pipeline/test-artifacts/monitor-page.png``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.monitoring import charts
from tasks.monitoring.page import render_page, write_page
from tests.browser import BrowserMissing, artifact_path, chromium_path, screenshot
from tests.unit.test_monitor_page import FACTS, GATES, QUALITY, _report

pytestmark = pytest.mark.integration


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _colour_share(png: Path, rgb: tuple[int, int, int]) -> float:
    """The share of the screenshot's pixels that have (about) colour `rgb`."""
    from PIL import Image

    with Image.open(png) as img:
        counts: list[tuple[int, tuple[int, int, int]]] = (
            img.convert("RGB").getcolors(maxcolors=1 << 24) or []  # type: ignore[assignment]
        )
    near = sum(n for n, c in counts if all(abs(a - b) <= 6 for a, b in zip(c, rgb, strict=True)))
    return near / sum(n for n, _ in counts)


def test_monitor_page_renders_offline_in_chromium(tmp_path: Path) -> None:
    try:
        chromium_path()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    html = render_page(
        title="Monitoring of breast_cancer",
        status="alert",
        gates=GATES,
        drift=_report(),
        quality=QUALITY,
        facts=FACTS,
    )
    page = write_page(tmp_path, "3f2a9c1e-0000", html)
    shot = screenshot(page.as_uri(), artifact_path("monitor-page.png"), width=1280, height=2400)
    print(f"\nscreenshot of the monitoring page: {shot}")
    assert _colour_share(shot, (255, 255, 255)) < 0.97  # more than a blank page
    assert _colour_share(shot, _rgb(charts.REFERENCE_COLOUR)) > 0.001  # reference bars
    assert _colour_share(shot, _rgb(charts.BATCH_COLOUR)) > 0.001  # batch bars
    assert _colour_share(shot, (0x9A, 0x3D, 0x00)) > 0.0002  # the ALERT badge
