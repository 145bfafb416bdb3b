"""The dynamic batcher alone, with a plain function as the engine."""

import asyncio
import threading
import time

import pytest

from runtime.batcher import BatcherConfig, DeadlineExceeded, DynamicBatcher, QueueFull


class Engine:
    """Doubles each item; records every batch it was given; can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: set[int] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(list(items))
        if self.fail_on & set(items):
            raise RuntimeError("engine failure")
        return [2 * i for i in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_concurrent_callers_share_batches_and_get_their_own_answers():
    async def main():
        engine = Engine()
        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=8, max_queue_delay_us=50_000))
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i, length=10) for i in range(20)))
        await batcher.stop()
        return engine, results

    engine, results = run(main())
    assert results == [2 * i for i in range(20)]
    assert max(len(b) for b in engine.batches) == 8
    assert sorted(i for b in engine.batches for i in b) == list(range(20))


def test_a_lone_item_waits_at_most_the_queue_delay():
    async def main():
        batcher = DynamicBatcher(Engine(), BatcherConfig(max_queue_delay_us=20_000))
        batcher.start()
        start = time.monotonic()
        result = await batcher.submit(21, length=3)
        elapsed = time.monotonic() - start
        await batcher.stop()
        return result, elapsed

    result, elapsed = run(main())
    assert result == 42
    assert elapsed < 2.0


def test_a_batch_takes_its_own_bucket_first_then_the_nearest_lengths():
    """Batches of 4 from three buckets: each takes the bucket of the item that has waited
    longest, then fills up from the nearest buckets, nearer before farther."""

    async def main():
        engine = Engine()
        engine.gate.clear()  # hold the engine so everything queues before the first batch
        config = BatcherConfig(max_batch_size=4, max_queue_delay_us=1000, bucket_width=50)
        batcher = DynamicBatcher(engine, config)
        batcher.start()
        calls = [batcher.submit(i, length=10) for i in range(3)]  # bucket 0, oldest
        calls += [batcher.submit(100 + i, length=300) for i in range(3)]  # bucket 6
        calls += [batcher.submit(200 + i, length=60) for i in range(3)]  # bucket 1
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.05)
        engine.gate.set()
        await asyncio.gather(*tasks)
        await batcher.stop()
        return engine

    engine = run(main())
    assert engine.batches == [[0, 1, 2, 200], [100, 101, 102, 201], [202]]


def test_full_queue_is_refused():
    async def main():
        engine = Engine()
        engine.gate.clear()  # hold the engine so items pile up
        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=1, max_queue_size=3))
        batcher.start()
        accepted = [asyncio.ensure_future(batcher.submit(i, length=1)) for i in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit(99, length=1)
        engine.gate.set()
        results = await asyncio.gather(*accepted)
        await batcher.stop()
        return results

    assert run(main()) == [0, 2, 4]


def test_expired_deadline_is_answered_without_compute():
    async def main():
        engine = Engine()
        engine.gate.clear()
        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=1, max_queue_delay_us=0))
        batcher.start()
        blocker = asyncio.ensure_future(batcher.submit(1, length=1))
        await asyncio.sleep(0.05)  # the engine now holds item 1
        late = asyncio.ensure_future(batcher.submit(2, length=1, deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.2)
        engine.gate.set()
        with pytest.raises(DeadlineExceeded):
            await late
        assert await blocker == 2
        await batcher.stop()
        return engine

    engine = run(main())
    assert [2] not in engine.batches


def test_cancelled_caller_frees_its_place_and_costs_no_compute():
    async def main():
        engine = Engine()
        engine.gate.clear()
        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=1, max_queue_size=2))
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(1, length=1))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit(2, length=1))
        await asyncio.sleep(0.01)
        assert batcher.queued == 2
        gone.cancel()
        await asyncio.sleep(0.01)
        assert batcher.queued == 1
        third = asyncio.ensure_future(batcher.submit(3, length=1))  # fits again
        engine.gate.set()
        results = await asyncio.gather(first, third)
        await batcher.stop()
        return engine, results

    engine, results = run(main())
    assert results == [2, 6]
    assert [2] not in engine.batches


def test_engine_failure_reaches_that_batch_only():
    async def main():
        engine = Engine()
        engine.fail_on = {13}
        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=1))
        batcher.start()
        bad = asyncio.ensure_future(batcher.submit(13, length=1))
        good = asyncio.ensure_future(batcher.submit(4, length=1))
        with pytest.raises(RuntimeError, match="engine failure"):
            await bad
        result = await good
        await batcher.stop()
        return result

    assert run(main()) == 8


def test_stop_drains_queued_work_and_refuses_new():
    async def main():
        engine = Engine()
        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=4, max_queue_delay_us=10**6))
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i, length=1)) for i in range(6)]
        await asyncio.sleep(0.01)
        await batcher.stop()  # must not wait the full second of queue delay
        with pytest.raises(QueueFull):
            await batcher.submit(7, length=1)
        return [p.result() for p in pending]

    start = time.monotonic()
    assert run(main()) == [0, 2, 4, 6, 8, 10]
    assert time.monotonic() - start < 0.9


def test_a_text_of_many_pieces_holds_a_bounded_window_and_corrects_each_distinct_piece_once(
    vocab,
):
    """Khmer cut up by emoji: 300 model pieces, 100 distinct, through a queue of 8 places."""
    from runtime.pipeline import ModelOutput
    from runtime.service import RequestService

    words = [f"ក{chr(0x1780 + i // 10)}{chr(0x17B6 + i % 10)}" for i in range(100)]
    text = "😀".join(words * 3)
    seen: list[str] = []
    peak = []

    def engine(jobs):
        seen.extend(job.text for job in jobs)
        peak.append(batcher.queued)
        return [ModelOutput(job.text[::-1], [1.0] * len(job.text)) for job in jobs]

    async def main():
        service = RequestService(
            batcher, vocab, piece_len=50, max_text_chars=10_000, pieces_in_flight=8
        )
        batcher.start()
        result = await service.correct(text)
        await batcher.stop()
        return result

    batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=4, max_queue_size=8))
    result = run(main())
    assert result.text == "😀".join(w[::-1] for w in words * 3)
    assert sorted(seen) == sorted(set(words))
    assert max(peak) <= 8
