"""Export verification: the artifact must compute what the checkpoint computes.

On a few hundred inputs of mixed lengths (test rows, or strings generated from the vocabulary),
batched by length:

* graph parity: every output of every graph (memory, cross K/V, logits, present K/V,
  sub_logits) from onnxruntime against the torch wrapper that was traced, on identical inputs.
  The decoder reads ``[bos] + source`` (the draft aggressive decoding verifies) in calls of up
  to ``max_n`` tokens over a growing cache: past_len 0 and > 0, n = 1 and n > 1, at lengths
  never seen while tracing;
* greedy decoding: ``runtime.decoding.greedy_decode`` on the artifact against the same
  decoder on the checkpoint's `TorchEngine`, row by row; for the editor, its one pass
  collapsed by ``runtime.editing`` (ungated) on both sides;
* for int8 and fp16, the CER change their greedy outputs cause: against the references when
  the inputs come with them (CER of the variant minus CER of fp32), else against the fp32
  outputs taken as the reference.

fp32 and opt are held to ``max_logit_diff`` (on every float output) and identical output
on every row; int8 and fp16 to ``max_cer_change``. A variant that onnxruntime cannot run here
(fp16 on some CPU builds) is recorded as not verified, with the reason, instead of failing
the export.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from torch import nn

from export.config import ExportConfig
from runtime.artifact import Artifact
from runtime.decoding import greedy_decode
from runtime.editing import edit_texts
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.text import ScoreBoard, Vocab, normalize
from training.data.rows import read_rows
from training.models import Editor
from training.torch_engine import TorchEngine

EXACT = ("fp32", "opt")  # held to max_logit_diff and identical greedy output
CANNOT_RUN = (ort_state.Fail, ort_state.NotImplemented, ort_state.InvalidGraph)
GENERATED_HINT = " (vs fp32 output on generated strings: --data with real test rows is fairer)"


@dataclass
class Probe:
    """Verification inputs: source ids per row, their text, and references if known."""

    source: str
    ids: list[list[int]]
    texts: list[str]
    references: list[str] | None


@dataclass
class Batch:
    rows: list[int]  # indices into the probe
    ids: np.ndarray  # [b, src] int64, right-padded
    mask: np.ndarray  # [b, src] bool


def make_probe(vocab: Vocab, config: ExportConfig, data: Path | None, seed: int = 0) -> Probe:
    """Rows of ``data`` (a split file, or a folder with test.jsonl), else generated strings of
    lengths 1 .. max_src_len."""
    if data is not None:
        path = data / "test.jsonl" if data.is_dir() else data
        if not path.is_file():
            raise UserError(f"{path}: no such file (--data takes a folder with test.jsonl)")
        try:
            rows = list(itertools.islice(read_rows(path), config.verify_rows))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        pairs = [
            (normalize(r["input"])[: config.max_src_len], normalize(r["target"])) for r in rows
        ]
        pairs = [(text, ref) for text, ref in pairs if text]
        if not pairs:
            raise UserError(f"{path}: no non-empty inputs to verify the export on")
        texts, references = (list(column) for column in zip(*pairs, strict=True))
        return Probe(str(path), [vocab.encode(t) for t in texts], texts, references)
    rng = random.Random(seed)
    n, longest = config.verify_rows, config.max_src_len
    lengths = [1 + i * (longest - 1) // max(n - 1, 1) for i in range(n)]
    texts = ["".join(rng.choices(vocab.chars, k=length)) for length in lengths]
    source = f"{n} strings of vocabulary characters, lengths 1..{longest} (seed {seed})"
    return Probe(source, [vocab.encode(t) for t in texts], texts, None)


def verify(
    model: nn.Module,
    wrappers: dict[str, nn.Module],
    artifact: Artifact,
    probe: Probe,
    config: ExportConfig,
) -> dict:
    """The verification report; ``report["failures"]`` names every bound not met (empty: the
    export passed)."""
    reference, runs, skipped = _measure(model, wrappers, artifact, probe, config)
    lengths = [len(ids) for ids in probe.ids]
    report = {
        "inputs": probe.source,
        "rows": len(probe.ids),
        "src_len": {"min": min(lengths), "max": max(lengths), "distinct": len(set(lengths))},
        "max_len": config.max_tgt_len,
        "bounds": {
            "max_logit_diff": config.max_logit_diff,
            "max_cer_change": config.max_cer_change,
        },
        "variants": {},
        "failures": [],
    }
    texts = {v: [artifact.vocab.decode(ids) for ids in run.outputs] for v, run in runs.items()}
    for variant in artifact.variants:
        if variant in skipped:
            report["variants"][variant] = {"verified": False, "reason": skipped[variant]}
            continue
        run = runs[variant]
        identical = sum(a == b for a, b in zip(run.outputs, reference, strict=True))
        result = {
            "verified": True,
            "max_abs_diff": run.diffs,
            "greedy_identical": identical,
            "seconds": round(run.seconds, 2),
        }
        if probe.references is not None:
            result["cer"] = _cer(probe.texts, texts[variant], probe.references)
        if variant in EXACT:
            worst = max(run.diffs.values())
            if worst > config.max_logit_diff:
                report["failures"].append(
                    f"{variant}: max |difference| {worst:.3g} > {config.max_logit_diff:g} "
                    f"(per graph: {run.diffs})"
                )
            if identical != len(reference):
                report["failures"].append(
                    f"{variant}: greedy output differs from torch on "
                    f"{len(reference) - identical} of {len(reference)} rows"
                )
        else:
            result["cer_vs_fp32"] = _cer(probe.texts, texts[variant], texts["fp32"])
            if probe.references is None:
                result["cer_change"] = result["cer_vs_fp32"]
            else:
                fp32_cer = _cer(probe.texts, texts["fp32"], probe.references)
                result["cer_change"] = result["cer"] - fp32_cer
            if result["cer_change"] > config.max_cer_change:
                hint = "" if probe.references is not None else GENERATED_HINT
                report["failures"].append(
                    f"{variant}: CER change {result['cer_change']:.4f} > "
                    f"{config.max_cer_change:g}{hint}"
                )
        report["variants"][variant] = result
    return report


@dataclass
class VariantRun:
    """What one variant computed: the worst |difference| per graph, and greedy outputs."""

    engine: OnnxEngine
    outputs: list
    diffs: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _measure(
    model: nn.Module,
    wrappers: dict[str, nn.Module],
    artifact: Artifact,
    probe: Probe,
    config: ExportConfig,
) -> tuple[list, dict[str, VariantRun], dict[str, str]]:
    """The checkpoint's outputs (in torch), each variant's run, and why the variants that
    cannot run here did not."""
    runs, skipped = {}, {}
    for variant in artifact.variants:
        try:
            runs[variant] = VariantRun(OnnxEngine(artifact, variant), [None] * len(probe.ids))
        except CANNOT_RUN as exc:
            if variant in EXACT:
                raise
            skipped[variant] = _reason(exc)
    reference, torch_engine = [None] * len(probe.ids), TorchEngine(model)
    for batch in _batches(probe.ids, config.verify_batch):
        cases = _cases(wrappers, batch, config)
        _place(reference, batch, _outputs(model, torch_engine, batch, config))
        for variant, run in list(runs.items()):
            started = time.perf_counter()
            try:
                for graph, feeds, want in cases:
                    got = run.engine.sessions[graph].run(None, feeds)
                    worst = max(
                        float(np.abs(g - w).max())
                        for g, w in zip(got, want, strict=True)
                        if w.dtype.kind == "f"
                    )
                    run.diffs[graph] = max(run.diffs.get(graph, 0.0), worst)
                decoded = _outputs(model, run.engine, batch, config)
            except CANNOT_RUN as exc:
                if variant in EXACT:
                    raise
                skipped[variant] = _reason(exc)
                del runs[variant]
                continue
            _place(run.outputs, batch, decoded)
            run.seconds += time.perf_counter() - started
    return reference, runs, skipped


def _outputs(model: nn.Module, engine, batch: Batch, config: ExportConfig) -> list[list[int]]:
    """Output ids from ``engine`` (the checkpoint's `TorchEngine` or the artifact's), decoded
    as serving decodes them: the editor's one pass through the runtime's collapse (ungated),
    or greedy decoding. One decoder for both sides, so parity compares engines only."""
    if isinstance(model, Editor):
        labels, probs = engine.edit(batch.ids, batch.mask)
        c = model.config
        edited = edit_texts(
            labels, probs, batch.ids, batch.mask, upsample=c.upsample, blank_id=c.blank_id
        )
        return [e.ids for e in edited]
    return [d.ids for d in greedy_decode(engine, batch.ids, batch.mask, config.max_tgt_len)]


def _cases(wrappers: dict[str, nn.Module], batch: Batch, config: ExportConfig) -> list:
    """``(graph, feeds, torch outputs)`` for one batch: the editor, encoder and mapper on the
    sources, the decoder on ``[bos] + source`` in calls of up to ``max_n`` tokens."""
    ids, mask = torch.from_numpy(batch.ids), torch.from_numpy(batch.mask)
    source_feeds = {"src_ids": batch.ids, "src_mask": batch.mask}
    cases = []
    with torch.no_grad():
        if "editor" in wrappers:
            return [("editor", source_feeds, _numpy(wrappers["editor"](ids, mask)))]
        memory, *cross = wrappers["encoder"](ids, mask)
        cases.append(("encoder", source_feeds, _numpy([memory, *cross])))
        if "mapper" in wrappers:
            cases.append(("mapper", source_feeds, _numpy([wrappers["mapper"](ids, mask)])))
        decoder = wrappers["decoder"]
        b = ids.shape[0]
        draft = torch.cat([torch.full((b, 1), decoder.model.config.bos_id), ids], 1)
        draft_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool), mask], 1)
        draft, draft_mask = draft[:, : config.max_tgt_len], draft_mask[:, : config.max_tgt_len]
        past = [t[:, :, :0] for t in cross]
        for start in range(0, draft.shape[1], config.max_n):
            tokens = draft[:, start : start + config.max_n]
            n = tokens.shape[1]
            positions = torch.arange(start, start + n).expand(b, n).contiguous()
            args = (tokens, positions, mask, draft_mask[:, : start + n], *cross, *past)
            logits, *past = decoder(*args)
            feeds = dict(zip(decoder.input_names, _numpy(args), strict=True))
            cases.append(("decoder", feeds, _numpy([logits, *past])))
    return cases


def _batches(rows: list[list[int]], size: int) -> list[Batch]:
    """Rows sorted by length, cut into right-padded batches of ``size`` (pad id 0)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    batches = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        lengths = np.array([len(rows[i]) for i in chunk])
        ids = np.zeros((len(chunk), lengths.max()), dtype=np.int64)
        for j, i in enumerate(chunk):
            ids[j, : lengths[j]] = rows[i]
        batches.append(Batch(chunk, ids, np.arange(lengths.max()) < lengths[:, None]))
    return batches


def _place(out: list, batch: Batch, values: list) -> None:
    for i, value in zip(batch.rows, values, strict=True):
        out[i] = value


def _numpy(tensors) -> list[np.ndarray]:
    return [t.numpy() for t in tensors]


def _cer(inputs: list[str], predictions: list[str], references: list[str]) -> float:
    board = ScoreBoard()
    for row in zip(inputs, predictions, references, strict=True):
        board.add(*row)
    return board.cer_after


def _reason(exc: Exception) -> str:
    return f"not verified on this machine: {type(exc).__name__}: {exc}"[:500]
