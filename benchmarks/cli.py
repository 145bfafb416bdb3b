"""`kmcorrect bench` (`make bench`): every benchmark suite side by side on one machine, written
to benchmarks/results/<device>/ as results.json, report.md (a headline table of every suite's
targets, then each suite's own report) and PNG plots.

A suite is a module of this package with `run(ctx)`, `markdown(section)` and `plots(section,
out_dir)` (`benchmarks.common.BenchContext`). A suite that is not written yet, or whose
optional dependency is missing, is reported as not run; a suite that fails is reported with
its error, the others still run, and the command exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
import traceback
from pathlib import Path

from benchmarks.common import BenchContext, device_name, environment, slug
from runtime.artifact import load_artifact
from runtime.errors import UserError

# --suite name -> the modules (benchmarks/<module>.py) it runs, each one section of the report.
SUITES = {
    "engines": ("engines",),
    "decoding": ("decoding",),
    "server": ("server",),
    "peers": ("triton_peers", "ctranslate2_peer"),
    "ctranslate2": ("ctranslate2_peer",),
}
DEFAULT_SUITES = "engines,decoding,server,peers"
OUR_PACKAGES = ("benchmarks", "runtime", "training", "export", "proto")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite",
        default=DEFAULT_SUITES,
        help=f"comma-separated suites: {', '.join(SUITES)} (default: {DEFAULT_SUITES})",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="quick",
        action="store_true",
        default=True,
        help="small grids, minutes on a CPU (default)",
    )
    mode.add_argument("--full", dest="quick", action="store_false", help="the whole grids")
    p.add_argument("--artifact", required=True, help="exported artifact directory")
    p.add_argument("--data", required=True, help="data directory with test.jsonl")
    p.add_argument(
        "--run-dir", default=None, help="run directory (or checkpoint) for torch and CTranslate2"
    )
    p.add_argument(
        "--hybrid",
        default=None,
        metavar="ARTIFACT",
        help="a Hybrid artifact: on an editor --artifact, the engines suite's onnxruntime "
        "greedy contender",
    )
    p.add_argument(
        "--char-transformer",
        default=None,
        metavar="RUN_DIR",
        help="a char_transformer run directory (or checkpoint): on an editor --artifact, the "
        "engines suite's CTranslate2 greedy contender; also the ctranslate2 peer's model when "
        "--artifact is not a char_transformer",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default benchmarks/results/<device-slug>")


def suite_modules(names: str) -> list[str]:
    """The modules to run for a --suite value, in order, each once."""
    asked = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in asked if name not in SUITES]
    if unknown or not asked:
        raise UserError(
            f"--suite {names!r}: unknown suite(s) {', '.join(unknown) or '(none given)'}; "
            f"valid: {', '.join(SUITES)}"
        )
    return list(dict.fromkeys(module for name in asked for module in SUITES[name]))


def check_args(args: argparse.Namespace) -> None:
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    load_artifact(args.artifact)  # a UserError naming what is wrong with it
    if not (Path(args.data) / "test.jsonl").is_file():
        raise UserError(f"--data {args.data}: no test.jsonl there (make one with `kmcorrect data`)")
    if args.run_dir is not None and not Path(args.run_dir).exists():
        raise UserError(f"--run-dir {args.run_dir}: no such run directory or checkpoint")
    if args.hybrid is not None and not Path(args.hybrid).exists():
        raise UserError(f"--hybrid {args.hybrid}: no such artifact directory")
    if args.char_transformer is not None and not Path(args.char_transformer).exists():
        raise UserError(
            f"--char-transformer {args.char_transformer}: no such run directory or checkpoint"
        )
    if args.device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(
                "--device cuda: this onnxruntime has no CUDA execution provider "
                "(install the gpu extra on a machine with an NVIDIA GPU)"
            )


def run_suite(module_name: str, ctx: BenchContext, out_dir: Path) -> tuple[dict, str]:
    """One suite's entry for results.json (status, seconds, section, plots) and its Markdown."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{module_name}")
        section = module.run(ctx)
    except ImportError as exc:
        missing = exc.name or ""
        if missing == f"benchmarks.{module_name}":
            return {"status": "not run", "reason": f"benchmarks/{module_name}.py not written"}, ""
        if missing and missing.split(".")[0] not in OUR_PACKAGES:
            reason = f"missing dependency {missing!r} (pip install -e '.[bench,dev]')"
            return {"status": "not run", "reason": reason}, ""
        return _failed(exc, started, ctx), ""
    except Exception as exc:
        return _failed(exc, started, ctx), ""
    entry = {"seconds": time.perf_counter() - started, "section": section}
    if section.get("not_run"):
        reason = str(section["not_run"]).removeprefix("not run: ")
        return {"status": "not run", "reason": reason, **entry}, ""
    try:
        text = module.markdown(section)
        entry["plots"] = module.plots(section, out_dir)
    except Exception as exc:
        return {**_failed(exc, started, ctx), **entry}, ""
    return {"status": "ok", **entry}, text


def _failed(exc: Exception, started: float, ctx: BenchContext) -> dict:
    trace = traceback.format_exc()
    ctx.log(trace)
    return {
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": trace,
        "seconds": time.perf_counter() - started,
    }


def headline(suites: dict) -> list[str]:
    """Every suite's targets in one table; a suite without numbers says why."""
    lines = ["| suite | target | measured | met |", "|---|---|---|---|"]
    for name, entry in suites.items():
        if entry["status"] == "not run":
            lines.append(f"| {name} | – | not run: {entry['reason']} | – |")
        elif entry["status"] == "error":
            lines.append(f"| {name} | – | error: {_cell(entry['error'])} | no |")
        for target in entry.get("section", {}).get("targets", []):
            met = "yes" if target["met"] else "no"
            lines.append(
                f"| {name} | {_cell(target['target'])} | {_cell(target['measured'])} | {met} |"
            )
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def demote(markdown: str) -> str:
    """A suite's report two heading levels down, to sit under its `## <suite>` heading."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        fenced ^= line.startswith("```")
        lines.append("##" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines)


def report(results: dict, texts: dict[str, str]) -> str:
    c, env = results["config"], results["environment"]
    lines = [
        f"# Benchmarks: {results['device']}",
        "",
        f"{'Quick' if c['quick'] else 'Full'} mode, threads: {c['threads']}, seed {c['seed']}; "
        f"artifact `{c['artifact']}`, data `{c['data']}`, model `{c['model']}`"
        + "".join(f", {key} `{c[key]}`" for key in ("hybrid", "char_transformer") if c.get(key))
        + "; onnxruntime "
        f"{env['onnxruntime']}, Python {env['python']}; load average "
        f"{env['load_average_before'][0]:.2f} before, {env['load_average_after'][0]:.2f} after; "
        f"{env['date']}. Absolute times hold for this device only; ratios were measured side "
        "by side in this run.",
        "",
        "## Targets",
        "",
        *headline(results["suites"]),
    ]
    for name, entry in results["suites"].items():
        seconds = entry.get("seconds")
        lines += ["", f"## {name}" + (f" ({seconds:.0f} s)" if seconds is not None else ""), ""]
        if entry["status"] == "not run":
            lines.append(f"Not run: {entry['reason']}.")
        elif entry["status"] == "error":
            lines += ["Failed:", "", "```", entry["traceback"].rstrip(), "```"]
        if texts.get(name):
            lines.append(demote(texts[name]))
        lines += [f"![{plot}]({plot})" for plot in entry.get("plots", [])]
    return "\n".join(lines) + "\n"


def bench(ctx: BenchContext, modules: list[str], out_dir: Path | None = None) -> dict:
    """Run the suites, write results.json, report.md and the plots into out_dir (default
    benchmarks/results/<device slug>), return the results."""
    providers = ["CUDAExecutionProvider"] if ctx.device == "cuda" else ["CPUExecutionProvider"]
    device = device_name(providers)
    out_dir = out_dir or Path("benchmarks/results") / slug(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    suites, texts = {}, {}
    for name in modules:
        ctx.log(f"bench: {name} ...")
        suites[name], texts[name] = run_suite(name, ctx, out_dir)
        ctx.log(f"bench: {name}: {suites[name]['status']}")
    results = {
        "device": device,
        "device_slug": slug(device),
        "config": {
            "suites": modules,
            "quick": ctx.quick,
            "artifact": str(ctx.artifact),
            "data": str(ctx.data),
            "model": str(ctx.model) if ctx.model else None,
            "hybrid": str(ctx.hybrid) if ctx.hybrid else None,
            "char_transformer": str(ctx.char_transformer) if ctx.char_transformer else None,
            "device": ctx.device,
            "threads": ctx.threads,
            "seed": ctx.seed,
        },
        "environment": {**env, "load_average_after": os.getloadavg()},
        "suites": suites,
    }
    text = json.dumps(results, ensure_ascii=False, indent=1, default=str) + "\n"
    (out_dir / "results.json").write_text(text, "utf-8")
    (out_dir / "report.md").write_text(report(results, texts), "utf-8")
    ctx.log(f"bench: wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return results


def run(args: argparse.Namespace) -> int:
    modules = suite_modules(args.suite)
    check_args(args)
    ctx = BenchContext(
        artifact=Path(args.artifact),
        data=Path(args.data),
        model=Path(args.run_dir) if args.run_dir else None,
        hybrid=Path(args.hybrid) if args.hybrid else None,
        char_transformer=Path(args.char_transformer) if args.char_transformer else None,
        quick=args.quick,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        log=lambda message: print(message, flush=True),
    )
    results = bench(ctx, modules, Path(args.out) if args.out else None)
    return 1 if any(s["status"] == "error" for s in results["suites"].values()) else 0
