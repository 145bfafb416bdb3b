"""Dynamic batching: many callers' items in, one engine call per batch out.

Every RPC puts its model pieces into one queue, grouped by length bucket. A batch closes when
the queue holds `max_batch_size` items or its oldest item has waited `max_queue_delay_us`; it
takes the oldest item's bucket first, then fills up from the nearest lengths, because the
engine runs one batch at a time: a small batch leaves the rest of the queue waiting anyway,
while a fuller one (padded a little more) serves them in the same pass. The queue is bounded
(`QueueFull`), an item whose deadline passes while queued is answered with `DeadlineExceeded`
before any compute is spent on it, and a caller that gives up (task cancelled) frees its place
at once. Each caller awaits a future of its own, so every answer reaches its own caller.

The batcher knows nothing of gRPC, and the engine knows nothing of queues: `run_batch` is a
plain blocking function (items in, results out, same order) run on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
    """The queue holds max_queue_size items; the caller should back off and retry."""


class DeadlineExceeded(Exception):
    """The item's deadline passed before it reached the engine."""


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    max_queue_size: int = 4096
    bucket_width: int = 64  # lengths in the same width-wide band batch first, together

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_size", "bucket_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must not be negative")


@dataclass(frozen=True)
class BatchStats:
    """What one engine call saw, for metrics."""

    size: int
    queue_seconds: list[float]  # per item: enqueue → batch start
    compute_seconds: float


@dataclass
class _Entry(Generic[Item, Result]):
    item: Item
    length: int
    deadline: float | None  # time.monotonic() seconds
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result]],
        config: BatcherConfig = BatcherConfig(),
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.config = config
        self._on_batch = on_batch
        self._buckets: dict[int, deque[_Entry]] = {}
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        """Items accepted and not yet answered (given-up ones excluded)."""
        return self._queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule(), name="batcher")

    async def stop(self) -> None:
        """Stop taking items, finish everything already queued, then return."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, item: Item, *, length: int, deadline: float | None = None) -> Result:
        """Queue one item and wait for its result; `deadline` is a time.monotonic() instant."""
        if self._closing:
            raise QueueFull("the server is shutting down")
        if self._queued >= self.config.max_queue_size:
            raise QueueFull(f"queue full ({self.config.max_queue_size} items waiting)")
        future = asyncio.get_running_loop().create_future()
        entry = _Entry(item, length, deadline, future)
        self._buckets.setdefault(length // self.config.bucket_width, deque()).append(entry)
        self._queued += 1
        future.add_done_callback(self._release)
        self._wakeup.set()
        return await future

    def _release(self, future: asyncio.Future) -> None:
        # Done before its batch ran (cancelled, expired) or after: either way its place is free.
        self._queued -= 1

    def _oldest_bucket(self) -> int | None:
        """The key of the bucket whose first live item has waited longest."""
        for key in list(self._buckets):
            bucket = self._buckets[key]
            while bucket and bucket[0].future.done():
                bucket.popleft()
            if not bucket:
                del self._buckets[key]
        if not self._buckets:
            return None
        return min(self._buckets, key=lambda k: self._buckets[k][0].enqueued)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.config.max_queue_delay_us / 1e6
        while True:
            oldest = self._oldest_bucket()
            if oldest is None:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            close_at = self._buckets[oldest][0].enqueued + delay
            if self._queued < self.config.max_batch_size and not self._closing:
                wait = close_at - time.monotonic()
                if wait > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    continue  # re-check: the bucket may have filled, or a new one got older
            batch = self._take(oldest)
            if batch:
                await self._run(loop, batch)

    def _take(self, oldest: int) -> list[_Entry]:
        """Up to max_batch_size live items: bucket `oldest` first, then the nearest ones."""
        now = time.monotonic()
        batch: list[_Entry] = []
        for key in sorted(self._buckets, key=lambda k: (abs(k - oldest), k)):
            bucket = self._buckets[key]
            while bucket and len(batch) < self.config.max_batch_size:
                entry = bucket.popleft()
                if entry.future.done():
                    continue  # its caller gave up
                if entry.deadline is not None and entry.deadline <= now:
                    entry.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                    continue
                batch.append(entry)
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Entry]) -> None:
        started = time.monotonic()
        try:
            results = await loop.run_in_executor(
                self._executor, self._run_batch, [e.item for e in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)}")
        except Exception as exc:  # the engine failed this batch: its callers get the error
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
        else:
            for entry, result in zip(batch, results, strict=True):
                if not entry.future.done():
                    entry.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(
                    size=len(batch),
                    queue_seconds=[started - e.enqueued for e in batch],
                    compute_seconds=time.monotonic() - started,
                )
            )
