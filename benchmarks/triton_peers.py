"""Peers: our server against Triton's dynamic batcher (through PyTriton) serving the same decode
function, and the real Triton client as an independent load source against our server.

    python -m benchmarks.triton_peers --artifact artifacts/editor-default --data data/default

a. PyTriton. `kmcorrect serve` (max batch 32) and benchmarks/pytriton_serve.py (Triton's
   dynamic batcher, max batch 32, the same queue delay, in front of `Corrector.correct` on the same
   artifact, graph, decoding and threads) run at once as subprocesses; our KServe v2 load
   generator (benchmarks/server.py) drives both with the same texts in interleaved windows, at
   each concurrency. First both answer the same texts at low load and the answers are compared.
b. tritonclient. `tritonclient.grpc.aio` drives our server at one concurrency, measured as
   perf_analyzer measures (back-to-back windows until three are stable), in a process of its
   own (benchmarks/tritonclient_load.py); our generator measures the same way just before and
   just after, and the two must agree within TOLERANCE.

PyTriton runs from a virtual environment of its own (`pytriton_python`): it declares numpy < 2,
which this project's pin excludes, and its Python backend stub cannot read text tensors under
numpy 2. See benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from benchmarks import server
from benchmarks.common import BenchContext, device_name, environment
from benchmarks.loadgen import measure_until_stable
from benchmarks.server import ROOT, decoding_label, start_ours
from proto import kserve_pb2_grpc
from runtime.artifact import load_artifact
from runtime.config import ServeConfig
from runtime.net import free_port
from runtime.serve_process import ServerProcess

NAME = "peers"
CONTENDERS = ("ours", "pytriton")
LABELS = {"ours": "kmcorrect serve", "pytriton": "PyTriton (Triton dynamic batcher)"}
MAX_BATCH = 32
TOLERANCE = 0.15  # tritonclient vs our generator: throughput and p50 within ±15%
P99_BOUND_FACTOR = 10  # the p99 bound: this many times the slower server's p50 at the lowest load
VENV = ROOT / ".venvs" / "pytriton"
# nvidia-pytriton 0.7.0 declares numpy < 2, so it cannot share an environment with this
# project's numpy pin (pip finds no solution), and under numpy 2 anyway its Python backend stub
# (built against numpy 1) misreads every BYTES tensor: each byte comes out as the tensor's
# first byte, so the first length prefix is garbage and the model instance dies. Hence its own
# environment, with the newest numpy it accepts.
VENV_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4")
BINARY_PROBLEM = "PyTriton's bundled tritonserver cannot start"


@dataclass(frozen=True)
class Settings:
    concurrencies: tuple[int, ...]
    window_s: float  # a window lasts this long at least ...
    min_answers: int  # ... and until this many requests completed (closed loop: or C) ...
    max_window_s: float  # ... but no longer than this
    warmup_s: float  # load before every window, at least, and a full round (closed loop)
    max_warmup_s: float
    repeats: int
    rows: int
    identity_rows: int  # texts both servers answer at low load, compared one by one
    cross_check_concurrency: int
    cross_check_window_s: float  # perf_analyzer: --measurement-interval (5000 ms)
    cross_check_max_windows: int  # perf_analyzer: --max-trials (10)
    decoding: str = "greedy"  # as the server suite, and for the same reason
    variant: str = "opt"


QUICK = Settings(
    concurrencies=(1, 8, 32),
    window_s=4.0,
    min_answers=20,
    max_window_s=30.0,
    warmup_s=2.0,
    max_warmup_s=20.0,
    repeats=1,
    rows=256,
    identity_rows=32,
    cross_check_concurrency=8,
    cross_check_window_s=3.0,
    cross_check_max_windows=6,
)
FULL = Settings(
    concurrencies=(1, 2, 4, 8, 16, 32, 64, 128),
    window_s=15.0,
    min_answers=50,
    max_window_s=120.0,
    warmup_s=3.0,
    max_warmup_s=60.0,
    repeats=3,
    rows=1000,
    identity_rows=200,
    cross_check_concurrency=16,
    cross_check_window_s=5.0,
    cross_check_max_windows=10,
)


# ---------------------------------------------------------------------------------- PyTriton


def triton_env() -> dict[str, str]:
    """This environment with the Python library directory on LD_LIBRARY_PATH: without it the
    backend stub loads the libpython bundled with PyTriton, whose patch release differs from
    this interpreter's standard library (multiprocessing then fails inside the stub)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [libdir, *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":"))]
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(paths)}


def pytriton_python(log) -> Path:
    """The interpreter the PyTriton peer runs on: a virtual environment under .venvs/ that sees
    this environment's packages (--system-site-packages, for onnxruntime and the rest) with
    VENV_REQUIREMENTS installed over them. Made on first use, under a lock (several runs may
    start at once), and reused while its requirements stay the same."""
    python = VENV / "bin" / "python"
    ready = VENV / "ready"
    wanted = "\n".join(VENV_REQUIREMENTS) + "\n"
    if ready.exists() and ready.read_text() == wanted:
        return python
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "pytriton.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ready.exists() and ready.read_text() == wanted):
            log(f"peers: making {VENV} ({', '.join(VENV_REQUIREMENTS)})")
            shutil.rmtree(VENV, ignore_errors=True)
            for argv in (
                [sys.executable, "-m", "venv", "--system-site-packages", str(VENV)],
                [str(python), "-m", "pip", "install", "--quiet", *VENV_REQUIREMENTS],
            ):
                done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"cannot make PyTriton's environment: {' '.join(argv)} exited "
                        f"{done.returncode}: {done.stderr.strip()[-1000:]}"
                    )
            ready.write_text(wanted)
    return python


def pytriton_problem(python: Path) -> str | None:
    """Why the PyTriton peer cannot run on this machine (its bundled tritonserver does not
    start), or None."""
    where = "import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)"
    found = subprocess.run([python, "-c", where], capture_output=True, text=True, timeout=300)
    if found.returncode != 0:
        raise RuntimeError(f"pytriton does not import in {VENV}: {found.stderr.strip()[-1000:]}")
    binary = Path(found.stdout.strip()) / "tritonserver" / "bin" / "tritonserver"
    try:
        done = subprocess.run(
            [binary, "--help"], env=triton_env(), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{BINARY_PROBLEM} ({binary}): {exc}"
    if "Usage: tritonserver" not in done.stdout + done.stderr:
        tail = (done.stderr or done.stdout).strip()[-300:]
        return f"{BINARY_PROBLEM} ({binary}, exit {done.returncode}): {tail}"
    return None


def start_pytriton(
    python: Path, artifact: Path, work: Path, settings: Settings, threads: int, device: str
) -> ServerProcess:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    flags = {
        "artifact": artifact,
        "variant": settings.variant,
        "device": device,
        "threads": threads,
        "decoding": settings.decoding,
        "max-batch-size": MAX_BATCH,
        "max-queue-delay-us": ServeConfig.max_queue_delay_us,
        "grpc-port": grpc_port,
        "http-port": http_port,
        "metrics-port": metrics_port,
        "workspace": work / "pytriton-workspace",
    }
    argv = [str(python), "-m", "benchmarks.pytriton_serve"]
    for flag, value in flags.items():
        argv += [f"--{flag}", str(value)]
    return ServerProcess(
        "pytriton",
        argv,
        port=grpc_port,
        metrics_port=metrics_port,
        log_dir=work,
        cwd=ROOT,
        env=triton_env(),
    )


# ---------------------------------------------------------------------------------- tritonclient


def tritonclient_measure(target: str, texts: list[str], settings: Settings) -> dict:
    """benchmarks/tritonclient_load.py in its own interpreter; its JSON result."""
    flags = {
        "target": target,
        "concurrency": settings.cross_check_concurrency,
        "window-s": settings.cross_check_window_s,
        "min-answers": settings.min_answers,
        "max-window-s": settings.max_window_s,
        "max-windows": settings.cross_check_max_windows,
        "warmup-s": settings.warmup_s,
        "max-warmup-s": settings.max_warmup_s,
    }
    argv = [sys.executable, "-m", "benchmarks.tritonclient_load"]
    for flag, value in flags.items():
        argv += [f"--{flag}", str(value)]
    limit = settings.max_warmup_s + settings.cross_check_max_windows * settings.max_window_s
    done = subprocess.run(
        argv, input=json.dumps(texts), capture_output=True, text=True, cwd=ROOT, timeout=limit + 120
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"tritonclient load exited {done.returncode}:\n{done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------- measuring


async def answers(send, texts: list[str], concurrency: int = 4) -> list[tuple[str, list[str]]]:
    """Every text's (status, answers), a few at a time: low load."""
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str):
        async with gate:
            return await send(text)

    return await asyncio.gather(*(one(t) for t in texts))


def identity(ours: list, theirs: list) -> dict:
    """Answer by answer: both must be OK with one text, and the same text."""
    differing = [  # by number and status, not quoted: the texts are the user's corpus
        {"text": i, "ours": a[0], "pytriton": b[0]}
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if a[0] != "OK" or b[0] != "OK" or len(a[1]) != 1 or a[1] != b[1]
    ]
    return {"texts": len(ours), "identical": len(ours) - len(differing), "differing": differing}


async def _measure(processes: dict[str, ServerProcess], texts, settings: Settings, ctx) -> dict:
    names = list(processes)
    channels = {n: grpc.aio.insecure_channel(p.target) for n, p in processes.items()}
    try:
        stubs = {n: kserve_pb2_grpc.GRPCInferenceServiceStub(c) for n, c in channels.items()}
        await server.wait_ready(list(processes.values()))
        senders = {n: server.kserve_sender(stubs[n]) for n in names}
        probes = {n: server.probe_of(processes[n]) for n in names}
        results: dict = {}

        if "pytriton" in processes:
            ctx.log("peers: identity, ours vs PyTriton")
            sample = texts[: settings.identity_rows]
            ours, theirs = [await answers(senders[n], sample) for n in CONTENDERS]
            results["identity"] = identity(ours, theirs)
            sweep = {n: {c: [] for c in settings.concurrencies} for n in CONTENDERS}
            for repeat in range(settings.repeats):
                for i, concurrency in enumerate(settings.concurrencies):
                    for name in server.interleaved(list(CONTENDERS), repeat + i):
                        ctx.log(f"peers: {name}, concurrency {concurrency}, repeat {repeat + 1}")
                        sweep[name][concurrency].append(
                            await server.closed_loop_point(
                                senders[name], texts, concurrency, settings, probes[name]
                            )
                        )
            results["sweep"] = sweep

        concurrency = settings.cross_check_concurrency
        measure = {
            "window_s": settings.cross_check_window_s,
            "min_answers": settings.min_answers,
            "max_window_s": settings.max_window_s,
            "max_windows": settings.cross_check_max_windows,
            "warmup_s": settings.warmup_s,
            "max_warmup_s": settings.max_warmup_s,
        }
        ctx.log(f"peers: cross-check at concurrency {concurrency}: our generator")
        before = await measure_until_stable(senders["ours"], texts, concurrency, **measure)
        ctx.log("peers: cross-check: tritonclient.grpc.aio")
        triton = await asyncio.to_thread(
            tritonclient_measure, processes["ours"].target, texts, settings
        )
        ctx.log("peers: cross-check: our generator again")
        after = await measure_until_stable(senders["ours"], texts, concurrency, **measure)
        results["cross_check"] = cross_check(before, triton, after)
    finally:
        await asyncio.gather(*(c.close() for c in channels.values()))
    return results


def cross_check(before: dict, triton: dict, after: dict) -> dict:
    """tritonclient against the mean of our generator's runs just before and just after it
    (which cancels a steady drift in the machine's speed)."""
    ours_rate = statistics.mean([before["requests_per_s"], after["requests_per_s"]])
    ours_p50 = statistics.mean([before["latency_ms"]["p50"], after["latency_ms"]["p50"]])
    rate_ratio = triton["requests_per_s"] / ours_rate if ours_rate else None
    p50_ratio = triton["latency_ms"]["p50"] / ours_p50 if triton["latency_ms"] else None
    agree = all(r is not None and abs(r - 1) <= TOLERANCE for r in (rate_ratio, p50_ratio))
    return {
        "ours_before": before,
        "tritonclient": triton,
        "ours_after": after,
        "throughput_ratio": rate_ratio,
        "p50_ratio": p50_ratio,
        "tolerance": TOLERANCE,
        "agree": agree,
    }


def under_bound(points: list[dict], name: str, bound: float) -> dict | None:
    """The concurrency with the best median throughput among those whose median p99 is within
    `bound` (perf_analyzer's --latency-threshold rule), or None."""
    within = [
        p
        for p in points
        if p[name]["latency_ms"]["p99"] and p[name]["latency_ms"]["p99"]["median"] <= bound
    ]
    if not within:
        return None
    best = max(within, key=lambda p: p[name]["requests_per_s"]["median"])
    return {
        "concurrency": best["concurrency"],
        "requests_per_s": best[name]["requests_per_s"]["median"],
        "p99_ms": best[name]["latency_ms"]["p99"]["median"],
    }


def compare(sweep: dict, concurrencies: tuple[int, ...]) -> dict:
    points = []
    for concurrency in concurrencies:
        ours, theirs = (sweep[n][concurrency] for n in CONTENDERS)
        points.append(
            {
                "concurrency": concurrency,
                "ours": server.aggregate(ours),
                "pytriton": server.aggregate(theirs),
                "ours_vs_pytriton": server.ratio(ours, theirs),
            }
        )
    lowest = points[0]
    p50s = [lowest[n]["latency_ms"]["p50"] for n in CONTENDERS]
    bound = P99_BOUND_FACTOR * max(s["median"] for s in p50s if s) if all(p50s) else None
    best = {n: bound and under_bound(points, n, bound) for n in CONTENDERS}
    ratio = None
    if best["ours"] and best["pytriton"]:
        ratio = best["ours"]["requests_per_s"] / best["pytriton"]["requests_per_s"]
    return {
        "points": points,
        "p99_bound_ms": bound,
        "best_under_bound": best,
        "ours_vs_pytriton_under_bound": ratio,
    }


# ---------------------------------------------------------------------------------- the suite


def run(ctx: BenchContext, settings: Settings | None = None) -> dict:
    settings = settings or (QUICK if ctx.quick else FULL)
    env = environment()
    texts = server.load_texts(ctx.data, settings.rows, ctx.seed)
    began = time.monotonic()
    python: Path | None = None
    try:
        python = pytriton_python(ctx.log)
        problem = pytriton_problem(python)
    except RuntimeError as exc:  # no environment for it (say, no package registry)
        problem = str(exc)
    with tempfile.TemporaryDirectory(prefix="kmcorrect-bench-peers-") as work:
        processes: dict[str, ServerProcess] = {}
        try:
            processes["ours"] = start_ours(
                "ours",
                ctx.artifact,
                Path(work),
                max_batch_size=MAX_BATCH,
                settings=settings,
                threads=ctx.threads,
                device=ctx.device,
            )
            if problem is None:
                processes["pytriton"] = start_pytriton(
                    python, ctx.artifact, Path(work), settings, ctx.threads, ctx.device
                )
            results = asyncio.run(_measure(processes, texts, settings, ctx))
        finally:
            shutdown = {name: p.stop() for name, p in processes.items()}
    env["load_average_after"] = os.getloadavg()

    if problem:
        pytriton = {"not_run": problem}
    else:
        requirements = ", ".join(VENV_REQUIREMENTS)
        pytriton = {
            "environment": f"{VENV.relative_to(ROOT)} (--system-site-packages; {requirements})",
            "identity": results["identity"],
            **compare(results["sweep"], settings.concurrencies),
        }
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
            "max_batch_size": MAX_BATCH,
            "max_queue_delay_us": ServeConfig.max_queue_delay_us,
            "protocol": "KServe v2 ModelInfer over gRPC, one text per request, loopback",
            "texts": len(texts),
            "mean_chars_per_text": statistics.mean(map(len, texts)),
        },
        "environment": env,
        "seconds": round(time.monotonic() - began, 1),
        "pytriton": pytriton,
        "cross_check": results["cross_check"],
        "shutdown": shutdown,
    }
    section["targets"] = targets(section)
    return section


def targets(section: dict) -> list[dict]:
    rows = []
    pt = section["pytriton"]
    target = "our server ≥ PyTriton's throughput at equal p99"
    if "not_run" in pt:
        rows.append({"target": target, "measured": f"not run: {pt['not_run']}", "met": False})
    else:
        ours, theirs = (pt["best_under_bound"][n] for n in CONTENDERS)
        bound = pt["p99_bound_ms"]
        if ours and theirs:
            measured = (
                f"best requests/s with p99 ≤ {bound:.0f} ms: ours {ours['requests_per_s']:.1f} "
                f"(concurrency {ours['concurrency']}) vs PyTriton {theirs['requests_per_s']:.1f} "
                f"(concurrency {theirs['concurrency']}), "
                f"{pt['ours_vs_pytriton_under_bound']:.2f}×"
            )
            met = ours["requests_per_s"] >= theirs["requests_per_s"]
        else:
            measured = f"no concurrency kept p99 ≤ {bound and round(bound)} ms for " + " and ".join(
                LABELS[n] for n in CONTENDERS if not pt["best_under_bound"][n]
            )
            met = bool(ours) and not theirs
        rows.append({"target": target, "measured": measured, "met": met})
        same = pt["identity"]
        rows.append(
            {
                "target": "PyTriton's answers identical to ours (same decode function)",
                "measured": f"{same['identical']}/{same['texts']} texts",
                "met": same["identical"] == same["texts"],
            }
        )
    cc = section["cross_check"]
    stable = "stable" if cc["tritonclient"]["stable"] else "not stable"
    rows.append(
        {
            "target": f"tritonclient and our generator agree within ±{TOLERANCE:.0%} "
            "(throughput and p50)",
            "measured": f"tritonclient ÷ ours: throughput {_ratio(cc['throughput_ratio'])}, "
            f"p50 {_ratio(cc['p50_ratio'])} at concurrency "
            f"{cc['tritonclient']['concurrency']} ({stable} after "
            f"{cc['tritonclient']['windows']} windows)",
            "met": cc["agree"],
        }
    )
    return rows


# ---------------------------------------------------------------------------------- report


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _cross_row(label: str, m: dict) -> str:
    lat = m["latency_ms"] or {}
    cells = [
        label,
        str(m["windows"]),
        "yes" if m["stable"] else "no",
        ", ".join(f"{r:.1f}" for r in m["window_requests_per_s"]),
        f"{m['requests_per_s']:.1f}",
        *(f"{lat[q]:.0f}" if lat else "–" for q in ("p50", "p90", "p99")),
        ", ".join(f"{k} {v}" for k, v in sorted(m["errors"].items())) or "0",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(section: dict) -> str:
    c = section["config"]
    lines = [
        "# Peers: PyTriton (Triton's dynamic batcher) and the real Triton client",
        "",
        f"Device: **{section['device']}**. Artifact `{c['artifact']}`, graph `{c['variant']}`, "
        f"{decoding_label(c)}, {c['threads']} onnxruntime threads per server, max batch "
        f"{c['max_batch_size']}, queue delay {c['max_queue_delay_us']} µs on both. Load: "
        f"{c['protocol']}; {c['texts']} test rows ({c['mean_chars_per_text']:.0f} chars on "
        f"average); the load generator shares the machine with the servers; "
        f"{section['seconds']:.0f} s in all.",
        "",
    ]
    lines += server.target_lines(section["targets"])
    pt = section["pytriton"]
    lines += ["", "## Our server vs PyTriton at equal concurrency", ""]
    if "not_run" in pt:
        lines.append(f"Not run: {pt['not_run']}.")
    else:
        lines += [
            f"PyTriton serves `Corrector.correct` from {pt['environment']}; the "
            "same load generator drives both servers with the same texts, in interleaved "
            f"windows ({c['window_s']:g} s and at least max({c['min_answers']}, concurrency) "
            f"requests, at most {c['max_window_s']:g} s), {c['repeats']} repeat(s). Medians "
            "(min–max). "
            "Texts per execution: Δ`nv_inference_count` / Δ`nv_inference_exec_count`, Triton's "
            "counters, which both servers keep.",
            "",
            "| concurrency | server "
            + server.POINT_HEADER.replace("mean batch", "texts/exec")
            + " ours ÷ PyTriton |",
            "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
        ]
        for p in pt["points"]:
            for name in CONTENDERS:
                row = dict(p[name], mean_batch=p[name]["texts_per_execution"])
                ratio = server.times(p["ours_vs_pytriton"]) if name == "ours" else ""
                lines.append(
                    server.point_row(f"{p['concurrency']} | {LABELS[name]}", row) + f" {ratio} |"
                )
        lines += server.capped_note([p[n] for p in pt["points"] for n in CONTENDERS])
        bound = pt["p99_bound_ms"]
        lines += [
            "",
            f"p99 bound: {bound:.0f} ms ({P99_BOUND_FACTOR} × the slower server's p50 at "
            f"concurrency {pt['points'][0]['concurrency']})."
            if bound
            else "p99 bound: –.",
            "",
        ]
        same = pt["identity"]
        lines.append(
            f"Identity: {same['identical']} of {same['texts']} texts answered identically "
            "(low load, before the sweep)."
        )
        for d in same["differing"][:5]:
            lines.append(f"- text {d['text']}: ours {d['ours']}, PyTriton {d['pytriton']}")
    cc = section["cross_check"]
    lines += [
        "",
        "## tritonclient as an independent load source",
        "",
        f"`tritonclient.grpc.aio` (its own process) against our server at concurrency "
        f"{cc['tritonclient']['concurrency']}, measured as perf_analyzer does: windows of "
        f"{cc['tritonclient']['window_s']:g} s and at least {c['min_answers']} requests (at most "
        f"{c['max_window_s']:g} s) back to back until the last three have "
        f"throughput and mean latency within 10% (max / min), at most "
        f"{c['cross_check_max_windows']} windows; the numbers are the last three windows "
        "merged. Our generator measured the same way just before and just after.",
        "",
        "| load source | windows | stable | requests/s per window | requests/s | p50 ms "
        "| p90 ms | p99 ms | errors |",
        "|---|--:|---|---|--:|--:|--:|--:|---|",
        _cross_row("our generator, before", cc["ours_before"]),
        _cross_row("tritonclient.grpc.aio", cc["tritonclient"]),
        _cross_row("our generator, after", cc["ours_after"]),
        "",
        f"tritonclient ÷ ours (mean of before and after): throughput "
        f"{_ratio(cc['throughput_ratio'])}, p50 {_ratio(cc['p50_ratio'])}; tolerance "
        f"±{cc['tolerance']:.0%}: {'agree' if cc['agree'] else 'disagree'}.",
        "",
        "## Shutdown",
        "",
        "| server | exit code | seconds | processes left behind |",
        "|---|--:|--:|--:|",
    ]
    for name, s in section["shutdown"].items():
        lines.append(f"| {name} | {s['exit_code']} | {s['stop_seconds']} | {s['left_behind']} |")
    return "\n".join(lines) + "\n"


def plots(section: dict, out_dir: str | Path) -> list[str]:
    """peers.png: throughput and p99 by concurrency, ours vs PyTriton, with the p99 bound."""
    pt = section["pytriton"]
    if "not_run" in pt:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [p["concurrency"] for p in pt["points"]]
    for name in CONTENDERS:
        rates = [p[name]["requests_per_s"] for p in pt["points"]]
        p99 = [p[name]["latency_ms"]["p99"] for p in pt["points"]]
        server.plot_spread(axes[0], x, rates, LABELS[name])
        server.plot_spread(axes[1], x, p99, LABELS[name])
    if pt["p99_bound_ms"]:
        axes[1].axhline(pt["p99_bound_ms"], color="grey", linestyle="--", label="p99 bound")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(c) for c in x])
        ax.set_xlabel("concurrency (closed loop)")
    axes[0].set_ylabel("requests / s")
    axes[1].set_ylabel("p99 latency, ms")
    axes[1].set_yscale("log")
    axes[0].legend()
    axes[1].legend()
    fig.suptitle(f"kmcorrect serve vs PyTriton, same decode function — {section['device']}")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{NAME}.png", dpi=110)
    plt.close(fig)
    return [f"{NAME}.png"]


if __name__ == "__main__":
    sys.exit(server.standalone(sys.modules[__name__]))
