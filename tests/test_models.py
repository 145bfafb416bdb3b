"""The model family: sizes, padding, cached / functional decoding, overfitting, ONNX export."""

from __future__ import annotations

import time

import pytest
import torch
from tiny import torch_greedy_decode

from training.models import (
    MODELS,
    build_config,
    build_model,
    count_parameters,
    model_from_config,
)
from training.models.atomic_mapper import (
    AtomicMapper,
    AtomicMapperConfig,
    substitution_loss,
    substitution_targets,
)
from training.models.context_refiner import ContextRefiner, ContextRefinerConfig
from training.models.layers import SinusoidalPositions

V = 300  # vocab size used by the tests
PAD, BOS, EOS = 0, 1, 2
SEQ2SEQ = ["hybrid", "char_transformer", "char_lstm"]
TRANSFORMERS = ["hybrid", "char_transformer"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these models are tiny, and on a busy 2-core machine a second thread
    spinning on synchronisation makes training steps tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, V, "tiny").eval()


def pad_batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, ids != PAD


def rand_rows(gen: torch.Generator, lengths: list[int], lo: int = 4) -> list[list[int]]:
    return [torch.randint(lo, V, (n,), generator=gen).tolist() for n in lengths]


# --------------------------------------------------------------------------- sizes and registry


def test_default_parameter_counts():
    counts = {
        "AtomicMapper": count_parameters(AtomicMapper(AtomicMapperConfig(vocab_size=270))),
        "ContextRefiner": count_parameters(ContextRefiner(ContextRefinerConfig(vocab_size=270))),
        **{name: count_parameters(build_model(name, 270)) for name in SEQ2SEQ},
    }
    print("\nparameters at vocab_size=270:", counts)
    targets = {
        "AtomicMapper": 195_000,
        "ContextRefiner": 1_440_000,
        "hybrid": 1_630_000,
        "char_transformer": 1_500_000,
        "char_lstm": 1_500_000,
    }
    for name, target in targets.items():
        assert abs(counts[name] - target) <= 0.05 * target, (name, counts[name])
    model = build_model("hybrid", 270)
    assert counts["hybrid"] == count_parameters(model.mapper) + count_parameters(model.refiner)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_tiny_presets_are_tiny(name):
    n = count_parameters(build_model(name, V, "tiny"))
    print(f"\n{name} tiny: {n}")
    assert 20_000 <= n <= 50_000


def test_registry_errors_and_round_trip():
    assert set(MODELS) == {"editor", *SEQ2SEQ}
    with pytest.raises(ValueError, match="char_lstm"):
        build_model("gpt", V)
    with pytest.raises(ValueError, match="tiny"):
        build_model("hybrid", V, "huge")
    with pytest.raises(ValueError, match="d_model"):
        build_model("char_transformer", V, bogus=1)
    model = build_model("hybrid", V, "tiny", dropout=0.2, aux_weight=1.0)
    assert model.config.dropout == 0.2 and model.config.d_model == 24
    import dataclasses

    again = model_from_config("hybrid", dataclasses.asdict(model.config))
    assert again.config == model.config
    assert build_config("char_lstm", V, "tiny").vocab_size == V


# --------------------------------------------------------------------------- padding


def _row_alone(model, src, tgt):
    s, sm = pad_batch([src])
    t, _ = pad_batch([tgt])
    return model(s, sm, t)[0]


@pytest.mark.parametrize("name", SEQ2SEQ)
@pytest.mark.parametrize("which", ["src", "tgt", "both"])
def test_padding_does_not_change_outputs(name, which):
    model = tiny(name)
    gen = torch.Generator().manual_seed(1)
    src_lens = [4, 9, 6] if which in ("src", "both") else [6, 6, 6]
    tgt_lens = [3, 5, 8] if which in ("tgt", "both") else [5, 5, 5]
    srcs = rand_rows(gen, src_lens)
    tgts = [[BOS, *r] for r in rand_rows(gen, tgt_lens)]
    s, sm = pad_batch(srcs)
    t, _ = pad_batch(tgts)
    with torch.no_grad():
        batched = model(s, sm, t)
        for i, (src, tgt) in enumerate(zip(srcs, tgts, strict=True)):
            alone = _row_alone(model, src, tgt)
            torch.testing.assert_close(batched[i, : len(tgt)], alone, atol=1e-5, rtol=1e-5)


def test_mapper_padding_and_shapes():
    torch.manual_seed(0)
    mapper = AtomicMapper(AtomicMapperConfig(vocab_size=V, dropout=0.0)).eval()
    gen = torch.Generator().manual_seed(2)
    rows = rand_rows(gen, [3, 10])
    s, sm = pad_batch(rows)
    with torch.no_grad():
        feats, sub = mapper(s, sm)
        assert feats.shape == (2, 10, 128) and sub.shape == (2, 10, V)
        assert feats[0, 3:].abs().max() == 0  # padding is zero
        alone_f, alone_s = mapper(*pad_batch(rows[:1]))
    torch.testing.assert_close(feats[0, :3], alone_f[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sub[0, :3], alone_s[0], atol=1e-5, rtol=1e-5)


def test_substitution_targets_and_loss():
    _, sm = pad_batch([[10, 11, 12], [10, 11]])
    tgt, _ = pad_batch([[BOS, 20, 21, 22, EOS], [BOS, 20, 21, 22, EOS]])  # row 1 not aligned
    targets, mask = substitution_targets(sm, tgt, PAD)
    assert targets[0].tolist() == [20, 21, 22]
    assert mask.tolist() == [[True, True, True], [False, False, False]]
    logits = torch.zeros(2, 3, V, requires_grad=True)
    loss = substitution_loss(logits, targets, mask)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(float(V))).item(), rel=1e-5)
    none = substitution_loss(logits, targets, torch.zeros_like(mask))
    none.backward()
    assert none.item() == 0.0
    # Source wrapped in bos/eos: bos/eos map to themselves.
    _, sm2 = pad_batch([[BOS, 10, 11, 12, EOS]])
    t2, m2 = substitution_targets(sm2, tgt[:1], PAD, src_has_specials=True)
    assert t2[0].tolist() == [BOS, 20, 21, 22, EOS] and bool(m2.all())


def test_hybrid_loss_and_features_only_variant():
    gen = torch.Generator().manual_seed(3)
    src, sm = pad_batch(rand_rows(gen, [5, 7]))
    tgt, _ = pad_batch([[BOS, *r, EOS] for r in rand_rows(gen, [5, 4])])
    for encoder_input in ("sum", "features"):
        torch.manual_seed(0)
        model = build_model("hybrid", V, "tiny", encoder_input=encoder_input)
        out = model.loss(src, sm, tgt)
        assert out.aux is not None and out.aux.item() > 0
        assert out.loss.item() == pytest.approx(out.ce.item() + 0.5 * out.aux.item(), rel=1e-5)
        assert out.n_tokens == 6 + 5
        out.loss.backward()
    with pytest.raises(ValueError):
        build_model("hybrid", V, "tiny", encoder_input="concat")


# --------------------------------------------------------------------------- cached decoding


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_cached_decode_matches_teacher_forcing(name):
    """Prefill 3, then 3 single steps, then verify 4 drafts at once == one full forward."""
    model = tiny(name)
    gen = torch.Generator().manual_seed(4)
    src, sm = pad_batch(rand_rows(gen, [6, 9]))
    tgt = torch.tensor([[BOS, *r] for r in rand_rows(gen, [9, 9])])
    pos = torch.arange(10).expand(2, 10)
    with torch.no_grad():
        full = model(src, sm, tgt)
        memory = model.encode(src, sm)
        cache = model.init_cache(2, 16)
        parts = []
        for a, b in [(0, 3), (3, 4), (4, 5), (5, 6), (6, 10)]:
            logits, cache = model.decode(tgt[:, a:b], pos[:, a:b], memory, cache)
            parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_cached_decode_rows_at_different_positions_and_rollback(name):
    """Rows advance at their own speed (ragged prefill, padded); rejected drafts roll back by
    decoding again from an earlier position."""
    model = tiny(name)
    gen = torch.Generator().manual_seed(5)
    srcs = rand_rows(gen, [5, 8])
    src, sm = pad_batch(srcs)
    seqs = [[BOS, *r] for r in rand_rows(gen, [8, 8])]
    with torch.no_grad():
        memory = model.encode(src, sm)
        cache = model.init_cache(2, 32)
        # Ragged prefill: row 0 has 2 tokens, row 1 has 4 (row 0 padded with junk slots).
        tokens = torch.tensor([[*seqs[0][:2], PAD, PAD], seqs[1][:4]])
        positions = torch.arange(4).expand(2, 4)
        pre, cache = model.decode(tokens, positions, memory, cache)
        # Drafts: row 0 at positions 2..4, row 1 at 4..6; half of them wrong.
        drafts = torch.tensor([[seqs[0][2], 7, 8], [seqs[1][4], 9, 10]])
        dpos = torch.tensor([[2, 3, 4], [4, 5, 6]])
        d_logits, cache = model.decode(drafts, dpos, memory, cache)
        # Accept one draft per row, then continue with the true tokens from the next position.
        cont = torch.tensor([seqs[0][3:6], seqs[1][5:8]])
        cpos = torch.tensor([[3, 4, 5], [5, 6, 7]])
        c_logits, cache = model.decode(cont, cpos, memory, cache)
        for i, (n_pre, d_start) in enumerate([(2, 2), (4, 4)]):
            alone = _row_alone(model, srcs[i], seqs[i])
            torch.testing.assert_close(pre[i, :n_pre], alone[:n_pre], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(d_logits[i, 0], alone[d_start], atol=1e-5, rtol=1e-5)
            start = d_start + 1
            torch.testing.assert_close(c_logits[i], alone[start : start + 3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_select_rows_of_memory_and_cache(name):
    model = tiny(name)
    gen = torch.Generator().manual_seed(6)
    src, sm = pad_batch(rand_rows(gen, [4, 7, 5]))
    tgt = torch.tensor([[BOS, *r] for r in rand_rows(gen, [3, 3, 3])])
    pos = torch.arange(4).expand(3, 4)
    with torch.no_grad():
        memory = model.encode(src, sm)
        cache = model.init_cache(3, 8)
        _, cache = model.decode(tgt[:, :2], pos[:, :2], memory, cache)
        full, _ = model.decode(tgt[:, 2:], pos[:, 2:], memory, cache)
        memory = model.encode(src, sm)
        cache = model.init_cache(3, 8)
        _, cache = model.decode(tgt[:, :2], pos[:, :2], memory, cache)
        rows = torch.tensor([2, 0])
        cache = [c.select(rows) for c in cache] if isinstance(cache, list) else cache.select(rows)
        kept, _ = model.decode(tgt[rows, 2:], pos[rows, 2:], memory.select(rows), cache)
    torch.testing.assert_close(kept, full[rows], atol=1e-5, rtol=1e-5)


def test_positions_beyond_training_lengths():
    pe = SinusoidalPositions(32)
    out = pe(torch.tensor([[0, 511, 4000]]))
    assert out.shape == (1, 3, 32) and torch.isfinite(out).all()
    model = tiny("char_transformer")
    src, sm = pad_batch([[5, 6, 7]])
    with torch.no_grad():
        memory = model.encode(src, sm)
        cache = model.init_cache(1, 600)
        logits, _ = model.decode(torch.tensor([[5, 6]]), torch.tensor([[590, 591]]), memory, cache)
    assert torch.isfinite(logits).all()


# --------------------------------------------------------------------------- functional step


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_functional_decode_step_matches_cached(name):
    model = tiny(name)
    gen = torch.Generator().manual_seed(7)
    src, sm = pad_batch(rand_rows(gen, [6, 3]))
    tgt = torch.tensor([[BOS, *r] for r in rand_rows(gen, [7, 7])])
    pos = torch.arange(8).expand(2, 8)
    c = model.config
    hd = c.d_model // c.n_heads
    with torch.no_grad():
        memory = model.encode(src, sm)
        cache = model.init_cache(2, 16)
        past = [
            (torch.zeros(2, c.n_heads, 0, hd), torch.zeros(2, c.n_heads, 0, hd))
            for _ in range(c.n_dec_layers)
        ]
        key_mask = torch.zeros(2, 0, dtype=torch.bool)
        for a, b in [(0, 3), (3, 4), (4, 8)]:  # past_len 0 -> n 3; then n 1; then n 4
            want, cache = model.decode(tgt[:, a:b], pos[:, a:b], memory, cache)
            key_mask = torch.cat([key_mask, torch.ones(2, b - a, dtype=torch.bool)], 1)
            got, past = model.decode_step(
                tgt[:, a:b], pos[:, a:b], memory.src_mask, memory.cross_kv, past, key_mask
            )
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            assert past[0][0].shape == (2, c.n_heads, b, hd)
            for (k, v), kv in zip(past, cache, strict=True):  # present == cache slots 0..b-1
                torch.testing.assert_close(k, kv.k[:, :, :b])
                torch.testing.assert_close(v, kv.v[:, :, :b])


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_functional_decode_step_masks_padded_past(name):
    """A row whose past has padded / rejected slots (tgt_key_mask False) == that row alone."""
    model = tiny(name)
    gen = torch.Generator().manual_seed(8)
    srcs = rand_rows(gen, [4, 6])
    src, sm = pad_batch(srcs)
    seqs = [[BOS, *r] for r in rand_rows(gen, [4, 4])]
    c = model.config
    hd = c.d_model // c.n_heads
    empty = [(torch.zeros(2, c.n_heads, 0, hd),) * 2 for _ in range(c.n_dec_layers)]
    with torch.no_grad():
        memory = model.encode(src, sm)
        # Prefill: row 0 has 2 real tokens (+ 1 pad), row 1 has 3.
        tokens = torch.tensor([[*seqs[0][:2], PAD], seqs[1][:3]])
        key_mask = torch.tensor([[True, True, False], [True, True, True]])
        positions = torch.tensor([[0, 1, 2], [0, 1, 2]])
        _, past = model.decode_step(
            tokens, positions, memory.src_mask, memory.cross_kv, empty, key_mask
        )
        # Next: row 0 feeds its position 2, row 1 its position 3.
        step = torch.tensor([[seqs[0][2]], [seqs[1][3]]])
        key_mask = torch.cat([key_mask, torch.ones(2, 1, dtype=torch.bool)], 1)
        got, _ = model.decode_step(
            step, torch.tensor([[2], [3]]), memory.src_mask, memory.cross_kv, past, key_mask
        )
    for i, p in enumerate([2, 3]):
        alone = _row_alone(model, srcs[i], seqs[i])
        torch.testing.assert_close(got[i, 0], alone[p], atol=1e-5, rtol=1e-5)


def test_lstm_functional_step_matches_cached():
    model = tiny("char_lstm")
    gen = torch.Generator().manual_seed(9)
    src, sm = pad_batch(rand_rows(gen, [6, 3]))
    tgt = torch.tensor([[BOS, *r] for r in rand_rows(gen, [5, 5])])
    pos = torch.arange(6).expand(2, 6)
    with torch.no_grad():
        memory = model.encode(src, sm)
        cache = model.init_cache(2, 8)
        state = memory.init_state
        for a, b in [(0, 2), (2, 3), (3, 6)]:
            want, cache = model.decode(tgt[:, a:b], pos[:, a:b], memory, cache)
            cross = (memory.keys, memory.states)
            got, state = model.decode_step(tgt[:, a:b], pos[:, a:b], memory.src_mask, cross, state)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- overfitting


def _toy_pairs() -> list[tuple[list[int], list[int]]]:
    """20 pairs over a small alphabet: substitute every char, drop id 5, double id 6."""
    gen = torch.Generator().manual_seed(10)
    pairs = []
    for _ in range(20):
        n = int(torch.randint(3, 9, (1,), generator=gen))
        src = torch.randint(4, 16, (n,), generator=gen).tolist()
        tgt = []
        for x in src:
            if x == 5:
                continue
            y = 4 + (x * 7) % 12
            tgt += [y, y] if x == 6 else [y]
        pairs.append((src, tgt))
    return pairs


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_overfits_twenty_pairs_and_greedy_reproduces_them(name):
    pairs = _toy_pairs()
    src, sm = pad_batch([s for s, _ in pairs])
    tgt, _ = pad_batch([[BOS, *t, EOS] for _, t in pairs])
    torch.manual_seed(0)
    model = build_model(name, V, "tiny")
    lr = 3e-2 if name == "char_lstm" else 1e-2  # the tiny LSTM learns to attend more slowly
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start = time.perf_counter()
    model.train()
    steps = 0
    while steps < 1000:
        steps += 1
        out = model.loss(src, sm, tgt)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if out.ce.item() < 0.003:
            break
    elapsed = time.perf_counter() - start
    print(f"\n{name}: ce {out.ce.item():.4f} after {steps} steps in {elapsed:.1f}s")
    assert out.ce.item() < 0.01
    assert elapsed < 20
    assert torch_greedy_decode(model, src, sm, max_len=20) == [t for _, t in pairs]
    assert model.training  # torch_greedy_decode restores the mode


# --------------------------------------------------------------------------- export


def test_onnx_export_of_decode_step_matches_torch(tmp_path):
    """Legacy TorchScript exporter (dynamo=False): the dynamo one needs onnxscript."""
    ort = pytest.importorskip("onnxruntime")
    from training.models.export_step import DecoderStepExport, export_onnx

    model = tiny("char_transformer")
    wrapper = DecoderStepExport(model).eval()
    path = tmp_path / "decoder_step.onnx"
    torch.manual_seed(1)
    export_onnx(wrapper, wrapper.example_inputs(batch=2, src_len=5, past_len=3, n=2), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, src_len, past_len, n in [(3, 6, 0, 4), (1, 9, 5, 1)]:
        args = wrapper.example_inputs(batch, src_len, past_len, n)
        args[3][0, 0 if past_len == 0 else 1] = False  # a padded key slot
        args[2][-1, -2:] = False  # source padding
        with torch.no_grad():
            want = wrapper(*args)
        feeds = {name: a.numpy() for name, a in zip(wrapper.input_names, args, strict=True)}
        got = session.run(wrapper.output_names, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-4, rtol=1e-4)


def test_onnx_export_of_hybrid_encoder_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from training.models.export_step import EncoderExport, export_onnx

    wrapper = EncoderExport(tiny("hybrid")).eval()
    path = tmp_path / "encoder.onnx"
    export_onnx(wrapper, wrapper.example_inputs(batch=2, src_len=5), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(11)
    for lengths in ([3, 8, 6], [11]):
        ids, mask = pad_batch(rand_rows(gen, lengths))
        with torch.no_grad():
            want = wrapper(ids, mask)
        got = session.run(wrapper.output_names, {"src_ids": ids.numpy(), "src_mask": mask.numpy()})
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-4, rtol=1e-4)
