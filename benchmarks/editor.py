"""The editor against the autoregressive models: the editor's one pass (onnxruntime fp32, opt and
int8) vs the Hybrid's greedy decoding (onnxruntime fp32) vs CTranslate2's greedy search on the
CharTransformer, at batch 1 and 32: characters/s, per-line latency, and the share of the
machine's measured float32 peak that the editor reaches.

An autoregressive model's time grows with what it writes, and a model trained for minutes on a
CPU writes the wrong amount: it loops to its length limit, or stops early. So CTranslate2 runs
twice: as the checkpoint decodes (`ctranslate2-greedy`, checked against its service), and held
to the length a trained model writes (`ctranslate2-at-length`: every batch decodes exactly the
test split's output/input length ratio times its longest input, plus the end token). The
speed target is met only against both.

What the `engines` suite of `kmcorrect bench` runs when --artifact is an editor
(`benchmarks.engines` hands over): `run(ctx)`, `markdown(section)`, `plots(section, out_dir)`.
The Hybrid comes from --hybrid ARTIFACT, the CharTransformer from --char-transformer RUN_DIR; a
contender without its input says why it did not run. Every contender corrects the same real
test lines, cut into its own model pieces by `runtime.pipeline.prepare` and corrected batch by
batch as the service does (`Corrector.run_batch`), and every answer is checked against what
that contender's service gives for the line. See benchmarks/README.md.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.common import BenchContext, device_name, environment, settle, spread
from benchmarks.ctranslate2_peer import _converted, _record, greedy, tokens_of
from benchmarks.engines import _gflops, _gpu_present, graph_matmul_flops, make_lines, measure_peak
from runtime.artifact import Artifact, load_artifact
from runtime.corrector import Corrector, ModelInfo
from runtime.decoding import output_limits
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.pipeline import ModelOutput, Prepared, assemble, prepare
from runtime.service import Job
from runtime.text import normalize
from runtime.text.metrics import cer

NAME = "engines"
COMPARISON = "editor"  # marks the section, so that engines.markdown and plots hand it over
EDITOR_VARIANTS = ("fp32", "opt", "int8")
FLOAT32 = ("editor-fp32", "editor-opt")  # the editors whose arithmetic is the peak's
BASELINE = "ctranslate2-greedy"
AT_LENGTH = "ctranslate2-at-length"  # CTranslate2 held to a trained model's output length
SPEEDUP_TARGET = 5.0  # the editor's chars/s over CTranslate2 greedy's, at the largest batch
PEAK_TARGET = 0.30  # the editor's share of the measured float32 peak


@dataclass(frozen=True)
class Grid:
    batch_sizes: tuple[int, ...]
    lengths: tuple[int, ...]  # characters per line
    lines: int  # lines per length, corrected at every batch size
    repeats: int
    peak_size: int  # n of the n × n float32 matrix product that measures the peak


QUICK = Grid((1, 32), (64,), lines=64, repeats=3, peak_size=2048)
FULL = Grid((1, 32), (64, 256), lines=256, repeats=5, peak_size=4096)


# ---------------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    """One way to correct model pieces. `model` has the Corrector's `vocab`, `max_src_len` and
    `run_batch(jobs)`; `reference` is the Corrector whose `correct` gives what the service
    answers for a line (the contender's own, except for CTranslate2: our torch Corrector on the
    same checkpoint); `timer` adds up an editor's seconds inside its graph."""

    name: str
    label: str
    model: object | None = None
    reference: Corrector | None = None
    timer: GraphTimer | None = None
    not_run: str | None = None


class GraphTimer:
    """An editor engine that adds up the seconds its graph runs: the rest of a call is the
    collapse, the gate and the text (runtime.editing), which the service pays too."""

    def __init__(self, engine: OnnxEngine) -> None:
        self.engine, self.seconds = engine, 0.0

    def edit(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        out = self.engine.edit(src_ids, src_mask)
        self.seconds += time.perf_counter() - started
        return out


class CTranslate2Model:
    """CTranslate2's greedy search behind the Corrector's `run_batch`. It takes one
    max_decoding_length per batch, so a batch runs to its longest row's limit (the service's,
    `runtime.decoding.output_limits`) and each row is then cut to its own: what greedy search
    with that row's own limit gives, as our service decodes.

    With `length_ratio`, every row is held to what a trained model writes instead: ratio ×
    its input, within the service's limit, and the batch decodes exactly its longest such row
    (minimum and maximum decoding length), the steps a trained model's batch takes."""

    def __init__(self, translator, info: ModelInfo, length_ratio: float | None = None) -> None:
        self.translator, self.vocab = translator, info.vocab
        self.max_src_len, self.max_tgt_len = info.max_src_len, info.max_tgt_len
        self.tokens = tokens_of(info.vocab)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.length_ratio = length_ratio

    def run_batch(self, jobs: list[Job]) -> list[ModelOutput]:
        sources = [[self.tokens[t] for t in self.vocab.encode(job.text)] for job in jobs]
        lengths = np.array([len(s) for s in sources])
        limits = output_limits(np.arange(lengths.max()) < lengths[:, None], self.max_tgt_len - 1)
        if self.length_ratio is None:
            results = greedy(self.translator, sources, int(limits.max()))
        else:
            limits = np.minimum(np.ceil(self.length_ratio * lengths).astype(int), limits)
            steps = int(limits.max()) + 1  # and the end token
            results = greedy(self.translator, sources, steps, min_len=steps)
        return [
            ModelOutput(self.vocab.decode(self.index[t] for t in r.hypotheses[0][:limit]), [])
            for r, limit in zip(results, limits, strict=True)
        ]


def _started(name: str, label: str, build) -> Contender:
    """The contender `build()` makes, or one that says why it could not be made."""
    try:
        return build()
    except ImportError as exc:
        return Contender(name, label, not_run=f"not run: {exc.name} is not installed")
    except (UserError, OSError, RuntimeError, ValueError) as exc:
        return Contender(name, label, not_run=f"not run: {exc}")


def output_length_ratio(test_path: Path) -> float:
    """Characters of the test split's targets over those of its inputs: how long a trained
    corrector's output is, against its input."""
    inputs = targets = 0
    with open(test_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                inputs += len(normalize(row["input"]))
                targets += len(normalize(row["target"]))
    if not inputs:
        raise UserError(f"{test_path}: no rows with input text")
    return targets / inputs


def make_contenders(ctx: BenchContext, artifact: Artifact) -> list[Contender]:
    """The editor in each variant, the Hybrid (--hybrid) and CTranslate2 (--char-transformer)
    as it decodes and held to a trained model's length."""

    def editor(variant: str):
        name, label = f"editor-{variant}", f"editor, onnxruntime {variant} ({ctx.device})"

        def build():
            if variant not in artifact.variants:
                raise UserError(f"the artifact has no {variant} graph (kmcorrect export)")
            engine = OnnxEngine(artifact, variant, providers=[ctx.device], threads=ctx.threads)
            timer = GraphTimer(engine)
            corrector = Corrector(ModelInfo.of_artifact(artifact), timer)
            return Contender(name, label, corrector, corrector, timer)

        return _started(name, label, build)

    def hybrid():
        found = load_artifact(ctx.hybrid)
        if found.model_name != "hybrid":
            raise UserError(f"--hybrid {ctx.hybrid}: {found.model_name} artifact, not a hybrid")
        engine = OnnxEngine(found, "fp32", providers=[ctx.device], threads=ctx.threads)
        corrector = Corrector(ModelInfo.of_artifact(found), engine)
        return Contender("hybrid-greedy", hybrid_label, corrector, corrector)

    def ctranslate2(at_length: bool):
        translator, reference = ctranslate2_translator()
        if not at_length:
            return Contender(
                BASELINE, ct_label, CTranslate2Model(translator, reference.info), reference
            )
        ratio = output_length_ratio(Path(ctx.data) / "test.jsonl")
        label = f"{ct_label}, held to {ratio:.3f} × its input (the test split's output/input)"
        return Contender(AT_LENGTH, label, CTranslate2Model(translator, reference.info, ratio))

    @functools.cache  # one translator and reference for both CTranslate2 runs
    def ctranslate2_translator():
        import ctranslate2
        import torch

        from training import checkpoint
        from training.torch_engine import checkpoint_corrector

        record = _record(ctx.char_transformer)
        if record is None:
            raise UserError(f"--char-transformer {ctx.char_transformer}: no checkpoint there")
        info, meta = record
        if meta.get("model") != "char_transformer":
            raise UserError(f"--char-transformer {info}: {meta.get('model')} checkpoint")
        torch.set_num_threads(ctx.threads)
        reference = checkpoint_corrector(checkpoint.load(info), ctx.device)
        positions = max(1024, reference.max_src_len, reference.max_tgt_len + 1)
        model_dir, _ = _converted(info, meta["sha256"], positions, ctx.log)
        translator = ctranslate2.Translator(
            str(model_dir),
            device=ctx.device,
            compute_type="float32",
            inter_threads=1,
            intra_threads=ctx.threads,
        )
        return translator, reference

    hybrid_label = f"Hybrid greedy, onnxruntime fp32 ({ctx.device})"
    ct_label = f"CTranslate2 greedy, CharTransformer float32 ({ctx.device})"
    contenders = [editor(variant) for variant in EDITOR_VARIANTS]
    if ctx.hybrid is None:
        contenders.append(Contender("hybrid-greedy", hybrid_label, not_run="not run: no --hybrid"))
    else:
        contenders.append(_started("hybrid-greedy", hybrid_label, hybrid))
    for name, at_length in ((BASELINE, False), (AT_LENGTH, True)):
        if ctx.char_transformer is None:
            contenders.append(Contender(name, ct_label, not_run="not run: no --char-transformer"))
        else:
            contenders.append(_started(name, ct_label, lambda a=at_length: ctranslate2(a)))
    return contenders


# ---------------------------------------------------------------------------------- timing


@dataclass
class Group:
    """Lines handed over together, as one contender's service takes them: their model pieces
    as jobs (in line order), corrected shortest first in batches of at most the batch size of
    job indexes, as `Corrector.correct` batches them."""

    prepared: list[Prepared]
    jobs: list[Job]
    batches: list[list[int]]


def make_groups(lines: list[str], batch_size: int, model) -> list[Group]:
    groups = []
    for start in range(0, len(lines), batch_size):
        prepared = [
            prepare(line, model.vocab, model.max_src_len)
            for line in lines[start : start + batch_size]
        ]
        jobs = [Job(piece, "full", "greedy") for p in prepared for piece in p.model_inputs]
        order = sorted(range(len(jobs)), key=lambda i: len(jobs[i].text))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        groups.append(Group(prepared, jobs, batches))
    return groups


def correct_group(model, group: Group) -> list[str]:
    """Every line of the group corrected: its pieces batch by batch, then put back together."""
    corrected: list[ModelOutput] = [ModelOutput("", [])] * len(group.jobs)
    for batch in group.batches:
        results = model.run_batch([group.jobs[i] for i in batch])
        for i, result in zip(batch, results, strict=True):
            corrected[i] = result
    answers = iter(corrected)
    return [
        assemble(p, [next(answers) for _ in p.model_inputs], with_spans=False).text
        for p in group.prepared
    ]


def run_cell(contenders: list[Contender], lines: list[str], batch_size: int, repeats: int):
    """Every contender on the same lines in groups of `batch_size`, side by side: one round per
    group, the contenders' order reversed from one round to the next, after an untimed warm-up
    (the first group); the whole set `repeats` times. Returns seconds[name][repeat][group], the
    seconds inside the editors' graphs the same way, the first repeat's answers per line, the
    pieces' lengths per contender, and the order of every round."""
    groups = {c.name: make_groups(lines, batch_size, c.model) for c in contenders}
    for c in contenders:
        correct_group(c.model, groups[c.name][0])
    count = len(groups[contenders[0].name])
    seconds = {c.name: [[0.0] * count for _ in range(repeats)] for c in contenders}
    graph = {c.name: [[0.0] * count for _ in range(repeats)] for c in contenders if c.timer}
    answers: dict[str, list[str]] = {c.name: [] for c in contenders}
    orders = []
    for repeat in range(repeats):
        for g in range(count):
            order = contenders[::-1] if len(orders) % 2 else contenders
            orders.append([c.name for c in order])
            for c in order:
                in_graph = c.timer.seconds if c.timer else 0.0
                settle()
                started = time.perf_counter()
                out = correct_group(c.model, groups[c.name][g])
                seconds[c.name][repeat][g] = time.perf_counter() - started
                if c.timer:
                    graph[c.name][repeat][g] = c.timer.seconds - in_graph
                if repeat == 0:
                    answers[c.name] += out
    pieces = {
        name: [len(job.text) for group in found for job in group.jobs]
        for name, found in groups.items()
    }
    return {
        "seconds": seconds,
        "graph": graph,
        "answers": answers,
        "pieces": pieces,
        "orders": orders,
    }


# ---------------------------------------------------------------------------------- FLOPs


def editor_flops(artifact: Artifact, lengths=(16, 48), check: int = 33) -> dict:
    """MatMul FLOPs of the editor's fp32 graph on one row of S characters, F(S) = a·S + b·S²
    (per-position layers, upsampling and head; attention over pairs of positions or frames),
    solved from counts of the graph at two lengths and checked against a count at a third.
    Norms, softmax and the depthwise convolutions are left out, as in the engines suite."""
    path = artifact.graph_path("editor")
    vocab_size = artifact.model_config["vocab_size"]

    def count(n: int) -> int:
        ids = np.random.default_rng(n).integers(4, vocab_size, (1, n))
        return graph_matmul_flops(path, {"src_ids": ids, "src_mask": np.ones((1, n), bool)})

    (s1, s2), (f1, f2) = lengths, (count(n) for n in lengths)
    b = (Fraction(f2, s2) - Fraction(f1, s1)) / (s2 - s1)
    a = Fraction(f1, s1) - b * s1
    fitted, counted = a * check + b * check * check, count(check)
    return {
        "linear": float(a),
        "quadratic": float(b),
        "counted": {str(s1): f1, str(s2): f2},
        "check": {"length": check, "counted": counted, "fit": float(fitted)},
        "agree": fitted == counted,
    }


def piece_flops(flops: dict, length: int) -> float:
    return flops["linear"] * length + flops["quadratic"] * length * length


# ---------------------------------------------------------------------------------- the suite


def run(
    ctx: BenchContext,
    *,
    batch_sizes: tuple[int, ...] | None = None,
    lengths: tuple[int, ...] | None = None,
    lines: int | None = None,
    repeats: int | None = None,
    peak_size: int | None = None,
) -> dict:
    """The section; the keywords override the quick/full grid (tests)."""
    grid = QUICK if ctx.quick else FULL
    batch_sizes = batch_sizes or grid.batch_sizes
    lengths = lengths or grid.lengths
    lines = lines or grid.lines
    repeats = repeats or grid.repeats
    artifact = load_artifact(ctx.artifact)
    if artifact.model_name != "editor":
        raise UserError(f"{ctx.artifact} is a {artifact.model_name} artifact, not an editor")
    log = ctx.log

    contenders = make_contenders(ctx, artifact)
    for c in contenders:
        log(f"engines (editor): {c.label}: {c.not_run or 'ready'}")
    running = [c for c in contenders if c.model is not None]
    if not running:
        return {"suite": NAME, "not_run": "no editor engine could start", "targets": []}
    providers = ["CUDAExecutionProvider"] if ctx.device == "cuda" else ["CPUExecutionProvider"]
    env = environment()
    started = time.perf_counter()
    flops = editor_flops(artifact)
    on_gpu = ctx.device == "cuda" and _gpu_present()  # torch measures the GPU's peak
    peak = measure_peak(ctx.threads, peak_size or grid.peak_size, repeats, on_gpu)
    log(f"engines (editor): peak {peak['peak']}; FLOP fit matches the graph: {flops['agree']}")

    cells = []
    for length in lengths:
        chosen = make_lines(Path(ctx.data) / "test.jsonl", length, lines, ctx.seed)
        # What each contender's service answers for these lines (untimed).
        service = {
            c.name: [a.text for a in c.reference.correct(chosen, decoding="greedy")]
            for c in running
            if c.reference is not None
        }
        for batch_size in batch_sizes:
            cell_started = time.perf_counter()
            timed = run_cell(running, chosen, batch_size, repeats)
            cell = summarize_cell(timed, chosen, service, flops, peak, ctx.device)
            cells.append({"batch_size": batch_size, "length": length, **cell})
            took = time.perf_counter() - cell_started
            speeds = ", ".join(
                f"{name} {r['chars_per_s']['median']:.0f}" for name, r in cell["results"].items()
            )
            log(f"engines (editor): batch {batch_size}, length {length} ({took:.0f} s): {speeds}")

    section = {
        "suite": NAME,
        "comparison": COMPARISON,
        "device": device_name(providers),
        "config": {
            "artifact": str(ctx.artifact),
            "artifact_checksum": artifact.manifest["checksum"][:16],
            "model_config": artifact.model_config,
            "parameters": artifact.manifest["model"].get("parameters"),
            "gate": artifact.manifest.get("gate", {}).get("min_confidence", 0.0),
            "hybrid": str(ctx.hybrid) if ctx.hybrid else None,
            "char_transformer": str(ctx.char_transformer) if ctx.char_transformer else None,
            "data": str(ctx.data),
            "device": ctx.device,
            "threads": ctx.threads,
            "quick": ctx.quick,
            "batch_sizes": list(batch_sizes),
            "lengths": list(lengths),
            "lines": lines,
            "repeats": repeats,
            "seed": ctx.seed,
        },
        "environment": {**env, "load_average_after": os.getloadavg()},
        "seconds": time.perf_counter() - started,
        "contenders": {
            c.name: {"label": c.label, "status": c.not_run or "ran"} for c in contenders
        },
        "flops": flops,
        "peak": peak,
        "cells": cells,
    }
    section["targets"] = targets(section)
    return section


def summarize_cell(timed, lines, service, flops, peak, device) -> dict:
    """chars/s, per-line latency, speed relative to CTranslate2, answers against the service's,
    and for the editors their model FLOP/s and share of the peak, from `run_cell`."""
    chars = sum(map(len, lines))
    seconds = timed["seconds"]
    results = {}
    for name, per_group in seconds.items():
        per_repeat = [sum(r) for r in per_group]
        answers = timed["answers"][name]
        differing = [
            i
            for i, (a, b) in enumerate(zip(answers, service.get(name, answers), strict=True))
            if a != b
        ]
        entry = {
            "seconds": spread(per_repeat),
            "chars_per_s": spread([chars / s for s in per_repeat]),
            "line_latency_ms": spread([1000 * s for r in per_group for s in r]),
            **{
                key: spread([sum(b) / s for b, s in zip(seconds[base], per_repeat, strict=True)])
                if base in seconds
                else None
                for key, base in (("vs_ctranslate2", BASELINE), ("vs_at_length", AT_LENGTH))
            },
            "pieces": len(timed["pieces"][name]),
            # None: held to a length, its answers are not the service's
            "differing_from_service": len(differing) if name in service else None,
            # By line number and how far apart the answers are: reports are committed, and the
            # lines are text of the user's corpus.
            "examples": [
                {"line": i, "cer_vs_service": cer(answers[i], service[name][i])}
                for i in differing[:3]
            ],
        }
        if name in timed["graph"]:
            useful = sum(piece_flops(flops, n) for n in timed["pieces"][name])
            in_graph = statistics.median(sum(r) for r in timed["graph"][name])
            entry["model_flops"] = useful
            entry["flops_per_s"] = useful / entry["seconds"]["median"]
            entry["graph_flops_per_s"] = useful / in_graph
            entry["graph_share_of_time"] = in_graph / entry["seconds"]["median"]
            if device in peak["peak"]:
                entry["peak_flops_per_s"] = peak["peak"][device]
                entry["share_of_peak"] = entry["flops_per_s"] / peak["peak"][device]
                entry["graph_share_of_peak"] = entry["graph_flops_per_s"] / peak["peak"][device]
        results[name] = entry
    return {"lines": len(lines), "chars": chars, "results": results, "orders": timed["orders"]}


def targets(section: dict) -> list[dict]:
    """The issue's two targets: the editor at the largest batch ≥ 5× CTranslate2 greedy's
    chars/s (at every line length, as the checkpoint decodes and held to a trained model's
    length), and the editor ≥ 30% of the measured float32 peak."""
    largest = max(section["config"]["batch_sizes"])
    speed = {
        "target": f"editor ≥ {SPEEDUP_TARGET:g}× CTranslate2 greedy chars/s at batch {largest}",
        "measured": f"not measured: CTranslate2 greedy {section['contenders'][BASELINE]['status']}",
        "met": False,
    }
    measured, ratios = [], []
    for cell in section["cells"]:
        results = cell["results"]
        editors = [n for n in results if n.startswith("editor-")]
        if cell["batch_size"] != largest or BASELINE not in results or not editors:
            continue
        best = max(editors, key=lambda n: results[n]["chars_per_s"]["median"])
        for base, key in ((BASELINE, "vs_ctranslate2"), (AT_LENGTH, "vs_at_length")):
            ratio = results[best][key]
            if ratio is None:
                continue
            ratios.append(ratio["median"])
            measured.append(
                f"{best} {results[best]['chars_per_s']['median']:,.0f} vs {base} "
                f"{results[base]['chars_per_s']['median']:,.0f} chars/s: "
                f"{_r(ratio, '{:.2f}×')} (lines of {cell['length']} chars)"
            )
    if ratios:
        speed["measured"], speed["met"] = "; ".join(measured), min(ratios) >= SPEEDUP_TARGET
    share = {
        "target": f"editor ≥ {PEAK_TARGET:.0%} of the measured float32 peak",
        "measured": "not measured: no float32 editor ran, or no peak for this device",
        "met": False,
    }
    best = max(
        (
            (r["share_of_peak"], name, cell)
            for cell in section["cells"]
            for name, r in cell["results"].items()
            if name in FLOAT32 and "share_of_peak" in r
        ),
        default=None,
        key=lambda found: found[0],
    )
    if best:
        value, name, cell = best
        r = cell["results"][name]
        share["measured"] = (
            f"{100 * value:.1f}% ({name}, batch {cell['batch_size']}, lines of {cell['length']} "
            f"chars: {_gflops(r['flops_per_s'])} of {_gflops(r['peak_flops_per_s'])}; the graph "
            f"alone {100 * r['graph_share_of_peak']:.1f}%)"
        )
        share["met"] = value >= PEAK_TARGET
    return [speed, share]


# ---------------------------------------------------------------------------------- report


def _r(s: dict | None, fmt: str = "{:.0f}") -> str:
    if not s:
        return "–"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def markdown(section: dict) -> str:
    c, env, flops, peak = (
        section["config"],
        section["environment"],
        section["flops"],
        section["peak"],
    )
    lines = [
        "# Engines: the editor vs the autoregressive models",
        "",
        f"Device: **{section['device']}**, threads: {c['threads']}. Editor artifact "
        f"`{c['artifact']}` ({c['parameters']:,} parameters, {c['artifact_checksum']}, gate "
        f"{c['gate']:.2f}); Hybrid `{c['hybrid']}`; CharTransformer `{c['char_transformer']}`. "
        f"{'Quick' if c['quick'] else 'Full'} grid: {c['lines']} real test lines per length "
        f"({', '.join(map(str, c['lengths']))} characters), batch sizes "
        f"{', '.join(map(str, c['batch_sizes']))}; every contender side by side on the same "
        f"lines, order reversed each round, {c['repeats']} repeats after a warm-up. A timed call "
        "is a group of lines from text to corrected text, as the service computes it: model "
        "pieces (`prepare`), `run_batch` per batch of at most the batch size, shortest first, "
        f"and `assemble`. onnxruntime {env['onnxruntime']}; load average "
        f"{env['load_average_before'][0]:.2f} before, {env['load_average_after'][0]:.2f} after; "
        f"{env['date']}.",
        "",
        "| contender | status |",
        "|---|---|",
        *(
            f"| {n}: {info['label']} | {info['status']} |"
            for n, info in section["contenders"].items()
        ),
        "",
        f"## Speed (this device only: {section['device']})",
        "",
        "chars/s: characters of the lines / seconds, median (min–max) over repeats. "
        "× CTranslate2: its seconds / the contender's, per repeat, as the checkpoint decodes "
        f"(`{BASELINE}`) and held to a trained model's output length (`{AT_LENGTH}`: a model "
        "trained for minutes loops to its limit or stops early, and its time follows). "
        "Latency: from handing a group of lines over to having all of them corrected (at "
        "batch 1, one line's). ≠ service: lines whose answer here differs from what that "
        "contender's service answers for them (`Corrector.correct`; for CTranslate2 our torch "
        "Corrector, greedy, on the same checkpoint; none for the length-held run).",
        "",
        "| length | batch | contender | pieces | chars/s | × CTranslate2 | × at length "
        "| latency ms | ≠ service |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in section["cells"]:
        for name, r in cell["results"].items():
            differing = r["differing_from_service"]
            shown = "–" if differing is None else f"{differing}/{cell['lines']}"
            lines.append(
                f"| {cell['length']} | {cell['batch_size']} | {name} | {r['pieces']} "
                f"| {_r(r['chars_per_s'])} | {_r(r['vs_ctranslate2'], '{:.2f}×')} "
                f"| {_r(r['vs_at_length'], '{:.2f}×')} "
                f"| {_r(r['line_latency_ms'], '{:.1f}')} "
                f"| {shown} |"
            )
    examples = [
        (cell, name, e)
        for cell in section["cells"]
        for name, r in cell["results"].items()
        for e in r["examples"]
    ]
    if examples:
        lines += ["", "Differing answers (line numbers in the cell's lines):", ""]
        lines += [
            f"- {name}, lines of {cell['length']}, batch {cell['batch_size']}: line {e['line']}, "
            f"answers {e['cer_vs_service']:.3f} CER apart"
            for cell, name, e in examples
        ]
    check = flops["check"]
    lines += [
        "",
        "## FLOPs and the share of peak",
        "",
        f"Editor FLOPs per row of S characters, from the fp32 graph's MatMul nodes counted at S = "
        f"{', '.join(flops['counted'])}: F(S) = {flops['linear'] / 1e6:.3f} M·S + "
        f"{flops['quadratic'] / 1e3:.2f} k·S² (norms, softmax and the depthwise convolutions "
        f"left out); at S = {check['length']} the graph counts {check['counted']:,}, the fit "
        f"gives {check['fit']:,.0f}: **{'agree' if flops['agree'] else 'DISAGREE'}**. Peak: best "
        f"of repeated {peak['size']} × {peak['size']} float32 products: onnxruntime MatMul "
        f"{_gflops(peak['onnxruntime']['flops_per_s'])}, numpy "
        f"{_gflops(peak['numpy']['flops_per_s'])}; taken: "
        f"{', '.join(f'{d} {_gflops(v)}' for d, v in peak['peak'].items())}. A configuration's "
        "FLOP/s are the FLOPs of its pieces (unpadded) over its median seconds, the whole call "
        "(collapse, gate and text included) or its graph alone; fp32 and opt are float32, int8 "
        "runs faster arithmetic than the peak measures.",
        "",
        "| length | batch | contender | GFLOP/s | share of peak | graph share of time "
        "| GFLOP/s in the graph | graph's share of peak |",
        "|--:|--:|---|--:|--:|--:|--:|--:|",
    ]
    for cell in section["cells"]:
        for name, r in cell["results"].items():
            if "model_flops" not in r:
                continue
            share = r.get("share_of_peak")
            graph_share = r.get("graph_share_of_peak")
            lines.append(
                f"| {cell['length']} | {cell['batch_size']} | {name} "
                f"| {r['flops_per_s'] / 1e9:.2f} "
                f"| {'–' if share is None else f'{100 * share:.1f}%'} "
                f"| {100 * r['graph_share_of_time']:.0f}% | {r['graph_flops_per_s'] / 1e9:.2f} "
                f"| {'–' if graph_share is None else f'{100 * graph_share:.1f}%'} |"
            )
    return "\n".join(lines) + "\n"


def plots(section: dict, out_dir: str | Path) -> list[str]:
    """engines-editor.png: chars/s and per-line latency per contender, for every cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = section["cells"]
    names = [n for n, info in section["contenders"].items() if info["status"] == "ran"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        x = np.arange(len(cells)) + (k - (len(names) - 1) / 2) * width
        for ax, key in zip(axes, ("chars_per_s", "line_latency_ms"), strict=True):
            stats = [cell["results"][name][key] for cell in cells]
            median = np.array([s["median"] for s in stats])
            error = [median - [s["min"] for s in stats], [s["max"] for s in stats] - median]
            ax.bar(x, median, width, yerr=error, capsize=3, label=name)
    for ax, label in zip(axes, ("chars / s", "ms per group of lines"), strict=True):
        ticks = [f"batch {cell['batch_size']}\n{cell['length']} chars" for cell in cells]
        ax.set_xticks(np.arange(len(cells)), ticks)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Editor vs autoregressive models — {section['device']}")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "engines-editor.png", dpi=110)
    plt.close(fig)
    return ["engines-editor.png"]
