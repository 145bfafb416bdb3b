"""Checkpoints as safetensors (every tensor) + JSON (everything else), written atomically.

    <run>/checkpoints/<tag>.<sha16>.safetensors   model.* weights, optim.<param>.<key>
                                          optimizer state, rng.torch (and rng.cuda.<i>)
                                          generator states
    <run>/checkpoints/<tag>.json          format/version, model name + config, vocabulary,
                                          progress (epoch, step, batch position), metrics,
                                          optimizer param groups, scheduler, Python RNG state,
                                          the tensors file's name and sha256

No pickle anywhere: a checkpoint from an untrusted source can at worst fail to load. Tensors
files are named by their content and never overwritten; the JSON is replaced last, in one
rename, and only then are the tag's older tensors files removed. So a process killed at any
instant (SIGKILL, power loss) leaves a JSON naming a complete tensors file: the new checkpoint
or the previous one, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from runtime.artifact import sha256_file
from runtime.errors import UserError
from runtime.text import Vocab
from training.models import model_from_config

FORMAT = "khmer-correct-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (on CPU, eval mode) and what came with it."""

    model_name: str
    model: nn.Module
    vocab: Vocab
    meta: dict  # the JSON side
    tensors: dict[str, torch.Tensor]  # everything in the safetensors file (model.*, optim.*, rng.*)


def tensors_path(info: Path) -> Path:
    """The tensors file a checkpoint JSON names (its `tensors` entry)."""
    return Path(info).parent / _tensors_name(Path(info), json.loads(Path(info).read_text("utf-8")))


def _tensors_name(info: Path, meta: dict) -> str:
    # Checkpoints written before tensors files were named by content: <tag>.safetensors.
    tensors = meta.get("tensors", f"{info.stem}.safetensors")
    if not isinstance(tensors, str) or Path(tensors).name != tensors:
        raise UserError(f"{info}: names no tensors file in this folder")
    return tensors


def _write_temp(directory: Path, name: str, write) -> Path:
    """A fsynced temp file beside `name`, filled by `write(path)`; the caller renames it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def save(
    directory: Path,
    tag: str,
    *,
    model_name: str,
    model: nn.Module,
    vocab: Vocab,
    meta: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write <directory>/<tag>.<sha16>.safetensors, then <tag>.json naming it; returns the
    JSON path."""
    directory = Path(directory)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    staged = _write_temp(directory, f"{tag}.safetensors", lambda tmp: save_file(tensors, tmp))
    digest = sha256_file(staged)
    weights = directory / f"{tag}.{digest[:16]}.safetensors"
    os.replace(staged, weights)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "model_config": asdict(model.config),
        "vocab": vocab.to_dict(),
        "tensors": weights.name,
        "sha256": digest,
        **meta,
    }
    info = directory / f"{tag}.json"
    text = json.dumps(record, ensure_ascii=False, indent=1)
    os.replace(
        _write_temp(directory, info.name, lambda tmp: Path(tmp).write_text(text, "utf-8")), info
    )
    # Committed: the tag's older tensors files, and temp files a killed save left, can go.
    for stale in [*directory.glob(f"{tag}.*.safetensors"), *directory.glob(f".{tag}.*.tmp")]:
        if stale != weights:
            stale.unlink(missing_ok=True)
    return info


def resolve(path: Path, tag: str = "best") -> Path:
    """The checkpoint JSON of a run directory, a checkpoints directory or either file."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / f"{tag}.json", path / f"{tag}.json"):
            if candidate.exists():
                return candidate
        raise UserError(f"no '{tag}' checkpoint in {path} (expected checkpoints/{tag}.json)")
    if path.suffix == ".safetensors":  # <tag>.<sha16>.safetensors -> <tag>.json
        path = path.with_name(path.name.split(".")[0] + ".json")
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    return path


def load(path: Path, tag: str = "best") -> Checkpoint:
    """Load and verify a checkpoint; any corrupt or foreign file is a UserError naming it."""
    info = resolve(path, tag)
    try:
        meta = json.loads(info.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{info}: not a khmer-correct checkpoint (unreadable JSON: {exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{info}: not a khmer-correct checkpoint (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise UserError(f"{info}: checkpoint version {meta.get('version')} is not {VERSION}")
    weights = info.parent / _tensors_name(info, meta)
    if not weights.exists():
        raise UserError(f"{info}: its tensors file {weights.name} is missing")
    if sha256_file(weights) != meta.get("sha256"):
        raise UserError(f"{weights}: sha256 does not match {info.name}; the file is corrupt")
    try:
        tensors = load_file(weights)
        vocab = Vocab.from_dict(meta["vocab"])
        model = model_from_config(meta["model"], meta["model_config"])
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(state)
    except (SafetensorError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"{info}: checkpoint does not load: {exc}") from None
    model.eval()
    return Checkpoint(meta["model"], model, vocab, meta, tensors)
