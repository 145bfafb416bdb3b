"""Server under load: `kmcorrect serve` with dynamic batching on (max batch 32) and off (max
batch 1), both running at once as subprocesses on loopback, measured in interleaved windows.

    python -m benchmarks.server --artifact artifacts/editor-default --data data/default [--full]

The load generator runs in this process (asyncio, grpc.aio) and speaks KServe v2 ModelInfer,
one test row per request, so the peer suite can point the very same generator at Triton. A
closed-loop sweep (fixed concurrency) finds each server's peak; an open-loop sweep sends
Poisson arrivals at fractions of the higher peak to both. Every point reports p50/p90/p99
latency, requests/s and input chars/s, the mean batch size the server formed (from its
Prometheus metrics, before and after the window), and errors by status code. See
benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from benchmarks.common import BenchContext, device_name, environment, slug, spread
from benchmarks.decoding import sample_rows
from benchmarks.loadgen import ClosedLoop, OpenLoop, Sender, Window, summarize
from proto import kserve_pb2, kserve_pb2_grpc
from runtime.artifact import load_artifact
from runtime.config import ServeConfig
from runtime.kserve_codec import INPUT_NAME, OUTPUT_NAME, pack_bytes, unpack_bytes
from runtime.net import free_port
from runtime.serve_process import ServerProcess, start_serve

NAME = "server"
ROOT = Path(__file__).resolve().parents[1]
MODEL = ServeConfig.model_name  # the KServe v2 model name both our server and the peer use
SERVERS = {"batching": 32, "no_batching": 1}  # name -> max_batch_size
LABELS = {"batching": "batching on (max batch 32)", "no_batching": "batching off (max batch 1)"}
TARGET_CONCURRENCY = 32
TARGET_SPEEDUP = 4.0


@dataclass(frozen=True)
class Settings:
    concurrencies: tuple[int, ...]
    rate_fractions: tuple[float, ...]  # open-loop rates, as fractions of the closed-loop peak
    window_s: float  # one measurement window, at least ...
    min_answers: int  # ... and until this many requests completed in it (closed loop: or C)
    max_window_s: float  # ... but no longer than this
    warmup_s: float  # load before every window, at least (closed loop: and a full round)
    max_warmup_s: float  # closed loop: give up waiting for the full round after this
    repeats: int  # interleaved passes over every point
    rows: int  # test rows sent, stratified by channel (benchmarks.decoding.sample_rows)
    # Greedy: on this model and CPU the decoding benchmark finds it faster than aggressive at
    # batch 1 and 16 alike (README, Results), so it is what a deployment would run.
    decoding: str = "greedy"
    variant: str = "opt"  # the service's default graph


QUICK = Settings(
    concurrencies=(1, 8, 32, 64),
    rate_fractions=(0.25, 0.5, 0.9),
    window_s=4.0,
    min_answers=20,
    max_window_s=30.0,
    warmup_s=2.0,
    max_warmup_s=20.0,
    repeats=1,
    rows=256,
)
FULL = Settings(
    concurrencies=(1, 2, 4, 8, 16, 32, 64, 128),
    rate_fractions=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    window_s=15.0,
    min_answers=50,
    max_window_s=120.0,
    warmup_s=3.0,
    max_warmup_s=60.0,
    repeats=3,
    rows=1000,
)


# ---------------------------------------------------------------------------------- processes


def model_ready(channel) -> bool:
    """Whether KServe v2 ModelReady says yes (the readiness Triton's clients wait for)."""
    request = kserve_pb2.ModelReadyRequest(name=MODEL)
    return kserve_pb2_grpc.GRPCInferenceServiceStub(channel).ModelReady(request, timeout=5).ready


async def wait_ready(servers: list[ServerProcess], timeout: float = 300) -> None:
    """Until every server's model is ready, waiting on all at once (they start together)."""
    await asyncio.gather(*(asyncio.to_thread(s.wait_ready, model_ready, timeout) for s in servers))


def start_ours(
    name: str,
    artifact: Path,
    log_dir: Path,
    *,
    max_batch_size: int,
    settings: Settings,
    threads: int,
    device: str,
) -> ServerProcess:
    """`kmcorrect serve` on free loopback ports."""
    flags = {
        "artifact": artifact,
        "port": free_port(),
        "metrics-port": free_port(),
        "max-batch-size": max_batch_size,
        "variant": settings.variant,
        "decoding": settings.decoding,
        "device": device,
        "threads": threads,
        "log-level": "warning",
    }
    return start_serve(flags, name=name, log_dir=log_dir, cwd=ROOT)


# ---------------------------------------------------------------------------------- client


def kserve_sender(stub: kserve_pb2_grpc.GRPCInferenceServiceStub) -> Sender:
    """One text per ModelInfer request, shaped [1, 1] (a batch of one: what Triton expects of a
    batching model, and what our server reads as one text)."""
    tensor = kserve_pb2.ModelInferRequest.InferInputTensor(
        name=INPUT_NAME, datatype="BYTES", shape=[1, 1]
    )
    wanted = [kserve_pb2.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT_NAME)]

    async def send(text: str) -> tuple[str, list[str]]:
        request = kserve_pb2.ModelInferRequest(
            model_name=MODEL,
            inputs=[tensor],
            outputs=wanted,
            raw_input_contents=[pack_bytes([text.encode()])],
        )
        try:
            response = await stub.ModelInfer(request)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, []
        if response.raw_output_contents:
            return "OK", [a.decode() for a in unpack_bytes(response.raw_output_contents[0])]
        return "OK", [b.decode() for b in response.outputs[0].contents.bytes_contents]

    return send


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")


def scrape(url: str) -> dict[str, float]:
    """A Prometheus page as {metric name: value}, summed over the samples of our model (and
    unlabelled ones); counters' `_total` suffix dropped, so that our names and Triton's meet."""
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in page.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        if labels and f'model="{MODEL}"' not in labels:
            continue
        name = name.removesuffix("_total")
        values[name] = values.get(name, 0.0) + float(value)
    return values


def delta_ratio(window: Window, numerator: str, denominator: str) -> float | None:
    """Δnumerator / Δdenominator between the window's two metric readings."""
    before, after = window.before or {}, window.after or {}
    bottom = after.get(denominator, 0.0) - before.get(denominator, 0.0)
    if bottom <= 0:
        return None
    return (after.get(numerator, 0.0) - before.get(numerator, 0.0)) / bottom


def point(window: Window, **extra) -> dict:
    """One window's summary plus the batches the server formed in it: model pieces per engine
    batch (our histogram) and texts per execution (Triton's counters, which both servers
    keep)."""
    return {
        **summarize(window),
        "mean_batch": delta_ratio(
            window, "khmer_correct_batch_size_sum", "khmer_correct_batch_size_count"
        ),
        "texts_per_execution": delta_ratio(window, "nv_inference_count", "nv_inference_exec_count"),
        **extra,
    }


def aggregate(points: list[dict]) -> dict:
    """Repeats of one point: medians with min-max, errors and bad answers summed, and every
    window kept."""

    def over(get) -> dict | None:
        values = [v for v in map(get, points) if v is not None]
        return spread(values) if values else None

    errors: dict[str, int] = {}
    for p in points:
        for status, count in p["errors"].items():
            errors[status] = errors.get(status, 0) + count
    return {
        "repeats": len(points),
        "requests_per_s": over(lambda p: p["requests_per_s"]),
        "chars_per_s": over(lambda p: p["chars_per_s"]),
        "latency_ms": {
            q: over(lambda p, q=q: p["latency_ms"] and p["latency_ms"][q])
            for q in ("p50", "p90", "p99")
        },
        "mean_batch": over(lambda p: p["mean_batch"]),
        "texts_per_execution": over(lambda p: p["texts_per_execution"]),
        "ok": sum(p["ok"] for p in points),
        "errors": errors,
        "bad_answers": sum(p["bad_answers"] for p in points),
        "windows": points,
    }


def load_texts(data: Path, rows: int, seed: int) -> list[str]:
    """Inputs of up to `rows` test rows (stratified by channel), shuffled by seed."""
    path = Path(data) / "test.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the server benchmark sends its test rows")
    texts = [row["input"] for row in sample_rows(path, rows, seed) if row["input"].strip()]
    random.Random(seed).shuffle(texts)
    return texts


def interleaved(names: list[str], turn: int) -> list[str]:
    """Which server goes first alternates from point to point and repeat to repeat."""
    return names if turn % 2 == 0 else names[::-1]


def ratio(numerators: list[dict], denominators: list[dict]) -> dict | None:
    """Per-repeat throughput ratio (the two ran in the same repeat, interleaved), as a spread."""
    values = [
        a["requests_per_s"] / b["requests_per_s"]
        for a, b in zip(numerators, denominators, strict=True)
        if b["requests_per_s"] > 0
    ]
    return spread(values) if values else None


# ---------------------------------------------------------------------------------- the suite


async def closed_loop_point(sender, texts, concurrency, settings, probe) -> dict:
    async with ClosedLoop(sender, texts, concurrency) as load:
        full_round = await load.warm(settings.warmup_s, settings.max_warmup_s)
        window = await load.window(
            settings.window_s,
            probe,
            answers=max(settings.min_answers, concurrency),
            max_seconds=settings.max_window_s,
        )
    return point(window, concurrency=concurrency, steady=full_round)


async def open_loop_point(sender, texts, rate, seed, settings, probe) -> dict:
    async with OpenLoop(sender, texts, rate, seed) as load:
        await load.warm(settings.warmup_s)
        window = await load.window(
            settings.window_s,
            probe,
            answers=settings.min_answers,
            max_seconds=settings.max_window_s,
        )
    return point(window, rate=rate)


def probe_of(server: ServerProcess):
    async def probe() -> dict:
        return await asyncio.to_thread(scrape, server.metrics_url)

    return probe


async def _sweeps(servers: dict[str, ServerProcess], texts, settings, ctx) -> dict:
    names = list(servers)
    channels = {n: grpc.aio.insecure_channel(s.target) for n, s in servers.items()}
    try:
        stubs = {n: kserve_pb2_grpc.GRPCInferenceServiceStub(c) for n, c in channels.items()}
        await wait_ready(list(servers.values()))
        senders = {n: kserve_sender(stubs[n]) for n in names}
        probes = {n: probe_of(servers[n]) for n in names}

        closed = {n: {c: [] for c in settings.concurrencies} for n in names}
        for repeat in range(settings.repeats):
            for i, concurrency in enumerate(settings.concurrencies):
                for name in interleaved(names, repeat + i):
                    ctx.log(f"server: {name}, concurrency {concurrency}, repeat {repeat + 1}")
                    closed[name][concurrency].append(
                        await closed_loop_point(
                            senders[name], texts, concurrency, settings, probes[name]
                        )
                    )
        peak = max(
            statistics.median(p["requests_per_s"] for p in points)
            for by_concurrency in closed.values()
            for points in by_concurrency.values()
        )
        if peak <= 0:
            raise RuntimeError("no request was answered in the closed-loop sweep; see the errors")
        rates = [fraction * peak for fraction in settings.rate_fractions]
        opened = {n: {r: [] for r in rates} for n in names}
        for repeat in range(settings.repeats):
            for j, rate in enumerate(rates):
                seed = ctx.seed + 1000 * repeat + j  # the same arrivals for both servers
                for name in interleaved(names, repeat + j):
                    ctx.log(f"server: {name}, open loop {rate:.2f} requests/s, repeat {repeat + 1}")
                    opened[name][rate].append(
                        await open_loop_point(
                            senders[name], texts, rate, seed, settings, probes[name]
                        )
                    )
    finally:
        await asyncio.gather(*(c.close() for c in channels.values()))
    return {"closed": closed, "opened": opened, "peak": peak, "rates": rates}


def run(ctx: BenchContext, settings: Settings | None = None) -> dict:
    settings = settings or (QUICK if ctx.quick else FULL)
    env = environment()
    texts = load_texts(ctx.data, settings.rows, ctx.seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kmcorrect-bench-server-") as log_dir:
        servers = {}
        try:
            for name, max_batch_size in SERVERS.items():
                servers[name] = start_ours(
                    name,
                    ctx.artifact,
                    Path(log_dir),
                    max_batch_size=max_batch_size,
                    settings=settings,
                    threads=ctx.threads,
                    device=ctx.device,
                )
            sweeps = asyncio.run(_sweeps(servers, texts, settings, ctx))
        finally:
            shutdown = {name: server.stop() for name, server in servers.items()}
    env["load_average_after"] = os.getloadavg()

    closed = []
    for concurrency in settings.concurrencies:
        on, off = (sweeps["closed"][n][concurrency] for n in SERVERS)
        closed.append(
            {
                "concurrency": concurrency,
                "batching": aggregate(on),
                "no_batching": aggregate(off),
                "speedup": ratio(on, off),
            }
        )
    opened = []
    for fraction, rate in zip(settings.rate_fractions, sweeps["rates"], strict=True):
        on, off = (sweeps["opened"][n][rate] for n in SERVERS)
        opened.append(
            {
                "fraction_of_peak": fraction,
                "rate": rate,
                "batching": aggregate(on),
                "no_batching": aggregate(off),
            }
        )
    providers = ["CUDAExecutionProvider"] if ctx.device == "cuda" else ["CPUExecutionProvider"]
    section = {
        "suite": NAME,
        "device": device_name(providers),
        "config": {
            **dataclasses.asdict(settings),
            "artifact": str(ctx.artifact),
            "model": load_artifact(ctx.artifact).model_name,
            "threads": ctx.threads,
            "seed": ctx.seed,
            "servers": {n: {"max_batch_size": b} for n, b in SERVERS.items()},
            "max_queue_delay_us": ServeConfig.max_queue_delay_us,
            "protocol": "KServe v2 ModelInfer over grpc.aio, one text per request, loopback",
            "texts": len(texts),
            "mean_chars_per_text": statistics.mean(map(len, texts)),
        },
        "environment": env,
        "seconds": round(time.monotonic() - began, 1),
        "closed_loop": closed,
        "peak_requests_per_s": sweeps["peak"],
        "open_loop": opened,
        "shutdown": shutdown,
    }
    section["targets"] = targets(section)
    return section


def at_concurrency(section: dict, concurrency: int) -> dict:
    """The closed-loop point at `concurrency`, or the highest one below it."""
    points = [p for p in section["closed_loop"] if p["concurrency"] <= concurrency]
    return (points or section["closed_loop"])[-1]


def targets(section: dict) -> list[dict]:
    p = at_concurrency(section, TARGET_CONCURRENCY)
    speedup = p["speedup"]
    on, off = (p[n]["requests_per_s"]["median"] for n in SERVERS)
    measured = (
        f"{times(speedup)} at concurrency {p['concurrency']} ({on:.1f} vs {off:.1f} requests/s)"
    )
    return [
        {
            "target": f"batching ≥ {TARGET_SPEEDUP:.0f}× throughput at concurrency "
            f"{TARGET_CONCURRENCY} vs batching off",
            "measured": measured,
            "met": bool(speedup) and speedup["median"] >= TARGET_SPEEDUP,
        }
    ]


# ---------------------------------------------------------------------------------- report


def times(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:.2f}× ({s['min']:.2f}×–{s['max']:.2f}×)"


def _num(s: dict | None, fmt: str = "{:.1f}") -> str:
    if not s:
        return "–"
    if s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def target_lines(rows: list[dict]) -> list[str]:
    return [
        f"**Target: {t['target']}** — {t['measured']}: {'met' if t['met'] else 'not met'}."
        for t in rows
    ]


def _errors(a: dict) -> str:
    parts = [f"{status} {count}" for status, count in sorted(a["errors"].items())]
    if a["bad_answers"]:
        parts.append(f"bad answers {a['bad_answers']}")
    return ", ".join(parts) or "0"


def capped(a: dict) -> bool:
    return any(not w.get("steady", True) or not w["complete"] for w in a["windows"])


def capped_note(points: list[dict]) -> list[str]:
    if not any(map(capped, points)):
        return []
    return [
        "",
        "⁽*⁾ a cap was reached: the warm-up ended before every worker had had an answer (the "
        "queue not yet at its steady length: latencies read low), or the window closed before "
        "it held the requests it wanted (few requests: p99 is about their maximum).",
    ]


def point_row(label: str, a: dict) -> str:
    """One server at one point: the cells the closed-loop, open-loop and peer tables share;
    ⁽*⁾ marks a point where a warm-up or window cap was reached."""
    lat = a["latency_ms"]
    if capped(a):
        label += " ⁽*⁾"
    cells = [
        label,
        str(a["ok"]),
        _num(a["requests_per_s"]),
        _num(a["chars_per_s"], "{:.0f}"),
        _num(lat["p50"], "{:.0f}"),
        _num(lat["p90"], "{:.0f}"),
        _num(lat["p99"], "{:.0f}"),
        _num(a["mean_batch"]),
        _errors(a),
    ]
    return "| " + " | ".join(cells) + " |"


POINT_HEADER = "| n | requests/s | chars/s | p50 ms | p90 ms | p99 ms | mean batch | errors |"


def decoding_label(config: dict) -> str:
    """How the served model decodes: the editor has one pass, whatever --decoding says."""
    if config.get("model") == "editor":
        return "the editor's one pass"
    return f"{config['decoding']} decoding"


def markdown(section: dict) -> str:
    c = section["config"]
    env = section["environment"]
    lines = [
        "# Server under load: dynamic batching on vs off",
        "",
        f"Device: **{section['device']}**. Artifact `{c['artifact']}`, graph `{c['variant']}`, "
        f"{decoding_label(c)}, {c['threads']} onnxruntime threads per server; both servers "
        f"(`kmcorrect serve`, max batch 32 and 1, queue delay {c['max_queue_delay_us']} µs) "
        f"up at once, measured in interleaved windows after at least {c['warmup_s']:g} s of "
        f"load; {c['repeats']} repeat(s). Load: {c['protocol']}; "
        f"{c['texts']} test rows ({c['mean_chars_per_text']:.0f} chars on average). The load "
        f"generator shares the machine with the servers ({env['cpu_count']} cores); load "
        f"average {_load(env)}; {section['seconds']:.0f} s in all.",
        "",
    ]
    lines += target_lines(section["targets"])
    lines += [
        "",
        "## Closed loop: concurrency sweep",
        "",
        f"Medians (min–max over repeats); n: requests answered in the windows (each window "
        f"{c['window_s']:g} s and at least max({c['min_answers']}, concurrency) requests, at "
        f"most {c['max_window_s']:g} s). Mean batch: model pieces per engine batch, from the "
        "server's `khmer_correct_batch_size` histogram over the window. Errors by gRPC "
        "status.",
        "",
        "| concurrency | server " + POINT_HEADER + " batching speedup |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for p in section["closed_loop"]:
        for name in SERVERS:
            speedup = times(p["speedup"]) if name == "batching" else ""
            label = f"{p['concurrency']} | {LABELS[name]}"
            lines.append(point_row(label, p[name]) + f" {speedup} |")
    lines += capped_note([p[n] for p in section["closed_loop"] for n in SERVERS])
    lines += [
        "",
        "## Open loop: Poisson arrivals",
        "",
        f"The same arrival times and texts for both servers, at fractions of the highest "
        f"closed-loop throughput ({section['peak_requests_per_s']:.1f} requests/s). Latency runs "
        "from when a request was due. Backlog: requests still unanswered when the window "
        "closed (an overloaded server's queue grows without bound).",
        "",
        "| offered requests/s | server " + POINT_HEADER + " backlog |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for p in section["open_loop"]:
        for name in SERVERS:
            label = f"{p['rate']:.1f} ({p['fraction_of_peak']:.0%}) | {LABELS[name]}"
            backlog = max(w["outstanding"] for w in p[name]["windows"])
            lines.append(point_row(label, p[name]) + f" {backlog} |")
    lines += capped_note([p[n] for p in section["open_loop"] for n in SERVERS])
    lines += ["", "## Shutdown", "", "| server | exit code | seconds | processes left behind |"]
    lines.append("|---|--:|--:|--:|")
    for name, s in section["shutdown"].items():
        lines.append(f"| {name} | {s['exit_code']} | {s['stop_seconds']} | {s['left_behind']} |")
    return "\n".join(lines) + "\n"


def _load(env: dict) -> str:
    before = env["load_average_before"][0]
    after = env.get("load_average_after", [float("nan")])[0]
    return f"{before:.2f} before, {after:.2f} after"


def plots(section: dict, out_dir: str | Path) -> list[str]:
    """server.png: closed-loop throughput and p99 by concurrency; open-loop p99 by rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    closed, opened = section["closed_loop"], section["open_loop"]
    for name in SERVERS:
        x = [p["concurrency"] for p in closed]
        plot_spread(axes[0], x, [p[name]["requests_per_s"] for p in closed], LABELS[name])
        plot_spread(axes[1], x, [p[name]["latency_ms"]["p99"] for p in closed], LABELS[name])
        rates = [p["rate"] for p in opened]
        plot_spread(axes[2], rates, [p[name]["latency_ms"]["p99"] for p in opened], LABELS[name])
    for ax in axes[:2]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(c) for c in x])
        ax.set_xlabel("concurrency (closed loop)")
    axes[0].set_ylabel("requests / s")
    axes[1].set_ylabel("p99 latency, ms")
    axes[1].set_yscale("log")
    axes[2].set_xlabel("offered requests / s (open loop, Poisson)")
    axes[2].set_ylabel("p99 latency, ms")
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"kmcorrect serve, batching on vs off — {section['device']}")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{NAME}.png", dpi=110)
    plt.close(fig)
    return [f"{NAME}.png"]


def plot_spread(ax, x: list, stats: list[dict | None], label: str) -> None:
    """Medians joined by a line, min-max as error bars; points with no value left out."""
    kept = [(xi, s) for xi, s in zip(x, stats, strict=True) if s]
    if not kept:
        return
    xs = [xi for xi, _ in kept]
    median = [s["median"] for _, s in kept]
    low = [s["median"] - s["min"] for _, s in kept]
    high = [s["max"] - s["median"] for _, s in kept]
    ax.errorbar(xs, median, yerr=[low, high], marker="o", capsize=3, label=label)


# ---------------------------------------------------------------------------------- standalone


def standalone(suite, argv: list[str] | None = None) -> int:
    """Run one suite outside `kmcorrect bench`: <name>.json, .md and its plots in --out."""
    parser = argparse.ArgumentParser(description=suite.__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="its test.jsonl is sent")
    parser.add_argument("--full", action="store_true", help="the full sweep (default: quick)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<device>")
    args = parser.parse_args(argv)
    ctx = BenchContext(
        args.artifact,
        args.data,
        quick=not args.full,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
    )
    section = suite.run(ctx)
    out = args.out or ROOT / "benchmarks" / "results" / slug(section["device"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{suite.NAME}.json").write_text(json.dumps(section, indent=1, ensure_ascii=False))
    (out / f"{suite.NAME}.md").write_text(suite.markdown(section), "utf-8")
    suite.plots(section, out)
    print(f"wrote {out}/{suite.NAME}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(standalone(sys.modules[__name__]))
