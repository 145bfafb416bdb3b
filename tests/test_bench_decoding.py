"""The decoding benchmark's harness on the tiny artifact: its outputs, not its timings."""

import json

from benchmarks.decoding import main, report_groups, sample_rows


def test_benchmark_writes_results_with_identical_outputs(artifact, data_dir, tmp_path):
    out = tmp_path / "results"
    argv = ["--artifact", str(artifact.path), "--data", str(data_dir), "--rows", "30"]
    argv += ["--repeats", "1", "--warmup", "2", "--threads", "1", "--out", str(out)]
    results = main(argv, log=lambda _: None)

    written = json.loads((out / "decoding.json").read_text("utf-8"))
    assert (out / "decoding.md").read_text("utf-8").startswith("# Decoding")
    assert written["rows"] == results["rows"] == 30
    assert written["identity"]["differing_rows"] == 0
    everything = written["groups"]["all"]
    assert set(written["groups"]) == {"all", "synthetic"}
    assert everything["rows"] == 30 and everything["output_chars"] > 0
    passes = everything["passes_per_char"]
    assert passes["aggressive"] < passes["greedy"]
    assert passes["greedy"] >= 1.0  # one call per character, plus the eos step
    assert everything["speedup"]["median"] > 0


def test_sampling_is_stratified_and_deterministic(tmp_path):
    rows = [{"input": str(i), "channel": "synthetic"} for i in range(50)]
    rows += [{"input": f"p{i}", "channel": "pdf", "extractor": "pypdf"} for i in range(40)]
    rows += [{"input": f"l{i}", "channel": "legacy"} for i in range(3)]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")

    picked = sample_rows(path, 21, seed=0)
    assert picked == sample_rows(path, 21, seed=0)
    counts = {}
    for row in picked:
        key = row.get("extractor") or row["channel"]
        counts[key] = counts.get(key, 0) + 1
    assert counts == {"legacy": 3, "pypdf": 9, "synthetic": 9}
    assert len(sample_rows(path, 1000, seed=0)) == len(rows)
    assert report_groups("pdf/pypdf") == ["all", "pdf", "pdf/pypdf"]
    assert report_groups("ocr") == ["all", "ocr"]


def test_benchmark_runs_the_torch_path(artifact, data_dir, run_dir, tmp_path):
    argv = ["--artifact", str(artifact.path), "--data", str(data_dir), "--rows", "6"]
    argv += ["--repeats", "1", "--warmup", "1", "--threads", "1", "--out", str(tmp_path)]
    argv += ["--engine", "torch", "--run-dir", str(run_dir), "--batch-size", "4"]
    results = main(argv, log=lambda _: None)
    assert results["identity"]["differing_rows"] == 0
    assert results["config"]["engine"] == "torch"
    passes = results["groups"]["all"]["passes_per_char"]
    assert passes["aggressive"] < passes["greedy"]


def test_benchmark_oracle_takes_the_reference(artifact, data_dir, tmp_path):
    argv = ["--artifact", str(artifact.path), "--data", str(data_dir), "--rows", "8"]
    argv += ["--repeats", "1", "--warmup", "1", "--threads", "1", "--out", str(tmp_path)]
    results = main([*argv, "--oracle"], log=lambda _: None)
    assert results["config"]["oracle"] and results["identity"]["differing_rows"] == 0
    everything = results["groups"]["all"]
    # The reference differs from its damaged input by one edit: almost everything is copied.
    assert everything["edit_regions"] <= everything["pieces"]
    assert everything["passes_per_char"]["aggressive"] < 0.25
