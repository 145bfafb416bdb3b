"""The trainer behind `kmcorrect train`: one loop, readable top to bottom (after nanoGPT's).

    data/<name>/{train,val}.jsonl ─► normalize + encode ─► length-bucketed batches (batching.py)
      ─► model.loss ─► AdamW or Muon + AdamW (warm-up + cosine, grad clip, AMP on GPU)
      ─► every epoch: val loss + greedy-decoded val CER ─► checkpoints `best` (by CER) and `last`

Run directory (``runs/<model>-<data name>`` by default)::

    config.json            the TrainConfig of the run (batch_tokens as chosen by ``auto``)
    run.json               state (running, finished, failed, interrupted), process, device, the
                           batch choice, the plan (epochs, steps, budget) and, at the end, the
                           figures per device: tokens/s, peak memory; `kmcorrect monitor` reads it
    metrics.csv            step, epoch, lr, train loss, val loss, val CER, tokens/s, elapsed,
                           budget used (seconds on the budget's clock: CPU time under
                           --budget-clock cpu, so curves compare at equal CPU time),
                           peak memory (MiB: the allocator's on CUDA, the process's RSS on CPU)
    events.out.tfevents.*  the same for TensorBoard (`tensorboard --logdir runs`)
    checkpoints/{best,last}.{safetensors,json}   see training/checkpoint.py; meta below

Several processes (``torchrun --nproc_per_node N -m kmcorrect train ...``): DDP over nccl on
CUDA, gloo on CPU. Every process builds the same epoch batch list and takes every N-th batch, so
one optimizer step consumes N batches. Loss normalization: each process scales its batch's mean
loss by ``n_local * N / n_global`` (target tokens, all-reduced before the backward pass); DDP's
gradient averaging then yields the gradient of the token-weighted mean over the whole global
batch, which is exactly what one process computes on all those rows together for the decoder
cross-entropy. (The hybrid's auxiliary substitution loss is a mean over aligned source positions
instead; across processes it is weighted by target tokens, which matches one process only when
the shards' shares of both agree.) Only rank 0 validates, prints and writes files.

Resuming (``--resume``) continues exactly where `last` was saved: weights, optimizer moments and
param groups, the grad scaler, every process's torch RNG state, Python's RNG state, and the data
position ``(epoch, batch_index)``; batches are a pure function of (seed, epoch), so the rest of
the epoch is rebuilt, not stored. The learning rate is a pure function of the step.

Checkpoint meta (JSON side; tensors: ``model.*``, ``optim.<param index>.<key>``,
``rng.<cpu|cuda|mps>.<rank>``)::

    train_config  asdict(TrainConfig)
    batch         how batch_tokens was chosen (see choose_batch_tokens), kept by --resume
    progress      epoch, batch_index (batches of that epoch's list consumed), step, tokens,
                  elapsed_s, best_cer, best_step, bad_epochs (for --patience), world_size
    metrics       val_cer, val_loss, val (ScoreBoard.as_dict()), val_step: the latest validation
    optimizer     name, param_groups (tensor-free)
    schedule      warmup_steps, total_steps, lr, min_lr
    grad_scaler   GradScaler.state_dict() (empty without fp16)
    rng           python: random.getstate()
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import platform
import random
import socket
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from runtime.errors import UserError
from runtime.files import write_atomic
from runtime.text import ScoreBoard, Vocab, normalize
from training import checkpoint, optim
from training.batching import bucketed_batches
from training.data.rows import read_rows
from training.models import build_model, count_parameters
from training.monitor import describe_batch
from training.torch_engine import model_corrector

# Defaults that depend on the device (the fields left None). On a CPU a bare `kmcorrect train`
# must end within 10 minutes with a usable model, and in so short a budget many small steps beat
# a few large ones (2 cores, 4 minutes: 1024-token batches reached val loss 1.50, 2048 1.93,
# 6144 2.71).
# On CUDA the card decides (`auto`: the largest budget it holds, see choose_batch_tokens).
CPU_DEFAULTS = {"batch_tokens": 1024, "max_minutes": 8.5, "val_every_minutes": 10.0}
GPU_DEFAULTS = {"batch_tokens": 16384, "max_minutes": 0.0, "val_every_minutes": 0.0}
CUDA_DEFAULTS = GPU_DEFAULTS | {"batch_tokens": "auto"}
# The editor's own, measured side by side at equal CPU time (docs/results.md): a higher peak
# rate, Muon for its hidden matrices, and on a CPU 2048-token batches (it has no decoder, so a
# batch holds more input).
EDITOR_DEFAULTS = {"lr": 4e-3, "optimizer": "muon"}
EDITOR_CPU_DEFAULTS = {"batch_tokens": 2048}
EVAL_BATCH = 64
METRICS = ["step", "epoch", "lr", "train_loss", "val_loss", "val_cer", "tokens_per_s", "elapsed_s"]
METRICS += ["budget_s", "peak_mem_mb"]
AUTO = "auto"
# `auto`: keep this share of the memory free for what one probe step does not show (fragmentation,
# longer validation batches, other processes' growth).
HEADROOM = 0.85
# Caps the memory `auto` may plan for, in MiB: a card shared with others, and the tests, which
# on a CPU make `auto` a memory probe too (it counts the bytes a step keeps for its backward).
MEMORY_LIMIT_ENV = "KMCORRECT_TRAIN_MEMORY_MB"
SPEED_TRIAL_BUDGETS = (1024, 2048, 4096, 8192)  # `auto` without a memory limit tries these
SPEED_TRIAL_STEPS = 4  # timed steps per budget, after one untimed warm-up step
# What a time budget counts. "cpu" (this process's CPU time) gives runs that share a machine the
# same work whatever else runs there: the fair clock for side-by-side comparisons.
BUDGET_CLOCKS = {"wall": time.monotonic, "cpu": time.process_time}
SPEED_TRIAL_SECONDS = 3.0  # or fewer steps, once a budget has been timed this long


@dataclass
class TrainConfig:
    """One training run; stored as ``config.json`` and with every checkpoint."""

    model: str = "editor"
    preset: str = "default"
    dropout: float | None = None  # None: the preset's
    data: str = "data/default"  # a folder with train.jsonl and val.jsonl
    run_dir: str | None = None  # None: runs/<model>-<data folder name>
    batch_tokens: int | str | None = None  # padded source + target tokens per batch and process;
    # "auto": the largest the card holds (CUDA, the default there), else the fastest of a trial
    max_batch_rows: int = 64
    lr: float | None = None  # peak; None: 4e-3 for the editor, else 2e-3
    optimizer: str | None = None  # training.optim.OPTIMIZERS; None: muon for the editor, else adamw
    weight_decay: float = 0.01
    warmup_steps: int = 100
    epochs: int = 10
    clean_copies: float = 0.15  # extra train rows, as a share of the split, whose input is a
    # train target: clean text in, the same text out (docs/results.md "Clean copies")
    max_src_len: int = 320  # longer rows are skipped (and counted)
    max_tgt_len: int = 256
    grad_clip: float = 1.0
    amp: str = "auto"  # GPU only: auto (bf16 where supported, else fp16), bf16, fp16, off
    seed: int = 0
    eval_rows: int = 200  # val rows corrected for the CER
    val_every_minutes: float | None = None  # also validate this often, on the budget's clock
    # (0: at epoch ends only), so that runs on the CPU clock are validated at equal CPU time
    patience: int = 3  # stop after this many validations without a better CER; 0: never
    max_minutes: float | None = None  # time budget; 0: none
    budget_clock: str = "wall"  # what the budget counts: wall time, or this process's CPU time
    max_steps: int = 0  # stop (validate, save) after this many steps in all; 0: no limit
    save_every: int = 500  # steps between `last` checkpoints (also saved at every epoch end)
    log_every: int = 50
    device: str = "auto"  # auto, cuda, mps, cpu
    resume: bool = False
    progress: bool = True


# Settings a resumed run may change: when and how to stop, where and how loudly to run.
RESUMABLE = {"epochs", "patience", "max_minutes", "max_steps", "save_every", "log_every"}
RESUMABLE |= {"val_every_minutes"}
RESUMABLE |= {"device", "resume", "progress", "run_dir"}
# What a run saved before a setting existed did instead, where that differs from its default now.
BEFORE_SETTING = {"clean_copies": 0.0, "optimizer": "adamw"}


@dataclass
class TrainResult:
    run_dir: Path
    best: Path | None  # best.json, None if training never validated
    best_cer: float | None
    steps: int
    stop: str  # "epochs", "max_steps", "max_minutes", "patience"


def with_defaults(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """``cfg`` with every field left None set for its device and model."""
    cpu = device.type == "cpu"
    on_device = {"cpu": CPU_DEFAULTS, "cuda": CUDA_DEFAULTS}.get(device.type, GPU_DEFAULTS)
    defaults = {"lr": 2e-3, "optimizer": "adamw", **on_device}
    if cfg.model == "editor":
        defaults |= EDITOR_DEFAULTS | (EDITOR_CPU_DEFAULTS if cpu else {})
    return replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def check(cfg: TrainConfig) -> None:
    """Reject settings that cannot work, before any data is read."""
    positive = ("max_batch_rows", "epochs", "max_src_len", "max_tgt_len", "eval_rows", "log_every")
    if cfg.batch_tokens != AUTO:
        positive += ("batch_tokens",)
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("warmup_steps", "patience", "max_steps", "save_every"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative")
    if cfg.max_minutes < 0 or cfg.val_every_minutes < 0 or cfg.clean_copies < 0:
        raise UserError(
            "--max-minutes, --val-every-minutes and --clean-copies must not be negative"
        )
    if cfg.budget_clock not in BUDGET_CLOCKS:
        raise UserError(f"--budget-clock must be one of {', '.join(BUDGET_CLOCKS)}")
    if cfg.optimizer not in optim.OPTIMIZERS:
        raise UserError(f"--optimizer must be one of {', '.join(optim.OPTIMIZERS)}")
    if not cfg.lr > 0 or not cfg.grad_clip > 0 or cfg.weight_decay < 0:
        raise UserError("--lr and --grad-clip must be positive, --weight-decay not negative")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise UserError(f"--dropout must be within [0, 1), got {cfg.dropout}")
    if cfg.batch_tokens != AUTO and cfg.batch_tokens < row_tokens(cfg):
        raise UserError(
            f"--batch-tokens {cfg.batch_tokens} cannot hold one row of the longest allowed "
            f"lengths ({cfg.max_src_len} + {cfg.max_tgt_len} + 2)"
        )
    if cfg.amp not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"--amp must be auto, bf16, fp16 or off, not {cfg.amp!r}")


def row_tokens(cfg: TrainConfig) -> int:
    """Padded tokens of one row of the longest allowed lengths: source + [bos] target [eos]."""
    return cfg.max_src_len + cfg.max_tgt_len + 2


# ----------------------------------------------------------------------------- processes


@dataclass
class Dist:
    """This process's place among the torchrun processes (one process: world 1, rank 0)."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *values: float) -> list[float]:
        """Sum each value over all processes; with rank 0 alone passing non-zeros, a broadcast."""
        if self.world == 1:
            return [float(v) for v in values]
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return total.tolist()

    def gather(self, obj: object) -> list:
        if self.world == 1:
            return [obj]
        every: list = [None] * self.world
        torch.distributed.all_gather_object(every, obj)
        return every


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"--device cuda: CUDA is not available (torch {torch.__version__} sees no GPU); "
                "use --device cpu or auto"
            )
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    if name not in ("mps", "cpu"):
        raise UserError(f"unknown --device {name!r}: use auto, cuda, mps or cpu")
    return torch.device(name)


def connect(device_name: str) -> Dist:
    """Read torchrun's WORLD_SIZE/RANK/LOCAL_RANK, pick the device, join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1:
        if device.type == "mps":
            raise UserError("multi-process training runs on CUDA or CPU, not MPS")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend, rank=rank, world_size=world)
    return Dist(world, rank, device)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (always on CPU and MPS)."""
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            raise UserError(f"--amp {amp} needs a CUDA GPU; this run is on {device.type}")
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    input: str  # normalized, as serving will see it
    target: str
    src: list[int]  # input ids, no bos/eos
    tgt: list[int]  # [bos] + target ids + [eos]


def load_split(path: Path, vocab: Vocab, cfg: TrainConfig) -> tuple[list[Example], int]:
    """The rows of one split, normalized and encoded; rows over the length limits are skipped
    (returned: how many)."""
    examples, skipped = [], 0
    try:
        for row in read_rows(path):
            text, target = normalize(row["input"]), normalize(row["target"])
            if len(text) > cfg.max_src_len or len(target) > cfg.max_tgt_len:
                skipped += 1
                continue
            tgt = [vocab.bos_id, *vocab.encode(target), vocab.eos_id]
            examples.append(Example(text, target, vocab.encode(text), tgt))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return examples, skipped


def clean_copies(examples: list[Example], share: float, vocab: Vocab, seed: int) -> list[Example]:
    """Rows that teach a corrector to leave clean text alone: train targets given as their own
    input, ``share`` of the split in number; every distinct target once before any twice.

    Most train rows are damaged, so without them a model learns that text always needs an edit,
    and a spurious space being the commonest damage, it deletes real ones on clean text: the
    clean-text damage that binds the editor's confidence gate (docs/results.md).
    """
    targets = sorted({e.target: e for e in examples}.values(), key=lambda e: e.target)
    rng, wanted, chosen = random.Random(f"clean-copies/{seed}"), round(share * len(examples)), []
    while targets and len(chosen) < wanted:
        chosen += rng.sample(targets, min(wanted - len(chosen), len(targets)))
    return [Example(e.target, e.target, vocab.encode(e.target), e.tgt) for e in chosen]


def collate(batch: list[Example], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``(src_ids, src_mask, tgt_ids)`` on the CPU."""
    src = torch.full((len(batch), max(1, *(len(e.src) for e in batch))), pad_id)
    tgt = torch.full((len(batch), max(len(e.tgt) for e in batch)), pad_id)
    for i, e in enumerate(batch):
        src[i, : len(e.src)] = torch.tensor(e.src)
        tgt[i, : len(e.tgt)] = torch.tensor(e.tgt)
    return src, src != pad_id, tgt


# ----------------------------------------------------------------------------- optimization


class Objective(nn.Module):
    """``model.loss`` as a forward pass: DDP syncs the gradients of what runs through the forward
    of the module it wraps, and the models' training loss is a separate method."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor):
        return self.model.loss(src_ids, src_mask, tgt_ids)


def global_share(loss: Tensor, n_local: float, n_global: float, world: int) -> Tensor:
    """This process's batch-mean ``loss`` rescaled so that DDP's gradient *average* over processes
    is the gradient of the token-weighted mean over the global batch (see the module docstring)."""
    return loss * (n_local * world / n_global)


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    return optim.make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)


def lr_at(step: int, cfg: TrainConfig, total_steps: int, time_done: float = 0.0) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr / 10`` at ``total_steps`` or,
    under a time budget, at its end if that comes first (``time_done``: share of the budget
    used), so a short run still anneals instead of stopping at its peak rate."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    done = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    done = min(1.0, max(done, time_done))
    min_lr = cfg.lr / 10
    return min_lr + 0.5 * (1 + math.cos(math.pi * done)) * (cfg.lr - min_lr)


def rng_states(device: torch.device) -> list[Tensor]:
    """This process's generators: the CPU one, and the accelerator's if there is one."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    elif device.type == "mps":
        states.append(torch.mps.get_rng_state())
    return states


def set_rng_states(states: list[Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
    elif device.type == "mps":
        torch.mps.set_rng_state(states[1])


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validate(
    model: nn.Module, examples: list[Example], vocab: Vocab, cfg: TrainConfig, device, amp
) -> tuple[float, ScoreBoard]:
    """Loss (token-weighted, as in training) and the ScoreBoard of the model's corrections
    through the serving `Corrector` (ungated): the CER the service would give."""
    board, loss_sum, tokens = ScoreBoard(), 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].src))
    corrector = model_corrector(
        model,
        vocab,
        name=cfg.model,
        max_src_len=cfg.max_src_len,
        max_tgt_len=cfg.max_tgt_len + 1,  # bos + target, as export sets it
        device=device,
    )
    with torch.autocast(device.type, amp) if amp else nullcontext():
        for start in range(0, len(order), EVAL_BATCH):
            batch = [examples[i] for i in order[start : start + EVAL_BATCH]]
            src, mask, tgt = (t.to(device) for t in collate(batch, vocab.pad_id))
            out = model.loss(src, mask, tgt)
            loss_sum += float(out.loss) * out.n_tokens
            tokens += out.n_tokens
        texts = [e.input for e in examples]
        corrections = corrector.correct(texts, decoding="greedy", batch_size=EVAL_BATCH)
    for e, correction in zip(examples, corrections, strict=True):
        board.add(e.input, correction.text, e.target)
    model.train()
    return loss_sum / max(1, tokens), board


# ----------------------------------------------------------------------------- batch size


def describe_device(device: torch.device) -> dict:
    """The card (or processor) a run trains on, for run.json and the batch choice."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "memory_mb": props.total_memory >> 20}
    name = platform.processor() or platform.machine()
    return {"type": device.type, "name": name, "threads": torch.get_num_threads()}


def memory_limit(device: torch.device) -> int | None:
    """Bytes `auto` may plan for: the card's free memory plus what this process already holds,
    capped by $KMCORRECT_TRAIN_MEMORY_MB; None off CUDA without that cap (a speed trial then)."""
    limit = None
    if os.environ.get(MEMORY_LIMIT_ENV):
        try:
            limit = int(float(os.environ[MEMORY_LIMIT_ENV]) * 2**20)
        except ValueError:
            raise UserError(f"${MEMORY_LIMIT_ENV} must be a number of MiB") from None
        if limit <= 0:
            raise UserError(f"${MEMORY_LIMIT_ENV} must be positive")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        card = free + torch.cuda.memory_allocated(device)
        limit = card if limit is None else min(limit, card)
    return limit


def step_memory(model: nn.Module, rows: int, cfg: TrainConfig, vocab: Vocab, device, amp):
    """Peak bytes of one forward + backward pass over ``rows`` rows of the longest allowed
    lengths, or None if the card ran out of memory. CUDA: the allocator's peak. Elsewhere: the
    parameters, their gradients and every tensor the pass saved for its backward (the
    activations), each storage counted once."""
    ids = torch.Generator().manual_seed(cfg.seed + rows)
    first = vocab.unk_id + 1  # a character, never pad, bos or eos
    src = torch.randint(first, len(vocab), (rows, cfg.max_src_len), generator=ids)
    body = torch.randint(first, len(vocab), (rows, cfg.max_tgt_len), generator=ids)
    tgt = torch.cat(
        [torch.full((rows, 1), vocab.bos_id), body, torch.full((rows, 1), vocab.eos_id)], 1
    )
    src, mask, tgt = (
        src.to(device),
        torch.ones_like(src, dtype=torch.bool).to(device),
        tgt.to(device),
    )
    autocast = torch.autocast(device.type, amp) if amp else nullcontext()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            with autocast:
                loss = model.loss(src, mask, tgt).loss
            loss.backward()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)
        except torch.OutOfMemoryError:
            return None
        finally:
            model.zero_grad(set_to_none=True)
    storages = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()
    }

    def keep(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor), autocast:
        loss = model.loss(src, mask, tgt).loss
    loss.backward()
    grads = sum(p.grad.untyped_storage().nbytes() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) + grads


def probe_memory(model: nn.Module, cfg: TrainConfig, vocab: Vocab, device, amp, limit: int) -> dict:
    """The largest batch of longest-allowed rows whose step peaks within HEADROOM of ``limit``:
    rows doubled until a step does not fit (or --max-batch-rows, beyond which a larger budget
    changes no batch), then halved intervals to within an eighth."""
    probes: dict[int, int | None] = {}

    def fits(rows: int) -> bool:
        probes[rows] = step_memory(model, rows, cfg, vocab, device, amp)
        return probes[rows] is not None and probes[rows] <= HEADROOM * limit

    good, bad, rows = 0, None, 1
    while bad is None and good < cfg.max_batch_rows:
        if fits(rows):
            good, rows = rows, min(2 * rows, cfg.max_batch_rows)
        else:
            bad = rows
    if good == 0:
        raise UserError(
            f"--batch-tokens auto: one row of the longest allowed lengths ({row_tokens(cfg)} "
            f"tokens) does not fit in {limit / 2**20:,.0f} MiB; lower --max-src-len/--max-tgt-len"
        )
    while bad is not None and bad - good > max(1, good // 8):
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    mb = {rows: None if peak is None else round(peak / 2**20, 1) for rows, peak in probes.items()}
    return {
        "method": "memory probe",
        "batch_tokens": good * row_tokens(cfg),
        "limit_mb": round(limit / 2**20, 1),
        "headroom": HEADROOM,
        "probes": [
            {"rows": r, "batch_tokens": r * row_tokens(cfg), "peak_mb": mb[r]} for r in sorted(mb)
        ],
    }


def speed_trial(model: nn.Module, cfg: TrainConfig, examples: list[Example], vocab, device) -> dict:
    """The budget of SPEED_TRIAL_BUDGETS (within what one row needs and --max-batch-rows allows)
    that trains the most tokens per second, timed on real batches of the training data with a
    copy of the model and its own optimizer."""
    lengths = [(len(e.src), len(e.tgt)) for e in examples]
    most = cfg.max_batch_rows * row_tokens(cfg)
    budgets = sorted({min(max(b, row_tokens(cfg)), most) for b in SPEED_TRIAL_BUDGETS})
    trials = []
    for budget in budgets:
        trial_model = copy.deepcopy(model)
        optimizer = make_optimizer(trial_model, cfg)
        batches = bucketed_batches(
            lengths, max_tokens=budget, max_rows=cfg.max_batch_rows, seed=cfg.seed, epoch=0
        )
        tokens, seconds = 0, 0.0
        for step, rows in enumerate(
            itertools.islice(itertools.cycle(batches), SPEED_TRIAL_STEPS + 1)
        ):
            src, mask, tgt = (
                t.to(device) for t in collate([examples[i] for i in rows], vocab.pad_id)
            )
            started = time.perf_counter()
            trial_model.loss(src, mask, tgt).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "mps":
                torch.mps.synchronize()
            if step:  # the first step warms up (allocations, kernel choices)
                seconds += time.perf_counter() - started
                tokens += int((tgt[:, 1:] != vocab.pad_id).sum() + mask.sum())
            if seconds > SPEED_TRIAL_SECONDS:
                break
        trials.append({"batch_tokens": budget, "tokens_per_s": round(tokens / seconds, 1)})
    best = max(trials, key=lambda t: t["tokens_per_s"])
    return {"method": "speed trial", "batch_tokens": best["batch_tokens"], "trials": trials}


def choose_batch_tokens(model, cfg: TrainConfig, train_set, vocab, dist: Dist, amp) -> dict:
    """`--batch-tokens auto`: a memory probe where there is a limit (CUDA, or the cap of
    $KMCORRECT_TRAIN_MEMORY_MB), else a speed trial; the same choice in every process (the
    smallest). Random states are restored, so the run goes on as if given the number."""
    started = time.monotonic()
    states, python_state = rng_states(dist.device), random.getstate()
    limit = memory_limit(dist.device)
    if limit is None:
        choice = speed_trial(model, cfg, train_set, vocab, dist.device)
    else:
        choice = probe_memory(model, cfg, vocab, dist.device, amp, limit)
    set_rng_states(states, dist.device)
    random.setstate(python_state)
    if dist.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dist.device)
    chosen = min(dist.gather(choice["batch_tokens"]))
    return choice | {
        "asked": AUTO,
        "batch_tokens": chosen,
        "seconds": round(time.monotonic() - started, 1),
    }


def peak_memory_mb(device: torch.device) -> float:
    """The allocator's peak on CUDA (and MPS's driver total); the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    import resource  # POSIX only, like the CPU runs it measures

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


# ----------------------------------------------------------------------------- run state


@dataclass
class Progress:
    """Where a run stands; saved with every checkpoint (meta ``progress``) for --resume."""

    epoch: int = 0
    batch_index: int = 0  # batches of this epoch's list consumed, by all processes together
    step: int = 0
    tokens: int = 0  # source + target tokens trained on
    elapsed_s: float = 0.0  # by earlier invocations of the run
    budget_used_s: float = 0.0  # of the time budget, on its clock, by earlier invocations
    best_cer: float | None = None
    best_step: int | None = None
    bad_epochs: int = 0  # validations since the best one


def check_resumable(ck: checkpoint.Checkpoint, cfg: TrainConfig, model: nn.Module) -> None:
    """A run resumes only as what it was: the same model and the same training settings."""
    if ck.model_name != cfg.model or ck.meta["model_config"] != asdict(model.config):
        raise UserError(
            f"{cfg.run_dir or 'the run'} holds a {ck.model_name} model of another configuration; "
            f"it cannot be resumed as {cfg.model}/{cfg.preset} (use another --run-dir)"
        )
    for f in fields(TrainConfig):
        then = ck.meta["train_config"].get(f.name, BEFORE_SETTING.get(f.name, f.default))
        now = getattr(cfg, f.name)
        if f.name not in RESUMABLE and then != now:
            raise UserError(
                f"{cfg.run_dir or 'the run'} was trained with {f.name}={then!r}, not {now!r}; "
                "resume with the same settings, or use another --run-dir"
            )


def state_tensors(optimizer: torch.optim.Optimizer, every_rng: list[list[Tensor]], device_type):
    """The tensors of the training state: optimizer moments, every process's generators."""
    state = optimizer.state_dict()["state"]
    tensors = {f"optim.{i}.{k}": v for i, s in state.items() for k, v in s.items()}
    for rank, states in enumerate(every_rng):
        tensors[f"rng.cpu.{rank}"] = states[0]
        if len(states) > 1:
            tensors[f"rng.{device_type}.{rank}"] = states[1]
    return tensors


def restore_state(
    ck: checkpoint.Checkpoint, optimizer: torch.optim.Optimizer, scaler, dist: Dist
) -> Progress:
    """Optimizer, grad scaler and RNG states from ``ck``; returns its progress."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, tensor in ck.tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = tensor
    groups = [  # JSON gave lists where the optimizers keep tuples
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in ck.meta["optimizer"]["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if ck.meta["grad_scaler"]:  # empty when saved without fp16 (e.g. on a CPU)
        scaler.load_state_dict(ck.meta["grad_scaler"])
    version, internal, gauss = ck.meta["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = {k: v for k, v in ck.meta["progress"].items() if k != "world_size"}
    progress = Progress(**saved)
    states = [ck.tensors.get(f"rng.cpu.{dist.rank}")]
    if dist.device.type != "cpu":
        states.append(ck.tensors.get(f"rng.{dist.device.type}.{dist.rank}"))
    if ck.meta["progress"]["world_size"] == dist.world and all(s is not None for s in states):
        set_rng_states(states, dist.device)
    else:
        if dist.main:
            print(
                "resuming on other processes or devices than the run was saved from: the data "
                "position carries over, the dropout random streams do not"
            )
        torch.manual_seed(ck.meta["train_config"]["seed"] + dist.rank + progress.step)
    return progress


def open_metrics(path: Path, resume_step: int | None):
    """metrics.csv to append to; on resume, rows past the checkpoint (written by the run that was
    killed after it) are dropped, since the resumed run writes them again."""
    rows = []
    if resume_step is not None and path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
    f = path.open("w", newline="")
    out = csv.DictWriter(f, METRICS)
    out.writeheader()
    out.writerows(rows)
    return f


# ----------------------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> TrainResult:
    """Train as ``cfg`` says; raises UserError for anything the user can fix."""
    dist = connect(cfg.device)
    try:
        cfg = with_defaults(cfg, dist.device)
        check(cfg)
        return _train(cfg, dist)
    finally:
        if dist.world > 1:
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, dist: Dist) -> TrainResult:
    device = dist.device
    amp = amp_dtype(cfg.amp, device)
    data_dir = Path(cfg.data)
    run_dir = Path(cfg.run_dir or f"runs/{cfg.model}-{data_dir.resolve().name}")
    ckpt_dir = run_dir / "checkpoints"
    say = print if dist.main else lambda *_: None

    # ---- model (first, so that a bad name fails before any data is read)
    vocab = Vocab.default()
    overrides = {} if cfg.dropout is None else {"dropout": cfg.dropout}
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    try:
        model = build_model(cfg.model, len(vocab), cfg.preset, **overrides).to(device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    # ---- data
    if not (data_dir / "train.jsonl").is_file():
        raise UserError(f"no training data at {data_dir}: run `make data` first")
    train_set, skipped = load_split(data_dir / "train.jsonl", vocab, cfg)
    val_set, val_skipped = load_split(data_dir / "val.jsonl", vocab, cfg)
    copies = clean_copies(train_set, cfg.clean_copies, vocab, cfg.seed)
    limits = f"longer than {cfg.max_src_len}/{cfg.max_tgt_len} characters (input/target)"
    for name, rows, dropped in (("train", train_set, skipped), ("val", val_set, val_skipped)):
        if not rows:
            raise UserError(f"{data_dir / (name + '.jsonl')}: no rows to use ({dropped} {limits})")
    eval_set = val_set[:: max(1, len(val_set) // cfg.eval_rows)][: cfg.eval_rows]
    train_set += copies
    lengths = [(len(e.src), len(e.tgt)) for e in train_set]

    def epoch_batches(epoch: int) -> list[list[int]]:
        """The epoch's batches, repeated to a multiple of the process count (as DistributedSampler
        pads) so that every process takes the same number of steps."""
        batches = bucketed_batches(
            lengths,
            max_tokens=cfg.batch_tokens,
            max_rows=cfg.max_batch_rows,
            seed=cfg.seed,
            epoch=epoch,
        )
        return (batches * dist.world)[: math.ceil(len(batches) / dist.world) * dist.world]

    # ---- start, or resume exactly where `last` left off
    val = {"val_cer": None, "val_loss": None, "val": None, "val_step": None}
    batch = {"asked": cfg.batch_tokens, "batch_tokens": cfg.batch_tokens}
    if cfg.resume:
        if not (ckpt_dir / "last.json").exists():
            raise UserError(f"--resume: nothing to resume in {run_dir} (no checkpoints/last.json)")
        ck = checkpoint.load(run_dir, "last")
        if cfg.batch_tokens == AUTO:  # the choice the run made, not a new one
            cfg = replace(cfg, batch_tokens=ck.meta["train_config"]["batch_tokens"])
            batch = ck.meta.get("batch", batch | {"batch_tokens": cfg.batch_tokens})
        check_resumable(ck, cfg, model)
        model.load_state_dict(ck.model.state_dict())
        pos = restore_state(ck, optimizer, scaler, dist)
        val = ck.meta["metrics"]
        say(f"resuming {run_dir} at epoch {pos.epoch + 1}, step {pos.step}")
    else:
        if (ckpt_dir / "last.json").exists():
            raise UserError(
                f"{run_dir} already holds a training run: pass --resume to continue it, "
                "or --run-dir to start another"
            )
        pos = Progress()
        torch.manual_seed(cfg.seed + dist.rank)  # each process its own dropout stream
        if cfg.batch_tokens == AUTO:
            say(f"--batch-tokens auto: {'probing' if memory_limit(device) else 'timing'} ...")
            batch = choose_batch_tokens(model, cfg, train_set, vocab, dist, amp)
            cfg = replace(cfg, batch_tokens=batch["batch_tokens"])
            say(f"--batch-tokens auto: {batch['batch_tokens']} ({describe_batch(batch)})")
    n_batches = len(epoch_batches(0))  # per epoch; varies a little from epoch to epoch
    total_steps = cfg.epochs * n_batches // dist.world

    objective: nn.Module = Objective(model)
    if dist.world > 1:
        objective = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ---- outputs (rank 0)
    started = time.monotonic()
    writer = metrics_file = metrics = None
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
        metrics_file = open_metrics(run_dir / "metrics.csv", pos.step if cfg.resume else None)
        metrics = csv.DictWriter(metrics_file, METRICS)
        writer = SummaryWriter(run_dir, purge_step=pos.step if cfg.resume else None)
        writer.add_text("batch", f"{cfg.batch_tokens} tokens ({describe_batch(batch)})", pos.step)
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    status = {
        "state": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.time(),
        "elapsed_at_start": pos.elapsed_s,
        "model": cfg.model,
        "preset": cfg.preset,
        "data": str(data_dir),
        "device": describe_device(device),
        "precision": precision,
        "world_size": dist.world,
        "batch": batch,
        "epochs": cfg.epochs,
        "steps_per_epoch": n_batches // dist.world,
        "total_steps": total_steps,
        "max_steps": cfg.max_steps,
        "max_minutes": cfg.max_minutes,
        "budget_clock": cfg.budget_clock,
        "budget_used_at_start": pos.budget_used_s,
    }

    def set_status(**changes) -> None:
        status.update(changes)
        if dist.main:
            write_atomic(
                run_dir / "run.json",
                json.dumps(status | {"updated_at": time.time()}, indent=1) + "\n",
            )

    say(
        f"{cfg.model}/{cfg.preset}: {count_parameters(model):,} parameters; "
        f"{dist.world} process(es) on {device.type} ({precision})"
    )
    say(
        f"data {data_dir}: {len(train_set)} train rows, {len(val_set)} val rows "
        f"({skipped} train and {val_skipped} val rows skipped: {limits}; {len(copies)} clean "
        "copies among the train rows); "
        f"{n_batches // dist.world} steps per epoch"
    )

    def elapsed() -> float:
        return pos.elapsed_s + time.monotonic() - started

    clock = BUDGET_CLOCKS[cfg.budget_clock]
    clock_at_start = clock()

    def budget_used() -> float:
        """Seconds of the time budget spent, by this invocation and the ones it resumes."""
        return pos.budget_used_s + clock() - clock_at_start

    def log(**values) -> None:
        if not dist.main:
            return
        epochs = round(pos.epoch + pos.batch_index / n_batches, 4)
        peak = round(peak_memory_mb(device), 1)
        metrics.writerow(
            {
                "step": pos.step,
                "epoch": epochs,
                "elapsed_s": round(elapsed(), 1),
                "budget_s": round(budget_used(), 1),
            }
            | values
            | {"peak_mem_mb": peak}
        )
        metrics_file.flush()
        for key, value in (values | {"peak_mem_mb": peak}).items():
            writer.add_scalar(key, value, pos.step)

    def save(tag: str) -> None:
        every_rng = dist.gather(rng_states(device))  # a collective: every process calls save
        if not dist.main:
            return
        meta = {
            "train_config": asdict(cfg),
            "batch": batch,
            "progress": asdict(pos)
            | {"elapsed_s": elapsed(), "budget_used_s": budget_used(), "world_size": dist.world},
            "metrics": val,
            "optimizer": {
                "name": cfg.optimizer,
                "param_groups": optimizer.state_dict()["param_groups"],
            },
            "schedule": {
                "warmup_steps": cfg.warmup_steps,
                "total_steps": total_steps,
                "lr": cfg.lr,
                "min_lr": cfg.lr / 10,
            },
            "grad_scaler": scaler.state_dict(),
            "rng": {"python": random.getstate()},
        }
        extra = state_tensors(optimizer, every_rng, device.type)
        checkpoint.save(
            ckpt_dir,
            tag,
            model_name=cfg.model,
            model=model,
            vocab=vocab,
            meta=meta,
            extra_tensors=extra,
        )

    # ---- the loop
    budget_s = cfg.max_minutes * 60 or math.inf
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, started
    val_every = cfg.val_every_minutes * 60 or math.inf
    last_validation = budget_used()
    stop = None
    validating_s, tokens_at_start = 0.0, pos.tokens
    budget_bar = None
    if cfg.max_minutes:  # one bar for the budget: epochs end long after it does
        budget_bar = tqdm(
            total=round(budget_s),
            initial=min(round(budget_s), round(pos.budget_used_s)),
            bar_format="{desc}{percentage:3.0f}%|{bar}| of "
            + tqdm.format_interval(budget_s)
            + f" {'CPU ' if cfg.budget_clock == 'cpu' else ''}budget, "
            + "{remaining} left{postfix}",
            smoothing=0,
            disable=not (cfg.progress and dist.main),
            dynamic_ncols=True,
        )
    model.train()
    set_status()
    try:
        while stop is None and pos.epoch < cfg.epochs:
            batches = epoch_batches(pos.epoch)
            n_batches = len(batches)
            bar = (
                budget_bar
                if budget_bar is not None
                else tqdm(
                    total=n_batches // dist.world,
                    initial=pos.batch_index // dist.world,
                    disable=not (cfg.progress and dist.main),
                    dynamic_ncols=True,
                )
            )
            bar.set_description(f"epoch {pos.epoch + 1}/{cfg.epochs}")
            for rows in batches[pos.batch_index + dist.rank :: dist.world]:
                src, mask, tgt = collate([train_set[i] for i in rows], vocab.pad_id)
                n_local = int((tgt[:, 1:] != vocab.pad_id).sum())
                used = budget_used()
                time_done = min(1.0, used / budget_s)
                # Summed over processes so every rank sees the same clock (rank means).
                n_global, n_seen, out_of_time, time_done, val_due = dist.all_sum(
                    n_local,
                    n_local + int(mask.sum()),
                    used > budget_s,
                    time_done,
                    used - last_validation > val_every,
                )
                if out_of_time:
                    stop = "max_minutes"
                    break
                lr = lr_at(pos.step, cfg, total_steps, time_done / dist.world)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                src, mask, tgt = src.to(device), mask.to(device), tgt.to(device)
                with torch.autocast(device.type, amp) if amp else nullcontext():
                    out = objective(src, mask, tgt)
                loss = global_share(out.loss, n_local, n_global, dist.world)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                pos.step += 1
                pos.batch_index += dist.world
                pos.tokens += int(n_seen)
                window_loss += loss.detach() / dist.world
                window_steps += 1
                window_tokens += n_seen
                if budget_bar is not None:
                    bar.update(min(round(budget_s), round(budget_used())) - bar.n)
                else:
                    bar.update()

                if pos.step % cfg.log_every == 0:
                    (train_loss,) = dist.all_sum(float(window_loss) / window_steps)
                    now = time.monotonic()
                    bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}")
                    log(
                        lr=lr,
                        train_loss=train_loss,
                        tokens_per_s=window_tokens / (now - window_start),
                    )
                    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, now
                if cfg.save_every and pos.step % cfg.save_every == 0:
                    save("last")
                if cfg.max_steps and pos.step >= cfg.max_steps:
                    stop = "max_steps"
                    break
                if val_due and pos.batch_index < n_batches:  # else the epoch's end validates
                    break  # validate mid-epoch; the loop comes back to the next batch
            else:  # the epoch ran to its end
                pos.epoch, pos.batch_index = pos.epoch + 1, 0
            if budget_bar is None:
                bar.close()

            # ---- validate on rank 0 (the others wait in all_sum), keep the best, save
            validation_start = time.monotonic()
            if dist.main:
                val_loss, board = validate(model, eval_set, vocab, cfg, device, amp)
                val = {"val_cer": board.cer_after, "val_loss": val_loss, "val": board.as_dict()}
                val["val_step"] = pos.step
                log(val_loss=val_loss, val_cer=board.cer_after)
                print(
                    f"epoch {pos.epoch + pos.batch_index / n_batches:.2f}, step {pos.step}: "
                    f"val CER {board.cer_after:.4f} (input {board.cer_before:.4f}), "
                    f"val loss {val_loss:.4f}"
                )
            (val_cer,) = dist.all_sum(val["val_cer"] if dist.main else 0.0)
            if pos.best_cer is None or val_cer < pos.best_cer:
                pos.best_cer, pos.best_step, pos.bad_epochs = val_cer, pos.step, 0
                save("best")
            else:
                pos.bad_epochs += 1
            save("last")
            validation_end = time.monotonic()
            validating_s += validation_end - validation_start
            window_start += validation_end - validation_start  # tokens/s counts training only
            last_validation = budget_used()
            if stop is None and pos.epoch >= cfg.epochs:
                stop = "epochs"
            if stop is None and cfg.patience and pos.bad_epochs >= cfg.patience:
                stop = "patience"
    except BaseException as exc:
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        set_status(state=state, error=f"{type(exc).__name__}: {exc}", steps=pos.step)
        raise
    finally:
        if budget_bar is not None:
            budget_bar.close()

    if dist.main:
        writer.close()
        metrics_file.close()
    stop = stop or "epochs"
    best = ckpt_dir / "best.json" if pos.best_cer is not None else None
    training_s = time.monotonic() - started - validating_s
    set_status(
        state="finished",
        stop=stop,
        steps=pos.step,
        elapsed_s=round(elapsed(), 1),
        best_cer=pos.best_cer,
        best_step=pos.best_step,
        tokens_per_s=round((pos.tokens - tokens_at_start) / max(training_s, 1e-9), 1),
        peak_mem_mb=round(peak_memory_mb(device), 1),
    )
    say(f"stopped ({stop}) after {pos.step} steps")
    if best is not None:
        say(f"best checkpoint: {best} (val CER {pos.best_cer:.4f} at step {pos.best_step})")
    return TrainResult(run_dir, best, pos.best_cer, pos.step, stop)
