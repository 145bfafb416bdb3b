"""`kmcorrect train`: train a corrector on data/<name> into runs/<model>-<name>.

With no arguments it trains the Hybrid on data/default (from `make data`) and, on a CPU, stops
after 8.5 minutes with a usable checkpoint; a fuller run passes --max-minutes 0 and --epochs.
Several GPUs (or CPU processes): torchrun --nproc_per_node N -m kmcorrect train ...
"""

from __future__ import annotations

import argparse

from training.optim import OPTIMIZERS
from training.train import AUTO, BUDGET_CLOCKS, TrainConfig, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    add = parser.add_argument
    add(
        "--model",
        default=d.model,
        help="editor, hybrid, char_transformer or char_lstm (default: %(default)s)",
    )
    add("--preset", default=d.preset, help="model size preset (default: %(default)s)")
    add("--dropout", type=float, default=d.dropout, help="override the preset's dropout")
    add(
        "--data",
        default=d.data,
        help="folder with train.jsonl and val.jsonl (default: %(default)s)",
    )
    add("--run-dir", default=d.run_dir, help="output folder (default: runs/<model>-<data name>)")
    add(
        "--batch-tokens",
        type=batch_tokens,
        default=d.batch_tokens,
        help="padded source + target tokens per batch and process, or auto: the largest the GPU "
        "holds (probed), on a CPU the fastest of a short trial (default: auto on CUDA; on CPU "
        "2048 for the editor, 1024 for the others; 16384 on MPS)",
    )
    add("--max-batch-rows", type=int, default=d.max_batch_rows, help="(default: %(default)s)")
    add(
        "--lr",
        type=float,
        default=d.lr,
        help="peak learning rate (default: 4e-3 for the editor, 2e-3 for the others)",
    )
    add(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="muon: Muon for the hidden matrices, AdamW for the rest "
        "(default: muon for the editor, adamw for the others)",
    )
    add("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    add("--warmup-steps", type=int, default=d.warmup_steps, help="(default: %(default)s)")
    add(
        "--epochs",
        type=int,
        default=d.epochs,
        help="epochs; also the length of the cosine decay (default: %(default)s)",
    )
    add(
        "--clean-copies",
        type=float,
        default=d.clean_copies,
        help="add this share of the train rows as clean copies (a train target as its own "
        "input), so the model learns to leave clean text alone (default: %(default)s)",
    )
    add(
        "--max-src-len",
        type=int,
        default=d.max_src_len,
        help="skip rows whose input is longer (default: %(default)s)",
    )
    add(
        "--max-tgt-len",
        type=int,
        default=d.max_tgt_len,
        help="skip rows whose target is longer (default: %(default)s)",
    )
    add("--grad-clip", type=float, default=d.grad_clip, help="(default: %(default)s)")
    add(
        "--amp",
        default=d.amp,
        choices=["auto", "bf16", "fp16", "off"],
        help="mixed precision on CUDA; auto: bf16 where supported, else fp16 (default: auto)",
    )
    add("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    add(
        "--eval-rows",
        type=int,
        default=d.eval_rows,
        help="val rows decoded for the CER at every validation (default: %(default)s)",
    )
    add(
        "--val-every-minutes",
        type=float,
        default=d.val_every_minutes,
        help="also validate (and keep the best) this often; 0: at epoch ends only "
        "(default: 10 on CPU, 0 on GPU)",
    )
    add(
        "--patience",
        type=int,
        default=d.patience,
        help="stop after this many validations without a better CER; 0: never "
        "(default: %(default)s)",
    )
    add(
        "--max-minutes",
        type=float,
        default=d.max_minutes,
        help="time budget, then validate, save and stop; 0: none "
        "(default: 8.5 on CPU, none on GPU)",
    )
    add(
        "--budget-clock",
        choices=sorted(BUDGET_CLOCKS),
        default=d.budget_clock,
        help="what --max-minutes counts: wall time, or this process's CPU time (equal work for "
        "runs compared side by side on a shared machine; default: %(default)s)",
    )
    add(
        "--max-steps",
        type=int,
        default=d.max_steps,
        help="stop after this many optimizer steps; 0: no limit (default: %(default)s)",
    )
    add(
        "--save-every",
        type=int,
        default=d.save_every,
        help="steps between `last` checkpoints, besides every epoch end (default: %(default)s)",
    )
    add("--log-every", type=int, default=d.log_every, help="(default: %(default)s)")
    add("--device", default=d.device, help="auto, cuda, mps or cpu (default: %(default)s)")
    add("--resume", action="store_true", help="continue the run in --run-dir from its `last`")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")


def batch_tokens(text: str) -> int | str:
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def run(args: argparse.Namespace) -> int:
    train(TrainConfig(**vars(args)))
    return 0
