"""The engines suite's harness on the tiny model: what it measures and checks, not timings."""

import itertools
import json

from benchmarks import engines
from benchmarks.common import BenchContext
from runtime.text import segment

RUNNERS = {f"{c}/{d}" for c in ("torch", "ort-fp32", "ort-int8") for d in engines.DECODERS}


def test_every_contender_runs_side_by_side_on_the_same_inputs(
    artifact, data_dir, run_dir, tmp_path
):
    ctx = BenchContext(artifact.path, data_dir, run_dir, threads=1, log=lambda _: None)
    section = engines.run(
        ctx, batch_sizes=(1, 3), lengths=(32, 96), repeats=2, min_lines=2, peak_size=256
    )

    status = {name: c["status"] for name, c in section["contenders"].items()}
    assert status["torch"] == status["ort-fp32"] == status["ort-int8"] == "ran"
    assert status["ort-cuda"].startswith("not run") and status["tensorrt"].startswith("not run")
    assert section["config"]["checkpoint_matches_artifact"] is True
    assert [(c["batch_size"], c["length"]) for c in section["cells"]] == [
        (1, 32),
        (3, 32),
        (1, 96),
        (3, 96),
    ]
    for cell in section["cells"]:
        assert cell["pieces"] > 0 and 0 < cell["chars"] <= cell["lines"] * cell["length"]
        for name, result in cell["results"].items():
            assert result["model_flops"] > 0
            for entry in result["decoders"].values():
                assert entry["seconds"]["min"] > 0 and entry["chars_per_s"]["median"] > 0
                assert entry["line_latency_ms"]["median"] > 0 and entry["flops_per_s"] > 0
                assert entry["ratio_to_torch"]["median"] > 0
                if name == "torch":
                    assert entry["ratio_to_torch"]["median"] == 1.0
        # Side by side: each round runs every runner once, in the reverse order of the round
        # before; one round per group of lines per repeat.
        orders = cell["orders"]
        groups = -(-cell["lines"] // cell["batch_size"])
        assert len(orders) == 2 * groups
        assert all(set(order) == RUNNERS and len(order) == len(RUNNERS) for order in orders)
        assert all(b == a[::-1] for a, b in itertools.pairwise(orders))
        # The same pieces give the same outputs: torch and the fp32 graphs, greedy and
        # aggressive decoding (int8 quantizes each call's activations with their own scale, so
        # verifying many tokens at once may choose otherwise than one at a time).
        identity = cell["identity"]
        assert identity["vs_torch"]["ort-fp32"] == 0
        assert identity["aggressive_vs_greedy"]["torch"] == 0
        assert identity["aggressive_vs_greedy"]["ort-fp32"] == 0

    check = section["flops"]["graph_check"]
    assert check["agree"] and check["graph"]["decoder"] > 0 and check["graph"]["encoder"] > 0
    assert section["peak"]["peak"]["cpu"] > 0
    best = section["best"]
    assert best["share_of_peak"] > 0 and best["contender"] in engines.FLOAT32
    assert section["best_any"]["flops_per_s"] >= best["flops_per_s"]
    assert [t["target"] for t in section["targets"]] == [
        "onnxruntime ≥ 5× torch eager at batch 1",
        "best configuration ≥ 25% of measured peak",
    ]

    json.dumps(section)  # the section goes into results.json as it is
    assert engines.markdown(section).startswith("# Engines")
    written = engines.plots(section, tmp_path)
    assert written == ["engines-throughput.png", "engines-latency.png"]
    assert all((tmp_path / name).read_bytes().startswith(b"\x89PNG") for name in written)


def test_lines_are_real_rows_cut_and_joined_between_clusters(data_dir):
    text = (data_dir / "test.jsonl").read_text("utf-8")
    rows = [json.loads(line)["input"] for line in text.splitlines()]
    for length in (32, 200):
        lines = engines.make_lines(data_dir / "test.jsonl", length, 12, seed=0)
        assert len(lines) == 12 and lines == engines.make_lines(
            data_dir / "test.jsonl", length, 12, seed=0
        )
        for line in lines:
            assert length - 12 < len(line) <= length
            # Every cluster of a line is a whole cluster of some row: no cluster was split.
            assert all(any(cluster in row for row in rows) for cluster in segment(line))
    assert max(map(len, rows)) < 200 - 12  # so every 200-character line joins several rows


def test_contenders_that_cannot_run_say_why(artifact, data_dir):
    ctx = BenchContext(artifact.path, data_dir, model=None, threads=1, log=lambda _: None)
    contenders = {c.name: c for c in engines.make_contenders(ctx, artifact)}
    assert contenders["torch"].engine is None and "--run-dir" in contenders["torch"].not_run
    assert contenders["ort-fp32"].engine is not None
    assert contenders["tensorrt"].not_run in ("not run: no GPU", "not run: --device cpu")


def test_flop_formula_counts_every_matmul_of_the_default_model():
    """The default hybrid by hand: 3 encoder layers, 3 decoder layers, d 128, ffn 512."""
    config = {
        "vocab_size": 270,
        "d_model": 128,
        "ffn_dim": 512,
        "n_enc_layers": 3,
        "n_dec_layers": 3,
        "mapper_layers": 3,
        "mapper_ffn_dim": 160,
        "mapper_kernel": 5,
    }
    d, s = 128, 10
    encoder = engines.encoder_flops(config, s)
    per_layer = 8 * s * d * d + 4 * s * s * d + 4 * s * d * 512
    assert encoder["matmul"] == 3 * per_layer + 3 * 4 * s * d * d + 3 * 4 * s * d * 160
    assert encoder["conv"] == 3 * 2 * s * d * 5
    step = 3 * (12 * d * d + 4 * 8 * d + 4 * s * d + 4 * d * 512) + 2 * d * 270
    assert engines.decoder_flops(config, s, past_len=7, n=1) == step
