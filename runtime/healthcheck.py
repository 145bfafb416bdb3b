"""`python -m runtime.healthcheck [host:port]`: exit 0 when the server reports SERVING.

A grpc.health.v1 probe for Docker's HEALTHCHECK, compose and platform command probes. It asks
the server's health service once, with a short deadline, and exits 0 on SERVING and 1 on
anything else: NOT_SERVING (the model is still loading, or the server is draining after
SIGTERM), no answer in time, nothing listening, an unknown service name. Silent on success; one
line on stderr otherwise. Torch-free, like all of runtime/.

The target defaults to 127.0.0.1 on the port the server would use by default: KMCORRECT_PORT
when set (the same variable `kmcorrect serve` reads), else ServeConfig's port (50051). In the
same way the probe speaks TLS when KMCORRECT_TLS_CERT is set, trusting exactly the server's own
certificate, which must then name the target's host (127.0.0.1), or the name given with
--tls-server-name. A server that requires client certificates (mutual TLS) needs --tls-cert and
--tls-key as well. Health needs no bearer token.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from runtime.config import ENV_PREFIX, ServeConfig
from runtime.errors import UserError

DEFAULT_TIMEOUT_S = 3.0


def default_target(env: Mapping[str, str] = os.environ) -> str:
    return f"127.0.0.1:{env.get(ENV_PREFIX + 'PORT') or ServeConfig.port}"


def default_tls_ca(env: Mapping[str, str] = os.environ) -> str | None:
    """The server's own certificate when it serves TLS: what a probe of its container trusts."""
    return env.get(ENV_PREFIX + "TLS_CERT") or None


def check(
    target: str,
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT_S,
    credentials=None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """(serving, what the server said or why there was no answer). `credentials`
    (runtime.security.channel_credentials) turn on TLS."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A probe talks to its own container: never through an HTTP proxy from the environment.
    options = [("grpc.enable_http_proxy", 0)]
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "target", nargs="?", default=None, help=f"host:port (default: {default_target()})"
    )
    parser.add_argument(
        "--service", default="", help="a service name to ask about (default: the whole server)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for the answer (default: %(default)s)",
    )
    parser.add_argument(
        "--tls-ca",
        default=default_tls_ca(),
        help="speak TLS, trusting these PEM certificates (default: $KMCORRECT_TLS_CERT if set)",
    )
    parser.add_argument("--tls-cert", help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    parser.add_argument(
        "--tls-server-name", help="the name the server's certificate must carry (default: host)"
    )
    args = parser.parse_args(argv)
    target = args.target or default_target()
    credentials = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        from runtime.security import channel_credentials

        try:
            credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except UserError as exc:
            print(f"healthcheck: {exc}", file=sys.stderr)
            return 1
    serving, said = check(target, args.service, args.timeout, credentials, args.tls_server_name)
    if not serving:
        print(f"healthcheck: {target}: {said}", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
