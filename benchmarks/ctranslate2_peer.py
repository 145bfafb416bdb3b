"""Peer: CTranslate2 running the CharTransformer's own weights vs our onnxruntime engine on them.

    convert(checkpoint, out_dir)      our safetensors checkpoint -> a CTranslate2 model directory
    run(ctx) / markdown / plots       the `ctranslate2` suite of `kmcorrect bench`

The converter writes the weights through `ctranslate2.specs` (TransformerSpec), layer for
layer; nothing is approximated, so CTranslate2's greedy output should be ours (see
`model_spec` for how each part of our model maps). The suite decodes the same model pieces
(test rows through `runtime.pipeline.prepare`, as the server does) with CTranslate2's greedy
`translate_batch(beam_size=1)` and with our greedy and aggressive decoders on the artifact,
interleaved, after warm-up, repeated, at batch 1 and a larger batch, on the same number of
threads; and it compares every output with ours. See benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BenchContext, device_name, environment, settle, slug, spread
from benchmarks.decoding import RowPiece, leaf_group, make_batches, pad, sample_rows
from runtime.artifact import Artifact, load_artifact
from runtime.decoding import Decoded, aggressive_decode, greedy_decode
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.pipeline import prepare
from runtime.text.metrics import cer
from runtime.text.vocab import SPECIALS

NAME = "ctranslate2"
NOT_RUN = (
    "not run: needs a char_transformer run "
    "(make train MODEL=char_transformer; then --char-transformer RUN_DIR, or --artifact of "
    "its export)"
)
# Converted models (and artifacts exported for a --run-dir that has none) are kept here, by the
# checkpoint's sha256, so that a second bench run reuses them.
CACHE = Path(tempfile.gettempdir()) / "khmer-correct" / "ctranslate2"
CONVERTER_VERSION = 1  # part of the cache key: bump it when the mapping below changes
CONTENDERS = ("ctranslate2", "ours_greedy", "ours_aggressive")
LABELS = {
    "ctranslate2": "CTranslate2 greedy",
    "ours_greedy": "ours greedy",
    "ours_aggressive": "ours aggressive",
}
IDENTICAL_SHARE = 0.99  # the target for rows whose CTranslate2 output is ours


# ---------------------------------------------------------------------------------- conversion


def model_spec(model, vocab, max_positions: int):
    """Our CharTransformer as a CTranslate2 TransformerSpec holding its weights.

    How the parts map (training/models/layers.py on the left):
    * pre-norm layers with RMSNorm (weight only, eps 1e-6) -> ``pre_norm=True, rms_norm=True``
      and ``layer_norm_epsilon``; the final norms of both stacks -> the stacks' ``layer_norm``;
    * FeedForward ``Linear -> exact GELU -> Linear`` (with biases) -> ``Activation.GELU`` (erf);
    * separate q/k/v projections without bias -> the fused ``linear[0]`` (q|k|v) of self-
      attention, ``linear[0]`` (q) and fused ``linear[1]`` (k|v) of cross-attention, no bias;
      the 1/sqrt(head_dim) scale is CTranslate2's default;
    * separate source (``src_embed``) and target (``embed``) tables, not scaled by
      sqrt(d_model) -> ``scale_embeddings = False``; output head (with bias, untied) ->
      ``projection``;
    * sinusoidal positions ``[sin | cos]`` with frequencies 10000^(-2i/d): CTranslate2's own
      sinusoids use 10000^(-i/(d/2 - 1)), so ours are written as a position table of
      ``max_positions`` rows, computed by our module (exact, but bounded: CTranslate2 refuses
      positions past the table, ours have no limit);
    * vocabulary: our ids in order, specials named as ours (<pad> <bos> <eos> <unk>); the
      decoder starts from <bos> at position 0, the source gets neither bos nor eos.
    """
    import torch
    from ctranslate2.specs import common_spec, transformer_spec

    from training.models.layers import RMSNorm

    c = model.config
    norms = {m.eps for m in model.modules() if isinstance(m, RMSNorm)}
    if len(norms) != 1:
        raise ValueError(f"expected one RMSNorm epsilon throughout, found {sorted(norms)}")
    layers = [*model.encoder.layers, *model.decoder.layers]
    attentions = [m for layer in layers for m in layer.modules() if hasattr(m, "wq")]
    if any(lin.bias is not None for a in attentions for lin in (a.wq, a.wk, a.wv, a.wo)):
        raise ValueError("attention projections with bias: the converter maps bias-free ones")

    def array(tensor) -> np.ndarray:
        return tensor.detach().to(torch.float32).cpu().numpy()

    def linear(spec, *modules) -> None:  # several modules: fused along the output axis
        spec.weight = np.concatenate([array(m.weight) for m in modules])
        if modules[0].bias is not None:
            spec.bias = np.concatenate([array(m.bias) for m in modules])

    def norm(spec, module) -> None:
        spec.gamma = array(module.weight)

    def ffn(spec, norm_module, module) -> None:
        norm(spec.layer_norm, norm_module)
        linear(spec.linear_0, module.up)
        linear(spec.linear_1, module.down)

    def self_attention(spec, norm_module, attn) -> None:
        norm(spec.layer_norm, norm_module)
        linear(spec.linear[0], attn.wq, attn.wk, attn.wv)
        linear(spec.linear[1], attn.wo)

    def cross_attention(spec, norm_module, attn) -> None:
        norm(spec.layer_norm, norm_module)
        linear(spec.linear[0], attn.wq)
        linear(spec.linear[1], attn.wk, attn.wv)
        linear(spec.linear[2], attn.wo)

    gelu = common_spec.Activation.GELU
    encoder = transformer_spec.TransformerEncoderSpec(
        c.n_enc_layers, c.n_heads, pre_norm=True, activation=gelu, rms_norm=True
    )
    decoder = transformer_spec.TransformerDecoderSpec(
        c.n_dec_layers, c.n_heads, pre_norm=True, activation=gelu, rms_norm=True
    )
    with torch.no_grad():
        table = array(model.positions(torch.arange(max_positions)[None])[0])

    encoder.embeddings[0].weight = array(model.src_embed.weight)
    encoder.scale_embeddings = False
    encoder.position_encodings.encodings = table
    norm(encoder.layer_norm, model.encoder.norm)
    for spec, layer in zip(encoder.layer, model.encoder.layers, strict=True):
        self_attention(spec.self_attention, layer.attn_norm, layer.attn)
        ffn(spec.ffn, layer.ffn_norm, layer.ffn)

    decoder.embeddings.weight = array(model.embed.weight)
    decoder.scale_embeddings = False
    decoder.position_encodings.encodings = table
    norm(decoder.layer_norm, model.decoder.norm)
    linear(decoder.projection, model.head)
    for spec, layer in zip(decoder.layer, model.decoder.layers, strict=True):
        self_attention(spec.self_attention, layer.self_norm, layer.self_attn)
        cross_attention(spec.attention, layer.cross_norm, layer.cross_attn)
        ffn(spec.ffn, layer.ffn_norm, layer.ffn)

    spec = transformer_spec.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = norms.pop()
    _, bos, eos, unk = SPECIALS
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = unk, bos, eos
    spec.config.decoder_start_token = bos
    tokens = tokens_of(vocab)
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    return spec


def tokens_of(vocab) -> list[str]:
    """Our vocabulary as CTranslate2 tokens: token i is id i (specials, then the characters)."""
    return [*SPECIALS, *vocab.chars]


def convert(checkpoint: str | Path, out_dir: str | Path, max_positions: int = 1024) -> Path:
    """Write the CharTransformer checkpoint (run directory or checkpoint file) as a CTranslate2
    model directory, float32; returns `out_dir`."""
    import ctranslate2

    from training import checkpoint as checkpoints

    ckpt = checkpoints.load(Path(checkpoint))
    if ckpt.model_name != "char_transformer":
        raise UserError(f"{checkpoint}: a {ckpt.model_name} checkpoint, not a char_transformer")
    spec = model_spec(ckpt.model, ckpt.vocab, max_positions)

    class SpecConverter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    SpecConverter().convert(str(out_dir), force=True)
    return Path(out_dir)


def _record(path) -> tuple[Path, dict] | None:
    """A checkpoint's JSON path and content (run directory or checkpoint file), or None."""
    from training.checkpoint import resolve

    if not path:
        return None
    try:
        info = resolve(Path(path))
        return info, json.loads(info.read_text(encoding="utf-8"))
    except (UserError, OSError, ValueError):
        return None


def _sources(ctx: BenchContext) -> tuple[Path, dict, Artifact] | str:
    """The char_transformer checkpoint and an artifact of the same weights, or why not: the
    artifact's own checkpoint (ctx.model or the path its manifest names), else the
    char_transformer of ctx.model or ctx.char_transformer (--char-transformer) exported here."""
    artifact = load_artifact(ctx.artifact)
    if artifact.model_name == "char_transformer":
        wanted = artifact.manifest["checkpoint"].get("sha256")
        for candidate in (ctx.model, artifact.manifest["checkpoint"].get("path")):
            record = _record(candidate)
            if record and record[1].get("sha256") == wanted:
                return *record, artifact
    for candidate in (ctx.model, ctx.char_transformer):
        record = _record(candidate)
        if record and record[1].get("model") == "char_transformer":
            return *record, _exported(*record, ctx)
    if artifact.model_name == "char_transformer":
        return (
            f"not run: the checkpoint of {ctx.artifact} "
            f"({artifact.manifest['checkpoint'].get('path')}) is not here; pass it as --run-dir"
        )
    return NOT_RUN


def _exported(info: Path, meta: dict, ctx: BenchContext) -> Artifact:
    """An fp32 + opt artifact of the checkpoint, exported (and verified) once into the cache."""
    from dataclasses import replace

    from export.build import export_artifact
    from export.config import ExportConfig

    out = CACHE / f"artifact-{meta['sha256'][:16]}"
    try:
        artifact = load_artifact(out)
        if artifact.manifest["checkpoint"].get("sha256") == meta["sha256"]:
            return artifact
    except UserError:
        pass
    ctx.log(f"ctranslate2: exporting {info} to {out} (our engine needs an artifact of it)")
    # Fewer verification rows than `kmcorrect export`: the suite compares outputs anyway.
    config = replace(ExportConfig(), variants=("fp32", "opt"), verify_rows=50)
    return export_artifact(info, out, config, data=Path(ctx.data), force=True, log=ctx.log)


def _converted(info: Path, sha256: str, max_positions: int, log) -> tuple[Path, dict]:
    """The CTranslate2 model of the checkpoint, converted once into the cache."""
    out = CACHE / f"{sha256[:16]}-v{CONVERTER_VERSION}-p{max_positions}"
    if (out / "model.bin").is_file():
        return out, {"path": str(out), "cached": True, "seconds": None}
    started = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=CACHE))
    convert(info, staging, max_positions)
    try:
        os.replace(staging, out)  # whole or not at all
    except OSError:  # another run converted it meanwhile
        shutil.rmtree(staging)
    seconds = time.perf_counter() - started
    log(f"ctranslate2: converted {info} in {seconds:.1f} s -> {out}")
    return out, {"path": str(out), "cached": False, "seconds": seconds}


# ---------------------------------------------------------------------------------- running


def greedy(translator, sources: list[list[str]], max_len: int, min_len: int = 0):
    """CTranslate2's greedy search on a batch of token lists, as our greedy decoder runs: at
    most `max_len` output tokens; by default min_decoding_length=0, since ours may answer eos
    first (CTranslate2's default is 1); max_input_length=0, no truncation (the pieces are within
    max_src_len already). Each result's `hypotheses[0]` is the output's tokens."""
    return translator.translate_batch(
        sources,
        beam_size=1,
        max_decoding_length=max_len,
        min_decoding_length=min_len,
        max_input_length=0,
    )


class Contenders:
    """The three decoders over one set of batches, their inputs prepared before any timing:
    padded ids for ours, token strings for CTranslate2, and the service's max_len per batch."""

    def __init__(self, translator, engine, vocab, batches, max_tgt_len: int, max_draft: int):
        self.translator, self.engine, self.max_draft = translator, engine, max_draft
        tokens = tokens_of(vocab)
        self.index = {token: i for i, token in enumerate(tokens)}
        self.padded = [pad(batch, engine.pad_id) for batch in batches]
        self.sources = [[[tokens[t] for t in p.ids] for p in batch] for batch in batches]
        # As the service does (runtime.corrector.Corrector._decode).
        self.max_lens = [min(max_tgt_len, int(1.5 * ids.shape[1]) + 10) for ids, _ in self.padded]

    def __call__(self, name: str, b: int):
        if name == "ctranslate2":
            return greedy(self.translator, self.sources[b], self.max_lens[b])
        ids, mask = self.padded[b]
        if name == "ours_greedy":
            return greedy_decode(self.engine, ids, mask, self.max_lens[b])
        return aggressive_decode(self.engine, ids, mask, self.max_lens[b], max_draft=self.max_draft)

    def decoded(self, name: str, raw) -> list[Decoded]:
        if name == "ctranslate2":
            return [Decoded([self.index[t] for t in r.hypotheses[0]], []) for r in raw]
        return raw


def _time(contenders: Contenders, batches, batch_size: int, repeats: int, warmup: int, log):
    """Seconds per contender, repeat and batch; each batch is decoded by every contender back
    to back, in an order that rotates from batch to batch and repeat to repeat. The outputs of
    the first repeat are kept on the pieces as ``<contender>/b<batch_size>``."""
    for b in range(min(warmup, len(batches))):
        for name in CONTENDERS:
            contenders(name, b)
    seconds: dict[str, list[list[float]]] = {name: [] for name in CONTENDERS}
    for repeat in range(repeats):
        times = {name: [0.0] * len(batches) for name in CONTENDERS}
        for b, batch in enumerate(batches):
            shift = (b + repeat) % len(CONTENDERS)
            for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
                settle()
                t0 = time.perf_counter()
                raw = contenders(name, b)
                times[name][b] = time.perf_counter() - t0
                if repeat == 0:
                    for piece, out in zip(batch, contenders.decoded(name, raw), strict=True):
                        piece.out[f"{name}/b{batch_size}"] = out
        for name in CONTENDERS:
            seconds[name].append(times[name])
        totals = ", ".join(f"{LABELS[n]} {sum(times[n]):.2f} s" for n in CONTENDERS)
        log(f"ctranslate2: batch {batch_size}, repeat {repeat + 1}/{repeats}: {totals}")
    return seconds


def _speed(seconds: dict[str, list[list[float]]], chars: int) -> dict:
    """Per contender: total seconds, chars/s, latency per call (p50, p90) and speed relative
    to CTranslate2, each a median over repeats with its min–max (ratios within a repeat)."""
    base = [sum(r) for r in seconds["ctranslate2"]]
    out = {}
    for name, per_repeat in seconds.items():
        totals = [sum(r) for r in per_repeat]
        out[name] = {
            "seconds": spread(totals),
            "chars_per_s": spread([chars / t for t in totals]),
            "latency_ms": {
                q: spread([1000 * float(np.percentile(r, int(q[1:]))) for r in per_repeat])
                for q in ("p50", "p90")
            },
            "vs_ctranslate2": spread([b / t for b, t in zip(base, totals, strict=True)]),
        }
    return out


def _first_difference(a: list[int], b: list[int]) -> int:
    same = (x == y for x, y in zip(a, b, strict=False))
    return next((i for i, equal in enumerate(same) if not equal), min(len(a), len(b)))


def _lead(engine, source: list[int], prefix: list[int], ours: int, theirs: int) -> float:
    """Our logit for our token minus our logit for CTranslate2's where the outputs part: a
    lead near 0 is a near-tie that float rounding may tip either way."""
    src = np.array([source], dtype=np.int64)
    mask = np.ones_like(src, dtype=bool)
    cross = engine.encode(src, mask)
    tokens = np.array([[engine.bos_id, *prefix]], dtype=np.int64)
    positions = np.arange(tokens.shape[1], dtype=np.int64)[None]
    key_mask = np.ones_like(tokens, dtype=bool)
    logits, _ = engine.decode(tokens, positions, mask, key_mask, cross, engine.empty_cache(cross))
    return float(logits[0, -1, ours] - logits[0, -1, theirs])


def _identity(pieces: list[RowPiece], batch_size: int, vocab, engine, examples: int = 8) -> dict:
    """CTranslate2's output ids vs our greedy ones, piece by piece; a row is identical when all
    its pieces are. Our aggressive vs greedy is counted too (it must be 0)."""

    def out(piece: RowPiece, name: str) -> list[int]:
        return piece.out[f"{name}/b{batch_size}"].ids

    differing = [p for p in pieces if out(p, "ctranslate2") != out(p, "ours_greedy")]
    rows = {p.row for p in pieces}
    differing_rows = {p.row for p in differing}
    listed = []
    for p in differing[:examples]:
        ours, theirs = out(p, "ours_greedy"), out(p, "ctranslate2")
        at = _first_difference(ours, theirs)
        token = [t[at] if at < len(t) else engine.eos_id for t in (ours, theirs)]
        listed.append(
            {
                "row": p.row,  # by number, not quoted: reports are committed, rows are corpus text
                "group": p.leaf,
                "cer_apart": cer(vocab.decode(theirs), vocab.decode(ours)),
                "first_difference": at,
                "our_logit_lead": _lead(engine, p.ids, ours[:at], *token),
            }
        )
    return {
        "rows": len(rows),
        "identical_rows": len(rows) - len(differing_rows),
        "share": (len(rows) - len(differing_rows)) / len(rows) if rows else None,
        "pieces": len(pieces),
        "identical_pieces": len(pieces) - len(differing),
        "aggressive_differs_from_greedy": sum(
            out(p, "ours_aggressive") != out(p, "ours_greedy") for p in pieces
        ),
        "examples": listed,
    }


def _targets(identity: dict, speed: dict) -> list[dict]:
    shares = [i["share"] for i in identity.values() if i["share"] is not None]
    rows = ", ".join(
        f"batch {b}: {i['identical_rows']}/{i['rows']} rows ({100 * (i['share'] or 0):.1f}%)"
        for b, i in identity.items()
    )
    targets = [
        {
            "target": f"CTranslate2 greedy outputs identical to ours (≥ {IDENTICAL_SHARE:.0%} "
            "of rows)",
            "measured": rows,
            "met": bool(shares) and min(shares) >= IDENTICAL_SHARE,
        }
    ]
    for b, s in speed.items():
        best = max(CONTENDERS[1:], key=lambda n: s[n]["chars_per_s"]["median"])
        ours, theirs = s[best]["chars_per_s"]["median"], s["ctranslate2"]["chars_per_s"]["median"]
        targets.append(
            {
                "target": f"ours ≥ CTranslate2 chars/s at batch {b}",
                "measured": f"{LABELS[best]} {ours:.0f} vs CTranslate2 {theirs:.0f} chars/s "
                f"({s[best]['vs_ctranslate2']['median']:.2f}×)",
                "met": ours >= theirs,
            }
        )
    return targets


def run(
    ctx: BenchContext,
    *,
    rows: int | None = None,
    repeats: int | None = None,
    batch_sizes: tuple[int, ...] | None = None,
    warmup: int = 4,
) -> dict:
    """The suite's section; the keywords override the quick/full defaults (tests)."""
    import ctranslate2

    rows = rows or (40 if ctx.quick else 500)
    repeats = repeats or (3 if ctx.quick else 5)
    batch_sizes = batch_sizes or ((1, 16) if ctx.quick else (1, 32))
    sources = _sources(ctx)
    if isinstance(sources, str):
        ctx.log(f"ctranslate2: {sources}")
        return {"suite": NAME, "not_run": sources, "targets": []}
    info, meta, artifact = sources

    vocab, limits = artifact.vocab, artifact.limits
    max_src_len, max_tgt_len = limits["max_src_len"], limits["max_tgt_len"]
    max_positions = max(1024, max_src_len, max_tgt_len + 1)
    model_dir, conversion = _converted(info, meta["sha256"], max_positions, ctx.log)
    cuda = ctx.device == "cuda"
    variant = "opt" if "opt" in artifact.variants and not cuda else "fp32"
    engine = OnnxEngine(artifact, variant, ["cuda"] if cuda else None, threads=ctx.threads)
    translator = ctranslate2.Translator(
        str(model_dir),
        device="cuda" if cuda else "cpu",
        compute_type="float32",
        inter_threads=1,
        intra_threads=ctx.threads,
    )
    # As the service does (runtime.corrector): pending token + draft within max_n.
    max_draft = max(1, (limits.get("max_n") or 65) - 1)

    sampled = sample_rows(Path(ctx.data) / "test.jsonl", rows, ctx.seed)
    pieces = [
        RowPiece(index, leaf_group(row), text, vocab.encode(text))
        for index, row in enumerate(sampled)
        for text in prepare(row["input"], vocab, max_src_len).model_inputs
    ]
    if not pieces:
        raise UserError(f"{ctx.data}/test.jsonl: no row has text for the model")
    chars = sum(len(p.ids) for p in pieces)
    device = device_name(engine.providers)
    ctx.log(
        f"ctranslate2: {len(sampled)} rows -> {len(pieces)} model pieces ({chars} chars); "
        f"{device}; CTranslate2 {ctranslate2.__version__} vs onnxruntime {variant}, "
        f"{ctx.threads} threads each"
    )
    env = environment()
    speed, identity = {}, {}
    for batch_size in batch_sizes:
        batches = make_batches(pieces, batch_size, ctx.seed)
        contenders = Contenders(translator, engine, vocab, batches, max_tgt_len, max_draft)
        seconds = _time(contenders, batches, batch_size, repeats, warmup, ctx.log)
        speed[str(batch_size)] = _speed(seconds, chars)
        identity[str(batch_size)] = _identity(pieces, batch_size, vocab, engine)
    return {
        "suite": NAME,
        "device": device,
        "device_slug": slug(device),
        "config": {
            "checkpoint": str(info),
            "checkpoint_sha256": meta["sha256"][:16],
            "artifact": str(artifact.path),
            "artifact_checksum": artifact.manifest["checksum"][:16],
            "variant": variant,
            "execution_provider": engine.providers[0],
            "ctranslate2_device": translator.device,
            "ctranslate2_compute_type": translator.compute_type,
            "threads": ctx.threads,
            "data": str(ctx.data),
            "rows": len(sampled),
            "pieces": len(pieces),
            "input_chars": chars,
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "warmup_batches": warmup,
            "max_draft": max_draft,
            "max_src_len": max_src_len,
            "max_tgt_len": max_tgt_len,
            "seed": ctx.seed,
        },
        "conversion": {**conversion, "max_positions": max_positions},
        "environment": {
            **env,
            "ctranslate2": ctranslate2.__version__,
            "load_average_after": os.getloadavg(),
        },
        "speed": speed,
        "identity": identity,
        "targets": _targets(identity, speed),
    }


# ---------------------------------------------------------------------------------- report


def _range(s: dict, fmt: str) -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def markdown(section: dict) -> str:
    title = "## Peer: CTranslate2 on the same weights"
    if "not_run" in section:
        return f"{title}\n\n{section['not_run']}\n"
    c, env, conv = section["config"], section["environment"], section["conversion"]
    converted = "cached" if conv["cached"] else f"converted in {conv['seconds']:.1f} s"
    lines = [
        title,
        "",
        f"Device: **{section['device']}**. Checkpoint `{c['checkpoint']}` "
        f"({c['checkpoint_sha256']}) converted through `ctranslate2.specs` ({converted}; "
        f"{c['ctranslate2_compute_type']}, {conv['max_positions']} positions) vs artifact "
        f"`{c['artifact']}` ({c['artifact_checksum']}) under onnxruntime {c['variant']} "
        f"({c['execution_provider']}); {c['threads']} intra-op threads each. {c['rows']} test "
        f"rows → {c['pieces']} model pieces ({c['input_chars']} input chars) through "
        f"`runtime.pipeline.prepare`; {c['repeats']} interleaved repeats after "
        f"{c['warmup_batches']} warm-up batches; max_draft {c['max_draft']}; CTranslate2 "
        f"{env['ctranslate2']}, onnxruntime {env['onnxruntime']}; load average "
        f"{env['load_average_before'][0]:.2f} before, {env['load_average_after'][0]:.2f} "
        f"after; {env['date']}.",
        "",
        "### Outputs",
        "",
        "CTranslate2 greedy vs our greedy output ids (from the first repeat). A row is identical "
        "when all its model pieces are.",
        "",
        "| batch | rows identical | pieces identical | ours aggressive ≠ ours greedy |",
        "|--:|--:|--:|--:|",
    ]
    for b, i in section["identity"].items():
        share = 100 * (i["share"] or 0)
        lines.append(
            f"| {b} | {i['identical_rows']}/{i['rows']} ({share:.1f}%) "
            f"| {i['identical_pieces']}/{i['pieces']} | {i['aggressive_differs_from_greedy']} |"
        )
    lines += [
        "",
        "### Speed",
        "",
        "Median (min–max) over repeats. chars/s: input characters of all pieces / seconds. "
        "× CTranslate2: its seconds / the contender's, per repeat. Latency: per decode call "
        "(one piece at batch 1; at a larger batch every piece waits for its whole batch).",
        "",
        "| batch | contender | chars/s | × CTranslate2 | p50 ms per call | p90 ms per call |",
        "|--:|---|--:|--:|--:|--:|",
    ]
    for b, per in section["speed"].items():
        for name, s in per.items():
            lines.append(
                f"| {b} | {LABELS[name]} | {_range(s['chars_per_s'], '{:.0f}')} "
                f"| {_range(s['vs_ctranslate2'], '{:.2f}×')} "
                f"| {_range(s['latency_ms']['p50'], '{:.2f}')} "
                f"| {_range(s['latency_ms']['p90'], '{:.2f}')} |"
            )
    examples = [(b, e) for b, i in section["identity"].items() for e in i["examples"]]
    if examples:
        lines += [
            "",
            "### Differing outputs",
            "",
            "Lead: our logit for our token minus our logit for CTranslate2's, where the two "
            "outputs first part (a lead near 0 is a near-tie).",
            "",
        ]
        for b, e in examples:
            lines.append(
                f"- batch {b}, row {e['row']} ({e['group']}), from char {e['first_difference']}"
                f", lead {e['our_logit_lead']:.2g}, outputs {e['cer_apart']:.3f} CER apart"
            )
    return "\n".join(lines) + "\n"


def plots(section: dict, out_dir: str | Path) -> list[str]:
    """ctranslate2.png: chars/s and p50 latency per contender and batch size (min–max bars)."""
    if "not_run" in section:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(section["speed"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(CONTENDERS)
    for k, name in enumerate(CONTENDERS):
        x = np.arange(len(batches)) + (k - (len(CONTENDERS) - 1) / 2) * width
        for ax, get in (
            (axes[0], lambda s: s["chars_per_s"]),
            (axes[1], lambda s: s["latency_ms"]["p50"]),
        ):
            stats = [get(section["speed"][b][name]) for b in batches]
            median = np.array([s["median"] for s in stats])
            error = [median - [s["min"] for s in stats], [s["max"] for s in stats] - median]
            ax.bar(x, median, width, yerr=error, capsize=3, label=LABELS[name])
    for ax, label in zip(axes, ("input chars / s", "p50 ms per decode call"), strict=True):
        ax.set_xticks(np.arange(len(batches)), [f"batch {b}" for b in batches])
        ax.set_ylabel(label)
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"CTranslate2 vs ours on the same weights — {section['device']}")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "ctranslate2.png", dpi=110)
    plt.close(fig)
    return ["ctranslate2.png"]
