"""The variants written beside each fp32 graph, and what each is for (recorded in the manifest).

* ``opt``: onnxruntime's graph optimizations (extended level: constant folding, norm / GELU /
  MatMul fusions) applied once at export instead of at every session start. The extended
  level fuses for onnxruntime's CPU provider into contrib ops and stops short of the
  layout level, whose output depends on the CPU's instruction set: the graph runs on any
  machine's onnxruntime, but it is not plain ONNX, and GPU serving (CUDA, TensorRT) takes the
  fp32 or fp16 graph instead.
* ``int8``: dynamic quantization of the matrix products (int8 weights per output channel,
  activations quantized on the fly), for CPUs. Weights use 7 bits (``reduce_range``): on x86
  CPUs without VNNI (AVX2 only, e.g. AMD Zen 3) onnxruntime's u8s8 kernel sums pairs of
  products in 16 bits, which full-range weights overflow (measured: CER change +0.43 on the
  tests' tiny model; within bounds with 7 bits). Embeddings and the mapper's depthwise
  convolution stay float32: quantizing them costs far more accuracy than they cost time.
* ``fp16``: half-precision weights and arithmetic with float32 inputs and outputs, for GPUs.
  TensorRT 11 builds strongly typed networks, so this graph *is* the precision of the engine
  built from it. Sinusoidal positions and RMS norms stay float32: fp16 angles are off by a
  large fraction of a radian at positions in the hundreds, and squares overflow fp16.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from runtime.artifact import graph_filename

FP32_SCOPES = ("/positions/", "norm/")  # node-name scopes (torch module paths) kept float32

DESCRIPTIONS = {
    "fp32": "the exported graph; plain ONNX",
    "opt": "onnxruntime extended-level optimizations for its CPU provider, applied offline",
    "int8": "dynamic quantization of MatMul/Gemm: int8 weights per channel, int8 activations",
    "fp16": "float16 weights and arithmetic, float32 inputs/outputs; positions and norms float32",
}


def write_variant(directory: Path, graph: str, variant: str) -> Path:
    """``<graph>.<variant>.onnx`` from ``<graph>.onnx`` in ``directory``; returns its path."""
    source = directory / graph_filename(graph, "fp32")
    target = directory / graph_filename(graph, variant)
    if variant == "opt":
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    elif variant == "int8":
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
        )
        onnx.checker.check_model(onnx.load(target), full_check=True)
    elif variant == "fp16":
        model = onnx.load(source)
        keep = [node.name for node in model.graph.node if any(s in node.name for s in FP32_SCOPES)]
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
        _drop_round_trips(half)
        # The converter appends its casts out of order; checkers and TensorRT need topological.
        OnnxModel.graph_topological_sort(half.graph)
        onnx.checker.check_model(half, full_check=True)
        onnx.save(half, target)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return target


def _drop_round_trips(model: onnx.ModelProto) -> None:
    """Wire float32 values straight to the float32 nodes that read them. The converter passes
    every value between two nodes it kept in float32 through float16 and back (a pair of
    Casts), which rounds it and lets a norm's squares overflow."""
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    dtype |= {v.name: v.type.tensor_type.elem_type for v in graph.input}
    dtype |= {t.name: t.data_type for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    direct = {}
    for node in graph.node:
        up = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (
            up is not None
            and up.op_type == "Cast"
            and _cast_to(node) == onnx.TensorProto.FLOAT
            and _cast_to(up) == onnx.TensorProto.FLOAT16
            and dtype.get(up.input[0]) == onnx.TensorProto.FLOAT
        ):
            direct[node.output[0]] = up.input[0]
    for node in graph.node:
        node.input[:] = [direct.get(name, name) for name in node.input]
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    while dead := [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in read]:
        for node in dead:
            graph.node.remove(node)
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")
