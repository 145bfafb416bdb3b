"""The gRPC transport: one port serving the domain service, the KServe v2 inference protocol,
grpc.health.v1 and reflection; Prometheus metrics on a second port.

Lifecycle: the port opens at once with health NOT_SERVING; the artifact loads and warms up on
a worker thread; health turns SERVING. On SIGTERM health turns NOT_SERVING, the port stops
taking new RPCs, RPCs in flight and work already queued finish (up to the grace period), and
the process exits. The servicers only translate between protobuf and `RequestService`;
error kinds map to status codes in one place (`_status_for`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from importlib.metadata import PackageNotFoundError, version

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from proto import corrector_pb2, corrector_pb2_grpc, kserve_pb2, kserve_pb2_grpc
from runtime.batcher import BatcherConfig, DeadlineExceeded, DynamicBatcher, QueueFull
from runtime.config import ServeConfig
from runtime.corrector import Corrector
from runtime.kserve_codec import INPUT_NAME, OUTPUT_NAME, MalformedTensor, pack_bytes, unpack_bytes
from runtime.metrics import Metrics
from runtime.pipeline import Correction
from runtime.security import BearerTokenCheck, read_token, server_credentials
from runtime.service import RequestService, TextTooLong

log = logging.getLogger("kmcorrect.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_MODES = {corrector_pb2.MODE_SUBSTITUTION: "substitution"}
_DECODINGS = {
    corrector_pb2.DECODING_GREEDY: "greedy",
    corrector_pb2.DECODING_AGGRESSIVE: "aggressive",
}
_STREAM_WINDOW = 64  # lines of one stream corrected concurrently, answered in order
# The KServe v2 request parameter that overrides the editor's gate. Accepted as double_param,
# or int64_param (tritonclient sends a Python int, 0 or 1, that way); any other type is refused.
MIN_CONFIDENCE = "min_confidence"


def _package_version() -> str:
    try:
        return version("khmer-correct")
    except PackageNotFoundError:
        return "0+unknown"


class NotReady(Exception):
    """The model is still loading."""


class UnknownModel(Exception):
    pass


class BadRequest(ValueError):
    pass


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message, metrics failure reason) for an error raised while answering."""
    if isinstance(exc, TextTooLong | BadRequest | MalformedTensor):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid_argument"
    if isinstance(exc, QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "queue_full"
    if isinstance(exc, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc), "deadline"
    if isinstance(exc, UnknownModel):
        return grpc.StatusCode.NOT_FOUND, str(exc), "not_found"
    if isinstance(exc, NotReady):
        return grpc.StatusCode.UNAVAILABLE, str(exc), "not_ready"
    return grpc.StatusCode.INTERNAL, f"correction failed: {type(exc).__name__}: {exc}", "internal"


class ServingState:
    """What the servicers share: the service once loaded, metrics, limits, the config."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics(config.model_name)
        self.service: RequestService | None = None
        self.corrector: Corrector | None = None

    def ready(self) -> RequestService:
        if self.service is None:
            raise NotReady("the model is still loading")
        return self.service

    @staticmethod
    def deadline(context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    async def answer(
        self, context: grpc.aio.ServicerContext, texts: int, work: Callable[[], object]
    ):
        """Run one RPC's work, timing it and turning any error into its status code."""
        started = time.monotonic()
        try:
            result = await work()
        except asyncio.CancelledError:
            self.metrics.observe_request(time.monotonic() - started, texts, "cancelled")
            raise
        except Exception as exc:
            code, message, reason = _status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("request failed")
            self.metrics.observe_request(time.monotonic() - started, texts, reason)
            await context.abort(code, message)
        self.metrics.observe_request(time.monotonic() - started, texts)
        return result

    def check_batch(self, count: int) -> None:
        if count > self.config.max_batch_texts:
            raise BadRequest(
                f"{count} texts in one request; the limit is {self.config.max_batch_texts}"
            )


def _response(correction: Correction, artifact_id: str, request_id: str = ""):
    return corrector_pb2.CorrectResponse(
        text=correction.text,
        spans=[
            corrector_pb2.EditSpan(
                start=s.start, end=s.end, replacement=s.replacement, confidence=s.confidence
            )
            for s in correction.spans
        ],
        artifact_id=artifact_id,
        id=request_id,
    )


def _gate(value: float) -> float:
    """A request's min_confidence, checked: a number within [0, 1] (NaN is not)."""
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f"min_confidence must be within [0, 1], got {value:g}")
    return float(value)


def _options(options: corrector_pb2.Options, default_decoding: str) -> dict:
    return {
        "mode": _MODES.get(options.mode, "full"),
        "decoding": _DECODINGS.get(options.decoding, default_decoding),
        "min_confidence": (
            _gate(options.min_confidence) if options.HasField("min_confidence") else None
        ),
        "with_spans": not options.skip_spans,
    }


def _infer_min_confidence(request: kserve_pb2.ModelInferRequest) -> float | None:
    """The request's `min_confidence` parameter, or None (the artifact's calibrated gate)."""
    if MIN_CONFIDENCE not in request.parameters:
        return None
    parameter = request.parameters[MIN_CONFIDENCE]
    kind = parameter.WhichOneof("parameter_choice")
    if kind == "double_param":
        return _gate(parameter.double_param)
    if kind == "int64_param":
        return _gate(parameter.int64_param)
    got = kind or "no value"
    raise BadRequest(f"parameter {MIN_CONFIDENCE} must be a double_param or int64_param, got {got}")


def _gate_description(corrector: Corrector) -> str:
    if corrector.is_editor:
        return f"editor, gate: {corrector.gate.describe()}, unless a request says"
    return f"{corrector.info.name}, no gate"


def load_corrector(config: ServeConfig) -> Corrector:
    """The corrector of the artifact, variant, device and threads ``config`` names."""
    return Corrector.load(
        config.artifact,
        variant=config.variant,
        device=config.device,
        threads=config.threads or None,
    )


class CorrectorServicer(corrector_pb2_grpc.CorrectorServicer):
    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def _one(self, request, deadline):
        service = self.state.ready()
        options = _options(request.options, self.state.config.decoding)
        correction = await service.correct(request.text, deadline=deadline, **options)
        return _response(correction, self.state.corrector.artifact_id, request.id)

    async def Correct(self, request, context):
        return await self.state.answer(
            context, 1, lambda: self._one(request, self.state.deadline(context))
        )

    async def CorrectBatch(self, request, context):
        async def work():
            self.state.check_batch(len(request.texts))
            service = self.state.ready()
            options = _options(request.options, self.state.config.decoding)
            deadline = self.state.deadline(context)
            corrections = await asyncio.gather(
                *(service.correct(t, deadline=deadline, **options) for t in request.texts)
            )
            artifact_id = self.state.corrector.artifact_id
            return corrector_pb2.CorrectBatchResponse(
                results=[_response(c, artifact_id) for c in corrections]
            )

        return await self.state.answer(context, len(request.texts), work)

    async def CorrectStream(
        self, request_iterator, context
    ) -> AsyncIterator[corrector_pb2.CorrectResponse]:
        """Lines are corrected up to _STREAM_WINDOW at a time and answered in arrival order."""
        window: asyncio.Queue[asyncio.Task | None] = asyncio.Queue(_STREAM_WINDOW)
        deadline = self.state.deadline(context)

        async def read():
            try:
                async for request in request_iterator:
                    task = asyncio.ensure_future(
                        self.state.answer(context, 1, lambda r=request: self._one(r, deadline))
                    )
                    await window.put(task)
            finally:
                await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await window.get()) is not None:
                yield await task
        finally:
            reader.cancel()
            while not window.empty():
                pending = window.get_nowait()
                if pending is not None:
                    pending.cancel()


class InferenceServicer(kserve_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2: one model, a BYTES input tensor of UTF-8 texts, a BYTES output of the same
    shape with their corrections. The request parameter `min_confidence` overrides the editor's
    gate (`_infer_min_confidence`); other parameters are ignored."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def _check_model(self, name: str) -> None:
        if name != self.state.config.model_name:
            raise UnknownModel(
                f"unknown model {name!r}; this server serves {self.state.config.model_name!r}"
            )

    async def ServerLive(self, request, context):
        return kserve_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return kserve_pb2.ServerReadyResponse(ready=self.state.service is not None)

    async def ModelReady(self, request, context):
        async def work():
            self._check_model(request.name)
            return kserve_pb2.ModelReadyResponse(ready=self.state.service is not None)

        return await self.state.answer(context, 0, work)

    async def ServerMetadata(self, request, context):
        return kserve_pb2.ServerMetadataResponse(
            name="khmer-correct", version=_package_version(), extensions=[]
        )

    async def ModelMetadata(self, request, context):
        async def work():
            self._check_model(request.name)
            tensor = kserve_pb2.ModelMetadataResponse.TensorMetadata
            return kserve_pb2.ModelMetadataResponse(
                name=self.state.config.model_name,
                versions=["1"],
                platform="khmer-correct",
                inputs=[tensor(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
                outputs=[tensor(name=OUTPUT_NAME, datatype="BYTES", shape=[-1])],
            )

        return await self.state.answer(context, 0, work)

    async def ModelInfer(self, request, context):
        texts: list[str] = []

        async def work():
            self._check_model(request.model_name)
            texts.extend(_input_texts(request))
            self.state.check_batch(len(texts))
            for output in request.outputs:
                if output.name != OUTPUT_NAME:
                    raise BadRequest(f"unknown output {output.name!r}; the output is {OUTPUT_NAME}")
            min_confidence = _infer_min_confidence(request)
            service = self.state.ready()
            deadline = self.state.deadline(context)
            corrections = await asyncio.gather(
                *(
                    service.correct(
                        t,
                        decoding=self.state.config.decoding,
                        min_confidence=min_confidence,
                        with_spans=False,
                        deadline=deadline,
                    )
                    for t in texts
                )
            )
            shape = list(request.inputs[0].shape)
            return kserve_pb2.ModelInferResponse(
                model_name=self.state.config.model_name,
                model_version="1",
                id=request.id,
                outputs=[
                    kserve_pb2.ModelInferResponse.InferOutputTensor(
                        name=OUTPUT_NAME, datatype="BYTES", shape=shape
                    )
                ],
                raw_output_contents=[pack_bytes([c.text.encode() for c in corrections])],
            )

        return await self.state.answer(context, len(texts) or 1, work)


def _input_texts(request: kserve_pb2.ModelInferRequest) -> list[str]:
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [i.name for i in request.inputs]
        raise BadRequest(f"expected one input named {INPUT_NAME}, got {names}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input {INPUT_NAME} must be BYTES, got {tensor.datatype}")
    if request.raw_input_contents:
        elements = unpack_bytes(request.raw_input_contents[0])
    else:
        elements = list(tensor.contents.bytes_contents)
    expected = 1
    for dim in tensor.shape:
        expected *= dim
    if len(elements) != expected:
        raise BadRequest(
            f"input shape {list(tensor.shape)} holds {expected} texts, got {len(elements)}"
        )
    try:
        return [e.decode("utf-8") for e in elements]
    except UnicodeDecodeError as exc:
        raise BadRequest(f"input text is not UTF-8: {exc}") from None


class Server:
    """The whole service on one port; `start`, then `wait_for_termination` or `stop`."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.state = ServingState(config)
        self.health = health_aio.HealthServicer()
        self.batcher: DynamicBatcher | None = None
        self.port: int | None = None
        self._grpc: grpc.aio.Server | None = None  # made in start(), on the serving event loop
        self._metrics_http = None
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Open the port (NOT_SERVING), load and warm the model, turn SERVING; returns the port."""
        credentials = server_credentials(self.config)  # bad files fail before the port opens
        interceptors = []
        if self.config.auth_token_file:
            refused = self.state.metrics.failure.labels(self.config.model_name, "unauthenticated")
            token = read_token(self.config.auth_token_file, "auth_token_file")
            interceptors.append(BearerTokenCheck(token, on_refused=refused.inc))
        self._grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.max_message_bytes),
                ("grpc.max_concurrent_streams", self.config.max_concurrent_streams),
            ],
        )
        corrector_pb2_grpc.add_CorrectorServicer_to_server(
            CorrectorServicer(self.state), self._grpc
        )
        kserve_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.state), self._grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        services = [
            corrector_pb2.DESCRIPTOR.services_by_name["Corrector"].full_name,
            kserve_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], self._grpc)
        for name in ["", *services]:
            await self.health.set(name, NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        if credentials is None:
            self.port = self._grpc.add_insecure_port(address)
        else:
            self.port = self._grpc.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        await self._grpc.start()
        security = "plaintext"
        if credentials is not None:
            security = "mutual TLS" if self.config.tls_client_ca else "TLS"
        if interceptors:
            security += " + bearer token"
        log.info(
            "listening on %s:%d (%s; NOT_SERVING until the model is ready)",
            self.config.host,
            self.port,
            security,
        )
        if self.config.metrics_port:
            self._metrics_http = self.state.metrics.serve(
                self.config.host, self.config.metrics_port
            )

        corrector = await asyncio.get_running_loop().run_in_executor(
            None, load_corrector, self.config
        )
        self.batcher = DynamicBatcher(
            corrector.run_batch,
            BatcherConfig(
                max_batch_size=self.config.max_batch_size,
                max_queue_delay_us=self.config.max_queue_delay_us,
                max_queue_size=self.config.max_queue_size,
                bucket_width=self.config.bucket_width,
            ),
            on_batch=self.state.metrics.observe_batch,
        )
        self.state.metrics.pending.labels(self.config.model_name).set_function(
            lambda: self.batcher.queued
        )
        self.batcher.start()
        self.state.corrector = corrector
        self.state.service = RequestService(
            self.batcher,
            corrector.vocab,
            piece_len=self.config.piece_len or corrector.max_src_len,
            max_text_chars=self.config.max_text_chars,
            pieces_in_flight=2 * self.config.max_batch_size,
        )
        await self.state.service.correct("ខ្ញុំ​ស្រឡាញ់​ភាសាខ្មែរ")  # warm-up through the whole path
        for name in ["", *services]:
            await self.health.set(name, SERVING)
        log.info(
            "serving artifact %s (%s) as %r",
            corrector.artifact_id,
            _gate_description(corrector),
            self.config.model_name,
            extra={
                "model": corrector.info.name,
                "gate": corrector.gate.settings() if corrector.is_editor else None,
            },
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, finish those in flight and the queued work, then close."""
        grace = self.config.shutdown_grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self.batcher is not None:
            await self.batcher.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self._stopped.set()

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    server = Server(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            sig, lambda s=sig: stopping.append(asyncio.ensure_future(_stop(server, s)))
        )
    try:
        await server.start()
    except BaseException:
        await server.stop(grace=0)
        raise
    await server.wait_for_termination()


async def _stop(server: Server, sig: signal.Signals) -> None:
    log.info("%s: draining (grace %.0f s)", sig.name, server.config.shutdown_grace_s)
    await server.stop()
