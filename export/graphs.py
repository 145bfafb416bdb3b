"""Torch model -> the fp32 ONNX graphs of an artifact, checked and shape-inferred.

    editor   (editor) src_ids [b, src] int64, src_mask [b, src] bool
             -> labels [b, frames] int64, probs [b, frames]: the best label of every frame
             and its probability, one pass (``runtime.editing`` turns them into text)
    encoder  src_ids [b, src] int64, src_mask [b, src] bool
             -> memory [b, src, d_model], cross_k_i, cross_v_i [b, heads, src, head_dim]
    decoder  ``training.models.export_step.DecoderStepExport``: n new tokens over a past cache
    mapper   (hybrid) src_ids, src_mask -> sub_logits [b, src, vocab]: the AtomicMapper alone,
             for a substitution-only mode that needs no decoding loop

The wrappers are plain modules, so verification runs the very functions that were traced.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import onnx
import torch
from torch import Tensor, nn

from runtime.artifact import graph_filename
from runtime.errors import UserError
from training.models.export_step import DecoderStepExport, EncoderExport, export_onnx

EXPORTABLE = ("editor", "hybrid", "char_transformer")


class EncoderGraph(EncoderExport):
    """`EncoderExport` with the encoder states as a first output, ``memory``."""

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(src_ids, src_mask)
        return (memory.states, *(t for kv in memory.cross_kv for t in kv))

    @property
    def output_names(self) -> list[str]:
        return ["memory", *super().output_names]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {**super().dynamic_axes, "memory": {0: "batch", 1: "src_len"}}


class SourceGraph(nn.Module):
    """A graph of the source alone, ``(src_ids, src_mask) -> outputs``, one pass, no cache."""

    output_names: ClassVar[list[str]]
    output_axes: ClassVar[dict[int, str]]

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.input_names = ["src_ids", "src_mask"]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {name: {0: "batch", 1: "src_len"} for name in self.input_names}
        return axes | {name: self.output_axes for name in self.output_names}

    def example_inputs(self, batch: int = 2, src_len: int = 7) -> tuple[Tensor, ...]:
        ids = torch.randint(4, self.vocab_size, (batch, src_len))
        return ids, torch.ones(batch, src_len, dtype=torch.bool)


class MapperGraph(SourceGraph):
    """The hybrid's AtomicMapper substitution head: one position-wise pass, no decoder."""

    output_names: ClassVar[list[str]] = ["sub_logits"]
    output_axes: ClassVar[dict[int, str]] = {0: "batch", 1: "src_len"}

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model.config.vocab_size)
        self.mapper = model.mapper

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> Tensor:
        return self.mapper(src_ids, src_mask)[1]


class EditorGraph(SourceGraph):
    """The editor's one pass: the best label of every frame and its probability."""

    output_names: ClassVar[list[str]] = ["labels", "probs"]
    output_axes: ClassVar[dict[int, str]] = {0: "batch", 1: "frames"}

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model.config.vocab_size)
        self.model = model

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.best_path(src_ids, src_mask)


def graph_wrappers(model_name: str, model: nn.Module) -> dict[str, nn.Module]:
    """The export wrappers of a model, by graph name, in eval mode."""
    if model_name == "char_lstm":
        raise UserError(
            "char_lstm is not exportable: its decoder state is an LSTM (h, c) pair, not the "
            "attention key/value cache that the engines, aggressive decoding and the TensorRT "
            "profiles are built on; export a hybrid or char_transformer model"
        )
    if model_name not in EXPORTABLE:
        raise UserError(f"model {model_name!r} is not exportable; exportable: {EXPORTABLE}")
    if model_name == "editor":
        return {"editor": EditorGraph(model).eval()}
    wrappers = {"encoder": EncoderGraph(model), "decoder": DecoderStepExport(model)}
    if model_name == "hybrid":
        wrappers["mapper"] = MapperGraph(model)
    return {name: w.eval() for name, w in wrappers.items()}


def export_graph(name: str, wrapper: nn.Module, directory: Path, opset: int) -> dict:
    """Write ``<directory>/<name>.onnx``, check it (full check) and store it with inferred
    shapes; returns its interface for the manifest."""
    path = directory / graph_filename(name, "fp32")
    example = wrapper.example_inputs()
    export_onnx(wrapper, example, path, opset)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, path)
    return {
        "inputs": wrapper.input_names,
        "outputs": wrapper.output_names,
        "dynamic_axes": {
            k: {str(a): n for a, n in v.items()} for k, v in wrapper.dynamic_axes.items()
        },
        "traced_shapes": {
            n: list(t.shape) for n, t in zip(wrapper.input_names, example, strict=True)
        },
    }


def profile(path: Path, axis_ranges: dict[str, tuple[int, int, int]]) -> dict[str, dict]:
    """min/opt/max shape of every input of an ONNX graph: its named axes take their range from
    ``axis_ranges``, fixed axes (heads, head_dim) their size."""
    shapes = {}
    for value in onnx.load(path, load_external_data=False).graph.input:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = {
            key: [axis_ranges[d.dim_param][i] if d.dim_param else d.dim_value for d in dims]
            for i, key in enumerate(("min", "opt", "max"))
        }
    return shapes
