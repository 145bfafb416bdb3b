"""`kmcorrect demo`: start the service on an artifact, correct sample test rows over gRPC,
show each before and after with its CER, and stop the service with SIGTERM.

`make demo` builds what this needs first (data → train → export), so on a fresh machine it
is the whole pipeline end to end.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from runtime.errors import UserError
from runtime.net import free_port
from runtime.serve_process import start_serve
from runtime.text import ScoreBoard, cer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/editor-default"))
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--rows", type=int, default=12, help="sample test rows to show")
    parser.add_argument("--seed", type=int, default=0)


def _sample(data: Path, count: int, seed: int) -> list[dict]:
    path = data / "test.jsonl"
    if not path.is_file():
        raise UserError(f"no test split at {path}: run `make data` first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    damaged = [r for r in rows if r["input"] != r["target"]]
    if not damaged:
        raise UserError(f"{path} has no damaged rows to show")
    return random.Random(seed).sample(damaged, min(count, len(damaged)))


def run(args: argparse.Namespace) -> int:
    from runtime.client import Client

    if not (args.artifact / "manifest.json").is_file():
        raise UserError(f"no artifact at {args.artifact}: run `make export` first")
    rows = _sample(args.data, args.rows, args.seed)
    server = start_serve(
        {"artifact": args.artifact, "port": free_port(), "metrics-port": 0, "log-level": "warning"}
    )
    print(f"$ {' '.join(server.argv[1:])}")
    try:
        server.wait_ready(timeout=120)  # grpc.health.v1 says SERVING
        with Client(server.target) as client:
            started = time.perf_counter()
            results = client.correct_batch([r["input"] for r in rows])
            seconds = time.perf_counter() - started
        board = ScoreBoard()
        for row, result in zip(rows, results, strict=True):
            board.add(row["input"], result.text, row["target"])
            source = row.get("extractor") or row.get("encoding") or row.get("noise_source", "")
            print(f"\n[{row['channel']} {source}]")
            print(f"  before  CER {cer(row['input'], row['target']):6.1%}  {row['input']}")
            print(f"  after   CER {cer(result.text, row['target']):6.1%}  {result.text}")
            print(f"  target              {row['target']}")
        print(
            f"\n{len(rows)} rows over gRPC in {seconds:.2f} s: CER {board.cer_before:.1%} → "
            f"{board.cer_after:.1%} (relative reduction {board.relative_reduction:.1%}, "
            f"rows made worse {board.harm_rate:.1%})"
        )
    finally:
        code = server.stop(grace=60)["exit_code"]
    print(f"server stopped (exit code {code})")
    return 0 if code == 0 else 1
