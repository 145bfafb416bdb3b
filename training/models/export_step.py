"""Flat-tensor wrappers of the transformer models (hybrid, char_transformer) for ONNX export.

``EncoderExport``: ``(src_ids [b, src], src_mask [b, src] bool)`` ->
``cross_k_0, cross_v_0, ... [b, heads, src, head_dim]``.

``DecoderStepExport``: ``model.decode_step`` with its lists flattened:

    inputs   tokens [b, n] int64, positions [b, n] int64, src_mask [b, src] bool,
             tgt_key_mask [b, past_len + n] bool,
             cross_k_i, cross_v_i [b, heads, src, hd]  for every decoder layer i,
             past_k_i,  past_v_i  [b, heads, past_len, hd]  (past_len may be 0)
    outputs  logits [b, n, vocab], present_k_i, present_v_i [b, heads, past_len + n, hd]

The caller keeps ``present`` as the next ``past`` and appends the new tokens' validity to
``tgt_key_mask``; slots of rejected draft tokens or of padding are simply marked False.

Exported with the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which is not a dependency of this project, and the legacy tracer handles this
small graph (dynamic batch / src / past / n) fine.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


def _dims(model: nn.Module) -> tuple[int, int, int]:
    c = model.config
    return c.n_dec_layers, c.n_heads, c.d_model // c.n_heads


class EncoderExport(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_layers = _dims(model)[0]

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(src_ids, src_mask)
        return tuple(t for kv in memory.cross_kv for t in kv)

    @property
    def input_names(self) -> list[str]:
        return ["src_ids", "src_mask"]

    @property
    def output_names(self) -> list[str]:
        return [f"cross_{kv}_{i}" for i in range(self.n_layers) for kv in "kv"]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {"src_ids": {0: "batch", 1: "src_len"}, "src_mask": {0: "batch", 1: "src_len"}}
        axes.update({name: {0: "batch", 2: "src_len"} for name in self.output_names})
        return axes

    def example_inputs(self, batch: int = 2, src_len: int = 7) -> tuple[Tensor, ...]:
        ids = torch.randint(4, self.model.config.vocab_size, (batch, src_len))
        return ids, torch.ones(batch, src_len, dtype=torch.bool)


class DecoderStepExport(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_layers, self.n_heads, self.head_dim = _dims(model)

    def forward(
        self, tokens: Tensor, positions: Tensor, src_mask: Tensor, tgt_key_mask: Tensor, *kv
    ) -> tuple[Tensor, ...]:
        n = self.n_layers
        cross = [(kv[2 * i], kv[2 * i + 1]) for i in range(n)]
        past = [(kv[2 * n + 2 * i], kv[2 * n + 2 * i + 1]) for i in range(n)]
        logits, present = self.model.decode_step(
            tokens, positions, src_mask, cross, past, tgt_key_mask
        )
        return (logits, *(t for pair in present for t in pair))

    @property
    def input_names(self) -> list[str]:
        names = ["tokens", "positions", "src_mask", "tgt_key_mask"]
        names += [f"cross_{kv}_{i}" for i in range(self.n_layers) for kv in "kv"]
        names += [f"past_{kv}_{i}" for i in range(self.n_layers) for kv in "kv"]
        return names

    @property
    def output_names(self) -> list[str]:
        return ["logits"] + [f"present_{kv}_{i}" for i in range(self.n_layers) for kv in "kv"]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {
            "tokens": {0: "batch", 1: "n"},
            "positions": {0: "batch", 1: "n"},
            "src_mask": {0: "batch", 1: "src_len"},
            "tgt_key_mask": {0: "batch", 1: "total_len"},
            "logits": {0: "batch", 1: "n"},
        }
        for i in range(self.n_layers):
            for kv in "kv":
                axes[f"cross_{kv}_{i}"] = {0: "batch", 2: "src_len"}
                axes[f"past_{kv}_{i}"] = {0: "batch", 2: "past_len"}
                axes[f"present_{kv}_{i}"] = {0: "batch", 2: "total_len"}
        return axes

    def example_inputs(
        self, batch: int = 2, src_len: int = 7, past_len: int = 3, n: int = 2
    ) -> tuple[Tensor, ...]:
        """Random inputs of the given shapes (all slots valid), in ``input_names`` order."""
        p = next(self.model.parameters())
        c = self.model.config
        tokens = torch.randint(4, c.vocab_size, (batch, n))
        positions = (past_len + torch.arange(n)).expand(batch, n).contiguous()
        src_mask = torch.ones(batch, src_len, dtype=torch.bool)
        key_mask = torch.ones(batch, past_len + n, dtype=torch.bool)
        shape = (batch, self.n_heads, 0, self.head_dim)
        cross = [
            torch.randn(*shape[:2], src_len, shape[3], dtype=p.dtype)
            for _ in range(2 * self.n_layers)
        ]
        past = [
            torch.randn(*shape[:2], past_len, shape[3], dtype=p.dtype)
            for _ in range(2 * self.n_layers)
        ]
        return (tokens, positions, src_mask, key_mask, *cross, *past)


def export_onnx(wrapper: nn.Module, args: tuple[Tensor, ...], path: str | Path, opset: int = 17):
    """Export an ``EncoderExport`` / ``DecoderStepExport`` with its names and dynamic axes."""
    wrapper.eval()
    with warnings.catch_warnings():
        # The legacy exporter announces its own deprecation; we chose it knowingly (see above).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=wrapper.input_names,
            output_names=wrapper.output_names,
            dynamic_axes=wrapper.dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
