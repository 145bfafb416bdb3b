"""What every benchmark shares: the device name results are filed under, medians with their
spread, and the environment a run records beside its numbers."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A pause before every timed call of a side-by-side comparison. The worker threads of the engine
# that ran last (onnxruntime's pool, OpenMP's) spin for a while after their call and take cores
# from the next engine: measured on 2 cores, the editor's graph took 38 ms right after another
# onnxruntime session's call, 29 ms after a 50 ms pause, as when it runs alone.
SETTLE_S = 0.05


def settle() -> None:
    """Let the last engine's worker threads go idle before timing the next one."""
    time.sleep(SETTLE_S)


@dataclass
class BenchContext:
    """What `kmcorrect bench` hands every suite. A suite is a module with
    `run(ctx) -> dict` (its JSON-able section, including `targets`: a list of
    {"target", "measured", "met"} rows for the headline table), `markdown(section) -> str`
    and `plots(section, out_dir) -> list[str]` (the PNG file names it wrote)."""

    artifact: Path  # exported artifact (kmcorrect export)
    data: Path  # data directory; its test.jsonl is the input
    model: Path | None = None  # run directory or checkpoint, for torch and CTranslate2
    # On an editor artifact, the engines suite's autoregressive contenders (each optional:
    # without it, that contender is reported as not run): a Hybrid artifact for onnxruntime
    # greedy decoding, and a char_transformer run directory (or checkpoint) for CTranslate2.
    hybrid: Path | None = None
    char_transformer: Path | None = None
    quick: bool = True  # the CPU quick mode (<= 10 minutes for every suite together)
    device: str = "cpu"  # cpu | cuda
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    log: Callable[[str], None] = print


def device_name(providers: list[str]) -> str:
    """The GPU's name when a CUDA or TensorRT provider runs, else the CPU model."""
    if "CUDAExecutionProvider" in providers or "TensorrtExecutionProvider" in providers:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            if out:
                return out.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
        return "unknown NVIDIA GPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def slug(name: str) -> str:
    """A device name as a folder name: `Intel(R) Xeon(R) Processor` -> `intel-xeon-processor`."""
    name = re.sub(r"\((r|tm)\)", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown"


def spread(values: list[float]) -> dict:
    """Median with min and max: how every repeated measurement is reported."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def environment() -> dict:
    """Versions and machine state recorded beside the numbers (call once before timing)."""
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


if __name__ == "__main__":  # the results folder name of this machine's CPU, for make
    print(slug(device_name([])))
