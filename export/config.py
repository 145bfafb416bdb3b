"""What an export is for: the shapes it must serve (optimization profiles), the variants to
write, and the bounds its verification holds them to."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.artifact import VARIANTS


@dataclass(frozen=True)
class ExportConfig:
    # Shapes. A dynamic axis ranges over min..max; TensorRT tunes its kernels for opt (an opt
    # above its max is taken as the max). None: from the checkpoint's training config.
    max_batch: int = 32
    opt_batch: int = 8
    max_src_len: int | None = None  # longest source a graph takes; the server chunks longer text
    opt_src_len: int = 64
    max_tgt_len: int | None = None  # longest decoder sequence (bos + output): past_len + n <= it
    max_n: int = 64  # most tokens one decoder call takes (a prefill, or drafts to verify)
    opset: int = 17
    variants: tuple[str, ...] = VARIANTS
    # Verification.
    verify_rows: int = 200
    verify_batch: int = 32
    max_logit_diff: float = 1e-4  # fp32 and opt vs torch, every output of every graph
    max_cer_change: float = 0.01  # int8 and fp16, absolute CER vs fp32 (see verify.py)
    # The editor's gate (training/calibrate.py), calibrated on the validation split.
    calibration_rows: int = 4000
    max_clean_introduced: float = 0.0005  # CER introduced on clean rows
    max_harm: float = 0.01  # share of rows made worse

    def __post_init__(self) -> None:
        unknown = set(self.variants) - set(VARIANTS)
        if unknown or "fp32" not in self.variants:
            raise ValueError(f"variants must include fp32 and come from {VARIANTS}")
        sizes = [self.max_batch, self.opt_batch, self.opt_src_len, self.max_n, self.verify_rows]
        sizes += [self.verify_batch, self.max_src_len, self.max_tgt_len, self.calibration_rows]
        if any(size is not None and size < 1 for size in sizes):
            raise ValueError("batch sizes, lengths and row counts must be at least 1")
        if not (self.max_clean_introduced >= 0 and 0 <= self.max_harm <= 1):
            raise ValueError("the gate's bounds must be a CER >= 0 and a share of rows in 0..1")

    def axis_ranges(self) -> dict[str, tuple[int, int, int]]:
        """(min, opt, max) of every dynamic axis name the graphs use."""
        opt_past = min(self.opt_src_len, self.max_tgt_len - 1)
        return {
            "batch": (1, min(self.opt_batch, self.max_batch), self.max_batch),
            "src_len": (1, min(self.opt_src_len, self.max_src_len), self.max_src_len),
            "past_len": (0, opt_past, self.max_tgt_len - 1),
            "n": (1, 1, min(self.max_n, self.max_tgt_len)),
            "total_len": (1, opt_past + 1, self.max_tgt_len),
        }

    def limits(self) -> dict[str, int]:
        return {
            "max_batch": self.max_batch,
            "max_src_len": self.max_src_len,
            "max_tgt_len": self.max_tgt_len,
            "max_n": self.axis_ranges()["n"][2],
        }
