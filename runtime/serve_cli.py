"""`kmcorrect serve`: run the gRPC service on an exported artifact until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from pathlib import Path

from runtime import logs
from runtime.config import ServeConfig, load_config
from runtime.errors import UserError

log = logging.getLogger("kmcorrect.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of settings (below)")
    types = {"int": int, "float": float, "str": str}
    for field in dataclasses.fields(ServeConfig):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=types[field.type],
            default=None,
            help=f"(default {field.default!r}; env {'KMCORRECT_' + field.name.upper()})",
        )


def run(args: argparse.Namespace) -> int:
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}
    config = load_config(args.config, flags=flags)
    logs.configure(config.log_level)
    from runtime.server import serve  # grpc is imported only when serving

    try:
        asyncio.run(serve(config))
    except UserError as exc:  # a missing or tampered artifact: health never turned SERVING
        log.error("cannot serve: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 2
    return 0
