"""A signal whose exception lands in a finalizer is dropped by Python ("Exception
ignored in ..."): `remembered` notes it, so the run still stops (measured: a SIGTERM
during the embedded store's start-up was swallowed in a weakref callback, and the run
went on to deploy)."""

from __future__ import annotations

import gc
import signal
from collections.abc import Iterator

import pytest

from tasks.common.errors import Interrupted
from tasks.common.signals import raise_if_pending, remembered


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@pytest.fixture
def raising_handler() -> Iterator[None]:
    """The CLI's handler: a signal becomes an `Interrupted` exception."""
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class _SignalOnCollect:
    """Its finalizer receives SIGTERM: the handler's exception is raised inside it."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)


def _signal_inside_a_finalizer() -> None:
    obj = _SignalOnCollect()
    del obj  # refcount zero: __del__ runs here, the Interrupted it raises is dropped
    gc.collect()


DROPPED = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@DROPPED
@pytest.mark.usefixtures("raising_handler")
def test_without_remembering_the_signal_is_lost() -> None:
    _signal_inside_a_finalizer()  # returns normally: nothing stops the caller
    raise_if_pending()  # and nothing was noted


@DROPPED
@pytest.mark.usefixtures("raising_handler")
def test_a_dropped_signal_is_raised_at_the_next_check() -> None:
    with remembered() as lost:
        _signal_inside_a_finalizer()
        with pytest.raises(Interrupted) as caught:
            raise_if_pending()
    assert caught.value.signum == signal.SIGTERM
    assert lost == [signal.SIGTERM]  # what the kernel delivers again after its record


@pytest.mark.usefixtures("raising_handler")
def test_a_signal_that_surfaced_still_raises_and_nothing_stays_pending() -> None:
    with pytest.raises(Interrupted), remembered():
        signal.raise_signal(signal.SIGTERM)
    raise_if_pending()  # the block is over: nothing noted any more
    assert signal.getsignal(signal.SIGTERM) is _interrupt  # the handler is back


def test_without_a_signal_nothing_is_pending() -> None:
    with remembered() as lost:
        raise_if_pending()
    assert lost == []
