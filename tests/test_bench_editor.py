"""The engines suite on an editor artifact: the editor vs the Hybrid's greedy decoding vs
CTranslate2 on the CharTransformer, on tiny models; what it measures and checks, not timings."""

import argparse
import itertools
import json

import pytest

from benchmarks import cli, editor, engines
from benchmarks import ctranslate2_peer as peer
from benchmarks.common import BenchContext
from runtime.corrector import Corrector
from runtime.service import Job

pytest.importorskip("ctranslate2")  # the `bench` extra
pytest.importorskip("matplotlib")

NAMES = ["editor-fp32", "editor-opt", "editor-int8", "hybrid-greedy", editor.BASELINE]
NAMES.append(editor.AT_LENGTH)


@pytest.fixture(scope="module")
def section(editor_artifact, editor_data_dir, artifact, char_transformer_run_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ctranslate2-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(peer, "CACHE", cache)
        ctx = BenchContext(
            editor_artifact.path,
            editor_data_dir,
            hybrid=artifact.path,
            char_transformer=char_transformer_run_dir,
            threads=1,
            log=lambda _: None,
        )
        return editor.run(ctx, batch_sizes=(1, 4), lengths=(48,), lines=8, repeats=2, peak_size=256)


def test_every_contender_runs_side_by_side_and_answers_as_its_service(section):
    assert {n: c["status"] for n, c in section["contenders"].items()} == dict.fromkeys(NAMES, "ran")
    assert [(c["batch_size"], c["length"]) for c in section["cells"]] == [(1, 48), (4, 48)]
    for cell in section["cells"]:
        assert list(cell["results"]) == NAMES
        assert 0 < cell["chars"] <= cell["lines"] * cell["length"] and cell["lines"] == 8
        for name, r in cell["results"].items():
            assert 0 < r["chars_per_s"]["min"] <= r["chars_per_s"]["max"]
            assert r["line_latency_ms"]["median"] > 0 and r["pieces"] >= cell["lines"]
            assert r["vs_ctranslate2"]["median"] > 0 and r["vs_at_length"]["median"] > 0
            # int8 quantizes each call's activations with the call's own range, so its answer
            # may depend on which pieces share its batch; every float32 answer may not.
            if name == editor.AT_LENGTH:
                assert r["differing_from_service"] is None  # held to a length: no service
            elif name != "editor-int8":
                assert r["differing_from_service"] == 0, (name, r["examples"])
        assert cell["results"][editor.BASELINE]["vs_ctranslate2"]["median"] == 1.0
        assert cell["results"][editor.AT_LENGTH]["vs_at_length"]["median"] == 1.0
        for name in ("editor-fp32", "editor-opt", "editor-int8"):
            r = cell["results"][name]
            assert r["model_flops"] > 0 and r["flops_per_s"] <= r["graph_flops_per_s"]
            assert 0 < r["share_of_peak"] <= r["graph_share_of_peak"]
            assert 0 < r["graph_share_of_time"] <= 1
        # Side by side: each round runs every contender once, in the reverse order of the last.
        orders = cell["orders"]
        assert len(orders) == 2 * -(-cell["lines"] // cell["batch_size"])
        assert all(sorted(order) == sorted(NAMES) for order in orders)
        assert all(b == a[::-1] for a, b in itertools.pairwise(orders))
    assert section["flops"]["agree"] and section["flops"]["linear"] > 0
    assert section["peak"]["peak"]["cpu"] > 0

    speed, share = section["targets"]
    assert speed["target"] == "editor ≥ 5× CTranslate2 greedy chars/s at batch 4"
    assert f"vs {editor.BASELINE} " in speed["measured"]
    assert f"vs {editor.AT_LENGTH} " in speed["measured"] and isinstance(speed["met"], bool)
    assert share["target"] == "editor ≥ 30% of the measured float32 peak"
    assert share["measured"].split("% (")[1].startswith(("editor-fp32", "editor-opt"))
    assert isinstance(share["met"], bool)

    json.dumps(section)  # the section goes into results.json as it is
    text = engines.markdown(section)  # the engines suite hands an editor section over
    assert text.startswith("# Engines: the editor vs the autoregressive models")
    assert (
        "| 48 | 4 | ctranslate2-greedy |" in text and "| 48 | 4 | ctranslate2-at-length |" in text
    )


def test_ctranslate2_held_to_a_length_decodes_exactly_that_many_tokens(
    editor_data_dir, char_transformer_run_dir, tmp_path, monkeypatch
):
    """Held to a length, every row of a batch decodes the batch's longest held length: the
    ratio times the longest input, then the end token; each row keeps its own share."""
    import ctranslate2

    from training import checkpoint
    from training.torch_engine import checkpoint_corrector

    monkeypatch.setattr(peer, "CACHE", tmp_path / "cache")
    record = peer._record(char_transformer_run_dir)
    reference = checkpoint_corrector(checkpoint.load(record[0]))
    model_dir, _ = peer._converted(record[0], record[1]["sha256"], 1024, lambda _: None)
    translator = ctranslate2.Translator(str(model_dir), device="cpu", intra_threads=1)
    asked = []

    def greedy(translator, sources, max_len, min_len=0):
        asked.append((max_len, min_len))
        return peer.greedy(translator, sources, max_len, min_len)

    monkeypatch.setattr(editor, "greedy", greedy)
    model = editor.CTranslate2Model(translator, reference.info, length_ratio=0.5)
    texts = ["ក" * 10, "ខ" * 21]  # held to 5 and 11 characters
    outputs = model.run_batch([Job(t, "full", "greedy") for t in texts])
    assert asked == [(12, 12)]
    assert [len(o.text) <= n for o, n in zip(outputs, (5, 11), strict=True)] == [True, True]


def test_the_output_length_ratio_is_the_test_splits(tmp_path):
    rows = [{"input": "abcd", "target": "abc"}, {"input": "abcdef", "target": "ab"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert editor.output_length_ratio(tmp_path / "test.jsonl") == 0.5


def test_answers_are_the_services(
    editor_artifact, editor_data_dir, artifact, char_transformer_run_dir, tmp_path, monkeypatch
):
    """The timed path gives, line for line, what the service computes for the line: the editor
    and the Hybrid served from their artifacts, the CharTransformer by our torch Corrector."""
    from training import checkpoint
    from training.torch_engine import checkpoint_corrector

    monkeypatch.setattr(peer, "CACHE", tmp_path / "cache")
    ctx = BenchContext(
        editor_artifact.path,
        editor_data_dir,
        hybrid=artifact.path,
        char_transformer=char_transformer_run_dir,
        threads=1,
        log=lambda _: None,
    )
    lines = engines.make_lines(editor_data_dir / "test.jsonl", 40, 6, seed=1)
    contenders = [
        c for c in editor.make_contenders(ctx, editor_artifact) if c.name != "editor-int8"
    ]
    answers = editor.run_cell(contenders, lines, batch_size=3, repeats=1)["answers"]

    def served(path, variant="fp32"):
        corrector = Corrector.load(path, variant=variant, threads=1)
        return [c.text for c in corrector.correct(lines, decoding="greedy")]

    torch_corrector = checkpoint_corrector(checkpoint.load(char_transformer_run_dir))
    assert answers["editor-fp32"] == served(editor_artifact.path)
    assert answers["editor-opt"] == served(editor_artifact.path, "opt")
    assert answers["hybrid-greedy"] == served(artifact.path)
    expected = torch_corrector.correct(lines, decoding="greedy")
    assert answers[editor.BASELINE] == [c.text for c in expected]
    assert answers["hybrid-greedy"] != lines  # not a model that merely copies


def test_bench_on_an_editor_reports_what_could_not_run(
    editor_artifact, editor_data_dir, tmp_path, monkeypatch
):
    """`kmcorrect bench --suite engines,decoding` on an editor artifact: the engines suite is
    the editor's comparison, a contender without its input says why, the decoding suite is not
    applicable, and the targets are reported unmet rather than left out."""
    monkeypatch.setattr(editor, "QUICK", editor.Grid((1, 2), (32,), 4, 1, 128))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "results"
    args = parser.parse_args(
        [
            *("--suite", "engines,decoding", "--threads", "1", "--out", str(out)),
            *("--artifact", str(editor_artifact.path), "--data", str(editor_data_dir)),
            *("--hybrid", str(editor_artifact.path)),  # an artifact, but not a Hybrid's
        ]
    )
    assert cli.run(args) == 0

    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["config"]["hybrid"] == str(editor_artifact.path)
    suites = results["suites"]
    assert suites["decoding"]["status"] == "not run"
    assert suites["decoding"]["reason"] == "not applicable: the editor decodes in one pass"
    engines_suite = suites["engines"]
    assert engines_suite["status"] == "ok" and engines_suite["plots"] == ["engines-editor.png"]
    status = {n: c["status"] for n, c in engines_suite["section"]["contenders"].items()}
    assert status["editor-fp32"] == status["editor-opt"] == "ran"
    assert status["hybrid-greedy"] == (
        f"not run: --hybrid {editor_artifact.path}: editor artifact, not a hybrid"
    )
    assert status[editor.BASELINE] == status[editor.AT_LENGTH] == "not run: no --char-transformer"
    speed, share = engines_suite["section"]["targets"]
    assert speed["met"] is False
    assert speed["measured"] == "not measured: CTranslate2 greedy not run: no --char-transformer"
    assert isinstance(share["met"], bool) and share["measured"].endswith(")")

    report = (out / "report.md").read_text("utf-8")
    assert "| engines | editor ≥ 5× CTranslate2 greedy chars/s at batch 2 |" in report
    assert (
        "| decoding | – | not run: not applicable: the editor decodes in one pass | – |" in report
    )
    assert "\n### Engines: the editor vs the autoregressive models" in report
    assert (out / "engines-editor.png").read_bytes().startswith(b"\x89PNG")


def test_a_differing_answer_is_reported_without_the_text():
    """Reports are committed and the lines are the user's corpus: a differing answer is named
    by its line number and how far apart the answers are, never quoted."""
    timed = {
        "seconds": {"editor-int8": [[0.5]]},
        "graph": {},
        "answers": {"editor-int8": ["secret text one", "secret text twx"]},
        "pieces": {"editor-int8": [15, 15]},
        "orders": [],
    }
    service = {"editor-int8": ["secret text one", "secret text two"]}
    cell = editor.summarize_cell(
        timed, ["secret input 1", "secret input 2"], service, {}, {"peak": {}}, "cpu"
    )
    r = cell["results"]["editor-int8"]
    assert r["differing_from_service"] == 1
    assert r["examples"] == [{"line": 1, "cer_vs_service": pytest.approx(1 / 15)}]
    assert "secret" not in json.dumps(cell)
