"""`kmcorrect bench`: every suite asked for runs and is reported, whatever the others do."""

import argparse
import json
import sys
import types

import pytest

from benchmarks import cli, decoding, engines
from kmcorrect.cli import main as kmcorrect
from runtime.errors import UserError


def _module(name: str, run) -> types.ModuleType:
    module = types.ModuleType(f"benchmarks.{name}")
    module.run = run
    return module


def _broken(ctx):
    raise RuntimeError("boom")


def _needs_dependency(ctx):
    import khmer_correct_absent_dependency  # noqa: F401


@pytest.fixture
def tiny_suites(monkeypatch):
    """Tiny quick grids, and three suites that cannot run: one failing, one not written, one
    whose dependency is missing."""
    monkeypatch.setattr(engines, "QUICK", engines.Grid((1, 2), (48,), 1, 2, 128))
    monkeypatch.setattr(decoding, "QUICK", {"rows": 6, "repeats": 1})
    monkeypatch.setitem(sys.modules, "benchmarks.broken", _module("broken", _broken))
    monkeypatch.setitem(sys.modules, "benchmarks.needy", _module("needy", _needs_dependency))
    monkeypatch.setitem(cli.SUITES, "broken", ("broken",))
    monkeypatch.setitem(cli.SUITES, "needy", ("needy",))
    monkeypatch.setitem(cli.SUITES, "unwritten", ("unwritten",))


def _args(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_reports_every_suite_and_the_others_still_run(
    tiny_suites, artifact, data_dir, run_dir, tmp_path
):
    out = tmp_path / "results"
    args = _args(
        *("--suite", "broken,engines,unwritten,needy,decoding"),
        *("--artifact", str(artifact.path), "--data", str(data_dir), "--run-dir", str(run_dir)),
        *("--threads", "1", "--out", str(out)),
    )
    assert cli.run(args) == 1  # a suite failed

    results = json.loads((out / "results.json").read_text("utf-8"))
    suites = results["suites"]
    assert list(suites) == ["broken", "engines", "unwritten", "needy", "decoding"]
    assert suites["broken"]["status"] == "error"
    assert suites["broken"]["error"] == "RuntimeError: boom"
    assert suites["unwritten"] == {
        "status": "not run",
        "reason": "benchmarks/unwritten.py not written",
    }
    assert suites["needy"]["status"] == "not run"
    assert "'khmer_correct_absent_dependency'" in suites["needy"]["reason"]
    assert suites["engines"]["status"] == suites["decoding"]["status"] == "ok"
    assert results["config"]["quick"] and results["device"] and results["environment"]
    assert suites["engines"]["section"]["config"]["batch_sizes"] == [1, 2]
    assert suites["decoding"]["section"]["rows"] == 6

    report = (out / "report.md").read_text("utf-8")
    assert report.startswith(f"# Benchmarks: {results['device']}")
    table = report.split("## Targets")[1].split("\n## ")[0]
    assert "| broken | – | error: RuntimeError: boom | no |" in table
    assert "| unwritten | – | not run: benchmarks/unwritten.py not written | – |" in table
    for name in ("engines", "decoding"):
        for target in suites[name]["section"]["targets"]:
            assert f"| {name} | {target['target']} |" in table
    assert "\n### Engines: torch eager vs onnxruntime" in report  # suites one level down
    assert "\n### Decoding: greedy vs input-guided aggressive" in report

    plots = suites["engines"]["plots"] + suites["decoding"]["plots"]
    assert plots == ["engines-throughput.png", "engines-latency.png", "decoding.png"]
    for name in plots:
        assert (out / name).read_bytes().startswith(b"\x89PNG") and f"]({name})" in report


def test_bench_flags(artifact, data_dir, capsys):
    assert not _args("--full", "--artifact", "a", "--data", "d").quick
    assert _args("--artifact", "a", "--data", "d").quick
    assert cli.suite_modules("peers,engines,peers") == [
        "triton_peers",
        "ctranslate2_peer",
        "engines",
    ]
    with pytest.raises(UserError, match="unknown suite"):
        cli.suite_modules("engines,speed")
    argv = [
        "bench",
        "--suite",
        "engines",
        "--artifact",
        str(artifact.path),
        "--data",
        str(data_dir),
    ]
    assert kmcorrect([*argv, "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert kmcorrect([*argv[:-1], str(artifact.path)]) == 2
    assert "no test.jsonl" in capsys.readouterr().err
