"""`kmcorrect correct`: in-process on the artifact, against a server, on a PDF, on a run dir."""

import random

import pytest
from serving import Running, config
from tiny import corrupt

from kmcorrect.cli import main
from runtime.server import load_corrector
from tests.conftest import KHMER_SENTENCES

LINES = [
    *(corrupt(s, random.Random(i)) for i, s in enumerate(KHMER_SENTENCES[:5])),
    "",
    "plain Latin line, 42",
    "ភ្នំពេញ 🙂",
]


@pytest.fixture(scope="module")
def input_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "lines.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["correct", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_in_process_gives_one_line_per_line(artifact, input_file, capsys):
    code, out, _ = run(capsys, "--artifact", str(artifact.path), "--input", str(input_file))
    assert code == 0
    lines = out.split("\n")[:-1]
    assert len(lines) == len(LINES)
    corrector = load_corrector(config(artifact, variant="opt"))
    assert lines == [c.text for c in corrector.correct(LINES)]
    assert lines[5] == "" and lines[6] == LINES[6] and "🙂" in lines[7]


def test_server_gives_the_same_lines(artifact, input_file, capsys):
    server = Running(config(artifact, variant="opt"))
    try:
        remote = run(capsys, "--server", server.target, "--input", str(input_file))
    finally:
        server.stop()
    local = run(capsys, "--artifact", str(artifact.path), "--input", str(input_file))
    assert remote[0] == 0 and remote[1] == local[1]


def test_pdf_is_corrected_page_by_page(artifact, tmp_path, capsys):
    from training.data.pdf import make_rows  # a real generator makes the PDF

    make_rows(
        KHMER_SENTENCES[:2],
        seed=0,
        cache_dir=tmp_path,
        workers=1,
        progress=False,
        generators=["fpdf2"],
        extractors=["pdftotext"],
        fonts=["Khmer OS"],
    )
    pdf = next((tmp_path / "pdf").glob("*.pdf"))
    code, out, _ = run(capsys, "--artifact", str(artifact.path), "--pdf", str(pdf))
    assert code == 0
    assert out.count("\f") == 2  # two pages, each ended by a form feed


def test_run_directory_uses_the_torch_checkpoint(run_dir, input_file, capsys):
    code, out, _ = run(capsys, "--run-dir", str(run_dir), "--input", str(input_file))
    assert code == 0 and len(out.split("\n")[:-1]) == len(LINES)


def test_bad_input_is_a_clear_error(artifact, input_file, tmp_path, capsys):
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    code, _, err = run(capsys, "--artifact", str(artifact.path), "--input", str(binary))
    assert code == 2 and "not UTF-8" in err
    code, _, err = run(capsys, "--artifact", str(tmp_path), "--input", str(input_file))
    assert code == 2 and "is not an exported artifact" in err
    code, _, err = run(capsys, "--artifact", str(artifact.path), "--pdf", str(tmp_path / "no.pdf"))
    assert code == 2 and "PDF not found" in err
