"""Security over real gRPC on loopback: TLS, mutual TLS, the bearer token, the loopback bind, the
message and stream limits, and no pickle anywhere. Certificates are real: a CA issues the server
certificate (127.0.0.1 and localhost) and a client certificate; a second CA issues a rogue one."""

import asyncio
import datetime
import io
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving import Running, config

from proto import corrector_pb2, corrector_pb2_grpc, kserve_pb2, kserve_pb2_grpc
from runtime import healthcheck
from runtime.client import AsyncClient, Client
from runtime.config import ENV_PREFIX, ServeConfig
from runtime.errors import UserError
from runtime.kserve_codec import unpack_bytes
from runtime.security import channel_credentials, read_token, server_credentials
from tests.conftest import KHMER_SENTENCES

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "kmc-test-token-7f3a9c"
TEXT = KHMER_SENTENCES[1]


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path
    token_file: Path


def _issue(common_name, issuer=None, *, ca=False, names=(), usage=None):
    """(certificate, key) for `common_name`, signed by `issuer` (certificate, key) or by itself."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_cert, issuer_key = issuer or (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(folder: Path, name: str, issued) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    certificate, key = issued
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = tmp_path_factory.mktemp("certs")
    ca = _issue("khmer-correct test CA", ca=True)
    other_ca = _issue("another CA", ca=True)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _issue("khmer-correct", ca, names=names, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("pipeline", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = _issue("pipeline", other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_path, _ = _write(folder, "ca", ca)
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")  # a trailing newline, as editors leave it
    return Certs(
        ca_path,
        *_write(folder, "server", server),
        *_write(folder, "client", client),
        *_write(folder, "rogue", rogue),
        token_file,
    )


@pytest.fixture(scope="module")
def tls_server(artifact, certs):
    """TLS and the bearer token."""
    server = Running(
        config(
            artifact,
            tls_cert=str(certs.server_cert),
            tls_key=str(certs.server_key),
            auth_token_file=str(certs.token_file),
        )
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(artifact, certs):
    """Mutual TLS: a client certificate from the test CA is required."""
    server = Running(
        config(
            artifact,
            tls_cert=str(certs.server_cert),
            tls_key=str(certs.server_key),
            tls_client_ca=str(certs.ca),
        )
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited_server(artifact):
    """Plaintext on the default host, with small message and stream limits."""
    server = Running(config(artifact, max_message_bytes=64 * 1024, max_concurrent_streams=2))
    yield server
    server.stop()


def _tls(certs: Certs, cert: Path | None = None, key: Path | None = None):
    return channel_credentials(certs.ca, cert, key)


# --- TLS ---------------------------------------------------------------------------------------


def test_plaintext_client_cannot_reach_a_tls_server(tls_server):
    client = Client(tls_server.target, timeout=10, token=TOKEN)
    with client, pytest.raises(grpc.RpcError) as error:
        client.correct(TEXT)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_client_gets_every_rpc(tls_server, certs):
    texts = KHMER_SENTENCES[1:4]  # TEXT first
    with Client(tls_server.target, credentials=_tls(certs), token=TOKEN) as client:
        singles = [client.correct(t).text for t in texts]
        assert all(singles)
        assert [r.text for r in client.correct_batch(texts)] == singles
        assert [r.text for r in client.correct_stream(iter(texts))] == singles
        assert client.health() == "SERVING"

    async def through_asyncio():
        async with AsyncClient(tls_server.target, credentials=_tls(certs), token=TOKEN) as client:
            return (await client.correct(texts[0])).text

    assert asyncio.run(through_asyncio()) == singles[0]
    with grpc.secure_channel(tls_server.target, _tls(certs)) as channel:
        assert _infer(channel, [("authorization", f"Bearer {TOKEN}")]) == [singles[0]]


def _infer(channel, metadata):
    """KServe v2 ModelInfer of TEXT; the corrected texts."""
    request = kserve_pb2.ModelInferRequest(
        model_name="khmer-correct",
        inputs=[
            kserve_pb2.ModelInferRequest.InferInputTensor(
                name="TEXT",
                datatype="BYTES",
                shape=[1],
                contents=kserve_pb2.InferTensorContents(bytes_contents=[TEXT.encode()]),
            )
        ],
    )
    response = kserve_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        request, metadata=metadata, timeout=30
    )
    return [e.decode() for e in unpack_bytes(response.raw_output_contents[0])]


def test_mutual_tls_needs_a_client_certificate_from_its_ca(mtls_server, certs):
    refused = {
        "no certificate": _tls(certs),
        "certificate from another CA": _tls(certs, certs.rogue_cert, certs.rogue_key),
    }
    for why, credentials in refused.items():
        client = Client(mtls_server.target, timeout=10, credentials=credentials)
        with client, pytest.raises(grpc.RpcError) as error:
            client.correct(TEXT)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE, why
    accepted = _tls(certs, certs.client_cert, certs.client_key)
    with Client(mtls_server.target, credentials=accepted) as client:
        assert client.correct(TEXT).text
        assert client.health() == "SERVING"


# --- the bearer token --------------------------------------------------------------------------


def _correct(channel, metadata):
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    return stub.Correct(corrector_pb2.CorrectRequest(text=TEXT), metadata=metadata, timeout=30)


def _correct_batch(channel, metadata):
    request = corrector_pb2.CorrectBatchRequest(texts=[TEXT])
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    return stub.CorrectBatch(request, metadata=metadata, timeout=30)


def _correct_stream(channel, metadata):
    requests = iter([corrector_pb2.CorrectRequest(text=TEXT)] * 2)
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    return list(stub.CorrectStream(requests, metadata=metadata, timeout=30))


def _server_ready(channel, metadata):
    stub = kserve_pb2_grpc.GRPCInferenceServiceStub(channel)
    return stub.ServerReady(kserve_pb2.ServerReadyRequest(), metadata=metadata, timeout=30)


def _reflection(channel, metadata):
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=30))


@pytest.mark.parametrize(
    "call", [_correct, _correct_batch, _correct_stream, _infer, _server_ready, _reflection]
)
def test_token_is_checked_on_every_service_but_health(tls_server, certs, call):
    registry = tls_server.server.state.metrics.registry
    labels = {"model": "khmer-correct", "reason": "unauthenticated"}
    refused_before = registry.get_sample_value("nv_inference_request_failure_total", labels) or 0
    with grpc.secure_channel(tls_server.target, _tls(certs)) as channel:
        for metadata, problem in [
            (None, "missing bearer token"),
            ([("authorization", "Bearer wrong-token")], "invalid bearer token"),
            ([("authorization", TOKEN)], "invalid bearer token"),  # the scheme is part of it
        ]:
            with pytest.raises(grpc.RpcError) as error:
                call(channel, metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert problem in error.value.details() and "wrong-token" not in error.value.details()
        assert call(channel, [("authorization", f"Bearer {TOKEN}")])
    refused = registry.get_sample_value("nv_inference_request_failure_total", labels)
    assert refused - refused_before == 3


def test_health_needs_no_token(tls_server, certs):
    with grpc.secure_channel(tls_server.target, _tls(certs)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "khmer_correct.v1.Corrector"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_healthcheck_probe_speaks_tls_from_the_servers_own_settings(
    tls_server, mtls_server, certs, monkeypatch, capsys
):
    monkeypatch.delenv(ENV_PREFIX + "TLS_CERT", raising=False)
    assert healthcheck.main([tls_server.target, "--timeout", "5"]) == 1  # plaintext probe
    assert "UNAVAILABLE" in capsys.readouterr().err
    # As in the container: the server's own KMCORRECT_TLS_CERT, no flags, no token.
    monkeypatch.setenv(ENV_PREFIX + "TLS_CERT", str(certs.server_cert))
    assert healthcheck.main([tls_server.target, "--timeout", "5"]) == 0
    name = ["--tls-server-name", "elsewhere.example"]
    assert healthcheck.main([tls_server.target, "--timeout", "5", *name]) == 1
    capsys.readouterr()
    client_cert = ["--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
    assert healthcheck.main([mtls_server.target, "--timeout", "5", *client_cert]) == 0
    assert healthcheck.main([mtls_server.target, "--timeout", "5"]) == 1
    monkeypatch.setenv(ENV_PREFIX + "TLS_CERT", str(certs.token_file))
    assert healthcheck.main([tls_server.target]) == 1
    assert f"{certs.token_file}: not a PEM certificate file" in capsys.readouterr().err


def test_correct_cli_reaches_a_tls_and_token_server(tls_server, certs, tmp_path, capsys):
    from kmcorrect.cli import main

    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(KHMER_SENTENCES[:2]) + "\n", encoding="utf-8")
    argv = ["correct", "--server", tls_server.target, "--input", str(lines)]
    secured = ["--tls-ca", str(certs.ca), "--token-file", str(certs.token_file)]
    assert main([*argv, *secured]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main([*argv, "--tls-ca", str(certs.ca)]) == 2
    assert "UNAUTHENTICATED: missing bearer token" in capsys.readouterr().err
    assert main(["correct", "--input", str(lines), *secured]) == 2
    assert "need --server" in capsys.readouterr().err


# --- settings and files ------------------------------------------------------------------------


def test_tls_settings_go_together():
    with pytest.raises(UserError, match="tls_key is missing"):
        ServeConfig(tls_cert="server.pem")
    with pytest.raises(UserError, match="tls_cert is missing"):
        ServeConfig(tls_key="server.key")
    with pytest.raises(UserError, match=r"tls_client_ca \(mutual TLS\) needs tls_cert"):
        ServeConfig(tls_client_ca="ca.pem")


def test_bad_certificate_key_and_token_files_are_named(certs, tmp_path):
    def server(**files):
        settings = {"tls_cert": str(certs.server_cert), "tls_key": str(certs.server_key), **files}
        return server_credentials(ServeConfig(**settings))

    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    cases = {
        f"tls_cert {junk}: not a PEM certificate file": dict(tls_cert=str(junk)),
        f"tls_cert {missing}: cannot read it": dict(tls_cert=str(missing)),
        f"tls_key {certs.ca} is not an unencrypted PEM": dict(tls_key=str(certs.ca)),
        f"tls_key {certs.client_key} is not the private key of tls_cert": dict(
            tls_key=str(certs.client_key)
        ),
        f"tls_client_ca {junk}: not a PEM": dict(tls_client_ca=str(junk)),
    }
    for message, files in cases.items():
        with pytest.raises(UserError) as error:
            server(**files)
        assert str(error.value).startswith(message), error.value
    assert server(tls_client_ca=str(certs.ca)) is not None
    with pytest.raises(UserError, match="needs its client key"):
        channel_credentials(certs.ca, cert=certs.client_cert)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(UserError, match=f"token file {empty} is empty"):
        read_token(empty)
    spaced = tmp_path / "spaced"
    spaced.write_text("two words")
    with pytest.raises(UserError, match="printable ASCII without spaces"):
        read_token(spaced)
    assert read_token(certs.token_file) == TOKEN


def test_serve_with_a_missing_certificate_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "nowhere" / "server.pem"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmcorrect",
            "serve",
            "--artifact",
            str(tmp_path / "no-artifact"),  # the certificate is checked first
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--tls-cert",
            str(missing),
            "--tls-key",
            str(tmp_path / "server.key"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert (
        f"tls_cert {missing}: cannot read it: No such file or directory" in json.loads(line)["msg"]
    )


# --- the bind and the limits -------------------------------------------------------------------


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks a route, sends nothing
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def test_default_host_is_loopback_only(limited_server):
    assert limited_server.server.config.host == ServeConfig.host == "127.0.0.1"
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    with Client(limited_server.target) as client:
        assert client.health() == "SERVING"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, limited_server.server.port), timeout=5).close()


def test_oversized_message_is_resource_exhausted(limited_server):
    with Client(limited_server.target) as client:
        assert client.correct(TEXT).text
        with pytest.raises(grpc.RpcError) as error:
            client.correct("ក" * 30_000)  # 90 KB of UTF-8, over the 64 KiB limit
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.value.details()


def test_streams_over_the_limit_wait_for_a_free_one(limited_server):
    """max_concurrent_streams=2: of 4 streams on one connection the client holds 2 back (HTTP/2
    flow control, not an error) until one of the first 2 ends."""

    async def scenario():
        async with grpc.aio.insecure_channel(limited_server.target) as channel:
            stub = corrector_pb2_grpc.CorrectorStub(channel)
            request = corrector_pb2.CorrectRequest(text=TEXT)
            await stub.Correct(request, timeout=30)  # connected; the server's SETTINGS are in
            calls = [stub.CorrectStream(timeout=60) for _ in range(4)]

            async def first_answer(call):
                await call.write(request)
                return await call.read()

            tasks = [asyncio.ensure_future(first_answer(call)) for call in calls]
            while sum(t.done() for t in tasks) < 2:
                await asyncio.wait(tasks, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(1.0)  # time enough for a third, were it let through
            answered = [call for call, task in zip(calls, tasks, strict=True) if task.done()]
            assert len(answered) == 2
            for call in answered:
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
            await asyncio.wait_for(asyncio.gather(*tasks), 30)  # the other 2 now go through
            for call in calls:
                if call not in answered:
                    await call.done_writing()
            return [task.result().text for task in tasks]

    assert all(asyncio.run(scenario()))


# --- no pickle ---------------------------------------------------------------------------------

# Modules that unpickle (or may) are never used; torch.load only with weights_only=True; np.load
# never with allow_pickle=True.
UNPICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve"}


def _calls(tokens: list[tokenize.TokenInfo], modules: set[str], function: str):
    """(line, argument tokens) of every `<module>.<function>(...)` call, `module` in `modules`."""
    strings = [t.string for t in tokens]
    for i in range(len(strings) - 3):
        if strings[i] in modules and strings[i + 1 : i + 4] == [".", function, "("]:
            depth, end = 1, i + 4
            while depth and end < len(strings):
                depth += {"(": 1, ")": -1}.get(strings[end], 0)
                end += 1
            yield tokens[i].start[0], strings[i + 4 : end - 1]


def _has_keyword(arguments: list[str], name: str) -> bool:
    return any(arguments[k : k + 3] == [name, "=", "True"] for k in range(len(arguments)))


def _unpickling(name: str, source: str) -> list[str]:
    """`name:line: what` for every way `source` could unpickle."""
    tokens = [  # code only: words in strings and comments are no calls
        t
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE)
    ]
    found = [f"{name}:{t.start[0]}: {t.string}" for t in tokens if t.string in UNPICKLERS]
    for line, arguments in _calls(tokens, {"torch"}, "load"):
        if not _has_keyword(arguments, "weights_only"):
            found.append(f"{name}:{line}: torch.load without weights_only=True")
    for line, arguments in _calls(tokens, {"np", "numpy"}, "load"):
        if _has_keyword(arguments, "allow_pickle"):
            found.append(f"{name}:{line}: np.load with allow_pickle=True")
    return sorted(found, key=lambda f: int(f.split(":")[1]))


def test_the_pickle_scan_finds_each_way_in():
    source = """import pickle
from joblib import load
import dill as d
state = torch.load(path)
state = torch.load(path, weights_only=False)
array = np.load(path, allow_pickle=True)
state = torch.load(
    path, map_location="cpu", weights_only=True
)
array = numpy.load(path)
note = "pickle.load(f)"  # torch.load(f)
"""
    assert _unpickling("m.py", source) == [
        "m.py:1: pickle",
        "m.py:2: joblib",
        "m.py:3: dill",
        "m.py:4: torch.load without weights_only=True",
        "m.py:5: torch.load without weights_only=True",
        "m.py:6: np.load with allow_pickle=True",
    ]


def test_no_tracked_python_file_unpickles():
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    found = []
    for name in listed.stdout.split():
        path = ROOT / name
        if path.is_file():  # not deleted in the working tree
            found += _unpickling(name, path.read_text(encoding="utf-8"))
    assert not found, "\n".join(found)


class _Payload:
    """What a malicious pickle carries: code that runs when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_is_refused_unopened(run_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from runtime.artifact import sha256_file
    from training.checkpoint import load

    folder = tmp_path / "checkpoints"
    shutil.copytree(run_dir / "checkpoints", folder)
    marker = tmp_path / "payload-ran"
    # A torch.save pickle in place of the tensors, with its hash written into the JSON.
    (weights,) = folder.glob("best*.safetensors")
    torch.save({"model": _Payload(marker)}, weights)
    info = folder / "best.json"
    meta = json.loads(info.read_text(encoding="utf-8"))
    info.write_text(json.dumps({**meta, "sha256": sha256_file(weights)}), encoding="utf-8")
    with pytest.raises(UserError, match="checkpoint does not load"):
        load(folder)
    # A pickle given as the checkpoint itself.
    pickled = tmp_path / "model.pt"
    torch.save({"model": _Payload(marker)}, pickled)
    with pytest.raises(UserError, match=f"{pickled}: not a khmer-correct checkpoint"):
        load(pickled)
    assert not marker.exists()
