"""The Khmer text layer: vocabulary, cluster grammar, normalization, chunking, edit spans, metrics.

Training and serving must tokenize and normalize exactly the same way, so the runtime owns this
layer and training imports it, never the reverse. Pure Python; no torch.
"""

from runtime.text.chunking import chunk, reassemble
from runtime.text.clusters import cluster_bounds, is_valid_cluster, segment, symbolize
from runtime.text.metrics import ScoreBoard, cer, cluster_error_rate, error_mix
from runtime.text.normalize import normalize
from runtime.text.passthrough import Piece, join_pieces, split_by_vocab
from runtime.text.spans import Span, apply_spans, edit_spans
from runtime.text.vocab import Vocab, is_khmer

__all__ = [
    "Piece",
    "ScoreBoard",
    "Span",
    "Vocab",
    "apply_spans",
    "cer",
    "chunk",
    "cluster_bounds",
    "cluster_error_rate",
    "edit_spans",
    "error_mix",
    "is_khmer",
    "is_valid_cluster",
    "join_pieces",
    "normalize",
    "reassemble",
    "segment",
    "split_by_vocab",
    "symbolize",
]
