"""`kmcorrect pipeline` (`make pipeline`; the training image's job): from a corpus to a verified
artifact and its engine benchmarks in one command, for a rented GPU paid by the minute.

Each step is a `kmcorrect` verb in a child process, skipped when its output exists, so a
pipeline stopped anywhere (or killed with its machine) goes on where it was when run again:

    data    DATA/test.jsonl                kmcorrect data --out DATA [--corpus FILE]
    train   RUN/run.json says finished     kmcorrect train (--resume when RUN has a `last`)
    eval    RUN/eval/test/report.json      kmcorrect eval --run-dir RUN --data DATA
    export  ARTIFACT/manifest.json         kmcorrect export --run-dir RUN --out ARTIFACT
                                           (+ --tensorrt on a GPU where TensorRT is installed)
    bench   BENCH/results.json             kmcorrect bench --suite engines

Every step's output goes to the terminal and to one log (RUN/pipeline.log, appended); the first
step that fails stops the pipeline, naming the step, its exit status and the log. It takes every
`kmcorrect train` flag (so the training image's TRAIN_* flags work unchanged), and the other
steps' own flags as --data-args, --eval-args, --export-args and --bench-args.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from runtime.artifact import load_artifact
from runtime.errors import UserError
from training.cli import add_arguments as add_train_arguments
from training.monitor import describe_batch
from training.train import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    steps = parser.add_argument_group("pipeline")
    steps.add_argument("--corpus", help="corpus for the data step (default: the embedded one)")
    steps.add_argument("--artifact", help="artifact folder (default: artifacts/<run name>)")
    steps.add_argument("--bench-out", help="benchmark results folder (default: <run>/bench)")
    steps.add_argument("--log", help="the pipeline's log, appended (default: <run>/pipeline.log)")
    steps.add_argument(
        "--skip",
        default="",
        metavar="STEPS",
        help="eval and/or bench, comma-separated: steps not to run (bench takes minutes on a CPU)",
    )
    steps.add_argument(
        "--tensorrt",
        choices=("auto", "yes", "no"),
        default="auto",
        help="build TensorRT engines at export; auto: on a GPU where TensorRT is installed",
    )
    for step, example in (
        ("data", "--pdf-share 0.5"),
        ("eval", "--limit 2000"),
        ("export", "--variants fp32,opt"),
        ("bench", "--suite engines,decoding"),
    ):
        steps.add_argument(
            f"--{step}-args",
            default="",
            metavar="FLAGS",
            help=f"more `kmcorrect {step}` flags, one string, e.g. --{step}-args='{example}'",
        )


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    run_dir = Path(args.run_dir or f"runs/{args.model}-{data.resolve().name}")
    artifact = Path(args.artifact or Path("artifacts") / run_dir.name)
    bench_out = Path(args.bench_out or run_dir / "bench")
    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    tensorrt = args.tensorrt == "yes" or (
        args.tensorrt == "auto" and gpu and importlib.util.find_spec("tensorrt") is not None
    )
    device = "cuda" if gpu else "cpu"
    skip = {step.strip() for step in args.skip.split(",") if step.strip()}
    if skip - {"eval", "bench"}:
        raise UserError(f"--skip {args.skip!r}: only eval and bench can be skipped")
    extra = {}
    for step in ("data", "eval", "export", "bench"):
        try:
            extra[step] = shlex.split(getattr(args, f"{step}_args"))
        except ValueError as exc:
            raise UserError(f"--{step}-args: {exc}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(args.log or run_dir / "pipeline.log")
    status_path = run_dir / "run.json"
    finished = (
        status_path.exists() and json.loads(status_path.read_text()).get("state") == "finished"
    )
    resume = args.resume or (run_dir / "checkpoints" / "last.json").exists()

    steps = [
        (
            "data",
            data / "test.jsonl",
            ["data", "--out", str(data), *(["--corpus", args.corpus] if args.corpus else [])],
        ),
        (
            "train",
            status_path if finished else None,
            [
                *("train", "--model", args.model, "--data", str(data), "--run-dir", str(run_dir)),
                *train_flags(args),
                *["--resume"] * resume,
            ],
        ),
        (
            "eval",
            run_dir / "eval" / "test" / "report.json",
            ["eval", "--run-dir", str(run_dir), "--data", str(data), "--device", device],
        ),
        (
            "export",
            artifact / "manifest.json",
            ["export", "--run-dir", str(run_dir), "--data", str(data), "--out", str(artifact)]
            + ["--tensorrt"] * tensorrt,
        ),
        (
            "bench",
            bench_out / "results.json",
            [
                *("bench", "--suite", "engines", "--artifact", str(artifact), "--data", str(data)),
                *("--run-dir", str(run_dir), "--device", device, "--out", str(bench_out)),
            ],
        ),
    ]
    with log_path.open("ab") as log:

        def say(text: str) -> None:
            line = f"[pipeline {time.strftime('%H:%M:%S')}] {text}\n".encode()
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()

        say(f"{run_dir}: data {data}, artifact {artifact}, on {device} (log {log_path})")
        for name, output, argv in steps:
            argv += extra.get(name, [])
            if name in skip:
                say(f"{name}: skipped (--skip)")
                continue
            if output is not None and output.exists():
                say(f"{name}: skipped, {output} exists")
                continue
            say(f"{name}: kmcorrect {shlex.join(argv)}")
            status = stream([sys.executable, "-m", "kmcorrect", *argv], log)
            if status != 0:
                say(f"{name}: failed with exit status {status}")
                raise UserError(
                    f"step {name} failed (exit status {status}); its output is above and in "
                    f"{log_path}; fix it and run the pipeline again: done steps are skipped"
                )
        for line in summary(run_dir, artifact, bench_out):
            say(line)
    return 0


def train_flags(args: argparse.Namespace) -> list[str]:
    """The `kmcorrect train` flags given to the pipeline (those that differ from the defaults)."""
    defaults, flags = TrainConfig(), []
    for f in fields(TrainConfig):
        value = getattr(args, f.name)
        if f.name in ("model", "data", "run_dir", "resume") or value == getattr(defaults, f.name):
            continue
        if f.name == "progress":
            flags.append("--no-progress")
        else:
            flags += [f"--{f.name.replace('_', '-')}", str(value)]
    return flags


def stream(argv: list[str], log) -> int:
    """Run ``argv`` with its output (stdout and stderr, in order) to the terminal and the log.
    Ctrl-C reaches the step through the terminal; `docker stop` signals only PID 1 (this
    process), so a step still running a second later is sent the SIGINT too."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as child:
        try:
            for chunk in iter(lambda: child.stdout.read1(1 << 14), b""):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log.write(chunk)
                log.flush()
        except KeyboardInterrupt:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGINT)
                child.wait()
            raise
        return child.wait()


def summary(run_dir: Path, artifact_dir: Path, bench_out: Path) -> list[str]:
    """The pipeline's result: the artifact (loaded, so its files are checked against the manifest
    once more), its verification, and the training figures of this device."""
    artifact = load_artifact(artifact_dir)
    verified = artifact.manifest["verification"]
    variants = ", ".join(
        f"{v} {'verified' if r['verified'] else 'NOT verified'}"
        for v, r in verified["variants"].items()
    )
    lines = [f"done: artifact {artifact_dir} ({variants} on {verified['rows']} inputs)"]
    status = json.loads((run_dir / "run.json").read_text())
    device, batch = status["device"], status["batch"]
    lines.append(
        f"training on {device['type']} ({device['name']}): batch {batch['batch_tokens']:,} tokens "
        f"({describe_batch(batch)}), {status.get('tokens_per_s', 0):,.0f} tokens/s, "
        f"peak memory {status.get('peak_mem_mb', 0):,.0f} MiB"
    )
    reports = [run_dir / "eval" / "test" / "report.md", bench_out / "report.md"]
    lines.append(f"reports: {', '.join(str(p) for p in reports if p.exists()) or 'none'}")
    return lines
