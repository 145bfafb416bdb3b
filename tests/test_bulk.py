"""`kmcorrect bulk` on a folder of 50 mixed inputs: the same bytes as `kmcorrect correct`, locally
and on a local Ray, bad files reported, and a SIGKILLed run that a rerun completes."""

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import corrupt

from kmcorrect.cli import main
from runtime.bulk import SUMMARY_FILE
from runtime.files import TMP_SUFFIX
from runtime.text import Span, apply_spans
from tests.conftest import KHMER_SENTENCES

ROOT = Path(__file__).resolve().parent.parent
BAD = {"latin1.txt": "not UTF-8", "empty.txt": "empty file", "broken.pdf": "unreadable PDF"}


def _lines(rng: random.Random, count: int) -> list[str]:
    extras = ["", "plain Latin line, 42", "ភ្នំពេញ 🙂", "ទំព័រ\fទី២ ថ្ងៃ នេះ"]
    pool = [corrupt(s, rng) for s in KHMER_SENTENCES] + KHMER_SENTENCES[:3] + extras
    return [rng.choice(pool) for _ in range(count)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """41 text files (two of them long, one without a final newline) in two folders, 6 PDFs of
    two pages typeset by the data engine's fpdf2 generator, a corrupt PDF, a Latin-1 file and
    an empty one."""
    from training.data.pdf import make_rows

    root = tmp_path_factory.mktemp("bulk-in")
    rng = random.Random(0)
    for i in range(41):
        folder = root / ("texts" if i % 2 else "texts/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        text = "\n".join(_lines(rng, 60 if i < 2 else rng.randint(1, 6)))
        (folder / f"doc{i:02d}.txt").write_text(text + ("" if i == 5 else "\n"), "utf-8")
    cache = tmp_path_factory.mktemp("pdf-cache")
    result = make_rows(
        [corrupt(s, rng) for s in KHMER_SENTENCES[:9]] + KHMER_SENTENCES[9:],
        seed=0,
        cache_dir=cache,
        workers=1,
        pages_per_pdf=2,
        progress=False,
        generators=["fpdf2"],
        extractors=["pdftotext"],
        fonts=["Khmer OS"],
    )
    pdfs = sorted((cache / "pdf").glob("*.pdf"))
    if not pdfs:
        pytest.skip("; ".join(result.notes))
    (root / "pdfs").mkdir()
    for i, pdf in enumerate(pdfs):
        shutil.copy(pdf, root / "pdfs" / f"scan{i}.pdf")
    (root / "pdfs" / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\n")
    (root / "texts" / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))
    (root / "texts" / "empty.txt").write_bytes(b"")
    return root


def _output(root: Path, path: Path) -> Path:
    relative = path.relative_to(root)
    return relative.with_suffix(".txt") if path.suffix == ".pdf" else relative


@pytest.fixture(scope="module")
def expected(inputs, editor_artifact) -> dict[Path, bytes]:
    """`kmcorrect correct`'s output for every good input, by output path."""
    outputs = {}
    for path in sorted(inputs.rglob("*")):
        if not path.is_file() or path.name in BAD:
            continue
        flag = "--pdf" if path.suffix == ".pdf" else "--input"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["correct", "--artifact", str(editor_artifact.path), flag, str(path)]) == 0
        outputs[_output(inputs, path)] = out.getvalue().encode("utf-8")
    return outputs


def bulk(inputs: Path, out: Path, artifact, *extra: str) -> int:
    return main(["bulk", str(inputs), "--out", str(out), "--artifact", str(artifact.path), *extra])


def tree(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def check_outputs(out: Path, inputs: Path, expected: dict[Path, bytes]) -> dict:
    files = tree(out)
    texts = {p: data for p, data in files.items() if p.suffix == ".txt"}
    assert texts == expected  # byte for byte, and nothing for the bad files
    assert not [p for p in files if p.name.endswith(TMP_SUFFIX)]
    for name, data in texts.items():
        source = inputs / name
        if not source.is_file():  # a PDF's text: its lines are the extractor's
            continue
        records = [json.loads(line) for line in files[Path(f"{name}.spans.jsonl")].splitlines()]
        lines = source.read_text("utf-8").removesuffix("\n").split("\n")
        assert [r["line"] for r in records] == list(range(len(lines)))
        for line, record, corrected in zip(lines, records, data.decode().split("\n"), strict=False):
            spans = [Span(s["start"], s["end"], s["replacement"]) for s in record["spans"]]
            assert apply_spans(line, spans) == corrected
            assert all(0 <= s["confidence"] <= 1 for s in record["spans"])
    summary = json.loads(files[Path(SUMMARY_FILE)])
    reasons = {Path(f["input"]).name: f["reason"] for f in summary["failures"]}
    assert reasons.keys() == BAD.keys()
    assert all(BAD[name] in reason for name, reason in reasons.items())
    return summary


@pytest.fixture(scope="module")
def local_run(inputs, expected, editor_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("bulk-local")
    # Chunks of 7 lines: the long files are cut and put back together.
    assert bulk(inputs, out, editor_artifact, "--workers", "2", "--chunk-lines", "7") == 1
    return out


def test_local_mode_gives_the_bytes_of_correct_and_reports_bad_files(local_run, inputs, expected):
    summary = check_outputs(local_run, inputs, expected)
    assert summary["mode"] == "local" and summary["workers"] == 2
    assert summary["files"] == {"found": 50, "corrected": 47, "already_done": 0, "failed": 3}
    assert summary["lines"] == sum(data.count(b"\n") for data in expected.values())
    assert summary["characters"] > 0 and summary["characters_per_second"] > 0


def test_a_rerun_skips_done_files_and_refuses_other_settings(local_run, inputs, editor_artifact):
    before = tree(local_run)
    assert bulk(inputs, local_run, editor_artifact) == 1  # the bad files fail again
    summary = json.loads((local_run / SUMMARY_FILE).read_text())
    assert summary["files"]["already_done"] == 47 and summary["files"]["corrected"] == 0
    assert {p: d for p, d in tree(local_run).items() if p.name != SUMMARY_FILE} == {
        p: d for p, d in before.items() if p.name != SUMMARY_FILE
    }
    assert bulk(inputs, local_run, editor_artifact, "--extractor", "pypdf") == 2
    assert bulk(inputs / "nothing-here", local_run, editor_artifact) == 2


def test_ray_local_mode_gives_the_same_bytes(
    inputs, expected, local_run, editor_artifact, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray", reason="the ray extra: pip install 'khmer-correct[ray]'")
    # Ray's own start-up gives up after 30 s; two cores busy with other work can need more.
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", "180")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert bulk(inputs, tmp_path, editor_artifact, "--ray") == 1
    finally:
        ray.shutdown()
    summary = check_outputs(tmp_path, inputs, expected)
    assert summary["mode"] == "ray" and summary["workers"] == 2
    ray_files, local_files = tree(tmp_path), tree(local_run)
    assert {p: d for p, d in ray_files.items() if p.suffix != ".json"} == {
        p: d for p, d in local_files.items() if p.suffix != ".json"
    }


def test_without_ray_the_error_names_the_extra(inputs, editor_artifact, tmp_path):
    # A fresh interpreter in which `import ray` fails, as in an install without the extra.
    script = (
        "import sys; sys.modules['ray'] = None\n"
        "from kmcorrect.cli import main\n"
        f"sys.exit(main(['bulk', {str(inputs)!r}, '--out', {str(tmp_path)!r}, "
        f"'--artifact', {str(editor_artifact.path)!r}, '--ray']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "kmcorrect bulk: error: --ray needs Ray Data (ray is missing): "
        "pip install 'khmer-correct[ray]'"
    ]


def test_sigkill_mid_run_then_rerun_completes_without_partial_files(
    inputs, expected, local_run, editor_artifact, tmp_path
):
    argv = [sys.executable, "-m", "kmcorrect", "bulk", str(inputs), "--out", str(tmp_path)]
    argv += ["--artifact", str(editor_artifact.path), "--workers", "1", "--chunk-lines", "1"]
    process = subprocess.Popen(
        argv, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL, env=os.environ
    )
    deadline = time.monotonic() + 120
    while len(list(tmp_path.rglob("*.txt"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its worker, mid-run
    process.wait()
    assert not (tmp_path / SUMMARY_FILE).exists(), "the run ended before the kill"
    written = {p: d for p, d in tree(tmp_path).items() if not p.name.endswith(TMP_SUFFIX)}
    local = tree(local_run)
    assert 3 <= sum(p.suffix == ".txt" for p in written) < len(expected)
    for path, data in written.items():  # whatever was there is whole
        if path.name != "bulk-run.json":
            assert data == local[path], path
    assert bulk(inputs, tmp_path, editor_artifact, "--workers", "1") == 1
    summary = check_outputs(tmp_path, inputs, expected)
    assert summary["files"]["already_done"] >= 3
    assert summary["files"]["already_done"] + summary["files"]["corrected"] == 47
