"""The data engine's task scheduler: slow tasks on a process pool that outlives its workers.

The pdf and ocr channels spend their time in external programs (soffice, typst, HarfBuzz,
poppler, tesseract), one task per document or sentence. A plain ``ProcessPoolExecutor`` is
not enough for that: when one worker dies (the OOM killer, a segfault in native code) the
whole executor breaks, and every task in flight fails with it. ``TaskPool`` replaces the
executor and runs each lost task once more; a task that loses its worker twice, or that
raises, comes back as an error message, so one bad input costs its caller a note, not the run.

    with TaskPool(workers) as pool:
        pool.submit(fn, job, tag=...)           # fn and its arguments must pickle
        for tag, value, error in pool.finished():
            ...                                 # may submit more; finished() waits for it too
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple


class _Task(NamedTuple):
    fn: Callable[..., Any]
    args: tuple
    tag: Any
    tries: int = 0  # how many times a dying worker lost it
    executor: cf.Executor | None = None  # the pool it went to (None: runs inline)


class TaskPool:
    """Runs ``fn(*args)`` tasks on ``workers`` spawned processes, or in this one if ``workers``
    is 1 or less, and hands back each result with the tag it was submitted with.

    Workers are spawned, not forked: the caller may hold threads (tqdm's monitor) and open
    files a fork would copy. The pool starts with the first task, so work that is all cached
    starts no process.
    """

    def __init__(self, workers: int | None) -> None:
        self._workers = workers or 1
        self._executor: cf.ProcessPoolExecutor | None = None
        self._pending: dict[cf.Future, _Task] = {}

    def submit(self, fn: Callable[..., Any], *args: Any, tag: Any) -> None:
        """Queue ``fn(*args)``; ``finished()`` yields its result with ``tag``."""
        self._queue(_Task(fn, args, tag))

    def finished(self) -> Iterator[tuple[Any, Any, str | None]]:
        """Yield ``(tag, value, None)``, or ``(tag, None, error message)``, as tasks finish.

        Runs until nothing is pending, tasks submitted meanwhile included, in the order they
        finish. A task whose worker died is run again once on a fresh pool before it counts
        as failed (the other tasks that pool lost are run again too).
        """
        while self._pending:
            for future in self._wait():
                task = self._pending.pop(future)
                try:
                    value = future.result()
                except (BrokenProcessPool, cf.CancelledError) as exc:
                    if task.tries == 0:  # a worker died (killed, out of memory): retry
                        self._discard(task.executor)
                        self._queue(task._replace(tries=1))
                        continue
                    yield task.tag, None, f"worker died twice: {exc}"[:500]
                except Exception as exc:
                    yield task.tag, None, f"{type(exc).__name__}: {exc}"[:500]
                else:
                    yield task.tag, value, None

    def close(self) -> None:
        """Wait for the running tasks, drop the queued ones, stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _queue(self, task: _Task) -> None:
        if self._workers <= 1:
            future: cf.Future = cf.Future()  # run when waited for, one at a time (_wait)
        else:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._executor = cf.ProcessPoolExecutor(self._workers, mp_context=context)
            future = self._executor.submit(task.fn, *task.args)
            task = task._replace(executor=self._executor)
        self._pending[future] = task

    def _wait(self) -> set[cf.Future]:
        """Some finished futures: inline, the oldest task run now; else those the pool has."""
        if self._workers > 1:
            done, _ = cf.wait(list(self._pending), return_when=cf.FIRST_COMPLETED)
            return done
        future, task = next(iter(self._pending.items()))
        try:
            future.set_result(task.fn(*task.args))
        except Exception as exc:
            future.set_exception(exc)
        return {future}

    def _discard(self, executor: cf.Executor | None) -> None:
        """Give up a broken pool (once, though each of its lost tasks reports it)."""
        if executor is not None and executor is self._executor:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
