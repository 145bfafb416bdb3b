"""`kmcorrect export`: checkpoint -> verified ONNX artifact (+ TensorRT engines with --tensorrt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.build import export_artifact
from export.config import ExportConfig
from export.tensorrt import DEFAULT_TIMING_CACHE, build_engines, require_tensorrt
from runtime.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ExportConfig()
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/editor-default"),
        help="run directory or checkpoint file (default: runs/editor-default, best checkpoint)",
    )
    parser.add_argument("--out", type=Path, help="artifact directory (default: artifacts/<run>)")
    parser.add_argument(
        "--data",
        type=Path,
        help="folder with test.jsonl to verify on (default: the test split of the checkpoint's "
        "training data if present, else strings generated from the vocabulary)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing artifact")
    parser.add_argument(
        "--variants",
        default=",".join(defaults.variants),
        help=f"comma-separated, fp32 always included (default: {','.join(defaults.variants)})",
    )
    parser.add_argument(
        "--max-cer-change",
        type=float,
        default=defaults.max_cer_change,
        help="most CER (absolute) int8 or fp16 may add over fp32 in verification "
        f"(default: {defaults.max_cer_change})",
    )
    parser.add_argument(
        "--verify-rows",
        type=int,
        default=defaults.verify_rows,
        help=f"inputs to verify on (default: {defaults.verify_rows})",
    )
    shapes = parser.add_argument_group("shapes (optimization profiles and limits)")
    shapes.add_argument("--max-batch", type=int, default=defaults.max_batch)
    shapes.add_argument("--opt-batch", type=int, default=defaults.opt_batch)
    shapes.add_argument(
        "--max-src-len", type=int, help="default: the checkpoint's training max_src_len"
    )
    shapes.add_argument("--opt-src-len", type=int, default=defaults.opt_src_len)
    shapes.add_argument(
        "--max-tgt-len", type=int, help="default: the checkpoint's training max_tgt_len + 1"
    )
    shapes.add_argument(
        "--max-n", type=int, default=defaults.max_n, help="most tokens per decoder call"
    )
    trt = parser.add_argument_group("TensorRT")
    trt.add_argument(
        "--tensorrt", action="store_true", help="also build TensorRT engines for this GPU"
    )
    trt.add_argument(
        "--tensorrt-from",
        choices=("fp16", "fp32"),
        default="fp16",
        help="graphs to build from; their precision is the engine's (default: fp16)",
    )
    trt.add_argument("--workspace-mb", type=int, default=1024)
    trt.add_argument(
        "--timing-cache",
        type=Path,
        default=DEFAULT_TIMING_CACHE,
        help=f"folder of timing caches kept across builds (default: {DEFAULT_TIMING_CACHE})",
    )


def run(args: argparse.Namespace) -> int:
    variants = tuple(dict.fromkeys(["fp32", *filter(None, args.variants.split(","))]))
    try:
        config = ExportConfig(
            max_batch=args.max_batch,
            opt_batch=args.opt_batch,
            max_src_len=args.max_src_len,
            opt_src_len=args.opt_src_len,
            max_tgt_len=args.max_tgt_len,
            max_n=args.max_n,
            variants=variants,
            verify_rows=args.verify_rows,
            max_cer_change=args.max_cer_change,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.tensorrt:
        require_tensorrt()  # before minutes of export, not after
        if args.tensorrt_from not in variants:
            raise UserError(f"--tensorrt-from {args.tensorrt_from} needs that variant exported")
    out = args.out or Path("artifacts") / _run_name(args.run_dir)
    artifact = export_artifact(args.run_dir, out, config, data=args.data, force=args.force)
    report = artifact.manifest["verification"]
    print(f"wrote {out} ({', '.join(sorted(artifact.manifest['files']))})")
    print(f"verified on {report['rows']} inputs ({report['inputs']}):")
    for variant, result in report["variants"].items():
        print(f"  {variant:5} {_summary(result, report['rows'])}")
    if args.tensorrt:
        engines = build_engines(
            artifact, args.tensorrt_from, args.workspace_mb << 20, args.timing_cache
        )
        print(f"wrote TensorRT engines to {engines}")
    return 0


def _run_name(model: Path) -> str:
    """``runs/x``, ``runs/x/checkpoints`` and ``runs/x/checkpoints/best.json`` are all run x."""
    path = model.resolve()
    if not path.is_dir():
        path = path.parent
    return path.parent.name if path.name == "checkpoints" else path.name


def _summary(result: dict, rows: int) -> str:
    if not result["verified"]:
        return result["reason"]
    worst = max(result["max_abs_diff"].values())
    line = f"max |diff| {worst:.2g}, greedy identical {result['greedy_identical']}/{rows}"
    if "cer_change" in result:
        line += f", CER change {result['cer_change']:+.4f}"
    if "cer" in result:
        line += f", CER {result['cer']:.4f}"
    return line
