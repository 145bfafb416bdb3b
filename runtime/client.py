"""Clients of the domain service: `Client` (blocking) and `AsyncClient` (asyncio).

    with Client("127.0.0.1:50051") as client:
        result = client.correct("ភ្នំពេ ញ")
        result.text, result.spans

Both speak the same RPCs with the same defaults; errors surface as `grpc.RpcError` with the
server's status code and message. `min_confidence` (0..1) overrides the editor's confidence
gate for a call; None (the default) keeps the threshold the artifact was calibrated with, and
sequence-to-sequence models ignore it. Against a server with TLS and a bearer token:

    from runtime.security import channel_credentials, read_token

    Client("host:50051", credentials=channel_credentials(ca="ca.pem"), token=read_token("token"))

(`channel_credentials(ca, cert, key)` for mutual TLS; `channel_credentials()` trusts the
system's roots.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto import corrector_pb2, corrector_pb2_grpc
from runtime.pipeline import ScoredSpan
from runtime.security import bearer_metadata

_MODES = {"full": corrector_pb2.MODE_FULL, "substitution": corrector_pb2.MODE_SUBSTITUTION}
_DECODINGS = {
    None: corrector_pb2.DECODING_UNSPECIFIED,
    "greedy": corrector_pb2.DECODING_GREEDY,
    "aggressive": corrector_pb2.DECODING_AGGRESSIVE,
}


@dataclass(frozen=True)
class Result:
    text: str
    spans: list[ScoredSpan]
    artifact_id: str


def _options(
    mode: str, decoding: str | None, spans: bool, min_confidence: float | None
) -> corrector_pb2.Options:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}")
    if decoding not in _DECODINGS:
        raise ValueError("decoding must be 'greedy', 'aggressive' or None (server default)")
    # min_confidence is left unset for None (the artifact's calibrated gate); its range is the
    # server's to check (INVALID_ARGUMENT), so every client meets the same rule.
    return corrector_pb2.Options(
        mode=_MODES[mode],
        decoding=_DECODINGS[decoding],
        skip_spans=not spans,
        min_confidence=min_confidence,
    )


def _result(response: corrector_pb2.CorrectResponse) -> Result:
    spans = [ScoredSpan(s.start, s.end, s.replacement, s.confidence) for s in response.spans]
    return Result(response.text, spans, response.artifact_id)


def _channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def _channel(grpc_module, target, credentials, max_message_bytes):
    """A channel of `grpc_module` (grpc or grpc.aio): TLS with `credentials`, else plaintext."""
    options = _channel_options(max_message_bytes)
    if credentials is None:
        return grpc_module.insecure_channel(target, options=options)
    return grpc_module.secure_channel(target, credentials, options=options)


class Client:
    """`credentials` (runtime.security.channel_credentials) turns on TLS; `token` is sent as
    `authorization: Bearer <token>` with every call."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = 8 << 20,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.timeout = timeout
        self._metadata = bearer_metadata(token) if token else None
        self._channel = _channel(grpc, target, credentials, max_message_bytes)
        self._stub = corrector_pb2_grpc.CorrectorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def correct(
        self,
        text: str,
        *,
        mode: str = "full",
        decoding: str | None = None,
        spans: bool = True,
        min_confidence: float | None = None,
    ) -> Result:
        options = _options(mode, decoding, spans, min_confidence)
        request = corrector_pb2.CorrectRequest(text=text, options=options)
        return _result(self._stub.Correct(request, timeout=self.timeout, metadata=self._metadata))

    def correct_batch(
        self,
        texts: list[str],
        *,
        mode: str = "full",
        decoding: str | None = None,
        spans: bool = True,
        min_confidence: float | None = None,
    ) -> list[Result]:
        request = corrector_pb2.CorrectBatchRequest(
            texts=texts, options=_options(mode, decoding, spans, min_confidence)
        )
        response = self._stub.CorrectBatch(request, timeout=self.timeout, metadata=self._metadata)
        return [_result(r) for r in response.results]

    def correct_stream(
        self,
        texts: Iterable[str],
        *,
        mode: str = "full",
        decoding: str | None = None,
        spans: bool = True,
        min_confidence: float | None = None,
    ) -> Iterator[Result]:
        """One result per text, in order, while later texts are still being sent."""
        options = _options(mode, decoding, spans, min_confidence)
        requests = (corrector_pb2.CorrectRequest(text=t, options=options) for t in texts)
        responses = self._stub.CorrectStream(
            requests, timeout=self.timeout, metadata=self._metadata
        )
        for response in responses:
            yield _result(response)

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, ... as the server's grpc.health.v1 reports it."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._health.Check(request, timeout=10, metadata=self._metadata)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """Client's calls for asyncio, with the same settings."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = 8 << 20,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.timeout = timeout
        self._metadata = bearer_metadata(token) if token else None
        self._channel = _channel(grpc.aio, target, credentials, max_message_bytes)
        self._stub = corrector_pb2_grpc.CorrectorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def correct(
        self,
        text: str,
        *,
        mode: str = "full",
        decoding: str | None = None,
        spans: bool = True,
        min_confidence: float | None = None,
    ) -> Result:
        options = _options(mode, decoding, spans, min_confidence)
        request = corrector_pb2.CorrectRequest(text=text, options=options)
        response = await self._stub.Correct(request, timeout=self.timeout, metadata=self._metadata)
        return _result(response)

    async def correct_batch(
        self,
        texts: list[str],
        *,
        mode: str = "full",
        decoding: str | None = None,
        spans: bool = True,
        min_confidence: float | None = None,
    ) -> list[Result]:
        request = corrector_pb2.CorrectBatchRequest(
            texts=texts, options=_options(mode, decoding, spans, min_confidence)
        )
        response = await self._stub.CorrectBatch(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return [_result(r) for r in response.results]

    async def correct_stream(
        self,
        texts: Iterable[str],
        *,
        mode: str = "full",
        decoding: str | None = None,
        spans: bool = True,
        min_confidence: float | None = None,
    ) -> AsyncIterator[Result]:
        options = _options(mode, decoding, spans, min_confidence)
        requests = (corrector_pb2.CorrectRequest(text=t, options=options) for t in texts)
        responses = self._stub.CorrectStream(
            requests, timeout=self.timeout, metadata=self._metadata
        )
        async for response in responses:
            yield _result(response)

    async def health(self, service: str = "") -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._health.Check(request, timeout=10, metadata=self._metadata)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
