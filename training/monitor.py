"""`kmcorrect monitor RUN [--watch]`: a run's progress, from another terminal, while it trains.

It reads only what the trainer writes into the run folder (training/train.py): ``run.json``
(state, process, device, batch choice, the plan, and the figures at the end) and ``metrics.csv``
(a row per logged step and per validation). So it needs no torch, works from any process that
can read the folder, and never disturbs the run. ``--watch`` redraws the view until the run
ends: finished, failed, interrupted, or its process gone (killed) when on this host.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import UserError

# "unknown": metrics without run.json, from a trainer older than run.json; nothing to wait for.
ENDED = ("finished", "failed", "interrupted", "gone", "unknown")
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="run folder, e.g. runs/editor-default")
    parser.add_argument(
        "--watch", action="store_true", help="redraw while the run writes; exit when it ends"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between redraws (default: 2)"
    )
    parser.add_argument(
        "--png", type=Path, help="also plot train loss and val CER against time into this file"
    )


def run(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise UserError(f"--interval must be positive, got {args.interval}")
    if not args.watch:
        snap = read(args.run)
        if not snap.exists:
            raise UserError(f"{args.run}: no training run there (no run.json or metrics.csv)")
        print(render(snap))
    else:
        snap = watch(args.run, args.interval, sys.stdout)
    if args.png:
        plot(snap, args.png)
        print(f"wrote {args.png}")
    return 0 if not args.watch or snap.state == "finished" else 1


def watch(run_dir: Path, interval: float, out) -> Snapshot:
    """Redraw until the run ends. On a terminal the view replaces itself; into a pipe or file,
    a view is appended whenever the run has written something new."""
    tty = out.isatty()
    shown = None
    while True:
        snap = read(run_dir)
        view = render(snap) if snap.exists else f"{run_dir}: waiting for the run to start"
        if tty:
            out.write(CLEAR + view + "\n")
        elif (snap.state, len(snap.rows), view if not snap.exists else "") != shown:
            shown = (snap.state, len(snap.rows), view if not snap.exists else "")
            out.write(view + "\n\n")
        out.flush()
        if snap.state in ENDED:
            return snap
        time.sleep(interval)


# ----------------------------------------------------------------------------- reading


@dataclass
class Snapshot:
    run_dir: Path
    status: dict  # run.json; {} before the trainer writes it (or from an older trainer)
    rows: list[dict[str, float | None]]  # metrics.csv, complete lines only
    now: float  # time.time() when read

    @property
    def exists(self) -> bool:
        return bool(self.status or self.rows)

    @property
    def state(self) -> str:
        """run.json's state; ``gone`` when it says running but its process on this host has
        ended (SIGKILL, power loss); ``unknown`` without run.json."""
        state = self.status.get("state", "unknown" if self.rows else "waiting")
        if state == "running" and self.status.get("host") == socket.gethostname():
            try:
                os.kill(self.status["pid"], 0)
            except ProcessLookupError:
                return "gone"
            except PermissionError:  # alive, another user's
                pass
        return state

    def last(self, column: str) -> dict | None:
        """The last row with a value in ``column``."""
        return next((r for r in reversed(self.rows) if r.get(column) is not None), None)

    @property
    def elapsed_s(self) -> float:
        if self.state == "running":
            return self.status["elapsed_at_start"] + self.now - self.status["started_at"]
        if "elapsed_s" in self.status:
            return self.status["elapsed_s"]
        return self.rows[-1]["elapsed_s"] if self.rows else 0.0


def read(run_dir: Path) -> Snapshot:
    status_path, metrics_path = run_dir / "run.json", run_dir / "metrics.csv"
    try:
        status = json.loads(status_path.read_text()) if status_path.exists() else {}
        text = metrics_path.read_text() if metrics_path.exists() else ""
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {run_dir}: {exc}") from None
    # The trainer may be writing the last line right now: keep only finished lines.
    text = text[: text.rfind("\n") + 1]
    rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
    return Snapshot(run_dir, status, rows, time.time())


def _number(text: str | None) -> float | None:
    return float(text) if text else None


# ----------------------------------------------------------------------------- the view


def render(snap: Snapshot) -> str:
    status, state = snap.status, snap.state
    lines = [f"{snap.run_dir}: {state}" + (f" ({status['stop']})" if "stop" in status else "")]
    if status:
        device = status["device"]
        lines[0] += (
            f" - {status['model']}/{status['preset']} on {device['type']} ({device['name']}), "
            f"{status['precision']}, {status['world_size']} process(es)"
        )
        if state == "running":
            lines[0] += f", pid {status['pid']} on {status['host']}"
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    train, val = snap.last("train_loss"), snap.last("val_cer")
    step = int(snap.rows[-1]["step"]) if snap.rows else status.get("steps", 0)
    line = f"step {step:,}"
    if status.get("total_steps"):
        line += f" of ~{_planned_steps(status):,}"
    if snap.rows:
        line += f", epoch {snap.rows[-1]['epoch']:.2f}"
        line += f" of {status['epochs']}" if status else ""
    lines.append(line)
    if train:
        lines.append(
            f"train loss {train['train_loss']:.4f}   lr {train['lr']:.2e}   "
            f"tokens/s {train['tokens_per_s']:,.0f}"
        )
    if val:
        best = min((r for r in snap.rows if r.get("val_cer") is not None), key=_val_cer)
        lines.append(
            f"val CER {val['val_cer']:.4f} (best {best['val_cer']:.4f} at step "
            f"{int(best['step']):,})   val loss {val['val_loss']:.4f}"
        )
    if "batch" in status:
        batch = status["batch"]
        lines.append(f"batch {batch['batch_tokens']:,} tokens ({describe_batch(batch)})")
    lines.append(_timing(snap))
    memory = _memory(snap)
    if memory:
        lines.append(memory)
    if state == "finished" and "tokens_per_s" in status:
        lines.append(f"trained {status['tokens_per_s']:,.0f} tokens/s over the run")
    return "\n".join(lines)


def _val_cer(row: dict) -> float:
    return row["val_cer"]


def _planned_steps(status: dict) -> int:
    steps = status["total_steps"]
    return min(steps, status["max_steps"]) if status.get("max_steps") else steps


def _timing(snap: Snapshot) -> str:
    """Elapsed, the time budget's progress, and (running) the nearer of the budget's end and the
    end of the planned steps at the recent rate."""
    status, elapsed = snap.status, snap.elapsed_s
    line = f"elapsed {clock(elapsed)}"
    if snap.state != "running":
        return line
    ends = []
    if status.get("max_minutes"):
        budget = status["max_minutes"] * 60
        if status.get("budget_clock", "wall") == "wall":
            used = status.get("budget_used_at_start", 0.0) + snap.now - status["started_at"]
            line += f"   time budget {clock(budget)} ({min(1, used / budget):.0%})"
            ends.append((max(0.0, budget - used), "time budget"))
        else:  # another process's CPU time cannot be read from the run folder
            line += f"   CPU-time budget {clock(budget)}"
    train_rows = [r for r in snap.rows if r.get("train_loss") is not None][-10:]
    if status.get("total_steps") and len(train_rows) >= 2:
        first, last = train_rows[0], train_rows[-1]
        if last["elapsed_s"] > first["elapsed_s"]:
            rate = (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])
            left = max(0, _planned_steps(status) - last["step"])
            ends.append((left / rate if rate > 0 else math.inf, "steps"))
    if ends:
        seconds, what = min(ends)
        line += f"   ends in ~{clock(seconds)} ({what})"
    return line


def _memory(snap: Snapshot) -> str | None:
    peak = snap.status.get("peak_mem_mb")
    row = snap.last("peak_mem_mb")
    if row is not None and (peak is None or snap.state == "running"):
        peak = row["peak_mem_mb"]
    if peak is None:
        return None
    device = snap.status.get("device", {})
    if device.get("type") == "cuda":
        return f"GPU memory: peak {peak:,.0f} MiB of {device['memory_mb']:,} MiB"
    return f"memory: peak {peak:,.0f} MiB (process RSS)"


def describe_batch(batch: dict) -> str:
    """How batch_tokens was chosen, in one line (also the trainer's log line)."""
    method = batch.get("method")
    if method == "memory probe":
        fitting = [p for p in batch["probes"] if p["batch_tokens"] == batch["batch_tokens"]]
        peak = f", peak {fitting[0]['peak_mb']:,} MiB" if fitting else ""
        return (
            f"memory probe{peak} within {batch['headroom']:.0%} of "
            f"{batch['limit_mb']:,.0f} MiB, {len(batch['probes'])} probes"
        )
    if method == "speed trial":
        trials = ", ".join(
            f"{t['batch_tokens']}: {t['tokens_per_s']:,.0f}" for t in batch["trials"]
        )
        return f"fastest in a speed trial, tokens/s by budget: {trials}"
    return "as set"


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


# ----------------------------------------------------------------------------- the plot


def plot(snap: Snapshot, path: Path) -> None:
    """Train loss and val CER against elapsed minutes, one above the other."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--png needs matplotlib: pip install 'khmer-correct[bench]'") from None
    fig, (loss_ax, cer_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for ax, column, label in (
        (loss_ax, "train_loss", "train loss"),
        (cer_ax, "val_cer", "val CER"),
    ):
        rows = [r for r in snap.rows if r.get(column) is not None]
        ax.plot([r["elapsed_s"] / 60 for r in rows], [r[column] for r in rows], marker=".")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    cer_ax.set_xlabel("elapsed (minutes)")
    loss_ax.set_title(f"{snap.run_dir.name}: {snap.state}")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UserError(f"--png {path}: {exc}") from None
    finally:
        plt.close(fig)
