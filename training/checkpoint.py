"""Checkpoints as safetensors (every tensor) + JSON (everything else), written atomically.

    <run>/checkpoints/<tag>.safetensors   model.* weights, optim.<param>.<key> optimizer
                                          state, rng.torch (and rng.cuda.<i>) generator states
    <run>/checkpoints/<tag>.json          format/version, model name + config, vocabulary,
                                          progress (epoch, step, batch position), metrics,
                                          optimizer param groups, scheduler, Python RNG state,
                                          sha256 of the .safetensors file

No pickle anywhere: a checkpoint from an untrusted source can at worst fail to load. The JSON
is written last, so a checkpoint is complete exactly when its JSON names the hash of its
tensors; a crash mid-write leaves the previous checkpoint intact.
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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Write <directory>/<tag>.safetensors and <tag>.json; returns the JSON path."""
    directory = Path(directory)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    weights = directory / f"{tag}.safetensors"
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    record = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "model_config": asdict(model.config),
        "vocab": vocab.to_dict(),
        "sha256": sha256_file(weights),
        **meta,
    }
    info = directory / f"{tag}.json"
    text = json.dumps(record, ensure_ascii=False, indent=1)
    _atomic_write(info, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return info


def resolve(path: Path, tag: str = "best") -> Path:
    """The checkpoint JSON of a run directory, a checkpoints directory or either file."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / f"{tag}.json", path / f"{tag}.json"):
            if candidate.exists():
                return candidate
        raise UserError(f"no '{tag}' checkpoint in {path} (expected checkpoints/{tag}.json)")
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
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
    weights = info.with_suffix(".safetensors")
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
