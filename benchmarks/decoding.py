"""Greedy vs input-guided aggressive decoding, side by side on one engine, per channel.

    python -m benchmarks.decoding --artifact artifacts/editor-default --data data/default \\
        [--rows 1000] [--variant fp32] [--batch-size 1] [--threads N] [--max-draft 64] \\
        [--repeats 3] [--out benchmarks/results/<device>]

Both decoders get the same model pieces: each test row goes through `runtime.pipeline.prepare`
with the artifact's max_src_len, as the server would chunk it. Pieces are batched within their
channel (shortest first, as `Corrector.correct` does), each batch is decoded by
both decoders back to back, in alternating order, and the whole set is repeated; times are
medians over repeats with their min–max. The identity check compares every row's output ids.
It is also the `decoding` suite of `kmcorrect bench` (`run(ctx)`, `markdown`, `plots` at the
end). See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import BenchContext, device_name, environment, slug, spread
from runtime.artifact import load_artifact
from runtime.corrector import pad_ids
from runtime.decoding import Decoded, aggressive_decode, greedy_decode, output_limits
from runtime.engines import CacheOps
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.pipeline import prepare
from runtime.text import edit_spans
from runtime.text.metrics import cer

PDF_EXTRACTORS = ("pdftotext", "pdftotext-layout", "pypdf", "pdfminer")
# Report order: everything, the PDF channel and each extractor, then the other channels.
GROUP_ORDER = ["all", "pdf", *(f"pdf/{e}" for e in PDF_EXTRACTORS)]
GROUP_ORDER += ["ocr", "legacy", "synthetic", "clean"]
DECODERS = ("greedy", "aggressive")
# Both decoders are autoregressive; the editor has none to compare.
NOT_APPLICABLE = "not applicable: the editor decodes in one pass"


# ---------------------------------------------------------------------------------- data


def leaf_group(row: dict) -> str:
    """The stratum of a test row: ``pdf/<extractor>`` for PDF rows, else its channel."""
    channel = row.get("channel") or "unknown"
    if channel == "pdf":
        return f"pdf/{row.get('extractor') or 'unknown'}"
    return channel


def report_groups(leaf: str) -> list[str]:
    """Every group a row with this stratum counts in: all, its channel, its extractor."""
    channel = leaf.split("/")[0]
    return ["all", channel] + ([leaf] if leaf != channel else [])


def sample_rows(path: Path, rows: int, seed: int) -> list[dict]:
    """Up to `rows` rows, stratified by `leaf_group`: every stratum gets an equal share (all of
    it when it is smaller, the remainder going to the larger ones); random within a stratum,
    deterministic by seed, in file order."""
    strata: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                row = json.loads(line)
                strata[leaf_group(row)].append((i, row))
    quota = dict.fromkeys(strata, 0)
    left = min(rows, sum(map(len, strata.values())))
    while left:
        open_ = [k for k in sorted(strata) if quota[k] < len(strata[k])]
        share = max(1, left // len(open_))
        for k in open_:
            take = min(share, len(strata[k]) - quota[k], left)
            quota[k] += take
            left -= take
            if not left:
                break
    rng = random.Random(seed)
    chosen = [pair for k in sorted(strata) for pair in rng.sample(strata[k], quota[k])]
    return [row for _, row in sorted(chosen, key=lambda pair: pair[0])]


@dataclass
class RowPiece:
    """One model input: a chunk of one test row, as the server would decode it."""

    row: int
    leaf: str
    text: str
    ids: list[int]
    out: dict[str, Decoded] = field(default_factory=dict)
    # Between the input and the greedy output: contiguous edited places, and the output
    # characters they put in (every output character not copied from the input).
    edits: tuple[int, int] | None = None
    target: list[int] | None = None  # the reference's ids, for --oracle


def make_batches(pieces: list[RowPiece], batch_size: int, seed: int) -> list[list[RowPiece]]:
    """Batches within one stratum each (so time is attributable), shortest first; the batches
    of all strata are then shuffled together (deterministically) so that any drift in the
    machine's speed spreads over every channel instead of landing on one."""
    by_leaf: dict[str, list[RowPiece]] = defaultdict(list)
    for piece in pieces:
        by_leaf[piece.leaf].append(piece)
    batches = []
    for leaf in sorted(by_leaf):
        members = sorted(by_leaf[leaf], key=lambda p: len(p.ids))
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def pad(batch: list[RowPiece], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    return pad_ids([piece.ids for piece in batch], pad_id)


# ---------------------------------------------------------------------------------- running


class OracleEngine(CacheOps):
    """An engine that runs the real decoder graph on every call (so each call costs what it
    costs) but answers with the reference target instead of the model's choice: greedy and
    aggressive decoding of a model that outputs exactly the reference. One row per batch; the
    caller sets ``target`` (the reference ids of the piece) before each decoder call."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.pad_id, self.bos_id, self.eos_id = engine.pad_id, engine.bos_id, engine.eos_id
        self.target: list[int] = []
        self.vocab_size: int | None = None

    def encode(self, src_ids, src_mask):
        return self.engine.encode(src_ids, src_mask)

    def decode(self, tokens, positions, src_mask, tgt_key_mask, cross, past):
        logits, present = self.engine.decode(tokens, positions, src_mask, tgt_key_mask, cross, past)
        # The token at position p is followed by output token p: the target's, then eos.
        answer = np.array([[*self.target, self.eos_id]], dtype=np.int64)
        chosen = answer[0, np.minimum(positions, answer.shape[1] - 1)]
        oracle = np.zeros_like(logits)
        np.put_along_axis(oracle, chosen[..., None], 10.0, -1)
        return oracle, present

    def empty_cache(self, cross):
        return self.engine.empty_cache(cross)

    def select_rows(self, cache, rows):
        return self.engine.select_rows(cache, rows)

    def compact(self, present, past_len, cached, kept):
        return self.engine.compact(present, past_len, cached, kept)


def _oracle_targets(row: dict, vocab, max_src_len: int) -> list[list[int]]:
    """The target's model pieces as ids when they pair one for one with the input's, else []."""
    sources = prepare(row["input"], vocab, max_src_len).model_inputs
    targets = prepare(row.get("target") or "", vocab, max_src_len).model_inputs
    if not sources or len(sources) != len(targets):
        return []
    return [vocab.encode(t) for t in targets]


def decode(engine, name: str, ids, mask, max_len, max_draft: int) -> list[Decoded]:
    if name == "greedy":
        return greedy_decode(engine, ids, mask, max_len)
    return aggressive_decode(engine, ids, mask, max_len, max_draft=max_draft)


def call_costs(engine, pieces, batch_size: int, max_draft: int, repeats: int) -> dict:
    """Seconds per decoder call by the number of tokens it takes (n = 1: a greedy step;
    n = max_draft + 1: a full draft), on `batch_size` copies of the median-length piece with
    half of it already cached: what a verified token costs against a generated one."""
    source = sorted(pieces, key=lambda p: len(p.ids))[len(pieces) // 2].ids
    src = np.array([source] * batch_size, dtype=np.int64)
    mask = np.ones_like(src, dtype=bool)
    cross = engine.encode(src, mask)
    prefix = [engine.bos_id, *source[: len(source) // 2]]
    cached = len(prefix)
    tokens = np.array([prefix] * batch_size, dtype=np.int64)
    positions = np.broadcast_to(np.arange(cached), tokens.shape).copy()
    empty = [(k[:, :, :0], v[:, :, :0]) for k, v in cross]
    _, past = engine.decode(tokens, positions, mask, np.ones_like(tokens, bool), cross, empty)
    sizes = sorted(
        {n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256) if n <= max_draft} | {max_draft + 1}
    )
    seconds = {}
    for n in sizes:
        new = np.resize(np.array(source, dtype=np.int64), (batch_size, n))
        pos = np.broadcast_to(cached + np.arange(n), new.shape).copy()
        key_mask = np.ones((batch_size, cached + n), dtype=bool)
        engine.decode(new, pos, mask, key_mask, cross, past)  # warm-up for this shape
        times = []
        for _ in range(max(5, 5 * repeats)):
            t0 = time.perf_counter()
            engine.decode(new, pos, mask, key_mask, cross, past)
            times.append(time.perf_counter() - t0)
        seconds[n] = statistics.median(times)
    return {
        "batch_size": batch_size,
        "src_len": len(source),
        "past_len": cached,
        "seconds": {str(n): t for n, t in seconds.items()},
        "relative": {str(n): t / seconds[1] for n, t in seconds.items()},
    }


def summarize(rows, batches, seconds, max_lens, vocab, include=None) -> dict:
    """Per report group: counts, passes, calls, times, speedup and the identity check, over the
    batches marked in `include` (default: all, and every sampled row counts, even one without
    any model piece)."""
    chosen = [b for b in range(len(batches)) if include is None or include[b]]
    pieces = [piece for b in chosen for piece in batches[b]]
    row_indices = range(len(rows)) if include is None else sorted({p.row for p in pieces})
    groups: dict[str, dict] = {}

    def group(name):
        return groups.setdefault(
            name,
            {
                "rows": 0,
                "pieces": 0,
                "input_chars": 0,
                "output_chars": 0,
                "edit_regions": 0,
                "rewritten_chars": 0,
                "passes": dict.fromkeys(DECODERS, 0),
                "calls": dict.fromkeys(DECODERS, 0),
                "hit_max_len": dict.fromkeys(DECODERS, 0),
                "differing_rows": 0,
                "_seconds": {d: [0.0] * len(seconds) for d in DECODERS},
            },
        )

    differing = {p.row for p in pieces if p.out["greedy"].ids != p.out["aggressive"].ids}
    for index in row_indices:
        for name in report_groups(leaf_group(rows[index])):
            group(name)["rows"] += 1
            group(name)["differing_rows"] += index in differing
    for piece in pieces:
        greedy = piece.out["greedy"]
        if piece.edits is None:
            spans = edit_spans(piece.text, vocab.decode(greedy.ids))
            piece.edits = (len(spans), sum(len(s.replacement) for s in spans))
        regions, rewritten = piece.edits
        for name in report_groups(piece.leaf):
            g = group(name)
            g["pieces"] += 1
            g["input_chars"] += len(piece.ids)
            g["output_chars"] += len(greedy.ids)
            g["edit_regions"] += regions
            g["rewritten_chars"] += rewritten
    for b in chosen:
        batch = batches[b]
        for name in report_groups(batch[0].leaf):
            g = group(name)
            for d in DECODERS:
                outs = [p.out[d] for p in batch]
                g["passes"][d] += sum(o.passes for o in outs)
                # Every live row takes part in every call, so a batch makes as many decoder
                # calls as its longest-running row.
                g["calls"][d] += max(o.passes for o in outs)
                g["hit_max_len"][d] += sum(
                    len(o.ids) >= limit for o, limit in zip(outs, max_lens[b], strict=True)
                )
                for r, per_batch in enumerate(seconds):
                    g["_seconds"][d][r] += per_batch[b][d]

    ordered = [g for g in GROUP_ORDER if g in groups]
    ordered += sorted(set(groups) - set(ordered))
    out = {}
    for name in ordered:
        g = groups[name]
        per_repeat = g.pop("_seconds")
        chars = g["output_chars"]
        g["passes_per_char"] = {d: g["passes"][d] / chars if chars else None for d in DECODERS}
        g["calls_per_char"] = {d: g["calls"][d] / chars if chars else None for d in DECODERS}
        g["seconds"] = {d: spread(per_repeat[d]) for d in DECODERS}
        ratios = [
            gr / ag if ag > 0 else float("nan")
            for gr, ag in zip(per_repeat["greedy"], per_repeat["aggressive"], strict=True)
        ]
        g["speedup"] = spread(ratios) if g["pieces"] else None
        g["pass_reduction"] = (
            g["passes"]["greedy"] / g["passes"]["aggressive"] if g["passes"]["aggressive"] else None
        )
        out[name] = g
    return out


def make_engine(args: argparse.Namespace, artifact) -> tuple[object, list[str]]:
    """The engine both decoders run on, and the execution providers it got."""
    if args.engine == "onnx":
        engine = OnnxEngine(artifact, args.variant, providers=[args.device], threads=args.threads)
        return engine, engine.providers
    # The torch path: the checkpoint's model under the same decoders (benchmarks may import
    # torch; runtime/ never does).
    import torch

    from training.torch_engine import TorchEngine

    if not args.run_dir:
        raise SystemExit("--engine torch needs --run-dir (a run directory or checkpoint)")
    torch.set_num_threads(args.threads)
    engine = TorchEngine.from_checkpoint(args.run_dir, "cuda" if args.device == "cuda" else "cpu")
    return engine, ["CUDAExecutionProvider" if args.device == "cuda" else "torch-cpu"]


def measure(args: argparse.Namespace) -> dict:
    """Decode the sampled rows with both decoders and return every number (writes nothing)."""
    artifact = load_artifact(Path(args.artifact))
    if artifact.model_name == "editor":
        raise UserError(f"{args.artifact}: {NOT_APPLICABLE}")
    engine, providers = make_engine(args, artifact)
    vocab = artifact.vocab
    max_src_len = artifact.limits["max_src_len"]
    max_tgt_len = artifact.limits["max_tgt_len"]
    device = device_name(providers)

    rows = sample_rows(Path(args.data) / "test.jsonl", args.rows, args.seed)
    sampled = len(rows)
    if args.oracle:
        if args.batch_size != 1:
            raise UserError("--oracle needs --batch-size 1")
        # Rows whose target cuts into as many model pieces as their input, piece for piece.
        rows = [row for row in rows if len(_oracle_targets(row, vocab, max_src_len)) > 0]
        engine = OracleEngine(engine)
    pieces = []
    for index, row in enumerate(rows):
        targets = _oracle_targets(row, vocab, max_src_len) if args.oracle else None
        for k, text in enumerate(prepare(row["input"], vocab, max_src_len).model_inputs):
            piece = RowPiece(index, leaf_group(row), text, vocab.encode(text))
            piece.target = targets[k] if targets else None
            pieces.append(piece)
    batches = make_batches(pieces, args.batch_size, args.seed)
    padded = [pad(batch, engine.pad_id) for batch in batches]
    # As the service does (runtime.corrector.Corrector._decode).
    max_lens = [output_limits(mask, max_tgt_len).tolist() for _, mask in padded]
    log = args.log
    max_n = artifact.limits.get("max_n")
    if args.max_draft is None:
        # As the service does (runtime.corrector): pending token + draft within max_n.
        args.max_draft = max(1, (max_n or 65) - 1)
    if max_n is not None and args.max_draft + 1 > max_n:
        # Pending token + draft: beyond what export verified (fine on CPU onnxruntime, whose
        # shapes are free; outside a TensorRT profile).
        log(
            f"note: --max-draft {args.max_draft} makes decoder calls of up to "
            f"{args.max_draft + 1} tokens; the artifact was verified up to max_n {max_n}"
        )

    log(
        f"{len(rows)} rows -> {len(pieces)} model pieces in {len(batches)} batches of "
        f"<= {args.batch_size}; {device}; {providers[0]}, {args.threads} threads"
    )
    env = environment()
    for b in range(min(args.warmup, len(batches))):
        for d in DECODERS:
            if args.oracle:
                engine.target = batches[b][0].target
            decode(engine, d, *padded[b], max_lens[b], args.max_draft)

    seconds: list[list[dict[str, float]]] = []  # [repeat][batch][decoder]
    for repeat in range(args.repeats):
        started = time.perf_counter()
        timings = []
        for b, batch in enumerate(batches):
            order = DECODERS if (b + repeat) % 2 == 0 else DECODERS[::-1]
            timing = {}
            for d in order:
                if args.oracle:
                    engine.target = batch[0].target
                t0 = time.perf_counter()
                result = decode(engine, d, *padded[b], max_lens[b], args.max_draft)
                timing[d] = time.perf_counter() - t0
                if repeat == 0:
                    for piece, decoded in zip(batch, result, strict=True):
                        piece.out[d] = decoded
            timings.append(timing)
        seconds.append(timings)
        total = {d: sum(t[d] for t in timings) for d in DECODERS}
        log(
            f"repeat {repeat + 1}/{args.repeats}: {time.perf_counter() - started:.1f} s "
            f"(greedy {total['greedy']:.2f} s, aggressive {total['aggressive']:.2f} s)"
        )

    costs = call_costs(engine, pieces, args.batch_size, args.max_draft, args.repeats)
    differing = []
    for piece in pieces:
        greedy, fast = piece.out["greedy"], piece.out["aggressive"]
        if greedy.ids != fast.ids:
            differing.append(
                {
                    "row": piece.row,  # by number, not quoted: rows are corpus text
                    "group": piece.leaf,
                    "cer_apart": cer(vocab.decode(fast.ids), vocab.decode(greedy.ids)),
                }
            )
    for diff in differing:
        log(f"DIFFERING row {diff['row']}: {json.dumps(diff, ensure_ascii=False)}")

    ended = [
        all(len(p.out["greedy"].ids) < limit for p, limit in zip(batch, max_lens[b], strict=True))
        for b, batch in enumerate(batches)
    ]
    results = {
        "benchmark": "decoding",
        "device": device,
        "device_slug": slug(device),
        "config": {
            "artifact": str(args.artifact),
            "artifact_checksum": artifact.manifest["checksum"][:16],
            "model": artifact.model_name,
            "data": str(args.data),
            "variant": args.variant,
            "engine": args.engine,
            "checkpoint": args.run_dir if args.engine == "torch" else None,
            "execution_provider": providers[0],
            "threads": args.threads,
            "batch_size": args.batch_size,
            "max_draft": args.max_draft,
            "oracle": args.oracle,
            "oracle_skipped_rows": sampled - len(rows),
            "rows_asked": args.rows,
            "repeats": args.repeats,
            "warmup_batches": args.warmup,
            "seed": args.seed,
            "max_src_len": max_src_len,
            "max_tgt_len": max_tgt_len,
        },
        "environment": {**env, "load_average_after": os.getloadavg()},
        "rows": len(rows),
        "pieces": len(pieces),
        "batches": len(batches),
        "identity": {"differing_rows": len({d["row"] for d in differing}), "differing": differing},
        "groups": summarize(rows, batches, seconds, max_lens, vocab),
        # Batches none of whose pieces ran to max_len under greedy (a looping model's output
        # is never the input, so those pieces are where aggressive decoding cannot win).
        "groups_ended": summarize(rows, batches, seconds, max_lens, vocab, ended),
        "call_costs": costs,
    }
    return results


def benchmark(args: argparse.Namespace) -> dict:
    """The standalone benchmark: `measure`, then write `<out>/<name>.json` and `.md`."""
    results = measure(args)
    out_dir = Path(args.out) if args.out else Path("benchmarks/results") / results["device_slug"]
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{args.name}.json", out_dir / f"{args.name}.md"
    json_path.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", "utf-8")
    md_path.write_text(report(results), "utf-8")
    results["paths"] = {"json": str(json_path), "markdown": str(md_path)}
    args.log(report(results))
    args.log(f"wrote {json_path} and {md_path}")
    return results


# ---------------------------------------------------------------------------------- report


def _range(s: dict | None, fmt: str = "{:.2f}") -> str:
    if not s:
        return "–"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def engine_label(config: dict) -> str:
    label = f"onnxruntime {config['variant']}"
    if config.get("engine") == "torch":
        label = f"torch on `{config.get('checkpoint')}`"
    if config.get("oracle"):
        label += (
            " **with oracle choices** (the decoder graph runs on every call, but the reference "
            f"target is taken in place of the model's choice; {config['oracle_skipped_rows']} "
            "sampled rows skipped whose target does not cut into the same model pieces)"
        )
    return label


def _ratio_table(groups: dict) -> list[str]:
    lines = [
        "| group | rows | output chars | passes/char greedy | passes/char aggressive "
        "| pass reduction | speedup | edit regions /100 chars | rewritten % | differing rows |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, g in groups.items():
        chars = g["output_chars"]
        regions = 100 * g["edit_regions"] / chars if chars else None
        rewritten = 100 * g["rewritten_chars"] / chars if chars else None
        lines.append(
            f"| {name} | {g['rows']} | {chars} | {_num(g['passes_per_char']['greedy'])} "
            f"| {_num(g['passes_per_char']['aggressive'])} "
            f"| {_num(g['pass_reduction'], '{:.1f}×')} "
            f"| {_range(g['speedup'], '{:.2f}×')} | {_num(regions, '{:.1f}')} "
            f"| {_num(rewritten, '{:.0f}%')} "
            f"| {g['differing_rows']} |"
        )
    return lines


def report(results: dict) -> str:
    c, env = results["config"], results["environment"]
    lines = [
        "# Decoding: greedy vs input-guided aggressive",
        "",
        f"Device: **{results['device']}** ({c['execution_provider']}, {c['threads']} threads). "
        f"Artifact `{c['artifact']}` ({c['model']}, {c['artifact_checksum']}); engine "
        f"{engine_label(c)}; {results['rows']} test rows → {results['pieces']} model pieces; batch "
        f"size {c['batch_size']}, max_draft {c['max_draft']}; {c['repeats']} interleaved "
        f"repeats after {c['warmup_batches']} warm-up batches; onnxruntime {env['onnxruntime']}; "
        f"load average {env['load_average_before'][0]:.2f} before, "
        f"{env['load_average_after'][0]:.2f} after; {env['date']}.",
        "",
        f"**Identity: {results['identity']['differing_rows']} of {results['rows']} rows differ** "
        "between aggressive and greedy output ids (must be 0).",
        "",
        "## Ratios",
        "",
        "Speedup = greedy seconds / aggressive seconds, per repeat: median (min–max). "
        "Passes = decoder calls a row took part in, per output character.",
        "",
        *_ratio_table(results["groups"]),
        "",
        "### Pieces whose greedy output ended before max_len",
        "",
        "The same, over the batches none of whose pieces ran to max_len under greedy: what "
        "remains when a looping model's runaway outputs (never a copy of the input, so never "
        "accepted from a draft) are set aside.",
        "",
        *_ratio_table(results["groups_ended"]),
    ]
    lines += [
        "",
        f"## Absolute times (this device only: {results['device']})",
        "",
        "Seconds for all pieces of the group, encoder pass included: median (min–max) over "
        "repeats. Calls = decoder invocations (a batch makes as many as its slowest row).",
        "",
        "| group | greedy s | aggressive s | greedy ms/char | aggressive ms/char "
        "| calls greedy | calls aggressive | rows at max_len (greedy) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, g in results["groups"].items():
        chars = g["output_chars"]
        ms = {d: 1000 * g["seconds"][d]["median"] / chars if chars else None for d in DECODERS}
        lines.append(
            f"| {name} | {_range(g['seconds']['greedy'])} | {_range(g['seconds']['aggressive'])} "
            f"| {_num(ms['greedy'])} | {_num(ms['aggressive'])} | {g['calls']['greedy']} "
            f"| {g['calls']['aggressive']} | {g['hit_max_len']['greedy']} |"
        )
    costs = results["call_costs"]
    lines += [
        "",
        "## Decoder call cost by tokens per call",
        "",
        f"One decoder call on {costs['batch_size']} row(s) of the median-length piece "
        f"(src {costs['src_len']}, {costs['past_len']} slots cached), median of repeated calls. "
        "A copy of L characters costs greedy about L calls of n = 1 and aggressive about "
        "L / max_draft calls of n = max_draft + 1, so the ceiling on the speedup is about "
        "max_draft / relative cost at n = max_draft + 1.",
        "",
        "| tokens per call (n) | ms per call | relative to n = 1 |",
        "|--:|--:|--:|",
    ]
    for n, t in costs["seconds"].items():
        lines.append(f"| {n} | {1000 * t:.3f} | {costs['relative'][n]:.2f}× |")
    if results["identity"]["differing"]:
        lines += ["", "## Differing rows", ""]
        for d in results["identity"]["differing"]:
            lines.append(f"- row {d['row']} ({d['group']}): `{json.dumps(d, ensure_ascii=False)}`")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", required=True, help="exported artifact directory")
    p.add_argument("--data", required=True, help="data directory with test.jsonl")
    p.add_argument("--rows", type=int, default=1000, help="test rows, stratified by channel")
    p.add_argument("--variant", default="fp32", help="graph variant (fp32, opt, int8, fp16)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="execution provider")
    p.add_argument(
        "--engine",
        default="onnx",
        choices=["onnx", "torch"],
        help="onnxruntime on the artifact, or torch on --run-dir (vocab and limits still come "
        "from the artifact)",
    )
    p.add_argument("--run-dir", default=None, help="run directory or checkpoint for --engine torch")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="take the reference target in place of the model's choices (the graph still runs "
        "on every call): the speedup for a model that outputs exactly the reference; batch 1",
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime intra-op")
    p.add_argument(
        "--max-draft",
        type=int,
        default=None,
        help="aggressive draft length (default: the artifact's max_n - 1, as served)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed passes over all batches")
    p.add_argument("--warmup", type=int, default=8, help="batches decoded untimed first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default benchmarks/results/<device-slug>")
    p.add_argument("--name", default="decoding", help="file stem of the .json and .md written")


def check_args(args: argparse.Namespace) -> None:
    for flag in ("rows", "batch_size", "threads", "max_draft", "repeats"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.decoding",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    add_arguments(p)
    args = p.parse_args(argv)
    check_args(args)
    return args


def main(argv: list[str] | None = None, log=print) -> dict:
    args = parse_args(argv)
    args.log = log
    return benchmark(args)


# ---------------------------------------------------------------------------------- the suite

# `kmcorrect bench --suite decoding`: onnxruntime fp32, batch 1, the service's draft length.
QUICK = {"rows": 200, "repeats": 1}
FULL = {"rows": 1000, "repeats": 3}


def run(ctx: BenchContext) -> dict:
    """The `decoding` suite's section: `measure` with the quick or full settings."""
    if load_artifact(ctx.artifact).model_name == "editor":
        return {"suite": "decoding", "not_run": NOT_APPLICABLE, "targets": []}
    settings = QUICK if ctx.quick else FULL
    argv = ["--artifact", str(ctx.artifact), "--data", str(ctx.data), "--device", ctx.device]
    argv += ["--threads", str(ctx.threads), "--seed", str(ctx.seed)]
    argv += ["--rows", str(settings["rows"]), "--repeats", str(settings["repeats"])]
    args = parse_args(argv)
    args.log = ctx.log
    section = measure(args)
    section["targets"] = targets(section)
    return section


def targets(results: dict) -> list[dict]:
    """The issue's decoding target (aggressive ≥ 5× greedy) and the identity it rests on."""
    everything, rows = results["groups"]["all"], results["rows"]
    differing = results["identity"]["differing_rows"]
    speedup = everything["speedup"]
    return [
        {
            "target": "aggressive ≥ 5× greedy",
            "measured": f"{_range(speedup, '{:.2f}×')} over {rows} rows "
            f"({engine_label(results['config'])}, batch {results['config']['batch_size']})",
            "met": bool(speedup and speedup["median"] >= 5),
        },
        {
            "target": "aggressive output identical to greedy",
            "measured": f"{differing} of {rows} rows differ",
            "met": differing == 0,
        },
    ]


def markdown(section: dict) -> str:
    return report(section)


def plots(section: dict, out_dir: str | Path) -> list[str]:
    """decoding.png: decoder passes per output character and the speedup, per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {name: g for name, g in section["groups"].items() if g["output_chars"]}
    x = np.arange(len(groups))
    fig, (passes, speed) = plt.subplots(1, 2, figsize=(12, 4))
    for k, d in enumerate(DECODERS):
        values = [g["passes_per_char"][d] for g in groups.values()]
        passes.bar(x + (k - 0.5) * 0.4, values, 0.4, label=d)
    passes.set_ylabel("decoder passes per output char")
    passes.legend()
    stats = [g["speedup"] for g in groups.values()]
    median = np.array([s["median"] for s in stats])
    error = [median - [s["min"] for s in stats], [s["max"] for s in stats] - median]
    speed.bar(x, median, 0.6, yerr=error, capsize=3)
    speed.axhline(1.0, color="grey", linewidth=1)
    speed.set_ylabel("speedup (greedy s / aggressive s)")
    for ax in (passes, speed):
        ax.set_xticks(x, list(groups), rotation=30, ha="right")
    fig.suptitle(f"Decoding: greedy vs aggressive — {section['device']}")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "decoding.png", dpi=110)
    plt.close(fig)
    return ["decoding.png"]


if __name__ == "__main__":
    main(sys.argv[1:])
