"""The security report page in headless chromium (network off): from file://, with
nothing else to load, it shows every gate and draws its charts in their colours. One
chromium start per check; the PNG goes to
``.secure-pipeline/test-artifacts/security-report-synthetic.png``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasks.report import svg
from tests.browser import (
    BrowserMissing,
    artifact_path,
    chromium_path,
    dump_dom,
    screenshot,
    visible_text,
)
from tests.integration.test_monitor_page_browser import _colour_share, _rgb
from tests.unit.test_security_report import NEW, TODAY, _render

pytestmark = pytest.mark.integration


def test_security_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    try:
        chromium_path()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    started = time.perf_counter()
    html = _render([*TODAY[:1], *NEW, *TODAY[3:]])
    rendered = time.perf_counter() - started
    page = tmp_path / "security-report.html"
    page.write_text(html, encoding="utf-8")
    text = visible_text(dump_dom(page.as_uri()))
    for gate in ("ingest.integrity", "evaluate.membership_inference", "evaluate.dp_audit"):
        assert gate in text
    assert "BLOCKED" in text and "TPR at 1% FPR" in text
    shot = screenshot(
        page.as_uri(), artifact_path("security-report-synthetic.png"), width=1280, height=2000
    )
    print(f"\nrendered in {rendered * 1000:.1f} ms, {len(html.encode())} bytes; screenshot {shot}")
    assert _colour_share(shot, (255, 255, 255)) < 0.97  # more than a blank page
    assert _colour_share(shot, _rgb(svg.ATTACK_COLOUR)) > 0.0005  # ROC, attack line
    assert _colour_share(shot, _rgb(svg.CERTIFIED_COLOUR)) > 0.0005  # certified line, bars
    assert rendered < 1.0
