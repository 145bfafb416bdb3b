"""TLS and the bearer token, for the server and for every client (library, CLI, health probe).

Certificate, key and token files are read and checked here, with the standard library's ssl
module, before gRPC sees them: gRPC reports a bad PEM only as "failed to bind" or as a failed
connection, while these checks raise a UserError naming the setting and the file.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Callable
from pathlib import Path

import grpc

from runtime.config import ServeConfig
from runtime.errors import UserError

# Load balancers and container platforms probe health without credentials.
OPEN_SERVICE_PREFIX = "/grpc.health.v1.Health/"


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read it: {exc.strerror}") from None


def read_certificates(path: str | Path, what: str) -> bytes:
    """The PEM certificates in `path` (a chain or a CA bundle), checked to parse."""
    data = _read(path, what)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError):
        raise UserError(f"{what} {path}: not a PEM certificate file") from None
    return data


def _no_password() -> bytes:
    """An encrypted key fails to load instead of prompting on a terminal (gRPC needs it plain)."""
    return b""


def read_key_pair(
    cert: str | Path, key: str | Path, cert_what: str, key_what: str
) -> tuple[bytes, bytes]:
    """(private key, certificate chain), checked to parse and to belong together."""
    chain = read_certificates(cert, cert_what)
    private_key = _read(key, key_what)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        problem = (
            f"is not the private key of {cert_what} {cert}"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "is not an unencrypted PEM private key"
        )
        raise UserError(f"{key_what} {key} {problem}") from None
    return private_key, chain


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """TLS for the port when tls_cert is set; with tls_client_ca, clients must present a
    certificate that CA issued (mutual TLS). None: plaintext."""
    if not config.tls_cert:
        return None
    pair = read_key_pair(config.tls_cert, config.tls_key, "tls_cert", "tls_key")
    client_ca = (
        read_certificates(config.tls_client_ca, "tls_client_ca") if config.tls_client_ca else None
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS for a client channel: trust the PEM certificates in `ca` (None: the system's roots),
    and present `cert` with its `key` to a server that requires mutual TLS."""
    if cert is not None and key is None:
        raise UserError(f"client certificate {cert} needs its client key as well")
    if key is not None and cert is None:
        raise UserError(f"client key {key} needs its client certificate as well")
    roots = read_certificates(ca, "CA certificate") if ca is not None else None
    private_key = chain = None
    if cert is not None:
        private_key, chain = read_key_pair(cert, key, "client certificate", "client key")
    return grpc.ssl_channel_credentials(roots, private_key, chain)


def read_token(path: str | Path, what: str = "token file") -> str:
    """The bearer token in `path`, without surrounding whitespace."""
    token = _read(path, what).strip()
    if not token:
        raise UserError(f"{what} {path} is empty")
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise UserError(
            f"{what} {path}: the token must be printable ASCII without spaces "
            "(it travels in a gRPC header)"
        )
    return token.decode("ascii")


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries `token`."""
    return (("authorization", f"Bearer {token}"),)


class BearerTokenCheck(grpc.aio.ServerInterceptor):
    """Refuses with UNAUTHENTICATED every RPC that lacks `authorization: Bearer <token>`, except
    grpc.health.v1 (reflection is protected like the services). A refused call never reaches a
    servicer and its request is never parsed."""

    def __init__(self, token: str, on_refused: Callable[[], None]) -> None:
        self._expected = bearer_metadata(token)[0][1].encode()
        self._on_refused = on_refused

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICE_PREFIX):
            return handler
        sent = next(
            (v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"),
            None,
        )
        if sent is None:
            problem = "missing bearer token: send the metadata 'authorization: Bearer <token>'"
        elif not hmac.compare_digest(sent.encode(), self._expected):
            problem = "invalid bearer token"
        else:
            return handler
        self._on_refused()
        return _refusal(handler, problem)


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` that only aborts; the request stays raw
    bytes (no deserializer)."""

    async def refuse(_request, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(refuse)
