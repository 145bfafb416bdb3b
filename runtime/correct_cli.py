"""`kmcorrect correct`: UTF-8 lines in, exactly one corrected line out per line.

The model runs in this process (`--artifact`, an exported artifact, in onnxruntime) or in
a running service (`--server host:port`, with `--tls` or `--tls-ca`, `--tls-cert`/`--tls-key`
and `--token-file` for one with TLS, mutual TLS or a bearer token). `--pdf FILE` extracts the
PDF's text with pdftotext and corrects it page by page, pages separated by form feeds as
pdftotext does. `--min-confidence X` sets the editor's confidence gate for every line, here or
on the server.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from runtime.errors import UserError

DEFAULT_ARTIFACT = Path("artifacts/editor-default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="UTF-8 text file (default: standard input)")
    source.add_argument("--pdf", type=Path, help="a PDF: extract with pdftotext, correct")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--artifact",
        type=Path,
        help=f"an exported artifact directory (default: {DEFAULT_ARTIFACT})",
    )
    where.add_argument("--server", help="host:port of a running `kmcorrect serve`")
    secure = parser.add_argument_group("with --server: TLS and the bearer token")
    secure.add_argument("--tls", action="store_true", help="TLS, trusting the system's roots")
    secure.add_argument("--tls-ca", type=Path, help="TLS, trusting these PEM certificates")
    secure.add_argument("--tls-cert", type=Path, help="client certificate (PEM), for mutual TLS")
    secure.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    secure.add_argument("--token-file", type=Path, help="a file holding the bearer token")
    parser.add_argument("--mode", choices=("full", "substitution"), default="full")
    parser.add_argument("--decoding", choices=("aggressive", "greedy"), default="aggressive")
    parser.add_argument(
        "--min-confidence",
        type=float,
        metavar="X",
        help="the editor's confidence gate, 0..1: edits less confident than X are not applied "
        "(default: the artifact's threshold, calibrated at export; 0 for a run directory; "
        "ignored by sequence-to-sequence models)",
    )
    parser.add_argument("--variant", choices=("fp32", "opt", "int8", "fp16"), default="opt")
    parser.add_argument("--batch-size", type=int, default=32)


def _read_lines(args: argparse.Namespace) -> list[str]:
    if args.pdf is not None:
        return _pdf_text(args.pdf).split("\n")
    try:
        data = args.input.read_bytes() if args.input else sys.stdin.buffer.read()
    except OSError as exc:
        raise UserError(f"cannot read {args.input}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"input is not UTF-8 (byte {exc.start}): {args.input or 'stdin'}") from None
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def _pdf_text(path: Path) -> str:
    """The PDF's text as pdftotext -layout reads it; pages end with a form feed."""
    if shutil.which("pdftotext") is None:
        raise UserError("--pdf needs pdftotext: apt-get install poppler-utils")
    if not path.is_file():
        raise UserError(f"PDF not found: {path}")
    done = subprocess.run(
        ["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True
    )
    if done.returncode != 0:
        raise UserError(f"pdftotext could not read {path}: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode("utf-8", errors="replace")


def _correct_local(args: argparse.Namespace, lines: list[str], corrector) -> list[str]:
    # Form feeds (PDF page breaks) are kept out of the model and put back around each page.
    pages = [line.split("\f") for line in lines]
    flat = [part for parts in pages for part in parts]
    corrections = corrector.correct(
        flat,
        mode=args.mode,
        decoding=args.decoding,
        min_confidence=args.min_confidence,
        batch_size=args.batch_size,
    )
    fixed = iter([c.text for c in corrections])
    return ["\f".join(next(fixed) for _ in parts) for parts in pages]


def load_artifact_corrector(args: argparse.Namespace):
    """The corrector of ``--artifact``, in onnxruntime."""
    from runtime.corrector import Corrector

    if not (args.artifact / "manifest.json").is_file():
        hint = (
            " (a training run: pass it as --run-dir)"
            if (args.artifact / "checkpoints").is_dir()
            else ""
        )
        raise UserError(
            f"{args.artifact} is not an exported artifact (no manifest.json){hint}: "
            "run `make export`, or pass --server"
        )
    return Corrector.load(args.artifact, variant=args.variant)


def _correct_remote(args: argparse.Namespace, lines: list[str]) -> list[str]:
    import grpc

    from runtime.client import Client
    from runtime.security import channel_credentials, read_token

    credentials = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    token = read_token(args.token_file) if args.token_file else None
    pages = [line.split("\f") for line in lines]
    flat = [part for parts in pages for part in parts]
    try:
        with Client(args.server, credentials=credentials, token=token) as client:
            results = client.correct_stream(
                iter(flat),
                mode=args.mode,
                decoding=args.decoding,
                spans=False,
                min_confidence=args.min_confidence,
            )
            fixed = iter([r.text for r in results])
    except grpc.RpcError as exc:
        raise UserError(f"server {args.server}: {exc.code().name}: {exc.details()}") from None
    return ["\f".join(next(fixed) for _ in parts) for parts in pages]


def run(args: argparse.Namespace, load_corrector=load_artifact_corrector) -> int:
    """``load_corrector(args)``: the in-process corrector (the artifact's by default; the
    console script passes one for a training run, which needs torch)."""
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise UserError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
    remote_only = ("tls", "tls_ca", "tls_cert", "tls_key", "token_file")
    if not args.server and any(getattr(args, name) for name in remote_only):
        raise UserError("--tls, --tls-ca, --tls-cert, --tls-key and --token-file need --server")
    lines = _read_lines(args)
    if args.server:
        corrected = _correct_remote(args, lines)
    else:
        corrected = _correct_local(args, lines, load_corrector(args))
    out = sys.stdout
    for line in corrected:
        out.write(line + "\n")
    out.flush()
    return 0
