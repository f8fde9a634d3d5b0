"""SIGINT and SIGTERM during a run: never lost, and held while the run records its end.

Python runs a signal handler between two bytecodes of the main thread, wherever it
is: also inside a weakref callback or a ``__del__`` run by the garbage collector,
where an exception is printed as "Exception ignored in ..." and dropped. A handler
that only raises (ours, Prefect's) then loses the signal, and the run goes on as if
nothing had arrived. `remembered` wraps the handlers in force so that every signal is
also noted; `raise_if_pending` (called as each stage starts) raises a noted signal
whose exception never reached the run.

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
from typing import Any

from tasks.common.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_noted: list[int] = []  # signals that reached a `remembered` handler, not yet handled


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def remembered() -> Iterator[list[int]]:
    """In the block, note every SIGINT and SIGTERM before the handler in force runs
    (it still runs: Prefect's raises TerminationSignal, ours Interrupted). Yields a
    list that, once the block has ended, holds the signals noted in it: one whose
    exception never surfaced was lost, and the caller delivers it again. Outside the
    main thread (where Python cannot set handlers) the block runs as it is."""
    _noted.clear()
    noted: list[int] = []
    if not _main_thread():
        yield noted
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def noting(handler: Any) -> Callable[[int, Any], None]:
        def note(signum: int, frame: Any) -> None:
            _noted.append(signum)
            if callable(handler):
                handler(signum, frame)
            elif handler != signal.SIG_IGN:  # the default action: end the run
                raise Interrupted(signum)

        return note

    for sig, handler in previous.items():
        signal.signal(sig, noting(handler))
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        noted += _noted
        _noted.clear()


def raise_if_pending() -> None:
    """Raise `Interrupted` for a noted signal whose exception was dropped on the way
    (raised inside a finalizer); nothing when none is pending."""
    if _noted:
        raise Interrupted(_noted[0])


@contextmanager
def deferred(stopping: Callable[[], bool]) -> Iterator[None]:
    """Hold SIGINT and SIGTERM in the block; then deliver the first one held, unless
    `stopping()` says the run is ending on a signal already. Outside the main thread
    (where Python cannot set handlers) the block runs as it is."""
    if not _main_thread():
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
