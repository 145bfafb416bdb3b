"""One correction request from text to answer, independent of any transport.

The service prepares the text, submits its model pieces to the shared dynamic batcher (all
pieces of all requests meet in one queue), awaits them, and assembles the answer. The gRPC
servicers (domain and KServe v2) are thin translations onto `RequestService.correct`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from runtime.batcher import DynamicBatcher
from runtime.pipeline import Correction, ModelOutput, assemble, prepare
from runtime.text import Vocab


class TextTooLong(ValueError):
    """The text exceeds the configured limit (code points)."""


@dataclass(frozen=True)
class Job:
    """One model piece as the engine worker sees it."""

    text: str
    mode: str  # "full" | "substitution"
    decoding: str  # "aggressive" | "greedy"
    min_confidence: float | None = None  # the editor's gate; None: the artifact's calibrated


class RequestService:
    """Requests in, answers out, through the dynamic batcher all requests share (async); the
    in-process `Corrector.correct` answers the same without a queue."""

    def __init__(
        self,
        batcher: DynamicBatcher[Job, ModelOutput],
        vocab: Vocab,
        *,
        piece_len: int,
        max_text_chars: int,
        pieces_in_flight: int,
    ) -> None:
        self.batcher = batcher
        self.vocab = vocab
        self.piece_len = piece_len
        self.max_text_chars = max_text_chars
        # A request queues at most this many of its pieces at a time, so that one long text
        # cut into thousands of pieces (Khmer between emoji, say) can neither overflow the
        # queue by itself nor keep everyone else's requests waiting behind all of its pieces.
        self.pieces_in_flight = pieces_in_flight

    async def correct(
        self,
        text: str,
        *,
        mode: str = "full",
        decoding: str = "aggressive",
        min_confidence: float | None = None,
        with_spans: bool = True,
        deadline: float | None = None,
    ) -> Correction:
        if len(text) > self.max_text_chars:
            raise TextTooLong(
                f"text has {len(text)} characters; the limit is {self.max_text_chars}"
            )
        prepared = prepare(text, self.vocab, self.piece_len)
        window = asyncio.Semaphore(self.pieces_in_flight)

        async def submit(piece: str) -> ModelOutput:
            async with window:
                job = Job(piece, mode, decoding, min_confidence)
                return await self.batcher.submit(job, length=len(piece), deadline=deadline)

        # Each distinct piece is corrected once: text cut up by foreign characters repeats them.
        distinct = list(dict.fromkeys(prepared.model_inputs))
        answers = dict(zip(distinct, await _gather_or_cancel(map(submit, distinct)), strict=True))
        corrected = [answers[piece] for piece in prepared.model_inputs]
        return assemble(prepared, corrected, with_spans=with_spans)


async def _gather_or_cancel(awaitables) -> list:
    """Like asyncio.gather, but when one piece fails the others are cancelled (their queue
    places freed) instead of computed for an answer nobody will read."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
