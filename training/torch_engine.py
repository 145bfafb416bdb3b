"""The torch engine: a trained model behind the runtime's `Engine` interface.

``TorchEngine(model)`` offers exactly what ``runtime.engines.onnx.OnnxEngine`` offers (numpy in,
float32 numpy out), computed by the model's own ``encode`` (cross K/V) and functional
``decode_step`` (concatenation-form self-attention cache with a ``tgt_key_mask``), which are
the functions the exported graphs were traced from. So the runtime's decoders,
``runtime.decoding.greedy_decode`` and ``aggressive_decode``, run unchanged on torch: that is
the torch path of input-guided aggressive decoding, and its parity with the exported graphs is
a comparison of two engines under one decoder.

The editor has the one-pass interface instead (``edit``: the best label of every frame, as
its exported graph computes it), which ``runtime.editing`` turns into text. The CharLSTM's
decoder state is an ``(h, c)`` pair, not a key/value cache; `LSTMEngine` keeps the state after
every fed token in a cache slot, so the decoders' row selection, rollback and compaction work
on it unchanged (the LSTM has no exported graphs: torch is its only engine).

`checkpoint_corrector` and `model_corrector` put any of the four models behind the serving
`runtime.corrector.Corrector`: evaluation, the trainer's validation, export verification and
`kmcorrect correct --run-dir` all decode through it, so what they report is what the service
answers. This module lives in ``training/`` because it imports torch; ``runtime/`` never does.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from runtime.corrector import Corrector, ModelInfo
from runtime.engines import KV, CacheOps
from runtime.errors import UserError
from runtime.text import Vocab
from training import checkpoint
from training.models import CharLSTM, Editor, HybridCorrector


class TorchEngine(CacheOps):
    """The `runtime.engines` interfaces over a torch model, in eval mode: `edit` for the
    editor, `Engine` for the transformer sequence-to-sequence models."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = next(model.parameters()).dtype
        config = model.config
        self.pad_id, self.bos_id, self.eos_id = config.pad_id, config.bos_id, config.eos_id

    @staticmethod
    def of(model: nn.Module, device: str | torch.device = "cpu") -> TorchEngine:
        """The engine for ``model``: `LSTMEngine` for the CharLSTM, else `TorchEngine`."""
        return (LSTMEngine if isinstance(model, CharLSTM) else TorchEngine)(model, device)

    @staticmethod
    def from_checkpoint(
        path: str | Path, device: str | torch.device = "cpu", tag: str = "best"
    ) -> TorchEngine:
        """The engine of a run directory's (or checkpoint file's) model."""
        return TorchEngine.of(checkpoint.load(Path(path), tag).model, device)

    # ------------------------------------------------------------------ conversions

    def _ids(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)

    def _mask(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=bool)).to(self.device)

    def _floats(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.to(self.device, self.dtype)

    @staticmethod
    def _numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float32).numpy()

    def _pairs_in(self, pairs: list[KV]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self._floats(k), self._floats(v)) for k, v in pairs]

    def _pairs_out(self, pairs) -> list[KV]:
        return [(self._numpy(k), self._numpy(v)) for k, v in pairs]

    # ------------------------------------------------------------------ the interfaces

    def edit(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The editor's one pass: every frame's best label and its probability."""
        if not isinstance(self.model, Editor):
            raise UserError(f"{type(self.model).__name__} is not an editor; it has no `edit`")
        with torch.inference_mode():
            labels, probs = self.model.best_path(self._ids(src_ids), self._mask(src_mask))
            return labels.cpu().numpy(), self._numpy(probs)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[KV]:
        with torch.inference_mode():
            memory = self.model.encode(self._ids(src_ids), self._mask(src_mask))
            return self._pairs_out(memory.cross_kv)

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: np.ndarray,
        tgt_key_mask: np.ndarray,
        cross: list[KV],
        past: list[KV],
    ) -> tuple[np.ndarray, list[KV]]:
        with torch.inference_mode():
            logits, present = self.model.decode_step(
                self._ids(tokens),
                self._ids(positions),
                self._mask(src_mask),
                self._pairs_in(cross),
                self._pairs_in(past),
                self._mask(tgt_key_mask),
            )
            return self._numpy(logits), self._pairs_out(present)

    def substitution_logits(self, src_ids: np.ndarray, src_mask: np.ndarray) -> np.ndarray:
        """The hybrid's AtomicMapper alone, ``[b, src, vocab]``: substitutions in one pass."""
        if not isinstance(self.model, HybridCorrector):
            raise UserError(
                f"{type(self.model).__name__} has no AtomicMapper (only hybrid models have one)"
            )
        with torch.inference_mode():
            return self._numpy(self.model.mapper(self._ids(src_ids), self._mask(src_mask))[1])


class LSTMEngine(TorchEngine):
    """The CharLSTM behind the sequence-to-sequence `Engine` interface.

    ``cross`` holds the encoder's states and attention keys, then the decoder's initial
    ``(h, c)``, each batch-first: ``[(states [b, src, 2E], keys [b, src, H]), (h0, c0)]`` with
    ``h0, c0 [b, layers, 1, H]``. A cache slot holds the decoder state after the token fed at
    that slot, ``[b, layers, slots, H]``, so the state a row continues from is the one in its
    last slot marked in ``tgt_key_mask`` (or the initial state before its first token)."""

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[KV]:
        with torch.inference_mode():
            memory = self.model.encode(self._ids(src_ids), self._mask(src_mask))
            h0, c0 = (s.transpose(0, 1)[:, :, None] for s in memory.init_state)
            return self._pairs_out([(memory.states, memory.keys), (h0, c0)])

    def empty_cache(self, cross: list) -> list:
        h0, c0 = cross[1]
        return [(h0[:, :, :0], c0[:, :, :0])]

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: np.ndarray,
        tgt_key_mask: np.ndarray,
        cross: list[KV],
        past: list[KV],
    ) -> tuple[np.ndarray, list[KV]]:
        del positions  # an LSTM has none: its state carries the order
        model = self.model
        (states, keys), (h0, c0) = self._pairs_in(cross)
        (past_h, past_c), *_ = self._pairs_in(past)
        # In the state history, slot 0 is the initial state, slot s the state after token s.
        cached = torch.from_numpy(np.asarray(tgt_key_mask)[:, : past_h.shape[2]].sum(1))
        rows, cached = torch.arange(len(cached), device=self.device), cached.to(self.device)
        with torch.inference_mode():
            h = torch.cat([h0, past_h], 2)[rows, :, cached]
            c = torch.cat([c0, past_c], 2)[rows, :, cached]
            state = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
            embedded = model.dropout(model.tgt_embed(self._ids(tokens)))
            outputs, new_h, new_c = [], [], []
            for i in range(embedded.shape[1]):
                out, state = model.decoder(embedded[:, i : i + 1], state)
                outputs.append(out)
                new_h.append(state[0].transpose(0, 1))
                new_c.append(state[1].transpose(0, 1))
            logits = model._output(torch.cat(outputs, 1), keys, states, self._mask(src_mask))
            present_h = torch.cat([past_h, torch.stack(new_h, 2)], 2)
            present_c = torch.cat([past_c, torch.stack(new_c, 2)], 2)
            return self._numpy(logits), self._pairs_out([(present_h, present_c)])


def model_corrector(
    model: nn.Module,
    vocab: Vocab,
    *,
    name: str,
    max_src_len: int,
    max_tgt_len: int,
    model_id: str = "",
    device: str | torch.device = "cpu",
    min_confidence: float = 0.0,
) -> Corrector:
    """The serving `Corrector` over ``model`` in torch (put in eval mode; a trainer puts it
    back in train mode after use). ``max_src_len``: the longest piece (longer text is chunked);
    ``max_tgt_len``: bos + output at most; ``min_confidence``: the editor's gate, one
    threshold for every edit."""
    info = ModelInfo(
        name=name,
        config=asdict(model.config),
        vocab=vocab,
        max_src_len=max_src_len,
        max_tgt_len=max_tgt_len,
        max_n=min(64, max_tgt_len),
        model_id=model_id,
        has_mapper=isinstance(model, HybridCorrector),
        gate={"min_confidence": min_confidence},
    )
    return Corrector(info, TorchEngine.of(model, device))


def checkpoint_corrector(
    ckpt: checkpoint.Checkpoint, device: str | torch.device = "cpu", min_confidence: float = 0.0
) -> Corrector:
    """`model_corrector` of a checkpoint, with the limits it was trained with (as export sets
    them), so what `kmcorrect eval` reports of a run is what its artifact will answer."""
    train = ckpt.meta.get("train_config") or {}
    return model_corrector(
        ckpt.model,
        ckpt.vocab,
        name=ckpt.model_name,
        max_src_len=int(train.get("max_src_len", 256)),
        max_tgt_len=int(train.get("max_tgt_len", 256)) + 1,  # bos + target
        model_id=str(ckpt.meta.get("sha256", ""))[:16],
        device=device,
        min_confidence=min_confidence,
    )
