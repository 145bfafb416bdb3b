"""`kmcorrect bulk` against one process, and Ray local against local mode, on the same lines.

    python -m benchmarks.bulk --artifact artifacts/editor-default --data data/default \
        [--lines 2000] [--files 20] [--workers 2] [--no-ray] [--out bulk.json]

The first ``--lines`` inputs of ``--data``'s test.jsonl (cycled if short) are written as
``--files`` text files; then, one after the other in this run:

- one process: `kmcorrect correct`'s call path (one Corrector, `Corrector.correct` per file), with
  onnxruntime's own thread count, and again with one thread;
- local mode: `bulk` with ``--workers`` processes of one thread each;
- Ray local: the same on a local Ray with as many actors, Ray started beforehand and its
  start-up reported on its own line.

Every time is the whole job as a user waits for it (the model loads and the pool or actor
start-up included). Outputs must be identical in all four, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from runtime.bulk import Settings, bulk
from runtime.corrector import Corrector


def _inputs(data: Path, lines: int, files: int, folder: Path) -> list[Path]:
    with (data / "test.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line)["input"] for line in f if line.strip()]
    if not rows:
        raise SystemExit(f"{data / 'test.jsonl'} has no rows")
    # One paragraph a line: the inputs' own newlines would change the line count.
    texts = [" ".join(rows[i % len(rows)].split("\n")) for i in range(lines)]
    folder.mkdir(parents=True)
    paths = []
    per_file = -(-lines // files)
    for k in range(files):
        path = folder / f"part{k:03d}.txt"
        chunk = texts[k * per_file : (k + 1) * per_file]
        path.write_text("".join(t + "\n" for t in chunk), encoding="utf-8")
        paths.append(path)
    return paths


def _one_process(artifact: Path, paths: list[Path], threads: int) -> tuple[float, list[str]]:
    """`kmcorrect correct --input FILE` for every file, in one process."""
    started = time.perf_counter()
    corrector = Corrector.load(artifact, threads=threads)
    outputs = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").removesuffix("\n").split("\n")
        fixed = [c.text for c in corrector.correct(lines)]
        outputs.append("".join(line + "\n" for line in fixed))
    return time.perf_counter() - started, outputs


def _bulk(paths: list[Path], out: Path, settings: Settings, workers: int, ray: str | None):
    summary = bulk(paths, out, settings, workers=workers, ray_address=ray)
    if summary["failures"]:
        raise SystemExit(f"bulk failed on some files: {summary['failures']}")
    return summary["seconds"], [(out / p.name).read_text(encoding="utf-8") for p in paths]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bulk", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="its test.jsonl gives the lines")
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray local measurement")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    settings = Settings(artifact=str(args.artifact), threads=1)
    with tempfile.TemporaryDirectory(prefix="kmcorrect-bench-bulk-") as work:
        work = Path(work)
        paths = _inputs(args.data, args.lines, args.files, work / "in")
        seconds = {}
        seconds["one process, onnxruntime's threads"], reference = _one_process(
            args.artifact, paths, threads=0
        )
        seconds["one process, 1 thread"], outputs = _one_process(args.artifact, paths, 1)
        runs = {"one process, 1 thread": outputs}
        name = f"local mode, {args.workers} workers x 1 thread"
        seconds[name], runs[name] = _bulk(paths, work / "local", settings, args.workers, None)
        ray_start = None
        if not args.no_ray:
            import ray

            started = time.perf_counter()
            ray.init(include_dashboard=False, log_to_driver=False)
            ray_start = time.perf_counter() - started
            name = f"Ray local, {args.workers} actors x 1 thread"
            seconds[name], runs[name] = _bulk(paths, work / "ray", settings, args.workers, "")
            ray.shutdown()
    differ = [name for name, outputs in runs.items() if outputs != reference]
    if differ:
        raise SystemExit(f"outputs differ from one process: {', '.join(differ)}")

    baseline = seconds["one process, onnxruntime's threads"]
    print(f"{args.lines} lines in {args.files} files; outputs identical in every mode")
    print("| mode | seconds | lines/s | speed vs one process (onnxruntime's threads) |")
    print("|---|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {args.lines / value:.0f} | {baseline / value:.2f}x |")
    if ray_start is not None:
        local, on_ray = (seconds[n] for n in seconds if n.startswith(("local", "Ray")))
        print(f"Ray local takes {on_ray / local:.2f}x the time of local mode, and its start-up")
        print(f"(ray.init, not in the times above) {ray_start:.1f} s more")
    result = {
        "lines": args.lines,
        "files": args.files,
        "workers": args.workers,
        "artifact": str(args.artifact),
        "seconds": seconds,
        "ray_init_seconds": ray_start,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
