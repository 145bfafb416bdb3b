"""Load generation for the server benchmarks: closed-loop and open-loop (Poisson) load against
one server, measured in windows, and perf_analyzer's rule for when windows are stable.

The client hides behind `send(text) -> (status, answers)`: "OK" and the output texts, or the
gRPC status code's name and no answers. So the same windows drive our KServe v2 stubs
(benchmarks/server.py) and, in a process of its own, the real tritonclient
(benchmarks/tritonclient_load.py), whose protobuf descriptors clash with ours. This module
imports neither.

A window counts the requests that *completed* inside it (as perf_analyzer does): throughput is
those answered OK per second, latencies are theirs. It lasts its seconds and, beyond them, until
a number of requests have completed (perf_analyzer's count windows), up to a cap: a slow model
answering batches of 32 at once would otherwise give a short window one batch or none. The load
keeps running across windows, so consecutive windows see a steady state.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

Sender = Callable[[str], Awaitable[tuple[str, list[str]]]]
Probe = Callable[[], Awaitable[dict]]

STABILITY_WINDOWS = 3  # perf_analyzer's --stability-window default
STABILITY_THRESHOLD = 0.10  # perf_analyzer's --stability-percentage default, 10%


@dataclass(frozen=True)
class Call:
    start: float  # perf_counter seconds when sent; open loop: when it was due
    end: float
    status: str  # "OK" or a gRPC status code name
    chars: int  # input characters
    answered: bool  # OK with exactly one answer, non-empty for a non-empty input
    lag: float = 0.0  # open loop: how late the client sent it


@dataclass
class Window:
    seconds: float
    calls: list[Call]  # completed inside the window
    outstanding: int  # requests in flight when it closed
    complete: bool  # the wanted number of requests completed before the cap
    before: dict | None = None  # the probe's reading when it opened ...
    after: dict | None = None  # ... and when it closed


def _answered(text: str, status: str, answers: list[str]) -> bool:
    return status == "OK" and len(answers) == 1 and (bool(answers[0]) or not text)


class _Load:
    """Requests on their way to one server; subclasses decide when to send them."""

    def __init__(self, send: Sender, texts: list[str]) -> None:
        if not texts:
            raise ValueError("no texts to send")
        self.send = send
        self.texts = texts
        self.calls: list[Call] = []
        self.tasks: set[asyncio.Task] = set()
        self._next = itertools.count()
        self._failure: BaseException | None = None  # a send that raised: a bug, not a status

    def _text(self) -> str:
        return self.texts[next(self._next) % len(self.texts)]

    async def _call(self, text: str, start: float, lag: float = 0.0) -> None:
        status, answers = await self.send(text)
        end = time.perf_counter()
        self.calls.append(
            Call(start, end, status, len(text), _answered(text, status, answers), lag)
        )

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    def _raise_failures(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def window(
        self,
        seconds: float,
        probe: Probe | None = None,
        *,
        answers: int = 0,
        max_seconds: float = 0.0,
    ) -> Window:
        """Measure while the load runs: `seconds`, then on until `answers` requests have
        completed in the window, but no longer than `max_seconds` in all. `probe` is read at
        both ends."""
        before = await probe() if probe else None
        opened = time.perf_counter()
        first = len(self.calls)  # calls are appended as they complete
        await asyncio.sleep(seconds)
        limit = opened + max(seconds, max_seconds)
        while len(self.calls) - first < answers and time.perf_counter() < limit:
            self._raise_failures()
            await asyncio.sleep(0.02)
        closed = time.perf_counter()
        self._raise_failures()
        inside = self.calls[first:]
        outstanding = len(self.tasks)
        after = await probe() if probe else None
        return Window(closed - opened, inside, outstanding, len(inside) >= answers, before, after)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        """Cancel what is still in flight: the server frees their queue places at once."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class ClosedLoop(_Load):
    """`concurrency` workers, each sending its next request as soon as its last is answered."""

    def __init__(self, send: Sender, texts: list[str], concurrency: int) -> None:
        super().__init__(send, texts)
        self.concurrency = concurrency
        self._answered_once: set[int] = set()

    async def _worker(self, index: int) -> None:
        while True:
            await self._call(self._text(), time.perf_counter())
            self._answered_once.add(index)

    async def warm(self, min_seconds: float, max_seconds: float) -> bool:
        """Start the workers; return once `min_seconds` have passed and every worker has had
        an answer (a full round: queues at their steady length), or at `max_seconds`. True
        when the full round was reached."""
        for index in range(self.concurrency):
            self._spawn(self._worker(index))
        began = time.perf_counter()
        await asyncio.sleep(min_seconds)
        while len(self._answered_once) < self.concurrency:
            self._raise_failures()
            if time.perf_counter() - began >= max_seconds:
                return False
            await asyncio.sleep(0.02)
        return True


class OpenLoop(_Load):
    """Requests sent at Poisson arrival times, `rate` per second, whether or not earlier ones
    were answered. Latency runs from when a request was due, so a client that falls behind
    adds its lateness instead of hiding it (and `lag` shows it)."""

    def __init__(self, send: Sender, texts: list[str], rate: float, seed: int) -> None:
        super().__init__(send, texts)
        self.rate = rate
        self._rng = random.Random(seed)
        self._arrivals: asyncio.Task | None = None

    async def _arrive(self) -> None:
        due = time.perf_counter()
        while True:
            due += self._rng.expovariate(self.rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = max(0.0, time.perf_counter() - due)
            self._spawn(self._call(self._text(), due, lag))

    async def warm(self, seconds: float) -> None:
        self._arrivals = asyncio.ensure_future(self._arrive())
        await asyncio.sleep(seconds)

    async def __aexit__(self, *exc) -> None:
        if self._arrivals is not None:
            self._arrivals.cancel()
            await asyncio.gather(self._arrivals, return_exceptions=True)
        await super().__aexit__(*exc)


def summarize(window: Window) -> dict:
    """One window's numbers: throughput, latency percentiles (ms), errors by status code."""
    ok = [c for c in window.calls if c.status == "OK"]
    latencies = np.array([c.end - c.start for c in ok]) * 1000
    summary = {
        "seconds": window.seconds,
        "completed": len(window.calls),
        "ok": len(ok),
        "requests_per_s": len(ok) / window.seconds,
        "chars_per_s": sum(c.chars for c in ok) / window.seconds,
        "latency_ms": None,
        "errors": dict(Counter(c.status for c in window.calls if c.status != "OK")),
        "bad_answers": sum(not c.answered for c in ok),
        "outstanding": window.outstanding,
        "complete": window.complete,
    }
    if len(ok):
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        summary["latency_ms"] = {
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "mean": float(latencies.mean()),
        }
    lags = [c.lag for c in window.calls]
    if any(lags):
        summary["client_lag_ms_p99"] = float(np.percentile(lags, 99) * 1000)
    return summary


def merge(windows: list[Window]) -> Window:
    """Several consecutive windows as one (perf_analyzer reports the stable windows merged)."""
    return Window(
        sum(w.seconds for w in windows),
        [c for w in windows for c in w.calls],
        windows[-1].outstanding,
        all(w.complete for w in windows),
        windows[0].before,
        windows[-1].after,
    )


def is_stable(
    throughputs: list[float],
    latencies: list[float],
    count: int = STABILITY_WINDOWS,
    threshold: float = STABILITY_THRESHOLD,
) -> bool:
    """perf_analyzer's rule: over the last `count` windows no throughput is zero, and both the
    largest / smallest throughput and the largest / smallest mean latency are at most
    1 + threshold."""
    if len(throughputs) < count or len(latencies) < count:
        return False
    rates, waits = throughputs[-count:], latencies[-count:]
    if min(rates) <= 0 or min(waits) <= 0:
        return False
    return max(rates) / min(rates) <= 1 + threshold and max(waits) / min(waits) <= 1 + threshold


async def measure_until_stable(
    send: Sender,
    texts: list[str],
    concurrency: int,
    *,
    window_s: float,
    min_answers: int,
    max_window_s: float,
    max_windows: int,
    warmup_s: float,
    max_warmup_s: float,
) -> dict:
    """perf_analyzer's concurrency mode: `concurrency` requests always outstanding, windows
    back to back (each `window_s` and at least `min_answers` requests, at most `max_window_s`)
    until the last three are stable or `max_windows` have run. The report is the last three
    windows merged, with every window's throughput and whether stability was reached."""
    async with ClosedLoop(send, texts, concurrency) as load:
        await load.warm(warmup_s, max_warmup_s)
        windows: list[Window] = []
        throughputs: list[float] = []
        latencies: list[float] = []
        while len(windows) < max_windows:
            window = await load.window(window_s, answers=min_answers, max_seconds=max_window_s)
            windows.append(window)
            summary = summarize(window)
            throughputs.append(summary["requests_per_s"])
            latencies.append(summary["latency_ms"]["mean"] if summary["latency_ms"] else 0.0)
            if is_stable(throughputs, latencies):
                break
    return {
        "concurrency": concurrency,
        "window_s": window_s,
        "windows": len(windows),
        "window_requests_per_s": throughputs,
        "window_mean_latency_ms": latencies,
        "stable": is_stable(throughputs, latencies),
        **summarize(merge(windows[-STABILITY_WINDOWS:])),
    }
