"""PDF text extraction: the four extractors the data engine trains on, torch-free.

They live in the runtime because `kmcorrect bulk` reads PDFs with the same choices the model
was trained on; the data engine (``training.data.pdf``) imports them from here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import shutil
import subprocess

EXTRACTORS: tuple[str, ...] = ("pdftotext", "pdftotext-layout", "pypdf", "pdfminer")
EXTRACTOR_HINTS = {
    "pdftotext": "apt-get install poppler-utils",
    "pdftotext-layout": "apt-get install poppler-utils",
    "pypdf": "pip install pypdf",
    "pdfminer": "pip install pdfminer.six",
}
TIMEOUT_S = 600
# Broken UTF-16 in a ToUnicode map can give lone surrogates, which UTF-8 cannot carry.
SURROGATE = re.compile("[\ud800-\udfff]")


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def extractor_missing(name: str) -> str | None:
    """None when the extractor can run, else the note naming what to install."""
    if name in ("pdftotext", "pdftotext-layout"):
        if shutil.which("pdftotext") is None:
            return f"{name} extractor skipped, pdftotext not found: {EXTRACTOR_HINTS[name]}"
        return None
    module = {"pypdf": "pypdf", "pdfminer": "pdfminer"}[name]
    if importlib.util.find_spec(module) is None:
        return f"{name} extractor skipped, not installed: {EXTRACTOR_HINTS[name]}"
    return None


def extractor_version(name: str, exe: str | None) -> str:
    if name in ("pdftotext", "pdftotext-layout"):
        try:
            proc = subprocess.run(
                [exe or "pdftotext", "-v"], capture_output=True, text=True, timeout=60
            )
            first = (proc.stderr or proc.stdout).strip().splitlines()
            return first[0] if first else "pdftotext"
        except (OSError, subprocess.SubprocessError):
            return "pdftotext"
    if name == "pypdf":
        return f"pypdf={package_version('pypdf')}"
    return f"pdfminer.six={package_version('pdfminer.six')}"


def pdftotext_text(path: str, exe: str, layout: bool) -> str:
    """pdftotext's whole output, every page ended by a form feed."""
    cmd = [exe, "-enc", "UTF-8", *(["-layout"] if layout else []), path, "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise RuntimeError(f"pdftotext exited {proc.returncode}: {tail}")
    return proc.stdout.decode("utf-8", "replace")


def extract_pdftotext(path: str, exe: str, layout: bool) -> list[str]:
    pages = pdftotext_text(path, exe, layout).split("\f")
    # pdftotext ends every page with a form feed: the piece after the last one is empty.
    if pages and not pages[-1].strip():
        pages.pop()
    return pages


def extract_pypdf(path: str) -> list[str | None]:
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    pages: list[str | None] = []
    for page in PdfReader(path).pages:
        try:
            pages.append(page.extract_text())
        except Exception:  # one bad page must not lose the others
            pages.append(None)
    return pages


def extract_pdfminer(path: str) -> list[str]:
    """Same text as ``pdfminer.high_level.extract_text`` (default LAParams), page by page."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTContainer, LTText, LTTextBox

    logging.getLogger("pdfminer").setLevel(logging.ERROR)

    def render(item, out: list[str]) -> None:  # TextConverter.receive_layout, unrolled
        if isinstance(item, LTContainer):
            for child in item:
                render(child, out)
        elif isinstance(item, LTText):
            out.append(item.get_text())
        if isinstance(item, LTTextBox):
            out.append("\n")

    pages = []
    for page in extract_pages(path, laparams=LAParams()):
        out: list[str] = []
        render(page, out)
        pages.append("".join(out))
    return pages


def document_text(path: str, extractor: str = "pdftotext-layout") -> str:
    """A PDF's text as one string, each page ended by a form feed (pdftotext's own output,
    byte for byte, for the pdftotext extractors: what `kmcorrect correct --pdf` reads)."""
    if extractor in ("pdftotext", "pdftotext-layout"):
        exe = shutil.which("pdftotext")
        if exe is None:
            raise RuntimeError(f"pdftotext not found: {EXTRACTOR_HINTS[extractor]}")
        return pdftotext_text(path, exe, layout=extractor == "pdftotext-layout")
    pages = extract_pypdf(path) if extractor == "pypdf" else extract_pdfminer(path)
    return "".join(SURROGATE.sub("\ufffd", page or "") + "\f" for page in pages)
