"""The real Triton client as an independent load source: `tritonclient.grpc.aio` against a
KServe v2 endpoint, measured as perf_analyzer measures (benchmarks.loadgen.measure_until_stable:
fixed concurrency, back-to-back windows until three are stable). Run in a process of its own,
because tritonclient's protobuf descriptors and ours share names:

    python -m benchmarks.tritonclient_load --target 127.0.0.1:P --concurrency 8 \\
        --window-s 5 --min-answers 50 --max-window-s 60 --max-windows 10 \\
        --warmup-s 2 --max-warmup-s 30 < texts.json   # a JSON list of texts

prints one JSON object: the merged stable windows' numbers, every window's throughput, and
whether stability was reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from benchmarks.loadgen import measure_until_stable
from runtime.kserve_codec import INPUT_NAME, OUTPUT_NAME

MODEL = "khmer-correct"


async def measure(args: argparse.Namespace, texts: list[str]) -> dict:
    client = InferenceServerClient(args.target)
    wanted = [InferRequestedOutput(OUTPUT_NAME)]

    async def send(text: str) -> tuple[str, list[str]]:
        tensor = InferInput(INPUT_NAME, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        try:
            result = await client.infer(MODEL, [tensor], outputs=wanted)
        except InferenceServerException as exc:
            return (exc.status() or "UNKNOWN").removeprefix("StatusCode."), []
        return "OK", [b.decode() for b in result.as_numpy(OUTPUT_NAME).reshape(-1)]

    try:
        return await measure_until_stable(
            send,
            texts,
            args.concurrency,
            window_s=args.window_s,
            min_answers=args.min_answers,
            max_window_s=args.max_window_s,
            max_windows=args.max_windows,
            warmup_s=args.warmup_s,
            max_warmup_s=args.max_warmup_s,
        )
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of a KServe v2 gRPC endpoint")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--window-s", type=float, required=True)
    p.add_argument("--min-answers", type=int, required=True)
    p.add_argument("--max-window-s", type=float, required=True)
    p.add_argument("--max-windows", type=int, required=True)
    p.add_argument("--warmup-s", type=float, required=True)
    p.add_argument("--max-warmup-s", type=float, required=True)
    args = p.parse_args(argv)
    texts = json.load(sys.stdin)
    print(json.dumps(asyncio.run(measure(args, texts))))


if __name__ == "__main__":
    main()
