"""An exported model as the runtime sees it: `artifacts/<name>/`, verified before use.

    manifest.json           what is here and where it came from (written by `kmcorrect export`)
    editor.onnx             src_ids, src_mask -> labels, probs (the editor: one pass, no decoder)
    encoder.onnx            src_ids, src_mask -> memory, cross_k_i, cross_v_i
    decoder.onnx            tokens, positions, src_mask, tgt_key_mask, cross K/V, past K/V
                            -> logits, present K/V
    mapper.onnx             src_ids, src_mask -> sub_logits (hybrid models only)
    <graph>.<variant>.onnx  the same graphs optimized (opt), quantized (int8) or in half (fp16)
    engines/<gpu>/          TensorRT plans, each directory with its own engine.json

The manifest lists the sha256 of every graph and carries a checksum of itself; each
engine.json lists the sha256 of its plans. `load_artifact` refuses a directory where any of
them does not match, so a server never runs a graph other than the one export verified.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runtime.errors import UserError
from runtime.text import Vocab

FORMAT = "khmer-correct-artifact"
VERSION = 1
MANIFEST = "manifest.json"
ENGINE_INFO = "engine.json"
VARIANTS = ("fp32", "opt", "int8", "fp16")


def graph_filename(graph: str, variant: str) -> str:
    """``encoder.onnx`` for fp32, ``encoder.int8.onnx`` for a variant."""
    return f"{graph}.onnx" if variant == "fp32" else f"{graph}.{variant}.onnx"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own ``checksum`` field."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A verified artifact directory; ``manifest`` is manifest.json as written by export."""

    path: Path
    manifest: dict
    vocab: Vocab
    engines: dict[str, dict]  # engines/<gpu>/engine.json by <gpu>, each verified

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def model_config(self) -> dict:
        return self.manifest["model"]["config"]

    @property
    def graphs(self) -> dict[str, dict]:
        """Per graph (encoder, decoder, mapper): inputs, outputs, dynamic_axes, files by variant."""
        return self.manifest["graphs"]

    @property
    def limits(self) -> dict[str, int]:
        """The lengths and batch the graphs were exported and verified for (max_src_len, ...)."""
        return self.manifest["limits"]

    @property
    def variants(self) -> list[str]:
        """The variants every graph was written in (fp32 first)."""
        return list(next(iter(self.graphs.values()))["files"])

    def graph_path(self, graph: str, variant: str = "fp32") -> Path:
        files = self.graphs.get(graph, {}).get("files", {})
        if variant not in files:
            have = ", ".join(f"{g}: {sorted(info['files'])}" for g, info in self.graphs.items())
            raise UserError(f"{self.path}: no {variant} {graph} graph (exported: {have})")
        return self.path / files[variant]


def load_artifact(directory: str | Path) -> Artifact:
    """Read and verify an artifact; every problem is a UserError naming the file at fault."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"{manifest_path} not found: {directory} is not a khmer-correct artifact "
            "(make one with `kmcorrect export`)"
        )
    manifest = _read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path}: not a khmer-correct artifact manifest")
    if manifest.get("version") != VERSION:
        raise UserError(f"{manifest_path}: version {manifest.get('version')} is not {VERSION}")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise UserError(f"{manifest_path}: edited after export (its checksum does not match)")
    _verify_files(directory, manifest_path, manifest.get("files", {}))
    try:
        vocab = Vocab.from_dict(manifest["vocab"])
    except (KeyError, ValueError) as exc:
        raise UserError(f"{manifest_path}: bad vocabulary: {exc}") from None
    engines = {}
    for info_path in sorted(directory.glob(f"engines/*/{ENGINE_INFO}")):
        info = _read_json(info_path)
        _verify_files(info_path.parent, info_path, info.get("files", {}))
        engines[info_path.parent.name] = info
    return Artifact(directory, manifest, vocab, engines)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def _verify_files(directory: Path, listed_in: Path, files: dict[str, str]) -> None:
    if not files:
        raise UserError(f"{listed_in}: lists no files")
    for name, digest in files.items():
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise UserError(f"{listed_in}: file name {name!r} points outside {directory}")
        path = directory / name
        if not path.is_file():
            raise UserError(f"{path}: missing (listed in {listed_in.name})")
        if sha256_file(path) != digest:
            raise UserError(
                f"{path}: sha256 does not match {listed_in.name}; the file is corrupt or was "
                "modified after export"
            )
