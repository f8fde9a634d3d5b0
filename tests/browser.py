"""Headless Debian chromium for the tests, driven by its command line.

No playwright, no selenium: ``chromium --headless --dump-dom URL`` prints the DOM after
the page loaded, ``--screenshot`` saves a PNG; a fresh profile per call, ~0.6 s each.
`make browser` (a prerequisite of `make test`) installs ``/usr/bin/chromium``.

Offline (the default) sends every request to a proxy on 127.0.0.1:9, where nothing
listens: an external URL fails with ``net::ERR_PROXY_CONNECTION_FAILED``, and nothing
is resolved either (a fixed proxy resolves the names). Chromium never proxies
loopback (localhost, 127.0.0.0/8, [::1]) nor file://, so a page on 127.0.0.1 (the
Prefect UI, the MLflow UI) still loads. Do not add ``--proxy-bypass-list=<-loopback>``:
that sends loopback to the dead proxy too.

A JavaScript page that renders after timers or fetches: pass
``virtual_time_budget_ms``; chromium then runs the page's clock fast until the budget
is spent with no network request pending, then dumps. `wait_for_text` also retries
until a server that is still starting answers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / ".secure-pipeline" / "test-artifacts"
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container; the page is our own file or localhost
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
)
OFFLINE_FLAGS = ("--proxy-server=127.0.0.1:9",)  # discard port: nothing listens
_LOAD_FAILED = re.compile(r"Page load failed: (net::[A-Z_]+)")


class BrowserMissing(RuntimeError):
    """Chromium is not installed."""


class PageLoadError(RuntimeError):
    """Chromium could not load the page; `error` is its net:: error code."""

    def __init__(self, url: str, error: str) -> None:
        super().__init__(f"chromium could not load {url}: {error}")
        self.url, self.error = url, error


def chromium_path() -> str:
    """``/usr/bin/chromium``, or `BrowserMissing` with the one-line fix."""
    if not os.access(CHROMIUM, os.X_OK):
        raise BrowserMissing(
            f"{CHROMIUM} not found: run `make browser` (as root it apt-get installs chromium)"
        )
    return str(CHROMIUM)


def _run(
    url: str,
    mode: Sequence[str],
    *,
    offline: bool,
    timeout: float,
    virtual_time_budget_ms: int | None,
    extra_args: Sequence[str],
) -> str:
    """Run chromium once on `url` with a fresh profile; its stdout."""
    binary = chromium_path()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        args = [binary, *BASE_FLAGS, f"--user-data-dir={profile}"]
        args += [*(OFFLINE_FLAGS if offline else ()), *extra_args, *mode]
        if virtual_time_budget_ms is not None:
            args.append(f"--virtual-time-budget={int(virtual_time_budget_ms)}")
        proc = subprocess.Popen(
            [*args, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a timeout kills every helper
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"chromium did not finish {url} within {timeout} s") from None
    failed = _LOAD_FAILED.search(err)
    if failed:
        raise PageLoadError(url, failed.group(1))
    if proc.returncode != 0:
        lines = [ln for ln in err.splitlines() if "dbus" not in ln and ln.strip()]
        raise RuntimeError(
            f"chromium exited {proc.returncode} on {url}: {lines[-1] if lines else ''}"
        )
    return out


def dump_dom(
    url: str,
    *,
    offline: bool = True,
    timeout: float = 60,
    virtual_time_budget_ms: int | None = None,
    extra_args: Sequence[str] = (),
) -> str:
    """The serialized DOM of `url` after load (after `virtual_time_budget_ms` of page
    time with no pending request, when given).

    Raises:
        BrowserMissing: no chromium.
        PageLoadError: the page did not load (offline and external: ERR_PROXY_CONNECTION_FAILED).
        TimeoutError: chromium took longer than `timeout` seconds.
    """
    return _run(
        url,
        ["--dump-dom"],
        offline=offline,
        timeout=timeout,
        virtual_time_budget_ms=virtual_time_budget_ms,
        extra_args=extra_args,
    )


def screenshot(
    url: str,
    path: Path | str,
    *,
    offline: bool = True,
    width: int = 1400,
    height: int = 1000,
    timeout: float = 60,
    virtual_time_budget_ms: int | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Save a PNG of the top `width` x `height` pixels of `url`; returns its path."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _run(
        url,
        [f"--screenshot={path}", f"--window-size={width},{height}"],
        offline=offline,
        timeout=timeout,
        virtual_time_budget_ms=virtual_time_budget_ms,
        extra_args=extra_args,
    )
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url} to {path}")
    return path


def artifact_path(name: str) -> Path:
    """Where a test keeps a file for people to look at: ``.secure-pipeline/test-artifacts/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


class _Text(HTMLParser):
    """Text a reader sees: everything but script, style, template and head content."""

    _HIDDEN = frozenset({"script", "style", "template", "head", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    """The text of a DOM dump without scripts and styles, whitespace collapsed."""
    parser = _Text()
    parser.feed(dom)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def wait_for_text(
    url: str,
    text: str,
    *,
    offline: bool = True,
    timeout: float = 60,
    virtual_time_budget_ms: int = 15_000,
    extra_args: Sequence[str] = (),
) -> str:
    """The DOM of a JavaScript page (e.g. the Prefect or MLflow UI on 127.0.0.1) once
    its visible text holds `text`; retried (a server still starting refuses, an app
    still booting shows a spinner) until `timeout` seconds have passed.

    Raises:
        TimeoutError: `text` never showed; the message quotes what did.
    """
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        left = deadline - time.monotonic()
        try:
            dom = dump_dom(
                url,
                offline=offline,
                timeout=max(left, 5),
                virtual_time_budget_ms=virtual_time_budget_ms,
                extra_args=extra_args,
            )
            seen = visible_text(dom)
            if text in seen:
                return dom
        except PageLoadError as exc:
            seen = exc.error
        if time.monotonic() + 0.5 >= deadline:
            raise TimeoutError(
                f"{text!r} not shown by {url} within {timeout} s; saw {seen[:200]!r}"
            )
        time.sleep(0.5)
