"""The data engine's TaskPool: results come back with their tags, lost workers are retried."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.data.pool import TaskPool


def _square(x: int) -> int:
    return x * x


def _fail(message: str) -> None:
    raise ValueError(message)


def _die_once(marker: str) -> str:
    """Kill this worker the first time (as the OOM killer would), succeed the second."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        os._exit(1)
    return "survived"


def _die() -> None:
    os._exit(1)


def _collect(pool: TaskPool) -> dict:
    return {tag: (value, error) for tag, value, error in pool.finished()}


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_with_their_tags(workers):
    with TaskPool(workers) as pool:
        for x in range(5):
            pool.submit(_square, x, tag=("square", x))
        pool.submit(_fail, "bad input", tag="fail")
        assert _collect(pool) == {
            **{("square", x): (x * x, None) for x in range(5)},
            "fail": (None, "ValueError: bad input"),
        }


@pytest.mark.parametrize("workers", [1, 2])
def test_tasks_submitted_while_collecting_are_waited_for(workers):
    seen = []
    with TaskPool(workers) as pool:
        pool.submit(_square, 3, tag="first")
        for tag, value, _ in pool.finished():
            seen.append((tag, value))
            if tag == "first":
                pool.submit(_square, value, tag="second")
    assert seen == [("first", 9), ("second", 81)]


def test_inline_tasks_run_one_at_a_time_as_they_are_collected():
    ran = []

    def record(x):
        ran.append(x)
        return x

    with TaskPool(1) as pool:
        pool.submit(record, 1, tag=1)
        pool.submit(record, 2, tag=2)
        assert ran == []  # nothing runs before it is waited for
        for tag, _, _ in pool.finished():
            assert ran[-1] == tag


def test_a_dead_worker_is_replaced_and_the_tasks_it_took_down_retried(tmp_path):
    with TaskPool(2) as pool:
        pool.submit(_die_once, str(tmp_path / "died"), tag="once")
        for x in range(4):
            pool.submit(_square, x, tag=x)
        assert _collect(pool) == {
            "once": ("survived", None),
            **{x: (x * x, None) for x in range(4)},
        }


def test_a_task_whose_worker_dies_twice_is_an_error():
    with TaskPool(2) as pool:
        pool.submit(_die, tag="always")
        [(tag, value, error)] = pool.finished()
    assert (tag, value) == ("always", None)
    assert error.startswith("worker died twice:")
