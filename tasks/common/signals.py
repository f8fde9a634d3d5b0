"""Holding SIGINT and SIGTERM while a run writes down how it ended.

A run interrupted in a stage records its end (audit entry, anchor, MLflow, report,
Prefect artifacts) before it stops. A second signal, or the first one landing just
after the last stage, must not cut that record short: `deferred` holds the signals
for the length of the block and delivers a held one when the block ends (unless the
run is stopping already, then it is dropped: one interruption is enough).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred(stopping: Callable[[], bool]) -> Iterator[None]:
    """Hold SIGINT and SIGTERM in the block; then deliver the first one held, unless
    `stopping()` says the run is ending on a signal already. Outside the main thread
    (where Python cannot set handlers) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held and not stopping():
            signal.raise_signal(held[0])
