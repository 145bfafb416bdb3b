"""Server configuration: defaults < YAML file < KMCORRECT_* environment < command-line flags.

Every field is a plain value so the same names work in all three places, e.g. `port: 50051`
in the file, `KMCORRECT_PORT=50051` in the environment, `--port 50051` on the command line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import UserError

ENV_PREFIX = "KMCORRECT_"


@dataclass(frozen=True)
class ServeConfig:
    artifact: str = "artifacts/editor-default"
    model_name: str = "khmer-correct"  # the KServe v2 model name
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 50051
    metrics_port: int = 8002  # Triton's metrics port; 0 turns the endpoint off
    variant: str = "opt"  # which exported graph: fp32 | opt | int8 | fp16
    device: str = "cpu"  # cpu | cuda | tensorrt (onnxruntime providers) | tensorrt-native
    threads: int = 0  # onnxruntime intra-op threads; 0 = onnxruntime's choice
    decoding: str = "aggressive"  # default when a request does not say: aggressive | greedy
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    max_queue_size: int = 4096
    bucket_width: int = 64
    piece_len: int = 0  # characters per model piece; 0 = the artifact's maximum source length
    max_text_chars: int = 100_000
    max_batch_texts: int = 1024
    max_message_bytes: int = 8 * 1024 * 1024
    max_concurrent_streams: int = 256
    tls_cert: str = ""  # PEM certificate chain; with tls_key the port speaks TLS
    tls_key: str = ""  # PEM private key of tls_cert, unencrypted
    tls_client_ca: str = ""  # PEM CA certificates; set: clients need a certificate they issued
    auth_token_file: str = ""  # a file holding the bearer token every RPC but health must carry
    shutdown_grace_s: float = 30.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        choices = {
            "variant": ("fp32", "opt", "int8", "fp16"),
            "device": ("cpu", "cuda", "tensorrt", "tensorrt-native"),
            "decoding": ("greedy", "aggressive"),
            "log_level": ("debug", "info", "warning", "error"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", "float") and value < 0:
                raise UserError(f"{field.name} must not be negative")
        for name in ("max_batch_size", "max_queue_size", "max_text_chars", "max_batch_texts"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "tls_key" if self.tls_cert else "tls_cert"
            raise UserError(f"TLS needs both tls_cert and tls_key: {missing} is missing")
        if self.tls_client_ca and not self.tls_cert:
            raise UserError("tls_client_ca (mutual TLS) needs tls_cert and tls_key as well")


def _coerce(field: dataclasses.Field, value: object, source: str) -> object:
    kind = {"int": int, "float": float, "str": str}[field.type]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {field.name} must be {field.type}, got {value!r}") from None


def load_config(
    file: Path | None = None,
    env: Mapping[str, str] = os.environ,
    flags: Mapping[str, object] | None = None,
) -> ServeConfig:
    fields = {f.name: f for f in dataclasses.fields(ServeConfig)}
    values: dict[str, object] = {}
    if file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise UserError(f"config file {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"config file {file} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config file {file} must hold a mapping of settings")
        for key, value in loaded.items():
            if key not in fields:
                raise UserError(f"config file {file}: unknown setting {key!r}")
            values[key] = _coerce(fields[key], value, str(file))
    for name, field in fields.items():
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _coerce(field, env[key], key)
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(fields[name], value, f"--{name.replace('_', '-')}")
    return ServeConfig(**values)
