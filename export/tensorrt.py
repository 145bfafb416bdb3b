"""TensorRT engines from an artifact's ONNX graphs, for the GPU this runs on.

    artifacts/<name>/engines/<gpu>/{encoder,decoder[,mapper]}.plan
    artifacts/<name>/engines/<gpu>/engine.json   TensorRT version, GPU name and compute
                                                 capability, source graphs, profiles, sha256s

Plans are built from the fp16 graphs by default: TensorRT 11 networks are strongly typed (its
precision flags are gone), so the precision is the graph's. Each graph gets one optimization
profile spanning the manifest's min/opt/max shapes, and a timing cache file, kept across
builds, makes rebuilding for the same GPU fast. Plans run only on the GPU model and TensorRT
version they were built with, hence one directory per GPU. The same build with ``trtexec``
is in export/README.md.

``tensorrt`` and cuda-python are imported only when a build starts; without them (or without
a GPU) a build is a UserError naming what is missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.artifact import ENGINE_INFO, Artifact, sha256_file
from runtime.errors import UserError

DEFAULT_TIMING_CACHE = Path(".cache/kmcorrect/tensorrt")  # one file per GPU and TensorRT version


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str

    @property
    def slug(self) -> str:
        """Directory name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def require_tensorrt():
    """``(tensorrt module, the GPU it will build for)``, or a UserError naming what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(
            "--tensorrt needs TensorRT: pip install tensorrt cuda-python (NVIDIA GPUs only)"
        ) from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise UserError("--tensorrt needs cuda-python: pip install cuda-python") from None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        raise UserError(f"--tensorrt needs an NVIDIA GPU: no CUDA device is visible ({err})")
    err, prop = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        raise UserError(f"cannot read the properties of CUDA device 0 ({err})")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return trt, Gpu(name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}")


def build_engines(
    artifact: Artifact,
    variant: str = "fp16",
    workspace_bytes: int = 1 << 30,
    timing_cache_dir: Path = DEFAULT_TIMING_CACHE,
) -> Path:
    """Build a plan for every graph of ``artifact`` from its ``variant`` graphs into
    ``engines/<gpu>/``; returns that directory."""
    trt, gpu = require_tensorrt()
    if variant not in ("fp16", "fp32"):
        raise UserError(f"TensorRT engines are built from the fp16 or fp32 graphs, not {variant}")
    out = artifact.path / "engines" / gpu.slug
    out.mkdir(parents=True, exist_ok=True)
    (out / ENGINE_INFO).unlink(missing_ok=True)  # plans and their record change together
    cache_path = Path(timing_cache_dir) / f"{gpu.slug}-trt{trt.__version__}.timing"
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    files, sources = {}, {}
    for graph in artifact.graphs:
        source = artifact.graph_path(graph, variant)
        plan, cache = _build_plan(
            trt,
            builder,
            logger,
            source,
            artifact.manifest["profiles"][graph],
            workspace_bytes,
            cache,
        )
        (out / f"{graph}.plan").write_bytes(plan)
        files[f"{graph}.plan"] = sha256_file(out / f"{graph}.plan")
        sources[source.name] = artifact.manifest["files"][source.name]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(cache)
    info = {
        "tensorrt": trt.__version__,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "built_from": variant,
        "sources": sources,
        "profiles": artifact.manifest["profiles"],
        "workspace_bytes": workspace_bytes,
        "files": files,
    }
    (out / ENGINE_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return out


def _build_plan(trt, builder, logger, onnx_path: Path, profile, workspace: int, cache: bytes):
    """``(serialized plan, updated timing cache)`` of one ONNX graph."""
    # Strong typing (precision from the graph) is the only mode of TensorRT 11, opt-in in 10.
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    shapes = builder.create_optimization_profile()
    for name, dims in profile.items():
        shapes.set_shape(name, dims["min"], dims["opt"], dims["max"])
    config.add_optimization_profile(shapes)
    config.set_timing_cache(config.create_timing_cache(cache), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"{onnx_path}: TensorRT could not build an engine (its log is above)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())
