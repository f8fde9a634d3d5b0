"""What the terminal shows while a run goes: one line per stage as it finishes (its
name, gates passed, seconds) and, for a stage still running after `TICK` seconds,
a line every `TICK` seconds, so a 1M-row run never looks stuck.

The CLI attaches its terminal (`attach`) before it redirects the libraries' own
console output to a log file; `--quiet` attaches nothing, and nothing is printed
(the flow run under a Prefect worker has no terminal either). A terminal that stops
accepting lines (its pipe closed) is dropped: an output error is never a gate's or the
run's failure. Every line goes to Prefect's run log too, through the gate lines of
`StageGates`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from tasks.common.gates import GateResult

TICK = 10.0  # seconds between the "still running" lines of a long stage

_lock = threading.Lock()
_out: TextIO | None = None
_fail_word = "BLOCKED"  # a stage with a failed gate: BLOCKED (training), ALERT (monitoring)


def attach(stream: TextIO | None, *, fail_word: str = "BLOCKED") -> None:
    """Print stage lines to `stream` from now on (None: print nothing); a stage with a
    failed gate is shown as `fail_word`."""
    global _out, _fail_word
    with _lock:
        _out, _fail_word = stream, fail_word


def _say(text: str) -> None:
    global _out
    with _lock:
        if _out is None:
            return
        try:
            _out.write(text + "\n")
            _out.flush()
        except (OSError, ValueError):
            # The terminal went away (a closed pipe, `| head -1`; a closed file): the
            # run's work never depends on its terminal, so stop writing, not the run.
            _out = None


def stage_line(name: str, results: Sequence[GateResult], seconds: float | None) -> str:
    """``  validate   BLOCKED  11/12 gates passed   2.6 s`` (aligned columns)."""
    passed = sum(r.passed for r in results)
    verdict = "ok" if passed == len(results) else _fail_word
    took = f"{seconds:6.1f} s" if seconds is not None else ""
    return f"  {name:<9} {verdict:<8} {passed:>2}/{len(results):<2} gates passed {took}"


def finished(name: str, results: Sequence[GateResult], seconds: float | None) -> None:
    _say(stage_line(name, results, seconds))


@contextmanager
def running(name: str, *, tick: float = TICK) -> Iterator[None]:
    """While the block runs, say every `tick` seconds that stage `name` still runs."""
    if _out is None:
        yield
        return
    done = threading.Event()
    started = time.perf_counter()

    def ticker() -> None:
        while not done.wait(tick):
            _say(f"  {name:<9} running  {time.perf_counter() - started:.0f} s ...")

    thread = threading.Thread(target=ticker, name=f"progress-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
