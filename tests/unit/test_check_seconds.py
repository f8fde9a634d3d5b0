"""Each check's wall seconds reach the run report's ``checks`` (what a stage's time is
made of), including checks that run on a worker thread beside the stage."""

from __future__ import annotations

import contextvars
import threading
import time

from tasks.common.gates import collecting_seconds, passed, run_check, timed


def _slow(name: str, seconds: float):
    time.sleep(seconds)
    return passed(name)


def test_a_check_run_inside_a_collection_is_timed_and_a_raising_one_too() -> None:
    seconds: dict[str, float] = {}
    with collecting_seconds(seconds):
        run_check("evaluate.quality", _slow, "evaluate.quality", 0.05)
        result = run_check("evaluate.adversarial", lambda: 1 / 0)
    assert not result.passed  # failed closed, and still timed
    assert list(seconds) == ["evaluate.quality", "evaluate.adversarial"]
    assert 0.05 <= seconds["evaluate.quality"] < 1.0


def test_a_name_timed_twice_adds_up_and_nothing_is_kept_outside_a_collection() -> None:
    outside: dict[str, float] = {}
    run_check("evaluate.quality", _slow, "evaluate.quality", 0.01)  # no collection
    seconds: dict[str, float] = {}
    with collecting_seconds(seconds):
        with timed("validate.expectations"):
            time.sleep(0.03)
        with timed("validate.expectations"):
            time.sleep(0.03)
    assert seconds["validate.expectations"] >= 0.06
    assert outside == {}
    with timed("validate.expectations"):  # after the block: not collected
        pass
    assert list(seconds) == ["validate.expectations"]


def test_a_check_on_a_worker_thread_with_the_copied_context_is_collected() -> None:
    seconds: dict[str, float] = {}
    with collecting_seconds(seconds):
        context = contextvars.copy_context()  # what a task runner hands its thread
        worker = threading.Thread(
            target=context.run,
            args=(run_check, "screen.label_noise", _slow, "screen.label_noise", 0.02),
        )
        worker.start()
        worker.join()
    assert seconds["screen.label_noise"] >= 0.02
