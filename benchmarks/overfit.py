"""The overfit check: can a model learn the repair at all? Train on a few rows, then correct them.

    python -m benchmarks.overfit --data data/oscar-km-5k [--extractor pdftotext] [--rows 200] \
        [--model editor] [--epochs 120] [--lr 4e-3] [--out runs/overfit]

``--rows`` rows of one extractor are drawn (seeded) from the train split of ``--data`` and
written to ``<out>/data`` as its train, val and test split alike; the model trains on them for
``--epochs`` (no time budget, no early stop), then corrects those same rows with no confidence
gate. A model that cannot take them near 0% CER lacks capacity or a working objective; one that
can, but plateaus on the full corpus, lacks training. Prints and writes ``<out>/overfit.json``:
CER before and after, the reduction, epochs, steps and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from training import checkpoint
from training.data.rows import read_rows
from training.evaluate import evaluate_checkpoint
from training.train import TrainConfig, train


def write_subset(data: Path, extractor: str, rows: int, seed: int, out: Path) -> int:
    """``rows`` train rows of ``extractor`` from ``data``, as all three splits of ``out``."""
    limits = TrainConfig()  # rows the trainer would skip as too long are not drawn
    pool = [
        r
        for r in read_rows(data / "train.jsonl")
        if r.get("extractor") == extractor
        and len(r["input"]) <= limits.max_src_len
        and len(r["target"]) <= limits.max_tgt_len
    ]
    if len(pool) < rows:
        raise SystemExit(f"{data / 'train.jsonl'} has {len(pool)} {extractor} rows, not {rows}")
    chosen = random.Random(seed).sample(pool, rows)
    out.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen)
    for split in ("train", "val", "test"):
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
    return len(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--extractor", default="pdftotext")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--model", default="editor")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/overfit"))
    args = parser.parse_args(argv)

    n = write_subset(args.data, args.extractor, args.rows, args.seed, args.out / "data")
    cpu_start = time.process_time()
    result = train(
        TrainConfig(
            model=args.model,
            preset=args.preset,
            data=str(args.out / "data"),
            run_dir=str(args.out / "run"),
            lr=args.lr,
            epochs=args.epochs,
            patience=0,
            max_minutes=0,
            eval_rows=min(50, n),  # a glance each epoch; the full check is below
            seed=args.seed,
            progress=False,
        )
    )
    train_cpu_s = time.process_time() - cpu_start
    rows = list(read_rows(args.out / "data" / "train.jsonl"))
    report = evaluate_checkpoint(checkpoint.load(args.out / "run"), rows, min_confidence=0.0)
    scores = report["overall"]
    summary = {
        "model": args.model,
        "extractor": args.extractor,
        "rows": n,
        "epochs": args.epochs,
        "steps": result.steps,
        "train_cpu_s": round(train_cpu_s, 1),
        "cer_before": scores["cer_before"],
        "cer_after": scores["cer_after"],
        "reduction": scores["relative_reduction"],
    }
    (args.out / "overfit.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"overfit {args.model} on {n} {args.extractor} rows, {args.epochs} epochs "
        f"({result.steps} steps, {train_cpu_s / 60:.1f} CPU min): CER {summary['cer_before']:.2%} "
        f"→ {summary['cer_after']:.2%} ({summary['reduction']:.1%} reduction)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
