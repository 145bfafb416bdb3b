"""Soak: a real server over loopback under sustained load, every answer checked.

    python -m benchmarks.soak --artifact artifacts/editor-default --data data/default \\
        [--requests 50000] [--concurrency 64] [--out benchmarks/results/<device>]

1. Reference: every distinct input is corrected in this process (`Corrector.correct`, the
   service's own pipeline and engine, loaded as the server loads it, without a server).
2. Load: `kmcorrect serve` runs as a subprocess; `--concurrency` callers send `--requests`
   Correct RPCs over loopback, each with its own id. An answer counts as correct only when it
   carries its request's id and equals the reference for its own input; anything else is
   misrouted or wrong. Errors are counted by status code.
3. Memory: the server's resident set (VmRSS) is sampled throughout; growth is measured from
   the end of the warm-up (the first `--warmup` share of requests) to the end of the load.
4. Overload, on purpose: `--burst` callers at once against a queue of `--max-queue-size`
   places must be answered correctly or refused with RESOURCE_EXHAUSTED, nothing else; the
   server must then still answer correctly and report SERVING. The burst is spread over four
   connections; keep it under 4 x the server's max_concurrent_streams (256 by default), beyond
   which gRPC itself refuses streams (UNAVAILABLE, REFUSED_STREAM).
5. SIGTERM: the server drains and exits 0.

Passes when: zero errors and zero wrong answers under load, growth <= 5%, the burst refuses
only with RESOURCE_EXHAUSTED, the server recovers, and it exits 0. Exit code 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.common import device_name, environment, slug
from proto import corrector_pb2, corrector_pb2_grpc
from runtime.config import ServeConfig
from runtime.errors import UserError
from runtime.net import free_port
from runtime.serve_process import ServerProcess, start_serve
from runtime.server import load_corrector

ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH = 0.05


def load_inputs(data: Path, distinct: int, max_chars: int, seed: int) -> list[str]:
    """Up to `distinct` different inputs of at most `max_chars` from the test split, in a
    seeded random order."""
    path = data / "test.jsonl"
    if not path.exists():
        raise UserError(f"{path} not found (make data)")
    with path.open(encoding="utf-8") as f:
        rows = (json.loads(line)["input"] for line in f if line.strip())
        texts = list(dict.fromkeys(t for t in rows if len(t) <= max_chars))
    if not texts:
        raise UserError(f"{path} has no rows of at most {max_chars} characters")
    random.Random(seed).shuffle(texts)
    return texts[:distinct]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(args: argparse.Namespace, port: int) -> ServerProcess:
    flags = {"artifact": args.artifact, "port": port, "metrics-port": 0, "variant": args.variant}
    flags.update({"max-queue-size": args.max_queue_size, "log-level": "warning"})
    if args.threads:
        flags["threads"] = args.threads
    return start_serve(flags, name="soak-server", cwd=ROOT)


class Tally:
    """Outcomes of a phase: answers right and wrong, errors by code, latencies."""

    def __init__(self) -> None:
        self.correct = 0
        self.wrong: list[dict] = []
        self.errors: Counter[str] = Counter()
        self.error_details: dict[str, str] = {}  # the first message of each status code
        self.seconds: list[float] = []

    def summary(self) -> dict:
        ordered = sorted(self.seconds)

        def at(q: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

        return {
            "correct": self.correct,
            "wrong": len(self.wrong),
            "wrong_examples": self.wrong[:5],
            "errors": dict(self.errors),
            "error_details": self.error_details,
            "latency_s": {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)},
        }


async def call(stub, texts, expected, index: int, tally: Tally, timeout: float) -> None:
    which = index % len(texts)
    request = corrector_pb2.CorrectRequest(text=texts[which], id=str(index))
    started = time.perf_counter()
    try:
        reply = await stub.Correct(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        tally.errors[exc.code().name] += 1
        tally.error_details.setdefault(exc.code().name, exc.details())
        return
    tally.seconds.append(time.perf_counter() - started)
    if reply.id == request.id and reply.text == expected[which]:
        tally.correct += 1
    else:  # the text by its number: the texts are corpus text
        tally.wrong.append({"request": index, "id": reply.id, "text": which})


async def load_phase(args, channels, texts, expected, pid: int) -> tuple[dict, list]:
    """`args.requests` calls from `args.concurrency` callers; RSS sampled every 0.5 s."""
    tally = Tally()
    sent = 0
    samples: list[tuple[int, int]] = []  # (answers so far, RSS bytes)

    async def caller(k: int) -> None:
        nonlocal sent
        stub = corrector_pb2_grpc.CorrectorStub(channels[k % len(channels)])
        while sent < args.requests:
            index, sent = sent, sent + 1
            await call(stub, texts, expected, index, tally, args.timeout)

    async def sampler() -> None:
        while True:
            samples.append(
                (tally.correct + len(tally.wrong) + tally.errors.total(), rss_bytes(pid))
            )
            await asyncio.sleep(0.5)

    watch = asyncio.ensure_future(sampler())
    started = time.perf_counter()
    last_report = started
    callers = [asyncio.ensure_future(caller(k)) for k in range(args.concurrency)]
    while not all(c.done() for c in callers):
        await asyncio.sleep(1)
        if time.perf_counter() - last_report >= 30:
            last_report = time.perf_counter()
            print(f"  {sent}/{args.requests} sent, {len(samples)} RSS samples", flush=True)
    await asyncio.gather(*callers)
    seconds = time.perf_counter() - started
    watch.cancel()
    samples.append((args.requests, rss_bytes(pid)))
    result = tally.summary()
    result.update(
        requests=args.requests,
        concurrency=args.concurrency,
        seconds=seconds,
        requests_per_s=args.requests / seconds,
    )
    return result, samples


def memory_growth(samples: list[tuple[int, int]], warmup_requests: int) -> dict:
    after = [rss for done, rss in samples if done >= warmup_requests]
    base = after[0]
    return {
        "rss_after_warmup_mib": base / 2**20,
        "rss_end_mib": after[-1] / 2**20,
        "rss_max_after_warmup_mib": max(after) / 2**20,
        "growth": after[-1] / base - 1,
        "max_growth": max(after) / base - 1,
        "samples": len(samples),
    }


async def burst_phase(args, channels, texts, expected) -> dict:
    """`args.burst` calls at once: each answered correctly or refused RESOURCE_EXHAUSTED."""
    tally = Tally()
    stubs = [corrector_pb2_grpc.CorrectorStub(c) for c in channels]
    await asyncio.gather(
        *(
            call(stubs[i % len(stubs)], texts, expected, i, tally, args.timeout)
            for i in range(args.burst)
        )
    )
    after = Tally()  # then the server must still answer, correctly
    for i in range(20):
        await call(stubs[0], texts, expected, i, after, args.timeout)
    health = await health_pb2_grpc.HealthStub(channels[0]).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return {
        "burst": args.burst,
        "max_queue_size": args.max_queue_size,
        **tally.summary(),
        "after": after.summary(),
        "health_after": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
    }


async def soak(args, texts, expected) -> dict:
    server = start_server(args, free_port())
    # Four connections (a local subchannel pool each), as four client processes would open.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(server.target, options=options) for _ in range(4)]
    try:
        server.wait_ready(timeout=300)  # grpc.health.v1 says SERVING
        print(f"server {server.process.pid} SERVING on {server.target}", flush=True)
        load, samples = await load_phase(args, channels, texts, expected, server.process.pid)
        print(f"load: {load['requests_per_s']:.0f} requests/s", flush=True)
        burst = await burst_phase(args, channels, texts, expected)
        exit_code = server.stop(grace=120)["exit_code"]
    finally:
        for channel in channels:
            await channel.close()
        server.stop(grace=5)  # after an error: it has not been stopped yet
    memory = memory_growth(samples, int(args.warmup * args.requests))
    memory["rss_timeline"] = [
        (done, rss // 2**20) for done, rss in samples[:: max(1, len(samples) // 60)]
    ]
    return {"load": load, "memory": memory, "burst": burst, "exit_code_after_sigterm": exit_code}


def verdict(results: dict) -> dict:
    load, burst, memory = results["load"], results["burst"], results["memory"]
    checks = {
        "no errors under load": not load["errors"],
        "every answer right and its own": load["wrong"] == 0
        and load["correct"] == load["requests"],
        f"resident memory growth <= {MAX_GROWTH:.0%}": memory["growth"] <= MAX_GROWTH,
        "burst refused only with RESOURCE_EXHAUSTED": set(burst["errors"]) <= {"RESOURCE_EXHAUSTED"}
        and burst["wrong"] == 0,
        "burst answered or refused, one each": burst["correct"] + sum(burst["errors"].values())
        == burst["burst"],
        "serving and right after the burst": burst["health_after"] == "SERVING"
        and burst["after"]["correct"] == 20,
        "exit 0 after SIGTERM": results["exit_code_after_sigterm"] == 0,
    }
    return {"checks": checks, "passed": all(checks.values())}


def report(results: dict) -> str:
    load, memory, burst = results["load"], results["memory"], results["burst"]
    lat = load["latency_s"]
    config = results["config"]
    lines = [
        f"# Soak on {results['device']}",
        "",
        f"Artifact `{config['artifact']}` ({config['variant']}), {config['distinct_inputs']} "
        f"distinct inputs, {results['environment']['date']}.",
        "",
        "| check | result |",
        "|---|---|",
        *(
            f"| {name} | {'pass' if ok else 'FAIL'} |"
            for name, ok in results["verdict"]["checks"].items()
        ),
        "",
        f"**Load:** {load['requests']:,} requests at concurrency {load['concurrency']} in "
        f"{load['seconds']:.0f} s ({load['requests_per_s']:.0f} requests/s); "
        f"{load['correct']:,} right, {load['wrong']} wrong, errors {load['errors'] or 'none'}; "
        f"latency p50 {lat['p50'] * 1000:.1f} ms, p90 {lat['p90'] * 1000:.1f} ms, "
        f"p99 {lat['p99'] * 1000:.1f} ms.",
        "",
        f"**Memory (server VmRSS):** {memory['rss_after_warmup_mib']:.1f} MiB after warm-up, "
        f"{memory['rss_end_mib']:.1f} MiB at the end (growth {memory['growth']:+.2%}; "
        f"peak {memory['rss_max_after_warmup_mib']:.1f} MiB, {memory['max_growth']:+.2%}).",
        "",
        f"**Burst:** {burst['burst']} requests at once against {burst['max_queue_size']} queue "
        f"places: {burst['correct']} answered right, {burst['wrong']} wrong, refused "
        f"{burst['errors'] or 'none'}; afterwards {burst['after']['correct']}/20 right, "
        f"health {burst['health_after']}.",
        "",
        f"**SIGTERM:** exit code {results['exit_code_after_sigterm']}.",
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    for name in ("requests", "concurrency", "distinct", "max_chars", "burst", "max_queue_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    serve_config = ServeConfig(
        artifact=str(args.artifact), variant=args.variant, threads=args.threads
    )
    env = environment()
    texts = load_inputs(Path(args.data), args.distinct, args.max_chars, args.seed)
    print(f"reference: correcting {len(texts)} distinct inputs in-process", flush=True)
    corrector = load_corrector(serve_config)
    expected = [c.text for c in corrector.correct(texts, decoding=serve_config.decoding)]
    del corrector
    results = asyncio.run(soak(args, texts, expected))
    device = device_name(["CPUExecutionProvider"])
    results.update(
        benchmark="soak",
        device=device,
        config={
            "artifact": str(args.artifact),
            "variant": args.variant,
            "distinct_inputs": len(texts),
            "max_chars": args.max_chars,
            "warmup_share": args.warmup,
            "threads": args.threads,
            "seed": args.seed,
        },
        environment={**env, "load_average_after": os.getloadavg()},
    )
    results["verdict"] = verdict(results)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / slug(device)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(
        json.dumps(results, ensure_ascii=False, indent=1) + "\n", "utf-8"
    )
    (out / f"{args.name}.md").write_text(report(results), "utf-8")
    print(report(results))
    print(f"wrote {out / args.name}.json and .md")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    p.add_argument("--artifact", required=True, type=Path, help="exported artifact directory")
    p.add_argument("--data", required=True, type=Path, help="data directory with test.jsonl")
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--distinct", type=int, default=2000, help="distinct inputs, cycled")
    p.add_argument("--max-chars", type=int, default=200, help="longest input used (a line)")
    p.add_argument(
        "--warmup", type=float, default=0.1, help="share of requests before memory is baselined"
    )
    p.add_argument(
        "--burst",
        type=int,
        default=800,
        help="requests sent at once after the load (under 4 x max_concurrent_streams)",
    )
    p.add_argument("--max-queue-size", type=int, default=512, help="the server's queue places")
    p.add_argument("--variant", default="opt", help="graph variant served")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads; 0: its choice")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per RPC")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default benchmarks/results/<device-slug>")
    p.add_argument("--name", default="soak", help="file stem of the .json and .md written")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        results = run(parse_args(argv))
    except UserError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    return 0 if results["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
