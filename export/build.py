"""checkpoint -> verified artifact directory (see runtime/artifact.py for the layout).

The artifact is built in a hidden staging directory beside ``out`` and moved into place only
once every graph is written, checked and verified, so a failed export never leaves a
half-written or unverified artifact behind, nor destroys the one it was to replace.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from export.config import ExportConfig
from export.graphs import export_graph, graph_wrappers, profile
from export.variants import DESCRIPTIONS, write_variant
from export.verify import make_probe, verify
from runtime.artifact import (
    FORMAT,
    MANIFEST,
    VERSION,
    Artifact,
    graph_filename,
    load_artifact,
    manifest_checksum,
    sha256_file,
)
from runtime.corrector import Corrector, ModelInfo
from runtime.editing import Gate
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.files import write_atomic
from training import checkpoint
from training.calibrate import calibrate
from training.data.rows import read_rows
from training.models import count_parameters


def export_artifact(
    model_path: Path,
    out: Path,
    config: ExportConfig | None = None,
    *,
    data: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Artifact:
    """Export the checkpoint at ``model_path`` (a run directory or checkpoint file) to ``out``
    and verify it on ``data`` (a test split; default: that of the training data, if present,
    else generated strings). A verification failure is a UserError listing every bound missed."""
    out = Path(out)
    _check_destination(out, force)
    ckpt = checkpoint.load(Path(model_path))
    wrappers = graph_wrappers(ckpt.model_name, ckpt.model)
    config = _fill_lengths(config or ExportConfig(), ckpt.meta)
    probe = make_probe(ckpt.vocab, config, data or _training_test_split(ckpt.meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        manifest = _manifest(ckpt, Path(model_path), config)
        manifest["graphs"], manifest["profiles"] = _write_graphs(wrappers, staging, config, log)
        write_manifest(staging, manifest)
        log(f"verifying on {len(probe.ids)} inputs")
        report = verify(ckpt.model, wrappers, load_artifact(staging), probe, config)
        manifest["verification"] = report
        write_manifest(staging, manifest)
        if report["failures"]:
            raise UserError("export verification failed:\n  " + "\n  ".join(report["failures"]))
        if ckpt.model_name == "editor":
            manifest["gate"] = _calibrate_gate(staging, ckpt.meta, data, config, log)
            write_manifest(staging, manifest)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_artifact(out)


def _write_graphs(
    wrappers: dict, directory: Path, config: ExportConfig, log: Callable[[str], None]
) -> tuple[dict, dict]:
    """Every graph in every variant; returns the manifest's ``graphs`` and ``profiles``."""
    graphs, profiles = {}, {}
    for name, wrapper in wrappers.items():
        log(f"exporting {name}: {', '.join(config.variants)}")
        graphs[name] = export_graph(name, wrapper, directory, config.opset)
        graphs[name]["files"] = {"fp32": graph_filename(name, "fp32")}
        for variant in config.variants:
            if variant != "fp32":
                graphs[name]["files"][variant] = write_variant(directory, name, variant).name
        profiles[name] = profile(directory / graph_filename(name, "fp32"), config.axis_ranges())
    return graphs, profiles


def _manifest(ckpt: checkpoint.Checkpoint, model_path: Path, config: ExportConfig) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "packages": _package_versions(),
        "model": {
            "name": ckpt.model_name,
            "config": asdict(ckpt.model.config),
            "parameters": count_parameters(ckpt.model),
        },
        "checkpoint": {
            "path": str(model_path),
            "sha256": ckpt.meta.get("sha256"),
            **{key: ckpt.meta.get(key) for key in ("progress", "metrics", "best")},
        },
        "vocab": ckpt.vocab.to_dict(),
        "limits": config.limits(),
        "opset": config.opset,
        "variants": {variant: DESCRIPTIONS[variant] for variant in config.variants},
    }


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write manifest.json, filling in ``files`` (the sha256 of every other file in
    ``directory``; each engines/<gpu>/engine.json lists its own) and ``checksum``."""
    manifest["files"] = {
        path.name: sha256_file(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    manifest.pop("checksum", None)
    manifest = json.loads(json.dumps(manifest))  # the checksum covers what a reader will see
    manifest["checksum"] = manifest_checksum(manifest)
    write_atomic(directory / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")


def _check_destination(out: Path, force: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    if not (out / MANIFEST).is_file():
        raise UserError(f"{out} exists and is not an artifact directory; not replacing it")


def _fill_lengths(config: ExportConfig, meta: dict) -> ExportConfig:
    """Lengths left unset come from the checkpoint's training config: the model has never seen
    longer sources, so the server chunks text to the same length."""
    train = meta.get("train_config") or {}
    lengths = {}
    if config.max_src_len is None:
        lengths["max_src_len"] = train.get("max_src_len", 256)
    if config.max_tgt_len is None:  # bos + target; the eos is produced, never fed
        lengths["max_tgt_len"] = train.get("max_tgt_len", 319) + 1
    return replace(config, **lengths)


def _calibrate_gate(
    staging: Path, meta: dict, data: Path | None, config: ExportConfig, log
) -> dict:
    """The editor's gate from the validation split beside the test split (``data``, else the
    training data), run through the fp32 graph as serving runs it."""
    folder = data if data is None or data.is_dir() else data.parent
    folder = folder or Path((meta.get("train_config") or {}).get("data", "."))
    path = folder / "val.jsonl"
    if not path.is_file():
        log(f"no {path}: the gate is left open (every edit applied); --data DIR with val.jsonl")
        return {"min_confidence": 0.0, "calibrated": False, "reason": f"no {path}"}
    rows = [row for _, row in zip(range(config.calibration_rows), read_rows(path), strict=False)]
    artifact = load_artifact(staging)
    corrector = Corrector(ModelInfo.of_artifact(artifact), OnnxEngine(artifact, "fp32"))
    log(f"calibrating the gate on {len(rows)} rows of {path}")
    gate = calibrate(
        corrector, rows, max_clean_introduced=config.max_clean_introduced, max_harm=config.max_harm
    )
    chosen = gate["chosen"]
    log(
        f"gate: {Gate.of_settings(gate, None).describe()} "
        f"(validation CER {chosen['cer_before']:.4f} "
        f"-> {chosen['cer_after']:.4f}, rows made worse {chosen['harm_rate']:.2%}, clean CER "
        f"introduced {chosen['clean_cer_introduced']:.4%}; bounds met: {gate['bounds_met']})"
    )
    return {**gate, "calibrated": True, "source": str(path)}


def _training_test_split(meta: dict) -> Path | None:
    """The test split of the data the checkpoint was trained on, if it is here."""
    folder = (meta.get("train_config") or {}).get("data")
    return Path(folder) if folder and (Path(folder) / "test.jsonl").is_file() else None


def _package_versions() -> dict[str, str]:
    try:
        ours = metadata.version("khmer-correct")
    except metadata.PackageNotFoundError:
        ours = "unknown (not installed)"
    return {
        "khmer-correct": ours,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
