"""Engines side by side: torch eager vs onnxruntime fp32 and int8 (and, on a GPU, onnxruntime
CUDA and native TensorRT), each with greedy and aggressive decoding, over batch sizes and line
lengths; the model's FLOPs per character, and the share of the machine's peak (a large float32
matrix product measured in the same run) that the best configuration reaches.

The `engines` suite of `kmcorrect bench`: `run(ctx)`, `markdown(section)`, `plots(section,
out_dir)`. Every contender decodes the same inputs: real test rows cut or joined at cluster
boundaries to each line length, then cut into model pieces by `runtime.pipeline.prepare`, as
the server does. See benchmarks/README.md for the method and what each number means.

On an editor artifact (one pass, no decoder) the suite is the editor's comparison with the
autoregressive models instead: `benchmarks.editor` (--hybrid, --char-transformer).
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import BenchContext, device_name, environment, settle, spread
from runtime.artifact import Artifact, load_artifact
from runtime.corrector import pad_ids
from runtime.decoding import Decoded, aggressive_decode, greedy_decode, output_limits
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.pipeline import prepare
from runtime.text import normalize, segment

NAME = "engines"
DECODERS = ("greedy", "aggressive")
BASELINE = "torch"
# Contenders whose arithmetic is the peak's (float32 matrix products): the target's best.
FLOAT32 = ("torch", "ort-fp32", "ort-cuda")


@dataclass(frozen=True)
class Grid:
    batch_sizes: tuple[int, ...]
    lengths: tuple[int, ...]  # characters per line
    repeats: int
    min_lines: int  # lines per cell: max(batch size, min_lines), in groups of batch size
    peak_size: int  # n of the n × n float32 matrix product that measures the peak


QUICK = Grid((1, 8, 32), (32, 64), repeats=3, min_lines=4, peak_size=2048)
FULL = Grid(
    (1, 2, 4, 8, 16, 32, 64), (32, 64, 128, 256, 512), repeats=3, min_lines=8, peak_size=4096
)
GPU_PEAK_SIZE = 8192  # a GPU needs a larger product than a CPU to reach its peak


# ---------------------------------------------------------------------------------- inputs


def make_lines(path: Path, length: int, count: int, seed: int) -> list[str]:
    """`count` lines of about `length` characters (never more, short by less than a cluster):
    the inputs of test rows in a seeded order, joined with spaces and cut between clusters."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                text = normalize(json.loads(line)["input"])
                if text:
                    texts.append(text)
    if not texts:
        raise UserError(f"{path}: no rows with input text")
    random.Random(seed).shuffle(texts)
    lines: list[str] = []
    line = ""
    while True:
        for text in texts:
            for cluster in segment(text + " "):
                if line and len(line) + len(cluster) > length:
                    lines.append(line.strip())
                    if len(lines) == count:
                        return lines
                    line = ""
                if line or cluster != " ":
                    line += cluster


@dataclass
class Group:
    """Lines submitted together: their model pieces, shortest first, in decoder batches of at
    most `batch_size` pieces (as `Corrector.correct` batches them)."""

    chars: int  # characters of the lines
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # ids, mask, output limits
    sources: list[int] = field(default_factory=list)  # each piece's length, in decode order


def make_groups(lines: list[str], batch_size: int, artifact: Artifact) -> list[Group]:
    vocab, limits = artifact.vocab, artifact.limits
    groups = []
    for start in range(0, len(lines), batch_size):
        members = lines[start : start + batch_size]
        pieces = [
            vocab.encode(piece)
            for line in members
            for piece in prepare(line, vocab, limits["max_src_len"]).model_inputs
        ]
        pieces.sort(key=len)
        group = Group(sum(map(len, members)), [], [len(p) for p in pieces])
        for i in range(0, len(pieces), batch_size):
            batch = pieces[i : i + batch_size]
            ids, mask = pad_ids(batch, vocab.pad_id)
            # Each row's output limit, as the service sets it (runtime.corrector).
            group.batches.append((ids, mask, output_limits(mask, limits["max_tgt_len"] - 1)))
        groups.append(group)
    return groups


# ---------------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    name: str
    label: str
    device: str  # cpu | cuda: whose peak its FLOP/s are compared with
    engine: object | None = None
    not_run: str | None = None  # why it did not run
    max_batch: int | None = None  # a TensorRT profile's largest batch


def _start(name: str, label: str, device: str, build) -> Contender:
    """A contender whose engine `build()` makes, or one that says why it could not be made."""
    try:
        return Contender(name, label, device, engine=build())
    except (UserError, ImportError, OSError, RuntimeError, ValueError) as exc:
        return Contender(name, label, device, not_run=f"not run: {exc}")


def make_contenders(ctx: BenchContext, artifact: Artifact) -> list[Contender]:
    """torch eager (the baseline) on ctx.device, onnxruntime fp32 and int8 on the CPU, and with
    --device cuda onnxruntime CUDA (fp32) and the artifact's native TensorRT plans. A variant
    the artifact lacks, a missing --run-dir or a missing GPU is a contender that says so."""
    torch_device = "cuda" if ctx.device == "cuda" else "cpu"

    def torch_engine():
        if ctx.model is None:
            raise UserError("no --run-dir (the run directory the artifact was exported from)")
        import torch

        from training.torch_engine import TorchEngine

        torch.set_num_threads(ctx.threads)
        return TorchEngine.from_checkpoint(ctx.model, torch_device)

    def onnx_engine(variant: str, device: str):
        return lambda: OnnxEngine(artifact, variant, providers=[device], threads=ctx.threads)

    contenders = [
        _start(BASELINE, f"torch eager ({torch_device})", torch_device, torch_engine),
        _start("ort-fp32", "onnxruntime fp32 (cpu)", "cpu", onnx_engine("fp32", "cpu")),
        _start("ort-int8", "onnxruntime int8 (cpu)", "cpu", onnx_engine("int8", "cpu")),
    ]
    cuda_label, tensorrt_label = "onnxruntime fp32 (CUDA)", "TensorRT (native plans)"
    if ctx.device != "cuda":
        why = "not run: --device cpu" if _gpu_present() else "not run: no GPU"
        return [
            *contenders,
            Contender("ort-cuda", cuda_label, "cuda", not_run=why),
            Contender("tensorrt", tensorrt_label, "cuda", not_run=why),
        ]
    from runtime.engines.tensorrt import TensorRTEngine

    tensorrt = _start("tensorrt", tensorrt_label, "cuda", lambda: TensorRTEngine(artifact))
    tensorrt.max_batch = artifact.limits["max_batch"]  # its plans' profile
    return [
        *contenders,
        _start("ort-cuda", cuda_label, "cuda", onnx_engine("fp32", "cuda")),
        tensorrt,
    ]


def _gpu_present() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# ---------------------------------------------------------------------------------- timing


def decode_group(engine, decoder: str, group: Group, max_draft: int) -> tuple[float, list]:
    """Seconds to decode every batch of the group, and the outputs (in the group's order)."""
    outputs: list[Decoded] = []
    started = time.perf_counter()
    for ids, mask, limits in group.batches:
        if decoder == "greedy":
            outputs += greedy_decode(engine, ids, mask, limits)
        else:
            outputs += aggressive_decode(engine, ids, mask, limits, max_draft=max_draft)
    return time.perf_counter() - started, outputs


def run_cell(runners, groups: list[Group], repeats: int, max_draft: int) -> dict:
    """Every runner (contender, decoder) on every group, side by side: one round per group,
    the runners' order reversed from one round to the next, after an untimed warm-up; the whole
    set `repeats` times. Returns seconds[runner][repeat][group], the first repeat's outputs and
    the order of every round."""
    warm = Group(0, [(ids, mask, 4) for ids, mask, _ in groups[0].batches[:1]])
    for contender, decoder in runners:
        decode_group(contender.engine, decoder, warm, max_draft)
    keys = [f"{c.name}/{d}" for c, d in runners]
    seconds = {key: [[0.0] * len(groups) for _ in range(repeats)] for key in keys}
    outputs: dict[str, list[Decoded]] = {key: [] for key in keys}
    orders = []
    for repeat in range(repeats):
        for g, group in enumerate(groups):
            order = list(zip(keys, runners, strict=True))
            if len(orders) % 2:
                order.reverse()
            orders.append([key for key, _ in order])
            for key, (contender, decoder) in order:
                settle()
                took, out = decode_group(contender.engine, decoder, group, max_draft)
                seconds[key][repeat][g] = took
                if repeat == 0:
                    outputs[key] += out
    return {"seconds": seconds, "outputs": outputs, "orders": orders}


# ---------------------------------------------------------------------------------- FLOPs


def encoder_flops(config: dict, src_len: int) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one encoder pass over one row of `src_len` characters:
    `matmul` (every MatMul of the graph) and `conv` (the hybrid mapper's depthwise
    convolutions). Norms, softmax and activations are left out (a few per element)."""
    d, f, s = config["d_model"], config["ffn_dim"], src_len
    layer = 8 * s * d * d + 4 * s * s * d + 4 * s * d * f  # q,k,v,o; scores and values; FFN
    matmul = config["n_enc_layers"] * layer + config["n_dec_layers"] * 4 * s * d * d  # cross k,v
    conv = 0
    if "mapper_layers" in config:  # hybrid: the AtomicMapper's blocks run first
        matmul += config["mapper_layers"] * 4 * s * d * config["mapper_ffn_dim"]
        conv = config["mapper_layers"] * 2 * s * d * config["mapper_kernel"]
    return {"matmul": matmul, "conv": conv}


def decoder_flops(config: dict, src_len: int, past_len: int, n: int) -> int:
    """MatMul FLOPs of one decoder call on one row: `n` new tokens after `past_len` cached
    ones, attending over a source of `src_len`."""
    d, f = config["d_model"], config["ffn_dim"]
    self_attn = 8 * n * d * d + 4 * n * (past_len + n) * d  # q,k,v,o; scores and values
    cross_attn = 4 * n * d * d + 4 * n * src_len * d  # q,o (k,v come from the encoder)
    layer = self_attn + cross_attn + 4 * n * d * f
    return config["n_dec_layers"] * layer + 2 * n * d * config["vocab_size"]  # + output head


def greedy_flops(config: dict, src_len: int, steps: int) -> int:
    """FLOPs greedy decoding needs for one piece: its encoder pass and `steps` single-token
    decoder calls (the output characters, plus the eos step when it ended before its limit)."""
    encoder = sum(encoder_flops(config, src_len).values())
    return encoder + sum(decoder_flops(config, src_len, t, 1) for t in range(steps))


def flops_per_char(config: dict, length: int) -> dict:
    """For a piece of `length` characters corrected into as many: encoder FLOPs per source
    character, decoder FLOPs per output character (length + 1 steps: the eos step included),
    and the two together."""
    encoder = sum(encoder_flops(config, length).values()) / length
    decoder = sum(decoder_flops(config, length, t, 1) for t in range(length + 1)) / length
    return {"encoder": encoder, "decoder": decoder, "total": encoder + decoder}


def graph_matmul_flops(path: Path, feeds: dict[str, np.ndarray]) -> int:
    """FLOPs of every MatMul and Gemm node of an ONNX graph, for the shapes `feeds` give: the
    graph is run with each operand exposed as an output, so every shape is the real one."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    constant = {t.name: tuple(t.dims) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    exposed = sorted({name for n in nodes for name in n.input[:2] if name not in constant})
    outputs = {o.name for o in model.graph.output}
    for name in exposed:
        if name not in outputs:
            info = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            model.graph.output.append(info)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shapes = dict(constant)
    shapes.update(zip(exposed, (v.shape for v in session.run(exposed, feeds)), strict=True))
    total = 0
    for node in nodes:
        a, b = shapes[node.input[0]], shapes[node.input[1]]
        if node.op_type == "Gemm":
            attrs = {x.name: x.i for x in node.attribute}
            m, k = a[::-1] if attrs.get("transA") else a
            cols = b[0] if attrs.get("transB") else b[1]
            total += 2 * m * k * cols
        else:
            a, b = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
            batch = math.prod(np.broadcast_shapes(a[:-2], b[:-2]))
            total += 2 * batch * a[-2] * a[-1] * b[-1]
    return total


def check_flops(artifact: Artifact, batch=2, src_len=37, past_len=11, n=5) -> dict:
    """The formula against a count of the fp32 graphs' MatMuls at one known shape."""
    config = artifact.model_config
    rng = np.random.default_rng(0)
    src = rng.integers(4, config["vocab_size"], (batch, src_len))
    src_mask = np.ones((batch, src_len), dtype=bool)
    engine = OnnxEngine(artifact, "fp32", threads=1)
    cross = engine.encode(src, src_mask)
    heads, head_dim = cross[0][0].shape[1], cross[0][0].shape[3]
    past = [
        (rng.standard_normal((batch, heads, past_len, head_dim), dtype=np.float32),) * 2
        for _ in cross
    ]
    decoder_names = artifact.graphs["decoder"]["inputs"]
    values = [
        rng.integers(4, config["vocab_size"], (batch, n)),
        np.broadcast_to(past_len + np.arange(n), (batch, n)).copy(),
        src_mask,
        np.ones((batch, past_len + n), dtype=bool),
        *[a for pair in cross for a in pair],
        *[a for pair in past for a in pair],
    ]
    counted = {
        "encoder": graph_matmul_flops(
            artifact.graph_path("encoder"), {"src_ids": src, "src_mask": src_mask}
        ),
        "decoder": graph_matmul_flops(
            artifact.graph_path("decoder"), dict(zip(decoder_names, values, strict=True))
        ),
    }
    formula = {
        "encoder": batch * encoder_flops(config, src_len)["matmul"],
        "decoder": batch * decoder_flops(config, src_len, past_len, n),
    }
    return {
        "shape": {"batch": batch, "src_len": src_len, "past_len": past_len, "n": n},
        "graph": counted,
        "formula": formula,
        "agree": counted == formula,
    }


# ---------------------------------------------------------------------------------- peak


def measure_peak(threads: int, size: int, repeats: int, cuda: bool) -> dict:
    """The best float32 FLOP/s of an n × n matrix product: onnxruntime's MatMul on the CPU with
    the contenders' threads; numpy's (its BLAS threads: every core) counts only when the
    contenders use every core too; with cuda, torch.matmul on the GPU (TF32 off)."""
    import onnx
    import onnxruntime as ort

    a, b = (np.random.default_rng(0).standard_normal((size, size), np.float32) for _ in "ab")

    def best(product, size: int) -> dict:
        flops = 2 * size**3
        product()  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        return {"flops_per_s": flops / min(times), "median_flops_per_s": flops / np.median(times)}

    inputs = [
        onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [size] * 2) for x in "ab"
    ]
    output = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [size] * 2)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["y"])], "peak", inputs, [output]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    measured = {
        "size": size,
        "onnxruntime": best(lambda: session.run(None, {"a": a, "b": b}), size),
        "numpy": best(lambda: a @ b, size),
    }
    candidates = [measured["onnxruntime"]["flops_per_s"]]
    if threads >= (os.cpu_count() or 1):
        candidates.append(measured["numpy"]["flops_per_s"])
    peaks = {"cpu": max(candidates)}
    if cuda:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        ga, gb = (torch.randn(GPU_PEAK_SIZE, GPU_PEAK_SIZE, device="cuda") for _ in "ab")

        def on_gpu():
            torch.matmul(ga, gb)
            torch.cuda.synchronize()

        measured["torch_cuda"] = {"size": GPU_PEAK_SIZE, **best(on_gpu, GPU_PEAK_SIZE)}
        peaks["cuda"] = measured["torch_cuda"]["flops_per_s"]
    return {**measured, "peak": peaks}


# ---------------------------------------------------------------------------------- the suite


def run(
    ctx: BenchContext,
    *,
    batch_sizes: tuple[int, ...] | None = None,
    lengths: tuple[int, ...] | None = None,
    repeats: int | None = None,
    min_lines: int | None = None,
    peak_size: int | None = None,
) -> dict:
    """The suite's section; the keywords override the quick/full grid (tests). An editor
    artifact gets `benchmarks.editor`'s comparison, on its own grid."""
    artifact = load_artifact(ctx.artifact)
    if artifact.model_name == "editor":
        from benchmarks import editor

        return editor.run(ctx)
    grid = QUICK if ctx.quick else FULL
    batch_sizes = batch_sizes or grid.batch_sizes
    lengths = lengths or grid.lengths
    repeats = repeats or grid.repeats
    min_lines = min_lines or grid.min_lines
    config = artifact.model_config
    max_draft = artifact.limits["max_n"] - 1  # as the service drafts
    log = ctx.log

    contenders = make_contenders(ctx, artifact)
    running = [c for c in contenders if c.engine is not None]
    for c in contenders:
        log(f"engines: {c.label}: {c.not_run or 'ready'}")
    if not running:
        return {"suite": NAME, "not_run": "no engine could start", "targets": []}
    providers = ["CUDAExecutionProvider"] if ctx.device == "cuda" else ["CPUExecutionProvider"]
    env = environment()
    started = time.perf_counter()
    flops_check = check_flops(artifact)
    on_gpu = ctx.device == "cuda" and _gpu_present()  # torch measures the GPU's peak
    peak = measure_peak(ctx.threads, peak_size or grid.peak_size, repeats, on_gpu)
    log(f"engines: peak {peak['peak']}; FLOP formula matches the graphs: {flops_check['agree']}")

    cells = []
    for length in lengths:
        lines = make_lines(
            Path(ctx.data) / "test.jsonl", length, max(*batch_sizes, min_lines), ctx.seed
        )
        for batch_size in batch_sizes:
            cell_lines = lines[: max(batch_size, min_lines)]
            groups = make_groups(cell_lines, batch_size, artifact)
            fits = [c for c in running if c.max_batch is None or batch_size <= c.max_batch]
            runners = [(c, d) for c in fits for d in DECODERS]
            cell_started = time.perf_counter()
            timed = run_cell(runners, groups, repeats, max_draft)
            cell = summarize_cell(timed, groups, fits, config, batch_size, length)
            cell["lines"] = len(cell_lines)
            cells.append(cell)
            took = time.perf_counter() - cell_started
            log(f"engines: batch {batch_size}, length {length} ({took:.0f} s): {_cell_line(cell)}")

    section = {
        "suite": NAME,
        "device": device_name(providers),
        "config": {
            "artifact": str(ctx.artifact),
            "artifact_checksum": artifact.manifest["checksum"][:16],
            "model": artifact.model_name,
            "model_config": config,
            "parameters": artifact.manifest["model"].get("parameters"),
            "checkpoint": str(ctx.model) if ctx.model else None,
            "checkpoint_matches_artifact": _same_checkpoint(ctx.model, artifact),
            "data": str(ctx.data),
            "device": ctx.device,
            "threads": ctx.threads,
            "quick": ctx.quick,
            "batch_sizes": list(batch_sizes),
            "lengths": list(lengths),
            "repeats": repeats,
            "min_lines": min_lines,
            "max_draft": max_draft,
            "seed": ctx.seed,
        },
        "environment": {**env, "load_average_after": os.getloadavg()},
        "seconds": time.perf_counter() - started,
        "contenders": {
            c.name: {"label": c.label, "device": c.device, "status": c.not_run or "ran"}
            for c in contenders
        },
        "flops": {
            "per_char": {str(n): flops_per_char(config, n) for n in lengths},
            "graph_check": flops_check,
        },
        "peak": peak,
        "cells": cells,
    }
    section["best"] = best_configuration(section, FLOAT32)
    section["best_any"] = best_configuration(section, [c.name for c in contenders])
    section["targets"] = targets(section)
    return section


def summarize_cell(timed, groups, contenders, config, batch_size: int, length: int) -> dict:
    """Seconds, chars/s, per-line latency, ratio to torch eager, model FLOP/s and the identity
    checks of one cell, from `run_cell`'s raw times."""
    chars = sum(g.chars for g in groups)
    sources = [n for g in groups for n in g.sources]
    seconds, outputs = timed["seconds"], timed["outputs"]
    results: dict[str, dict] = {}
    for c in contenders:
        # The useful work: what greedy decoding of this contender's outputs costs.
        greedy = outputs[f"{c.name}/greedy"]
        useful = sum(
            greedy_flops(config, s, o.passes) for s, o in zip(sources, greedy, strict=True)
        )
        results[c.name] = {"model_flops": useful, "decoders": {}}
        for decoder in DECODERS:
            per_repeat = [sum(r) for r in seconds[f"{c.name}/{decoder}"]]
            baseline = seconds.get(f"{BASELINE}/{decoder}")
            entry = {
                "seconds": spread(per_repeat),
                "chars_per_s": spread([chars / s for s in per_repeat]),
                "line_latency_ms": spread(
                    [1000 * s for r in seconds[f"{c.name}/{decoder}"] for s in r]
                ),
                "flops_per_s": useful / statistics.median(per_repeat),
                "ratio_to_torch": spread(
                    [sum(b) / s for b, s in zip(baseline, per_repeat, strict=True)]
                )
                if baseline
                else None,
                "decoder_calls": sum(o.passes for o in outputs[f"{c.name}/{decoder}"]),
            }
            results[c.name]["decoders"][decoder] = entry
    return {
        "batch_size": batch_size,
        "length": length,
        "chars": chars,
        "pieces": len(sources),
        "output_chars": {
            c.name: sum(len(o.ids) for o in outputs[f"{c.name}/greedy"]) for c in contenders
        },
        "results": results,
        "identity": identity(outputs, [c.name for c in contenders]),
        "orders": timed["orders"],
    }


def identity(outputs: dict[str, list[Decoded]], names: list[str]) -> dict:
    """Pieces whose output ids differ: each contender's aggressive vs its greedy, and each
    contender's greedy vs torch eager's. Both must be 0 for fp32; int8 may differ (see
    `markdown`)."""

    def differing(a: str, b: str) -> int:
        return sum(x.ids != y.ids for x, y in zip(outputs[a], outputs[b], strict=True))

    checks = {
        "aggressive_vs_greedy": {n: differing(f"{n}/aggressive", f"{n}/greedy") for n in names}
    }
    if BASELINE in names:
        checks["vs_torch"] = {
            n: differing(f"{n}/greedy", f"{BASELINE}/greedy") for n in names if n != BASELINE
        }
    return checks


def best_configuration(section: dict, names) -> dict | None:
    """The runner and cell of the contenders `names` with the most model FLOP/s, as a share of
    its device's peak (a contender on a device without a measured peak is left out)."""
    peaks = section["peak"]["peak"]
    devices = {name: c["device"] for name, c in section["contenders"].items()}
    best = None
    for cell in section["cells"]:
        for name, result in cell["results"].items():
            if name not in names or devices[name] not in peaks:
                continue
            for decoder, entry in result["decoders"].items():
                if best is None or entry["flops_per_s"] > best["flops_per_s"]:
                    best = {
                        "contender": name,
                        "decoder": decoder,
                        "batch_size": cell["batch_size"],
                        "length": cell["length"],
                        "flops_per_s": entry["flops_per_s"],
                    }
    if best is not None:
        best["peak_flops_per_s"] = peaks[devices[best["contender"]]]
        best["share_of_peak"] = best["flops_per_s"] / best["peak_flops_per_s"]
    return best


def targets(section: dict) -> list[dict]:
    """The issue's two engine targets: onnxruntime ≥ 5× torch eager at batch 1 (fp32 greedy,
    at every length measured), best configuration ≥ 25% of the measured peak."""
    ratios = {
        cell["length"]: cell["results"]["ort-fp32"]["decoders"]["greedy"]["ratio_to_torch"]
        for cell in section["cells"]
        if cell["batch_size"] == 1 and "ort-fp32" in cell["results"]
    }
    medians = {length: r["median"] for length, r in ratios.items() if r}
    speed = {
        "target": "onnxruntime ≥ 5× torch eager at batch 1",
        "measured": "not measured: needs torch eager and onnxruntime fp32 at batch 1",
        "met": False,
    }
    if medians:
        low, high = min(medians.values()), max(medians.values())
        lengths = ", ".join(map(str, medians))
        speed["measured"] = f"{low:.2f}–{high:.2f}× (fp32, greedy; lines of {lengths} chars)"
        speed["met"] = low >= 5
    rows = [speed]
    best = section["best"]
    if best:
        rows.append(
            {
                "target": "best configuration ≥ 25% of measured peak",
                "measured": f"{100 * best['share_of_peak']:.1f}% (float32: {_runner(best)}, batch "
                f"{best['batch_size']}, length {best['length']}: {_gflops(best['flops_per_s'])} "
                f"of {_gflops(best['peak_flops_per_s'])})",
                "met": best["share_of_peak"] >= 0.25,
            }
        )
    return rows


def _same_checkpoint(model: Path | None, artifact: Artifact) -> bool | None:
    """Whether the checkpoint is the one the artifact was exported from (its sha256)."""
    if model is None:
        return None
    from training.checkpoint import resolve

    try:
        meta = json.loads(resolve(Path(model)).read_text("utf-8"))
    except (UserError, OSError, ValueError):
        return None
    return meta.get("sha256") == artifact.manifest.get("checkpoint", {}).get("sha256")


# ---------------------------------------------------------------------------------- report


def _r(s: dict | None, fmt: str = "{:.0f}") -> str:
    if not s:
        return "–"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _gflops(x: float) -> str:
    return f"{x / 1e9:.2f} GFLOP/s"


def _runner(best: dict) -> str:
    return f"{best['contender']} {best['decoder']}"


def _cell_line(cell: dict) -> str:
    return ", ".join(
        f"{name}/{d} {e['chars_per_s']['median']:.0f} chars/s"
        for name, r in cell["results"].items()
        for d, e in r["decoders"].items()
    )


def _table(cells: list[dict], names: list[str], key: str, fmt: str) -> list[str]:
    """One row per cell and decoder, one column per contender: `key`'s median (min–max)."""
    lines = [
        "| batch | length | decoder | " + " | ".join(names) + " |",
        "|--:|--:|---|" + "--:|" * len(names),
    ]
    for cell in cells:
        for d in DECODERS:
            row = [
                _r(cell["results"][n]["decoders"][d][key], fmt) if n in cell["results"] else "–"
                for n in names
            ]
            lines.append(f"| {cell['batch_size']} | {cell['length']} | {d} | {' | '.join(row)} |")
    return lines


def markdown(section: dict) -> str:
    if section.get("comparison") == "editor":
        from benchmarks import editor

        return editor.markdown(section)
    c, env = section["config"], section["environment"]
    names = [n for n, info in section["contenders"].items() if info["status"] == "ran"]
    same = c["checkpoint_matches_artifact"]
    lines = [
        "# Engines: torch eager vs onnxruntime (vs TensorRT)",
        "",
        f"Device: **{section['device']}**, threads: {c['threads']}. Artifact `{c['artifact']}` "
        f"({c['model']}, {c['parameters']:,} parameters, {c['artifact_checksum']}); torch on "
        f"`{c['checkpoint']}`"
        + ("" if same is not False else " (**not** the checkpoint the artifact was exported from)")
        + f". {'Quick' if c['quick'] else 'Full'} grid: batch sizes {c['batch_sizes']}, line "
        f"lengths {c['lengths']} characters; each cell decodes max(batch, {c['min_lines']}) "
        f"lines, every runner side by side, order alternating per round, {c['repeats']} "
        f"repeats after a warm-up; aggressive drafts up to {c['max_draft']} tokens (as served). "
        f"onnxruntime {env['onnxruntime']}; load average {env['load_average_before'][0]:.2f} "
        f"before, {env['load_average_after'][0]:.2f} after; {env['date']}.",
        "",
        "| contender | device | status |",
        "|---|---|---|",
    ]
    for name, info in section["contenders"].items():
        lines.append(f"| {name}: {info['label']} | {info['device']} | {info['status']} |")
    others = [n for n in names if n != BASELINE]
    lines += [
        "",
        "## Speed relative to torch eager",
        "",
        "torch eager seconds / contender seconds with the same decoder, per repeat: "
        "median (min–max).",
        "",
        *_table(section["cells"], others, "ratio_to_torch", "{:.2f}×"),
        "",
        f"## Throughput (this device only: {section['device']})",
        "",
        "Characters of input lines per second: median (min–max) over repeats.",
        "",
        *_table(section["cells"], names, "chars_per_s", "{:.0f}"),
        "",
        f"## Per-line latency (this device only: {section['device']})",
        "",
        "Milliseconds from handing the engine a batch of lines to having all of them corrected "
        "(at batch 1, one line's latency): median (min–max) over batches and repeats.",
        "",
        *_table(section["cells"], names, "line_latency_ms", "{:.1f}"),
    ]
    lines += [
        "",
        "## Identity",
        "",
        "Model pieces whose output ids differ. Aggressive vs greedy must be 0 for torch and "
        "the fp32 graphs, and fp32 graphs vs torch eager must be 0. int8 may differ in both: "
        "its activations are quantized per decoder call with that call's own scale, so "
        "verifying a draft of many tokens can choose otherwise than one token at a time.",
        "",
        "| batch | length | pieces | aggressive vs greedy | greedy vs torch eager |",
        "|--:|--:|--:|---|---|",
    ]
    for cell in section["cells"]:
        ident = cell["identity"]
        agg = ", ".join(f"{n} {v}" for n, v in ident["aggressive_vs_greedy"].items())
        vs = ", ".join(f"{n} {v}" for n, v in ident.get("vs_torch", {}).items()) or "–"
        lines.append(
            f"| {cell['batch_size']} | {cell['length']} | {cell['pieces']} | {agg} | {vs} |"
        )
    check, per_char = section["flops"]["graph_check"], section["flops"]["per_char"]
    shape = check["shape"]
    lines += [
        "",
        "## FLOPs per character",
        "",
        "From the model's configuration (2 FLOPs per multiply-add; d = d_model, f = ffn_dim, "
        "S = source length, P = cached tokens, V = vocabulary): encoder per source character "
        "n_enc × (8d² + 4Sd + 4df) + n_dec × 4d² (cross K/V) [+ hybrid mapper: "
        "mapper_layers × (4d·f_mapper + 2d·kernel)]; decoder per output character at position "
        "P: n_dec × (12d² + 4(P+1)d + 4Sd + 4df) + 2dV. Per character of a piece of L "
        "characters copied into L (L + 1 decoder steps, eos included):",
        "",
        "| L | encoder / source char | decoder / output char | total / char |",
        "|--:|--:|--:|--:|",
    ]
    for n, f in per_char.items():
        lines.append(
            f"| {n} | {f['encoder'] / 1e6:.2f} M | {f['decoder'] / 1e6:.2f} M | "
            f"{f['total'] / 1e6:.2f} M |"
        )
    lines += [
        "",
        f"Cross-check against the fp32 graphs' MatMul nodes at batch {shape['batch']}, source "
        f"{shape['src_len']}, {shape['past_len']} cached, {shape['n']} new tokens: encoder "
        f"{check['graph']['encoder']:,} counted vs {check['formula']['encoder']:,} by formula, "
        f"decoder {check['graph']['decoder']:,} vs {check['formula']['decoder']:,}: "
        f"**{'agree' if check['agree'] else 'DISAGREE'}**.",
    ]
    peak, best = section["peak"], section["best"]
    lines += [
        "",
        "## Peak and the best configuration",
        "",
        f"Peak: best of repeated {peak['size']} × {peak['size']} float32 products: "
        f"onnxruntime MatMul (threads: {c['threads']}) "
        f"{_gflops(peak['onnxruntime']['flops_per_s'])}, "
        f"numpy {_gflops(peak['numpy']['flops_per_s'])}"
        + (
            f", torch CUDA {_gflops(peak['torch_cuda']['flops_per_s'])}"
            if "torch_cuda" in peak
            else ""
        )
        + f"; peak taken: {', '.join(f'{d} {_gflops(v)}' for d, v in peak['peak'].items())}. "
        "A configuration's FLOP/s are the model FLOPs of its greedy outputs (encoder pass and "
        "one decoder step per output token, no padding, no rejected drafts) over its median "
        "seconds. The target counts the float32 contenders (torch, onnxruntime fp32 and CUDA), "
        "whose arithmetic is the peak's; int8 (and TensorRT, whose plans may be fp16) run "
        "faster arithmetic than the float32 peak measures, so their share is shown apart.",
    ]
    for title, chosen in (("Best in float32", best), ("Best of all", section["best_any"])):
        if chosen:
            lines += [
                "",
                f"{title}: **{_runner(chosen)}**, batch {chosen['batch_size']}, length "
                f"{chosen['length']}: {_gflops(chosen['flops_per_s'])}, "
                f"**{100 * chosen['share_of_peak']:.1f}%** of the peak.",
            ]
    return "\n".join(lines) + "\n"


def plots(section: dict, out_dir: str | Path) -> list[str]:
    """engines-throughput.png: chars/s vs batch size, one panel per line length;
    engines-latency.png: per-line latency vs line length at the smallest batch size."""
    if "not_run" in section:
        return []
    if section.get("comparison") == "editor":
        from benchmarks import editor

        return editor.plots(section, out_dir)
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells, c = section["cells"], section["config"]
    names = [n for n, info in section["contenders"].items() if info["status"] == "ran"]
    style = {"greedy": "-", "aggressive": "--"}

    def curve(ax, chosen, x_key, key):
        for name in names:
            for d in DECODERS:
                points = [
                    (cell[x_key], cell["results"][name]["decoders"][d][key])
                    for cell in chosen
                    if name in cell["results"]
                ]
                if not points:
                    continue
                x = [p[0] for p in points]
                median = np.array([p[1]["median"] for p in points])
                error = [
                    median - [p[1]["min"] for p in points],
                    [p[1]["max"] for p in points] - median,
                ]
                ax.errorbar(
                    x,
                    median,
                    yerr=error,
                    linestyle=style[d],
                    marker="o",
                    capsize=3,
                    label=f"{name} {d}",
                )
        ticks = sorted({cell[x_key] for cell in chosen})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")

    fig, axes = plt.subplots(
        1, len(c["lengths"]), figsize=(5 * len(c["lengths"]), 4), squeeze=False
    )
    for ax, length in zip(axes[0], c["lengths"], strict=True):
        curve(ax, [cell for cell in cells if cell["length"] == length], "batch_size", "chars_per_s")
        ax.set_title(f"lines of {length} characters")
        ax.set_xlabel("batch size (lines)")
        ax.set_ylabel("chars / s")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Engines: throughput — {section['device']}")
    fig.tight_layout()
    fig.savefig(out_dir / "engines-throughput.png", dpi=110)
    plt.close(fig)

    smallest = min(c["batch_sizes"])
    fig, ax = plt.subplots(figsize=(6, 4))
    curve(
        ax, [cell for cell in cells if cell["batch_size"] == smallest], "length", "line_latency_ms"
    )
    ax.set_xlabel("line length (characters)")
    ax.set_ylabel("ms per batch of lines")
    ax.set_title(f"Engines: latency at batch {smallest} — {section['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "engines-latency.png", dpi=110)
    plt.close(fig)
    return ["engines-throughput.png", "engines-latency.png"]
